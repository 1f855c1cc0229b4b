//! The store on Redis: each call is one command (never `KEYS`; scans use `SCAN`).

use super::{AtomicOp, AtomicResult, KeyTtl, ListEnd, ScoreRange, SetCondition, StoreBackend};
use crate::capability::redis_client::map_error;
use crate::capability::redis_client::{RedisClient, Retry, same_slot};
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

/// Why an atomic batch was refused on a Redis Cluster, and how to fix it.
const CROSS_SLOT_BATCH: &str = "on a Redis Cluster an atomic batch keeps its keys in one hash slot: give them one {hash tag}, as in `order:{42}:total` and `order:{42}:items` (only the text between the first { and } decides the slot)";

fn ms(ttl: Duration) -> u64 {
    (ttl.as_millis() as u64).max(1)
}

fn count(n: i64) -> u32 {
    u32::try_from(n.max(0)).unwrap_or(u32::MAX)
}

/// Compare-and-swap of a string value, in one step on the server. ARGV: expected
/// present (0/1), expected value, new present (0/1), new value, TTL in ms (0: none).
/// `GET` fails with `WRONGTYPE` on another type, as the embedded store does.
static CAS: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r"
        local current = redis.call('GET', KEYS[1])
        if ARGV[1] == '1' then
            if current ~= ARGV[2] then return 0 end
        elseif current then
            return 0
        end
        if ARGV[3] == '1' then
            if ARGV[5] ~= '0' then
                redis.call('SET', KEYS[1], ARGV[4], 'PX', ARGV[5])
            else
                redis.call('SET', KEYS[1], ARGV[4])
            end
        else
            redis.call('DEL', KEYS[1])
        end
        return 1
        ",
    )
});

/// A score as Redis reads it (`+inf`, `-inf`, `(` for an exclusive bound).
fn score_arg(score: f64, exclusive: bool) -> String {
    let open = if exclusive { "(" } else { "" };
    match score {
        s if s == f64::INFINITY => format!("{open}+inf"),
        s if s == f64::NEG_INFINITY => format!("{open}-inf"),
        // Rust prints the shortest text that reads back to the same f64.
        s => format!("{open}{s}"),
    }
}

fn parse_score(text: &str) -> BackendResult<f64> {
    match text {
        "inf" | "+inf" => Ok(f64::INFINITY),
        "-inf" => Ok(f64::NEG_INFINITY),
        text => text
            .parse()
            .map_err(|_| BackendError::Unavailable(format!("Redis answered a score {text:?}"))),
    }
}

/// `WITHSCORES` answers: member, score, member, score...
fn with_scores(flat: Vec<Vec<u8>>) -> BackendResult<Vec<(Vec<u8>, f64)>> {
    flat.chunks(2)
        .map(|pair| match pair {
            [member, score] => Ok((
                member.clone(),
                parse_score(&String::from_utf8_lossy(score))?,
            )),
            _ => Err(BackendError::Unavailable(
                "Redis answered an odd WITHSCORES list".into(),
            )),
        })
        .collect()
}

