//! Cache warming (the specification's `CacheWarmingDto { domain, keys, ttl }`): the
//! keys of each `[cache.warm.<domain>]` are loaded through the domain's loader at
//! start and then in rounds, so that readers find them before they ask.
//!
//! A round comes every `interval_s`, or at half the entries' TTL when that is sooner,
//! so that a warmed entry is refreshed before it expires. With several hosts, one
//! warms each round: a host warms only when it takes the domain's round lock
//! (`<prefix>cache-warm:<domain>` on the lock backend), held for 90% of the round and
//! never released, and hosts look four times a round, so that the next round is taken
//! by whichever host looks first once the lock has run out.

use crate::capability::cache::LoadLimits;
use crate::capability::cache::read_through::LoadFailure;
use crate::config::HostConfig;
use crate::services::Services;
use arc_swap::ArcSwap;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What one warm of a domain did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct WarmReport {
    /// The domain.
    pub domain: String,
    /// Keys the loader gave a value for, now cached.
    pub loaded: usize,
    /// Keys it had no value for.
    pub missing: usize,
    /// Keys that failed (the loader or a backend), with the first reason.
    pub failed: usize,
    /// The first failure's reason.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Loads `keys` of `domain` now (all of them, present or not), cached for
/// `ttl_seconds` or the loader's TTL; in batches of `cache.max_bulk_keys`.
pub async fn warm(
    services: &Services,
    config: &HostConfig,
    domain: &str,
    keys: &[String],
    ttl_seconds: Option<u32>,
) -> Result<WarmReport, String> {
    let Some(domain_ttl) = config.cache.domains.get(domain).copied() else {
        return Err(format!("{domain:?} is not a declared cache domain"));
    };
    if !config.cache.loaders.contains_key(domain) {
        return Err(format!(
            "{domain:?} has no loader; name one in [cache.loaders] in host.toml"
        ));
    }
    for key in keys {
        crate::names::check_name(key, config.host.max_key_length)
            .map_err(|m| format!("key {key:?} {m}"))?;
    }
    let limits = LoadLimits::of(config, domain_ttl);
    let mut report = WarmReport {
        domain: domain.to_string(),
        ..WarmReport::default()
    };
    let batch = (config.cache.max_bulk_keys as usize).max(1);
    for keys in keys.chunks(batch) {
        let answers = services
            .cache
            .read_through
            .refresh(domain, keys, limits, ttl_seconds)
            .await;
        for answer in answers {
            match answer {
                Ok(Some(_)) => report.loaded += 1,
                Ok(None) => report.missing += 1,
                Err(failure) => {
                    report.failed += 1;
                    report.error.get_or_insert_with(|| match failure {
                        LoadFailure::Loader(reason) => reason,
                        LoadFailure::Backend(error) => error.to_string(),
                    });
                }
            }
        }
    }
    Ok(report)
}

/// Warms every `[cache.warm.<domain>]` in rounds until the task is aborted; reads the
/// configuration anew each time it looks, so a reload applies to the next round.
pub fn spawn_warmer(
    services: Arc<Services>,
    config: Arc<ArcSwap<HostConfig>>,
    stopping: tokio_util::sync::CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut next_look: HashMap<String, Instant> = HashMap::new();
        loop {
            let config = config.load_full();
            let now = Instant::now();
            next_look.retain(|domain, _| config.cache.warm.contains_key(domain));
            for (domain, warm) in &config.cache.warm {
                if next_look.get(domain).is_some_and(|at| *at > now) {
                    continue;
                }
                let round = round_of(&config, domain, warm);
                next_look.insert(domain.clone(), now + round / 4);
                if take_round(&services, &config, domain, round).await {
                    let report = warm_now(&services, &config, domain, warm).await;
                    tracing::info!(%domain, loaded = report.loaded, missing = report.missing,
                        failed = report.failed, error = report.error.as_deref().unwrap_or(""),
                        "warmed the cache");
                }
            }
            let sleep = next_look
                .values()
                .min()
                .map_or(IDLE, |at| at.saturating_duration_since(Instant::now()))
                .min(IDLE);
            tokio::select! {
                () = tokio::time::sleep(sleep) => {}
                () = stopping.cancelled() => return,
            }
        }
    })
}

/// How often the warmer looks at a configuration without warm domains (a reload may
/// add some).
const IDLE: Duration = Duration::from_secs(1);

async fn warm_now(
    services: &Services,
    config: &HostConfig,
    domain: &str,
    what: &crate::config::WarmConfig,
) -> WarmReport {
    warm(services, config, domain, &what.keys, what.ttl_s)
        .await
        .unwrap_or_else(|error| WarmReport {
            domain: domain.to_string(),
            failed: what.keys.len(),
            error: Some(error),
            ..WarmReport::default()
        })
}

/// The length of a round: `interval_s`, or half the entries' TTL when shorter.
fn round_of(config: &HostConfig, domain: &str, warm: &crate::config::WarmConfig) -> Duration {
    let ttl = warm
        .ttl_s
        .or_else(|| config.cache.domains.get(domain).copied())
        .unwrap_or(u32::MAX);
    let half_ttl = Duration::from_millis(u64::from(ttl) * 500);
    Duration::from_secs(warm.interval_s).min(half_ttl)
}

/// Whether this host warms `domain` this round: it took the round lock.
async fn take_round(
    services: &Services,
    config: &HostConfig,
    domain: &str,
    round: Duration,
) -> bool {
    let prefix = &config.host.key_prefix;
    let layout = services
        .redis
        .as_ref()
        .map(|r| r.layout())
        .unwrap_or_default();
    let name = format!("{prefix}cache-warm:{}", layout.group(domain));
    let fence = layout.counter(&format!("{prefix}cache-warm-fence"), domain);
    let token = uuid::Uuid::new_v4().to_string();
    match services
        .locks
        .try_acquire(&name, &fence, &token, round.mul_f64(0.9))
        .await
    {
        Ok(taken) => taken.is_some(),
        Err(error) => {
            tracing::warn!(%domain, %error, "could not take the cache warming lock; not warming this round");
            false
        }
    }
}
