//! The broker conformance suite: routing, properties, priorities, retry, dead letters.

use std::time::Duration;
use techub_host::capability::messaging::amqp::AmqpBroker;
use techub_host::capability::messaging::memory::MemoryBroker;
use techub_host::capability::messaging::{Broker, Consumer, Delivery, Envelope, QueueSpec, now_ms};
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
    }
}

async fn next(consumer: &mut Box<dyn Consumer>) -> Box<dyn Delivery> {
    tokio::time::timeout(LIMIT, consumer.next())
        .await
        .expect("a delivery in time")
        .expect("consumer open")
}

async fn broker_conforms(broker: &dyn Broker) {
    let topic = unique("conf");
    let queue = format!("{topic}.q");
    let other = format!("{topic}.other");
    broker
        .declare_queue(&QueueSpec {
            name: queue.clone(),
            bindings: vec![format!("{topic}.*.created")],
            durable: true,
        })
        .await
        .unwrap();
    broker
        .declare_queue(&QueueSpec {
            name: other.clone(),
            bindings: vec![format!("{topic}.#")],
            durable: true,
        })
        .await
        .unwrap();
    // Declaring again is harmless.
    broker
        .declare_queue(&QueueSpec {
            name: queue.clone(),
            bindings: vec![format!("{topic}.*.created")],
            durable: true,
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

    // Dead-lettering keeps the message, its queue and the reason.
    again.dead_letter("gave up").await.unwrap();
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
}

async fn priorities_are_honoured(broker: &dyn Broker) {
    let topic = unique("prio");
    let queue = format!("{topic}.q");
    broker
        .declare_queue(&QueueSpec {
            name: queue.clone(),
            bindings: vec![format!("{topic}.#")],
            durable: true,
        })
        .await
        .unwrap();
    // Queue them before anyone consumes, then read them back in priority order.
    for (priority, body) in [(1, "low"), (10, "urgent"), (5, "normal"), (8, "high")] {
        let mut e = envelope(&format!("{topic}.x"), body);
        e.priority = priority;
        broker.publish(e, None).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut consumer = broker.consume(&queue, 1).await.unwrap();
    let mut order = Vec::new();
    for _ in 0..4 {
        let d = next(&mut consumer).await;
        order.push(String::from_utf8(d.envelope().payload.clone()).unwrap());
        d.ack().await.unwrap();
    }
    assert_eq!(order, ["urgent", "high", "normal", "low"]);
}

fn dead_letter_config() -> DeadLetterConfig {
    DeadLetterConfig::default()
}

#[tokio::test]
async fn memory_broker_conforms() {
    let broker = MemoryBroker::new(dead_letter_config());
    broker_conforms(&broker).await;
    priorities_are_honoured(&broker).await;
}

async fn amqp() -> AmqpBroker {
    AmqpBroker::connect(
        &services::amqp_config(),
        dead_letter_config(),
        Default::default(),
        Default::default(),
    )
    .await
    .unwrap_or_else(|e| panic!("{}", services::rabbitmq_hint(&e)))
}

#[tokio::test]
async fn amqp_broker_conforms() {
    let broker = amqp().await;
    broker_conforms(&broker).await;
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
    let broker = AmqpBroker::connect(
        &config,
        dead_letter_config(),
        Default::default(),
        Default::default(),
    )
    .await
    .unwrap_or_else(|e| panic!("{}", services::rabbitmq_hint(&e)));
    let topic = unique("later");
    let queue = format!("{topic}.q");
    broker
        .declare_queue(&QueueSpec {
            name: queue.clone(),
            bindings: vec![format!("{topic}.#")],
            durable: true,
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
