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
//! No `x-max-priority`: RabbitMQ before 4.0 refuses it on a quorum queue, whose
//! messages are then delivered in publish order whatever their priority; 4.0 and
//! later give quorum queues two levels (priority 5 and above first).

use super::convert::string;
use crate::config::QueueKind;
use lapin::types::AMQPValue;

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
