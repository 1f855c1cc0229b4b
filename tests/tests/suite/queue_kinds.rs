//! Quorum queues past what the conformance body covers: the priority lanes a
//! RabbitMQ 3.x broker gets (the normal lane is never starved), and a queue type
//! changing kind on a live deployment (the old queue drains into the new one, nothing
//! lost or doubled, and is deleted), by the broker and through a host's reload.

use crate::e2e_services::on_services;
use std::collections::HashSet;
use std::time::Duration;
use techub_host::Platform;
use techub_host::capability::messaging::amqp::AmqpBroker;
use techub_host::capability::messaging::{Broker, Consumer, Delivery, QueueLimits, QueueSpec};
use techub_host::config::{AmqpConfig, DeadLetterConfig, QueueKind};
use techub_tests::{PluginDir, grant, init_tracing, services, unique, wait_for};

const LIMIT: Duration = Duration::from_secs(20);

async fn connect(config: &AmqpConfig, dead_letter: DeadLetterConfig) -> AmqpBroker {
    services::amqp_broker(config, dead_letter).await
}

async fn next(consumer: &mut Box<dyn Consumer>) -> Box<dyn Delivery> {
    tokio::time::timeout(LIMIT, consumer.next())
        .await
        .expect("a delivery in time")
        .expect("consumer open")
}

fn quorum(config: &AmqpConfig) -> AmqpConfig {
    AmqpConfig {
        queue_kind: QueueKind::Quorum,
        ..config.clone()
    }
}

/// Twenty high messages waiting behind five low ones: the high lane goes first, but
/// after every fourth high delivery a low one gets its turn.
#[tokio::test]
async fn a_busy_high_lane_lets_a_normal_message_through_after_every_fourth() {
    let config = quorum(&services::amqp_config());
    let broker = connect(&config, DeadLetterConfig::default()).await;
    let topic = unique("lanes");
    let queue = format!("{topic}.q");
    let spec = QueueSpec {
        name: queue.clone(),
        bindings: vec![format!("{topic}.#")],
        durable: true,
        limits: Default::default(),
    };
    broker.declare_queue(&spec).await.unwrap();
    for (count, priority, name) in [(5, 1, "low"), (20, 8, "high")] {
        for i in 0..count {
            let mut e = techub_tests::envelope(&format!("{topic}.x"), format!("{name}-{i}").into());
            e.priority = priority;
            broker.publish(e, None).await.unwrap();
        }
    }
    // Both lanes' windows filled before the first is taken.
    let mut consumer = broker.consume(&queue, 10).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut order = Vec::new();
    for _ in 0..25 {
        let d = next(&mut consumer).await;
        order.push(String::from_utf8(d.envelope().payload.clone()).unwrap());
        d.ack().await.unwrap();
    }
    let lows: Vec<usize> = (0..order.len())
        .filter(|&i| order[i].starts_with("low"))
        .collect();
    assert_eq!(lows, [4, 9, 14, 19, 24], "{order:?}");
    let highs: Vec<&String> = order.iter().filter(|b| b.starts_with("high")).collect();
    let published: Vec<String> = (0..20).map(|i| format!("high-{i}")).collect();
    assert_eq!(
        highs,
        published.iter().collect::<Vec<_>>(),
        "in publish order"
    );
    consumer.close().await;
    broker.delete_queue(&queue).await.unwrap();
}

