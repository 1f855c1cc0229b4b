//! The two-layer cache: an in-process L1 per domain in front of the shared Redis.
//! Two hosts on one Redis (each its own services, under one unique key prefix):
//! a change on one is never followed by a stale read on the other once the
//! documented bound (`cache.l1_max_stale_ms`) has passed after it returned; the
//! writing host reads its own writes at once; a host that loses its invalidation
//! channel reads Redis and drops its copies; copies are evicted by priority; and
//! `[cache.l1]` applies on reload.
//!
//! Where a test must tell an L1 answer from a Redis one, it rewrites the entry in
//! Redis behind the hosts' backs (a raw `SET`, which publishes nothing): an L1 still
//! answers the old value, Redis the new one.

use std::sync::Arc;
use std::time::Duration;
use techub_host::capability::BackendError;
use techub_host::capability::cache::l1::TwoLayerCache;
use techub_host::capability::cache::{CacheWrite, Invalidated, Priority};
use techub_host::config::{HostConfig, KvBackend, L1Config, RedisMode};
use techub_host::services::Services;

use techub_tests::redis_nodes::{MASTER_NAME, RedisCluster, RedisSentinels};
use techub_tests::{PluginDir, config, services, unique, wait_for};

const DOMAIN: &str = "products";
const BOUND_MS: u64 = 100;

/// A configuration with the cache on the shared Redis under a fresh prefix and an
/// L1 for `products`.
fn layered(dir: &PluginDir) -> HostConfig {
    let mut config = config(dir);
    config.backends.cache = KvBackend::Redis;
    config.host.key_prefix = format!("{}:", unique("techub-test"));
    config.cache.l1_max_stale_ms = BOUND_MS;
    config.cache.l1.insert(
        DOMAIN.into(),
        L1Config {
            ttl_s: 600,
            budget_mib: 16,
        },
    );
    config
}

/// [`layered`], on the Redis Cluster `cluster`.
fn layered_on_cluster(dir: &PluginDir, cluster: &RedisCluster) -> HostConfig {
    let mut config = layered(dir);
    config.redis.mode = RedisMode::Cluster;
    config.redis.urls = cluster.urls();
    config
}

/// A host's services, once its L1 serves (its channel is subscribed and fresh).
async fn host(config: &HostConfig) -> Arc<Services> {
    let services = Arc::new(
        techub_host::services::connect(config)
            .await
            .expect("services connect"),
    );
    wait_for(Duration::from_secs(10), "the L1 to serve", || async {
        l1(&services).serving().then_some(())
    })
    .await;
    services
}

fn l1(services: &Services) -> &TwoLayerCache {
    services.cache.l1.as_deref().expect("the cache is on Redis")
}

fn write(tags: &[&str], priority: Priority) -> CacheWrite {
    CacheWrite {
        ttl: Duration::from_secs(600),
        tags: tags.iter().map(|t| t.to_string()).collect(),
        priority,
    }
}

async fn set(services: &Services, key: &str, value: &str, tags: &[&str]) {
    services
        .cache
        .backend
        .set_many(
            DOMAIN,
            &[(key.into(), value.into())],
            &write(tags, Priority::Medium),
        )
        .await
        .expect("set");
}

async fn get(services: &Services, key: &str) -> Result<Option<String>, BackendError> {
    Ok(services
        .cache
        .backend
        .get_many(DOMAIN, &[key.to_string()])
        .await?
        .pop()
        .flatten()
        .map(|v| String::from_utf8_lossy(&v).into_owned()))
}

/// Reads `key` on `host` until the read comes from its L1 (a copy made once the
/// invalidations in flight from other hosts arrived); the value.
async fn copied(host: &Services, key: &str) -> Option<String> {
    wait_for(Duration::from_secs(10), "a copy in L1", || async {
        let hits = l1(host).counts().hits;
        let value = get(host, key).await.expect("read");
        (l1(host).counts().hits > hits).then_some(value)
    })
    .await
}

/// Rewrites the entry in Redis without publishing anything.
async fn behind_the_back(config: &HostConfig, key: &str, value: &str) {
    let entry = format!("{}cache:{DOMAIN}:{key}", config.host.key_prefix);
    let redis = services::redis().await;
    let _: () = redis
        .run(
            "SET",
            techub_host::capability::redis_client::Retry::Idempotent,
            |mut c| {
                let cmd = redis::cmd("SET")
                    .arg(&entry)
                    .arg(value)
                    .arg("PX")
                    .arg(600_000)
                    .clone();
                async move { cmd.query_async(&mut c).await }
            },
        )
        .await
        .expect("raw SET");
}

