//! `bench redis-cluster`, on a six-node Redis Cluster of the bench's own:
//! - cache gets from a plugin (cache-reader, through the host import) against native
//!   redis-rs with its async cluster client reading the same keys, and against the
//!   host's backend called without wasm, at concurrency 1 (on a one-thread runtime)
//!   and 8; alternating rounds ([`harness::Rounds`]). A fourth side is native redis-rs
//!   with the response timeout the host sets (`redis.command_timeout_ms`), as a
//!   production client would: what its timer costs, apart from the host's own work;
//! - cache sets from a plugin (cache-reader's `set <n>`) and of the host backend
//!   (the script that files an entry, no wasm) against native `SET PX` on the cluster
//!   client;
//! - tag invalidation of 1 000 entries (filed under one tag, then invalidated by it)
//!   on the shared single Redis against the cluster, alternating rounds.

use super::harness::Count;
use crate::harness::{self, Rounds, Sample};
use crate::{cache_reader, cache_reader_runs, loaded_cache_reader, plugin_gets_per_s};
use std::sync::Arc;
use std::time::{Duration, Instant};
use techub_host::capability::cache::redis::RedisCache;
use techub_host::capability::cache::{CacheBackend, CacheWrite, Priority};
use techub_host::capability::redis_client::RedisClient;
use techub_host::config::{RedisConfig, RedisMode};
use techub_tests::redis_nodes::RedisCluster;
use techub_tests::{services, unique};

static ROUNDS: Count<usize> = Count::new(7, 1);

pub async fn redis_cluster() -> anyhow::Result<()> {
    let cluster = RedisCluster::start().await;
    let cluster_config = RedisConfig {
        mode: RedisMode::Cluster,
        urls: cluster.urls(),
        ..RedisConfig::default()
    };
    // One at a time on a one-thread runtime, as `cache-get` (see there); eight at once
    // on the main runtime.
    let one = cluster_config.clone();
    crate::on_one_thread(move || async move { gets(&one, 1, "one-thread runtime").await })?;
    gets(&cluster_config, 8, "multi-thread runtime").await?;
    sets(&cluster_config).await?;
    tag_invalidation(&cluster_config).await?;
    Ok(())
}

/// Plugin gets on the cluster ÷ native cluster-client gets, `concurrency` at once.
async fn gets(
    cluster_config: &RedisConfig,
    concurrency: u32,
    runtime_kind: &str,
) -> anyhow::Result<()> {
    static GETS: Count<u32> = Count::new(10_000, 208);
    let (dir, mut config) = cache_reader(*GETS);
    config.redis = cluster_config.clone();
    let config = Arc::new(config);
    let (runtime, plugin) = loaded_cache_reader(&dir, &config).await?;
    let native = redis::cluster::ClusterClient::new(cluster_config.urls.clone())?
        .get_async_connection()
        .await?;
    // The same client with the response timeout the host's cluster client has.
    let native_timed = redis::cluster::ClusterClientBuilder::new(cluster_config.urls.clone())
        .response_timeout(Duration::from_millis(cluster_config.command_timeout_ms))
        .build()?
        .get_async_connection()
        .await?;
    let prefix = config.host.key_prefix.clone();
    // The very backend object the plugin's imports call, without wasm: the work the
    // plugin side wraps, so the report splits the cost between the two.
    let backend = plugin.context.cache.service.backend.clone();
    // Gets without wasm, `concurrency` tasks at once: side 1 native, side 2 the backend.
    let gets_without_wasm = async |side: usize, concurrency: u32| -> anyhow::Result<u64> {
        let tasks: Vec<tokio::task::JoinHandle<anyhow::Result<()>>> = (0..concurrency)
            .map(|_| {
                let (mut conn, prefix, backend) = (
                    if side == 3 {
                        native_timed.clone()
                    } else {
                        native.clone()
                    },
                    prefix.clone(),
                    backend.clone(),
                );
                tokio::spawn(async move {
                    for i in 0..*GETS / concurrency {
                        let key = format!("bench:{}", i % 100);
                        let found = match side {
                            1 | 3 => redis::cmd("GET")
                                .arg(format!("{prefix}cache:{{users}}:{key}"))
                                .query_async::<Option<Vec<u8>>>(&mut conn)
                                .await?
                                .is_some(),
                            _ => backend
                                .get_many("users", &[key])
                                .await
                                .map_err(anyhow::Error::msg)?[0]
                                .is_some(),
                        };
                        anyhow::ensure!(found, "missing bench key");
                    }
                    Ok(())
                })
            })
            .collect();
        for task in tasks {
            task.await??;
        }
        Ok(u64::from(*GETS / concurrency * concurrency))
    };
    // Warm-up, not counted.
    plugin_gets_per_s(&runtime, &plugin, *GETS, 8).await?;
    gets_without_wasm(1, 8).await?;
    gets_without_wasm(2, 8).await?;
    let sides = [
        "plugin",
        "native redis-rs cluster client",
        "host backend without wasm",
        "native with the host's response timeout",
    ];
    let rounds = Rounds::alternate(&sides, *ROUNDS, async |side| match side {
        0 => {
            harness::sample(async {
                plugin_gets_per_s(&runtime, &plugin, *GETS, concurrency).await?;
                Ok(u64::from(*GETS))
            })
            .await
        }
        side => harness::sample(gets_without_wasm(side, concurrency)).await,
    })
    .await?;
    rounds.report(
        &format!("redis cluster: cache get x{GETS}, concurrency {concurrency}, {runtime_kind}"),
        "get",
        &[(0, 1), (0, 2), (2, 1), (3, 1), (2, 3)],
    );
    rounds.beats_what_it_wraps(0, 2);
    Ok(())
}

