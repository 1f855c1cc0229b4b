//! `neighbours`: a well-behaved plugin's messages/s alone, and again while hostile
//! plugins in the same host misbehave without pause: an infinite loop (`spin`), a
//! memory bomb, a stack overflow, a trap storm (`trap`), a publish flood, a cache
//! flood and lock hoarding (`hostile`). Alternating rounds ([`harness::Rounds`]);
//! the goal is ≥ 0.9× of solo. Also the host's peak RSS and every violation, per plugin and kind,
//! from the host's own metrics.

use super::all_completed;
use super::harness::Count;
use super::harness::{self, Rounds};
use super::start::rss_kib;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use techub_host::Platform;
use techub_tests::{PluginDir, config, grant, unique};

static MESSAGES: Count<usize> = Count::new(10_000, 208);
static ROUNDS: Count<usize> = Count::new(5, 1);
/// Each misbehaviour: its name in the report, and the routing key that feeds it (the
/// `hostile` fixture's last word picks one; `spin` and `trap` do one thing each).
const HOSTILE: [(&str, &str); 7] = [
    ("infinite loop", "fixture.spin.go"),
    ("memory bomb", "fixture.hostile.allocate"),
    ("stack overflow", "fixture.hostile.stack"),
    ("trap storm", "fixture.trap.go"),
    ("publish flood", "fixture.hostile.flood"),
    ("cache flood", "fixture.hostile.cache-until-error"),
    ("lock hoarding", "fixture.hostile.leases"),
];

fn host_config(dir: &PluginDir) -> techub_host::config::HostConfig {
    let mut config = config(dir);
    grant(
        &mut config,
        "user-notifications",
        &["users"],
        &["notification.*"],
    );
    grant(&mut config, "hostile", &["users"], &["fixture.sink.*"]);
    grant(&mut config, "spin", &[], &[]);
    grant(&mut config, "trap", &[], &[]);
    for plugin in ["hostile", "spin", "trap"] {
        let limits = &mut config.plugins.get_mut(plugin).unwrap().limits;
        limits.cpu_ms = Some(50);
        limits.memory_mib = Some(32);
    }
    config
}

/// Messages/s of the good plugin over `MESSAGES` user.created events.
async fn good_rate(platform: &Platform) -> anyhow::Result<f64> {
    let mut ids = Vec::with_capacity(*MESSAGES);
    let started = Instant::now();
    for i in 0..*MESSAGES {
        let user = serde_json::json!({ "id": format!("u{i}"), "email": "a@b.c", "name": "A" });
        ids.push(
            platform
                .publish("user.created", user.to_string().into_bytes(), None)
                .await?,
        );
    }
    all_completed(platform, &ids, started).await?;
    Ok(*MESSAGES as f64 / started.elapsed().as_secs_f64())
}

/// Keeps the hostile plugins busy until `stop`: a batch of the misbehaviours `keys`
/// every 20 ms (their retries and dead letters add to it).
fn feed_hostile(
    platform: Arc<Platform>,
    stop: Arc<AtomicBool>,
    keys: Vec<&'static str>,
) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let mut sent = 0;
        while !stop.load(Ordering::Relaxed) {
            for key in &keys {
                sent += u64::from(platform.publish(key, b"{}".to_vec(), None).await.is_ok());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        sent
    })
}

/// The good plugin alone and beside the misbehaviours `keys`, in alternating rounds;
/// and how many hostile messages were fed.
async fn alone_and_crowded(
    platform: &Arc<Platform>,
    keys: &[&'static str],
) -> anyhow::Result<(Rounds, u64)> {
    let good = async || {
        harness::sample(async {
            good_rate(platform).await?;
            Ok(*MESSAGES as u64)
        })
        .await
    };
    let mut hostile_sent = 0;
    let rounds = Rounds::alternate(&["alone", "crowded"], *ROUNDS, async |side| {
        if side == 0 {
            return good().await;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let feeder = feed_hostile(platform.clone(), stop.clone(), keys.to_vec());
        tokio::time::sleep(Duration::from_millis(500)).await; // let them get going
        let sample = good().await;
        stop.store(true, Ordering::Relaxed);
        hostile_sent += feeder.await?;
        sample
    })
    .await?;
    Ok((rounds, hostile_sent))
}

/// `techub_invocations_total` and `techub_quota_violations_total` samples of the
/// hostile plugins that were not `ok`, summed by their labels.
fn violations(platform: &Platform) -> BTreeMap<String, u64> {
    let text = platform.services.metrics.encode();
    let mut found = BTreeMap::new();
    for line in text.lines() {
        let counted = line.starts_with("techub_invocations_total{")
            || line.starts_with("techub_quota_violations_total{");
        if !counted || line.contains("outcome=\"ok\"") || line.contains("user-notifications") {
            continue;
        }
        if let Some((labels, value)) = line.rsplit_once(' ')
            && let Ok(value) = value.parse::<f64>()
            && value > 0.0
        {
            *found.entry(labels.to_string()).or_default() += value as u64;
        }
    }
    found
}

pub async fn neighbours() -> anyhow::Result<()> {
    let dir = PluginDir::with(&[
        ("user-notifications", "user_notifications"),
        ("hostile", "fixture_hostile"),
        ("spin", "fixture_spin"),
        ("trap", "fixture_trap"),
    ]);
    let mut config = host_config(&dir);
    config.host.key_prefix = format!("{}:", unique("techub-bench"));
    let platform = Arc::new(Platform::start(config).await?);
    let peak = Arc::new(AtomicU64::new(rss_kib()));
    let sampler = {
        let peak = peak.clone();
        tokio::spawn(async move {
            loop {
                peak.fetch_max(rss_kib(), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let start_rss = rss_kib();
    good_rate(&platform).await?; // warm-up
    let all: Vec<&str> = HOSTILE.iter().map(|(_, key)| *key).collect();
    let (rounds, hostile_sent) = alone_and_crowded(&platform, &all).await?;
    rounds.report(
        &format!(
            "neighbours: user-notifications x{MESSAGES} on the embedded backends, alone and beside every hostile plugin ({hostile_sent} hostile messages fed; goal crowded/alone >= 0.9)"
        ),
        "msg",
        &[(1, 0)],
    );
    for (kind, key) in HOSTILE {
        let (rounds, sent) = alone_and_crowded(&platform, &[key]).await?;
        println!(
            "  beside {kind:<15} alone {:>6.0} msg/s, crowded {:>6.0} msg/s; crowded/alone = {:.3} (median of per-round ratios; {sent} fed)",
            rounds.rate(0),
            rounds.rate(1),
            rounds.ratio(1, 0)
        );
    }
    sampler.abort();
    println!(
        "  host RSS: {} MiB at start, peak {} MiB",
        start_rss / 1024,
        peak.load(Ordering::Relaxed) / 1024
    );
    for (labels, count) in violations(&platform) {
        println!("  {labels} {count}");
    }
    platform.shutdown().await;
    Ok(())
}
