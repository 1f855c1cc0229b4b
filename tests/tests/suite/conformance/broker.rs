//! The broker conformance suite: routing, properties, priorities, retry, dead letters.

use std::time::Duration;
use techub_host::capability::messaging::amqp::AmqpBroker;
use techub_host::capability::messaging::memory::MemoryBroker;
use techub_host::capability::messaging::{
    Broker, Buried, Consumer, DeadLetter, DeadLetterAction, Delivery, Envelope, QueueSpec,
    ReplayTo, now_ms,
};
use techub_host::config::DeadLetterConfig;
use techub_tests::{services, unique, wait_for};

const LIMIT: Duration = Duration::from_secs(10);

fn envelope(routing_key: &str, body: &str) -> Envelope {
    Envelope {
        id: uuid::Uuid::new_v4().to_string(),
        routing_key: routing_key.to_string(),
        payload: body.as_bytes().to_vec(),
        headers: vec![("tenant".to_string(), "t1".to_string())],
        correlation_id: Some("corr-1".to_string()),
        reply_to: Some("reply.here".to_string()),
        priority: 5,
        persistent: true,
        expiration_ms: None,
        published_at_ms: now_ms(),
        attempt: 1,
        parked: None,
    }
}

async fn next(consumer: &mut Box<dyn Consumer>) -> Box<dyn Delivery> {
    tokio::time::timeout(LIMIT, consumer.next())
        .await
        .expect("a delivery in time")
        .expect("consumer open")
}

/// Runs the body on `broker`; the plugin queues it declared.
async fn broker_conforms(broker: &dyn Broker) -> [String; 2] {
    let topic = unique("conf");
    let queue = format!("{topic}.q");
    let other = format!("{topic}.other");
    broker
        .declare_queue(&QueueSpec {
            name: queue.clone(),
            bindings: vec![format!("{topic}.*.created")],
            durable: true,
            limits: Default::default(),
        })
        .await
        .unwrap();
    broker
        .declare_queue(&QueueSpec {
            name: other.clone(),
            bindings: vec![format!("{topic}.#")],
            durable: true,
            limits: Default::default(),
        })
        .await
        .unwrap();
    // Declaring again is harmless.
    broker
        .declare_queue(&QueueSpec {
            name: queue.clone(),
            bindings: vec![format!("{topic}.*.created")],
            durable: true,
            limits: Default::default(),
        })
        .await
        .unwrap();
    let mut consumer = broker.consume(&queue, 10).await.unwrap();
    let mut others = broker.consume(&other, 10).await.unwrap();

    // Topic routing: `*` is one word; unmatched keys do not arrive.
    broker
        .publish(envelope(&format!("{topic}.user.updated"), "no"), None)
        .await
        .unwrap();
    broker
        .publish(envelope(&format!("{topic}.user.x.created"), "no"), None)
        .await
        .unwrap();
    let sent = envelope(&format!("{topic}.user.created"), "yes");
    broker.publish(sent.clone(), None).await.unwrap();
    let got = next(&mut consumer).await;
    assert_eq!(got.envelope(), &sent, "every property survives the trip");
    assert!(!got.redelivered());
    got.ack().await.unwrap();
    for _ in 0..3 {
        next(&mut others).await.ack().await.unwrap();
    }

    // A mandatory publish says whether a queue took the message.
    let routed = envelope(&format!("{topic}.order.created"), "routed");
    assert!(broker.publish_routed(routed.clone()).await.unwrap());
    let got = next(&mut consumer).await;
    assert_eq!(got.envelope().id, routed.id);
    got.ack().await.unwrap();
    next(&mut others).await.ack().await.unwrap();
    let unrouted = envelope(&format!("nobody.{topic}.order.created"), "lost");
    assert!(
        !broker.publish_routed(unrouted).await.unwrap(),
        "no queue is bound to this key"
    );

    // Retry reaches only this queue, with the attempt counted.
    let failing = envelope(&format!("{topic}.order.created"), "retry me");
    broker.publish(failing.clone(), None).await.unwrap();
    next(&mut others).await.ack().await.unwrap();
    next(&mut consumer)
        .await
        .retry(Duration::from_millis(200))
        .await
        .unwrap();
    let again = next(&mut consumer).await;
    assert_eq!(again.envelope().id, failing.id);
    assert_eq!(again.envelope().attempt, 2);
    assert_eq!(again.envelope().payload, failing.payload);
    assert_eq!(
        again.envelope().routing_key,
        failing.routing_key,
        "a retry keeps the routing key it was published with"
    );

    // Dead-lettering keeps the message, its queue and the reason.
    assert_eq!(
        again.dead_letter("gave up").await.unwrap(),
        Buried::DeadLettered
    );
    let letter = wait_for(LIMIT, "the dead letter", || async {
        broker
            .dead_letters(0, 1000)
            .await
            .unwrap()
            .into_iter()
            .find(|d| d.envelope.id == failing.id)
    })
    .await;
    assert_eq!(letter.reason, "gave up");
    assert_eq!(letter.queue, queue);
    assert_eq!(letter.envelope.attempt, 2);
    assert!(letter.trusted, "a letter the host dead-lettered is trusted");
    // Peeking does not consume.
    assert!(
        broker
            .dead_letters(0, 1000)
            .await
            .unwrap()
            .iter()
            .any(|d| d.envelope.id == failing.id)
    );
    let nothing = tokio::time::timeout(Duration::from_millis(300), others.next()).await;
    assert!(nothing.is_err(), "the other queue got no retry copy");

    // Delayed publish arrives, later.
    let started = std::time::Instant::now();
    let delayed = envelope(&format!("{topic}.late.created"), "late");
    broker
        .publish(delayed.clone(), Some(Duration::from_millis(300)))
        .await
        .unwrap();
    let got = next(&mut consumer).await;
    assert_eq!(got.envelope().id, delayed.id);
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "delivered after the delay"
    );
    got.ack().await.unwrap();
    next(&mut others).await.ack().await.unwrap();

    // An unsettled delivery comes back, marked redelivered.
    let dropped = envelope(&format!("{topic}.drop.created"), "drop");
    broker.publish(dropped.clone(), None).await.unwrap();
    drop(next(&mut consumer).await);
    let back = next(&mut consumer).await;
    assert_eq!(back.envelope().id, dropped.id);
    assert!(back.redelivered());
    back.ack().await.unwrap();
    [queue, other]
}

