//! The WIT `lock` interface: validation, retries, quotas and lease bookkeeping.

use super::LeaseState;
use super::LockGrant;
use crate::capability::bindings::techub::platform::lock::{
    Host, HostLease, LockError, LockOptions, LockStatus,
};
use crate::capability::{BackendError, Failure, Usage, unavailable_for_guest};
use crate::config::MIN_LOCK_TTL_MS;
use crate::names::check_name;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use wasmtime::component::{HasData, Resource, ResourceTable};

type Result<T> = std::result::Result<T, LockError>;

/// What a lock host function fails with.
pub type LockFailure = Failure<LockError>;
type LockResult<T> = std::result::Result<T, LockFailure>;

/// What the `lock` interface reaches of an instance: the plugin's lock grant (its
/// namespace, the limits, the locks), this invocation's quotas, the resource table
/// its leases live in, and the leases it still holds.
pub struct LockView<'a> {
    grant: &'a LockGrant,
    usage: &'a mut Usage,
    table: &'a mut ResourceTable,
    /// Leases not yet released: token → namespaced key.
    held: &'a mut HashMap<String, String>,
}

impl<'a> LockView<'a> {
    /// The view of one instance.
    pub fn new(
        grant: &'a LockGrant,
        usage: &'a mut Usage,
        table: &'a mut ResourceTable,
        held: &'a mut HashMap<String, String>,
    ) -> Self {
        Self {
            grant,
            usage,
            table,
            held,
        }
    }

    fn charge_call(&mut self, function: &'static str) -> std::result::Result<(), String> {
        self.usage.charge("lock", function)
    }
}

/// Links `lock` with [`LockView`].
pub struct HasLock;

impl HasData for HasLock {
    type Data<'a> = LockView<'a>;
}

impl From<BackendError> for LockFailure {
    fn from(error: BackendError) -> Self {
        LockError::from(error).into()
    }
}

impl From<BackendError> for LockError {
    fn from(error: BackendError) -> Self {
        LockError::Unavailable(unavailable_for_guest("lock", &error.to_string()))
    }
}

impl LockView<'_> {
    fn check_lock_options(&self, options: &LockOptions) -> Result<()> {
        let limits = &self.grant.limits;
        let bad = |m: String| Err(LockError::InvalidOptions(m));
        if options.ttl_ms < MIN_LOCK_TTL_MS || options.ttl_ms > limits.max_ttl_ms {
            return bad(format!(
                "ttl-ms must be {MIN_LOCK_TTL_MS} to {}, got {}",
                limits.max_ttl_ms, options.ttl_ms
            ));
        }
        if options.max_retries > limits.max_retries {
            return bad(format!(
                "max-retries must be 0 to {}, got {}",
                limits.max_retries, options.max_retries
            ));
        }
        if !(10..=1000).contains(&options.retry_delay_ms) {
            return bad(format!(
                "retry-delay-ms must be 10 to 1000, got {}",
                options.retry_delay_ms
            ));
        }
        Ok(())
    }

    async fn lock_acquire(&mut self, name: String, options: LockOptions) -> Result<LeaseState> {
        self.charge_call("acquire")
            .map_err(LockError::QuotaExceeded)?;
        check_name(&name, self.grant.max_key_length)
            .map_err(|m| LockError::InvalidName(format!("name {m}")))?;
        self.check_lock_options(&options)?;
        let max_leases = self.grant.max_leases;
        if self.usage.leases >= max_leases {
            self.usage.over.leases = true;
            return Err(LockError::QuotaExceeded(format!(
                "holds {max_leases} leases already"
            )));
        }
        let key = format!("{}{name}", self.grant.prefix);
        let token = uuid::Uuid::new_v4().to_string();
        let ttl = Duration::from_millis(options.ttl_ms.into());
        let locks = self.grant.backend.clone();
        for attempt in 0..=options.max_retries {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(options.retry_delay_ms.into())).await;
            }
            let started = Instant::now();
            if let Some(fence) = locks
                .try_acquire(&key, &self.grant.fence, &token, ttl)
                .await?
            {
                self.usage.leases += 1;
                return Ok(LeaseState {
                    name,
                    key,
                    token,
                    fence,
                    expires_at: started + ttl,
                    released: false,
                });
            }
        }
        Err(LockError::Contended)
    }

    fn forget_lease(&mut self, token: &str) {
        if self.held.remove(token).is_some() {
            self.usage.leases = self.usage.leases.saturating_sub(1);
        }
    }

    /// Releases every lease the instance still holds; called when it ends, trap
    /// included, so that a crashed plugin never keeps a lock until its TTL.
    pub async fn release_all(&mut self) {
        let locks = self.grant.backend.clone();
        for (token, key) in std::mem::take(self.held) {
            if let Err(error) = locks.release(&key, &token).await {
                tracing::warn!(plugin = %self.grant.plugin, %key, %error, "could not release a lease; it expires by its TTL");
            }
        }
        self.usage.leases = 0;
    }
}