#[tokio::test]
async fn l1_answers_repeated_reads_from_process_memory() {
    let dir = PluginDir::with(&[]);
    let config = layered(&dir);
    let host = host(&config).await;
    set(&host, "k", "v1", &[]).await;
    assert_eq!(get(&host, "k").await.unwrap().as_deref(), Some("v1")); // copied
    behind_the_back(&config, "k", "behind").await;
    assert_eq!(
        get(&host, "k").await.unwrap().as_deref(),
        Some("v1"),
        "the second read comes from L1, not Redis"
    );
    let counts = l1(&host).counts();
    assert!(counts.hits >= 1 && counts.misses >= 1, "{counts:?}");
    // A domain without an L1 reads Redis every time.
    let mut plain = config.clone();
    plain.cache.l1.clear();
    let plain = Arc::new(techub_host::services::connect(&plain).await.unwrap());
    assert_eq!(get(&plain, "k").await.unwrap().as_deref(), Some("behind"));
}

/// One change of five kinds per round on host A, each after host B holds a copy:
/// B's read `BOUND_MS` after A's call returned sees the change.
#[tokio::test]
async fn a_change_on_one_host_is_never_followed_by_a_stale_read_on_another_after_the_bound() {
    let dir = PluginDir::with(&[]);
    let config = layered(&dir);
    changes_reach_the_other_host(&config, &config, 40).await;
}

/// The same on a Redis Cluster, host B given only a node that is not the primary of
/// the domain's slot (where A's scripts publish): B's sharded subscription finds the
/// domain's shard through the cluster's slot map.
#[tokio::test]
async fn on_a_redis_cluster_a_change_reaches_a_host_subscribed_to_another_node() {
    let cluster = RedisCluster::start().await;
    let dir = PluginDir::with(&[]);
    let a = layered_on_cluster(&dir, &cluster);
    let domain_primary = cluster.primary_of(&format!("{}cache:{{{DOMAIN}}}:k0", a.host.key_prefix));
    let mut b = a.clone();
    let elsewhere = (0..cluster.nodes.len())
        .find(|i| *i != domain_primary)
        .expect("six nodes");
    b.redis.urls = vec![cluster.nodes[elsewhere].url()];
    changes_reach_the_other_host(&a, &b, 10).await;
}

/// The same with the primary found through sentinels.
#[tokio::test]
async fn through_sentinels_a_change_reaches_the_other_host() {
    let set = RedisSentinels::start().await;
    let dir = PluginDir::with(&[]);
    let mut config = layered(&dir);
    config.redis.mode = RedisMode::Sentinel;
    config.redis.sentinels = set.urls();
    config.redis.master_name = MASTER_NAME.into();
    changes_reach_the_other_host(&config, &config, 10).await;
}

/// `rounds` changes of five kinds on host A (of `config_a`), each after host B (of
/// `config_b`) holds a copy: B's read `BOUND_MS` after A's call returned sees it.
async fn changes_reach_the_other_host(config_a: &HostConfig, config_b: &HostConfig, rounds: usize) {
    let (a, b) = (host(config_a).await, host(config_b).await);
    for round in 0..rounds {
        let key = format!("k{round}");
        set(&a, &key, "old", &["t", &format!("tag-{round}")]).await;
        assert_eq!(copied(&b, &key).await.as_deref(), Some("old"));
        let expected = match round % 5 {
            0 => {
                set(&a, &key, "new", &[]).await;
                Some("new")
            }
            1 => {
                assert!(a.cache.backend.delete(DOMAIN, &key).await.unwrap());
                None
            }
            2 => {
                let tag = format!("tag-{round}");
                assert_eq!(
                    a.cache.backend.invalidate_tag(DOMAIN, &tag).await.unwrap(),
                    1
                );
                None
            }
            3 => {
                assert_eq!(
                    a.cache
                        .backend
                        .invalidate_pattern(DOMAIN, &key)
                        .await
                        .unwrap(),
                    1
                );
                None
            }
            _ => {
                let removed = a
                    .cache
                    .backend
                    .invalidate(DOMAIN, &[], &[format!("tag-{round}")])
                    .await
                    .unwrap();
                assert_eq!(
                    removed,
                    Invalidated {
                        by_key: 0,
                        by_tag: 1
                    }
                );
                None
            }
        };
        tokio::time::sleep(Duration::from_millis(BOUND_MS)).await;
        assert_eq!(
            get(&b, &key).await.unwrap().as_deref(),
            expected,
            "round {round}: B read a stale copy {BOUND_MS} ms after A's change returned"
        );
    }
}