/// Cache sets one at a time, from a plugin (cache-reader's `set <n>`) and from the
/// host backend without wasm (entry, filings and L1 message in one script), each ÷
/// native `SET PX`.
async fn sets(cluster_config: &RedisConfig) -> anyhow::Result<()> {
    static SETS: Count<usize> = Count::new(5_000, 112);
    let (dir, mut config) = cache_reader(*SETS as u32);
    config.redis = cluster_config.clone();
    let config = Arc::new(config);
    let (runtime, plugin) = loaded_cache_reader(&dir, &config).await?;
    let plugin_sets = format!("set {}", *SETS);
    let redis = RedisClient::connect(cluster_config, Default::default()).await?;
    let prefix = format!("{}:", unique("techub-bench"));
    let cache = Arc::new(RedisCache::new(redis, &prefix));
    let native = redis::cluster::ClusterClient::new(cluster_config.urls.clone())?
        .get_async_connection()
        .await?;
    let write = CacheWrite {
        ttl: Duration::from_secs(600),
        tags: vec![],
        priority: Priority::Medium,
    };
    let sides = ["plugin", "host backend (no wasm)", "native SET PX"];
    let rounds = Rounds::alternate(&sides, *ROUNDS, async |side| {
        let mut conn = native.clone();
        harness::sample(async {
            if side == 0 {
                cache_reader_runs(&runtime, &plugin, &plugin_sets).await?;
                return Ok(*SETS as u64);
            }
            for i in 0..*SETS {
                match side {
                    1 => cache
                        .set_many("users", &[(format!("s:{i}"), vec![b'x'; 256])], &write)
                        .await
                        .map_err(anyhow::Error::msg)?,
                    _ => {
                        redis::cmd("SET")
                            .arg(format!("{prefix}native:{{users}}:s:{i}"))
                            .arg(vec![b'x'; 256])
                            .arg("PX")
                            .arg(600_000)
                            .query_async(&mut conn)
                            .await?
                    }
                }
            }
            Ok(*SETS as u64)
        })
        .await
    })
    .await?;
    rounds.report(
        &format!("redis cluster: cache set x{SETS}, one at a time"),
        "set",
        &[(0, 2), (1, 2), (0, 1)],
    );
    Ok(())
}

/// Filing 1 000 entries under one tag and invalidating them by it: single ÷ cluster.
async fn tag_invalidation(cluster_config: &RedisConfig) -> anyhow::Result<()> {
    static ENTRIES: Count<usize> = Count::new(1_000, 32);
    let single = RedisCache::new(
        services::redis().await,
        &format!("{}:", unique("techub-bench")),
    );
    let cluster = RedisCache::new(
        RedisClient::connect(cluster_config, Default::default()).await?,
        &format!("{}:", unique("techub-bench")),
    );
    let write = CacheWrite {
        ttl: Duration::from_secs(600),
        tags: vec!["bulk".into()],
        priority: Priority::Medium,
    };
    let entries: Vec<(String, Vec<u8>)> = (0..*ENTRIES)
        .map(|i| (format!("t:{i}"), vec![b'x'; 64]))
        .collect();
    // Filing is not timed: the sample is the invalidation alone (entries removed/s).
    let invalidate = async |cache: &RedisCache| -> anyhow::Result<Sample> {
        for chunk in entries.chunks(100) {
            cache
                .set_many("users", chunk, &write)
                .await
                .map_err(anyhow::Error::msg)?;
        }
        let (started, cpu) = (Instant::now(), harness::process_cpu());
        let removed = cache
            .invalidate_tag("users", "bulk")
            .await
            .map_err(anyhow::Error::msg)?;
        let sample = harness::sample_of(removed, started.elapsed(), harness::process_cpu() - cpu);
        anyhow::ensure!(
            removed == *ENTRIES as u64,
            "invalidated {removed} of {ENTRIES}"
        );
        Ok(sample)
    };
    let rounds = Rounds::alternate(
        &["cluster", "single Redis"],
        *ROUNDS,
        async |side| match side {
            0 => invalidate(&cluster).await,
            _ => invalidate(&single).await,
        },
    )
    .await?;
    rounds.report(
        &format!("redis cluster: invalidating a tag of {ENTRIES} entries"),
        "entry",
        &[(0, 1)],
    );
    Ok(())
}
