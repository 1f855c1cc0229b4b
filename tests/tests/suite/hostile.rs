//! A hostile plugin against the host's limits: each misbehaviour gets a typed error or
//! a contained trap, and the host carries on.

use crate::e2e_embedded::dead_letter_of;
use std::time::Duration;
use techub_host::Platform;
use techub_host::bindings::techub::platform::messaging::Priority;
use techub_host::config::HostConfig;
use techub_tests::{PluginDir, config, grant, init_tracing};

pub(crate) async fn hostile_platform(
    adjust: impl FnOnce(&mut HostConfig),
) -> (Platform, PluginDir) {
    init_tracing();
    let dir = PluginDir::with(&[("hostile", "fixture_hostile")]);
    let mut config = config(&dir);
    grant(&mut config, "hostile", &["users"], &["fixture.sink.#"]);
    config.queues.get_mut("webhook").unwrap().max_retries = 1;
    adjust(&mut config);
    let platform = Platform::start(config).await.unwrap();
    assert_eq!(
        platform.plugins().await.len(),
        1,
        "load errors: {:?}",
        platform.load_errors().await
    );
    (platform, dir)
}

/// Takes the hostile plugin's lock `busy` for 30 s, as another holder would, so that
/// its `wait-lock` action waits ~500 ms in `acquire`.
pub(crate) async fn hold_busy_lock(platform: &Platform) {
    platform
        .services
        .locks
        .try_acquire(
            "techub:lock:hostile:busy",
            "techub:lock-fence:hostile",
            "other",
            Duration::from_secs(30),
        )
        .await
        .unwrap()
        .expect("the lock is free");
}

/// Sends the hostile plugin `action` and returns the reason its message died with.
pub(crate) async fn provoke(platform: &Platform, action: &str) -> String {
    let id = platform
        .publish(
            &format!("fixture.hostile.{action}"),
            b"{}".to_vec(),
            Some(Priority::Normal),
        )
        .await
        .unwrap();
    dead_letter_of(platform, &id).await.reason
}

#[tokio::test(flavor = "multi_thread")]
async fn allocating_past_the_memory_limit_traps_only_that_instance() {
    let (platform, _dir) = hostile_platform(|c| {
        c.plugins.get_mut("hostile").unwrap().limits.memory_mib = Some(16);
    })
    .await;
    let reason = provoke(&platform, "allocate").await;
    assert!(
        reason.contains("retries exhausted") && reason.contains("memory limit of 16 MiB exceeded"),
        "{reason}"
    );
    // The host is fine and the plugin serves the next message.
    let reason = provoke(&platform, "ungranted").await;
    assert!(reason.contains("UnknownDomain"), "{reason}");
}

