//! The shared, domain-aware cache.
//!
//! Entries live in domains declared in `host.toml` (seeded with the specification's 14,
//! available here as [`Domain`] constants). Every entry expires; without an explicit TTL
//! it gets its domain's.

mod invalidation;
mod loader;
mod read_through;

pub use invalidation::{Invalidation, invalidate};
pub use loader::Loaded;
pub use read_through::{get_or_load, get_or_load_json, get_or_load_many, get_or_load_many_json};

use crate::Failure;
use crate::wit::techub::platform::cache as wit;
use serde::{Serialize, de::DeserializeOwned};

/// A cache domain name. The constants are the seed's `CacheDomain`; an operator may
/// declare more in `host.toml`, reachable with [`Domain::new`].
///
/// ```no_run
/// # use techub_guest::prelude::*;
/// # fn handle() -> Result<(), Failure> {
/// cache::get(Domain::PRODUCTS, "p-1")?; // a seeded domain
/// cache::get(Domain::new("search"), "q:lamp")?; // one declared in host.toml
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Domain(&'static str);

impl Domain {
    /// Permissions (15 min).
    pub const PERMISSIONS: Domain = Domain("permissions");
    /// Users (30 min).
    pub const USERS: Domain = Domain("users");
    /// Products (1 h).
    pub const PRODUCTS: Domain = Domain("products");
    /// Categories (2 h).
    pub const CATEGORIES: Domain = Domain("categories");
    /// Sessions (24 h).
    pub const SESSIONS: Domain = Domain("sessions");
    /// Carts (7 days).
    pub const CART: Domain = Domain("cart");
    /// Inventory (5 min).
    pub const INVENTORY: Domain = Domain("inventory");
    /// Pricing.
    pub const PRICING: Domain = Domain("pricing");
    /// Orders.
    pub const ORDERS: Domain = Domain("orders");
    /// Settings.
    pub const SETTINGS: Domain = Domain("settings");
    /// Brands.
    pub const BRANDS: Domain = Domain("brands");
    /// Coupons.
    pub const COUPONS: Domain = Domain("coupons");
    /// Reviews.
    pub const REVIEWS: Domain = Domain("reviews");
    /// Wishlists.
    pub const WISHLIST: Domain = Domain("wishlist");

    /// A domain declared in `host.toml` beyond the seed's.
    pub const fn new(name: &'static str) -> Self {
        Domain(name)
    }
    /// The domain's name.
    pub const fn name(self) -> &'static str {
        self.0
    }
}

impl AsRef<str> for Domain {
    fn as_ref(&self) -> &str {
        self.0
    }
}

/// Eviction weight of an entry kept in process: in the embedded cache, and in each
/// host's L1 copy of a Redis domain (`[cache.l1.<domain>]`), lower priorities go first
/// when the budget is full. Redis keeps it for the L1s; its own `maxmemory` eviction
/// does not read it.
///
/// ```no_run
/// # use techub_guest::prelude::*;
/// # fn handle() -> Result<(), Failure> {
/// let options = EntryOptions::default().priority(cache::Priority::Critical);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Priority {
    /// Evicted first.
    Low,
    /// The default.
    #[default]
    Medium,
    /// Kept over low and medium.
    High,
    /// Evicted last.
    Critical,
}

/// How to write an entry.
///
/// ```no_run
/// # use techub_guest::prelude::*;
/// # fn handle() -> Result<(), Failure> {
/// let options = EntryOptions::default()
///     .ttl_seconds(300)
///     .tag("vendor:7")
///     .priority(cache::Priority::High);
/// cache::set(Domain::PRODUCTS, "p-1", b"Lamp", &options)?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default)]
pub struct EntryOptions {
    ttl_seconds: Option<u32>,
    tags: Vec<String>,
    priority: Priority,
}

