//! The store's sorted sets and compare-and-swap, used by real plugins: typed errors at
//! the guest boundary, and lock-free increments that add up exactly across two hosts.

use crate::e2e_embedded::dead_letter_of;
use crate::hostile::{hostile_platform, provoke};
use techub_host::bindings::techub::platform::messaging::Priority;
use techub_host::config::KvBackend;
use techub_tests::{services, unique};

#[tokio::test(flavor = "multi_thread")]
async fn plugins_get_typed_errors_and_ordered_members_from_sorted_sets() {
    let (platform, _dir) = hostile_platform(|_| {}).await;
    let reason = provoke(&platform, "sorted").await;
    assert!(
        reason.contains("nan=Err(InvalidArgument(\"a score must not be NaN\"))"),
        "{reason}"
    );
    assert!(
        reason.contains("count=Err(InvalidArgument(\"count must be 1 to 1000\"))"),
        "{reason}"
    );
    assert!(reason.contains("top=[\"ada\", \"cy\"]"), "{reason}");
}

#[tokio::test(flavor = "multi_thread")]
async fn compare_and_swap_increments_add_up_exactly_across_two_hosts() {
    const PER_HOST: usize = 10;
    let prefix = format!("{}:", unique("cas"));
    let on_redis = |prefix: String| {
        move |c: &mut techub_host::HostConfig| {
            c.backends.store = KvBackend::Redis;
            c.host.key_prefix = prefix;
            c.plugins.get_mut("hostile").unwrap().limits.prefetch = Some(PER_HOST as u16);
        }
    };
    let (host_a, _dir_a) = hostile_platform(on_redis(prefix.clone())).await;
    let (host_b, _dir_b) = hostile_platform(on_redis(prefix.clone())).await;
    let mut sent = Vec::new();
    for _ in 0..PER_HOST {
        for host in [&host_a, &host_b] {
            let id = host
                .publish(
                    "fixture.hostile.cas-incr",
                    b"{}".to_vec(),
                    Some(Priority::Normal),
                )
                .await
                .unwrap();
            sent.push((host, id));
        }
    }
    let mut lost = 0;
    for (host, id) in &sent {
        let reason = dead_letter_of(host, id).await.reason;
        let n: u32 = reason
            .strip_prefix("rejected: lost ")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("an increment failed: {reason}"));
        lost += n;
    }
    let redis = services::redis().await;
    let key = format!("{prefix}store:hostile:counter");
    let value: Option<String> = redis
        .run(
            "GET",
            techub_host::capability::redis_client::Retry::Idempotent,
            |mut c| {
                let key = key.clone();
                async move { redis::cmd("GET").arg(&key).query_async(&mut c).await }
            },
        )
        .await
        .unwrap();
    assert_eq!(
        value.as_deref(),
        Some("20"),
        "twenty increments, none lost ({lost} swaps lost a race and were retried)"
    );
    eprintln!("compare-and-swap: {lost} swaps lost a race and were retried");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plugin_batches_a_hundred_operations_and_oversized_batches_are_refused_whole() {
    let (platform, _dir) = hostile_platform(|_| {}).await;
    let id = platform
        .publish("fixture.hostile.store-batch", b"atomic".to_vec(), None)
        .await
        .unwrap();
    let reason = dead_letter_of(&platform, &id).await.reason;
    assert!(reason.contains("done=Ok(100)"), "{reason}");
    assert!(
        reason.contains("too_many=Err(InvalidArgument(\"more than 100 operations in one batch\"))"),
        "{reason}"
    );
    assert!(
        reason.contains("nan=Err(InvalidArgument(\"a score must not be NaN\"))"),
        "{reason}"
    );
    let counted = platform
        .services
        .store
        .get("techub:store:hostile:batch:99")
        .await
        .unwrap();
    assert_eq!(counted, Some(b"1".to_vec()));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plugin_invalidates_keys_a_tag_and_a_pattern_in_one_call() {
    let (platform, _dir) = hostile_platform(|_| {}).await;
    let id = platform
        .publish("fixture.hostile.cache-invalidate", b"{}".to_vec(), None)
        .await
        .unwrap();
    let reason = dead_letter_of(&platform, &id).await.reason;
    assert!(reason.contains("removed=3 "), "{reason}");
    assert!(
        reason.contains("too_many=Err(TooManyKeys(1000))"),
        "{reason}"
    );
    assert!(reason.contains("bad=Err(InvalidArgument("), "{reason}");
    assert!(reason.contains("kept=true"), "{reason}");
}
