//! What observability costs: messages/s with metrics on against off, and plugin cache
//! gets/s with statistics kept in Redis against kept in process. Each pair runs in
//! alternating rounds ([`harness::Rounds`]).

use super::harness::Count;
use super::harness::{self, Rounds, median};
use super::{all_completed, cache_reader, envelope, fill_bench_entries, plugin_gets_per_s};
use std::sync::Arc;
use std::time::{Duration, Instant};
use techub_host::Platform;
use techub_host::bindings::Outcome;
use techub_host::capability::cache::CacheStats;
use techub_host::capability::messaging::Broker;
use techub_host::config::{BrokerBackend, HostConfig, KvBackend};
use techub_host::platform::connect_services;
use techub_host::plugins::load_plugin;
use techub_host::runtime::Runtime;
use techub_tests::{PluginDir, config, grant, services, unique};

static ROUNDS: Count<usize> = Count::new(5, 1);

/// Messages/s of the user-notifications plugin on RabbitMQ and Redis, metrics on vs off.
pub async fn metrics_overhead() -> anyhow::Result<()> {
    static MESSAGES: Count<usize> = Count::new(2_000, 48);
    let name = unique("user-notifications");
    let dir = PluginDir::with(&[(&name, "user_notifications")]);
    let mut base: HostConfig = config(&dir);
    base.backends.cache = KvBackend::Redis;
    base.backends.messaging = BrokerBackend::Amqp;
    base.host.key_prefix = format!("{}:", unique("techub-bench"));
    base.amqp = services::amqp_config();
    grant(&mut base, &name, &["users"], &["notification.*"])
        .limits
        .prefetch = Some(16);
    let publisher = super::amqp_broker(&base).await?;
    let run = |metrics: bool| {
        let (mut config, publisher) = (base.clone(), publisher.clone());
        config.host.metrics = metrics;
        async move {
            let platform = Platform::start(config).await?;
            let ids: Vec<String> = (0..*MESSAGES).map(|_| unique("m")).collect();
            let sample = harness::sample(async {
                let started = Instant::now();
                for (i, id) in ids.iter().enumerate() {
                    let body =
                        serde_json::json!({ "id": format!("u{i}"), "email": "a@b.c", "name": "A" });
                    let mut e = envelope("user.created", body.to_string().into_bytes());
                    e.id = id.clone();
                    publisher
                        .publish(e, None)
                        .await
                        .map_err(anyhow::Error::msg)?;
                }
                all_completed(&platform, &ids, started).await?;
                Ok(*MESSAGES as u64)
            })
            .await;
            platform.shutdown().await;
            sample
        }
    };
    run(true).await?; // warm-up: compiles the plugin, declares the queues
    let rounds = Rounds::alternate(&["metrics on", "metrics off"], *ROUNDS, async |side| {
        run(side == 0).await
    })
    .await?;
    rounds.report(
        &format!("metrics overhead, messages x{MESSAGES} on RabbitMQ + Redis"),
        "msg",
        &[(0, 1)],
    );
    Ok(())
}

/// Plugin cache gets/s on Redis with hit/miss statistics in Redis (flushed every
/// second) vs in process.
pub async fn stats_overhead() -> anyhow::Result<()> {
    static GETS: Count<u32> = Count::new(40_000, 800);
    const CONCURRENCY: u32 = 8;
    let (dir, config) = cache_reader(*GETS);
    let config = Arc::new(config);
    let on_redis = Arc::new(connect_services(&config).await?);
    let flusher = on_redis
        .cache_stats
        .spawn_flusher(Duration::from_secs(1), Default::default());
    let retention = Duration::from_secs(config.cache.stats_retention_s);
    let in_process = Arc::new(techub_host::capability::Services {
        cache_stats: Arc::new(CacheStats::in_process(on_redis.metrics.clone(), retention)),
        ..connect_services(&config).await?
    });
    fill_bench_entries(on_redis.cache.as_ref()).await?;
    let runtime = Arc::new(Runtime::new(&config)?);
    let path = dir.path().join("cache-reader.wasm");
    let with_redis_stats =
        Arc::new(load_plugin(&runtime, &path, config.clone(), on_redis.clone()).await?);
    let with_local_stats =
        Arc::new(load_plugin(&runtime, &path, config.clone(), in_process).await?);
    let run = |plugin: Arc<techub_host::plugins::LoadedPlugin>| {
        let runtime = runtime.clone();
        harness::sample(async move {
            plugin_gets_per_s(&runtime, &plugin, *GETS, CONCURRENCY).await?;
            Ok(u64::from(*GETS))
        })
    };
    run(with_redis_stats.clone()).await?; // warm-up
    let rounds = Rounds::alternate(
        &["stats in Redis", "stats in process"],
        *ROUNDS,
        async |side| match side {
            0 => run(with_redis_stats.clone()).await,
            _ => run(with_local_stats.clone()).await,
        },
    )
    .await?;
    flusher.abort();
    rounds.report(
        &format!(
            "cache statistics overhead, plugin gets x{GETS} on Redis (concurrency {CONCURRENCY})"
        ),
        "get",
        &[(0, 1)],
    );
    Ok(())
}

