//! `l1`: the two-layer cache. Plugin cache gets/s of one domain on Redis with an L1
//! against without, and a native redis-rs `GET` loop, in alternating rounds
//! ([`harness::Rounds`]; the goal is L1/Redis ≥ 10×); then how long a write on one host
//! takes to reach another host's L1 (p50/p99 of 500 writes).

use super::harness::{self, Count, Rounds};
use super::{cache_reader, fill_bench_entries, plugin_gets_per_s};
use std::sync::Arc;
use std::time::{Duration, Instant};
use techub_host::capability::cache::{CacheWrite, Priority};
use techub_host::config::{HostConfig, L1Config};
use techub_host::plugins::load_plugin;
use techub_host::runtime::Runtime;
use techub_host::services;
use techub_host::services::Services;

static ROUNDS: Count<usize> = Count::new(5, 1);

fn with_l1(mut config: HostConfig, domain: &str) -> HostConfig {
    config.cache.l1.insert(
        domain.into(),
        L1Config {
            ttl_s: 600,
            budget_mib: 16,
        },
    );
    config
}

async fn serving(services: &Services) -> anyhow::Result<()> {
    let l1 = services.cache.l1.as_ref().expect("on Redis");
    let started = Instant::now();
    while !l1.serving() {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(10),
            "L1 never served"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

pub async fn gets() -> anyhow::Result<()> {
    static GETS: Count<u32> = Count::new(40_000, 800);
    const CONCURRENCY: u32 = 8;
    let (dir, plain) = cache_reader(*GETS);
    let layered = with_l1(plain.clone(), "users");
    let (plain, layered) = (Arc::new(plain), Arc::new(layered));
    let on_redis = Arc::new(services::connect(&plain).await?);
    let on_l1 = Arc::new(services::connect(&layered).await?);
    serving(&on_l1).await?;
    fill_bench_entries(on_redis.cache.backend.as_ref()).await?;
    let runtime = Arc::new(Runtime::new(&plain)?);
    let path = dir.path().join("cache-reader.wasm");
    let redis_reader =
        Arc::new(load_plugin(&runtime, &path, plain.clone(), on_redis.clone()).await?);
    let l1_reader = Arc::new(load_plugin(&runtime, &path, layered.clone(), on_l1.clone()).await?);
    let client = redis::Client::open(plain.redis.url.as_str())?;
    let conn = client.get_multiplexed_async_connection().await?;
    let prefix = plain.host.key_prefix.clone();
    let run = async |side: usize| {
        harness::sample(async {
            let reader = match side {
                0 => &l1_reader,
                1 => &redis_reader,
                _ => return native_gets(&conn, &prefix, *GETS, CONCURRENCY).await,
            };
            plugin_gets_per_s(&runtime, reader, *GETS, CONCURRENCY).await?;
            Ok(u64::from(*GETS))
        })
        .await
    };
    run(1).await?; // warm-up: compiles, connects
    run(0).await?; // warm-up: copies the 100 entries
    run(2).await?;
    let sides = ["plugin, L1", "plugin, Redis", "native redis-rs GET"];
    let rounds = Rounds::alternate(&sides, *ROUNDS, run).await?;
    let counts = on_l1.cache.l1.as_ref().expect("on Redis").counts();
    rounds.report(
        &format!(
            "l1: cache gets x{GETS} (concurrency {CONCURRENCY}); goal L1/Redis >= 10; L1 {counts:?}"
        ),
        "get",
        &[(0, 1), (1, 2)],
    );
    Ok(())
}

/// `gets` redis-rs `GET`s of the same entries over `concurrency` tasks on `conn`; how
/// many it made.
async fn native_gets(
    conn: &redis::aio::MultiplexedConnection,
    prefix: &str,
    gets: u32,
    concurrency: u32,
) -> anyhow::Result<u64> {
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let (mut conn, prefix) = (conn.clone(), prefix.to_string());
            tokio::spawn(async move {
                for i in 0..gets / concurrency {
                    let key = format!("{prefix}cache:users:bench:{}", i % 100);
                    let value: Option<Vec<u8>> =
                        redis::cmd("GET").arg(&key).query_async(&mut conn).await?;
                    anyhow::ensure!(value.is_some(), "{key} is not cached");
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    Ok(u64::from(gets / concurrency * concurrency))
}

/// Host A writes a key that host B holds a copy of; B reads until it sees the write.
/// The time from A's write returning to B's first read of the new value is the
/// propagation delay (B reads in a loop, so it includes up to one read).
pub async fn propagation() -> anyhow::Result<()> {
    static WRITES: Count<usize> = Count::new(500, 16);
    let (_dir, config) = cache_reader(1);
    let config = with_l1(config, "products");
    let (a, b) = (
        services::connect(&config).await?,
        services::connect(&config).await?,
    );
    serving(&a).await?;
    serving(&b).await?;
    // A writes through its cache; B reads through its own, with its L1.
    let (writer, reader) = (&a.cache.backend, &b.cache.backend);
    let key = vec!["k".to_string()];
    let write = CacheWrite {
        ttl: Duration::from_secs(600),
        tags: vec![],
        priority: Priority::Medium,
    };
    let mut delays = Vec::with_capacity(*WRITES);
    for i in 0..*WRITES {
        let (old, new) = (format!("v{i}"), format!("v{}", i + 1));
        if i == 0 {
            writer
                .set_many(
                    "products",
                    &[(key[0].clone(), old.clone().into_bytes())],
                    &write,
                )
                .await?;
        }
        // Until B answers the old value from its copy.
        let hits = || b.cache.l1.as_ref().expect("on Redis").counts().hits;
        loop {
            let before = hits();
            let value = reader.get_many("products", &key).await?.pop().flatten();
            if value.as_deref() == Some(old.as_bytes()) && hits() > before {
                break;
            }
        }
        writer
            .set_many(
                "products",
                &[(key[0].clone(), new.clone().into_bytes())],
                &write,
            )
            .await?;
        let written = Instant::now();
        loop {
            let value = reader.get_many("products", &key).await?.pop().flatten();
            if value.as_deref() == Some(new.as_bytes()) {
                break;
            }
            anyhow::ensure!(
                written.elapsed() < Duration::from_secs(5),
                "B never saw write {i}"
            );
            tokio::task::yield_now().await;
        }
        delays.push(written.elapsed());
    }
    delays.sort();
    let at = |p: f64| delays[((delays.len() - 1) as f64 * p).round() as usize];
    println!(
        "l1: cross-host invalidation, {WRITES} writes on host A to a key host B holds: B reads the new value after p50 {:?}, p99 {:?}, max {:?} (bound cache.l1_max_stale_ms = {} ms)",
        at(0.5),
        at(0.99),
        at(1.0),
        config.cache.l1_max_stale_ms
    );
    Ok(())
}
