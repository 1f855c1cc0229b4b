//! The WIT `cache` interface: grants, validation, quotas and stats over a backend.

use super::CacheGrant;
use super::read_through::LoadFailure;
use super::{CacheWrite, DomainStats, Window};
use crate::capability::bindings::techub::platform::cache::{
    CacheError, DomainStats as WitStats, EntryOptions, Host, Invalidation, StatsWindow,
};
use crate::capability::{BackendError, Failure, Usage, unavailable_for_guest};
use crate::metrics::CacheEvent;
use crate::names::{check_name, glob};
use std::time::Duration;
use wasmtime::component::HasData;

type Result<T> = std::result::Result<T, CacheError>;

/// What a cache host function fails with.
pub type CacheFailure = Failure<CacheError>;
type CacheResult<T> = std::result::Result<T, CacheFailure>;

/// What the `cache` interface reaches of an instance: the plugin's cache grant (its
/// domains, the limits, the cache), and this invocation's quotas.
pub struct CacheView<'a> {
    grant: &'a CacheGrant,
    usage: &'a mut Usage,
    in_loader: bool,
}

impl<'a> CacheView<'a> {
    /// The view of one instance; `in_loader` when it runs a cache loader (which may
    /// not read through another, or it could wait for a slot held by its caller).
    pub fn new(grant: &'a CacheGrant, usage: &'a mut Usage, in_loader: bool) -> Self {
        Self {
            grant,
            usage,
            in_loader,
        }
    }
}

/// Links `cache` with [`CacheView`].
pub struct HasCache;

impl HasData for HasCache {
    type Data<'a> = CacheView<'a>;
}

impl From<BackendError> for CacheFailure {
    fn from(error: BackendError) -> Self {
        CacheError::from(error).into()
    }
}

impl From<BackendError> for CacheError {
    fn from(error: BackendError) -> Self {
        match error {
            BackendError::InvalidArgument(m) => CacheError::InvalidArgument(m),
            other => CacheError::Unavailable(unavailable_for_guest("cache", &other.to_string())),
        }
    }
}