impl EntryOptions {
    /// Lifetime in seconds instead of the domain's TTL.
    ///
    /// ```no_run
    /// # use techub_guest::prelude::*;
    /// # fn handle() -> Result<(), Failure> {
    /// let options = EntryOptions::default().ttl_seconds(60);
    /// # Ok(()) }
    /// ```
    pub fn ttl_seconds(mut self, seconds: u32) -> Self {
        self.ttl_seconds = Some(seconds);
        self
    }
    /// Files the entry under a tag, for [`invalidate_tag`].
    ///
    /// ```no_run
    /// # use techub_guest::prelude::*;
    /// # fn handle() -> Result<(), Failure> {
    /// let options = EntryOptions::default().tag("user:42").tag("tenant:acme");
    /// # Ok(()) }
    /// ```
    pub fn tag(mut self, tag: impl AsRef<str>) -> Self {
        self.tags.push(tag.as_ref().to_string());
        self
    }
    /// Eviction weight in the embedded cache.
    ///
    /// ```no_run
    /// # use techub_guest::prelude::*;
    /// # fn handle() -> Result<(), Failure> {
    /// let options = EntryOptions::default().priority(cache::Priority::Low);
    /// # Ok(()) }
    /// ```
    pub fn priority(mut self, priority: Priority) -> Self {
        self.priority = priority;
        self
    }

    fn to_wit(&self) -> wit::EntryOptions {
        wit::EntryOptions {
            ttl_seconds: self.ttl_seconds,
            tags: self.tags.clone(),
            priority: match self.priority {
                Priority::Low => wit::Priority::Low,
                Priority::Medium => wit::Priority::Medium,
                Priority::High => wit::Priority::High,
                Priority::Critical => wit::Priority::Critical,
            },
        }
    }
}

/// Hit and miss counters.
///
/// ```no_run
/// # use techub_guest::prelude::*;
/// # fn handle() -> Result<(), Failure> {
/// let stats: cache::Stats = cache::stats(None)?;
/// log::info(format!("{} hits, {} misses, rate {:.2}", stats.hits, stats.misses, stats.hit_rate()));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    /// Reads that found an entry.
    pub hits: u64,
    /// Reads that found nothing.
    pub misses: u64,
    /// Entries written.
    pub sets: u64,
    /// Entries removed.
    pub deletes: u64,
}

impl Stats {
    /// Hits over reads, 0.0 to 1.0 (0.0 before any read).
    ///
    /// ```no_run
    /// # use techub_guest::prelude::*;
    /// # fn handle() -> Result<(), Failure> {
    /// let rate: f64 = cache::stats(Some(Domain::USERS))?.hit_rate();
    /// # Ok(()) }
    /// ```
    pub fn hit_rate(&self) -> f64 {
        let reads = self.hits + self.misses;
        if reads == 0 {
            return 0.0;
        }
        self.hits as f64 / reads as f64
    }
}

/// Why a cache call failed.
///
/// ```no_run
/// # use techub_guest::prelude::*;
/// # fn handle(message: Message) -> Result<(), Failure> {
/// match cache::get(Domain::PRICING, "p-1") {
///     Ok(price) => {}
///     // Not granted: the message names the host.toml line to add.
///     Err(cache::CacheError::UnknownDomain(line)) => return Err(Failure::reject(line)),
///     // Everything else converts: unavailable and quotas retry, bad input rejects.
///     Err(other) => return Err(other.into()),
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CacheError {
    /// The key or tag is empty, too long or has a control character.
    #[error("invalid cache key: {0}")]
    InvalidKey(String),
    /// The value exceeds the entry limit (bytes).
    #[error("cache value larger than the limit of {0} bytes")]
    ValueTooLarge(u64),
    /// The domain is not declared or not granted to this plugin.
    #[error("unknown or ungranted cache domain: {0}")]
    UnknownDomain(String),
    /// A bulk call named more keys than the limit.
    #[error("more keys than the bulk limit of {0}")]
    TooManyKeys(u32),
    /// Another argument is out of range.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A quota of this invocation is used up.
    #[error("quota exceeded: {0}")]
    QuotaExceeded(String),
    /// The backend is unreachable or timed out.
    #[error("cache unavailable: {0}")]
    Unavailable(String),
    /// A read-through ([`get_or_load`]) missed and could not load: the domain has no
    /// loader, or the loader failed. Converts into a retry.
    #[error("cache loader failed: {0}")]
    LoaderFailed(String),
}

