//! What observability costs: messages/s with metrics on against off, and plugin cache
//! gets/s with statistics kept in Redis against kept in process. Each pair runs in
//! alternating rounds ([`harness::Rounds`]).

use super::harness::Count;
use super::harness::{self, Rounds};
use super::{all_completed, cache_reader, envelope, fill_bench_entries, plugin_gets_per_s};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use techub_host::Platform;
use techub_host::bindings::Outcome;
use techub_host::capability::cache::CacheStats;
use techub_host::capability::messaging::Broker;
use techub_host::capability::store::StoreBackend;
use techub_host::config::{BrokerBackend, HostConfig, KvBackend};
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
    let on_redis = Arc::new(techub_host::services::connect(&config).await?);
    let flusher = on_redis
        .cache
        .stats
        .spawn_flusher(Duration::from_secs(1), Default::default());
    let retention = Duration::from_secs(config.cache.stats_retention_s);
    let mut in_process = techub_host::services::connect(&config).await?;
    in_process.cache.stats = Arc::new(CacheStats::in_process(on_redis.metrics.clone(), retention));
    let in_process = Arc::new(in_process);
    fill_bench_entries(on_redis.cache.backend.as_ref()).await?;
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

/// The hostile fixture on a Redis store under a fresh key prefix, loaded into a
/// runtime; with the services it was loaded with (their store is the plugin's).
struct Hostile {
    _dir: PluginDir,
    runtime: Arc<Runtime>,
    plugin: Arc<techub_host::plugins::LoadedPlugin>,
    services: Arc<techub_host::services::Services>,
    prefix: String,
}

impl Hostile {
    async fn on_redis() -> anyhow::Result<Self> {
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
        let prefix = config.host.key_prefix.clone();
        let config = Arc::new(config);
        let services = Arc::new(techub_host::services::connect(&config).await?);
        let runtime = Arc::new(Runtime::new(&config)?);
        let path = dir.path().join("hostile.wasm");
        let plugin = Arc::new(load_plugin(&runtime, &path, config, services.clone()).await?);
        Ok(Self {
            _dir: dir,
            runtime,
            plugin,
            services,
            prefix,
        })
    }

    /// One invocation with `payload` on the fixture's `topic`; what it reported
    /// (the fixture answers by rejecting with its observation).
    async fn observe(&self, topic: &str, payload: &[u8]) -> anyhow::Result<String> {
        let message = techub_tests::delivery("webhook", topic, payload);
        let report = self
            .runtime
            .invoke(&self.plugin.pre, self.plugin.context.clone(), &message, 5)
            .await;
        match report.result {
            Ok(Outcome::Reject(observed)) => Ok(observed),
            other => anyhow::bail!("{topic} failed: {other:?}"),
        }
    }
}

/// 100 increments from a plugin on Redis: one `store.atomic` batch against 100 calls,
/// in alternating rounds.
pub async fn store_atomic() -> anyhow::Result<()> {
    static BATCHES: Count<u64> = Count::new(4, 1);
    let hostile = Hostile::on_redis().await?;
    let run = async |mode: &str| {
        harness::sample(async {
            for _ in 0..*BATCHES {
                let observed = hostile
                    .observe("fixture.hostile.store-batch", mode.as_bytes())
                    .await?;
                anyhow::ensure!(
                    observed.starts_with("done=Ok(100)"),
                    "store-batch failed: {observed}"
                );
            }
            Ok(100 * *BATCHES)
        })
        .await
    };
    run("atomic").await?;
    run("singles").await?;
    let sides = ["one store.atomic of 100", "100 single calls"];
    let rounds = Rounds::alternate(&sides, *ROUNDS, async |side| match side {
        0 => run("atomic").await,
        _ => run("singles").await,
    })
    .await?;
    rounds.report(
        &format!("store increments from a plugin on Redis, {BATCHES} batches of 100 per round"),
        "incr",
        &[(0, 1)],
    );
    Ok(())
}