impl CacheView<'_> {
    fn charge_call(&mut self, function: &'static str) -> std::result::Result<(), String> {
        self.usage.charge("cache", function)
    }

    /// Charges a call and resolves a granted domain to its TTL.
    fn cache_domain(&mut self, function: &'static str, domain: &str) -> Result<u32> {
        self.charge_call(function)
            .map_err(CacheError::QuotaExceeded)?;
        self.grant
            .granted
            .get(domain)
            .copied()
            .ok_or_else(|| CacheError::UnknownDomain(self.how_to_grant(domain)))
    }

    /// Why `domain` is not reachable, with the `host.toml` line that would make it so.
    fn how_to_grant(&self, domain: &str) -> String {
        let plugin = &self.grant.plugin;
        match self.grant.declared.contains(domain) {
            true => {
                format!("{domain}: add {domain:?} to [plugins.{plugin}].cache_domains in host.toml")
            }
            false => format!(
                "{domain}: not a declared domain; declare it under [cache.domains] and add {domain:?} to [plugins.{plugin}].cache_domains in host.toml"
            ),
        }
    }

    fn cache_key(&self, key: &str) -> Result<()> {
        check_name(key, self.grant.limits.max_key_length)
            .map_err(|m| CacheError::InvalidKey(format!("key {m}")))
    }

    fn cache_write(&self, domain_ttl: u32, options: EntryOptions) -> Result<CacheWrite> {
        let cache = &self.grant.limits;
        if options.ttl_seconds == Some(0) {
            return Err(CacheError::InvalidArgument(
                "ttl-seconds must not be 0; use delete".into(),
            ));
        }
        if options.tags.len() > cache.max_tags as usize {
            return Err(CacheError::InvalidArgument(format!(
                "more than {} tags",
                cache.max_tags
            )));
        }
        for tag in &options.tags {
            check_name(tag, self.grant.limits.max_key_length)
                .map_err(|m| CacheError::InvalidKey(format!("tag {m}")))?;
        }
        Ok(CacheWrite {
            ttl: Duration::from_secs(options.ttl_seconds.unwrap_or(domain_ttl).into()),
            tags: options.tags,
            priority: options.priority,
        })
    }

    fn check_value(&self, value: &[u8]) -> Result<()> {
        let max = self.grant.limits.max_entry_bytes;
        if value.len() > max {
            return Err(CacheError::ValueTooLarge(max as u64));
        }
        Ok(())
    }

    fn check_bulk(&self, count: usize) -> Result<()> {
        let max = self.grant.max_bulk_keys;
        if count > max as usize {
            return Err(CacheError::TooManyKeys(max));
        }
        Ok(())
    }

    async fn cache_get_many(
        &mut self,
        function: &'static str,
        domain: &str,
        keys: &[String],
    ) -> Result<Vec<Option<Vec<u8>>>> {
        self.cache_domain(function, domain)?;
        self.check_bulk(keys.len())?;
        for key in keys {
            self.cache_key(key)?;
        }
        let service = &self.grant.service;
        let values = service.backend.get_many(domain, keys).await?;
        let hits = values.iter().filter(|v| v.is_some()).count() as u64;
        service.stats.record(domain, CacheEvent::Hit, hits);
        service
            .stats
            .record(domain, CacheEvent::Miss, values.len() as u64 - hits);
        Ok(values)
    }

    async fn cache_set_many(
        &mut self,
        function: &'static str,
        domain: String,
        entries: Vec<(String, Vec<u8>)>,
        options: EntryOptions,
    ) -> Result<()> {
        let ttl = self.cache_domain(function, &domain)?;
        self.check_bulk(entries.len())?;
        for (key, value) in &entries {
            self.cache_key(key)?;
            self.check_value(value)?;
        }
        let write = self.cache_write(ttl, options)?;
        let service = &self.grant.service;
        service.backend.set_many(&domain, &entries, &write).await?;
        service
            .stats
            .record(&domain, CacheEvent::Set, entries.len() as u64);
        Ok(())
    }

    /// Read-through: the entries of `keys`, the misses loaded by the domain's loader.
    async fn cache_get_or_load(
        &mut self,
        function: &'static str,
        domain: String,
        keys: Vec<String>,
    ) -> Result<Vec<Option<Vec<u8>>>> {
        if self.in_loader {
            return Err(CacheError::InvalidArgument(format!(
                "{function} is not available inside a loader (it could wait for itself); use get"
            )));
        }
        let mut values = self.cache_get_many(function, &domain, &keys).await?;
        // Granted: `cache_get_many` checked it.
        let domain_ttl = self.grant.granted.get(&domain).copied().unwrap_or(1);
        let missed: Vec<usize> = (0..values.len()).filter(|i| values[*i].is_none()).collect();
        if missed.is_empty() {
            return Ok(values);
        }
        let limits = self.grant.load_limits(domain_ttl);
        let missed_keys: Vec<String> = missed.iter().map(|i| keys[*i].clone()).collect();
        let service = &self.grant.service;
        let loaded = service
            .read_through
            .load(&domain, &missed_keys, limits)
            .await;
        for (i, answer) in missed.into_iter().zip(loaded) {
            values[i] = match answer {
                Ok(value) => value,
                Err(LoadFailure::Backend(error)) => return Err(error.into()),
                Err(LoadFailure::Loader(reason)) => return Err(CacheError::LoaderFailed(reason)),
            };
        }
        Ok(values)
    }

    /// The domains a call names: one, or with `None` every granted domain.
    fn cache_domains_of(
        &mut self,
        function: &'static str,
        domain: Option<String>,
    ) -> Result<Vec<String>> {
        match domain {
            Some(domain) => {
                self.cache_domain(function, &domain)?;
                Ok(vec![domain])
            }
            None => {
                self.charge_call(function)
                    .map_err(CacheError::QuotaExceeded)?;
                Ok(self.grant.granted.keys().cloned().collect())
            }
        }
    }
}