/// Twenty messages in a classic queue, then a host whose queue type is quorum:
/// it declares the quorum queues, unbinds the classic one and drains it; messages
/// published after that (by either host) go to the new queues only, a retry of an
/// old message comes back to the new queue, every message is delivered once, and the
/// classic queue is deleted once drained.
#[tokio::test(flavor = "multi_thread")]
async fn a_queue_moved_from_classic_to_quorum_drains_into_the_new_one_and_loses_nothing() {
    let classic = services::amqp_config();
    let dead_letter = DeadLetterConfig {
        retry_when_full_ms: 300,
        ..DeadLetterConfig::default()
    };
    let old = connect(&classic, dead_letter).await;
    let topic = unique("moved");
    let queue = format!("{topic}.q");
    let spec = QueueSpec {
        name: queue.clone(),
        bindings: vec![format!("{topic}.#")],
        durable: true,
        limits: QueueLimits {
            longest_retry_ms: 300,
            ..QueueLimits::default()
        },
    };
    old.declare_queue(&spec).await.unwrap();
    let mut sent = HashSet::new();
    let publish = |broker: AmqpBroker, name: &'static str, count: usize| {
        let topic = topic.clone();
        async move {
            let mut ids = Vec::new();
            for i in 0..count {
                let mut e =
                    techub_tests::envelope(&format!("{topic}.x"), format!("{name}-{i}").into());
                e.priority = if i % 2 == 0 { 1 } else { 8 };
                ids.push(e.id.clone());
                broker.publish(e, None).await.unwrap();
            }
            ids
        }
    };
    sent.extend(publish(old.clone(), "before", 20).await);

    let new = connect(&quorum(&classic), dead_letter).await;
    new.declare_queue(&spec).await.unwrap();
    let types = services::queue_types();
    assert_eq!(types.get(&queue).map(String::as_str), Some("classic"));
    for lane in [format!("{queue}.quorum"), format!("{queue}.quorum.high")] {
        assert_eq!(
            types.get(&lane).map(String::as_str),
            Some("quorum"),
            "{lane}"
        );
    }
    sent.extend(publish(new.clone(), "after", 10).await);
    // A host not yet moved publishes too: its messages reach the new queues.
    sent.extend(publish(old.clone(), "from-the-old-host", 5).await);
    assert_eq!(
        new.queue_depth(&queue).await.unwrap(),
        Some(35),
        "the old queue and the new ones count as one"
    );

    let mut consumer = new.consume(&queue, 10).await.unwrap();
    let mut delivered = Vec::new();
    let mut retried = None;
    while delivered.len() < sent.len() {
        let d = next(&mut consumer).await;
        let body = String::from_utf8(d.envelope().payload.clone()).unwrap();
        // One message of the old queue retried: it comes back through the new queue.
        if retried.is_none() && body.starts_with("before") && d.envelope().priority == 1 {
            retried = Some(d.envelope().id.clone());
            d.retry(Duration::from_millis(100)).await.unwrap();
            continue;
        }
        delivered.push(d.envelope().id.clone());
        d.ack().await.unwrap();
    }
    let unique_ids: HashSet<String> = delivered.iter().cloned().collect();
    assert_eq!(unique_ids, sent, "every message, from either queue");
    assert_eq!(unique_ids.len(), delivered.len(), "none twice");
    let types = services::queue_types();
    assert!(
        types.contains_key(&format!("{queue}.quorum.retry.100")),
        "the retry went to the new queue: {types:?}"
    );
    assert!(!types.contains_key(&format!("{queue}.retry.100")));

    // The consumer looks after the old queue while it waits for deliveries (as the
    // host's dispatcher always does); nothing more arrives meanwhile (a duplicate
    // would). The queue goes after a quiet 5 s; each look (`rabbitmqctl`) takes 1–2 s
    // and more under the whole suite's load, so the bound is three times the usual.
    let deadline = std::time::Instant::now() + LIMIT * 3;
    while services::queue_types().contains_key(&queue) {
        assert!(
            std::time::Instant::now() < deadline,
            "the drained classic queue is deleted within {:?}",
            LIMIT * 3
        );
        let extra = tokio::time::timeout(Duration::from_millis(500), consumer.next()).await;
        assert!(extra.is_err(), "nothing after the last message");
    }
    assert_eq!(new.queue_depth(&queue).await.unwrap(), Some(0));
    consumer.close().await;
    new.delete_queue(&queue).await.unwrap();
    services::delete_quorum_queues(&[&topic]).await;
}

/// A consumer waiting for deliveries when its queue type's kind changes (a reload of
/// an idle plugin): it takes up the new queues and gets what is published to them.
#[tokio::test(flavor = "multi_thread")]
async fn a_consumer_waiting_when_its_queue_changes_kind_takes_up_the_new_queues() {
    let broker = connect(&services::amqp_config(), DeadLetterConfig::default()).await;
    let topic = unique("idle");
    let mut spec = QueueSpec {
        name: format!("{topic}.q"),
        bindings: vec![format!("{topic}.#")],
        durable: true,
        limits: Default::default(),
    };
    broker.declare_queue(&spec).await.unwrap();
    let mut consumer = broker.consume(&spec.name, 10).await.unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let consuming = tokio::spawn(async move {
        while let Some(d) = consumer.next().await {
            let _ = tx.send(String::from_utf8(d.envelope().payload.clone()).unwrap());
            d.ack().await.unwrap();
        }
    });
    // Waiting, with nothing to deliver, when the kind changes.
    tokio::time::sleep(Duration::from_millis(300)).await;
    spec.limits.kind = Some(QueueKind::Quorum);
    broker.declare_queue(&spec).await.unwrap();
    for body in ["one", "two"] {
        let e = techub_tests::envelope(&format!("{topic}.x"), body.into());
        broker.publish(e, None).await.unwrap();
    }
    let mut got = Vec::new();
    for _ in 0..2 {
        let body = tokio::time::timeout(LIMIT, rx.recv())
            .await
            .expect("a message published to the new queues, in time");
        got.push(body.unwrap());
    }
    assert_eq!(got, ["one", "two"]);
    consuming.abort();
    broker.delete_queue(&spec.name).await.unwrap();
}