impl From<wit::CacheError> for CacheError {
    fn from(error: wit::CacheError) -> Self {
        match error {
            wit::CacheError::InvalidKey(m) => Self::InvalidKey(m),
            wit::CacheError::ValueTooLarge(n) => Self::ValueTooLarge(n),
            wit::CacheError::UnknownDomain(m) => Self::UnknownDomain(m),
            wit::CacheError::TooManyKeys(n) => Self::TooManyKeys(n),
            wit::CacheError::InvalidArgument(m) => Self::InvalidArgument(m),
            wit::CacheError::QuotaExceeded(m) => Self::QuotaExceeded(m),
            wit::CacheError::Unavailable(m) => Self::Unavailable(m),
            wit::CacheError::LoaderFailed(m) => Self::LoaderFailed(m),
        }
    }
}

impl From<CacheError> for Failure {
    fn from(error: CacheError) -> Self {
        match error {
            CacheError::Unavailable(_)
            | CacheError::QuotaExceeded(_)
            | CacheError::LoaderFailed(_) => Failure::retry(error),
            _ => Failure::reject(error),
        }
    }
}

/// Reads an entry; `None` when absent or expired.
///
/// ```no_run
/// # use techub_guest::prelude::*;
/// # fn handle() -> Result<(), Failure> {
/// let profile: Option<Vec<u8>> = cache::get(Domain::USERS, "42")?;
/// # Ok(()) }
/// ```
pub fn get(domain: impl AsRef<str>, key: impl AsRef<str>) -> Result<Option<Vec<u8>>, CacheError> {
    crate::native::ensure_host();
    Ok(wit::get(domain.as_ref(), key.as_ref())?)
}

/// Reads an entry and parses it as JSON; an entry that does not parse is a
/// [`CacheError::InvalidArgument`].
///
/// ```no_run
/// # use techub_guest::prelude::*;
/// # fn handle() -> Result<(), Failure> {
/// let user: Option<serde_json::Value> = cache::get_json(Domain::USERS, "42")?;
/// # Ok(()) }
/// ```
pub fn get_json<T: DeserializeOwned>(
    domain: impl AsRef<str>,
    key: impl AsRef<str>,
) -> Result<Option<T>, CacheError> {
    get(domain, key)?
        .map(|bytes| parse_json(&bytes))
        .transpose()
}

/// A cached value as the JSON type a caller expects.
fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CacheError> {
    serde_json::from_slice(bytes).map_err(|e| {
        CacheError::InvalidArgument(format!("cached value is not the expected JSON: {e}"))
    })
}

/// Writes an entry.
///
/// ```no_run
/// # use techub_guest::prelude::*;
/// # fn handle() -> Result<(), Failure> {
/// cache::set(Domain::USERS, "42", b"Ada", &EntryOptions::default().ttl_seconds(600))?;
/// # Ok(()) }
/// ```
pub fn set(
    domain: impl AsRef<str>,
    key: impl AsRef<str>,
    value: impl AsRef<[u8]>,
    options: &EntryOptions,
) -> Result<(), CacheError> {
    crate::native::ensure_host();
    Ok(wit::set(
        domain.as_ref(),
        key.as_ref(),
        value.as_ref(),
        &options.to_wit(),
    )?)
}

