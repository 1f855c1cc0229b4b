//! The WIT `lock` interface: validation, retries, quotas and lease bookkeeping.

use super::LeaseState;
use crate::bindings::techub::platform::lock::{
    Host, HostLease, LockError, LockOptions, LockStatus,
};
use crate::capability::{BackendError, check_name, unavailable_for_guest};
use crate::config::MIN_LOCK_TTL_MS;
use crate::runtime::PluginState;
use std::time::{Duration, Instant};
use wasmtime::component::Resource;

type Result<T> = std::result::Result<T, LockError>;

impl From<BackendError> for LockError {
    fn from(error: BackendError) -> Self {
        LockError::Unavailable(unavailable_for_guest("lock", &error.to_string()))
    }
}

impl PluginState {
    fn check_lock_options(&self, options: &LockOptions) -> Result<()> {
        let limits = &self.plugin.config.lock;
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
        self.charge_call().map_err(LockError::QuotaExceeded)?;
        check_name(&name, self.plugin.config.host.max_key_length)
            .map_err(|m| LockError::InvalidName(format!("name {m}")))?;
        self.check_lock_options(&options)?;
        let max_leases = self.plugin.limits.max_leases;
        if self.usage.leases >= max_leases {
            return Err(LockError::QuotaExceeded(format!(
                "holds {max_leases} leases already"
            )));
        }
        let key = format!("{}{name}", self.plugin.lock_prefix);
        let token = uuid::Uuid::new_v4().to_string();
        let ttl = Duration::from_millis(options.ttl_ms.into());
        let locks = self.plugin.services.locks.clone();
        for attempt in 0..=options.max_retries {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(options.retry_delay_ms.into())).await;
            }
            let started = Instant::now();
            if let Some(fence) = locks
                .try_acquire(&key, &self.plugin.lock_fence, &token, ttl)
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
        if self.held_leases.remove(token).is_some() {
            self.usage.leases = self.usage.leases.saturating_sub(1);
        }
    }

    /// Releases every lease the instance still holds; called when it ends, trap
    /// included, so that a crashed plugin never keeps a lock until its TTL.
    pub(crate) async fn release_leases(&mut self) {
        let locks = self.plugin.services.locks.clone();
        for (token, key) in std::mem::take(&mut self.held_leases) {
            if let Err(error) = locks.release(&key, &token).await {
                tracing::warn!(plugin = %self.plugin.name, %key, %error, "could not release a lease; it expires by its TTL");
            }
        }
        self.usage.leases = 0;
    }
}

impl Host for PluginState {
    async fn acquire(
        &mut self,
        name: String,
        options: LockOptions,
    ) -> wasmtime::Result<Result<Resource<LeaseState>>> {
        match self.lock_acquire(name, options).await {
            Ok(lease) => {
                let (key, token) = (lease.key.clone(), lease.token.clone());
                let resource = self.table.push(lease)?;
                self.held_leases.insert(token, key);
                Ok(Ok(resource))
            }
            Err(error) => Ok(Err(error)),
        }
    }
}

impl HostLease for PluginState {
    async fn name(&mut self, lease: Resource<LeaseState>) -> wasmtime::Result<String> {
        self.charge_or_trap()?;
        Ok(self.table.get(&lease)?.name.clone())
    }

    async fn fencing_token(&mut self, lease: Resource<LeaseState>) -> wasmtime::Result<u64> {
        self.charge_or_trap()?;
        Ok(self.table.get(&lease)?.fence)
    }

    async fn status(&mut self, lease: Resource<LeaseState>) -> wasmtime::Result<LockStatus> {
        self.charge_or_trap()?;
        let lease = self.table.get(&lease)?;
        Ok(if lease.released {
            LockStatus::Released
        } else if lease.expires_at <= Instant::now() {
            LockStatus::Expired
        } else {
            LockStatus::Acquired
        })
    }

    async fn extend(
        &mut self,
        lease: Resource<LeaseState>,
        ttl_ms: u32,
    ) -> wasmtime::Result<Result<()>> {
        if let Err(e) = self.charge_call() {
            return Ok(Err(LockError::QuotaExceeded(e)));
        }
        let max = self.plugin.config.lock.max_ttl_ms;
        if !(MIN_LOCK_TTL_MS..=max).contains(&ttl_ms) {
            return Ok(Err(LockError::InvalidOptions(format!(
                "ttl-ms must be {MIN_LOCK_TTL_MS} to {max}, got {ttl_ms}"
            ))));
        }
        let (key, token, released) = {
            let l = self.table.get(&lease)?;
            (l.key.clone(), l.token.clone(), l.released)
        };
        if released {
            return Ok(Err(LockError::Expired));
        }
        let ttl = Duration::from_millis(ttl_ms.into());
        let started = Instant::now();
        match self.plugin.services.locks.extend(&key, &token, ttl).await {
            Ok(true) => {
                self.table.get_mut(&lease)?.expires_at = started + ttl;
                Ok(Ok(()))
            }
            Ok(false) => Ok(Err(LockError::Expired)),
            Err(e) => Ok(Err(e.into())),
        }
    }

    async fn release(&mut self, lease: Resource<LeaseState>) -> wasmtime::Result<Result<()>> {
        if let Err(e) = self.charge_call() {
            return Ok(Err(LockError::QuotaExceeded(e)));
        }
        let (key, token, released) = {
            let l = self.table.get(&lease)?;
            (l.key.clone(), l.token.clone(), l.released)
        };
        if released {
            return Ok(Err(LockError::Expired));
        }
        let result = self.plugin.services.locks.release(&key, &token).await;
        if result.is_ok() {
            self.table.get_mut(&lease)?.released = true;
            self.forget_lease(&token);
        }
        Ok(match result {
            Ok(true) => Ok(()),
            Ok(false) => Err(LockError::Expired),
            Err(e) => Err(e.into()),
        })
    }

    async fn drop(&mut self, lease: Resource<LeaseState>) -> wasmtime::Result<()> {
        let lease = self.table.delete(lease)?;
        if !lease.released {
            self.forget_lease(&lease.token);
            // An error here leaves the key to expire by its TTL, which is the contract.
            let _ = self
                .plugin
                .services
                .locks
                .release(&lease.key, &lease.token)
                .await;
        }
        Ok(())
    }
}