/// The hostile fixture on a Redis store under a fresh key prefix, loaded into a runtime.
async fn hostile_on_redis() -> anyhow::Result<(
    PluginDir,
    Arc<Runtime>,
    Arc<techub_host::plugins::LoadedPlugin>,
)> {
    let dir = PluginDir::with(&[("hostile", "fixture_hostile")]);
    let mut config = config(&dir);
    config.backends.store = KvBackend::Redis;
    config.host.key_prefix = format!("{}:", unique("techub-bench"));
    config
        .plugins
        .entry("hostile".into())
        .or_default()
        .limits
        .timeout_ms = Some(60_000);
    let config = Arc::new(config);
    let services = Arc::new(connect_services(&config).await?);
    let runtime = Arc::new(Runtime::new(&config)?);
    let path = dir.path().join("hostile.wasm");
    let plugin = Arc::new(load_plugin(&runtime, &path, config, services).await?);
    Ok((dir, runtime, plugin))
}

/// 100 increments from a plugin on Redis: one `store.atomic` batch against 100 calls.
pub async fn store_atomic() -> anyhow::Result<()> {
    static RUNS: Count<usize> = Count::new(20, 1);
    let (_dir, runtime, plugin) = hostile_on_redis().await?;
    let run = |mode: &'static str| {
        let (runtime, plugin) = (runtime.clone(), plugin.clone());
        async move {
            let message =
                techub_tests::delivery("webhook", "fixture.hostile.store-batch", mode.as_bytes());
            let started = Instant::now();
            let report = runtime
                .invoke(&plugin.pre, plugin.context.clone(), &message, 5)
                .await;
            let elapsed = started.elapsed().as_secs_f64();
            match report.result {
                Ok(Outcome::Reject(observed)) if observed.starts_with("done=Ok(100)") => {
                    anyhow::Ok(elapsed)
                }
                other => anyhow::bail!("store-batch failed: {other:?}"),
            }
        }
    };
    run("atomic").await?;
    run("singles").await?;
    let (mut atomic, mut singles) = (Vec::new(), Vec::new());
    for round in 0..*RUNS {
        if round % 2 == 0 {
            atomic.push(run("atomic").await?);
            singles.push(run("singles").await?);
        } else {
            singles.push(run("singles").await?);
            atomic.push(run("atomic").await?);
        }
    }
    let (atomic, singles) = (median(atomic), median(singles));
    println!(
        "store.atomic of 100 increments from a plugin on Redis: {:.2} ms, 100 single calls {:.2} ms; singles/atomic = {:.1}x (median of {RUNS})",
        atomic * 1e3,
        singles * 1e3,
        singles / atomic
    );
    Ok(())
}

/// Compare-and-swap increments/s of one counter under contention: 16 concurrent
/// invocations, each looping until its swap lands.
pub async fn cas_contention() -> anyhow::Result<()> {
    static INCREMENTS: Count<usize> = Count::new(400, 16);
    const CONCURRENCY: usize = 16;
    let (_dir, runtime, plugin) = hostile_on_redis().await?;
    let started = Instant::now();
    let mut lost = 0u64;
    for _ in 0..*INCREMENTS / CONCURRENCY {
        let tasks: Vec<_> = (0..CONCURRENCY)
            .map(|_| {
                let (runtime, plugin) = (runtime.clone(), plugin.clone());
                tokio::spawn(async move {
                    let message =
                        techub_tests::delivery("webhook", "fixture.hostile.cas-incr", b"{}");
                    runtime
                        .invoke(&plugin.pre, plugin.context.clone(), &message, 5)
                        .await
                })
            })
            .collect();
        for task in tasks {
            match task.await?.result {
                Ok(Outcome::Reject(observed)) => {
                    lost += observed
                        .strip_prefix("lost ")
                        .and_then(|n| n.parse::<u64>().ok())
                        .ok_or_else(|| anyhow::anyhow!("cas-incr failed: {observed}"))?;
                }
                other => anyhow::bail!("cas-incr failed: {other:?}"),
            }
        }
    }
    let rate = *INCREMENTS as f64 / started.elapsed().as_secs_f64();
    println!(
        "compare-and-swap increments of one counter, {CONCURRENCY} at once: {rate:.0} increments/s, {lost} swaps lost a race ({:.2} per increment)",
        lost as f64 / *INCREMENTS as f64
    );
    Ok(())
}