/// Writes an entry as JSON.
///
/// ```no_run
/// # use techub_guest::prelude::*;
/// # fn handle() -> Result<(), Failure> {
/// let options = EntryOptions::default().tag("vendor:7");
/// cache::set_json(Domain::PRODUCTS, "p-1", &serde_json::json!({"name": "Lamp"}), &options)?;
/// # Ok(()) }
/// ```
pub fn set_json<T: Serialize + ?Sized>(
    domain: impl AsRef<str>,
    key: impl AsRef<str>,
    value: &T,
    options: &EntryOptions,
) -> Result<(), CacheError> {
    let bytes = serde_json::to_vec(value)
        .map_err(|e| CacheError::InvalidArgument(format!("value does not serialize: {e}")))?;
    set(domain, key, bytes, options)
}

/// Removes an entry; `true` when there was one.
///
/// ```no_run
/// # use techub_guest::prelude::*;
/// # fn handle() -> Result<(), Failure> {
/// let existed: bool = cache::delete(Domain::CART, "session-9")?;
/// # Ok(()) }
/// ```
pub fn delete(domain: impl AsRef<str>, key: impl AsRef<str>) -> Result<bool, CacheError> {
    crate::native::ensure_host();
    Ok(wit::delete(domain.as_ref(), key.as_ref())?)
}

/// Whether an unexpired entry exists.
///
/// ```no_run
/// # use techub_guest::prelude::*;
/// # fn handle() -> Result<(), Failure> {
/// if !cache::exists(Domain::SESSIONS, "s-1")? {
///     return Err(Failure::reject("session expired"));
/// }
/// # Ok(()) }
/// ```
pub fn exists(domain: impl AsRef<str>, key: impl AsRef<str>) -> Result<bool, CacheError> {
    crate::native::ensure_host();
    Ok(wit::exists(domain.as_ref(), key.as_ref())?)
}

/// Reads many entries in one round trip, in the order of `keys`.
///
/// ```no_run
/// # use techub_guest::prelude::*;
/// # fn handle() -> Result<(), Failure> {
/// let values = cache::get_many(Domain::PRODUCTS, &["p-1", "p-2"])?;
/// let missing = values.iter().filter(|v| v.is_none()).count();
/// # Ok(()) }
/// ```
pub fn get_many<K: AsRef<str>>(
    domain: impl AsRef<str>,
    keys: &[K],
) -> Result<Vec<Option<Vec<u8>>>, CacheError> {
    crate::native::ensure_host();
    let keys: Vec<String> = keys.iter().map(|k| k.as_ref().to_string()).collect();
    Ok(wit::get_many(domain.as_ref(), &keys)?)
}

/// Writes many entries in one round trip, all with the same options.
///
/// ```no_run
/// # use techub_guest::prelude::*;
/// # fn handle() -> Result<(), Failure> {
/// let entries = vec![("p-1".to_string(), b"Lamp".to_vec()), ("p-2".to_string(), b"Desk".to_vec())];
/// cache::set_many(Domain::PRODUCTS, &entries, &EntryOptions::default())?;
/// # Ok(()) }
/// ```
pub fn set_many(
    domain: impl AsRef<str>,
    entries: &[(String, Vec<u8>)],
    options: &EntryOptions,
) -> Result<(), CacheError> {
    crate::native::ensure_host();
    Ok(wit::set_many(domain.as_ref(), entries, &options.to_wit())?)
}

/// Removes every entry filed under `tag` in `domain`, or in every granted domain when
/// `domain` is `None`. Returns how many were removed.
///
/// ```no_run
/// # use techub_guest::prelude::*;
/// # fn handle() -> Result<(), Failure> {
/// // Everything filed under the vendor, in every domain granted to this plugin.
/// let removed: u64 = cache::invalidate_tag(None, "vendor:7")?;
/// # Ok(()) }
/// ```
pub fn invalidate_tag(domain: Option<Domain>, tag: impl AsRef<str>) -> Result<u64, CacheError> {
    crate::native::ensure_host();
    Ok(wit::invalidate_tag(domain.map(|d| d.name()), tag.as_ref())?)
}

