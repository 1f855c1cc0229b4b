//! Messages published as the operator: the admin endpoint, `techub-host publish`,
//! schedules and webhooks. Checked as a plugin's publish would be.

use super::MessagingService;
use super::{Envelope, now_ms, priority_level};
use anyhow::Context;

/// What an operator's publish may set besides the routing key and payload.
#[derive(Debug, Clone, Default)]
pub struct OperatorMessage {
    /// Queue priority; `None`: the queue types that bind the key decide.
    pub priority: Option<crate::capability::bindings::techub::platform::messaging::Priority>,
    /// The message id (a plugin's idempotency key); `None`: a fresh one.
    pub message_id: Option<String>,
    /// The correlation id.
    pub correlation_id: Option<String>,
    /// Application headers (names starting with `x-` are refused).
    pub headers: Vec<(String, String)>,
}

/// Publishes as the operator (the admin endpoint, schedules): persistent, checked as a
/// plugin's publish would be, with the routing key's default priority unless given.
pub async fn publish_operator(
    messaging: &MessagingService,
    max_message_bytes: usize,
    routing_key: &str,
    payload: Vec<u8>,
    message: OperatorMessage,
) -> anyhow::Result<String> {
    let envelope = operator_envelope(messaging, max_message_bytes, routing_key, payload, message)?;
    let id = envelope.id.clone();
    // Pending before the publish: a fast consumer may otherwise mark it done first.
    messaging.tracker.published(&id, None);
    if let Err(error) = messaging.broker.publish(envelope, None).await {
        messaging.tracker.forget(&id);
        return Err(error).context("could not publish");
    }
    Ok(id)
}

/// The envelope of an operator's message, checked as a plugin's publish would be
/// (the routing key, the size, the options); the error says what is wrong with it.
pub fn operator_envelope(
    messaging: &MessagingService,
    max_message_bytes: usize,
    routing_key: &str,
    payload: Vec<u8>,
    message: OperatorMessage,
) -> anyhow::Result<Envelope> {
    crate::names::routing::validate_routing_key(routing_key).map_err(anyhow::Error::msg)?;
    anyhow::ensure!(
        payload.len() <= max_message_bytes,
        "payload larger than host.max_message_bytes"
    );
    super::check_options(
        &crate::capability::bindings::techub::platform::messaging::PublishOptions {
            priority: message.priority,
            persistent: true,
            expiration_ms: None,
            delay_ms: None,
            correlation_id: message.correlation_id.clone(),
            reply_to: None,
            headers: message.headers.clone(),
            message_id: message.message_id.clone(),
        },
    )
    .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let id = message
        .message_id
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let priority = message.priority;
    Ok(Envelope {
        id,
        routing_key: routing_key.to_string(),
        payload,
        headers: message.headers,
        correlation_id: message.correlation_id,
        reply_to: None,
        priority: priority.map_or_else(|| messaging.priorities.of(routing_key), priority_level),
        persistent: true,
        expiration_ms: None,
        published_at_ms: now_ms(),
        attempt: 1,
        parked: None,
    })
}
