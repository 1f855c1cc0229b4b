//! Operations: `/metrics` counters per outcome and their bounded labels, cluster-wide
//! cache statistics in Redis, the dashboard and alert rules against the exposition
//! (with `promtool`), and the status page in a real headless Chromium.

use crate::hostile::{hold_busy_lock, hostile_platform, provoke};
use std::sync::Arc;
use std::time::Duration;
use techub_host::Platform;
use techub_host::bindings::techub::platform::messaging::Priority;
use techub_host::capability::cache::{CacheStats, Window};
use techub_host::capability::messaging::now_ms;
use techub_host::metrics::{CacheEvent, Metrics};
use techub_tests::{
    PluginDir, init_tracing, publish_user, services, unique, user_notifications, wait_for,
};

const LIMIT: Duration = Duration::from_secs(30);

/// The value of the sample `name{labels...}` whose labels include every pair given.
pub(crate) fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|line| {
            let Some(rest) = line.strip_prefix(name) else {
                return false;
            };
            (rest.starts_with('{') || rest.starts_with(' '))
                && labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|line| line.rsplit(' ').next()?.parse().ok())
}

async fn send(platform: &Platform, action: &str, payload: &str) {
    platform
        .publish(
            &format!("fixture.hostile.{action}"),
            payload.as_bytes().to_vec(),
            Some(Priority::Normal),
        )
        .await
        .unwrap();
}