#[tokio::test(flavor = "multi_thread")]
async fn flooding_publishes_hits_the_publish_quota() {
    let (platform, _dir) = hostile_platform(|c| {
        c.plugins.get_mut("hostile").unwrap().limits.max_publishes = Some(5);
    })
    .await;
    let reason = provoke(&platform, "flood").await;
    assert!(
        reason.contains("published 5 then quota exceeded"),
        "{reason}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_cannot_escape_the_namespace_and_oversize_keys_are_refused() {
    let (platform, _dir) = hostile_platform(|_| {}).await;
    // Another plugin's key, in the same backend.
    platform
        .services
        .store
        .set(
            "techub:store:other:secret",
            b"s",
            None,
            techub_host::capability::store::SetCondition::Always,
        )
        .await
        .unwrap();
    let reason = provoke(&platform, "escape").await;
    assert!(
        reason.starts_with("rejected: Ok(None),Ok(None),Ok(None),Err(InvalidKey"),
        "the other plugin's value is not read, by its raw key or a relative one: {reason}"
    );
    assert!(
        reason.ends_with("scan=Ok(0)"),
        "the scan sees only the plugin's own keys: {reason}"
    );
    let reason = provoke(&platform, "big-key").await;
    assert!(
        reason.contains("InvalidKey") && reason.contains("more than the limit of 512"),
        "{reason}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn ungranted_cache_domain_is_a_typed_error() {
    let (platform, _dir) = hostile_platform(|_| {}).await;
    let reason = provoke(&platform, "ungranted").await;
    assert_eq!(
        reason,
        "rejected: Err(UnknownDomain(\"pricing: add \\\"pricing\\\" to [plugins.hostile].cache_domains in host.toml\"))"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn chatty_output_is_capped_without_failing_the_message() {
    const CAP: u32 = 4096;
    let (platform, dir) = hostile_platform(|c| {
        c.plugins
            .get_mut("hostile")
            .unwrap()
            .limits
            .max_output_bytes = Some(CAP);
    })
    .await;
    let reason = provoke(&platform, "shout").await;
    assert_eq!(reason, "rejected: shouted");
    // One invocation, its report read directly: ~5 MB printed, the cap kept.
    let (runtime, plugin) =
        crate::limits::hostile_in_runtime(&dir, |l| l.max_output_bytes = CAP).await;
    let report = runtime
        .invoke(
            &plugin.pre,
            plugin.context.clone(),
            &crate::limits::delivery("shout", b"{}"),
            5,
        )
        .await;
    assert!(
        matches!(&report.result, Ok(techub_host::bindings::Outcome::Reject(r)) if r == "shouted"),
        "{:?}",
        report.result
    );
    assert_eq!(report.output.kept, CAP as usize, "kept up to the cap");
    assert!(
        report.output.dropped > 4_000_000,
        "the rest dropped: {:?}",
        report.output
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn lease_is_released_when_plugin_traps() {
    let (platform, _dir) = hostile_platform(|_| {}).await;
    let reason = provoke(&platform, "hold-lock").await;
    assert!(
        reason.contains("trapping while holding the lock (token Some("),
        "{reason}"
    );
    // The lease had a 60 s TTL; it is free now because the host released it.
    let fence = platform
        .services
        .locks
        .try_acquire(
            "techub:lock:hostile:held",
            "techub:lock-fence:hostile",
            "test",
            Duration::from_secs(1),
        )
        .await
        .unwrap();
    assert!(fence.is_some(), "the trapped instance's lease was released");
}

#[tokio::test(flavor = "multi_thread")]
async fn time_waiting_in_host_calls_is_not_charged_as_cpu() {
    let (platform, _dir) = hostile_platform(|c| {
        c.plugins.get_mut("hostile").unwrap().limits.cpu_ms = Some(50);
    })
    .await;
    // Someone else holds the lock, so the plugin waits ~500 ms in `acquire`.
    hold_busy_lock(&platform).await;
    let reason = provoke(&platform, "wait-lock").await;
    assert_eq!(
        reason, "rejected: Err(Contended)",
        "500 ms in the host is not 50 ms of CPU"
    );
}

/// `techub_invocations_total` of the hostile plugin with `outcome`.
fn invocations(platform: &Platform, outcome: &str) -> u64 {
    let text = platform.services.metrics.encode();
    let labels = [("plugin", "hostile"), ("outcome", outcome)];
    crate::operations::sample(&text, "techub_invocations_total", &labels).unwrap_or(0.0) as u64
}

/// When the hostile plugin's trap count reached each of `counts` (polled every 5 ms,
/// at most 30 s).
async fn times_of(platform: &Platform, counts: &[u64]) -> Vec<std::time::Instant> {
    let mut times = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    for &count in counts {
        while invocations(platform, "trap") < count {
            assert!(
                std::time::Instant::now() < deadline,
                "the hostile plugin did not reach {count} traps within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        times.push(std::time::Instant::now());
    }
    times
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plugin_that_keeps_breaking_its_limits_is_backed_off_and_loses_nothing() {
    use techub_host::dispatch::backoff::FIRST_PAUSE;
    let (platform, _dir) = hostile_platform(|c| {
        c.plugins.get_mut("hostile").unwrap().limits.prefetch = Some(1);
    })
    .await;
    // Three stack overflows, each retried once: six traps. The first three run at once;
    // from then on each waits a pause that doubles (100 ms, 200 ms, 400 ms).
    let mut ids = Vec::new();
    for _ in 0..3 {
        let key = "fixture.hostile.stack";
        ids.push(platform.publish(key, b"{}".to_vec(), None).await.unwrap());
    }
    let after = techub_host::config::Limits::default().backoff_after_violations as u64;
    let at = times_of(&platform, &[after, after + 1, after + 2, after + 3]).await;
    // A slower machine only makes the gaps longer; without the back-off they are the
    // time of one trap (a few ms).
    for (i, gap) in at.windows(2).map(|w| w[1] - w[0]).enumerate() {
        let pause = FIRST_PAUSE * (1 << i);
        assert!(
            gap >= pause - Duration::from_millis(20),
            "trap {} came {gap:?} after the one before; the back-off asks for {pause:?}",
            after + 1 + i as u64
        );
    }
    // Nothing is lost: every one is dead-lettered after its retry, and a clean message
    // is still handled (and ends the back-off).
    for id in &ids {
        let reason = dead_letter_of(&platform, id).await.reason;
        assert!(reason.contains("retries exhausted"), "{reason}");
    }
    let reason = provoke(&platform, "ungranted").await;
    assert!(reason.contains("UnknownDomain"), "{reason}");
    // Recovered: ten clean messages run one after another without pauses. Still backed
    // off, each would wait 800 ms (six violations in a row: 100 ms doubled three times),
    // 8 s in all; unpaused they take milliseconds each, so 4 s is a wide margin.
    let started = std::time::Instant::now();
    for _ in 0..10 {
        let reason = provoke(&platform, "ungranted").await;
        assert!(reason.contains("UnknownDomain"), "{reason}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "ten clean messages took {:?}: the back-off did not end",
        started.elapsed()
    );
}
