//! Queue limits (the specification's `QueueConfigDto.messageTtl` and `maxLength`) on
//! both brokers: a TTL dead-letters what waits too long, a length bound refuses or
//! drops the head, and both change on an existing queue without a redeclaration
//! error (RabbitMQ: the host's policies, through the management API).

use std::time::Duration;
use techub_host::capability::messaging::amqp::AmqpBroker;
use techub_host::capability::messaging::memory::MemoryBroker;
use techub_host::capability::messaging::{
    Broker, Buried, Consumer, DeadLetter, Envelope, Overflow, QueueLimits, QueueSpec, now_ms,
};
use techub_host::config::{AmqpConfig, DeadLetterConfig};
use techub_tests::{services, unique, wait_for};

const LIMIT: Duration = Duration::from_secs(10);

fn message(routing_key: &str, body: &str) -> Envelope {
    Envelope {
        id: uuid::Uuid::new_v4().to_string(),
        routing_key: routing_key.to_string(),
        payload: body.as_bytes().to_vec(),
        headers: Vec::new(),
        correlation_id: None,
        reply_to: None,
        priority: 5,
        persistent: true,
        expiration_ms: None,
        published_at_ms: now_ms(),
        attempt: 1,
        parked: None,
    }
}

fn spec(name: &str, binding: &str, limits: QueueLimits) -> QueueSpec {
    QueueSpec {
        name: name.to_string(),
        bindings: vec![binding.to_string()],
        durable: true,
        limits,
    }
}

fn bounded(max_length: u32, overflow: Overflow) -> QueueLimits {
    QueueLimits {
        max_length: Some(max_length),
        overflow,
        ..QueueLimits::default()
    }
}

fn ttl(ms: u64) -> QueueLimits {
    QueueLimits {
        message_ttl_ms: Some(ms),
        ..QueueLimits::default()
    }
}

async fn letter(broker: &dyn Broker, id: &str) -> DeadLetter {
    wait_for(LIMIT, "the dead letter", || async {
        broker
            .dead_letters(0, 1000)
            .await
            .unwrap()
            .into_iter()
            .find(|d| d.envelope.id == id)
    })
    .await
}

async fn body_of_next(consumer: &mut Box<dyn Consumer>) -> String {
    let delivery = tokio::time::timeout(LIMIT, consumer.next())
        .await
        .expect("a delivery in time")
        .expect("consumer open");
    let body = String::from_utf8(delivery.envelope().payload.clone()).unwrap();
    delivery.ack().await.unwrap();
    body
}

/// Publishes until the broker takes it: a changed policy reaches RabbitMQ's queue
/// process a moment after the API answered.
async fn publish_once_taken(broker: &dyn Broker, envelope: Envelope) {
    wait_for(LIMIT, "the publish to be taken", || {
        let envelope = envelope.clone();
        async move { broker.publish(envelope, None).await.ok() }
    })
    .await;
}

/// How a full queue behaves, where the two kinds differ.
#[derive(Clone, Copy)]
enum Full {
    /// A classic queue: refuses at its bound and parks a copy of what it refused in
    /// the dead-letter queue (`reject-publish-dlx`).
    Classic,
    /// A quorum queue: checks the bound before it takes a message, so it takes one
    /// past it (measured on RabbitMQ 3.10.8: 3 messages under a bound of 2), then
    /// refuses without parking anything (it has only `reject-publish`): the
    /// publisher's `unavailable` is all there is, and its retry.
    Quorum,
}

async fn length_bound_refuses_then_grows(broker: &dyn Broker, full: Full) {
    let topic = unique("maxlen");
    let queue = format!("{topic}.q");
    let binding = format!("{topic}.#");
    let limits = bounded(2, Overflow::RejectPublish);
    broker
        .declare_queue(&spec(&queue, &binding, limits))
        .await
        .unwrap();
    let taken: &[&str] = match full {
        Full::Classic => &["one", "two"],
        Full::Quorum => &["one", "two", "three"],
    };
    for body in taken {
        broker
            .publish(message(&format!("{topic}.x"), body), None)
            .await
            .unwrap();
    }
    let refused = message(&format!("{topic}.x"), "refused");
    let answer = broker.publish(refused.clone(), None).await;
    assert!(
        answer.is_err(),
        "a full queue refuses the publish: {answer:?}"
    );
    match full {
        Full::Classic => {
            let parked = letter(broker, &refused.id).await;
            assert_eq!(
                (parked.reason.as_str(), parked.queue.as_str()),
                ("maxlen", queue.as_str()),
                "what a full queue refuses is parked, not lost"
            );
        }
        Full::Quorum => {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let letters = broker.dead_letters(0, 1000).await.unwrap();
            assert!(
                letters.iter().all(|l| l.envelope.id != refused.id),
                "a quorum queue parks nothing"
            );
        }
    }
    assert_eq!(
        broker.queue_depth(&queue).await.unwrap(),
        Some(taken.len() as u64)
    );

    // The bound grows on the queue as it is: no redeclaration error.
    let grown = taken.len() as u32 + 1;
    broker
        .declare_queue(&spec(
            &queue,
            &binding,
            bounded(grown, Overflow::RejectPublish),
        ))
        .await
        .expect("a changed length bound applies without deleting the queue");
    publish_once_taken(broker, message(&format!("{topic}.x"), "four")).await;
    assert_eq!(
        broker.queue_depth(&queue).await.unwrap(),
        Some(u64::from(grown))
    );
    let mut consumer = broker.consume(&queue, 10).await.unwrap();
    let mut bodies = Vec::new();
    for _ in 0..grown {
        bodies.push(body_of_next(&mut consumer).await);
    }
    let mut expected = taken.to_vec();
    expected.push("four");
    assert_eq!(bodies, expected);
}

