//! Queue kinds on RabbitMQ: classic (one node) or quorum (Raft over the cluster).
//!
//! A quorum queue is declared with `x-queue-type = quorum` and, when it dead-letters
//! (plugin, retry and delay queues), with at-least-once dead-lettering
//! (`x-dead-letter-strategy = at-least-once`, which RabbitMQ honours only with
//! `x-overflow = reject-publish`): a message leaves the queue for the dead-letter
//! exchange only once the queue it goes to has confirmed it. A plugin queue also gets
//! `x-delivery-limit` (`amqp.delivery_limit`): deliveries the broker makes of one
//! message that was never settled (its consumer's connection died each time) before
//! it dead-letters it with reason `delivery_limit`. The host's own retry count fires
//! first for a handler that fails (each retry is a new message, its delivery count
//! new too); the delivery limit only for a message that keeps killing its consumer.
//!
//! The dead-letter queue has no delivery limit: the dead-letter tooling reads letters
//! by taking and returning them, and each return counts as a delivery (measured on
//! 3.10.8: `x-delivery-limit = -1` drops a letter at its first return).
//!
//! No `x-max-priority`: RabbitMQ before 4.0 refuses it on a quorum queue and has no
//! priorities on them; 4.0 and later give quorum queues two levels (priority 5 and
//! above first) without it. [`quorum_priorities`] tells which broker this is, and
//! where it has none the host gives quorum queues the same two levels as lanes
//! (`physical.rs`).

use super::convert::{string, table};
use crate::config::QueueKind;
use lapin::options::{
    BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::AMQPValue;
use lapin::{BasicProperties, Connection};

/// What the queue is for, for the arguments its kind needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    /// A plugin's queue: consumed, dead-letters, delivery-limited.
    Consumed,
    /// A retry or delay queue: dead-letters on TTL, never consumed.
    Waiting,
    /// The dead-letter queue: the end of the line.
    DeadLetters,
}

/// The arguments a queue of `kind` in `role` is declared with, beside its own.
pub(super) fn arguments(
    kind: QueueKind,
    role: Role,
    delivery_limit: u32,
) -> Vec<(&'static str, AMQPValue)> {
    match kind {
        QueueKind::Classic => match role {
            // Priorities 0..=10 (the specification's).
            Role::Consumed => vec![("x-max-priority", AMQPValue::ShortShortUInt(10))],
            Role::Waiting | Role::DeadLetters => Vec::new(),
        },
        QueueKind::Quorum => {
            let mut args = vec![("x-queue-type", string("quorum"))];
            if role != Role::DeadLetters {
                args.push(("x-dead-letter-strategy", string("at-least-once")));
                args.push(("x-overflow", string("reject-publish")));
            }
            if role == Role::Consumed {
                args.push((
                    "x-delivery-limit",
                    AMQPValue::LongLongInt(delivery_limit.into()),
                ));
            }
            args
        }
    }
}

/// Whether the broker delivers a quorum queue's messages by priority (RabbitMQ 4.0
/// and later), found by trying it: a quorum queue of its own takes a priority-0 and
/// then a priority-9 message, and the one it hands out first says. lapin does not
/// expose the server's version, and behaviour is what the host depends on anyway.
/// About 35 ms on one node here, once per host start. An error (a broker without
/// quorum queues at all) is reported as none: a quorum queue declared later fails
/// with the broker's own refusal.
pub(super) async fn quorum_priorities(connection: &Connection) -> Result<bool, String> {
    let queue = format!("techub.probe.{}", uuid::Uuid::new_v4().simple());
    let channel = connection
        .create_channel()
        .await
        .map_err(|e| e.to_string())?;
    let probe = async {
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        let durable = QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        };
        let args = table(&[("x-queue-type", string("quorum"))]);
        channel
            .queue_declare(queue.as_str().into(), durable, args)
            .await?;
        for priority in [0, 9] {
            channel
                .basic_publish(
                    "".into(),
                    queue.as_str().into(),
                    BasicPublishOptions::default(),
                    b"probe",
                    BasicProperties::default().with_priority(priority),
                )
                .await?
                .await?;
        }
        let first = channel
            .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: true })
            .await?;
        Ok::<_, lapin::Error>(first.and_then(|m| *m.delivery.properties.priority()) == Some(9))
    };
    let answer = probe.await.map_err(|e| e.to_string());
    if channel.status().connected() {
        let _ = channel
            .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
            .await;
        let _ = channel.close(200, "probed".into()).await;
    }
    answer
}
