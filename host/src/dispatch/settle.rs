//! What happens to a delivery after its handler: the seed's retry policy.

use super::Worker;
use crate::capability::bindings::Outcome;
use crate::capability::messaging::{Buried, Delivery, MessageStatus};
use crate::capability::truncate;
use crate::config::QueuePolicy;
use crate::metrics::QueueEvent;
use crate::runtime::InvocationError;

/// What settling needs of the message once the delivery is gone.
struct Seen {
    id: String,
    attempt: u32,
}

/// Longest failure reason kept: it travels as a header of the dead letter (one AMQP
/// frame) and into the log, and a plugin chooses its length.
const MAX_REASON_BYTES: usize = 1024;

/// `reason` cut to [`MAX_REASON_BYTES`] at a character boundary.
fn bounded(reason: &str) -> String {
    let mut reason = reason.to_string();
    let cut = truncate(&mut reason, MAX_REASON_BYTES);
    if cut > 0 {
        reason.push_str(&format!("… ({cut} bytes cut)"));
    }
    reason
}

/// Acks, retries or dead-letters `delivery` by the handler's result. If the broker
/// fails to settle it, the delivery stays unacknowledged and the broker redelivers it.
/// A dead letter the full dead-letter queue refuses waits in the retry queue
/// ([`Buried::Parked`]).
pub(super) async fn settle(
    worker: &Worker,
    policy: &QueuePolicy,
    delivery: Box<dyn Delivery>,
    result: Result<Outcome, InvocationError>,
) {
    // Kept apart from the delivery, which settling consumes.
    let envelope = &Seen {
        id: delivery.envelope().id.clone(),
        attempt: delivery.envelope().attempt,
    };
    let plugin = &worker.plugin;
    let (settled, status) = match result {
        Ok(Outcome::Ok) => (delivery.ack().await, MessageStatus::Completed),
        Ok(Outcome::Reject(reason)) => {
            let reason = bounded(&reason);
            tracing::warn!(%plugin, id = %envelope.id, %reason, "rejected; dead-lettering");
            buried(delivery.dead_letter(&format!("rejected: {reason}")).await)
        }
        Ok(Outcome::Retry(reason)) => {
            let reason = bounded(&reason);
            retry_or_bury(worker, policy, delivery, envelope, &reason).await
        }
        Err(failure) => {
            tracing::warn!(%plugin, id = %envelope.id, attempt = envelope.attempt, %failure, "handler failed");
            retry_or_bury(
                worker,
                policy,
                delivery,
                envelope,
                &bounded(&failure.to_string()),
            )
            .await
        }
    };
    match settled {
        Ok(()) => {
            let event = match status {
                MessageStatus::Completed => Some(QueueEvent::Acked),
                MessageStatus::Retrying => Some(QueueEvent::Retried),
                MessageStatus::DeadLetter => Some(QueueEvent::DeadLettered),
                _ => None,
            };
            if let Some(event) = event {
                worker.queue_counters.record(event);
            }
            worker.track(&envelope.id, status)
        }
        Err(error) => {
            worker.track(&envelope.id, MessageStatus::Failed);
            tracing::error!(%plugin, id = %envelope.id, %error, "could not settle the delivery; the broker will redeliver it")
        }
    }
}

/// The result of a dead-lettering as settling records it: a parked letter is
/// retrying (it comes back to be dead-lettered again).
fn buried(
    result: crate::capability::BackendResult<Buried>,
) -> (Result<(), crate::capability::BackendError>, MessageStatus) {
    match result {
        Ok(Buried::DeadLettered) => (Ok(()), MessageStatus::DeadLetter),
        Ok(Buried::Parked) => (Ok(()), MessageStatus::Retrying),
        Err(error) => (Err(error), MessageStatus::DeadLetter),
    }
}

async fn retry_or_bury(
    worker: &Worker,
    policy: &QueuePolicy,
    delivery: Box<dyn Delivery>,
    envelope: &Seen,
    reason: &str,
) -> (Result<(), crate::capability::BackendError>, MessageStatus) {
    let retries_done = envelope.attempt.saturating_sub(1);
    if retries_done < policy.max_retries {
        let delay = policy.retry_delay(envelope.attempt);
        tracing::info!(plugin = %worker.plugin, id = %envelope.id, attempt = envelope.attempt, delay_ms = delay.as_millis() as u64, %reason, "retrying");
        (delivery.retry(delay).await, MessageStatus::Retrying)
    } else {
        let reason = format!(
            "retries exhausted after {} attempts: {reason}",
            envelope.attempt
        );
        tracing::warn!(plugin = %worker.plugin, id = %envelope.id, %reason, "dead-lettering");
        buried(delivery.dead_letter(&reason).await)
    }
}

/// Dead-letters a delivery of `size` bytes, over `host.max_message_bytes` (`max`),
/// without running the plugin: that limit bounds what the host publishes, but the
/// broker takes far larger messages from other publishers, and retrying one would copy
/// it into an instance (and past its memory limit) on every attempt.
pub(super) async fn dead_letter_oversize(
    worker: &Worker,
    delivery: Box<dyn Delivery>,
    size: usize,
    max: usize,
) {
    let reason = format!(
        "the message is {size} bytes, more than host.max_message_bytes ({max}); not handed to the plugin"
    );
    worker.queue_counters.record(QueueEvent::Delivered);
    dead_letter_unhandled(worker, delivery, &reason).await
}

/// Dead-letters a delivery without running the plugin: one that may not reach it, or
/// one the full dead-letter queue refused before, back from its retry queue.
pub(super) async fn dead_letter_unhandled(
    worker: &Worker,
    delivery: Box<dyn Delivery>,
    reason: &str,
) {
    let id = delivery.envelope().id.clone();
    tracing::warn!(plugin = %worker.plugin, %id, %reason, "dead-lettering");
    match delivery.dead_letter(reason).await {
        Ok(Buried::DeadLettered) => {
            worker.queue_counters.record(QueueEvent::DeadLettered);
            worker.track(&id, MessageStatus::DeadLetter);
        }
        Ok(Buried::Parked) => worker.track(&id, MessageStatus::Retrying),
        Err(error) => {
            worker.track(&id, MessageStatus::Failed);
            tracing::error!(plugin = %worker.plugin, %id, %error, "could not dead-letter the delivery; the broker will redeliver it");
        }
    }
}
