//! The store on Redis: each call is one command (never `KEYS`; scans use `SCAN`).

use super::{KeyTtl, ListEnd, SetCondition, StoreBackend};
use crate::capability::redis_client::{RedisClient, Retry};
use crate::capability::{BackendError, BackendResult};
use std::time::Duration;

/// Store backend on a Redis server.
pub struct RedisStore {
    redis: RedisClient,
}

impl RedisStore {
    /// A store on `redis`.
    pub fn new(redis: RedisClient) -> Self {
        Self { redis }
    }

    async fn cmd<T: redis::FromRedisValue + Send>(
        &self,
        op: &'static str,
        retry: Retry,
        cmd: redis::Cmd,
    ) -> BackendResult<T> {
        self.redis
            .run(op, retry, |mut c| {
                let cmd = cmd.clone();
                async move { cmd.query_async(&mut c).await }
            })
            .await
    }
}

fn ms(ttl: Duration) -> u64 {
    (ttl.as_millis() as u64).max(1)
}

fn count(n: i64) -> u32 {
    u32::try_from(n.max(0)).unwrap_or(u32::MAX)
}

fn push_cmd(end: ListEnd) -> &'static str {
    match end {
        ListEnd::Front => "LPUSH",
        ListEnd::Back => "RPUSH",
    }
}

#[async_trait::async_trait]
impl StoreBackend for RedisStore {
    async fn get(&self, key: &str) -> BackendResult<Option<Vec<u8>>> {
        self.cmd("GET", Retry::Idempotent, redis::cmd("GET").arg(key).clone())
            .await
    }

