//! Distributed locks whose lease is released when dropped.

use crate::Failure;
use crate::wit::techub::platform::lock as wit;

/// Why a lock call failed.
///
/// ```no_run
/// # use techub_guest::prelude::*;
/// # fn handle() -> Result<(), Failure> {
/// match lock::acquire("report", LockOptions { max_retries: 0, ..LockOptions::default() }) {
///     Ok(lease) => lease.release()?,
///     Err(lock::LockError::Contended) => return Err(Failure::retry("someone else is writing the report")),
///     Err(other) => return Err(other.into()),
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LockError {
    /// The name is empty, too long or has a control character.
    #[error("invalid lock name: {0}")]
    InvalidName(String),
    /// An option is out of the seed's range.
    #[error("invalid lock options: {0}")]
    InvalidOptions(String),
    /// Someone else held the lock through every retry.
    #[error("lock is held by someone else")]
    Contended,
    /// The lease ran out before this call.
    #[error("lease expired")]
    Expired,
    /// The plugin holds as many leases as its quota allows.
    #[error("quota exceeded: {0}")]
    QuotaExceeded(String),
    /// The backend is unreachable or timed out.
    #[error("lock backend unavailable: {0}")]
    Unavailable(String),
}

impl From<wit::LockError> for LockError {
    fn from(error: wit::LockError) -> Self {
        match error {
            wit::LockError::InvalidName(m) => Self::InvalidName(m),
            wit::LockError::InvalidOptions(m) => Self::InvalidOptions(m),
            wit::LockError::Contended => Self::Contended,
            wit::LockError::Expired => Self::Expired,
            wit::LockError::QuotaExceeded(m) => Self::QuotaExceeded(m),
            wit::LockError::Unavailable(m) => Self::Unavailable(m),
        }
    }
}

impl From<LockError> for Failure {
    fn from(error: LockError) -> Self {
        match error {
            LockError::InvalidName(_) | LockError::InvalidOptions(_) => Failure::reject(error),
            _ => Failure::retry(error),
        }
    }
}

/// How to acquire; defaults are the specification's (30 s TTL, 10 retries 50 ms apart).
///
/// ```no_run
/// # use techub_guest::prelude::*;
/// # fn handle() -> Result<(), Failure> {
/// let options = LockOptions { ttl_ms: 5_000, max_retries: 10, retry_delay_ms: 50 };
/// let lease = lock::acquire("product:p-1", options)?;
/// lease.release()?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy)]
pub struct LockOptions {
    /// Lease lifetime in milliseconds (1 s to 300 s).
    pub ttl_ms: u32,
    /// Attempts after the first while the lock is held (0 to 10).
    pub max_retries: u32,
    /// Wait between attempts in milliseconds (10 to 1000).
    pub retry_delay_ms: u32,
}

impl Default for LockOptions {
    fn default() -> Self {
        // The specification's lock constants.
        Self {
            ttl_ms: 30_000,
            max_retries: 10,
            retry_delay_ms: 50,
        }
    }
}

/// The state of a lease.
///
/// ```no_run
/// # use techub_guest::prelude::*;
/// # fn handle() -> Result<(), Failure> {
/// let lease = lock::acquire("job", LockOptions::default())?;
/// if lease.status() != lock::LockStatus::Acquired {
///     return Err(Failure::retry("lost the lock"));
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockStatus {
    /// Held.
    Acquired,
    /// Released.
    Released,
    /// Ran out while held.
    Expired,
}

/// A held lock; dropping it releases the lock.
///
/// ```no_run
/// # use techub_guest::prelude::*;
/// # fn handle() -> Result<(), Failure> {
/// let lease = lock::acquire("invoice:7", LockOptions::default())?;
/// log::info(format!("{} held with token {}", lease.name(), lease.fencing_token()));
/// lease.extend(30_000)?; // more time for a long step
/// lease.release()?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Lease {
    inner: wit::Lease,
}