/// Removes every entry of `domain` whose key matches the glob `pattern`.
///
/// ```no_run
/// # use techub_guest::prelude::*;
/// # fn handle() -> Result<(), Failure> {
/// let removed = cache::invalidate_pattern(Domain::PRODUCTS, "search:lamp*")?;
/// # Ok(()) }
/// ```
pub fn invalidate_pattern(
    domain: impl AsRef<str>,
    pattern: impl AsRef<str>,
) -> Result<u64, CacheError> {
    crate::native::ensure_host();
    Ok(wit::invalidate_pattern(domain.as_ref(), pattern.as_ref())?)
}

/// Counters of `domain`, or of all granted domains summed, over everything the host
/// retains (the last hour by default; every host's when the cache is on Redis).
///
/// ```no_run
/// # use techub_guest::prelude::*;
/// # fn handle() -> Result<(), Failure> {
/// let stats = cache::stats(Some(Domain::PRODUCTS))?;
/// log::info(format!("hit rate {:.2}", stats.hit_rate()));
/// # Ok(()) }
/// ```
pub fn stats(domain: Option<Domain>) -> Result<Stats, CacheError> {
    stats_since(domain, 0)
}

/// Counters of `domain` (or of all granted domains) from `since_ms` (ms since the Unix
/// epoch, minute resolution) until now.
///
/// ```no_run
/// # use techub_guest::prelude::*;
/// let now_ms = std::time::SystemTime::now()
///     .duration_since(std::time::UNIX_EPOCH)
///     .map_or(0, |d| d.as_millis() as u64);
/// let ten_minutes_ago = now_ms.saturating_sub(10 * 60_000);
/// let users = cache::stats_since(Some(Domain::USERS), ten_minutes_ago)?;
/// let _rate = users.hit_rate();
/// # Ok::<(), cache::CacheError>(())
/// ```
pub fn stats_since(domain: Option<Domain>, since_ms: u64) -> Result<Stats, CacheError> {
    crate::native::ensure_host();
    let window = wit::StatsWindow {
        start_ms: since_ms,
        end_ms: None,
    };
    let s = wit::stats(domain.map(|d| d.name()), Some(window))?;
    Ok(Stats {
        hits: s.hits,
        misses: s.misses,
        sets: s.sets,
        deletes: s.deletes,
    })
}

/// The configured default TTL of `domain`, in seconds.
///
/// ```no_run
/// # use techub_guest::prelude::*;
/// # fn handle() -> Result<(), Failure> {
/// let seconds: u32 = cache::domain_ttl(Domain::CART)?;
/// # Ok(()) }
/// ```
pub fn domain_ttl(domain: impl AsRef<str>) -> Result<u32, CacheError> {
    crate::native::ensure_host();
    Ok(wit::domain_ttl(domain.as_ref())?)
}

/// Memoises `compute` in the cache (the specification's `@Cacheable`), on the
/// plugin's side: returns the cached JSON value of `key`, or computes it, caches it
/// with `options` (TTL, tags) and returns it. A cache that is unavailable is read
/// past, not fatal. For misses filled by the host, once across callers and hosts,
/// see [`get_or_load`].
///
/// ```ignore
/// let price: u64 = cache::memo(Domain::PRICING, "sku-1", &EntryOptions::default().ttl_seconds(60),
///     || compute_price("sku-1"))?;
/// ```
pub fn memo<T, E>(
    domain: Domain,
    key: impl AsRef<str>,
    options: &EntryOptions,
    compute: impl FnOnce() -> Result<T, E>,
) -> Result<T, E>
where
    T: Serialize + DeserializeOwned,
{
    let key = key.as_ref();
    if let Ok(Some(hit)) = get_json::<T>(domain, key) {
        return Ok(hit);
    }
    let value = compute()?;
    // A failed write only costs the next reader a miss.
    let _ = set_json(domain, key, &value, options);
    Ok(value)
}
