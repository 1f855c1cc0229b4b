//! End to end on the embedded backends: real plugins, real messages, real failures.

use serde_json::{Value, json};
use std::time::Duration;
use techub_host::Platform;
use techub_host::bindings::techub::platform::messaging::Priority;
use techub_host::capability::messaging::DeadLetter;
use techub_tests::{PluginDir, cached, config, grant, init_tracing, publish_user, sink, wait_for};

const LIMIT: Duration = Duration::from_secs(20);

/// The dead letter of message `id`, once there is one.
pub async fn dead_letter_of(platform: &Platform, id: &str) -> DeadLetter {
    wait_for(
        LIMIT,
        &format!("message {id} to be dead-lettered"),
        || async {
            let letters = platform
                .services
                .messaging
                .broker
                .dead_letters(0, 10_000)
                .await
                .expect("dead letters");
            letters.into_iter().find(|d| d.envelope.id == id)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_message_is_rejected_to_the_dead_letter_queue() {
    init_tracing();
    let dir = PluginDir::with(&[("user-notifications", "user_notifications")]);
    let mut config = config(&dir);
    grant(
        &mut config,
        "user-notifications",
        &["users"],
        &["notification.*"],
    );
    let platform = Platform::start(config).await.unwrap();
    let id = platform
        .publish("user.created", b"not json".to_vec(), Some(Priority::Normal))
        .await
        .unwrap();
    let letter = dead_letter_of(&platform, &id).await;
    assert!(letter.reason.starts_with("rejected:"), "{}", letter.reason);
    assert_eq!(letter.envelope.attempt, 1, "a rejection is not retried");
    assert_eq!(letter.queue, "techub.notification.user-notifications");
}

#[tokio::test(flavor = "multi_thread")]
async fn infinite_loop_is_stopped_by_the_cpu_limit() {
    init_tracing();
    let dir = PluginDir::with(&[("spin", "fixture_spin")]);
    let mut config = config(&dir);
    config
        .plugins
        .entry("spin".into())
        .or_default()
        .limits
        .cpu_ms = Some(50);
    config.queues.get_mut("email").unwrap().max_retries = 1;
    let platform = Platform::start(config).await.unwrap();
    let id = platform
        .publish(
            "fixture.spin.forever",
            b"{}".to_vec(),
            Some(Priority::Normal),
        )
        .await
        .unwrap();
    let letter = dead_letter_of(&platform, &id).await;
    assert!(
        letter.reason.contains("CPU limit of 50 ms exceeded"),
        "{}",
        letter.reason
    );
    assert_eq!(letter.envelope.attempt, 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_and_wrong_world_files_are_reported_and_the_others_load() {
    init_tracing();
    let dir = PluginDir::with(&[
        ("user-notifications", "user_notifications"),
        ("other-world", "fixture_wrong_world"),
    ]);
    dir.write("garbage.wasm", b"this is not wasm at all");
    dir.write("core-module.wasm", b"\0asm\x01\0\0\0");
    dir.write("Bad Name.wasm", b"\0asm\x01\0\0\0");
    dir.write("notes.txt", b"ignored: not a .wasm file");
    let mut config = config(&dir);
    grant(
        &mut config,
        "user-notifications",
        &["users"],
        &["notification.*"],
    );
    let platform = Platform::start(config)
        .await
        .expect("bad plugins do not stop the host");

    assert_eq!(
        platform
            .plugins()
            .await
            .iter()
            .map(|p| p.name.clone())
            .collect::<Vec<_>>(),
        ["user-notifications"]
    );
    let errors: Vec<String> = platform
        .load_errors()
        .await
        .iter()
        .map(|e| e.to_string())
        .collect();
    assert_eq!(errors.len(), 4, "{errors:#?}");
    let about = |file: &str| {
        errors
            .iter()
            .find(|e| e.contains(file))
            .unwrap_or_else(|| panic!("no error names {file}: {errors:#?}"))
            .clone()
    };
    assert!(about("garbage.wasm").contains("not a valid WebAssembly component"));
    assert!(about("core-module.wasm").contains("not a valid WebAssembly component"));
    assert!(
        about("other-world.wasm").contains("does not implement the techub:platform/plugin world")
    );
    assert!(about("Bad Name.wasm").contains("file name"));

    publish_user(&platform, "still-here").await;
    cached(&platform, "users", "still-here").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn plugin_subscribing_to_an_undeclared_queue_type_is_refused_by_name() {
    init_tracing();
    let dir = PluginDir::with(&[("noop", "fixture_noop")]);
    let mut config = config(&dir);
    config.queues.remove("analytics");
    let platform = Platform::start(config).await.unwrap();
    assert!(platform.plugins().await.is_empty());
    let error = platform.load_errors().await[0].to_string();
    assert!(
        error.contains("noop.wasm") && error.contains("\"analytics\""),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn messages_wait_for_a_pool_slot_instead_of_failing() {
    init_tracing();
    let dir = PluginDir::with(&[("noop", "fixture_noop")]);
    let mut config = config(&dir);
    config.host.max_instances = 2;
    config
        .plugins
        .entry("noop".into())
        .or_default()
        .limits
        .prefetch = Some(16);
    let platform = Platform::start(config).await.unwrap();
    let mut ids = Vec::new();
    for _ in 0..50 {
        ids.push(
            platform
                .publish("fixture.noop.x", b"{}".to_vec(), Some(Priority::Normal))
                .await
                .unwrap(),
        );
    }
    let completed = Some(techub_host::capability::messaging::MessageStatus::Completed);
    wait_for(LIMIT, "all 50 messages through 2 pool slots", || async {
        ids.iter()
            .all(|id| platform.services.messaging.tracker.get(id) == completed)
            .then_some(())
    })
    .await;
    assert!(
        platform
            .services
            .messaging
            .broker
            .dead_letters(0, 100)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn orders_reserve_stock_once_under_a_lock_and_cancel_when_short() {
    init_tracing();
    let dir = PluginDir::with(&[("order-processor", "order_processor")]);
    let mut config = config(&dir);
    grant(
        &mut config,
        "order-processor",
        &["orders"],
        &["inventory.*", "order.cancelled"],
    );
    let platform = Platform::start(config).await.unwrap();
    let mut events = sink(&platform, &["inventory.updated", "order.cancelled"]).await;
    let stock = |platform: &Platform| {
        let store = platform.services.store.clone();
        async move {
            store
                .get("techub:store:order-processor:stock:p1")
                .await
                .unwrap()
                .map(|v| String::from_utf8(v).unwrap())
        }
    };

    platform
        .publish(
            "inventory.restocked",
            json!({ "product": "p1", "quantity": 5 })
                .to_string()
                .into_bytes(),
            Some(Priority::Normal),
        )
        .await
        .unwrap();
    wait_for(LIMIT, "the restock", || async {
        stock(&platform).await.filter(|s| s == "5")
    })
    .await;

    // The same order delivered twice reserves once.
    let order = json!({ "id": "o-1", "items": [{ "product": "p1", "quantity": 2 }] })
        .to_string()
        .into_bytes();
    let first = platform
        .publish("order.created", order.clone(), Some(Priority::Normal))
        .await
        .unwrap();
    let second = platform
        .publish("order.created", order, Some(Priority::Normal))
        .await
        .unwrap();
    let event = tokio::time::timeout(LIMIT, events.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(event.envelope().routing_key, "inventory.updated");
    assert_eq!(
        serde_json::from_slice::<Value>(&event.envelope().payload).unwrap()["reserved"],
        2
    );
    // Both copies run concurrently; whichever claims the order first answers it.
    let correlation = event.envelope().correlation_id.clone().unwrap_or_default();
    assert!(
        correlation == first || correlation == second,
        "{correlation}"
    );
    event.ack().await.unwrap();

    // Too much: cancelled, and the stock is untouched.
    let big = json!({ "id": "o-2", "items": [{ "product": "p1", "quantity": 9 }] })
        .to_string()
        .into_bytes();
    platform
        .publish("order.created", big, Some(Priority::Normal))
        .await
        .unwrap();
    let event = tokio::time::timeout(LIMIT, events.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        event.envelope().routing_key,
        "order.cancelled",
        "the duplicate of o-1 published nothing"
    );
    event.ack().await.unwrap();
    assert_eq!(stock(&platform).await.as_deref(), Some("3"));
    let cached = platform
        .services
        .cache
        .backend
        .get_many("orders", &["o-1".into()])
        .await
        .unwrap()
        .pop()
        .flatten();
    assert!(cached.is_some(), "the placed order is cached");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plugin_cannot_flood_the_broker_with_bindings() {
    init_tracing();
    let dir = PluginDir::with(&[("many", "fixture_many_bindings"), ("noop", "fixture_noop")]);
    let platform = Platform::start(config(&dir)).await.unwrap();
    assert_eq!(
        platform
            .plugins()
            .await
            .iter()
            .map(|p| p.name.clone())
            .collect::<Vec<_>>(),
        ["noop"]
    );
    let error = platform.load_errors().await[0].to_string();
    assert!(
        error.contains("many.wasm") && error.contains("binds 65 routing keys"),
        "{error}"
    );
}

/// The payment flow through the host, charging a gateway on loopback (the stand-in):
/// a gateway down for two attempts is retried
/// with the payment queue's backoff and then charges (`payment.processed`, the
/// record in the store); a declined card is dead-lettered at once with the reason,
/// after announcing `payment.failed`.
#[tokio::test(flavor = "multi_thread")]
async fn payments_are_retried_while_the_gateway_is_down_and_declines_are_dead_lettered() {
    let gateway = techub_testkit::stand_ins::PaymentGateway::start("e2e-gw-key").await;
    gateway.fail_next(&[503, 503]);
    let dir = PluginDir::with(&[("payment-processor", "payment_processor")]);
    let mut config = config(&dir);
    let section = grant(&mut config, "payment-processor", &[], &["payment.*"]);
    section.outbound = vec![gateway.origin()];
    section
        .settings
        .insert("gateway_url".into(), gateway.origin());
    section.secrets.insert(
        "gateway_key".into(),
        techub_host::config::SecretRef::literal("e2e-gw-key"),
    );
    let queue = config.queues.get_mut("payment").unwrap();
    queue.retry_delay_ms = 100;
    queue.max_retries = 5;
    let platform = Platform::start(config).await.unwrap();
    let mut events = sink(&platform, &["payment.*"]).await;

    let order = json!({ "id": "o-1", "total": 2500, "card": "4242" });
    let id = platform
        .publish("order.created", order.to_string().into_bytes(), None)
        .await
        .unwrap();
    let processed = tokio::time::timeout(LIMIT, events.next())
        .await
        .expect("payment.processed within the limit")
        .expect("an event");
    assert_eq!(processed.envelope().routing_key, "payment.processed");
    assert_eq!(processed.envelope().attempt, 1);
    assert_eq!(
        processed.envelope().correlation_id.as_deref(),
        Some(id.as_str())
    );
    let record = format!(
        "{}store:payment-processor:payment:o-1",
        platform.config().host.key_prefix
    );
    let status = platform
        .services
        .store
        .hash_get(&record, "status")
        .await
        .unwrap();
    assert_eq!(status.as_deref(), Some(&b"processed"[..]));

    assert_eq!(gateway.charges().len(), 1, "{:?}", gateway.charges());

    let declined = json!({ "id": "o-2", "total": 2500, "card": "0002" });
    // The gateway is down for two attempts again, so the decline is decided on the
    // third.
    gateway.fail_next(&[503, 503]);
    let id = platform
        .publish("order.created", declined.to_string().into_bytes(), None)
        .await
        .unwrap();
    let letter = dead_letter_of(&platform, &id).await;
    assert!(letter.reason.contains("card declined"), "{}", letter.reason);
    assert_eq!(letter.envelope.attempt, 3, "two retries, then the decline");
    let failed = tokio::time::timeout(LIMIT, events.next())
        .await
        .expect("payment.failed within the limit")
        .expect("an event");
    assert_eq!(failed.envelope().routing_key, "payment.failed");
}
