//! `read-through`: a stampede of concurrent misses on two hosts sharing one Redis.
//! The platform (product-reader reading through the catalog loader) against a native
//! cache-aside reader with redis-rs in the same run, which loads on every miss it sees;
//! the number that matters is loader calls per 1 000 concurrent misses. Alternating
//! rounds ([`harness::Rounds`]), each a stampede on keys no earlier one read.

use super::harness::{self, Count, Rounds, Sample};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use techub_host::Platform;
use techub_host::bindings::Outcome;
use techub_host::capability::cache::{CacheBackend, CacheWrite, Priority};
use techub_host::config::KvBackend;
use techub_tests::{PluginDir, config, grant, unique};

static READERS: Count<usize> = Count::new(1_000, 32);
static ROUNDS: Count<usize> = Count::new(5, 1);
const KEYS: usize = 10;
/// How long one load takes (the catalog's `delay_ms`, the native loader's sleep).
const LOAD_MS: u64 = 50;

pub async fn read_through() -> anyhow::Result<()> {
    let dir = PluginDir::with(&[
        ("catalog", "fixture_catalog"),
        ("product-reader", "fixture_product_reader"),
    ]);
    let mut config = config(&dir);
    config.backends.cache = KvBackend::Redis;
    config.backends.store = KvBackend::Redis;
    config.backends.lock = KvBackend::Redis;
    config.host.key_prefix = format!("{}:", unique("techub-bench"));
    config.host.max_instances = 256;
    grant(&mut config, "product-reader", &["products"], &[]);
    grant(&mut config, "catalog", &[], &[]);
    config
        .cache
        .loaders
        .insert("products".into(), "catalog".into());
    config
        .plugins
        .get_mut("catalog")
        .unwrap()
        .settings
        .insert("delay_ms".into(), LOAD_MS.to_string());
    let prefix = config.host.key_prefix.clone();
    let hosts = [
        Arc::new(Platform::start(config.clone()).await?),
        Arc::new(Platform::start(config).await?),
    ];
    let calls_key = format!("{prefix}store:catalog:calls");
    let loader_calls = || super::stored_count(hosts[0].services.store.as_ref(), &calls_key);
    // Each stampede reads keys no earlier one read, so that every reader starts on a miss.
    let mut stampede = 0;
    let sides = ["platform", "native cache-aside"];
    let mut loads: [Vec<f64>; 2] = Default::default();
    let rounds = Rounds::alternate(&sides, *ROUNDS, async |side| {
        stampede += 1;
        let (sample, made) = match side {
            0 => {
                let before = loader_calls().await?;
                let sample = through_platform(&hosts, stampede).await?;
                (sample, loader_calls().await? - before)
            }
            _ => native_cache_aside(&hosts[0]).await?,
        };
        loads[side].push(made as f64 * 1000.0 / *READERS as f64);
        Ok(sample)
    })
    .await?;
    rounds.report(
        &format!(
            "read-through: stampedes of {READERS} concurrent readers of {KEYS} keys on 2 hosts, loads of {LOAD_MS} ms"
        ),
        "read",
        &[(0, 1)],
    );
    if !harness::quick() {
        let [platform, native] = loads.map(harness::median);
        println!(
            "  loader calls per 1000 concurrent misses (median of rounds): platform {platform:.0}, native {native:.0} (ratio {:.3}; the floor is {KEYS} keys = {:.0})",
            platform / native.max(1.0),
            KEYS as f64 * 1000.0 / *READERS as f64,
        );
        let counts: Vec<_> = hosts
            .iter()
            .map(|h| h.services.cache.read_through.counts())
            .collect();
        println!("  platform read-through counts per host: {counts:?}");
    }
    for host in hosts {
        host.shutdown().await;
    }
    Ok(())
}

/// One stampede through product-reader on both hosts, on keys of stampede `n`.
async fn through_platform(hosts: &[Arc<Platform>; 2], n: u32) -> anyhow::Result<Sample> {
    harness::sample(async {
        let mut tasks = Vec::new();
        for i in 0..*READERS {
            let host = hosts[i % 2].clone();
            tasks.push(tokio::spawn(async move {
                let reader = host
                    .registry()
                    .version("product-reader")
                    .await
                    .expect("product-reader serves");
                let keys = format!("[\"s{n}-k-{}\"]", i % KEYS);
                let message = techub_tests::delivery(
                    "inventory",
                    "fixture.product-reader.read",
                    keys.as_bytes(),
                );
                host.runtime
                    .invoke(&reader.pre, reader.context.clone(), &message, 5)
                    .await
            }));
        }
        for task in tasks {
            let report = task.await?;
            anyhow::ensure!(
                matches!(report.result, Ok(Outcome::Ok)),
                "a reader failed: {:?}",
                report.result
            );
        }
        Ok(*READERS as u64)
    })
    .await
}

/// The same readers as plain tasks over the same Redis cache backend, on a domain of
/// their own: a miss loads (sleeps) and writes, with no coalescing. How many loads.
async fn native_cache_aside(host: &Platform) -> anyhow::Result<(Sample, u64)> {
    let cache: Arc<dyn CacheBackend> = host.services.cache.backend.clone();
    let loads = Arc::new(AtomicU64::new(0));
    let domain = format!("native-{}", unique("d"));
    let (started, cpu) = (Instant::now(), harness::process_cpu());
    let mut tasks = Vec::new();
    for i in 0..*READERS {
        let (cache, loads, domain) = (cache.clone(), loads.clone(), domain.clone());
        tasks.push(tokio::spawn(async move {
            let key = vec![format!("k-{}", i % KEYS)];
            let hit = cache.get_many(&domain, &key).await?;
            if hit[0].is_none() {
                loads.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(LOAD_MS)).await;
                let write = CacheWrite {
                    ttl: Duration::from_secs(600),
                    tags: vec![],
                    priority: Priority::Medium,
                };
                cache
                    .set_many(&domain, &[(key[0].clone(), b"v".to_vec())], &write)
                    .await?;
            }
            Ok::<(), techub_host::capability::BackendError>(())
        }));
    }
    for task in tasks {
        task.await?.map_err(anyhow::Error::msg)?;
    }
    let sample = harness::sample_of(
        *READERS as u64,
        started.elapsed(),
        harness::process_cpu() - cpu,
    );
    Ok((sample, loads.load(Ordering::Relaxed)))
}
