//! `[schedules.<name>]`: the host publishes on the clock, once per tick across hosts,
//! catches up the tick it missed while down, and follows `host.toml` reloads.

use crate::e2e_services::on_services;
use std::collections::BTreeMap;
use std::time::Duration;
use techub_host::Platform;
use techub_host::capability::messaging::Consumer;
use techub_host::config::{HostConfig, ScheduleConfig};
use techub_tests::{PluginDir, config, init_tracing, services, sink, unique};

fn every_second(routing_key: &str) -> ScheduleConfig {
    ScheduleConfig {
        every: Some("1s".into()),
        routing_key: routing_key.into(),
        payload: Some(toml::Value::Table(
            [("job".to_string(), toml::Value::String("sync".into()))]
                .into_iter()
                .collect(),
        )),
        ..ScheduleConfig::default()
    }
}

async fn start(config: HostConfig) -> Platform {
    Platform::start(config)
        .await
        .unwrap_or_else(|e| panic!("{}", services::rabbitmq_hint(&e)))
}

/// What arrives on `consumer` within `window`: (message id, `scheduled-for` header,
/// published at ms).
async fn collect(consumer: &mut Box<dyn Consumer>, window: Duration) -> Vec<(String, String, u64)> {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + window;
    while let Ok(Some(delivery)) = tokio::time::timeout_at(deadline, consumer.next()).await {
        let envelope = delivery.envelope();
        let header = |name: &str| {
            envelope
                .headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        seen.push((
            envelope.id.clone(),
            header("scheduled-for"),
            envelope.published_at_ms,
        ));
        let _ = delivery.ack().await;
    }
    seen
}

/// The tick of a message id `schedule:<name>:<ms>`.
fn tick_ms(id: &str) -> i64 {
    id.rsplit(':').next().unwrap().parse().unwrap()
}

/// Two hosts of one deployment on Redis and RabbitMQ, one `every = "1s"` schedule:
/// each tick is published once, by one of them, with consecutive ticks and the tick's
/// time in a header.
#[tokio::test(flavor = "multi_thread")]
async fn each_tick_is_published_once_across_two_hosts() {
    init_tracing();
    let key = format!("{}.tick", unique("schedule"));
    let dir_a = PluginDir::with(&[]);
    let dir_b = PluginDir::with(&[]);
    let mut config_a = on_services(&dir_a);
    config_a.schedules = BTreeMap::from([("sync".to_string(), every_second(&key))]);
    let mut config_b = config_a.clone();
    config_b.host.plugins_dir = dir_b.path().to_path_buf();
    config_b.host.cache_dir = dir_b.path().join(".cache");
    let host_a = start(config_a).await;
    let mut ticks = sink(&host_a, &[&key]).await;
    let host_b = start(config_b).await;
    let seen = collect(&mut ticks, Duration::from_millis(4_500)).await;
    assert!(seen.len() >= 3, "{seen:?}");
    let mut ids: Vec<i64> = seen.iter().map(|(id, _, _)| tick_ms(id)).collect();
    let count = ids.len();
    ids.dedup();
    assert_eq!(ids.len(), count, "a tick was published twice: {seen:?}");
    for pair in ids.windows(2) {
        assert_eq!(pair[1] - pair[0], 1000, "a tick was missed: {seen:?}");
    }
    let mut lags = Vec::new();
    for (id, scheduled_for, published_at) in &seen {
        let tick = tick_ms(id);
        assert_eq!(tick % 1000, 0);
        let header = chrono_like(scheduled_for);
        assert_eq!(header, tick, "the header says when: {scheduled_for}");
        lags.push(*published_at as i64 - tick);
    }
    lags.sort();
    println!(
        "schedule tick lag across two hosts (publish time - tick), ms: min {} p50 {} max {}",
        lags[0],
        lags[lags.len() / 2],
        lags[lags.len() - 1]
    );
    host_a.shutdown().await;
    host_b.shutdown().await;
}

/// `2026-12-03T10:00:01+00:00` → ms since the epoch.
fn chrono_like(text: &str) -> i64 {
    humantime::parse_rfc3339(&text.replace("+00:00", "Z"))
        .unwrap_or_else(|e| panic!("{text}: {e}"))
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// A host that was down for ticks publishes, when it starts, the most recent tick it
/// missed (once), not every one, and goes on from there.
#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_host_publishes_the_tick_it_missed_once() {
    init_tracing();
    let key = format!("{}.tick", unique("schedule"));
    let dir = PluginDir::with(&[]);
    let mut config = on_services(&dir);
    config.schedules = BTreeMap::from([("sync".to_string(), every_second(&key))]);
    // The sink lives on a host of the deployment without schedules, which stays up.
    let watch_dir = PluginDir::with(&[]);
    let mut watcher = config.clone();
    watcher.schedules.clear();
    watcher.host.plugins_dir = watch_dir.path().to_path_buf();
    watcher.host.cache_dir = watch_dir.path().join(".cache");
    let watcher = start(watcher).await;
    let mut ticks = sink(&watcher, &[&key]).await;
    let first = start(config.clone()).await;
    let before = collect(&mut ticks, Duration::from_millis(1_600)).await;
    assert!(!before.is_empty(), "no tick before the stop");
    let last_before = tick_ms(&before.last().unwrap().0);
    first.shutdown().await;
    // Down for more than two ticks.
    tokio::time::sleep(Duration::from_millis(2_600)).await;
    let starting = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let second = start(config).await;
    // The scheduler looks at the clock somewhere inside `start`, so the tick it catches
    // up is the last one due at a moment between these two readings.
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let after = collect(&mut ticks, Duration::from_millis(500)).await;
    let caught_up: Vec<i64> = after.iter().map(|(id, _, _)| tick_ms(id)).collect();
    assert!(!caught_up.is_empty(), "nothing published after the start");
    let missed = caught_up[0];
    assert!(
        missed <= started && missed > starting - 1000,
        "the first tick published is the last one due while the host started \
         ({starting}..{started}), caught up: {caught_up:?}"
    );
    assert!(
        missed >= last_before + 2000,
        "the catch-up is the most recent missed tick, not an older one: last before {last_before}, then {caught_up:?}"
    );
    assert!(
        !caught_up.contains(&(last_before + 1000)),
        "an older missed tick was published too: {caught_up:?}"
    );
    let mut all = caught_up.clone();
    all.dedup();
    assert_eq!(all.len(), caught_up.len(), "{caught_up:?}");
    second.shutdown().await;
    watcher.shutdown().await;
}

/// Schedules follow `host.toml`: one added by a reload starts ticking, and stops when a
/// reload removes it.
#[tokio::test(flavor = "multi_thread")]
async fn a_schedule_added_by_a_reload_ticks_and_stops_when_removed() {
    init_tracing();
    let key = format!("{}.tick", unique("schedule"));
    let dir = PluginDir::with(&[]);
    let platform = Platform::start(config(&dir)).await.unwrap();
    let mut ticks = sink(&platform, &[&key]).await;
    assert!(
        collect(&mut ticks, Duration::from_millis(1_200))
            .await
            .is_empty()
    );
    let mut with = config(&dir);
    with.schedules = BTreeMap::from([("sync".to_string(), every_second(&key))]);
    platform.reload_config(with).await.unwrap();
    // The scheduler sees a reload within a second; then a tick each second.
    let seen = collect(&mut ticks, Duration::from_millis(3_600)).await;
    assert!(seen.len() >= 2, "{seen:?}");
    platform.reload_config(config(&dir)).await.unwrap();
    // A tick in flight at the reload may still land; none after that.
    collect(&mut ticks, Duration::from_millis(1_100)).await;
    assert!(
        collect(&mut ticks, Duration::from_millis(2_100))
            .await
            .is_empty(),
        "a removed schedule kept ticking"
    );
}
