//! The cache conformance suite.

use std::time::Duration;
use techub_host::capability::cache::memory::MemoryCache;
use techub_host::capability::cache::redis::RedisCache;
use techub_host::capability::cache::{CacheBackend, CacheWrite, Priority};
use techub_tests::{services, unique};

fn write(ttl: Duration, tags: &[&str]) -> CacheWrite {
    CacheWrite {
        ttl,
        tags: tags.iter().map(|t| t.to_string()).collect(),
        priority: Priority::Medium,
    }
}

fn keys(names: &[&str]) -> Vec<String> {
    names.iter().map(|k| k.to_string()).collect()
}

pub(super) async fn cache_conforms(cache: &dyn CacheBackend) {
    let hour = Duration::from_secs(3600);
    let (d, other) = ("users", "products");

    // Absent, then written, then read back in bulk in order.
    assert_eq!(cache.get_many(d, &keys(&["a"])).await.unwrap(), vec![None]);
    let entries = vec![
        ("a".to_string(), b"1".to_vec()),
        ("b".to_string(), b"2".to_vec()),
    ];
    cache
        .set_many(d, &entries, &write(hour, &["group"]))
        .await
        .unwrap();
    assert_eq!(
        cache
            .get_many(d, &keys(&["b", "missing", "a"]))
            .await
            .unwrap(),
        vec![Some(b"2".to_vec()), None, Some(b"1".to_vec())]
    );
    assert!(cache.exists(d, "a").await.unwrap());
    assert_eq!(
        cache.get_many(other, &keys(&["a"])).await.unwrap(),
        vec![None],
        "domains do not share keys"
    );

    // Delete reports whether there was an entry.
    assert!(cache.delete(d, "a").await.unwrap());
    assert!(!cache.delete(d, "a").await.unwrap());
    assert!(!cache.exists(d, "a").await.unwrap());

    // Tags: invalidation removes exactly the tagged entries of that domain.
    cache
        .set_many(
            d,
            &[("t1".into(), b"x".to_vec()), ("t2".into(), b"y".to_vec())],
            &write(hour, &["vendor:1", "all"]),
        )
        .await
        .unwrap();
    cache
        .set_many(
            d,
            &[("t3".into(), b"z".to_vec())],
            &write(hour, &["vendor:2", "all"]),
        )
        .await
        .unwrap();
    cache
        .set_many(
            other,
            &[("t1".into(), b"o".to_vec())],
            &write(hour, &["vendor:1"]),
        )
        .await
        .unwrap();
    assert_eq!(cache.invalidate_tag(d, "vendor:1").await.unwrap(), 2);
    assert_eq!(
        cache.get_many(d, &keys(&["t1", "t2", "t3"])).await.unwrap(),
        vec![None, None, Some(b"z".to_vec())]
    );
    assert_eq!(
        cache.get_many(other, &keys(&["t1"])).await.unwrap(),
        vec![Some(b"o".to_vec())],
        "tags are per domain"
    );
    assert_eq!(cache.invalidate_tag(d, "vendor:1").await.unwrap(), 0);

    // Rewriting an entry replaces its tags: the old tag no longer reaches it.
    cache
        .set_many(
            d,
            &[("t3".into(), b"z2".to_vec())],
            &write(hour, &["fresh"]),
        )
        .await
        .unwrap();
    assert_eq!(cache.invalidate_tag(d, "vendor:2").await.unwrap(), 0);
    assert_eq!(
        cache.get_many(d, &keys(&["t3"])).await.unwrap(),
        vec![Some(b"z2".to_vec())]
    );
    assert_eq!(cache.invalidate_tag(d, "fresh").await.unwrap(), 1);

    // Patterns: Redis globs, within the domain only.
    cache
        .set_many(
            d,
            &[
                ("user:1".into(), b"1".to_vec()),
                ("user:2".into(), b"2".to_vec()),
                ("order:1".into(), b"3".to_vec()),
            ],
            &write(hour, &[]),
        )
        .await
        .unwrap();
    cache
        .set_many(
            other,
            &[("user:9".into(), b"9".to_vec())],
            &write(hour, &[]),
        )
        .await
        .unwrap();
    assert_eq!(cache.invalidate_pattern(d, "user:*").await.unwrap(), 2);
    assert_eq!(
        cache
            .get_many(d, &keys(&["user:1", "order:1"]))
            .await
            .unwrap(),
        vec![None, Some(b"3".to_vec())]
    );
    assert!(cache.exists(other, "user:9").await.unwrap());
    assert_eq!(cache.invalidate_pattern(d, "ord?r:[0-9]").await.unwrap(), 1);

    // Keys with glob characters are literal keys, and a pattern can escape them.
    cache
        .set_many(
            d,
            &[
                ("odd*key".into(), b"1".to_vec()),
                ("oddXkey".into(), b"2".to_vec()),
            ],
            &write(hour, &[]),
        )
        .await
        .unwrap();
    assert_eq!(cache.invalidate_pattern(d, "odd\\*key").await.unwrap(), 1);
    assert!(cache.exists(d, "oddXkey").await.unwrap());

    // Every entry expires.
    cache
        .set_many(
            d,
            &[("short".into(), b"s".to_vec())],
            &write(Duration::from_millis(150), &["brief"]),
        )
        .await
        .unwrap();
    assert!(cache.exists(d, "short").await.unwrap());
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        cache.get_many(d, &keys(&["short"])).await.unwrap(),
        vec![None]
    );
    assert_eq!(
        cache.invalidate_tag(d, "brief").await.unwrap(),
        0,
        "an expired entry is not counted"
    );

    // Large and binary values round-trip.
    let big: Vec<u8> = (0..(1 << 20)).map(|i| (i % 251) as u8).collect();
    cache
        .set_many(d, &[("big".into(), big.clone())], &write(hour, &[]))
        .await
        .unwrap();
    assert_eq!(
        cache.get_many(d, &keys(&["big"])).await.unwrap(),
        vec![Some(big)]
    );
}

