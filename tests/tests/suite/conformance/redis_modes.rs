//! The cache, store and lock suites, unchanged, on a Redis Cluster (six nodes) and on
//! a primary found through sentinels, each started for this test on free ports; and
//! what a cluster adds: atomic batches across slots refused with a typed error, scans
//! that see every primary, host keys grouped by hash tag.

use super::{cache, lock, store};
use techub_host::capability::BackendError;
use techub_host::capability::cache::CacheBackend;
use techub_host::capability::cache::redis::RedisCache;
use techub_host::capability::lock::redis::RedisLocks;
use techub_host::capability::redis_client::RedisClient;
use techub_host::capability::store::redis::RedisStore;
use techub_host::capability::store::{AtomicOp, SetCondition, StoreBackend};
use techub_host::config::{RedisConfig, RedisMode};
use techub_tests::redis_nodes::{MASTER_NAME, RedisCluster, RedisSentinels};
use techub_tests::unique;

/// A client of `mode` on these URLs.
async fn client(mode: RedisMode, urls: Vec<String>) -> RedisClient {
    let mut config = RedisConfig {
        mode,
        ..RedisConfig::default()
    };
    match mode {
        RedisMode::Cluster => config.urls = urls,
        RedisMode::Sentinel => {
            config.sentinels = urls;
            config.master_name = MASTER_NAME.to_string();
        }
        RedisMode::Single => config.url = urls[0].clone(),
    }
    let host = techub_host::config::HostConfig {
        redis: config.clone(),
        ..Default::default()
    };
    host.validate()
        .expect("the test's [redis] section is valid");
    RedisClient::connect(&config, Default::default())
        .await
        .unwrap_or_else(|e| {
            panic!("the test's own Redis ({mode:?}) did not accept a client: {e:#}")
        })
}

/// Every suite against `redis`; lock keys and atomic batches carry one hash tag, as
/// the host's own keys do on a cluster.
async fn suites_conform(redis: &RedisClient) {
    let prefix = format!("{}:", unique("techub-test"));
    let cache = RedisCache::new(redis.clone(), &prefix);
    cache::cache_conforms(&cache).await;
    cache::invalidation_in_one_call_conforms(&cache).await;

    let store = RedisStore::new(redis.clone());
    let ns = format!("{prefix}store:");
    store::store_conforms(&store, &ns).await;
    store::sorted_sets_and_cas_conform(&store, &ns).await;
    store::atomic_batches_conform(&store, &format!("{prefix}store:{{batch}}:")).await;

    let locks = RedisLocks::new(redis.clone());
    lock::locks_conform(&locks, &format!("{prefix}lock:{{plugin}}:x")).await;
}

#[tokio::test]
async fn the_suites_conform_on_a_redis_cluster() {
    let cluster = RedisCluster::start().await;
    let redis = client(RedisMode::Cluster, cluster.urls()).await;
    assert!(
        redis.layout().cluster,
        "a cluster client groups keys by hash tag"
    );
    suites_conform(&redis).await;

    // A batch across slots is refused before it runs, saying how to group the keys.
    let store = RedisStore::new(redis.clone());
    let ns = unique("techub-test");
    let a = format!("{ns}:store:p:a");
    // A second key on another primary than `a`'s (a third of all keys are on its).
    let b = (0..)
        .map(|i| format!("{ns}:store:p:b{i}"))
        .find(|b| cluster.primary_of(b) != cluster.primary_of(&a))
        .expect("keys hash onto every primary");
    let refused = store
        .atomic(&[
            AtomicOp::IncrBy(a.clone(), 1),
            AtomicOp::IncrBy(b.clone(), 1),
        ])
        .await;
    match refused {
        Err(BackendError::InvalidArgument(message)) => {
            assert!(message.contains("hash tag"), "{message}")
        }
        other => panic!("a cross-slot batch must be a typed error, got {other:?}"),
    }
    assert!(
        !store.exists(&a).await.unwrap(),
        "nothing of the refused batch ran"
    );

    // A scan walks every primary: keys on all three come back.
    let mut written = Vec::new();
    for i in 0..60 {
        let key = format!("{ns}:store:p:spread:{i}");
        store
            .set(&key, b"1", None, SetCondition::Always)
            .await
            .unwrap();
        written.push(key);
    }
    let holders: std::collections::BTreeSet<usize> =
        written.iter().map(|k| cluster.primary_of(k)).collect();
    assert_eq!(holders.len(), 3, "60 keys hash onto every primary");
    let pattern = format!("{}:store:p:spread:*", techub_host::names::glob::escape(&ns));
    let mut found = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let (keys, next) = store.scan(&pattern, cursor.as_deref(), 7).await.unwrap();
        found.extend(keys);
        match next {
            None => break,
            next => cursor = next,
        }
    }
    found.sort();
    found.dedup();
    written.sort();
    assert_eq!(found, written, "the scan saw every primary's keys");
    store.delete(&written).await.unwrap();

    // A cache domain is one slot: its entries and tag sets live together.
    let cache = RedisCache::new(redis.clone(), &format!("{ns}:"));
    let write = techub_host::capability::cache::CacheWrite {
        ttl: std::time::Duration::from_secs(60),
        tags: vec!["vip".into()],
        priority: techub_host::capability::cache::Priority::Medium,
    };
    let entries: Vec<(String, Vec<u8>)> =
        (0..20).map(|i| (format!("u{i}"), b"v".to_vec())).collect();
    cache.set_many("users", &entries, &write).await.unwrap();
    let domain_primary = cluster.primary_of(&format!("{ns}:cache:{{users}}:u0"));
    for (key, _) in &entries {
        assert_eq!(
            cluster.primary_of(&format!("{ns}:cache:{{users}}:{key}")),
            domain_primary
        );
    }
    assert_eq!(cache.invalidate_tag("users", "vip").await.unwrap(), 20);
    assert_eq!(cache.invalidate_pattern("users", "*").await.unwrap(), 0);
}

#[tokio::test]
async fn the_suites_conform_on_a_primary_found_through_sentinels() {
    let set = RedisSentinels::start().await;
    let redis = client(RedisMode::Sentinel, set.urls()).await;
    assert!(!redis.layout().cluster, "one primary needs no hash tags");
    suites_conform(&redis).await;
}