impl Lease {
    /// The lock name.
    ///
    /// ```no_run
    /// # use techub_guest::prelude::*;
    /// # fn handle() -> Result<(), Failure> {
    /// let lease = lock::acquire("job", LockOptions::default())?;
    /// assert_eq!(lease.name(), "job");
    /// # Ok(()) }
    /// ```
    pub fn name(&self) -> String {
        self.inner.name()
    }
    /// Strictly larger for each acquisition of the same name: hand it to whatever the
    /// lock protects so that stale holders can be refused.
    ///
    /// ```no_run
    /// # use techub_guest::prelude::*;
    /// # fn handle() -> Result<(), Failure> {
    /// let lease = lock::acquire("ledger", LockOptions::default())?;
    /// // Writes carry the token; the store refuses one older than the last it saw.
    /// store::set("ledger:last-token", lease.fencing_token().to_string())?;
    /// # Ok(()) }
    /// ```
    pub fn fencing_token(&self) -> u64 {
        self.inner.fencing_token()
    }
    /// Whether the lease is still held.
    ///
    /// ```no_run
    /// # use techub_guest::prelude::*;
    /// # fn handle() -> Result<(), Failure> {
    /// let lease = lock::acquire("job", LockOptions::default())?;
    /// log::info(format!("{:?}", lease.status()));
    /// # Ok(()) }
    /// ```
    pub fn status(&self) -> LockStatus {
        match self.inner.status() {
            wit::LockStatus::Acquired => LockStatus::Acquired,
            wit::LockStatus::Released => LockStatus::Released,
            wit::LockStatus::Expired => LockStatus::Expired,
        }
    }
    /// Extends the lease to `ttl_ms` from now.
    ///
    /// ```no_run
    /// # use techub_guest::prelude::*;
    /// # fn handle() -> Result<(), Failure> {
    /// let lease = lock::acquire("job", LockOptions::default())?;
    /// lease.extend(10_000)?;
    /// # Ok(()) }
    /// ```
    pub fn extend(&self, ttl_ms: u32) -> Result<(), LockError> {
        Ok(self.inner.extend(ttl_ms)?)
    }
    /// Releases the lock; [`LockError::Expired`] if the lease had run out.
    ///
    /// ```no_run
    /// # use techub_guest::prelude::*;
    /// # fn handle() -> Result<(), Failure> {
    /// let lease = lock::acquire("job", LockOptions::default())?;
    /// lease.release()?;
    /// # Ok(()) }
    /// ```
    pub fn release(self) -> Result<(), LockError> {
        Ok(self.inner.release()?)
    }
}

/// Acquires the lock `name`.
///
/// ```no_run
/// # use techub_guest::prelude::*;
/// # fn handle() -> Result<(), Failure> {
/// let lease = lock::acquire("invoice:7", LockOptions { ttl_ms: 10_000, ..LockOptions::default() })?;
/// // ... work that must not run twice at once; pass lease.fencing_token() to writes
/// lease.release()?;
/// # Ok(()) }
/// ```
pub fn acquire(name: impl AsRef<str>, options: LockOptions) -> Result<Lease, LockError> {
    crate::native::ensure_host();
    let options = wit::LockOptions {
        ttl_ms: options.ttl_ms,
        max_retries: options.max_retries,
        retry_delay_ms: options.retry_delay_ms,
    };
    Ok(Lease {
        inner: wit::acquire(name.as_ref(), options)?,
    })
}

/// Runs `work` while holding the lock `name`, and releases it afterwards.
///
/// ```no_run
/// # use techub_guest::prelude::*;
/// # fn handle() -> Result<(), Failure> {
/// let total = lock::with_lock("account:7", LockOptions::default(), |lease| {
///     store::incr_by("balance:7", -100).map_err(Failure::from)
/// })?;
/// # Ok(()) }
/// ```
pub fn with_lock<T, E: From<LockError>>(
    name: impl AsRef<str>,
    options: LockOptions,
    work: impl FnOnce(&Lease) -> Result<T, E>,
) -> Result<T, E> {
    let lease = acquire(name, options)?;
    let result = work(&lease);
    // Release errors (an expired lease) matter only if the work succeeded.
    match (result, lease.release()) {
        (Ok(value), Ok(())) => Ok(value),
        (Ok(_), Err(error)) => Err(error.into()),
        (Err(error), _) => Err(error),
    }
}