/// Keys and tags removed in one call (the specification's `CacheInvalidationDto`):
/// each entry once, its filings with it, other domains untouched.
pub(super) async fn invalidation_in_one_call_conforms(cache: &dyn CacheBackend) {
    let hour = Duration::from_secs(3600);
    // Domains of their own: the body above leaves entries in the seeded ones.
    let (d, other) = ("inv-products", "inv-users");
    let entry = |k: &str| (k.to_string(), k.as_bytes().to_vec());
    cache
        .set_many(d, &[entry("p1"), entry("p2")], &write(hour, &["vendor:1"]))
        .await
        .unwrap();
    cache
        .set_many(
            d,
            &[entry("p3"), entry("keep")],
            &write(hour, &["vendor:2"]),
        )
        .await
        .unwrap();
    cache
        .set_many(d, &[entry("p4")], &write(hour, &["vendor:3"]))
        .await
        .unwrap();
    cache
        .set_many(other, &[entry("p1")], &write(hour, &["vendor:1"]))
        .await
        .unwrap();
    let done = cache
        .invalidate(
            d,
            &keys(&["p1", "p3", "absent"]),
            &keys(&["vendor:1", "vendor:3", "no-such-tag"]),
        )
        .await
        .unwrap();
    // p1 and p3 by key; p2 and p4 by tag (p1, filed under vendor:1 too, once).
    assert_eq!((done.by_key, done.by_tag), (2, 2), "{done:?}");
    assert_eq!(
        cache
            .get_many(d, &keys(&["p1", "p2", "p3", "p4", "keep"]))
            .await
            .unwrap(),
        vec![None, None, None, None, Some(b"keep".to_vec())]
    );
    assert_eq!(
        cache.get_many(other, &keys(&["p1"])).await.unwrap(),
        vec![Some(b"p1".to_vec())],
        "another domain's entry under the same tag stays"
    );
    // The removed entries left their tags: invalidating vendor:2 finds `keep` only.
    assert_eq!(cache.invalidate_tag(d, "vendor:2").await.unwrap(), 1);
    let nothing = cache.invalidate(d, &[], &[]).await.unwrap();
    assert_eq!((nothing.by_key, nothing.by_tag), (0, 0));
}

#[tokio::test]
async fn memory_cache_conforms() {
    let cache = MemoryCache::new(256 << 20);
    cache_conforms(&cache).await;
    invalidation_in_one_call_conforms(&cache).await;
}

#[tokio::test]
async fn redis_cache_conforms() {
    let prefix = format!("{}:", unique("techub-test"));
    let cache = RedisCache::new(services::redis().await, &prefix);
    cache_conforms(&cache).await;
    invalidation_in_one_call_conforms(&cache).await;
}

#[tokio::test]
async fn memory_cache_evicts_low_priority_first_when_over_budget() {
    let cache = MemoryCache::new(64 * 1024);
    let value = vec![0u8; 16 * 1024];
    let hour = Duration::from_secs(3600);
    let keep = CacheWrite {
        ttl: hour,
        tags: vec![],
        priority: Priority::Critical,
    };
    let drop_first = CacheWrite {
        ttl: hour,
        tags: vec![],
        priority: Priority::Low,
    };
    cache
        .set_many("d", &[("keep".into(), value.clone())], &keep)
        .await
        .unwrap();
    cache
        .set_many("d", &[("low".into(), value.clone())], &drop_first)
        .await
        .unwrap();
    for i in 0..4 {
        cache
            .set_many("d", &[(format!("m{i}"), value.clone())], &write(hour, &[]))
            .await
            .unwrap();
    }
    assert!(
        cache.exists("d", "keep").await.unwrap(),
        "critical entries stay"
    );
    assert!(
        !cache.exists("d", "low").await.unwrap(),
        "low priority goes first"
    );
}