async fn drop_head_dead_letters_the_oldest(broker: &dyn Broker) {
    let topic = unique("drophead");
    let queue = format!("{topic}.q");
    broker
        .declare_queue(&spec(
            &queue,
            &format!("{topic}.#"),
            bounded(1, Overflow::DropHead),
        ))
        .await
        .unwrap();
    let old = message(&format!("{topic}.x"), "old");
    broker.publish(old.clone(), None).await.unwrap();
    broker
        .publish(message(&format!("{topic}.x"), "new"), None)
        .await
        .expect("drop-head takes every publish");
    let dropped = letter(broker, &old.id).await;
    assert_eq!(dropped.reason, "maxlen");
    let mut consumer = broker.consume(&queue, 10).await.unwrap();
    assert_eq!(body_of_next(&mut consumer).await, "new");
}

async fn ttl_expires_and_changes(broker: &dyn Broker) {
    let topic = unique("qttl");
    let queue = format!("{topic}.q");
    let binding = format!("{topic}.#");
    broker
        .declare_queue(&spec(&queue, &binding, ttl(200)))
        .await
        .unwrap();
    let stale = message(&format!("{topic}.x"), "stale");
    broker.publish(stale.clone(), None).await.unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let mut consumer = broker.consume(&queue, 10).await.unwrap();
    broker
        .publish(message(&format!("{topic}.x"), "fresh"), None)
        .await
        .unwrap();
    assert_eq!(
        body_of_next(&mut consumer).await,
        "fresh",
        "the message that waited past the queue's TTL is not delivered"
    );
    assert_eq!(letter(broker, &stale.id).await.reason, "expired");

    // Lifting the TTL applies to the queue as it is.
    broker
        .declare_queue(&spec(&queue, &binding, QueueLimits::default()))
        .await
        .expect("a removed TTL applies without deleting the queue");
    // Let RabbitMQ's queue process take the policy change (a moment after the API
    // answered): a message published right away might still get the old TTL.
    tokio::time::sleep(Duration::from_millis(500)).await;
    consumer.close().await;
    let kept = message(&format!("{topic}.x"), "kept");
    broker.publish(kept.clone(), None).await.unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let mut consumer = broker.consume(&queue, 10).await.unwrap();
    assert_eq!(body_of_next(&mut consumer).await, "kept");
}

