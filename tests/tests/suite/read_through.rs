//! Cache loaders: read-through (`get-or-load`) without stampedes, in one host and
//! across hosts on Redis; a full pool that does not deadlock; loader failures as typed
//! errors; warming that refreshes entries before they expire, one host per round; and
//! the operator's warm of a domain through the admin endpoint.
//!
//! The loader is the `catalog` fixture (it counts its calls in its store); the reader
//! is `product-reader`, which records what each message read in its store.

use crate::e2e_services::on_services;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use techub_host::Platform;
use techub_host::config::{HostConfig, WarmConfig};
use techub_tests::{PluginDir, config, grant, init_tracing, wait_for};

const LIMIT: Duration = Duration::from_secs(30);

/// The catalog loader of `products` and the reader, granted what they use.
fn loader_config(config: &mut HostConfig) {
    grant(config, "product-reader", &["products"], &[]);
    grant(config, "catalog", &[], &[]);
    config
        .cache
        .loaders
        .insert("products".into(), "catalog".into());
}

fn plugins() -> PluginDir {
    PluginDir::with(&[
        ("catalog", "fixture_catalog"),
        ("product-reader", "fixture_product_reader"),
    ])
}

fn embedded(dir: &PluginDir) -> HostConfig {
    let mut config = config(dir);
    loader_config(&mut config);
    config
}

fn redis(dir: &PluginDir) -> HostConfig {
    let mut config = on_services(dir);
    loader_config(&mut config);
    config
}

fn set(config: &mut HostConfig, plugin: &str, name: &str, value: &str) {
    config
        .plugins
        .entry(plugin.into())
        .or_default()
        .settings
        .insert(name.into(), value.into());
}

/// Publishes one read of `keys`; its message id.
async fn read(platform: &Platform, keys: &[&str]) -> String {
    platform
        .publish(
            "fixture.product-reader.read",
            json!(keys).to_string().into_bytes(),
            None,
        )
        .await
        .expect("published")
}

/// The store key of `plugin`'s `key`.
fn store_key(platform: &Platform, plugin: &str, key: &str) -> String {
    format!("{}store:{plugin}:{key}", platform.config().host.key_prefix)
}

/// What the reader recorded, once there are `count` records.
async fn results(platform: &Platform, count: usize) -> Vec<Value> {
    let key = store_key(platform, "product-reader", "results");
    wait_for(LIMIT, &format!("{count} reads recorded"), || async {
        let lines = platform.services.store.list_range(&key, 0, -1).await.ok()?;
        (lines.len() >= count).then(|| {
            lines
                .iter()
                .map(|l| serde_json::from_slice(l).expect("the reader writes JSON"))
                .collect()
        })
    })
    .await
}

/// The catalog's counter `name` (`calls` or `keys`).
async fn catalog_count(platform: &Platform, name: &str) -> i64 {
    let key = store_key(platform, "catalog", name);
    match platform.services.store.get(&key).await.expect("store") {
        Some(bytes) => String::from_utf8(bytes).unwrap().parse().unwrap(),
        None => 0,
    }
}

async fn cached(platform: &Platform, key: &str) -> Option<Value> {
    let values = platform
        .services
        .cache
        .backend
        .get_many("products", &[key.to_string()])
        .await
        .expect("cache");
    values
        .into_iter()
        .next()
        .flatten()
        .map(|v| serde_json::from_slice(&v).unwrap())
}

