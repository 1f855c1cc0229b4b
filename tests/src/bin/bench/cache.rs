//! `read-through`: a stampede of concurrent misses on two hosts sharing one Redis.
//! The platform (product-reader reading through the catalog loader) against a native
//! cache-aside reader with redis-rs in the same run, which loads on every miss it sees;
//! the number that matters is loader calls per 1 000 concurrent misses.

use super::harness::Count;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use techub_host::Platform;
use techub_host::bindings::Outcome;
use techub_host::capability::cache::{CacheBackend, CacheWrite, Priority};
use techub_host::config::KvBackend;
use techub_tests::{PluginDir, config, grant, unique};

static READERS: Count<usize> = Count::new(1_000, 32);
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

    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..*READERS {
        let host = hosts[i % 2].clone();
        tasks.push(tokio::spawn(async move {
            let reader = host
                .registry()
                .version("product-reader")
                .await
                .expect("product-reader serves");
            let keys = format!("[\"k-{}\"]", i % KEYS);
            let message =
                techub_tests::delivery("inventory", "fixture.product-reader.read", keys.as_bytes());
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
    let platform_time = started.elapsed();
    let calls_key = format!("{prefix}store:catalog:calls");
    let calls = hosts[0]
        .services
        .store
        .get(&calls_key)
        .await
        .map_err(anyhow::Error::msg)?
        .map(|v| String::from_utf8_lossy(&v).parse::<u64>().unwrap_or(0))
        .unwrap_or(0);
    let counts: Vec<_> = hosts
        .iter()
        .map(|h| h.services.read_through.counts())
        .collect();

    let (native_calls, native_time) = native_cache_aside(&hosts[0]).await?;
    println!(
        "read-through: {READERS} concurrent readers of {KEYS} keys on 2 hosts, loads of {LOAD_MS} ms"
    );
    println!(
        "  platform: {calls} loader calls ({:.1} per key), {platform_time:?}; per host {counts:?}",
        calls as f64 / KEYS as f64
    );
    println!(
        "  native cache-aside (redis-rs GET, load on miss, SET): {native_calls} loads ({:.1} per key), {native_time:?}",
        native_calls as f64 / KEYS as f64
    );
    println!(
        "  loader calls per 1000 concurrent misses: platform {:.0}, native {:.0} (ratio {:.3})",
        calls as f64 * 1000.0 / *READERS as f64,
        native_calls as f64 * 1000.0 / *READERS as f64,
        calls as f64 / native_calls.max(1) as f64
    );
    for host in hosts {
        host.shutdown().await;
    }
    Ok(())
}

/// The same readers as plain tasks over the same Redis cache backend: a miss loads
/// (sleeps) and writes, with no coalescing.
async fn native_cache_aside(host: &Platform) -> anyhow::Result<(u64, Duration)> {
    let cache: Arc<dyn CacheBackend> = host.services.cache.clone();
    let loads = Arc::new(AtomicU64::new(0));
    let domain = format!("native-{}", unique("d"));
    let started = Instant::now();
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
    Ok((loads.load(Ordering::Relaxed), started.elapsed()))
}
