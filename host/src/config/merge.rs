//! Sections that merge with the specification's defaults instead of replacing them,
//! and fields that moved.
//!
//! A `[cache.domains]` table or a `[queues.<type>]` section names what it changes:
//! `[cache.domains] users = 1800` must not drop the other 13 domains, and
//! `[queues.email] max_retries = 5` must keep email's seed delay and priority.

use super::defaults::{seed_domains, seed_queues};
use super::{ConfigError, Overflow, QueueKind, QueuePolicy, QueuePriority};
use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;

/// The seed's domains, with the TTLs the file names added or replaced.
pub(super) fn domains<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, u32>, D::Error> {
    let mut merged = seed_domains();
    merged.extend(BTreeMap::<String, u32>::deserialize(d)?);
    Ok(merged)
}

/// The fields of a `[queues.<type>]` section, each optional.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct QueueOverride {
    durable: Option<bool>,
    max_retries: Option<u32>,
    retry_delay_ms: Option<u64>,
    backoff_multiplier: Option<f64>,
    max_retry_delay_ms: Option<u64>,
    priority: Option<QueuePriority>,
    message_ttl_ms: Option<u64>,
    max_length: Option<u32>,
    overflow: Option<Overflow>,
    kind: Option<QueueKind>,
}

/// The seed's queue types, each section applied over its seed policy (or over the
/// generic defaults for a new type).
pub(super) fn queues<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, QueuePolicy>, D::Error> {
    let mut merged = seed_queues();
    for (name, o) in BTreeMap::<String, QueueOverride>::deserialize(d)? {
        let base = merged.get(&name).copied().unwrap_or_default();
        let policy = QueuePolicy {
            durable: o.durable.unwrap_or(base.durable),
            max_retries: o.max_retries.unwrap_or(base.max_retries),
            retry_delay_ms: o.retry_delay_ms.unwrap_or(base.retry_delay_ms),
            backoff_multiplier: o.backoff_multiplier.unwrap_or(base.backoff_multiplier),
            max_retry_delay_ms: o.max_retry_delay_ms.unwrap_or(base.max_retry_delay_ms),
            priority: o.priority.unwrap_or(base.priority),
            message_ttl_ms: o.message_ttl_ms.or(base.message_ttl_ms),
            max_length: o.max_length.or(base.max_length),
            overflow: o.overflow.unwrap_or(base.overflow),
            kind: o.kind.or(base.kind),
        };
        merged.insert(name, policy);
    }
    Ok(merged)
}

/// Fields that moved to the capability they limit; each is refused with its new name,
/// rather than silently ignored or applied to the wrong backend.
const MOVED: &[(&str, &str, &str)] = &[
    ("redis", "max_value_bytes", "store.max_value_bytes"),
    ("amqp", "confirm_timeout_ms", "messaging.confirm_timeout_ms"),
];

pub(super) fn refuse_moved_fields(table: &toml::Table) -> Result<(), ConfigError> {
    for (section, field, new) in MOVED {
        let present = table
            .get(*section)
            .and_then(toml::Value::as_table)
            .is_some_and(|t| t.contains_key(*field));
        if present {
            return Err(ConfigError::Invalid {
                field: format!("{section}.{field}"),
                message: format!("moved to `{new}`: it limits every backend of the capability"),
            });
        }
    }
    Ok(())
}