/// The conformance body: a miss is loaded, cached with the loader's tags and given to
/// the reader; the next read is a hit; a key without a value is `none` and not cached;
/// a bulk read loads only its misses, in one call.
async fn read_through_loads_misses_once_and_caches_them(config: HostConfig) {
    let platform = Platform::start(config).await.expect("host starts");
    assert!(
        platform.load_errors().await.is_empty(),
        "{:?}",
        platform.load_errors().await
    );

    read(&platform, &["p-1"]).await;
    let first = results(&platform, 1).await;
    assert_eq!(
        first[0]["values"],
        json!([{"domain": "products", "key": "p-1", "call": 1}])
    );
    assert_eq!(cached(&platform, "p-1").await.unwrap()["call"], 1);

    read(&platform, &["p-1"]).await;
    let second = results(&platform, 2).await;
    assert_eq!(
        second[1]["values"][0]["call"], 1,
        "a hit, not a second load"
    );
    assert_eq!(catalog_count(&platform, "calls").await, 1);

    read(&platform, &["p-1", "p-2", "missing-1", "p-3"]).await;
    let third = results(&platform, 3).await;
    let values = &third[2]["values"];
    assert_eq!(values[0]["call"], 1);
    assert_eq!(values[1]["call"], 2);
    assert_eq!(values[2], Value::Null, "a key without a value");
    assert_eq!(values[3]["call"], 2, "the misses went in one call");
    assert_eq!(catalog_count(&platform, "calls").await, 2);
    assert_eq!(catalog_count(&platform, "keys").await, 1 + 3);
    assert_eq!(cached(&platform, "missing-1").await, None);

    // Filed under the loader's tags.
    let removed = platform
        .services
        .cache
        .backend
        .invalidate_tag("products", "key:p-2")
        .await
        .unwrap();
    assert_eq!(removed, 1);
    assert_eq!(cached(&platform, "p-2").await, None);
    platform.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn embedded_read_through_loads_misses_once_and_caches_them() {
    init_tracing();
    let dir = plugins();
    read_through_loads_misses_once_and_caches_them(embedded(&dir)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_read_through_loads_misses_once_and_caches_them() {
    init_tracing();
    let dir = plugins();
    read_through_loads_misses_once_and_caches_them(redis(&dir)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn fifty_concurrent_readers_on_two_hosts_cost_one_loader_call() {
    init_tracing();
    let dir = plugins();
    let mut config = redis(&dir);
    config.limits.prefetch = 25;
    // Long enough that every reader misses while the first load runs.
    set(&mut config, "catalog", "delay_ms", "400");
    let host_a = Platform::start(config.clone())
        .await
        .expect("host A starts");
    let host_b = Platform::start(config).await.expect("host B starts");
    for _ in 0..50 {
        read(&host_a, &["p-hot"]).await;
    }
    let records = results(&host_a, 50).await;
    for record in &records {
        assert_eq!(record["values"][0]["key"], "p-hot", "{record}");
    }
    let calls = catalog_count(&host_a, "calls").await;
    let (a, b) = (
        host_a.services.cache.read_through.counts(),
        host_b.services.cache.read_through.counts(),
    );
    eprintln!("loader calls {calls}; host A {a:?}; host B {b:?}");
    // A lease runs out only past `cache.load_wait_ms` (5 s), far beyond this load.
    assert_eq!(calls, 1, "{calls} loader calls for 50 concurrent readers");
    let read =
        |c: &techub_host::capability::cache::LoadCounts| c.loader_calls + c.coalesced + c.waited;
    assert!(
        read(&a) > 0 && read(&b) > 0,
        "both hosts read: A {a:?}, B {b:?}"
    );
    // In each host the readers join one flight; only its leader waits on the lease.
    assert!(
        a.coalesced + b.coalesced >= 40,
        "the readers of each host joined one load: A {a:?}, B {b:?}"
    );
    assert!(
        a.waited + b.waited <= 1,
        "one leader waited on the other host: A {a:?}, B {b:?}"
    );
    host_a.shutdown().await;
    host_b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_pool_does_not_deadlock_readers_waiting_on_the_loader() {
    init_tracing();
    let dir = plugins();
    let mut config = embedded(&dir);
    // Two slots for handlers, both held by readers waiting on the loader.
    config.host.max_instances = 2;
    config.host.loader_instances = 1;
    config.limits.prefetch = 8;
    config.limits.timeout_ms = 20_000;
    set(&mut config, "catalog", "delay_ms", "100");
    // Each reader holds its slot a while first, so that both slots are readers' when
    // the first of them needs the loader.
    set(&mut config, "product-reader", "delay_ms", "200");
    let platform = Platform::start(config).await.expect("host starts");
    for i in 0..8 {
        read(&platform, &[&format!("p-{i}")]).await;
    }
    let records = results(&platform, 8).await;
    assert!(
        records.iter().all(|r| r["values"][0]["key"].is_string()),
        "{records:?}"
    );
    platform.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn loader_failures_reach_readers_as_typed_errors_and_are_counted() {
    init_tracing();
    let dir = plugins();
    let mut config = embedded(&dir);
    config.plugins.get_mut("catalog").unwrap().limits.cpu_ms = Some(50);
    let platform = Platform::start(config).await.expect("host starts");
    for key in ["fail", "trap", "spin", "recurse"] {
        read(&platform, &[key]).await;
    }
    let records = results(&platform, 4).await;
    let error_of = |key: &str| {
        records
            .iter()
            .find(|r| r["error"].as_str().is_some_and(|e| e.contains(key)))
            .unwrap_or_else(|| panic!("no read failed with {key:?}: {records:?}"))
            .clone()
    };
    let inside_a_loader =
        "the host refused: invalid argument: get_or_load is not available inside a loader";
    for reason in [
        "no such thing",
        "trapped",
        "CPU limit of 50 ms",
        inside_a_loader,
    ] {
        let record = error_of(reason);
        assert_eq!(record["loader_failed"], true, "{record}");
    }
    assert_eq!(platform.services.cache.read_through.counts().failures, 4);
    for key in ["fail", "trap", "spin"] {
        assert_eq!(cached(&platform, key).await, None);
    }
    platform.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn warming_refreshes_entries_before_they_expire() {
    init_tracing();
    let dir = plugins();
    let mut config = embedded(&dir);
    // Entries live 2 s, far less than the interval: rounds come at half the TTL.
    config.cache.warm.insert(
        "products".into(),
        WarmConfig {
            keys: vec!["w-1".into(), "w-2".into()],
            interval_s: 60,
            ttl_s: Some(2),
        },
    );
    let platform = Platform::start(config).await.expect("host starts");
    wait_for(LIMIT, "the first warm", || async {
        cached(&platform, "w-2").await.map(|_| ())
    })
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut seen_calls = std::collections::BTreeSet::new();
    while tokio::time::Instant::now() < deadline {
        for key in ["w-1", "w-2"] {
            let value = cached(&platform, key).await;
            let value = value.unwrap_or_else(|| panic!("{key} expired between two warms"));
            seen_calls.insert(value["call"].as_i64().unwrap());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(seen_calls.len() >= 3, "refreshed in rounds: {seen_calls:?}");
    platform.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn only_one_of_two_hosts_warms_each_round() {
    init_tracing();
    let dir = plugins();
    let mut config = redis(&dir);
    config.cache.warm.insert(
        "products".into(),
        WarmConfig {
            keys: vec!["w-1".into()],
            interval_s: 1,
            ttl_s: Some(60),
        },
    );
    let host_a = Platform::start(config.clone())
        .await
        .expect("host A starts");
    let host_b = Platform::start(config).await.expect("host B starts");
    tokio::time::sleep(Duration::from_millis(4_500)).await;
    let calls = catalog_count(&host_a, "calls").await;
    // Rounds of 1 s, each lock held 0.9 s: at most 6 rounds in 4.5 s; both hosts
    // warming every round would make about 10.
    assert!((3..=6).contains(&calls), "{calls} warm calls in 4.5 s");
    host_a.shutdown().await;
    host_b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn operators_warm_a_domain_through_the_admin_endpoint() {
    init_tracing();
    let dir = plugins();
    let platform = Arc::new(Platform::start(embedded(&dir)).await.expect("host starts"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = listener.local_addr().unwrap().to_string();
    tokio::spawn(
        axum::serve(listener, techub_host::admin::router(platform.clone(), None)).into_future(),
    );
    let body = json!({ "domain": "products", "keys": ["a-1", "missing-2", "a-3"], "ttl": 120 });
    let (status, answer) =
        techub_host::admin::client::post_json(&admin, None, "/cache/warm", &body)
            .await
            .unwrap();
    assert_eq!(status, 200, "{answer}");
    let report: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(report["loaded"], 2, "{report}");
    assert_eq!(report["missing"], 1, "{report}");
    assert_eq!(cached(&platform, "a-3").await.unwrap()["key"], "a-3");
    assert_eq!(cached(&platform, "missing-2").await, None);

    let unknown = json!({ "domain": "users", "keys": ["x"] });
    let (status, answer) =
        techub_host::admin::client::post_json(&admin, None, "/cache/warm", &unknown)
            .await
            .unwrap();
    assert_eq!(status, 400, "{answer}");
    assert!(answer.contains("[cache.loaders]"), "{answer}");
}
