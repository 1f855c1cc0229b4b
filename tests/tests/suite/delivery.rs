//! What becomes of messages: work claimed with `store::once` is redone when the
//! attempt that claimed it failed, reservations are not taken twice, priorities order
//! the pool, and a full dead-letter queue loses nothing.

use crate::e2e_embedded::dead_letter_of;
use serde_json::json;
use std::time::Duration;
use techub_host::Platform;
use techub_host::bindings::techub::platform::messaging::Priority;
use techub_host::capability::messaging::MessageStatus;
use techub_host::config::QueuePriority;
use techub_tests::{PluginDir, config, grant, init_tracing, wait_for};

const LIMIT: Duration = Duration::from_secs(20);

async fn completed(platform: &Platform, id: &str) {
    wait_for(LIMIT, &format!("message {id} to complete"), || async {
        (platform.services.messaging.tracker.get(id) == Some(MessageStatus::Completed))
            .then_some(())
    })
    .await;
}

/// How many times the once fixture did the work of message `id` (its counter).
async fn work_done(platform: &Platform, id: &str) -> Option<Vec<u8>> {
    platform
        .services
        .store
        .get(&format!("techub:store:once:work-done:{id}"))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn work_claimed_by_a_trapped_attempt_is_done_on_the_retry_exactly_once() {
    init_tracing();
    let dir = PluginDir::with(&[("once", "fixture_once")]);
    let platform = Platform::start(config(&dir)).await.unwrap();
    let id = platform
        .publish("fixture.once.go", b"{}".to_vec(), None)
        .await
        .unwrap();
    completed(&platform, &id).await;
    let done = work_done(&platform, &id).await;
    assert_eq!(
        done.as_deref(),
        Some(b"1".as_slice()),
        "the trapped attempt's claim was released, and the retry did the work once"
    );
    // The successful attempt's claim holds: a redelivery would skip the work.
    assert!(
        platform
            .services
            .store
            .exists(&format!("techub:store:once:once:{id}"))
            .await
            .unwrap()
    );
}

/// A claim `once` marked done stays when the invocation fails after the work (only
/// pending claims are released): the retry skips the work.
#[tokio::test(flavor = "multi_thread")]
async fn work_done_before_a_trap_is_not_done_again_on_the_retry() {
    init_tracing();
    let dir = PluginDir::with(&[("once", "fixture_once")]);
    let platform = Platform::start(config(&dir)).await.unwrap();
    let id = platform
        .publish("fixture.once.after", b"{}".to_vec(), None)
        .await
        .unwrap();
    completed(&platform, &id).await;
    let done = work_done(&platform, &id).await;
    assert_eq!(
        done.as_deref(),
        Some(b"1".as_slice()),
        "the done claim survived the trap, and the retry skipped the work"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_order_retried_after_a_contended_lock_reserves_each_product_once() {
    init_tracing();
    let dir = PluginDir::with(&[("order-processor", "order_processor")]);
    let mut config = config(&dir);
    grant(
        &mut config,
        "order-processor",
        &["orders"],
        &["inventory.*", "order.cancelled"],
    );
    config.queues.get_mut("order").unwrap().max_retries = 5;
    let platform = Platform::start(config).await.unwrap();
    let store = platform.services.store.clone();
    let stock = |product: &'static str| {
        let store = store.clone();
        async move {
            store
                .get(&format!("techub:store:order-processor:stock:{product}"))
                .await
                .unwrap()
                .map(|v| String::from_utf8(v).unwrap())
        }
    };
    for product in ["a", "b"] {
        platform
            .publish(
                "inventory.restocked",
                json!({ "product": product, "quantity": 10 })
                    .to_string()
                    .into_bytes(),
                None,
            )
            .await
            .unwrap();
    }
    wait_for(LIMIT, "the restocks", || async {
        (stock("a").await.as_deref() == Some("10") && stock("b").await.as_deref() == Some("10"))
            .then_some(())
    })
    .await;

    // Someone holds product b: the first attempt reserves a, then fails on b.
    let locks = platform.services.locks.clone();
    locks
        .try_acquire(
            "techub:lock:order-processor:product:b",
            "techub:lock-fence:order-processor",
            "someone",
            Duration::from_secs(60),
        )
        .await
        .unwrap()
        .expect("b is free");
    let order = json!({ "id": "o-9", "items": [
        { "product": "a", "quantity": 3 }, { "product": "b", "quantity": 4 } ] });
    let id = platform
        .publish("order.created", order.to_string().into_bytes(), None)
        .await
        .unwrap();
    wait_for(LIMIT, "the first attempt to fail on b", || async {
        (platform.services.messaging.tracker.get(&id) == Some(MessageStatus::Retrying))
            .then_some(())
    })
    .await;
    assert_eq!(stock("a").await.as_deref(), Some("7"), "a was reserved");
    locks
        .release("techub:lock:order-processor:product:b", "someone")
        .await
        .unwrap();
    completed(&platform, &id).await;
    assert_eq!(
        stock("a").await.as_deref(),
        Some("7"),
        "a is not reserved twice"
    );
    assert_eq!(stock("b").await.as_deref(), Some("6"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_freed_slot_goes_to_the_higher_priority_queue_type_first() {
    init_tracing();
    let dir = PluginDir::with(&[("priority", "fixture_priority")]);
    let mut config = config(&dir);
    config.host.max_instances = 1;
    config.queues.get_mut("analytics").unwrap().priority = QueuePriority::Low;
    let platform = Platform::start(config).await.unwrap();
    assert_eq!(
        platform.plugins().await.len(),
        1,
        "{:?}",
        platform.load_errors().await
    );
    // Take the only slot, then queue analytics messages before one payment.
    let block = platform
        .publish("fixture.priority.block", b"{}".to_vec(), None)
        .await
        .unwrap();
    wait_for(LIMIT, "the blocker to run", || async {
        (platform.services.messaging.tracker.get(&block) == Some(MessageStatus::Processing))
            .then_some(())
    })
    .await;
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(
            platform
                .publish("fixture.priority.analytics", b"{}".to_vec(), None)
                .await
                .unwrap(),
        );
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    ids.push(
        platform
            .publish("fixture.priority.payment", b"{}".to_vec(), None)
            .await
            .unwrap(),
    );
    for id in &ids {
        completed(&platform, id).await;
    }
    let handled: Vec<String> = platform
        .services
        .store
        .list_range("techub:store:priority:handled", 0, -1)
        .await
        .unwrap()
        .into_iter()
        .map(|v| String::from_utf8(v).unwrap())
        .collect();
    assert_eq!(
        handled[0], "fixture.priority.payment:Urgent",
        "payment first, with its queue type's default priority: {handled:?}"
    );
    assert_eq!(
        handled[1..],
        ["fixture.priority.analytics:Low"; 4],
        "analytics took its queue type's configured priority: {handled:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_dead_letter_queue_refuses_and_loses_nothing() {
    init_tracing();
    let dir = PluginDir::with(&[("user-notifications", "user_notifications")]);
    let mut config = config(&dir);
    grant(
        &mut config,
        "user-notifications",
        &["users"],
        &["notification.*"],
    );
    config.dead_letter.max_length = 1;
    config.dead_letter.ttl_ms = 1_000;
    // The refused letter waits this long in its retry queue between tries.
    config.dead_letter.retry_when_full_ms = 300;
    let platform = Platform::start(config).await.unwrap();
    let broker = platform.services.messaging.broker.clone();
    let first = platform
        .publish(
            "user.created",
            b"not json 1".to_vec(),
            Some(Priority::Normal),
        )
        .await
        .unwrap();
    dead_letter_of(&platform, &first).await;
    let second = platform
        .publish(
            "user.created",
            b"not json 2".to_vec(),
            Some(Priority::Normal),
        )
        .await
        .unwrap();
    wait_for(
        LIMIT,
        "the full queue to refuse the second letter",
        || async { (broker.dead_letters_refused() > 0).then_some(()) },
    )
    .await;
    let letters = broker.dead_letters(0, 10).await.unwrap();
    assert!(
        letters.iter().all(|l| l.envelope.id != second),
        "the first letter was not dropped to make room"
    );
    // The first expires after its TTL (and is not shown past it); the second, held in
    // its retry queue meanwhile, then takes its place.
    let letter = dead_letter_of(&platform, &second).await;
    assert!(letter.reason.starts_with("rejected:"), "{}", letter.reason);
    let letters = broker.dead_letters(0, 10).await.unwrap();
    assert!(
        letters.iter().all(|l| l.envelope.id != first),
        "expired letters are not shown"
    );
}

/// A message larger than `host.max_message_bytes`, published by someone other than
/// the host, is dead-lettered at once with the reason; the plugin never runs.
async fn an_oversize_delivery_is_dead_lettered_without_running_the_plugin(
    mut config: techub_host::HostConfig,
) {
    config.host.max_message_bytes = 4096;
    let platform = Platform::start(config).await.expect("the platform starts");
    let envelope = techub_tests::envelope("fixture.noop.big", vec![b'x'; 64 * 1024]);
    let id = envelope.id.clone();
    platform
        .services
        .messaging
        .broker
        .publish(envelope, None)
        .await
        .expect("the broker takes it");
    let letter = crate::e2e_embedded::dead_letter_of(&platform, &id).await;
    assert_eq!(
        letter.envelope.attempt, 1,
        "retried first: {}",
        letter.reason
    );
    assert!(
        letter
            .reason
            .contains("65536 bytes, more than host.max_message_bytes (4096)"),
        "{}",
        letter.reason
    );
    let metrics = platform.services.metrics.encode();
    let noop = platform.plugins().await[0].name.clone();
    let ran = metrics
        .lines()
        .filter(|l| l.starts_with(&format!("techub_invocations_total{{plugin=\"{noop}\"")))
        .any(|l| !l.ends_with(" 0"));
    assert!(!ran, "the plugin ran: {metrics}");
    platform.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_oversize_delivery_is_dead_lettered_at_once_on_the_embedded_broker() {
    init_tracing();
    let dir = PluginDir::with(&[("noop", "fixture_noop")]);
    an_oversize_delivery_is_dead_lettered_without_running_the_plugin(config(&dir)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_oversize_delivery_is_dead_lettered_at_once_on_rabbitmq() {
    init_tracing();
    let plugin = techub_tests::unique("noop");
    let dir = PluginDir::with(&[(&plugin, "fixture_noop")]);
    an_oversize_delivery_is_dead_lettered_without_running_the_plugin(
        crate::e2e_services::on_services(&dir),
    )
    .await;
}

/// Rejections of `plugin` so far.
fn rejections(platform: &Platform, plugin: &str) -> u64 {
    platform
        .services
        .metrics
        .plugin(plugin)
        .outcome_counts()
        .into_iter()
        .find(|(outcome, _)| *outcome == "reject")
        .map_or(0, |(_, count)| count)
}

/// A replay takes the letters present when it starts, each once: letters that fail
/// again wait for the next replay instead of running again within this one.
async fn a_replay_runs_each_letter_once(config: techub_host::HostConfig) {
    use techub_host::capability::messaging::{DeadLetterAction, ReplayTo};
    let platform = Platform::start(config).await.expect("the platform starts");
    let mut ids = Vec::new();
    for i in 0..3 {
        let id = platform
            .publish(
                &format!("fixture.caller.replay{i}"),
                br#"{"requests": []}"#.to_vec(),
                None,
            )
            .await
            .expect("publish");
        ids.push(id);
    }
    for id in &ids {
        dead_letter_of(&platform, id).await;
    }
    assert_eq!(rejections(&platform, "caller"), 3);
    let pick = |letter: &techub_host::capability::messaging::DeadLetter| {
        if ids.contains(&letter.envelope.id) {
            DeadLetterAction::Replay(ReplayTo::Queue)
        } else {
            DeadLetterAction::Keep
        }
    };
    let done = platform
        .services
        .messaging
        .broker
        .rework_dead_letters(&pick)
        .await
        .expect("replay");
    assert_eq!(
        done.replayed.len(),
        3,
        "replays in one pass; errors: {:?}",
        done.errors
    );
    wait_for(
        LIMIT,
        "the replayed letters to be rejected again",
        || async { (rejections(&platform, "caller") >= 6).then_some(()) },
    )
    .await;
    // Each failed again and went back to the dead-letter queue: nothing more runs.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(rejections(&platform, "caller"), 6);
    for id in &ids {
        dead_letter_of(&platform, id).await;
    }
    platform.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replay_runs_each_letter_once_on_the_embedded_broker() {
    init_tracing();
    let dir = PluginDir::with(&[("caller", "fixture_caller")]);
    a_replay_runs_each_letter_once(config(&dir)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replay_runs_each_letter_once_on_rabbitmq() {
    init_tracing();
    let dir = PluginDir::with(&[("caller", "fixture_caller")]);
    a_replay_runs_each_letter_once(crate::e2e_services::on_services(&dir)).await;
}

/// Publishes `count` good `user.created` messages and waits until all are handled; how
/// long that took.
async fn good_messages_handled(platform: &Platform, count: usize) -> Duration {
    let started = std::time::Instant::now();
    let mut ids = Vec::new();
    for _ in 0..count {
        ids.push(techub_tests::publish_user(platform, &techub_tests::unique("good")).await);
    }
    for id in &ids {
        completed(platform, id).await;
    }
    started.elapsed()
}

/// With the dead-letter queue full, the letters it refuses wait in their retry queue
/// (each run once, not again and again), good messages keep flowing, and `/readyz`, a
/// metric and the status page say it is full.
async fn a_full_dead_letter_queue_does_not_stall_good_messages(
    mut config: techub_host::HostConfig,
    plugin: &str,
) {
    config.dead_letter.max_length = 2;
    // Longer than the test: a refused letter that ran again would be a tight loop.
    config.dead_letter.retry_when_full_ms = 600_000;
    config.host.metrics_poll_ms = 200;
    let platform = std::sync::Arc::new(Platform::start(config).await.expect("the platform starts"));
    let admin = crate::admin::serve(&platform).await;
    let broker = platform.services.messaging.broker.clone();
    let normal = good_messages_handled(&platform, 20).await;

    for i in 0..15 {
        platform
            .publish("user.created", format!("not json {i}").into_bytes(), None)
            .await
            .expect("publish");
    }
    wait_for(LIMIT, "13 of 15 letters refused", || async {
        (broker.dead_letters_refused() >= 13).then_some(())
    })
    .await;
    let while_full = good_messages_handled(&platform, 20).await;
    eprintln!(
        "20 good messages: {normal:?} normally, {while_full:?} with the dead-letter queue full (rate ratio {:.2})",
        normal.as_secs_f64() / while_full.as_secs_f64()
    );
    assert_eq!(
        rejections(&platform, plugin),
        15,
        "each refused letter ran once: it waits, it is not run again"
    );
    assert_eq!(broker.dead_letters_refused(), 13);
    assert_eq!(broker.dead_letter_depth().await.unwrap(), 2);

    let (status, body) = techub_host::admin::client::get(&admin, None, "/readyz")
        .await
        .unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("the dead-letter queue is full (2 of 2 letters)"),
        "{body}"
    );
    let (_, page) = techub_host::admin::client::get(&admin, None, "/")
        .await
        .unwrap();
    assert!(page.contains("id=\"dead-letters-full\""), "{page}");
    wait_for(LIMIT, "the full gauge and 13 refused", || async {
        let text = platform.services.metrics.encode();
        let full = text.lines().any(|l| l == "techub_dead_letter_queue_full 1");
        let refused = text
            .lines()
            .any(|l| l == "techub_dead_letters_refused_total 13");
        (full && refused).then_some(())
    })
    .await;

    // Room again: ready again.
    broker
        .rework_dead_letters(&|_| techub_host::capability::messaging::DeadLetterAction::Purge)
        .await
        .unwrap();
    let (status, body) = techub_host::admin::client::get(&admin, None, "/readyz")
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_dead_letter_queue_does_not_stall_good_messages_on_the_embedded_broker() {
    init_tracing();
    let (_dir, config) = techub_tests::user_notifications();
    a_full_dead_letter_queue_does_not_stall_good_messages(config, "user-notifications").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_dead_letter_queue_does_not_stall_good_messages_on_rabbitmq() {
    init_tracing();
    let plugin = techub_tests::unique("user-notifications");
    let dir = PluginDir::with(&[(&plugin, "user_notifications")]);
    let mut config = crate::e2e_services::on_services(&dir);
    grant(&mut config, &plugin, &["users"], &["notification.*"]);
    a_full_dead_letter_queue_does_not_stall_good_messages(config, &plugin).await;
}

/// Publishes a letter straight into `amqp`'s dead-letter exchange, as anyone allowed
/// to publish there could: naming `queue`, with `seal` if any.
async fn forge_letter(
    amqp: &techub_host::config::AmqpConfig,
    queue: &str,
    id: &str,
    seal: Option<String>,
) {
    use lapin::types::{AMQPValue, FieldTable, LongString};
    let connection = lapin::Connection::connect(&amqp.url, lapin::ConnectionProperties::default())
        .await
        .expect("RabbitMQ at 127.0.0.1:5672 (start it with `rabbitmq-server -detached`)");
    let channel = connection.create_channel().await.unwrap();
    channel
        .confirm_select(lapin::options::ConfirmSelectOptions::default())
        .await
        .unwrap();
    let mut headers = FieldTable::default();
    let text = |value: &str| AMQPValue::LongString(LongString::from(value));
    headers.insert("x-techub-death-queue".into(), text(queue));
    headers.insert(
        "x-techub-death-reason".into(),
        text("rejected: out of stock"),
    );
    headers.insert("x-techub-routing-key".into(), text("fixture.caller.forged"));
    if let Some(seal) = seal {
        headers.insert("x-techub-death-seal".into(), text(&seal));
    }
    let properties = lapin::BasicProperties::default()
        .with_message_id(id.into())
        .with_headers(headers);
    channel
        .basic_publish(
            amqp.dead_letter_exchange.as_str().into(),
            format!("dlx.{queue}").as_str().into(),
            lapin::options::BasicPublishOptions::default(),
            br#"{"requests": []}"#,
            properties,
        )
        .await
        .unwrap()
        .await
        .unwrap();
    let _ = connection.close(200, "forged".into()).await;
}

/// A letter published into the dead-letter exchange by someone else (naming a plugin's
/// queue, without a seal or with one made with another key) is listed as untrusted and
/// kept by `replay --all`; the host's own letter next to it is replayed.
#[tokio::test(flavor = "multi_thread")]
async fn a_forged_dead_letter_is_not_replayed() {
    init_tracing();
    let plugin = techub_tests::unique("caller");
    let dir = PluginDir::with(&[(&plugin, "fixture_caller")]);
    let config = crate::e2e_services::on_services(&dir);
    let amqp = config.amqp.clone();
    let queue = techub_host::names::topology::queue_name(&amqp.queue_prefix, "webhook", &plugin);
    let platform = std::sync::Arc::new(Platform::start(config).await.expect("the platform starts"));
    let admin = crate::admin::serve(&platform).await;

    let genuine = platform
        .publish(
            "fixture.caller.genuine",
            br#"{"requests": []}"#.to_vec(),
            None,
        )
        .await
        .unwrap();
    assert!(dead_letter_of(&platform, &genuine).await.trusted);
    forge_letter(&amqp, &queue, "forged-unsealed", None).await;
    let guessed = techub_host::capability::messaging::amqp::seal::DeathSeal::with_key(b"a guess");
    let forged_envelope = techub_host::capability::messaging::Envelope {
        id: "forged-sealed".into(),
        routing_key: "fixture.caller.forged".into(),
        payload: br#"{"requests": []}"#.to_vec(),
        ..techub_tests::envelope("x", vec![])
    };
    forge_letter(
        &amqp,
        &queue,
        "forged-sealed",
        Some(guessed.seal(&queue, &forged_envelope)),
    )
    .await;
    for id in ["forged-unsealed", "forged-sealed"] {
        let letter = dead_letter_of(&platform, id).await;
        assert!(!letter.trusted, "{id} is untrusted");
        assert_eq!(letter.queue, queue);
    }

    let (status, body) = techub_host::admin::client::post_json(
        &admin,
        None,
        "/dead-letters/replay",
        &json!({ "all": true }),
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{body}");
    let done: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(done["replayed"], json!([genuine]), "{body}");
    let mut untrusted: Vec<String> = serde_json::from_value(done["untrusted"].clone()).unwrap();
    untrusted.sort();
    assert_eq!(untrusted, ["forged-sealed", "forged-unsealed"], "{body}");
    // The genuine letter ran again (and failed again); the forged ones never ran.
    wait_for(LIMIT, "the replayed letter to run", || async {
        (rejections(&platform, &plugin) >= 2).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(rejections(&platform, &plugin), 2);
    for id in ["forged-unsealed", "forged-sealed"] {
        assert!(!dead_letter_of(&platform, id).await.trusted, "{id} is kept");
    }
    platform.shutdown().await;
}