/// Waits until `/metrics` shows `name{labels}` at `at_least`; the exposition.
async fn metric_reaches(
    platform: &Platform,
    name: &str,
    labels: &[(&str, &str)],
    at_least: f64,
) -> String {
    wait_for(
        LIMIT,
        &format!("{name}{labels:?} >= {at_least}"),
        || async {
            let text = platform.services.metrics.encode();
            (sample(&text, name, labels).unwrap_or(0.0) >= at_least).then_some(text)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_count_every_outcome_of_a_hostile_plugin() {
    let (platform, _dir) = hostile_platform(|c| {
        let limits = &mut c.plugins.get_mut("hostile").unwrap().limits;
        limits.memory_mib = Some(16);
        limits.cpu_ms = Some(50);
        limits.timeout_ms = Some(300);
        limits.max_publishes = Some(5);
        limits.max_log_records_per_s = Some(10);
    })
    .await;
    hold_busy_lock(&platform).await;
    send(&platform, "ok", "").await;
    send(&platform, "retry", "").await;
    send(&platform, "escape", "").await; // answers with a reject
    send(&platform, "hold-lock", "").await; // panics: a trap
    send(&platform, "burn", "100000000000").await; // past 50 ms of CPU
    send(&platform, "wait-lock", "").await; // waits 500 ms: past the 300 ms timeout
    send(&platform, "allocate", "").await; // past 16 MiB
    send(&platform, "flood", "").await; // past 5 publishes
    send(&platform, "log-flood", "").await; // 1000 records at 10/s

    let hostile = ("plugin", "hostile");
    for (outcome, count) in [
        ("ok", 2.0), // `ok`, and `retry`'s second attempt
        ("retry", 1.0),
        ("reject", 2.0), // `escape` and `flood`
        ("trap", 2.0),   // each failure is retried once (max_retries = 1)
        ("cpu_limit", 2.0),
        ("timeout", 2.0),
        ("memory_limit", 2.0),
    ] {
        metric_reaches(
            &platform,
            "techub_invocations_total",
            &[hostile, ("outcome", outcome)],
            count,
        )
        .await;
    }
    let text = metric_reaches(
        &platform,
        "techub_log_records_dropped_total",
        &[hostile],
        900.0,
    )
    .await;
    for kind in ["cpu", "timeout", "memory", "publishes"] {
        assert!(
            sample(
                &text,
                "techub_quota_violations_total",
                &[hostile, ("kind", kind)]
            )
            .is_some_and(|n| n >= 1.0),
            "quota {kind}:\n{text}"
        );
    }
    let published = sample(
        &text,
        "techub_host_calls_total",
        &[hostile, ("interface", "messaging"), ("function", "publish")],
    );
    assert!(published.is_some_and(|n| n >= 6.0), "{published:?}\n{text}");
    let queue = [hostile, ("queue_type", "webhook")];
    assert!(sample(&text, "techub_queue_delivered_total", &queue).is_some_and(|n| n >= 14.0));
    assert!(sample(&text, "techub_queue_retried_total", &queue).is_some_and(|n| n >= 5.0));
    assert!(sample(&text, "techub_queue_dead_lettered_total", &queue).is_some_and(|n| n >= 6.0));
    assert!(sample(&text, "techub_queue_acked_total", &queue).is_some_and(|n| n >= 3.0));
    let peak = sample(&text, "techub_instance_memory_peak_bytes", &[hostile]).unwrap();
    assert!(
        (8.0 * 1024.0 * 1024.0..=16.0 * 1024.0 * 1024.0).contains(&peak),
        "the peak is what the allocate action reached below its 16 MiB: {peak}"
    );
    assert_eq!(
        sample(&text, "techub_plugin_loads_total", &[hostile]),
        Some(1.0)
    );
    let guest = sample(
        &text,
        "techub_invocation_seconds_count",
        &[hostile, ("part", "guest")],
    );
    assert!(guest.is_some_and(|n| n >= 14.0), "{guest:?}");
    assert_eq!(
        sample(&text, "techub_invocations_in_flight", &[hostile]),
        Some(0.0)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn metric_labels_stay_bounded_under_a_thousand_distinct_keys() {
    init_tracing();
    let (_dir, mut config) = user_notifications();
    config.host.metrics_poll_ms = 3_600_000;
    let platform = Platform::start(config).await.unwrap();
    let series = |text: &str| text.lines().filter(|l| !l.starts_with('#')).count();
    let mut ids = Vec::new();
    for i in 0..10 {
        ids.push(publish_user(&platform, &format!("warm-{i}")).await);
    }
    let text = metric_reaches(
        &platform,
        "techub_queue_acked_total",
        &[("plugin", "user-notifications")],
        10.0,
    )
    .await;
    let after_ten = series(&text);
    let users: Vec<String> = (0..1_000).map(|i| unique(&format!("user{i}"))).collect();
    for user in &users {
        ids.push(publish_user(&platform, user).await);
    }
    let text = metric_reaches(
        &platform,
        "techub_queue_acked_total",
        &[("plugin", "user-notifications")],
        1_010.0,
    )
    .await;
    assert_eq!(
        series(&text),
        after_ten,
        "a thousand more keys, routing keys and ids added no series"
    );
    for id in ids.iter().chain(&users) {
        assert!(!text.contains(id.as_str()), "{id} is a label value");
    }
    assert!(
        sample(&text, "techub_cache_sets_total", &[("domain", "users")])
            .is_some_and(|n| n >= 1_010.0)
    );
}

fn stats_on(
    redis: &techub_host::capability::redis_client::RedisClient,
    prefix: &str,
) -> CacheStats {
    CacheStats::on_redis(
        Arc::new(Metrics::new(true)),
        Duration::from_secs(3_600),
        redis.clone(),
        prefix,
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn cache_statistics_of_two_hosts_add_up_in_redis_and_survive_a_restart() {
    let redis = services::redis().await;
    let prefix = format!("{}:", unique("stats"));
    let domains = ["users".to_string()];
    let host_a = stats_on(&redis, &prefix);
    let host_b = stats_on(&redis, &prefix);
    host_a.record("users", CacheEvent::Hit, 3);
    host_a.record("users", CacheEvent::Miss, 1);
    host_b.record("users", CacheEvent::Hit, 2);
    host_b.record("orders", CacheEvent::Miss, 7);
    // Before a flush each host sees its own counts only.
    assert_eq!(host_b.sum(&domains, None).await.hits, 2);
    host_a.flush().await;
    host_b.flush().await;
    assert_eq!(host_b.sum(&domains, None).await.hits, 5, "both hosts' hits");
    assert_eq!(host_a.sum(&domains, None).await.misses, 1);

    // Host A restarts: nothing it flushed is lost.
    drop(host_a);
    let restarted = stats_on(&redis, &prefix);
    let users = restarted.sum(&domains, None).await;
    assert_eq!((users.hits, users.misses), (5, 1));
    let orders = restarted.sum(&["orders".to_string()], None).await;
    assert_eq!(orders.misses, 7);

    // Windows: the last minute holds it all; a window that ended 5 minutes ago, none.
    let recent = Some(Window {
        start_ms: now_ms() - 60_000,
        end_ms: None,
    });
    assert_eq!(restarted.sum(&domains, recent).await.hits, 5);
    let old = Some(Window {
        start_ms: now_ms() - 30 * 60_000,
        end_ms: Some(now_ms() - 5 * 60_000),
    });
    assert_eq!(restarted.sum(&domains, old).await.hits, 0);

    // Each bucket expires by itself after the retention (plus its minute).
    let mut conn = redis::Client::open("redis://127.0.0.1:6379")
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}cache-stats:*"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(keys.len(), 2, "one bucket per domain and minute: {keys:?}");
    for key in keys {
        let ttl: i64 = redis::cmd("TTL")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!((3_500..=3_660).contains(&ttl), "{key}: ttl {ttl}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn cache_writes_by_plugins_reach_the_statistics() {
    init_tracing();
    let (_dir, config) = user_notifications();
    let platform = Platform::start(config).await.unwrap();
    publish_user(&platform, "counted").await;
    wait_for(LIMIT, "the write counted", || async {
        let stats = platform
            .services
            .cache
            .stats
            .sum(&["users".to_string()], None)
            .await;
        (stats.sets == 1).then_some(())
    })
    .await;
}

/// A hostile-plugin host whose cache (and so its statistics) is on the shared Redis
/// under `key_prefix`.
async fn host_on_redis(key_prefix: &str) -> (Platform, PluginDir) {
    let key_prefix = key_prefix.to_string();
    hostile_platform(move |c| {
        c.backends.cache = techub_host::config::KvBackend::Redis;
        c.host.key_prefix = key_prefix;
        c.cache.stats_flush_ms = 50;
    })
    .await
}

/// Waits until `platform` reads `hits` hits of `users` over every host.
async fn users_hits_reach(platform: &Platform, hits: u64) {
    wait_for(LIMIT, &format!("{hits} hits of users"), || async {
        let stats = platform
            .services
            .cache
            .stats
            .sum(&["users".to_string()], None)
            .await;
        (stats.hits >= hits).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn plugins_see_cache_statistics_of_every_host_on_redis_across_a_restart() {
    let prefix = format!("{}:", unique("two-hosts"));
    let (host_a, _dir_a) = host_on_redis(&prefix).await;
    let (host_b, _dir_b) = host_on_redis(&prefix).await;
    // Each read is 2 hits and 1 miss; the plugin reports hits/misses of the last 10 min.
    assert_eq!(
        provoke(&host_a, "cache-reads").await,
        "rejected: 2/1",
        "its own, unflushed"
    );
    users_hits_reach(&host_b, 2).await; // A's counts reached Redis
    assert_eq!(
        provoke(&host_b, "cache-reads").await,
        "rejected: 4/2",
        "both hosts'"
    );

    // Host A stops (flushing what it counted) and starts again: nothing is lost.
    host_a.shutdown().await;
    drop(host_a);
    let (host_a, _dir_a2) = host_on_redis(&prefix).await;
    users_hits_reach(&host_a, 4).await;
    assert_eq!(provoke(&host_a, "cache-reads").await, "rejected: 6/3");
}
