//! `[cache]`: limits, domains, loaders, warming, L1s, invalidation rules.

use super::validate::{check, invalid, validate_name};
use super::{CacheConfig, ConfigError, KvBackend};

/// Checks `[cache]` for a cache on `backend`, with keys of at most `max_key_length`.
pub(super) fn validate(
    c: &CacheConfig,
    backend: KvBackend,
    max_key_length: usize,
) -> Result<(), ConfigError> {
    check(
        "cache.stats_retention_s",
        c.stats_retention_s,
        60,
        7 * 86_400,
    )?;
    check("cache.stats_flush_ms", c.stats_flush_ms, 10, 60_000)?;
    check(
        "cache.max_entry_bytes",
        c.max_entry_bytes,
        1,
        512 * 1024 * 1024,
    )?;
    check("cache.max_bulk_keys", c.max_bulk_keys, 1, 100_000)?;
    check("cache.max_tags", c.max_tags, 0, 1_000)?;
    check("cache.memory_budget_mib", c.memory_budget_mib, 1, 1 << 20)?;
    for (domain, ttl) in &c.domains {
        if !validate_name(domain) {
            return Err(invalid(
                format!("cache.domains.{domain}"),
                "domain names use a-z, 0-9, - and _",
            ));
        }
        check(format!("cache.domains.{domain}"), *ttl, 1, 365 * 86_400)?;
    }
    check("cache.load_wait_ms", c.load_wait_ms, 10, 600_000)?;
    for (domain, plugin) in &c.loaders {
        let field = format!("cache.loaders.{domain}");
        if !c.domains.contains_key(domain) {
            return Err(invalid(
                field,
                format!("{domain:?} is not a declared cache domain; declare it in [cache.domains]"),
            ));
        }
        if !validate_name(plugin) {
            return Err(invalid(
                field,
                "a plugin name (its file stem: a-z, 0-9, - and _)",
            ));
        }
    }
    for (domain, warm) in &c.warm {
        let field = |f: &str| format!("cache.warm.{domain}.{f}");
        if !c.loaders.contains_key(domain) {
            return Err(invalid(
                format!("cache.warm.{domain}"),
                format!("{domain:?} has no loader; name one in [cache.loaders]"),
            ));
        }
        check(field("interval_s"), warm.interval_s, 1, 86_400)?;
        if let Some(ttl) = warm.ttl_s {
            check(field("ttl_s"), ttl, 1, 365 * 86_400)?;
        }
        for key in &warm.keys {
            crate::names::check_name(key, max_key_length)
                .map_err(|m| invalid(field("keys"), format!("key {key:?} {m}")))?;
        }
    }
    check("cache.l1_max_stale_ms", c.l1_max_stale_ms, 10, 60_000)?;
    for (domain, l1) in &c.l1 {
        let field = |f: &str| format!("cache.l1.{domain}.{f}");
        if !c.domains.contains_key(domain) {
            return Err(invalid(
                format!("cache.l1.{domain}"),
                format!("{domain:?} is not a declared cache domain; declare it in [cache.domains]"),
            ));
        }
        if backend != KvBackend::Redis {
            return Err(invalid(
                format!("cache.l1.{domain}"),
                "an L1 sits in front of the cache on Redis; the embedded cache is in process already (set backends.cache = \"redis\" or remove it)",
            ));
        }
        check(field("ttl_s"), l1.ttl_s, 1, 86_400)?;
        check(field("budget_mib"), l1.budget_mib, 1, 1 << 16)?;
    }
    for (i, rule) in c.invalidate.iter().enumerate() {
        let field = format!("cache.invalidate[{i}]");
        if !c.domains.contains_key(&rule.domain) {
            return Err(invalid(
                format!("{field}.domain"),
                format!("{:?} is not a declared cache domain", rule.domain),
            ));
        }
        rule.parse().map_err(|e| invalid(field, e))?;
    }
    Ok(())
}
