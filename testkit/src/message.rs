//! A message into the plugin ([`TestMessage`]) and what came of it ([`Handled`]).

use crate::capture::LogRecord;
use techub_host::bindings::techub::platform::messaging::Priority;
use techub_host::bindings::{Delivery, Outcome as WitOutcome};
use techub_host::capability::messaging::Envelope;
use techub_host::runtime::InvocationError;

/// A message to deliver: routing key and payload, and what else a publisher sets.
#[derive(Debug, Clone)]
pub struct TestMessage {
    delivery: Delivery,
    queue: Option<String>,
}

impl TestMessage {
    /// A message with `routing_key` and a raw `payload`.
    pub fn new(routing_key: &str, payload: impl Into<Vec<u8>>) -> Self {
        Self {
            delivery: Delivery {
                id: uuid::Uuid::new_v4().to_string(),
                queue: String::new(),
                routing_key: routing_key.into(),
                payload: payload.into(),
                headers: Vec::new(),
                correlation_id: None,
                reply_to: None,
                priority: Priority::Normal,
                published_at_ms: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis() as u64)
                    .unwrap_or_default(),
                attempt: 1,
                redelivered: false,
            },
            queue: None,
        }
    }

    /// A message whose payload is `value` as JSON.
    pub fn json(routing_key: &str, value: &impl serde::Serialize) -> Self {
        let payload = serde_json::to_vec(value).expect("the value serializes to JSON");
        Self::new(routing_key, payload)
    }

    /// The message id (what a plugin's idempotency keys on); default: a fresh one.
    pub fn id(mut self, id: &str) -> Self {
        self.delivery.id = id.into();
        self
    }

    /// A header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.delivery.headers.push((name.into(), value.into()));
        self
    }

    /// The correlation id.
    pub fn correlation_id(mut self, id: &str) -> Self {
        self.delivery.correlation_id = Some(id.into());
        self
    }

    /// The attempt (2 and more: a redelivery after `retry`).
    pub fn attempt(mut self, attempt: u32) -> Self {
        self.delivery.attempt = attempt.max(1);
        self.delivery.redelivered = attempt > 1;
        self
    }

    /// When it was published, in ms since the Unix epoch (default: now).
    pub fn published_at_ms(mut self, ms: u64) -> Self {
        self.delivery.published_at_ms = ms;
        self
    }

    /// The queue type it arrives through; default: the plugin's first.
    pub fn queue(mut self, queue: &str) -> Self {
        self.queue = Some(queue.into());
        self
    }

    pub(crate) fn into_delivery(self, default_queue: &str) -> Delivery {
        let mut delivery = self.delivery;
        delivery.queue = self.queue.unwrap_or_else(|| default_queue.to_string());
        delivery
    }
}

/// How a delivery ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Handled: the host acknowledges it.
    Ok,
    /// `Failure::retry(reason)`: the host tries again after the queue's backoff.
    Retry(String),
    /// `Failure::reject(reason)`: the host dead-letters it with the reason.
    Reject(String),
    /// The plugin trapped (a panic) or hit a limit (CPU, time, memory); the host
    /// counts it as a retry. The payload says which.
    Failed(String),
}

impl Outcome {
    pub(crate) fn of(result: &Result<WitOutcome, InvocationError>) -> Self {
        match result {
            Ok(WitOutcome::Ok) => Self::Ok,
            Ok(WitOutcome::Retry(reason)) => Self::Retry(reason.clone()),
            Ok(WitOutcome::Reject(reason)) => Self::Reject(reason.clone()),
            Err(error) => Self::Failed(error.to_string()),
        }
    }
}

/// A message the plugin published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// Its routing key.
    pub routing_key: String,
    /// Its payload.
    pub payload: Vec<u8>,
    /// Its headers.
    pub headers: Vec<(String, String)>,
    /// Its correlation id.
    pub correlation_id: Option<String>,
    /// Its priority, 0..=9 (the SDK's `normal` is 5).
    pub priority: u8,
}

impl Published {
    pub(crate) fn of(envelope: &Envelope) -> Self {
        Self {
            routing_key: envelope.routing_key.clone(),
            payload: envelope.payload.clone(),
            headers: envelope.headers.clone(),
            correlation_id: envelope.correlation_id.clone(),
            priority: envelope.priority,
        }
    }

    /// The payload as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.payload).expect("the published payload is JSON")
    }
}

/// What one delivery did.
#[derive(Debug, Clone)]
pub struct Handled {
    /// How it ended.
    pub outcome: Outcome,
    /// What the plugin published, in order.
    pub published: Vec<Published>,
    /// What the plugin logged.
    pub logs: Vec<LogRecord>,
    /// Host calls it made (what `limits.max_host_calls` counts).
    pub host_calls: u32,
}

impl Handled {
    /// Whether a log record's message contains `text`.
    pub fn logged(&self, text: &str) -> bool {
        self.logs.iter().any(|r| r.message.contains(text))
    }
}