#[tokio::test]
async fn the_changing_host_reads_its_own_change_at_once() {
    let dir = PluginDir::with(&[]);
    let config = layered(&dir);
    let a = host(&config).await;
    set(&a, "k", "old", &["t"]).await;
    assert_eq!(get(&a, "k").await.unwrap().as_deref(), Some("old"));
    set(&a, "k", "new", &["t"]).await;
    assert_eq!(get(&a, "k").await.unwrap().as_deref(), Some("new"));
    assert_eq!(get(&a, "k").await.unwrap().as_deref(), Some("new")); // copied again
    assert_eq!(
        a.cache.backend.invalidate_tag(DOMAIN, "t").await.unwrap(),
        1
    );
    assert_eq!(get(&a, "k").await.unwrap(), None);
    set(&a, "p:1", "old", &[]).await;
    assert_eq!(get(&a, "p:1").await.unwrap().as_deref(), Some("old"));
    assert_eq!(
        a.cache
            .backend
            .invalidate_pattern(DOMAIN, "p:*")
            .await
            .unwrap(),
        1
    );
    assert_eq!(get(&a, "p:1").await.unwrap(), None);
}

/// Host B reaches Redis through a proxy; cutting it breaks B's channel. While it is
/// down, B answers nothing from L1 (it fails, Redis being out of reach, rather than
/// serve a copy); when it is back, the change A made meanwhile (whose invalidation B
/// never heard) is what B reads.
#[tokio::test]
async fn a_host_that_lost_its_channel_serves_no_copy_and_drops_them_all() {
    let proxy = techub_tests::TcpProxy::start("127.0.0.1:6379").await;
    let dir = PluginDir::with(&[]);
    let config = layered(&dir);
    let mut via_proxy = config.clone();
    via_proxy.redis.url = format!("redis://127.0.0.1:{}", proxy.port);
    via_proxy.redis.command_timeout_ms = 500;
    let (a, b) = (host(&config).await, host(&via_proxy).await);
    set(&a, "k", "old", &[]).await;
    assert_eq!(copied(&b, "k").await.as_deref(), Some("old"));

    proxy.cut();
    set(&a, "k", "new", &[]).await;
    tokio::time::sleep(Duration::from_millis(BOUND_MS * 2)).await;
    assert!(
        !l1(&b).serving(),
        "B's L1 is off once its channel is silent"
    );
    assert!(
        get(&b, "k").await.is_err(),
        "B reads Redis (out of reach) rather than its copy"
    );

    proxy.restore();
    wait_for(Duration::from_secs(20), "B's L1 to serve again", || async {
        l1(&b).serving().then_some(())
    })
    .await;
    assert_eq!(
        get(&b, "k").await.unwrap().as_deref(),
        Some("new"),
        "B dropped the copy whose invalidation it missed"
    );
}

/// A 1 MiB L1 filled with 40 critical entries, then 200 low ones (2.5 MiB in all):
/// the low ones are evicted, the critical ones stay, whichever came first.
#[tokio::test]
async fn l1_evicts_low_priority_copies_before_critical_ones() {
    let dir = PluginDir::with(&[]);
    let mut config = layered(&dir);
    config.cache.l1.get_mut(DOMAIN).unwrap().budget_mib = 1;
    let host = host(&config).await;
    let value = "x".repeat(10 * 1024);
    let keys = |p: &str, n: usize| -> Vec<String> { (0..n).map(|i| format!("{p}{i}")).collect() };
    let (critical, low) = (keys("c", 40), keys("l", 200));
    for (keys, priority) in [(&critical, Priority::Critical), (&low, Priority::Low)] {
        let entries: Vec<(String, Vec<u8>)> = keys
            .iter()
            .map(|k| (k.clone(), value.clone().into_bytes()))
            .collect();
        host.cache
            .backend
            .set_many(DOMAIN, &entries, &write(&[], priority))
            .await
            .unwrap();
    }
    for key in critical.iter().chain(&low) {
        assert!(get(&host, key).await.unwrap().is_some()); // copies, in this order
    }
    for key in critical.iter().chain(&low) {
        behind_the_back(&config, key, "behind").await;
    }
    let from_l1 = |keys: &[String]| {
        let host = host.clone();
        let keys = keys.to_vec();
        async move {
            let mut n = 0;
            for key in &keys {
                n += usize::from(get(&host, key).await.unwrap().as_deref() != Some("behind"));
            }
            n
        }
    };
    assert_eq!(from_l1(&critical).await, 40, "every critical copy stayed");
    let low_kept = from_l1(&low).await;
    assert!(
        low_kept < 100,
        "low copies went first: {low_kept} of 200 kept"
    );
}