async fn dead_letter_bound_changes(broker: &dyn Broker, topic: &str, full: Full) {
    let queue = format!("{topic}.dlq.q");
    broker
        .declare_queue(&spec(
            &queue,
            &format!("{topic}.dlq.#"),
            QueueLimits::default(),
        ))
        .await
        .unwrap();
    let mut consumer = broker.consume(&queue, 10).await.unwrap();
    let before = broker.dead_letter_depth().await.unwrap();
    broker
        .set_dead_letter_limits(DeadLetterConfig {
            // Room for one more letter (a quorum queue takes one past its bound).
            max_length: match full {
                Full::Classic => before as u32 + 1,
                Full::Quorum => before as u32,
            },
            // A refused letter comes back soon.
            retry_when_full_ms: 300,
            ..DeadLetterConfig::default()
        })
        .await
        .expect("the dead-letter queue's bound changes in place");
    tokio::time::sleep(Duration::from_millis(500)).await;
    for body in ["a", "b"] {
        broker
            .publish(message(&format!("{topic}.dlq.x"), body), None)
            .await
            .unwrap();
    }
    let first = tokio::time::timeout(LIMIT, consumer.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        first.dead_letter("full test").await.unwrap(),
        Buried::DeadLettered
    );
    let second = tokio::time::timeout(LIMIT, consumer.next())
        .await
        .unwrap()
        .unwrap();
    let second_id = second.envelope().id.clone();
    let parked = second.dead_letter("full test 2").await;
    assert_eq!(
        parked.unwrap(),
        Buried::Parked,
        "the lowered bound refuses the second letter, which waits in the retry queue"
    );
    // Acked from its queue (nothing holds the prefetch window), it comes back after the
    // wait, marked with why it died, at the attempt it died at.
    let back = tokio::time::timeout(LIMIT, consumer.next())
        .await
        .expect("the parked letter comes back after retry_when_full")
        .unwrap();
    assert_eq!(back.envelope().id, second_id);
    assert_eq!(back.envelope().parked.as_deref(), Some("full test 2"));
    assert_eq!(back.envelope().attempt, 1);
    // With room again it is dead-lettered, no longer marked as parked.
    broker
        .set_dead_letter_limits(DeadLetterConfig {
            max_length: before as u32 + 2,
            retry_when_full_ms: 300,
            ..DeadLetterConfig::default()
        })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        back.dead_letter("full test 2").await.unwrap(),
        Buried::DeadLettered
    );
    let letter = wait_for(
        LIMIT,
        "the parked letter in the dead-letter queue",
        || async {
            broker
                .dead_letters(0, 100_000)
                .await
                .unwrap()
                .into_iter()
                .find(|l| l.envelope.id == second_id)
        },
    )
    .await;
    assert_eq!(letter.reason, "full test 2");
    assert_eq!(letter.envelope.parked, None);
}

async fn limits_conform(broker: &dyn Broker) {
    length_bound_refuses_then_grows(broker, Full::Classic).await;
    drop_head_dead_letters_the_oldest(broker).await;
    ttl_expires_and_changes(broker).await;
    dead_letter_bound_changes(broker, &unique("dlqbound"), Full::Classic).await;
}

#[tokio::test]
async fn memory_queue_limits_conform() {
    limits_conform(&MemoryBroker::new(DeadLetterConfig::default())).await;
}

#[tokio::test]
async fn amqp_queue_limits_conform() {
    let broker = connect(&services::amqp_config()).await;
    // The policies it leaves go once their queues expired (`cargo xtask test`
    // removes policies whose queue is gone).
    limits_conform(&broker).await;
}

/// The same on quorum queues (one node of the shared broker), but for the documented
/// differences: a full quorum queue takes one message past its bound and refuses
/// without parking a copy ([`Full::Quorum`]), and drop-head is
/// refused by the configuration for quorum queues (at-least-once dead-lettering needs
/// reject-publish), so it is not run. TTLs expire into the dead-letter queue and
/// change through the policies as on classic queues.
#[tokio::test]
async fn amqp_queue_limits_conform_on_quorum_queues() {
    let config = AmqpConfig {
        queue_kind: techub_host::config::QueueKind::Quorum,
        ..services::amqp_config()
    };
    let broker = connect(&config).await;
    length_bound_refuses_then_grows(&broker, Full::Quorum).await;
    ttl_expires_and_changes(&broker).await;
    dead_letter_bound_changes(&broker, &unique("dlqbound-quorum"), Full::Quorum).await;
    broker
        .delete_queue(&config.dead_letter_queue)
        .await
        .unwrap();
    // This test's own: the classic test's queues of these names are classic.
    services::delete_quorum_queues(&["maxlen-", "qttl-", "dlqbound-quorum-"]).await;
}

/// Without the management API the limits are queue arguments: the first declaration
/// works, a change is refused with what to do about it (never a bare
/// PRECONDITION_FAILED), and the broker keeps serving.
#[tokio::test]
async fn amqp_without_the_management_api_limits_are_arguments() {
    let config = AmqpConfig {
        management_url: Some("http://guest:guest@127.0.0.1:9".to_string()),
        ..services::amqp_config()
    };
    let broker = connect(&config).await;
    let topic = unique("noapi");
    let queue = format!("{topic}.q");
    let binding = format!("{topic}.#");
    broker
        .declare_queue(&spec(&queue, &binding, ttl(60_000)))
        .await
        .unwrap();
    let error = broker
        .declare_queue(&spec(&queue, &binding, ttl(1_000)))
        .await
        .expect_err("RabbitMQ cannot change an argument");
    let text = error.to_string();
    assert!(
        text.contains("management API") && text.contains("delete the queue"),
        "{text}"
    );
    broker
        .publish(message(&format!("{topic}.x"), "still works"), None)
        .await
        .expect("a refused declaration does not take publishing down");
}

async fn connect(config: &AmqpConfig) -> AmqpBroker {
    services::amqp_broker(config, DeadLetterConfig::default()).await
}