/// One command's answer inside `EXEC`, as the op's result.
fn convert_answer(op: &AtomicOp, value: redis::Value) -> AtomicResult {
    fn parse<T: redis::FromRedisValue>(value: redis::Value) -> Result<T, BackendError> {
        redis::from_redis_value(value)
            .map_err(|e| BackendError::Unavailable(format!("unexpected answer in EXEC: {e}")))
    }
    let result = match op {
        AtomicOp::Get(_) => parse(value).map(AtomicResult::Value),
        AtomicOp::Set(..) => Ok(AtomicResult::Done(true)),
        AtomicOp::Delete(_) | AtomicOp::Expire(..) => {
            parse::<i64>(value).map(|n| AtomicResult::Done(n == 1))
        }
        AtomicOp::IncrBy(..) | AtomicOp::HashIncrBy(..) => parse(value).map(AtomicResult::Integer),
        AtomicOp::HashSet(..)
        | AtomicOp::ListPush(..)
        | AtomicOp::SetAdd(..)
        | AtomicOp::SortedAdd(..) => parse::<i64>(value).map(|n| AtomicResult::Count(count(n))),
    };
    result.unwrap_or_else(AtomicResult::Failed)
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
        // A conditional set is a claim: kept through a failover when replicas are
        // waited for.
        if reply.is_some() && condition != SetCondition::Always {
            self.redis.replicated(key).await?;
        }
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

    async fn sorted_add(&self, key: &str, members: &[(Vec<u8>, f64)]) -> BackendResult<u32> {
        let mut cmd = redis::cmd("ZADD");
        cmd.arg(key);
        for (member, score) in members {
            cmd.arg(score_arg(*score, false)).arg(member);
        }
        // Idempotent: the same scores written twice leave the same set (the count of
        // new members of a retried ZADD may be lower).
        Ok(count(self.cmd("ZADD", Retry::Idempotent, cmd).await?))
    }

    async fn sorted_incr_by(&self, key: &str, member: &[u8], delta: f64) -> BackendResult<f64> {
        let cmd = redis::cmd("ZINCRBY")
            .arg(key)
            .arg(score_arg(delta, false))
            .arg(member)
            .clone();
        let score: String = self.cmd("ZINCRBY", Retry::Never, cmd).await?;
        parse_score(&score)
    }

    async fn sorted_score(&self, key: &str, member: &[u8]) -> BackendResult<Option<f64>> {
        let cmd = redis::cmd("ZSCORE").arg(key).arg(member).clone();
        let score: Option<String> = self.cmd("ZSCORE", Retry::Idempotent, cmd).await?;
        score.as_deref().map(parse_score).transpose()
    }

    async fn sorted_remove(&self, key: &str, members: &[Vec<u8>]) -> BackendResult<u32> {
        let cmd = redis::cmd("ZREM").arg(key).arg(members).clone();
        Ok(count(self.cmd("ZREM", Retry::Idempotent, cmd).await?))
    }

    async fn sorted_len(&self, key: &str) -> BackendResult<u32> {
        let cmd = redis::cmd("ZCARD").arg(key).clone();
        Ok(count(self.cmd("ZCARD", Retry::Idempotent, cmd).await?))
    }

    async fn sorted_range(
        &self,
        key: &str,
        start: i64,
        stop: i64,
        reverse: bool,
    ) -> BackendResult<Vec<(Vec<u8>, f64)>> {
        let mut cmd = redis::cmd("ZRANGE");
        cmd.arg(key).arg(start).arg(stop);
        if reverse {
            cmd.arg("REV");
        }
        cmd.arg("WITHSCORES");
        with_scores(self.cmd("ZRANGE", Retry::Idempotent, cmd).await?)
    }

    async fn sorted_range_by_score(
        &self,
        key: &str,
        range: &ScoreRange,
        reverse: bool,
        offset: u32,
        n: u32,
    ) -> BackendResult<Vec<(Vec<u8>, f64)>> {
        let (min, max) = (
            score_arg(range.min, range.min_exclusive),
            score_arg(range.max, range.max_exclusive),
        );
        let mut cmd = redis::cmd("ZRANGE");
        cmd.arg(key);
        // With REV, Redis takes the bounds the other way round.
        match reverse {
            false => cmd.arg(min).arg(max).arg("BYSCORE"),
            true => cmd.arg(max).arg(min).arg("BYSCORE").arg("REV"),
        };
        cmd.arg("LIMIT").arg(offset).arg(n).arg("WITHSCORES");
        with_scores(self.cmd("ZRANGE", Retry::Idempotent, cmd).await?)
    }

    async fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
        ttl: Option<Duration>,
    ) -> BackendResult<bool> {
        // Never retried: a swap that happened but whose answer was lost would report
        // `false` the second time.
        let swapped: i64 = self
            .redis
            .run("CAS", Retry::Never, |mut c| {
                let mut invocation = CAS.key(key);
                invocation
                    .arg(u8::from(expected.is_some()))
                    .arg(expected.unwrap_or_default())
                    .arg(u8::from(new.is_some()))
                    .arg(new.unwrap_or_default())
                    .arg(ttl.map_or(0, ms));
                async move { invocation.invoke_async(&mut c).await }
            })
            .await?;
        if swapped == 1 {
            self.redis.replicated(key).await?;
        }
        Ok(swapped == 1)
    }

    async fn atomic(&self, ops: &[AtomicOp]) -> BackendResult<Vec<AtomicResult>> {
        if self.redis.layout().cluster && !same_slot(ops.iter().map(AtomicOp::key)) {
            return Err(BackendError::InvalidArgument(CROSS_SLOT_BATCH.to_string()));
        }
        let mut pipe = redis::pipe();
        // MULTI ... EXEC, each command's answer kept (a failed one does not hide the rest).
        pipe.atomic().ignore_errors();
        for op in ops {
            match op {
                AtomicOp::Get(key) => pipe.cmd("GET").arg(key),
                AtomicOp::Set(key, value, None) => pipe.cmd("SET").arg(key).arg(value),
                AtomicOp::Set(key, value, Some(ttl)) => {
                    pipe.cmd("SET").arg(key).arg(value).arg("PX").arg(ms(*ttl))
                }
                AtomicOp::Delete(key) => pipe.cmd("DEL").arg(key),
                AtomicOp::IncrBy(key, delta) => pipe.cmd("INCRBY").arg(key).arg(delta),
                AtomicOp::Expire(key, ttl) => pipe.cmd("PEXPIRE").arg(key).arg(ms(*ttl)),
                AtomicOp::HashSet(key, fields) => {
                    let cmd = pipe.cmd("HSET").arg(key);
                    for (field, value) in fields {
                        cmd.arg(field).arg(value);
                    }
                    cmd
                }
                AtomicOp::HashIncrBy(key, field, delta) => {
                    pipe.cmd("HINCRBY").arg(key).arg(field).arg(delta)
                }
                AtomicOp::ListPush(key, end, values) => {
                    pipe.cmd(push_cmd(*end)).arg(key).arg(values)
                }
                AtomicOp::SetAdd(key, members) => pipe.cmd("SADD").arg(key).arg(members),
                AtomicOp::SortedAdd(key, members) => {
                    let cmd = pipe.cmd("ZADD").arg(key);
                    for (member, score) in members {
                        cmd.arg(score_arg(*score, false)).arg(member);
                    }
                    cmd
                }
            };
        }
        // Never retried: a transaction whose answer was lost may have run.
        let answers: Vec<redis::RedisResult<redis::Value>> = self
            .redis
            .run("MULTI", Retry::Never, |mut c| {
                let pipe = pipe.clone();
                async move { pipe.query_async(&mut c).await }
            })
            .await?;
        if let Some(op) = ops.first() {
            self.redis.replicated(op.key()).await?;
        }
        let url = self.redis.url();
        Ok(ops
            .iter()
            .zip(answers)
            .map(|(op, answer)| match answer {
                Ok(value) => convert_answer(op, value),
                Err(error) => AtomicResult::Failed(map_error(url, "MULTI", error)),
            })
            .collect())
    }

    async fn scan(
        &self,
        pattern: &str,
        cursor: Option<&str>,
        n: u32,
    ) -> BackendResult<(Vec<String>, Option<String>)> {
        // On a cluster it walks every primary: a plugin's keys spread over them.
        self.redis.scan_page(pattern, cursor, n).await
    }
}
