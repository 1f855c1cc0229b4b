//! Locks on Redis: `SET NX PX` with a random token, a fencing counter incremented in
//! the same script, and compare-and-delete / compare-and-expire in Lua so that only
//! the holder can release or extend.

use super::LockBackend;
use crate::capability::BackendResult;
use crate::capability::redis_client::{RedisClient, Retry};
use redis::Script;
use std::sync::LazyLock;
use std::time::Duration;

/// KEYS: lock, fence counter; ARGV: token, ttl-ms. The new fence, or 0 when held.
static ACQUIRE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return redis.call('INCR', KEYS[2])
end
return 0
",
    )
});

static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
",
    )
});

static EXTEND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
",
    )
});

/// Lock backend on a Redis server.
pub struct RedisLocks {
    redis: RedisClient,
}

impl RedisLocks {
    /// Locks on `redis`.
    pub fn new(redis: RedisClient) -> Self {
        Self { redis }
    }
}

#[async_trait::async_trait]
impl LockBackend for RedisLocks {
    async fn try_acquire(
        &self,
        key: &str,
        fence: &str,
        token: &str,
        ttl: Duration,
    ) -> BackendResult<Option<u64>> {
        let ttl_ms = (ttl.as_millis() as u64).max(1);
        // Not retried: a lost reply may hide a grant; the lease then expires by its TTL.
        let granted: i64 = self
            .redis
            .run("lock acquire", Retry::Never, |mut c| {
                let mut invocation = ACQUIRE.prepare_invoke();
                invocation.key(key).key(fence).arg(token).arg(ttl_ms);
                async move { invocation.invoke_async(&mut c).await }
            })
            .await?;
        // A fencing token lost in a failover would be handed out twice.
        if granted > 0 {
            self.redis.replicated(key).await?;
        }
        Ok((granted > 0).then_some(granted as u64))
    }

    async fn release(&self, key: &str, token: &str) -> BackendResult<bool> {
        let released: i64 = self
            .redis
            .run("lock release", Retry::Never, |mut c| {
                let mut invocation = RELEASE.prepare_invoke();
                invocation.key(key).arg(token);
                async move { invocation.invoke_async(&mut c).await }
            })
            .await?;
        Ok(released == 1)
    }

    async fn extend(&self, key: &str, token: &str, ttl: Duration) -> BackendResult<bool> {
        let ttl_ms = (ttl.as_millis() as u64).max(1);
        let extended: i64 = self
            .redis
            .run("lock extend", Retry::Idempotent, |mut c| {
                let mut invocation = EXTEND.prepare_invoke();
                invocation.key(key).arg(token).arg(ttl_ms);
                async move { invocation.invoke_async(&mut c).await }
            })
            .await?;
        Ok(extended == 1)
    }
}
