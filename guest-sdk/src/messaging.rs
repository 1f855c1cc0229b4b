//! Publishing events to the topic exchange `techub.main`, sending to queue types, and
//! request-reply.

mod constants;
mod request;

pub use constants::{routing, ttl};
pub use request::{Response, request, request_json};

use crate::wit::techub::platform::messaging as wit;
use crate::{Failure, Message};
use serde::Serialize;

/// The seed's `MessagePriority`.
///
/// ```no_run
/// # use techub_guest::prelude::*;
/// # fn handle() -> Result<(), Failure> {
/// messaging::publish("order.created", b"{}", &PublishOptions::default().priority(Priority::High))?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, PartialOrd, Ord)]
pub enum Priority {
    /// 1
    Low,
    /// 5, the default.
    #[default]
    Normal,
    /// 8
    High,
    /// 10
    Urgent,
}

impl Priority {
    pub(crate) fn from_wit(priority: wit::Priority) -> Self {
        match priority {
            wit::Priority::Low => Self::Low,
            wit::Priority::Normal => Self::Normal,
            wit::Priority::High => Self::High,
            wit::Priority::Urgent => Self::Urgent,
        }
    }
    pub(crate) fn to_wit(self) -> wit::Priority {
        match self {
            Self::Low => wit::Priority::Low,
            Self::Normal => wit::Priority::Normal,
            Self::High => wit::Priority::High,
            Self::Urgent => wit::Priority::Urgent,
        }
    }
}

/// The seed's `MessageStatus`, as tracked by the host.
///
/// ```no_run
/// # use techub_guest::prelude::*;
/// # fn handle() -> Result<(), Failure> {
/// if messaging::status("m-1") == Some(messaging::MessageStatus::Completed) { log::info("done"); }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageStatus {
    /// Published, not yet delivered.
    Pending,
    /// A handler is running.
    Processing,
    /// Handled.
    Completed,
    /// Handled, but the outcome could not be recorded; the broker delivers it again.
    Failed,
    /// Waiting for another attempt.
    Retrying,
    /// In the dead-letter queue.
    DeadLetter,
}

/// Why a publish failed.
///
/// ```no_run
/// # use techub_guest::prelude::*;
/// # fn handle(message: Message) -> Result<(), Failure> {
/// match messaging::publish("audit.event", b"{}", &PublishOptions::default()) {
///     Ok(id) => log::info(format!("published {id}")),
///     // Not granted: the message names the host.toml line to add.
///     Err(messaging::PublishError::NotPermitted(line)) => return Err(Failure::reject(line)),
///     Err(other) => return Err(other.into()),
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// The routing key is empty, too long or has an empty word.
    #[error("invalid routing key: {0}")]
    InvalidRoutingKey(String),
    /// `host.toml` does not grant this routing key to the plugin.
    #[error("routing key not permitted: {0}")]
    NotPermitted(String),
    /// The payload exceeds the message limit (bytes).
    #[error("payload larger than the limit of {0} bytes")]
    PayloadTooLarge(u64),
    /// An option is out of range.
    #[error("invalid publish options: {0}")]
    InvalidOptions(String),
    /// The publish quota of this invocation is used up.
    #[error("quota exceeded: {0}")]
    QuotaExceeded(String),
    /// The broker is unreachable or did not confirm in time.
    #[error("broker unavailable: {0}")]
    Unavailable(String),
    /// A request got no reply within its timeout.
    #[error("no reply in time: {0}")]
    Timeout(String),
}

impl From<wit::MessagingError> for PublishError {
    fn from(error: wit::MessagingError) -> Self {
        match error {
            wit::MessagingError::InvalidRoutingKey(m) => Self::InvalidRoutingKey(m),
            wit::MessagingError::NotPermitted(m) => Self::NotPermitted(m),
            wit::MessagingError::PayloadTooLarge(n) => Self::PayloadTooLarge(n),
            wit::MessagingError::InvalidOptions(m) => Self::InvalidOptions(m),
            wit::MessagingError::QuotaExceeded(m) => Self::QuotaExceeded(m),
            wit::MessagingError::Unavailable(m) => Self::Unavailable(m),
            wit::MessagingError::Timeout(m) => Self::Timeout(m),
        }
    }
}

impl From<PublishError> for Failure {
    fn from(error: PublishError) -> Self {
        match error {
            PublishError::Unavailable(_)
            | PublishError::QuotaExceeded(_)
            | PublishError::Timeout(_) => Failure::retry(error),
            _ => Failure::reject(error),
        }
    }
}