/// A running host whose `[queues.notification] kind` changes to `quorum` in a
/// reload: the messages still in the classic queue and those published after the
/// reload are all handled, and the classic queue is gone once drained.
#[tokio::test(flavor = "multi_thread")]
async fn a_reload_that_changes_a_queue_types_kind_moves_its_queue_live() {
    init_tracing();
    let plugin = unique("user-notifications");
    let dir = PluginDir::with(&[(&plugin, "user_notifications")]);
    let mut config = on_services(&dir);
    grant(&mut config, &plugin, &["users"], &["notification.*"]);
    // One at a time, so that messages wait in the classic queue at the reload.
    config.plugins.get_mut(&plugin).unwrap().limits.prefetch = Some(1);
    config
        .queues
        .get_mut("notification")
        .unwrap()
        .max_retry_delay_ms = 300;
    config.dead_letter.retry_when_full_ms = 300;
    let queue = format!("{}notification.{plugin}", config.amqp.queue_prefix);
    let platform = Platform::start(config.clone())
        .await
        .unwrap_or_else(|e| panic!("{}", services::rabbitmq_hint(&e)));
    let mut all: Vec<String> = (0..300).map(|n| format!("{plugin}-a{n}")).collect();
    // Published together (their confirms overlap), not one after another: on a loaded
    // machine the plugin, one message at a time, kept up with serial publishes and
    // the classic queue was empty at the reload.
    futures::future::join_all(
        all.iter()
            .map(|id| techub_tests::publish_user(&platform, id)),
    )
    .await;
    let broker = platform.services.messaging.broker.clone();
    let waiting = broker.queue_depth(&queue).await.unwrap().unwrap_or(0);
    config.queues.get_mut("notification").unwrap().kind = Some(QueueKind::Quorum);
    let ignored = platform.reload_config(config.clone()).await.unwrap();
    assert!(ignored.is_empty(), "{ignored:?}");
    assert!(
        waiting > 0,
        "messages were still in the classic queue at the change (make the test publish more)"
    );
    let types = services::queue_types();
    assert_eq!(
        types.get(&format!("{queue}.quorum")).map(String::as_str),
        Some("quorum")
    );
    for n in 0..20 {
        let id = format!("{plugin}-b{n}");
        techub_tests::publish_user(&platform, &id).await;
        all.push(id);
    }
    // One at a time on a loaded 2-core machine: the bound is generous, and a failure
    // says how far it got.
    let deadline = std::time::Instant::now() + LIMIT * 9;
    loop {
        let cached = platform
            .services
            .cache
            .backend
            .get_many("users", &all)
            .await
            .unwrap();
        let handled = cached.iter().filter(|c| c.is_some()).count();
        if handled == all.len() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{handled} of {} users handled; queues: {:?}",
            all.len(),
            services::queue_types()
                .into_iter()
                .filter(|(name, _)| name.starts_with(&queue))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    wait_for(
        LIMIT * 3,
        "the drained classic queue to be deleted",
        || async { (!services::queue_types().contains_key(&queue)).then_some(()) },
    )
    .await;
    eprintln!("{waiting} messages were in the classic queue at the reload");
    // The quorum queues never expire: removed with their lane router, through a
    // broker of the same names (the platform's is closed by its shutdown).
    platform.shutdown().await;
    let cleaner = services::amqp_broker(&config.amqp, DeadLetterConfig::default()).await;
    cleaner.delete_queue(&queue).await.unwrap();
    services::delete_quorum_queues(&[&queue]).await;
}
