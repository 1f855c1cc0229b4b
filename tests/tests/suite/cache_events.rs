//! Event-based invalidation (`[[cache.invalidate]]`): events invalidate the entries
//! their rules name, filled from the payload; a malformed event is dead-lettered with
//! the reason and the consumer carries on; rules follow a reload. On the embedded
//! backends and on Redis with RabbitMQ.

use crate::e2e_embedded::dead_letter_of;
use crate::e2e_services::on_services;
use serde_json::json;
use std::time::Duration;
use techub_host::Platform;
use techub_host::capability::cache::{CacheWrite, Priority};
use techub_host::config::{HostConfig, InvalidationRule};
use techub_tests::{PluginDir, config, init_tracing, services, wait_for};

const LIMIT: Duration = Duration::from_secs(20);

fn product_rule(on: &str) -> InvalidationRule {
    InvalidationRule {
        on: on.to_string(),
        domain: "products".to_string(),
        keys: vec!["{id}".to_string()],
        tags: vec!["vendor:{vendor.id}".to_string()],
        pattern: None,
    }
}

async fn fill(platform: &Platform, entries: &[(&str, &[&str])]) {
    for (key, tags) in entries {
        let write = CacheWrite {
            ttl: Duration::from_secs(600),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            priority: Priority::Medium,
        };
        platform
            .services
            .cache
            .backend
            .set_many("products", &[(key.to_string(), b"v".to_vec())], &write)
            .await
            .unwrap();
    }
}

async fn cached(platform: &Platform, key: &str) -> bool {
    platform
        .services
        .cache
        .backend
        .exists("products", key)
        .await
        .unwrap()
}

async fn applied(platform: &Platform, count: u64) {
    wait_for(LIMIT, &format!("{count} applied events"), || async {
        (platform.cache_events().counts().applied >= count).then_some(())
    })
    .await;
}

async fn publish(platform: &Platform, key: &str, event: serde_json::Value) -> String {
    platform
        .publish(key, event.to_string().into_bytes(), None)
        .await
        .unwrap()
}

async fn invalidation_events_work(platform: &Platform, mut config: HostConfig) {
    fill(
        platform,
        &[
            ("42", &[]),
            ("43", &["vendor:v-7"]),
            ("44", &["vendor:v-8"]),
        ],
    )
    .await;
    publish(
        platform,
        "product.updated",
        json!({"id": 42, "vendor": {"id": "v-7"}}),
    )
    .await;
    applied(platform, 1).await;
    assert!(!cached(platform, "42").await, "removed by key");
    assert!(!cached(platform, "43").await, "removed by tag");
    assert!(cached(platform, "44").await, "another vendor's entry stays");
    assert_eq!(platform.cache_events().counts().removed, 2);

    // A malformed event is dead-lettered with why; the consumer goes on.
    let bad = publish(platform, "product.updated", json!({"sku": 1})).await;
    let letter = dead_letter_of(platform, &bad).await;
    assert!(letter.reason.contains("no field id"), "{}", letter.reason);
    assert_eq!(letter.queue, platform.cache_events().queue());
    publish(
        platform,
        "product.updated",
        json!({"id": 44, "vendor": {"id": "none"}}),
    )
    .await;
    applied(platform, 2).await;
    assert!(!cached(platform, "44").await);

    // Rules follow host.toml: the old key unbound, the new one bound.
    config.cache.invalidate = vec![product_rule("product.deleted")];
    platform.reload_config(config).await.unwrap();
    fill(platform, &[("45", &[]), ("46", &[])]).await;
    publish(
        platform,
        "product.updated",
        json!({"id": 45, "vendor": {"id": "x"}}),
    )
    .await;
    publish(
        platform,
        "product.deleted",
        json!({"id": 46, "vendor": {"id": "x"}}),
    )
    .await;
    applied(platform, 3).await;
    assert!(!cached(platform, "46").await);
    assert!(
        cached(platform, "45").await,
        "a key no rule names any more invalidates nothing"
    );
    assert_eq!(platform.cache_events().counts().applied, 3);
    platform.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn events_invalidate_the_embedded_cache_by_rule() {
    init_tracing();
    let dir = PluginDir::with(&[]);
    let mut config = config(&dir);
    config.cache.invalidate = vec![product_rule("product.updated")];
    let platform = Platform::start(config.clone()).await.unwrap();
    invalidation_events_work(&platform, config).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn events_on_rabbitmq_invalidate_the_redis_cache_by_rule() {
    init_tracing();
    let dir = PluginDir::with(&[]);
    let mut config = on_services(&dir);
    config.cache.invalidate = vec![product_rule("product.updated")];
    let platform = Platform::start(config.clone())
        .await
        .unwrap_or_else(|e| panic!("{}", services::rabbitmq_hint(&e)));
    invalidation_events_work(&platform, config).await;
}

/// An event being applied when the host stops is finished and acked before the
/// shutdown returns (the consumer drains like a plugin's), not cut off half-way.
#[tokio::test(flavor = "multi_thread")]
async fn an_event_being_applied_at_shutdown_is_finished_first() {
    init_tracing();
    let dir = PluginDir::with(&[]);
    let mut config = on_services(&dir);
    config.cache.invalidate = vec![InvalidationRule {
        on: "product.purged".to_string(),
        domain: "products".to_string(),
        keys: vec![],
        tags: vec![],
        pattern: Some("p:*".to_string()),
    }];
    let platform = Platform::start(config.clone())
        .await
        .unwrap_or_else(|e| panic!("{}", services::rabbitmq_hint(&e)));
    // Enough entries that the pattern's scan takes a while.
    let write = CacheWrite {
        ttl: Duration::from_secs(600),
        tags: vec![],
        priority: Priority::Medium,
    };
    for batch in 0..40 {
        let entries: Vec<(String, Vec<u8>)> = (0..1000)
            .map(|i| (format!("p:{batch}:{i}"), b"v".to_vec()))
            .collect();
        platform
            .services
            .cache
            .backend
            .set_many("products", &entries, &write)
            .await
            .unwrap();
    }
    publish(&platform, "product.purged", json!({})).await;
    let events = platform.cache_events().clone();
    wait_for(LIMIT, "the event being applied", || async {
        (events.in_flight() == 1).then_some(())
    })
    .await;
    let stopping = std::time::Instant::now();
    platform.shutdown().await;
    eprintln!(
        "shutdown with the event in flight took {:?}",
        stopping.elapsed()
    );
    assert_eq!(
        events.counts().applied,
        1,
        "the shutdown returned before the event in flight was applied"
    );
    assert!(!cached(&platform, "p:39:999").await && !cached(&platform, "p:0:0").await);
}

#[test]
fn a_rule_for_an_undeclared_domain_or_with_a_broken_template_is_refused() {
    let error = HostConfig::parse(
        "[[cache.invalidate]]\non = \"product.updated\"\ndomain = \"nope\"\nkeys = [\"{id}\"]\n",
    )
    .unwrap_err()
    .to_string();
    assert!(
        error.contains("cache.invalidate[0].domain") && error.contains("not a declared"),
        "{error}"
    );
    let error = HostConfig::parse(
        "[[cache.invalidate]]\non = \"product.updated\"\ndomain = \"products\"\ntags = [\"product:{id\"]\n",
    )
    .unwrap_err()
    .to_string();
    assert!(
        error.contains("cache.invalidate[0]") && error.contains("without its"),
        "{error}"
    );
}