impl Host for CacheView<'_> {
    fn convert_cache_error(&mut self, error: CacheFailure) -> wasmtime::Result<CacheError> {
        error.downcast()
    }

    async fn get(&mut self, domain: String, key: String) -> CacheResult<Option<Vec<u8>>> {
        let mut values = self.cache_get_many("get", &domain, &[key]).await?;
        Ok(values.pop().flatten())
    }

    async fn set(
        &mut self,
        domain: String,
        key: String,
        value: Vec<u8>,
        options: EntryOptions,
    ) -> CacheResult<()> {
        Ok(self
            .cache_set_many("set", domain, vec![(key, value)], options)
            .await?)
    }

    async fn delete(&mut self, domain: String, key: String) -> CacheResult<bool> {
        self.cache_domain("delete", &domain)?;
        self.cache_key(&key)?;
        let service = &self.grant.service;
        let existed = service.backend.delete(&domain, &key).await?;
        service
            .stats
            .record(&domain, CacheEvent::DeleteByKey, u64::from(existed));
        Ok(existed)
    }

    async fn exists(&mut self, domain: String, key: String) -> CacheResult<bool> {
        self.cache_domain("exists", &domain)?;
        self.cache_key(&key)?;
        Ok(self.grant.service.backend.exists(&domain, &key).await?)
    }

    async fn get_many(
        &mut self,
        domain: String,
        keys: Vec<String>,
    ) -> CacheResult<Vec<Option<Vec<u8>>>> {
        Ok(self.cache_get_many("get_many", &domain, &keys).await?)
    }

    async fn set_many(
        &mut self,
        domain: String,
        entries: Vec<(String, Vec<u8>)>,
        options: EntryOptions,
    ) -> CacheResult<()> {
        Ok(self
            .cache_set_many("set_many", domain, entries, options)
            .await?)
    }

    async fn invalidate_tag(&mut self, domain: Option<String>, tag: String) -> CacheResult<u64> {
        let domains = self.cache_domains_of("invalidate_tag", domain)?;
        check_name(&tag, self.grant.limits.max_key_length)
            .map_err(|m| CacheError::InvalidKey(format!("tag {m}")))?;
        let service = &self.grant.service;
        let mut removed = 0;
        for domain in domains {
            let n = service.backend.invalidate_tag(&domain, &tag).await?;
            service
                .stats
                .record(&domain, CacheEvent::InvalidateByTag, n);
            removed += n;
        }
        Ok(removed)
    }

    async fn invalidate_pattern(&mut self, domain: String, pattern: String) -> CacheResult<u64> {
        self.cache_domain("invalidate_pattern", &domain)?;
        glob::validate(&pattern).map_err(CacheError::InvalidArgument)?;
        let service = &self.grant.service;
        let n = service
            .backend
            .invalidate_pattern(&domain, &pattern)
            .await?;
        service
            .stats
            .record(&domain, CacheEvent::InvalidateByPattern, n);
        Ok(n)
    }

    async fn invalidate(&mut self, domain: String, what: Invalidation) -> CacheResult<u64> {
        self.cache_domain("invalidate", &domain)?;
        self.check_bulk(what.keys.len())?;
        for key in &what.keys {
            self.cache_key(key)?;
        }
        let max_tags = self.grant.limits.max_tags;
        if what.tags.len() > max_tags as usize {
            return Err(CacheError::InvalidArgument(format!("more than {max_tags} tags")).into());
        }
        for tag in &what.tags {
            check_name(tag, self.grant.limits.max_key_length)
                .map_err(|m| CacheError::InvalidKey(format!("tag {m}")))?;
        }
        if let Some(pattern) = &what.pattern {
            glob::validate(pattern).map_err(CacheError::InvalidArgument)?;
        }
        let service = &self.grant.service;
        let done = service
            .backend
            .invalidate(&domain, &what.keys, &what.tags)
            .await?;
        let stats = &service.stats;
        stats.record(&domain, CacheEvent::DeleteByKey, done.by_key);
        stats.record(&domain, CacheEvent::InvalidateByTag, done.by_tag);
        let by_pattern = match &what.pattern {
            Some(pattern) => service.backend.invalidate_pattern(&domain, pattern).await?,
            None => 0,
        };
        stats.record(&domain, CacheEvent::InvalidateByPattern, by_pattern);
        Ok(done.by_key + done.by_tag + by_pattern)
    }

    async fn stats(
        &mut self,
        domain: Option<String>,
        window: Option<StatsWindow>,
    ) -> CacheResult<WitStats> {
        let domains = self.cache_domains_of("stats", domain)?;
        let window = window.map(|w| Window {
            start_ms: w.start_ms,
            end_ms: w.end_ms,
        });
        let DomainStats {
            hits,
            misses,
            sets,
            deletes,
        } = self.grant.service.stats.sum(&domains, window).await;
        Ok(WitStats {
            hits,
            misses,
            sets,
            deletes,
        })
    }

    async fn domain_ttl(&mut self, domain: String) -> CacheResult<u32> {
        Ok(self.cache_domain("domain_ttl", &domain)?)
    }

    async fn get_or_load(&mut self, domain: String, key: String) -> CacheResult<Option<Vec<u8>>> {
        let mut values = self
            .cache_get_or_load("get_or_load", domain, vec![key])
            .await?;
        Ok(values.pop().flatten())
    }

    async fn get_or_load_many(
        &mut self,
        domain: String,
        keys: Vec<String>,
    ) -> CacheResult<Vec<Option<Vec<u8>>>> {
        Ok(self
            .cache_get_or_load("get_or_load_many", domain, keys)
            .await?)
    }
}