#[tokio::test]
async fn an_l1_added_by_a_reload_serves_and_one_removed_stops() {
    let dir = PluginDir::with(&[]);
    let mut config = layered(&dir);
    config.cache.l1.clear();
    let platform = techub_host::Platform::start(config.clone())
        .await
        .expect("the host starts");
    let services = platform.services.clone();
    set(&services, "k", "v1", &[]).await;
    get(&services, "k").await.unwrap();
    behind_the_back(&config, "k", "v2").await;
    assert_eq!(get(&services, "k").await.unwrap().as_deref(), Some("v2"));

    let mut with_l1 = config.clone();
    with_l1.cache.l1 = layered(&dir).cache.l1;
    platform.reload_config(with_l1).await.expect("reloaded");
    wait_for(Duration::from_secs(10), "the L1 to serve", || async {
        l1(&services).serving().then_some(())
    })
    .await;
    assert_eq!(get(&services, "k").await.unwrap().as_deref(), Some("v2")); // copied
    behind_the_back(&config, "k", "v3").await;
    assert_eq!(
        get(&services, "k").await.unwrap().as_deref(),
        Some("v2"),
        "L1 answers"
    );

    platform
        .reload_config(config.clone())
        .await
        .expect("reloaded");
    assert_eq!(
        get(&services, "k").await.unwrap().as_deref(),
        Some("v3"),
        "L1 gone"
    );
    platform.shutdown().await;
}

#[test]
fn an_l1_on_the_embedded_cache_or_an_undeclared_domain_is_refused() {
    let dir = PluginDir::with(&[]);
    let mut embedded = layered(&dir);
    embedded.backends.cache = KvBackend::Memory;
    let error = embedded.validate().unwrap_err().to_string();
    assert!(
        error.contains("cache.l1.products") && error.contains("Redis"),
        "{error}"
    );
    let mut undeclared = layered(&dir);
    undeclared.cache.l1.insert(
        "nowhere".into(),
        L1Config {
            ttl_s: 1,
            budget_mib: 1,
        },
    );
    let error = undeclared.validate().unwrap_err().to_string();
    assert!(error.contains("cache.l1.nowhere"), "{error}");
}

/// On a Redis Cluster (Redis 7) a write's invalidation is published sharded, on the
/// domain's own channel in the domain's slot: it stays on the shard that ran the write.
/// A classic subscriber to every channel on each other primary hears nothing of a
/// cache write, where a classic `PUBLISH` (which crosses the cluster bus to every
/// node) reaches it.
#[tokio::test]
async fn on_a_redis_cluster_invalidations_stay_on_the_shard_of_their_domain() {
    use futures::StreamExt;
    let cluster = RedisCluster::start().await;
    let dir = PluginDir::with(&[]);
    let config = layered_on_cluster(&dir, &cluster);
    let a = host(&config).await;
    assert!(
        a.redis.as_ref().expect("on Redis").sharded_pubsub(),
        "Redis 7 runs SPUBLISH"
    );
    let prefix = &config.host.key_prefix;
    let home = cluster.nodes[cluster.primary_of(&format!("{prefix}cache:{{{DOMAIN}}}:k"))].port;
    let mut listeners = Vec::new();
    for node in cluster.primaries().into_iter().filter(|n| n.port != home) {
        let mut pubsub = redis::Client::open(node.url())
            .unwrap()
            .get_async_pubsub()
            .await
            .unwrap();
        pubsub.psubscribe("*").await.unwrap();
        listeners.push((node.port, pubsub.into_on_message()));
    }
    assert_eq!(
        listeners.len(),
        2,
        "three primaries, one of them the domain's"
    );

    set(&a, "k", "v", &["t"]).await;
    assert!(a.cache.backend.delete(DOMAIN, "k").await.unwrap());
    for (port, messages) in &mut listeners {
        let heard = tokio::time::timeout(Duration::from_millis(300), messages.next()).await;
        assert!(
            heard.is_err(),
            "node {port}, not the domain's, heard {:?}",
            heard.map(|m| m.map(|m| m.get_channel_name().to_string()))
        );
    }
    // The listeners do hear what crosses the bus: a classic publish on the domain's node.
    let home_node = cluster.nodes.iter().find(|n| n.port == home).unwrap();
    home_node.cli(&["PUBLISH", &format!("{prefix}probe"), "x"]);
    for (port, messages) in &mut listeners {
        let heard = tokio::time::timeout(Duration::from_secs(5), messages.next()).await;
        assert!(
            matches!(heard, Ok(Some(_))),
            "node {port} heard no classic publish"
        );
    }
}