async fn priorities_are_honoured(broker: &dyn Broker) {
    let (_, order) = delivery_order(broker).await;
    assert_eq!(order, ["urgent", "high", "normal", "low"]);
}

/// Four messages of each priority queued before anyone consumes (low, urgent,
/// normal, high), then read back: the queue, and the order they came in.
async fn delivery_order(broker: &dyn Broker) -> (String, Vec<String>) {
    let topic = unique("prio");
    let queue = format!("{topic}.q");
    broker
        .declare_queue(&QueueSpec {
            name: queue.clone(),
            bindings: vec![format!("{topic}.#")],
            durable: true,
            limits: Default::default(),
        })
        .await
        .unwrap();
    for (priority, body) in [(1, "low"), (10, "urgent"), (5, "normal"), (8, "high")] {
        let mut e = envelope(&format!("{topic}.x"), body);
        e.priority = priority;
        broker.publish(e, None).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // A window that holds them all, as a busy consumer's would, filled before the
    // first is taken: priorities order what is waiting, not what arrives later.
    let mut consumer = broker.consume(&queue, 10).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut order = Vec::new();
    for _ in 0..4 {
        let d = next(&mut consumer).await;
        order.push(String::from_utf8(d.envelope().payload.clone()).unwrap());
        d.ack().await.unwrap();
    }
    (queue, order)
}

fn dead_letter_config() -> DeadLetterConfig {
    DeadLetterConfig::default()
}

/// Dead-letters one message of a fresh queue; the queue and the letter.
async fn bury(broker: &dyn Broker, topic: &str, body: &str) -> (String, Envelope) {
    let queue = format!("{topic}.{body}.q");
    broker
        .declare_queue(&QueueSpec {
            name: queue.clone(),
            bindings: vec![format!("{topic}.{body}.#")],
            durable: true,
            limits: Default::default(),
        })
        .await
        .unwrap();
    let mut consumer = broker.consume(&queue, 10).await.unwrap();
    let sent = envelope(&format!("{topic}.{body}.happened"), body);
    broker.publish(sent.clone(), None).await.unwrap();
    let delivery = next(&mut consumer).await;
    delivery.dead_letter("broken on purpose").await.unwrap();
    consumer.close().await;
    (queue, sent)
}

/// Listing pages, replay (into the queue it died in, or by routing key) and purge.
async fn dead_letter_tooling_works(broker: &dyn Broker) {
    let topic = unique("dlq");
    let (queue_a, a) = bury(broker, &topic, "a").await;
    let (_, b) = bury(broker, &topic, "b").await;
    let (_, c) = bury(broker, &topic, "c").await;
    let ids = |letters: Vec<DeadLetter>| -> Vec<String> {
        letters.into_iter().map(|l| l.envelope.id).collect()
    };
    wait_for(LIMIT, "three dead letters", || async {
        (broker.dead_letter_depth().await.unwrap() == 3).then_some(())
    })
    .await;
    assert_eq!(
        ids(broker.dead_letters(0, 2).await.unwrap()),
        [a.id.clone(), b.id.clone()]
    );
    assert_eq!(
        ids(broker.dead_letters(2, 2).await.unwrap()),
        vec![c.id.clone()]
    );
    let letter = &broker.dead_letters(0, 1).await.unwrap()[0];
    assert_eq!(
        letter.envelope.routing_key, a.routing_key,
        "the original key"
    );
    assert!(letter.died_at_ms >= a.published_at_ms, "{letter:?}");
    assert!(letter.died_at_ms <= now_ms());

    // Replay `a` into the queue it died in: it arrives as a first attempt with its
    // routing key, and leaves the dead-letter queue; the others stay, in order.
    let pick_a = |l: &DeadLetter| match l.envelope.id == a.id {
        true => DeadLetterAction::Replay(ReplayTo::Queue),
        false => DeadLetterAction::Keep,
    };
    let done = broker.rework_dead_letters(&pick_a).await.unwrap();
    assert_eq!(
        done.replayed,
        [(a.id.clone(), Some(queue_a.clone()))],
        "{done:?}"
    );
    assert_eq!(done.kept, 2);
    let mut consumer = broker.consume(&queue_a, 10).await.unwrap();
    let again = next(&mut consumer).await;
    assert_eq!(again.envelope().id, a.id);
    assert_eq!(again.envelope().attempt, 1, "a fresh attempt count");
    assert_eq!(again.envelope().routing_key, a.routing_key);
    assert_eq!(again.envelope().payload, a.payload);
    again.ack().await.unwrap();
    assert_eq!(
        ids(broker.dead_letters(0, 10).await.unwrap()),
        [b.id.clone(), c.id.clone()]
    );

    // Replay `b` by routing key: it reaches the queues bound to that key.
    let (queue_d, _) = bury(broker, &topic, "d").await;
    let pick_b = |l: &DeadLetter| match l.envelope.id == b.id {
        true => DeadLetterAction::Replay(ReplayTo::RoutingKey(format!("{topic}.d.replayed"))),
        false => DeadLetterAction::Keep,
    };
    let done = broker.rework_dead_letters(&pick_b).await.unwrap();
    assert_eq!(done.replayed, [(b.id.clone(), None)], "{done:?}");
    let mut consumer_d = broker.consume(&queue_d, 10).await.unwrap();
    let moved = next(&mut consumer_d).await;
    assert_eq!(moved.envelope().id, b.id);
    assert_eq!(moved.envelope().routing_key, format!("{topic}.d.replayed"));
    moved.ack().await.unwrap();

    // Purge everything older than an hour: nothing; then all of it.
    let hour_ago = now_ms() - 3_600_000;
    let done = broker
        .rework_dead_letters(&|l: &DeadLetter| match l.died_at_ms < hour_ago {
            true => DeadLetterAction::Purge,
            false => DeadLetterAction::Keep,
        })
        .await
        .unwrap();
    assert_eq!((done.purged, done.kept), (0, 2), "{done:?}");
    let done = broker
        .rework_dead_letters(&|_: &DeadLetter| DeadLetterAction::Purge)
        .await
        .unwrap();
    assert_eq!(done.purged, 2, "{done:?}");
    assert_eq!(broker.dead_letter_depth().await.unwrap(), 0);
    assert_eq!(broker.queue_depth(&queue_d).await.unwrap(), Some(0));
    assert_eq!(
        broker.queue_depth(&format!("{topic}.nope")).await.unwrap(),
        None
    );
}

#[tokio::test]
async fn memory_broker_conforms() {
    let broker = MemoryBroker::new(dead_letter_config());
    let _ = broker_conforms(&broker).await;
    priorities_are_honoured(&broker).await;
}

#[tokio::test]
async fn memory_dead_letter_tooling_works() {
    dead_letter_tooling_works(&MemoryBroker::new(dead_letter_config())).await;
}

#[tokio::test]
async fn amqp_dead_letter_tooling_works() {
    dead_letter_tooling_works(&amqp().await).await;
}

#[tokio::test]
async fn amqp_replay_into_a_deleted_queue_keeps_the_letter() {
    let broker = amqp().await;
    let topic = unique("dlq-gone");
    let (queue, letter) = bury(&broker, &topic, "a").await;
    services::delete_queue(&queue).await;
    let done = broker
        .rework_dead_letters(&|_: &DeadLetter| DeadLetterAction::Replay(ReplayTo::Queue))
        .await
        .unwrap();
    assert!(done.replayed.is_empty(), "{done:?}");
    assert!(done.errors[0].contains("no longer exists"), "{done:?}");
    let kept = broker.dead_letters(0, 10).await.unwrap();
    assert_eq!(
        kept.len(),
        1,
        "a replay the broker did not take keeps the letter"
    );
    assert_eq!(kept[0].envelope.id, letter.id);
}

async fn amqp() -> AmqpBroker {
    connect(&services::amqp_config()).await
}

/// A broker on the shared node with `config`'s names.
async fn connect(config: &techub_host::config::AmqpConfig) -> AmqpBroker {
    services::amqp_broker(config, dead_letter_config()).await
}

#[tokio::test]
async fn amqp_broker_conforms() {
    let broker = amqp().await;
    let _ = broker_conforms(&broker).await;
    priorities_are_honoured(&broker).await;
}

#[tokio::test]
async fn amqp_retry_survives_its_retry_queue_expiring() {
    let broker = amqp().await;
    let topic = unique("gone");
    let queue = format!("{topic}.q");
    let spec = QueueSpec {
        name: queue.clone(),
        bindings: vec![format!("{topic}.#")],
        durable: true,
        limits: Default::default(),
    };
    broker.declare_queue(&spec).await.unwrap();
    let mut consumer = broker.consume(&queue, 10).await.unwrap();
    broker
        .publish(envelope(&format!("{topic}.x"), "m"), None)
        .await
        .unwrap();
    next(&mut consumer)
        .await
        .retry(Duration::from_millis(100))
        .await
        .unwrap();
    let again = next(&mut consumer).await;
    assert_eq!(again.envelope().attempt, 2);

    // The idle retry queue expires; the host declared it before and does not know.
    services::delete_queue(&format!("{queue}.retry.100")).await;
    again.retry(Duration::from_millis(100)).await.unwrap();
    let third = next(&mut consumer).await;
    assert_eq!(third.envelope().attempt, 3, "the retry was not dropped");
    third.ack().await.unwrap();
}

#[tokio::test]
async fn amqp_delayed_publish_survives_its_delay_queue_expiring() {
    let config = services::amqp_config();
    let broker = connect(&config).await;
    let topic = unique("later");
    let queue = format!("{topic}.q");
    broker
        .declare_queue(&QueueSpec {
            name: queue.clone(),
            bindings: vec![format!("{topic}.#")],
            durable: true,
            limits: Default::default(),
        })
        .await
        .unwrap();
    let mut consumer = broker.consume(&queue, 10).await.unwrap();
    broker
        .publish(
            envelope(&format!("{topic}.a"), "1"),
            Some(Duration::from_millis(100)),
        )
        .await
        .unwrap();
    next(&mut consumer).await.ack().await.unwrap();
    services::delete_queue(&format!("{}.100", config.delayed_exchange)).await;
    broker
        .publish(
            envelope(&format!("{topic}.b"), "2"),
            Some(Duration::from_millis(100)),
        )
        .await
        .unwrap();
    let got = next(&mut consumer).await;
    assert_eq!(got.envelope().payload, b"2");
    got.ack().await.unwrap();
}

/// The same body on quorum queues (a one-node quorum queue on the shared broker):
/// routing, properties, retries, dead letters (read again and again without being
/// dropped: the dead-letter queue has no delivery limit), delayed publishes,
/// redelivery. Every queue the host declared is a quorum queue: each plugin queue
/// two, its lanes (`<name>.quorum` and `<name>.quorum.high`). The documented
/// difference: two priority levels instead of ten.
#[tokio::test]
async fn amqp_broker_conforms_on_quorum_queues() {
    let (config, broker) = amqp_quorum().await;
    let queues = broker_conforms(&broker).await;
    // A dead-letter queue of its own: the body above left a letter in that one.
    let (tooling_config, tooling) = amqp_quorum().await;
    dead_letter_tooling_works(&tooling).await;
    let two_levels = two_priority_levels_on_quorum(&broker).await;
    let types = services::queue_types();
    let lanes = |q: &String| [format!("{q}.quorum"), format!("{q}.quorum.high")];
    let physical: Vec<String> = queues.iter().chain([&two_levels]).flat_map(lanes).collect();
    for queue in physical.iter().chain([&config.dead_letter_queue]) {
        assert_eq!(
            types.get(queue).map(String::as_str),
            Some("quorum"),
            "{queue}: {types:?}"
        );
    }
    // The body's messages are of priority 5: the high lane's, retried in it.
    let retry = format!("{}.quorum.high.retry.200", queues[0]);
    assert_eq!(
        types.get(&retry).map(String::as_str),
        Some("quorum"),
        "{retry}: {types:?}"
    );
    for queue in queues
        .iter()
        .chain([&config.dead_letter_queue, &two_levels, &retry])
    {
        broker.delete_queue(queue).await.unwrap();
    }
    // The dead-letter tooling's (`dlq-<id>.<letter>.q`, quorum here only) and its
    // broker's dead-letter queue.
    tooling
        .delete_queue(&tooling_config.dead_letter_queue)
        .await
        .unwrap();
    services::delete_quorum_queues(&["dlq-"]).await;
}

/// A broker on the shared node whose queues are quorum queues, with names of its own.
async fn amqp_quorum() -> (techub_host::config::AmqpConfig, AmqpBroker) {
    let mut config = services::amqp_config();
    config.queue_kind = techub_host::config::QueueKind::Quorum;
    let broker = connect(&config).await;
    (config, broker)
}

/// Priorities on quorum queues: two levels, as RabbitMQ 4 has them (5 and above
/// first, in publish order among themselves); on RabbitMQ 3.x the host's lanes.
async fn two_priority_levels_on_quorum(broker: &dyn Broker) -> String {
    let (queue, order) = delivery_order(broker).await;
    assert_eq!(order, ["urgent", "normal", "high", "low"]);
    queue
}