/// How to publish; by default persistent, no expiry or delay, and the priority of the
/// queue types that consume the routing key (`[queues.<type>].priority`).
///
/// ```no_run
/// # use techub_guest::prelude::*;
/// # fn handle(message: Message) -> Result<(), Failure> {
/// let options = PublishOptions::default()
///     .follows(&message) // correlation id and causation from the message handled
///     .priority(Priority::Urgent)
///     .delay_ms(60_000)
///     .header("tenant", "acme")
///     .message_id(format!("{}-receipt", message.id())); // idempotent on the consumer side
/// messaging::publish("payment.processed", b"{}", &options)?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct PublishOptions {
    priority: Option<Priority>,
    persistent: bool,
    expiration_ms: Option<u64>,
    delay_ms: Option<u64>,
    correlation_id: Option<String>,
    reply_to: Option<String>,
    headers: Vec<(String, String)>,
    message_id: Option<String>,
}

impl Default for PublishOptions {
    fn default() -> Self {
        Self {
            priority: None,
            persistent: true,
            expiration_ms: None,
            delay_ms: None,
            correlation_id: None,
            reply_to: None,
            headers: Vec::new(),
            message_id: None,
        }
    }
}

impl PublishOptions {
    /// Queue priority, instead of the consuming queue types' default.
    ///
    /// ```no_run
    /// # use techub_guest::prelude::*;
    /// # fn handle() -> Result<(), Failure> {
    /// let options = PublishOptions::default().priority(Priority::Low);
    /// # Ok(()) }
    /// ```
    pub fn priority(mut self, priority: Priority) -> Self {
        self.priority = Some(priority);
        self
    }
    /// Keep the message in memory only (the seed's `NON_PERSISTENT`).
    ///
    /// ```no_run
    /// # use techub_guest::prelude::*;
    /// # fn handle() -> Result<(), Failure> {
    /// let options = PublishOptions::default().transient(); // not written to disk by the broker
    /// # Ok(()) }
    /// ```
    pub fn transient(mut self) -> Self {
        self.persistent = false;
        self
    }
    /// Drop the message if not delivered within `ms`.
    ///
    /// ```no_run
    /// # use techub_guest::prelude::*;
    /// # fn handle() -> Result<(), Failure> {
    /// let options = PublishOptions::default().expiration_ms(60_000); // dead-lettered unread after a minute
    /// # Ok(()) }
    /// ```
    pub fn expiration_ms(mut self, ms: u64) -> Self {
        self.expiration_ms = Some(ms);
        self
    }
    /// Deliver no earlier than `ms` from now.
    ///
    /// ```no_run
    /// # use techub_guest::prelude::*;
    /// # fn handle() -> Result<(), Failure> {
    /// let options = PublishOptions::default().delay_ms(30_000); // delivered in 30 s
    /// # Ok(()) }
    /// ```
    pub fn delay_ms(mut self, ms: u64) -> Self {
        self.delay_ms = Some(ms);
        self
    }
    /// Sets the correlation id.
    ///
    /// ```no_run
    /// # use techub_guest::prelude::*;
    /// # fn handle() -> Result<(), Failure> {
    /// let options = PublishOptions::default().correlation_id("order-o-1");
    /// # Ok(()) }
    /// ```
    pub fn correlation_id(mut self, id: impl AsRef<str>) -> Self {
        self.correlation_id = Some(id.as_ref().to_string());
        self
    }
    /// Continues the conversation of `message`: its correlation id, or its id when it
    /// has none.
    ///
    /// ```no_run
    /// # use techub_guest::prelude::*;
    /// # fn handle(message: Message) -> Result<(), Failure> {
    /// let options = PublishOptions::default().follows(&message);
    /// # Ok(()) }
    /// ```
    pub fn follows(self, message: &Message) -> Self {
        let id = message.correlation_id().unwrap_or(message.id()).to_string();
        self.correlation_id(id)
    }
    /// Sets the reply-to routing key.
    ///
    /// ```no_run
    /// # use techub_guest::prelude::*;
    /// # fn handle() -> Result<(), Failure> {
    /// let options = PublishOptions::default().reply_to("rpc.answers");
    /// # Ok(()) }
    /// ```
    pub fn reply_to(mut self, routing_key: impl AsRef<str>) -> Self {
        self.reply_to = Some(routing_key.as_ref().to_string());
        self
    }
    /// Adds an application header (names starting with `x-` are refused).
    ///
    /// ```no_run
    /// # use techub_guest::prelude::*;
    /// # fn handle() -> Result<(), Failure> {
    /// let options = PublishOptions::default().header("tenant", "acme");
    /// # Ok(()) }
    /// ```
    pub fn header(mut self, name: impl AsRef<str>, value: impl AsRef<str>) -> Self {
        self.headers
            .push((name.as_ref().to_string(), value.as_ref().to_string()));
        self
    }
    /// Sets the message id, for idempotent re-publishing.
    ///
    /// ```no_run
    /// # use techub_guest::prelude::*;
    /// # fn handle() -> Result<(), Failure> {
    /// let options = PublishOptions::default().message_id("receipt-o-1");
    /// # Ok(()) }
    /// ```
    pub fn message_id(mut self, id: impl AsRef<str>) -> Self {
        self.message_id = Some(id.as_ref().to_string());
        self
    }
    fn to_wit(&self) -> wit::PublishOptions {
        wit::PublishOptions {
            priority: self.priority.map(Priority::to_wit),
            persistent: self.persistent,
            expiration_ms: self.expiration_ms,
            delay_ms: self.delay_ms,
            correlation_id: self.correlation_id.clone(),
            reply_to: self.reply_to.clone(),
            headers: self.headers.clone(),
            message_id: self.message_id.clone(),
        }
    }
}

