//! `bench redis-cluster`, on a six-node Redis Cluster of the bench's own:
//! - cache gets from a plugin (cache-reader, through the host import) against native
//!   redis-rs with its async cluster client reading the same keys, at concurrency 1
//!   and 8; alternating rounds, medians;
//! - cache sets of the host backend (the script that files an entry, no wasm)
//!   against native `SET PX` on the cluster client;
//! - tag invalidation of 1 000 entries (filed under one tag, then invalidated by it)
//!   on the shared single Redis against the cluster, alternating rounds, medians.

use super::harness::Count;
use crate::harness::{self, Rounds, median};
use crate::{cache_reader, loaded_cache_reader, plugin_gets_per_s};
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
    gets(&cluster_config).await?;
    sets(&cluster_config).await?;
    tag_invalidation(&cluster_config).await?;
    Ok(())
}

/// Plugin gets on the cluster ÷ native cluster-client gets.
async fn gets(cluster_config: &RedisConfig) -> anyhow::Result<()> {
    static GETS: Count<u32> = Count::new(10_000, 208);
    let (dir, mut config) = cache_reader(*GETS);
    config.redis = cluster_config.clone();
    let config = Arc::new(config);
    let (runtime, plugin) = loaded_cache_reader(&dir, &config).await?;
    let native = redis::cluster::ClusterClient::new(cluster_config.urls.clone())?
        .get_async_connection()
        .await?;
    let prefix = config.host.key_prefix.clone();
    let native_gets = async |concurrency: u32| -> anyhow::Result<u64> {
        let tasks: Vec<tokio::task::JoinHandle<anyhow::Result<()>>> = (0..concurrency)
            .map(|_| {
                let (mut conn, prefix) = (native.clone(), prefix.clone());
                tokio::spawn(async move {
                    for i in 0..*GETS / concurrency {
                        let value: Option<Vec<u8>> = redis::cmd("GET")
                            .arg(format!("{prefix}cache:{{users}}:bench:{}", i % 100))
                            .query_async(&mut conn)
                            .await?;
                        anyhow::ensure!(value.is_some(), "missing bench key");
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
    native_gets(8).await?;
    for concurrency in [1u32, 8] {
        let sides = ["plugin", "native redis-rs cluster client"];
        let rounds = Rounds::alternate(&sides, *ROUNDS, async |side| match side {
            0 => {
                harness::sample(async {
                    plugin_gets_per_s(&runtime, &plugin, *GETS, concurrency).await?;
                    Ok(u64::from(*GETS))
                })
                .await
            }
            _ => harness::sample(native_gets(concurrency)).await,
        })
        .await?;
        rounds.report(
            &format!("redis cluster: cache get x{GETS}, concurrency {concurrency}"),
            "get",
            &[(0, 1)],
        );
    }
    Ok(())
}

/// Host backend sets (entry, filings and L1 message in one script) ÷ native `SET PX`.
async fn sets(cluster_config: &RedisConfig) -> anyhow::Result<()> {
    static SETS: Count<usize> = Count::new(5_000, 112);
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
    let (mut host, mut plain, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..*ROUNDS {
        let run_host = async || -> anyhow::Result<f64> {
            let started = Instant::now();
            for i in 0..*SETS {
                cache
                    .set_many("users", &[(format!("s:{i}"), vec![b'x'; 256])], &write)
                    .await
                    .map_err(anyhow::Error::msg)?;
            }
            Ok(*SETS as f64 / started.elapsed().as_secs_f64())
        };
        let run_native = async || -> anyhow::Result<f64> {
            let mut conn = native.clone();
            let started = Instant::now();
            for i in 0..*SETS {
                let _: () = redis::cmd("SET")
                    .arg(format!("{prefix}native:{{users}}:s:{i}"))
                    .arg(vec![b'x'; 256])
                    .arg("PX")
                    .arg(600_000)
                    .query_async(&mut conn)
                    .await?;
            }
            Ok(*SETS as f64 / started.elapsed().as_secs_f64())
        };
        let (h, n) = match round % 2 {
            0 => (run_host().await?, run_native().await?),
            _ => {
                let n = run_native().await?;
                (run_host().await?, n)
            }
        };
        host.push(h);
        plain.push(n);
        ratios.push(h / n);
    }
    println!(
        "redis cluster: cache set x{SETS} one at a time, median of {ROUNDS} alternating rounds: host backend (no wasm) {:.0} ops/s, native SET PX {:.0} ops/s; host/native = {:.2}",
        median(host),
        median(plain),
        median(ratios)
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
    let invalidate = async |cache: &RedisCache| -> anyhow::Result<Duration> {
        for chunk in entries.chunks(100) {
            cache
                .set_many("users", chunk, &write)
                .await
                .map_err(anyhow::Error::msg)?;
        }
        let started = Instant::now();
        let removed = cache
            .invalidate_tag("users", "bulk")
            .await
            .map_err(anyhow::Error::msg)?;
        let took = started.elapsed();
        anyhow::ensure!(
            removed == *ENTRIES as u64,
            "invalidated {removed} of {ENTRIES}"
        );
        Ok(took)
    };
    let (mut on_single, mut on_cluster) = (Vec::new(), Vec::new());
    for round in 0..*ROUNDS {
        if round % 2 == 0 {
            on_single.push(invalidate(&single).await?.as_secs_f64() * 1e3);
            on_cluster.push(invalidate(&cluster).await?.as_secs_f64() * 1e3);
        } else {
            on_cluster.push(invalidate(&cluster).await?.as_secs_f64() * 1e3);
            on_single.push(invalidate(&single).await?.as_secs_f64() * 1e3);
        }
    }
    let (s, c) = (median(on_single), median(on_cluster));
    println!(
        "redis cluster: invalidating a tag of {ENTRIES} entries, median of {ROUNDS} alternating rounds: single Redis {s:.1} ms, cluster {c:.1} ms; cluster/single = {:.2}",
        c / s
    );
    Ok(())
}
