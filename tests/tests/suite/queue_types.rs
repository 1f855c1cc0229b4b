//! Publishing to a queue type: `messaging::send("email", ..)` reaches every plugin
//! subscribed to `email` (even one binding no routing key) and no other.

use crate::e2e_embedded::dead_letter_of;
use crate::operations::sample;
use std::time::Duration;
use techub_host::Platform;
use techub_host::bindings::techub::platform::messaging::Priority;
use techub_tests::{PluginDir, config, grant, init_tracing, wait_for};

async fn received(platform: &Platform) -> Vec<String> {
    platform
        .services
        .store
        .list_range("techub:store:mailer:received", 0, -1)
        .await
        .unwrap()
        .into_iter()
        .map(|entry| String::from_utf8(entry).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_queue_type_send_reaches_exactly_the_plugins_subscribed_to_the_type() {
    init_tracing();
    let dir = PluginDir::with(&[
        ("hostile", "fixture_hostile"),
        ("mailer", "fixture_mailer"),
        ("user-notifications", "user_notifications"),
    ]);
    let mut config = config(&dir);
    grant(&mut config, "hostile", &[], &["queue.email"]);
    grant(
        &mut config,
        "user-notifications",
        &["users"],
        &["notification.*"],
    );
    let platform = Platform::start(config).await.unwrap();
    assert_eq!(
        platform.plugins().await.len(),
        3,
        "{:?}",
        platform.load_errors().await
    );
    let mailer = platform
        .plugins()
        .await
        .into_iter()
        .find(|p| p.name == "mailer")
        .unwrap();
    assert_eq!(
        mailer.subscriptions,
        [("email".to_string(), vec!["queue.email".to_string()])],
        "a handler without routing keys binds only its queue type's key"
    );

    let id = platform
        .publish(
            "fixture.hostile.send-email",
            b"{}".to_vec(),
            Some(Priority::Normal),
        )
        .await
        .unwrap();
    let reason = dead_letter_of(&platform, &id).await.reason;
    let sent = reason
        .strip_prefix("rejected: Ok(\"")
        .and_then(|r| r.strip_suffix("\")"))
        .unwrap_or_else(|| panic!("the send failed: {reason}"))
        .to_string();
    let got = wait_for(
        Duration::from_secs(20),
        "the mailer to receive it",
        || async {
            let got = received(&platform).await;
            (!got.is_empty()).then_some(got)
        },
    )
    .await;
    assert_eq!(got, [format!("{sent}:queue.email")]);

    // The operator can send to a type too.
    let by_operator = platform
        .publish("queue.email", b"from the operator".to_vec(), None)
        .await
        .unwrap();
    wait_for(Duration::from_secs(20), "the operator's send", || async {
        (received(&platform).await.len() == 2).then_some(())
    })
    .await;
    assert!(received(&platform).await[1].starts_with(&by_operator));

    // Plugins of other queue types saw none of it.
    let text = platform.services.metrics.encode();
    for outcome in ["ok", "reject", "trap"] {
        let labels = [("plugin", "user-notifications"), ("outcome", outcome)];
        let count = sample(&text, "techub_invocations_total", &labels);
        assert_eq!(count, Some(0.0), "{outcome}: {text}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_binding_that_would_catch_other_queue_types_sends_is_refused() {
    init_tracing();
    let dir = PluginDir::with(&[("greedy", "fixture_greedy")]);
    let platform = Platform::start(config(&dir)).await.unwrap();
    assert!(platform.plugins().await.is_empty());
    let errors = platform.load_errors().await;
    assert!(
        errors[0].contains("binds \"#\", which would also receive what is sent to queue type"),
        "{errors:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_service_with_three_handlers_gets_each_queue_types_deliveries_in_its_own_function() {
    init_tracing();
    let dir = PluginDir::with(&[("switchboard", "fixture_switchboard")]);
    let platform = Platform::start(config(&dir)).await.unwrap();
    let plugins = platform.plugins().await;
    assert_eq!(plugins.len(), 1, "{:?}", platform.load_errors().await);
    let mut types: Vec<&str> = plugins[0]
        .subscriptions
        .iter()
        .map(|(t, _)| t.as_str())
        .collect();
    types.sort();
    assert_eq!(types, ["email", "order", "sms"]);
    for key in [
        "fixture.switchboard.sms",
        "fixture.switchboard.order",
        "queue.email",
    ] {
        platform.publish(key, b"{}".to_vec(), None).await.unwrap();
    }
    let calls = wait_for(Duration::from_secs(20), "three calls", || async {
        let calls = platform
            .services
            .store
            .list_range("techub:store:switchboard:calls", 0, -1)
            .await
            .unwrap();
        (calls.len() >= 3).then_some(calls)
    })
    .await;
    let mut calls: Vec<String> = calls
        .into_iter()
        .map(|c| String::from_utf8(c).unwrap())
        .collect();
    calls.sort();
    assert_eq!(
        calls,
        [
            "mail:email:queue.email",
            "order:order:fixture.switchboard.order",
            "text:sms:fixture.switchboard.sms",
        ]
    );
}