    async fn set(
        &self,
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
        condition: SetCondition,
    ) -> BackendResult<bool> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(key).arg(value);
        if let Some(ttl) = ttl {
            cmd.arg("PX").arg(ms(ttl));
        }
        match condition {
            SetCondition::Always => {}
            SetCondition::IfAbsent => {
                cmd.arg("NX");
            }
            SetCondition::IfPresent => {
                cmd.arg("XX");
            }
        }
        // Conditional sets are not idempotent: a retry could report `false` for the
        // write the first attempt made.
        let retry = if condition == SetCondition::Always {
            Retry::Idempotent
        } else {
            Retry::Never
        };
        let reply: Option<String> = self.cmd("SET", retry, cmd).await?;
        Ok(reply.is_some())
    }

    async fn delete(&self, keys: &[String]) -> BackendResult<u32> {
        if keys.is_empty() {
            return Ok(0);
        }
        self.cmd::<i64>("DEL", Retry::Never, redis::cmd("DEL").arg(keys).clone())
            .await
            .map(count)
    }

    async fn exists(&self, key: &str) -> BackendResult<bool> {
        self.cmd(
            "EXISTS",
            Retry::Idempotent,
            redis::cmd("EXISTS").arg(key).clone(),
        )
        .await
    }

    async fn expire(&self, key: &str, ttl: Duration) -> BackendResult<bool> {
        self.cmd(
            "PEXPIRE",
            Retry::Idempotent,
            redis::cmd("PEXPIRE").arg(key).arg(ms(ttl)).clone(),
        )
        .await
    }

    async fn persist(&self, key: &str) -> BackendResult<bool> {
        self.cmd(
            "PERSIST",
            Retry::Never,
            redis::cmd("PERSIST").arg(key).clone(),
        )
        .await
    }

    async fn ttl(&self, key: &str) -> BackendResult<KeyTtl> {
        let ms: i64 = self
            .cmd(
                "PTTL",
                Retry::Idempotent,
                redis::cmd("PTTL").arg(key).clone(),
            )
            .await?;
        Ok(match ms {
            -2 => KeyTtl::Missing,
            -1 => KeyTtl::Persistent,
            ms => KeyTtl::ExpiresInMs(ms.max(0) as u64),
        })
    }

    async fn incr_by(&self, key: &str, delta: i64) -> BackendResult<i64> {
        self.cmd(
            "INCRBY",
            Retry::Never,
            redis::cmd("INCRBY").arg(key).arg(delta).clone(),
        )
        .await
    }

    async fn hash_get(&self, key: &str, field: &str) -> BackendResult<Option<Vec<u8>>> {
        self.cmd(
            "HGET",
            Retry::Idempotent,
            redis::cmd("HGET").arg(key).arg(field).clone(),
        )
        .await
    }

    async fn hash_set(&self, key: &str, fields: &[(String, Vec<u8>)]) -> BackendResult<u32> {
        let mut cmd = redis::cmd("HSET");
        cmd.arg(key);
        for (field, value) in fields {
            cmd.arg(field).arg(value);
        }
        self.cmd::<i64>("HSET", Retry::Never, cmd).await.map(count)
    }

    async fn hash_get_all(&self, key: &str) -> BackendResult<Vec<(String, Vec<u8>)>> {
        let mut all: Vec<(String, Vec<u8>)> = self
            .cmd(
                "HGETALL",
                Retry::Idempotent,
                redis::cmd("HGETALL").arg(key).clone(),
            )
            .await?;
        all.sort();
        Ok(all)
    }

    async fn hash_delete(&self, key: &str, fields: &[String]) -> BackendResult<u32> {
        if fields.is_empty() {
            return Ok(0);
        }
        self.cmd::<i64>(
            "HDEL",
            Retry::Never,
            redis::cmd("HDEL").arg(key).arg(fields).clone(),
        )
        .await
        .map(count)
    }

    async fn hash_incr_by(&self, key: &str, field: &str, delta: i64) -> BackendResult<i64> {
        self.cmd(
            "HINCRBY",
            Retry::Never,
            redis::cmd("HINCRBY").arg(key).arg(field).arg(delta).clone(),
        )
        .await
    }

    async fn list_push(&self, key: &str, end: ListEnd, values: &[Vec<u8>]) -> BackendResult<u32> {
        self.cmd::<i64>(
            push_cmd(end),
            Retry::Never,
            redis::cmd(push_cmd(end)).arg(key).arg(values).clone(),
        )
        .await
        .map(count)
    }

    async fn list_pop(&self, key: &str, end: ListEnd, n: u32) -> BackendResult<Vec<Vec<u8>>> {
        let name = match end {
            ListEnd::Front => "LPOP",
            ListEnd::Back => "RPOP",
        };
        let popped: Option<Vec<Vec<u8>>> = self
            .cmd(name, Retry::Never, redis::cmd(name).arg(key).arg(n).clone())
            .await?;
        Ok(popped.unwrap_or_default())
    }

    async fn list_range(&self, key: &str, start: i64, stop: i64) -> BackendResult<Vec<Vec<u8>>> {
        self.cmd(
            "LRANGE",
            Retry::Idempotent,
            redis::cmd("LRANGE").arg(key).arg(start).arg(stop).clone(),
        )
        .await
    }

    async fn list_len(&self, key: &str) -> BackendResult<u32> {
        self.cmd::<i64>(
            "LLEN",
            Retry::Idempotent,
            redis::cmd("LLEN").arg(key).clone(),
        )
        .await
        .map(count)
    }

    async fn set_add(&self, key: &str, members: &[Vec<u8>]) -> BackendResult<u32> {
        self.cmd::<i64>(
            "SADD",
            Retry::Never,
            redis::cmd("SADD").arg(key).arg(members).clone(),
        )
        .await
        .map(count)
    }

    async fn set_remove(&self, key: &str, members: &[Vec<u8>]) -> BackendResult<u32> {
        self.cmd::<i64>(
            "SREM",
            Retry::Never,
            redis::cmd("SREM").arg(key).arg(members).clone(),
        )
        .await
        .map(count)
    }

    async fn set_members(&self, key: &str) -> BackendResult<Vec<Vec<u8>>> {
        let mut members: Vec<Vec<u8>> = self
            .cmd(
                "SMEMBERS",
                Retry::Idempotent,
                redis::cmd("SMEMBERS").arg(key).clone(),
            )
            .await?;
        members.sort();
        Ok(members)
    }

    async fn set_contains(&self, key: &str, member: &[u8]) -> BackendResult<bool> {
        self.cmd(
            "SISMEMBER",
            Retry::Idempotent,
            redis::cmd("SISMEMBER").arg(key).arg(member).clone(),
        )
        .await
    }

    async fn scan(
        &self,
        pattern: &str,
        cursor: Option<&str>,
        n: u32,
    ) -> BackendResult<(Vec<String>, Option<String>)> {
        let cursor: u64 = match cursor {
            None => 0,
            Some(c) => c.parse().map_err(|_| {
                BackendError::InvalidArgument(format!("cursor {c:?} did not come from scan"))
            })?,
        };
        let (next, keys): (u64, Vec<String>) = self
            .cmd(
                "SCAN",
                Retry::Idempotent,
                redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(pattern)
                    .arg("COUNT")
                    .arg(n)
                    .clone(),
            )
            .await?;
        Ok((keys, (next != 0).then(|| next.to_string())))
    }
}