impl Host for LockView<'_> {
    fn convert_lock_error(&mut self, error: LockFailure) -> wasmtime::Result<LockError> {
        error.downcast()
    }

    async fn acquire(
        &mut self,
        name: String,
        options: LockOptions,
    ) -> LockResult<Resource<LeaseState>> {
        let lease = self.lock_acquire(name, options).await?;
        let (key, token) = (lease.key.clone(), lease.token.clone());
        // A full table is the host's problem, not the guest's: trap.
        let resource = self.table.push(lease).map_err(LockFailure::trap)?;
        self.held.insert(token, key);
        Ok(resource)
    }
}

impl HostLease for LockView<'_> {
    async fn name(&mut self, lease: Resource<LeaseState>) -> wasmtime::Result<String> {
        self.usage.charge_or_trap("lock", "name")?;
        Ok(self.table.get(&lease)?.name.clone())
    }

    async fn fencing_token(&mut self, lease: Resource<LeaseState>) -> wasmtime::Result<u64> {
        self.usage.charge_or_trap("lock", "fencing_token")?;
        Ok(self.table.get(&lease)?.fence)
    }

    async fn status(&mut self, lease: Resource<LeaseState>) -> wasmtime::Result<LockStatus> {
        self.usage.charge_or_trap("lock", "status")?;
        let lease = self.table.get(&lease)?;
        Ok(if lease.released {
            LockStatus::Released
        } else if lease.expires_at <= Instant::now() {
            LockStatus::Expired
        } else {
            LockStatus::Acquired
        })
    }

    async fn extend(&mut self, lease: Resource<LeaseState>, ttl_ms: u32) -> LockResult<()> {
        self.charge_call("extend")
            .map_err(LockError::QuotaExceeded)?;
        let max = self.grant.limits.max_ttl_ms;
        if !(MIN_LOCK_TTL_MS..=max).contains(&ttl_ms) {
            return Err(LockError::InvalidOptions(format!(
                "ttl-ms must be {MIN_LOCK_TTL_MS} to {max}, got {ttl_ms}"
            ))
            .into());
        }
        // A handle not in the table is a broken invariant: `?` traps.
        let (key, token, released) = {
            let l = self.table.get(&lease).map_err(LockFailure::trap)?;
            (l.key.clone(), l.token.clone(), l.released)
        };
        if released {
            return Err(LockError::Expired.into());
        }
        let ttl = Duration::from_millis(ttl_ms.into());
        let started = Instant::now();
        if !self.grant.backend.extend(&key, &token, ttl).await? {
            return Err(LockError::Expired.into());
        }
        self.table
            .get_mut(&lease)
            .map_err(LockFailure::trap)?
            .expires_at = started + ttl;
        Ok(())
    }

    async fn release(&mut self, lease: Resource<LeaseState>) -> LockResult<()> {
        self.charge_call("release")
            .map_err(LockError::QuotaExceeded)?;
        let (key, token, released) = {
            let l = self.table.get(&lease).map_err(LockFailure::trap)?;
            (l.key.clone(), l.token.clone(), l.released)
        };
        if released {
            return Err(LockError::Expired.into());
        }
        let held = self.grant.backend.release(&key, &token).await?;
        self.table
            .get_mut(&lease)
            .map_err(LockFailure::trap)?
            .released = true;
        self.forget_lease(&token);
        match held {
            true => Ok(()),
            false => Err(LockError::Expired.into()),
        }
    }

    async fn drop(&mut self, lease: Resource<LeaseState>) -> wasmtime::Result<()> {
        let lease = self.table.delete(lease)?;
        if !lease.released {
            self.forget_lease(&lease.token);
            // An error here leaves the key to expire by its TTL, which is the contract.
            let _ = self.grant.backend.release(&lease.key, &lease.token).await;
        }
        Ok(())
    }
}