/// Compare-and-swap increments/s of one counter on Redis: invocations that each loop
/// until their swap lands (get, swap, 1 ms pause after a lost race), against the same
/// loop on the plugin's store backend called without wasm, in alternating rounds. One
/// at a time (no races: the cost of the plugin path, the ratio that is a result) and 16
/// at once (contention: a slower contender loses fewer races, so there the plugin may
/// outpace the loop it wraps, which the harness reports as such). Each counter ends
/// at exactly the increments made.
pub async fn cas_contention() -> anyhow::Result<()> {
    static INCREMENTS: Count<usize> = Count::new(160, 16);
    const CONTENDERS: usize = 16;
    let hostile = Arc::new(Hostile::on_redis().await?);
    let native_key = format!("{}native:counter", hostile.prefix);
    let sides = [
        "plugin, one at a time",
        "without wasm, one at a time",
        "plugin, 16 at once",
        "without wasm, 16 at once",
    ];
    let lost: [AtomicU64; 4] = Default::default();
    let run = async |side: usize| {
        let through_plugin = side.is_multiple_of(2);
        let concurrency = if side < 2 { 1 } else { CONTENDERS };
        harness::sample(async {
            for _ in 0..*INCREMENTS / concurrency {
                let tasks: Vec<_> = (0..concurrency)
                    .map(|_| {
                        let (hostile, key) = (hostile.clone(), native_key.clone());
                        tokio::spawn(async move {
                            if through_plugin {
                                let observed =
                                    hostile.observe("fixture.hostile.cas-incr", b"{}").await?;
                                observed
                                    .strip_prefix("lost ")
                                    .and_then(|n| n.parse::<u64>().ok())
                                    .ok_or_else(|| anyhow::anyhow!("cas-incr failed: {observed}"))
                            } else {
                                cas_incr(hostile.services.store.as_ref(), &key).await
                            }
                        })
                    })
                    .collect();
                for task in tasks {
                    lost[side].fetch_add(task.await??, Ordering::Relaxed);
                }
            }
            Ok(*INCREMENTS as u64)
        })
        .await
    };
    for side in 0..sides.len() {
        run(side).await?; // warm-up
    }
    let rounds = Rounds::alternate(&sides, *ROUNDS, async |side| run(side).await).await?;
    rounds.report(
        &format!("compare-and-swap increments of one counter on Redis, x{INCREMENTS} per round"),
        "incr",
        &[(0, 1), (2, 3)],
    );
    rounds.beats_what_it_wraps(2, 3);
    // Two sides (one at a time, 16 at once) increment each counter, once per round
    // and once warming up.
    let made = (2 * *INCREMENTS * (rounds.rounds() + 1)) as u64;
    for (name, key) in [
        ("plugin", format!("{}store:hostile:counter", hostile.prefix)),
        ("without wasm", native_key),
    ] {
        let counter = super::stored_count(hostile.services.store.as_ref(), &key).await?;
        anyhow::ensure!(
            counter == made,
            "{name}: the counter is {counter} after {made} increments"
        );
    }
    if !harness::quick() {
        let per_increment = |side: usize| {
            lost[side].load(Ordering::Relaxed) as f64 / (*INCREMENTS * (rounds.rounds() + 1)) as f64
        };
        println!(
            "  16 at once, swaps that lost a race per increment: plugin {:.2}, without wasm {:.2} (both counters exact: {made})",
            per_increment(2),
            per_increment(3),
        );
    }
    Ok(())
}

/// The fixture's `cas-incr` loop, natively: how many swaps lost a race.
async fn cas_incr(store: &dyn StoreBackend, key: &str) -> anyhow::Result<u64> {
    let mut lost = 0;
    loop {
        let current = store.get(key).await.map_err(anyhow::Error::msg)?;
        let next = (super::count_of(current.as_deref()) + 1).to_string();
        if store
            .compare_and_swap(key, current.as_deref(), Some(next.as_bytes()), None)
            .await
            .map_err(anyhow::Error::msg)?
        {
            return Ok(lost);
        }
        lost += 1;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}