/// On a Redis Cluster each L1 domain's ping travels on its own shard, and the L1
/// serves only while every shard's ping is fresh: with one domain's primary paused
/// (`CLIENT PAUSE`, so neither its invalidations nor its pings get through), the L1
/// stops serving within the bound although the other shard's pings still come, and
/// serves again once the pause ends.
#[tokio::test]
async fn on_a_redis_cluster_l1_is_only_as_fresh_as_its_stalest_shard() {
    let cluster = RedisCluster::start().await;
    let dir = PluginDir::with(&[]);
    let mut config = layered_on_cluster(&dir, &cluster);
    let other = on_another_shard(&config, &cluster);
    config.cache.l1.insert(
        other.clone(),
        L1Config {
            ttl_s: 600,
            budget_mib: 16,
        },
    );
    let a = host(&config).await;
    let prefix = &config.host.key_prefix;
    let paused = &cluster.nodes[cluster.primary_of(&format!("{prefix}cache:{{{other}}}:k"))];
    assert_eq!(paused.cli(&["CLIENT", "PAUSE", "3000", "ALL"]).trim(), "OK");
    tokio::time::sleep(Duration::from_millis(BOUND_MS * 5)).await;
    assert!(
        !l1(&a).serving(),
        "the L1 serves while the pings of {other}'s shard are stuck"
    );
    wait_for(Duration::from_secs(20), "the L1 to serve again", || async {
        l1(&a).serving().then_some(())
    })
    .await;
}

/// A declared domain whose keys live on another shard than [`DOMAIN`]'s.
fn on_another_shard(config: &HostConfig, cluster: &RedisCluster) -> String {
    let prefix = &config.host.key_prefix;
    let primary = |domain: &str| cluster.primary_of(&format!("{prefix}cache:{{{domain}}}:k"));
    config
        .cache
        .domains
        .keys()
        .find(|d| primary(d) != primary(DOMAIN))
        .expect("a domain on another shard")
        .clone()
}

/// On a Redis Cluster, an L1 domain that a reload adds (on another shard) gets its
/// own channel and ping subscribed on the running subscription: the L1 serves again,
/// and another host's change of that domain reaches the copy.
#[tokio::test]
async fn on_a_redis_cluster_an_l1_domain_added_by_a_reload_hears_its_shard() {
    let cluster = RedisCluster::start().await;
    let dir = PluginDir::with(&[]);
    let config = layered_on_cluster(&dir, &cluster);
    let other = on_another_shard(&config, &cluster);
    let (a, b) = (host(&config).await, host(&config).await);
    let mut wider = config.cache.clone();
    wider.l1.insert(
        other.clone(),
        L1Config {
            ttl_s: 600,
            budget_mib: 16,
        },
    );
    b.cache.l1.as_ref().expect("on Redis").configure(&wider);
    wait_for(Duration::from_secs(10), "B's L1 to serve again", || async {
        l1(&b).serving().then_some(())
    })
    .await;
    let set_other = async |value: &str| {
        let entries = [("k".to_string(), value.as_bytes().to_vec())];
        let options = write(&[], Priority::Medium);
        a.cache
            .backend
            .set_many(&other, &entries, &options)
            .await
            .unwrap()
    };
    set_other("old").await;
    let read = || async {
        b.cache
            .backend
            .get_many(&other, &["k".to_string()])
            .await
            .unwrap()
            .pop()
            .flatten()
    };
    wait_for(Duration::from_secs(10), "a copy in B's new L1", || async {
        let hits = l1(&b).counts().hits;
        let value = read().await;
        (l1(&b).counts().hits > hits).then_some(value)
    })
    .await;
    set_other("new").await;
    tokio::time::sleep(Duration::from_millis(BOUND_MS)).await;
    assert_eq!(
        read().await.as_deref(),
        Some(&b"new"[..]),
        "B read a stale copy"
    );
}
