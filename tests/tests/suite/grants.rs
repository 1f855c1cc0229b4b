//! What a plugin may reach is what `host.toml` grants it: routing keys to bind, routing
//! keys to publish to, and the statuses of its own messages only.

use crate::e2e_embedded::dead_letter_of;
use crate::hostile::{hostile_platform, provoke};
use techub_host::Platform;
use techub_host::bindings::techub::platform::messaging::Priority;
use techub_host::capability::messaging::MessageStatus;
use techub_tests::{PluginDir, init_tracing};

#[tokio::test(flavor = "multi_thread")]
async fn a_subscription_outside_the_subscribe_grant_is_refused_by_name() {
    init_tracing();
    // The priority fixture binds fixture.priority.payment, .analytics and .block.
    let dir = PluginDir::with(&[("payments-reader", "fixture_priority")]);
    let mut config = techub_tests::config(&dir);
    config.plugins.get_mut("payments-reader").unwrap().subscribe = vec![
        "fixture.priority.analytics".into(),
        "fixture.priority.block".into(),
    ];
    let platform = Platform::start(config).await.unwrap();
    assert!(platform.plugins().await.is_empty(), "refused, not loaded");
    let error = platform.load_errors().await[0].to_string();
    assert!(
        error.contains("payments-reader.wasm")
            && error.contains("\"fixture.priority.payment\"")
            && error.contains("[plugins.payments-reader].subscribe"),
        "{error}"
    );

    // A plugin with no grant at all binds nothing.
    let dir = PluginDir::with(&[("noop", "fixture_noop")]);
    let mut config = techub_tests::config(&dir);
    config.plugins.clear();
    let platform = Platform::start(config).await.unwrap();
    assert!(platform.plugins().await.is_empty());
    assert!(
        platform.load_errors().await[0]
            .to_string()
            .contains("subscribe"),
        "{}",
        platform.load_errors().await[0]
    );

    // A pattern grant covering every binding loads it.
    let dir = PluginDir::with(&[("payments-reader", "fixture_priority")]);
    let mut config = techub_tests::config(&dir);
    config.plugins.get_mut("payments-reader").unwrap().subscribe =
        vec!["fixture.priority.*".into()];
    let platform = Platform::start(config).await.unwrap();
    assert_eq!(
        platform.plugins().await.len(),
        1,
        "{:?}",
        platform.load_errors().await
    );
}

/// A declared publish (`#[handler(.., publishes = [..])]`) outside the publish grant
/// refuses the plugin at load, by name, before any message could run half its effects;
/// a reload that grants it takes the plugin.
#[tokio::test(flavor = "multi_thread")]
async fn a_declared_publish_outside_the_publish_grant_refuses_the_plugin_at_load() {
    init_tracing();
    let (dir, mut config) = techub_tests::user_notifications();
    config
        .plugins
        .get_mut("user-notifications")
        .unwrap()
        .publish = vec!["audit.*".into()];
    let platform = Platform::start(config.clone()).await.unwrap();
    assert!(platform.plugins().await.is_empty(), "refused, not loaded");
    let error = platform.load_errors().await[0].to_string();
    assert!(
        error.contains("user-notifications.wasm")
            && error.contains("declares it publishes \"notification.email\"")
            && error.contains("[plugins.user-notifications].publish"),
        "{error}"
    );
    config
        .plugins
        .get_mut("user-notifications")
        .unwrap()
        .publish = vec!["notification.*".into()];
    platform.reload_config(config).await.unwrap();
    assert_eq!(
        platform.plugins().await.len(),
        1,
        "{:?}",
        platform.load_errors().await
    );
    drop(dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn publishing_outside_the_publish_grant_is_not_permitted() {
    let (platform, _dir) = hostile_platform(|_| {}).await;
    let reason = provoke(&platform, "publish-ungranted").await;
    assert!(
        reason.contains("NotPermitted") && reason.contains("payment.captured"),
        "{reason}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plugin_can_neither_read_nor_reset_the_status_of_another_message() {
    let (platform, _dir) = hostile_platform(|_| {}).await;
    // Someone else's message, handled to completion by nobody: the operator's, with a
    // known status.
    let theirs = platform
        .publish("nobody.listens", b"x".to_vec(), Some(Priority::Normal))
        .await
        .unwrap();
    let before = platform.services.messaging.tracker.get(&theirs);
    assert_eq!(before, Some(MessageStatus::Pending));
    // Mark it completed in some queue, as a consumer would have.
    platform.services.messaging.tracker.delivered(
        &theirs,
        &"somewhere".into(),
        &"someone".into(),
        MessageStatus::Completed,
    );

    let id = platform
        .publish(
            "fixture.hostile.status",
            theirs.clone().into_bytes(),
            Some(Priority::Normal),
        )
        .await
        .unwrap();
    let reason = dead_letter_of(&platform, &id).await.reason;
    assert!(
        reason.contains("forged=Ok(())"),
        "the publish itself goes through: {reason}"
    );
    assert!(reason.contains("theirs=None"), "not readable: {reason}");
    assert!(
        reason.contains("own=Some(Pending)") || reason.contains("own=Some(Completed)"),
        "its own publish is readable: {reason}"
    );
    assert!(
        reason.contains("mine=Some(Processing)"),
        "the message it is handling is readable: {reason}"
    );
    assert_eq!(
        platform.services.messaging.tracker.get(&theirs),
        Some(MessageStatus::Completed),
        "the publish with its id did not reset it"
    );
}
