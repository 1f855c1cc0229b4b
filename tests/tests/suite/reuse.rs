//! `limits.reuse_instance`: a fresh instance per message by default; with reuse, the
//! instance that answered handles the consumer's next deliveries, up to the limit,
//! never after a failure, never under another configuration, and gives its pool slot
//! back when deliveries stop. The hostile fixture's `instance-count` answers with how
//! many messages its instance has handled.

use crate::e2e_embedded::dead_letter_of;
use crate::hostile::hostile_platform;
use crate::limits::{delivery, hostile_in_runtime};
use std::time::Duration;
use techub_host::Platform;
use techub_host::bindings::Outcome;
use techub_host::bindings::techub::platform::messaging::Priority;
use techub_host::runtime::{InvocationReport, Teardown};
use techub_tests::{PluginDir, wait_for};

fn answer(report: &InvocationReport) -> String {
    match &report.result {
        Ok(Outcome::Reject(answer)) => answer.clone(),
        other => panic!("expected the fixture's answer, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_instance_handed_back_handles_the_next_message_until_it_has_served_its_count() {
    let dir = PluginDir::with(&[("hostile", "fixture_hostile")]);
    let (runtime, plugin) = hostile_in_runtime(&dir, |_| {}).await;
    let message = delivery("instance-count", b"{}");
    let mut kept: Option<Teardown> = None;
    let mut seen = Vec::new();
    for _ in 0..4 {
        let (report, instance) = runtime
            .invoke_held(
                &plugin.pre,
                plugin.context.clone(),
                &message,
                5,
                kept.take(),
            )
            .await;
        seen.push(answer(&report));
        kept = instance.reusable(3).then_some(instance);
    }
    assert_eq!(seen, ["handled=1", "handled=2", "handled=3", "handled=1"]);
    let (total, free) = runtime.pool_slots();
    assert_eq!(free, total - 1, "the kept instance holds its slot");
    drop(kept);
    assert_eq!(runtime.pool_slots().1, total);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_instance_that_trapped_or_ran_under_another_configuration_is_not_entered() {
    let dir = PluginDir::with(&[("hostile", "fixture_hostile")]);
    let (runtime, plugin) = hostile_in_runtime(&dir, |_| {}).await;
    let count = delivery("instance-count", b"{}");
    let (_, instance) = runtime
        .invoke_held(&plugin.pre, plugin.context.clone(), &count, 5, None)
        .await;
    let (report, trapped) = runtime
        .invoke_held(
            &plugin.pre,
            plugin.context.clone(),
            &delivery("stack", b"{}"),
            5,
            Some(instance),
        )
        .await;
    assert!(report.result.is_err(), "{:?}", report.result);
    assert!(!trapped.reusable(100), "a trapped instance is not reusable");
    // Handed back anyway, it is torn down and a fresh one answers.
    let (report, instance) = runtime
        .invoke_held(
            &plugin.pre,
            plugin.context.clone(),
            &count,
            5,
            Some(trapped),
        )
        .await;
    assert_eq!(answer(&report), "handled=1");
    // Another context (a reload builds one, with its own limits and grants).
    let services = techub_host::services::connect(&plugin.config)
        .await
        .unwrap();
    let other = std::sync::Arc::new(services.context("hostile", &plugin.config));
    let (report, _) = runtime
        .invoke_held(&plugin.pre, other, &count, 5, Some(instance))
        .await;
    assert_eq!(answer(&report), "handled=1");
}

fn reusing(times: u32) -> impl FnOnce(&mut techub_host::config::HostConfig) {
    move |config| {
        let limits = &mut config.plugins.get_mut("hostile").unwrap().limits;
        limits.reuse_instance = Some(times);
        // One delivery at a time, so that the counts come in order.
        limits.prefetch = Some(1);
    }
}

/// What `instance-count` answered for `count` messages published at once.
async fn burst(platform: &Platform, count: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for _ in 0..count {
        let id = platform
            .publish(
                "fixture.hostile.instance-count",
                b"{}".to_vec(),
                Some(Priority::Normal),
            )
            .await
            .unwrap();
        ids.push(id);
    }
    let mut seen = Vec::new();
    for id in ids {
        let reason = dead_letter_of(platform, &id).await.reason;
        seen.push(reason.trim_start_matches("rejected: ").to_string());
    }
    seen
}

#[tokio::test(flavor = "multi_thread")]
async fn every_message_gets_a_fresh_instance_by_default() {
    let (platform, _dir) = hostile_platform(|c| {
        c.plugins.get_mut("hostile").unwrap().limits.prefetch = Some(1);
    })
    .await;
    assert_eq!(burst(&platform, 4).await, ["handled=1"; 4]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_consumer_reuses_its_instance_up_to_reuse_instance_messages() {
    let (platform, _dir) = hostile_platform(reusing(3)).await;
    assert_eq!(
        burst(&platform, 7).await,
        [
            "handled=1",
            "handled=2",
            "handled=3",
            "handled=1",
            "handled=2",
            "handled=3",
            "handled=1"
        ]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn kept_instances_give_their_pool_slots_back_when_deliveries_stop() {
    let (platform, _dir) = hostile_platform(reusing(100)).await;
    assert_eq!(burst(&platform, 2).await, ["handled=1", "handled=2"]);
    let total = platform.runtime.pool_slots().0;
    wait_for(
        Duration::from_secs(10),
        "the kept instance's slot",
        || async { (platform.runtime.pool_slots().1 == total).then_some(()) },
    )
    .await;
    assert_eq!(burst(&platform, 1).await, ["handled=1"]);
}

/// One pool slot; `keeper` (the versioned fixture) keeps its instance for 100 messages
/// and, idle, for 10 minutes; `other` (the no-op fixture) needs the slot.
async fn one_slot_and_a_keeper() -> (Platform, PluginDir) {
    techub_tests::init_tracing();
    let dir = PluginDir::with(&[
        ("keeper", "fixture_versioned_v1"),
        ("other", "fixture_noop"),
    ]);
    let mut config = techub_tests::config(&dir);
    config.host.max_instances = 1;
    let limits = &mut config.plugins.get_mut("keeper").unwrap().limits;
    limits.reuse_instance = Some(100);
    limits.reuse_idle_ms = Some(600_000);
    limits.prefetch = Some(1);
    let platform = Platform::start(config).await.unwrap();
    (platform, dir)
}

async fn completed(platform: &Platform, id: &str, what: &str) {
    wait_for(Duration::from_secs(20), what, || async {
        (platform.services.messaging.tracker.get(id)
            == Some(techub_host::capability::messaging::MessageStatus::Completed))
        .then_some(())
    })
    .await;
}

/// An idle kept instance gives its slot to an invocation that starts waiting for one,
/// at once, not after `reuse_idle_ms` (10 minutes here).
#[tokio::test(flavor = "multi_thread")]
async fn an_idle_kept_instance_hands_its_slot_to_a_waiting_invocation() {
    let (platform, _dir) = one_slot_and_a_keeper().await;
    let kept = platform
        .publish("fixture.versioned.main", b"x".to_vec(), None)
        .await
        .unwrap();
    completed(&platform, &kept, "the keeper's message").await;
    wait_for(
        Duration::from_secs(10),
        "the keeper to hold the slot",
        || async { (platform.runtime.pool_slots().1 == 0).then_some(()) },
    )
    .await;
    let other = platform
        .publish("fixture.noop.x", b"x".to_vec(), None)
        .await
        .unwrap();
    completed(
        &platform,
        &other,
        "the other plugin's message, with the keeper's slot",
    )
    .await;
}

/// An instance that answers while another invocation waits for a slot is not kept:
/// its slot goes to the waiter (which started waiting while the instance was busy, so
/// no idle keeper was there to be told).
#[tokio::test(flavor = "multi_thread")]
async fn an_instance_answering_while_a_slot_is_wanted_is_not_kept() {
    let (platform, _dir) = one_slot_and_a_keeper().await;
    let busy = platform
        .publish("fixture.versioned.main", b"sleep:1500".to_vec(), None)
        .await
        .unwrap();
    wait_for(
        Duration::from_secs(10),
        "the keeper to be busy in the slot",
        || async {
            let processing = platform.services.messaging.tracker.get(&busy)
                == Some(techub_host::capability::messaging::MessageStatus::Processing);
            (processing && platform.runtime.pool_slots().1 == 0).then_some(())
        },
    )
    .await;
    let other = platform
        .publish("fixture.noop.x", b"x".to_vec(), None)
        .await
        .unwrap();
    completed(&platform, &busy, "the keeper's message").await;
    completed(
        &platform,
        &other,
        "the other plugin's message, with the keeper's slot",
    )
    .await;
}