/// Publishes `payload` with `routing_key`; returns the message id once the broker
/// confirmed it.
///
/// ```no_run
/// # use techub_guest::prelude::*;
/// # fn handle() -> Result<(), Failure> {
/// let id: String = messaging::publish("order.completed", br#"{"id":"o-1"}"#, &PublishOptions::default())?;
/// # Ok(()) }
/// ```
pub fn publish(
    routing_key: impl AsRef<str>,
    payload: impl AsRef<[u8]>,
    options: &PublishOptions,
) -> Result<String, PublishError> {
    crate::native::ensure_host();
    Ok(wit::publish(
        routing_key.as_ref(),
        payload.as_ref(),
        &options.to_wit(),
    )?)
}

/// Sends `payload` to every plugin subscribed to `queue_type` (e.g. `"email"`),
/// whatever routing keys they bind: the specification's `publish(QueueType.EMAIL, ..)`.
/// It is a publish with the routing key `queue.<queue_type>`, so `host.toml` must grant
/// that key (`publish = ["queue.email"]`). Returns the message id.
///
/// ```no_run
/// # use techub_guest::prelude::*;
/// # fn main() -> Result<(), messaging::PublishError> {
/// messaging::send("email", br#"{"to":"ada@example.com"}"#, &PublishOptions::default())?;
/// # Ok(())
/// # }
/// ```
pub fn send(
    queue_type: impl AsRef<str>,
    payload: impl AsRef<[u8]>,
    options: &PublishOptions,
) -> Result<String, PublishError> {
    publish(format!("queue.{}", queue_type.as_ref()), payload, options)
}

/// [`send`] with a JSON payload.
///
/// ```no_run
/// # use techub_guest::prelude::*;
/// # fn handle() -> Result<(), Failure> {
/// messaging::send_json("sms", &serde_json::json!({"to": "+33..."}), &PublishOptions::default())?;
/// # Ok(()) }
/// ```
pub fn send_json<T: Serialize + ?Sized>(
    queue_type: impl AsRef<str>,
    value: &T,
    options: &PublishOptions,
) -> Result<String, PublishError> {
    publish_json(format!("queue.{}", queue_type.as_ref()), value, options)
}

/// Publishes `value` as JSON.
///
/// ```no_run
/// # use techub_guest::prelude::*;
/// # fn handle() -> Result<(), Failure> {
/// let options = PublishOptions::default().priority(Priority::High).header("tenant", "acme");
/// messaging::publish_json("inventory.low", &serde_json::json!({"product": "p-1"}), &options)?;
/// # Ok(()) }
/// ```
pub fn publish_json<T: Serialize + ?Sized>(
    routing_key: impl AsRef<str>,
    value: &T,
    options: &PublishOptions,
) -> Result<String, PublishError> {
    let payload = serde_json::to_vec(value)
        .map_err(|e| PublishError::InvalidOptions(format!("value does not serialize: {e}")))?;
    publish(routing_key, payload, options)
}

/// What the host knows of a message.
///
/// ```no_run
/// # use techub_guest::prelude::*;
/// # fn handle() -> Result<(), Failure> {
/// if let Some(status) = messaging::status("3f2a...") {
///     log::info(format!("{status:?}"));
/// }
/// # Ok(()) }
/// ```
pub fn status(message_id: impl AsRef<str>) -> Option<MessageStatus> {
    crate::native::ensure_host();
    wit::status(message_id.as_ref()).map(|s| match s {
        wit::MessageStatus::Pending => MessageStatus::Pending,
        wit::MessageStatus::Processing => MessageStatus::Processing,
        wit::MessageStatus::Completed => MessageStatus::Completed,
        wit::MessageStatus::Failed => MessageStatus::Failed,
        wit::MessageStatus::Retrying => MessageStatus::Retrying,
        wit::MessageStatus::DeadLetter => MessageStatus::DeadLetter,
    })
}
