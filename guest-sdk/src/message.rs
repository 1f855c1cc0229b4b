//! A delivered message and what the handler makes of it.

use crate::wit::exports::techub::platform::handler as exported;
use serde::de::DeserializeOwned;
use std::fmt;

pub use crate::messaging::Priority;

/// One message delivered to the plugin.
///
/// ```no_run
/// # use techub_guest::prelude::*;
/// # fn handle(message: Message) -> Result<(), Failure> {
/// if message.attempt() > 1 {
///     log::warn(format!("{} redelivered on {}", message.id(), message.routing_key()));
/// }
/// let tenant = message.header("tenant").unwrap_or("default");
/// let order: serde_json::Value = message.json()?; // not JSON: rejected
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Message {
    inner: exported::Delivery,
}

impl Message {
    #[doc(hidden)]
    pub fn from_delivery(inner: exported::Delivery) -> Self {
        Self { inner }
    }

    /// A message as a unit test hands it to the plugin's own logic (no host needed
    /// to build one; SDK calls still need a host: use `techub-testkit` for those).
    ///
    /// ```
    /// use techub_guest::Message;
    /// let message = Message::builder("user.created")
    ///     .json(&serde_json::json!({"id": "42"}))
    ///     .header("tenant", "acme")
    ///     .attempt(2)
    ///     .build();
    /// assert_eq!(message.routing_key(), "user.created");
    /// assert_eq!(message.header("tenant"), Some("acme"));
    /// assert!(message.redelivered());
    /// ```
    pub fn builder(routing_key: impl Into<String>) -> MessageBuilder {
        MessageBuilder {
            inner: exported::Delivery {
                id: "test-message".into(),
                queue: String::new(),
                routing_key: routing_key.into(),
                payload: Vec::new(),
                headers: Vec::new(),
                correlation_id: None,
                reply_to: None,
                priority: Priority::Normal.to_wit(),
                published_at_ms: 0,
                attempt: 1,
                redelivered: false,
            },
        }
    }

    /// Message id; the same on every attempt, so it can key idempotency.
    ///
    /// ```no_run
    /// # use techub_guest::prelude::*;
    /// # fn handle(message: Message) -> Result<(), Failure> {
    /// store::once(message.id(), 86_400_000, || -> Result<(), Failure> { Ok(()) })?;
    /// # Ok(()) }
    /// ```
    pub fn id(&self) -> &str {
        &self.inner.id
    }
    /// The queue type it came through.
    ///
    /// ```no_run
    /// # use techub_guest::prelude::*;
    /// # fn handle(message: Message) -> Result<(), Failure> {
    /// log::info(format!("via the {} queue type", message.queue()));
    /// # Ok(()) }
    /// ```
    pub fn queue(&self) -> &str {
        &self.inner.queue
    }
    /// The routing key it was published with.
    ///
    /// ```no_run
    /// # use techub_guest::prelude::*;
    /// # fn handle(message: Message) -> Result<(), Failure> {
    /// if message.routing_key() == "order.cancelled" { return Ok(()); }
    /// # Ok(()) }
    /// ```
    pub fn routing_key(&self) -> &str {
        &self.inner.routing_key
    }
    /// The raw body.
    ///
    /// ```no_run
    /// # use techub_guest::prelude::*;
    /// # fn handle(message: Message) -> Result<(), Failure> {
    /// let bytes: &[u8] = message.payload();
    /// # Ok(()) }
    /// ```
    pub fn payload(&self) -> &[u8] {
        &self.inner.payload
    }
    /// The body as UTF-8 text; a [`Failure::Reject`] when it is not.
    ///
    /// ```no_run
    /// # use techub_guest::prelude::*;
    /// # fn handle(message: Message) -> Result<(), Failure> {
    /// let line: &str = message.text()?; // not UTF-8: rejected
    /// # Ok(()) }
    /// ```
    pub fn text(&self) -> Result<&str, Failure> {
        std::str::from_utf8(&self.inner.payload)
            .map_err(|e| Failure::Reject(format!("payload is not UTF-8: {e}")))
    }
    /// The body parsed as JSON; a [`Failure::Reject`] when it does not parse, since
    /// retrying a malformed message cannot help.
    ///
    /// ```no_run
    /// # use techub_guest::prelude::*;
    /// # fn handle(message: Message) -> Result<(), Failure> {
    /// #[derive(serde::Deserialize)]
    /// struct Order { id: String }
    /// let order: Order = message.json()?; // malformed: rejected
    /// # Ok(()) }
    /// ```
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, Failure> {
        serde_json::from_slice(&self.inner.payload)
            .map_err(|e| Failure::Reject(format!("payload is not the expected JSON: {e}")))
    }
    /// An application header.
    ///
    /// ```no_run
    /// # use techub_guest::prelude::*;
    /// # fn handle(message: Message) -> Result<(), Failure> {
    /// let tenant = message.header("tenant").unwrap_or("default");
    /// # Ok(()) }
    /// ```
    pub fn header(&self, name: impl AsRef<str>) -> Option<&str> {
        let name = name.as_ref();
        self.inner
            .headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
    /// Every application header.
    ///
    /// ```no_run
    /// # use techub_guest::prelude::*;
    /// # fn handle(message: Message) -> Result<(), Failure> {
    /// for (name, value) in message.headers() {
    ///     log::debug(format!("{name}: {value}"));
    /// }
    /// # Ok(()) }
    /// ```
    pub fn headers(&self) -> &[(String, String)] {
        &self.inner.headers
    }
    /// Correlation id, if the publisher set one.
    ///
    /// ```no_run
    /// # use techub_guest::prelude::*;
    /// # fn handle(message: Message) -> Result<(), Failure> {
    /// let trace = message.correlation_id().unwrap_or(message.id());
    /// # Ok(()) }
    /// ```
    pub fn correlation_id(&self) -> Option<&str> {
        self.inner.correlation_id.as_deref()
    }
    /// Reply-to routing key, if the publisher set one.
    ///
    /// ```no_run
    /// # use techub_guest::prelude::*;
    /// # fn handle(message: Message) -> Result<(), Failure> {
    /// if let Some(to) = message.reply_to() { log::debug(format!("answer goes to {to}")); }
    /// # Ok(()) }
    /// ```
    pub fn reply_to(&self) -> Option<&str> {
        self.inner.reply_to.as_deref()
    }
    /// Priority it was published with.
    ///
    /// ```no_run
    /// # use techub_guest::prelude::*;
    /// # fn handle(message: Message) -> Result<(), Failure> {
    /// if message.priority() == Priority::Urgent { log::info("urgent"); }
    /// # Ok(()) }
    /// ```
    pub fn priority(&self) -> Priority {
        Priority::from_wit(self.inner.priority)
    }
    /// When it was first published, in milliseconds since the Unix epoch.
    ///
    /// ```no_run
    /// # use techub_guest::prelude::*;
    /// # fn handle(message: Message) -> Result<(), Failure> {
    /// let age_ms = 1_796_083_200_000u64.saturating_sub(message.published_at_ms());
    /// # Ok(()) }
    /// ```
    pub fn published_at_ms(&self) -> u64 {
        self.inner.published_at_ms
    }
    /// 1 on the first delivery, 2 on the first retry, and so on.
    ///
    /// ```no_run
    /// # use techub_guest::prelude::*;
    /// # fn handle(message: Message) -> Result<(), Failure> {
    /// if message.attempt() >= 3 { log::warn("third attempt"); }
    /// # Ok(()) }
    /// ```
    pub fn attempt(&self) -> u32 {
        self.inner.attempt
    }
    /// Whether the handler may have seen this message before.
    ///
    /// ```no_run
    /// # use techub_guest::prelude::*;
    /// # fn handle(message: Message) -> Result<(), Failure> {
    /// if message.redelivered() { log::info("seen before: the work below is idempotent"); }
    /// # Ok(()) }
    /// ```
    pub fn redelivered(&self) -> bool {
        self.inner.redelivered
    }
}

/// Builds a [`Message`] for a test: [`Message::builder`].
///
/// ```no_run
/// # use techub_guest::prelude::*;
/// # fn handle() -> Result<(), Failure> {
/// let message = Message::builder("user.created").json(&serde_json::json!({"id": "42"})).build();
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct MessageBuilder {
    inner: exported::Delivery,
}

impl MessageBuilder {
    /// The payload, as bytes.
    ///
    /// ```no_run
    /// # use techub_guest::prelude::*;
    /// # fn handle() -> Result<(), Failure> {
    /// let message = Message::builder("raw.bytes").payload(vec![1, 2, 3]).build();
    /// # Ok(()) }
    /// ```
    pub fn payload(mut self, payload: impl Into<Vec<u8>>) -> Self {
        self.inner.payload = payload.into();
        self
    }

    /// The payload, as JSON.
    ///
    /// # Panics
    /// When `value` cannot be serialized (a map with non-string keys).
    ///
    /// ```no_run
    /// # use techub_guest::prelude::*;
    /// # fn handle() -> Result<(), Failure> {
    /// let message = Message::builder("user.created").json(&serde_json::json!({"id": "42"})).build();
    /// # Ok(()) }
    /// ```
    pub fn json(self, value: &impl serde::Serialize) -> Self {
        let payload = serde_json::to_vec(value).expect("the value serializes to JSON");
        self.payload(payload)
    }

    /// The message id (default `test-message`).
    ///
    /// ```no_run
    /// # use techub_guest::prelude::*;
    /// # fn handle() -> Result<(), Failure> {
    /// let message = Message::builder("user.created").id("m-1").build();
    /// assert_eq!(message.id(), "m-1");
    /// # Ok(()) }
    /// ```
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.inner.id = id.into();
        self
    }

    /// The queue type it arrived through.
    ///
    /// ```no_run
    /// # use techub_guest::prelude::*;
    /// # fn handle() -> Result<(), Failure> {
    /// let message = Message::builder("user.created").queue("notification").build();
    /// # Ok(()) }
    /// ```
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.inner.queue = queue.into();
        self
    }

    /// A header.
    ///
    /// ```no_run
    /// # use techub_guest::prelude::*;
    /// # fn handle() -> Result<(), Failure> {
    /// let message = Message::builder("user.created").header("tenant", "acme").build();
    /// # Ok(()) }
    /// ```
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.inner.headers.push((name.into(), value.into()));
        self
    }

    /// The correlation id.
    ///
    /// ```no_run
    /// # use techub_guest::prelude::*;
    /// # fn handle() -> Result<(), Failure> {
    /// let message = Message::builder("user.created").correlation_id("c-1").build();
    /// # Ok(()) }
    /// ```
    pub fn correlation_id(mut self, id: impl Into<String>) -> Self {
        self.inner.correlation_id = Some(id.into());
        self
    }

    /// The priority it was published with.
    ///
    /// ```no_run
    /// # use techub_guest::prelude::*;
    /// # fn handle() -> Result<(), Failure> {
    /// let message = Message::builder("user.created").priority(Priority::High).build();
    /// # Ok(()) }
    /// ```
    pub fn priority(mut self, priority: Priority) -> Self {
        self.inner.priority = priority.to_wit();
        self
    }

    /// The attempt (from 1); 2 and more are redeliveries.
    ///
    /// ```no_run
    /// # use techub_guest::prelude::*;
    /// # fn handle() -> Result<(), Failure> {
    /// let message = Message::builder("user.created").attempt(2).build();
    /// assert!(message.redelivered());
    /// # Ok(()) }
    /// ```
    pub fn attempt(mut self, attempt: u32) -> Self {
        self.inner.attempt = attempt.max(1);
        self.inner.redelivered = attempt > 1;
        self
    }

    /// The message.
    ///
    /// ```no_run
    /// # use techub_guest::prelude::*;
    /// # fn handle() -> Result<(), Failure> {
    /// let message: Message = Message::builder("user.created").build();
    /// # Ok(()) }
    /// ```
    pub fn build(self) -> Message {
        Message { inner: self.inner }
    }
}

/// What became of a message.
///
/// ```no_run
/// # use techub_guest::prelude::*;
/// # fn handle(message: Message) -> Result<(), Failure> {
/// let outcome = match message.routing_key() {
///     "order.created" => Outcome::Ok,
///     other => Outcome::Reject(format!("unexpected {other}")),
/// };
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Done: acknowledge it.
    Ok,
    /// Try again after the queue's backoff; dead-letter with this reason when the
    /// retries are spent.
    Retry(String),
    /// Can never succeed: dead-letter now with this reason.
    Reject(String),
}

/// Why a handler did not finish a message; `?` converts every SDK error into one.
///
/// ```no_run
/// # use techub_guest::prelude::*;
/// # fn handle(message: Message) -> Result<(), Failure> {
/// let order: serde_json::Value = message.json()?; // malformed: Failure::Reject
/// if order["total"].as_u64().is_none() {
///     return Err(Failure::reject("an order needs a total")); // dead-lettered now
/// }
/// if store::get("gateway-down")?.is_some() {
///     return Err(Failure::retry("gateway down")); // tried again after the backoff
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// A passing failure (a backend is unavailable, a lock is contended): retry later.
    Retry(String),
    /// A permanent failure (malformed input, a refused key): dead-letter now.
    Reject(String),
}

impl Failure {
    /// A passing failure.
    ///
    /// ```no_run
    /// # use techub_guest::prelude::*;
    /// # fn handle() -> Result<(), Failure> {
    /// return Err(Failure::retry("the gateway timed out"));
    /// # Ok(()) }
    /// ```
    pub fn retry(reason: impl fmt::Display) -> Self {
        Self::Retry(reason.to_string())
    }
    /// A permanent failure.
    ///
    /// ```no_run
    /// # use techub_guest::prelude::*;
    /// # fn handle() -> Result<(), Failure> {
    /// return Err(Failure::reject("an order needs at least one item"));
    /// # Ok(()) }
    /// ```
    pub fn reject(reason: impl fmt::Display) -> Self {
        Self::Reject(reason.to_string())
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Retry(reason) => write!(f, "retry: {reason}"),
            Self::Reject(reason) => write!(f, "reject: {reason}"),
        }
    }
}

impl std::error::Error for Failure {}

impl From<serde_json::Error> for Failure {
    fn from(error: serde_json::Error) -> Self {
        Self::Reject(format!("JSON: {error}"))
    }
}

impl From<Failure> for Outcome {
    fn from(failure: Failure) -> Self {
        match failure {
            Failure::Retry(reason) => Outcome::Retry(reason),
            Failure::Reject(reason) => Outcome::Reject(reason),
        }
    }
}

/// What a handler function may return.
#[doc(hidden)]
#[diagnostic::on_unimplemented(
    message = "a #[handler] function must return `Outcome` or `Result<(), Failure>`, not `{Self}`",
    label = "this is what the handler returns",
    note = "use `?` on SDK calls: their errors convert into `Failure` (retry or reject)"
)]
/// ```no_run
/// # use techub_guest::prelude::*;
/// # fn handle() -> Result<(), Failure> {
/// // A handler may return `Outcome` or `Result<(), Failure>`: both are `IntoOutcome`.
/// fn handle_it() -> impl techub_guest::message::IntoOutcome {
///     Ok::<(), Failure>(())
/// }
/// # Ok(()) }
/// ```
pub trait IntoOutcome {
    fn into_outcome(self) -> exported::Outcome;
}

impl IntoOutcome for Outcome {
    fn into_outcome(self) -> exported::Outcome {
        match self {
            Outcome::Ok => exported::Outcome::Ok,
            Outcome::Retry(reason) => exported::Outcome::Retry(reason),
            Outcome::Reject(reason) => exported::Outcome::Reject(reason),
        }
    }
}

impl<E: Into<Failure>> IntoOutcome for Result<(), E> {
    fn into_outcome(self) -> exported::Outcome {
        match self {
            Ok(()) => Outcome::Ok,
            Err(error) => Outcome::from(error.into()),
        }
        .into_outcome()
    }
}

/// Builds the exported subscription list; used by the [`handler`](crate::handler) macro.
#[doc(hidden)]
pub fn subscription(queue: &str, routing_keys: &[&str]) -> exported::Subscription {
    subscription_publishing(queue, routing_keys, &[])
}

/// [`subscription`] with the routing keys its handler declares it publishes to.
#[doc(hidden)]
pub fn subscription_publishing(
    queue: &str,
    routing_keys: &[&str],
    publishes: &[&str],
) -> exported::Subscription {
    exported::Subscription {
        queue: queue.to_string(),
        routing_keys: routing_keys.iter().map(|k| k.to_string()).collect(),
        publishes: publishes.iter().map(|k| k.to_string()).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::CacheError;
    use crate::lock::LockError;
    use crate::messaging::PublishError;
    use crate::store::StoreError;

    fn message(payload: &[u8]) -> Message {
        Message::from_delivery(exported::Delivery {
            id: "m1".into(),
            queue: "email".into(),
            routing_key: "user.created".into(),
            payload: payload.to_vec(),
            headers: vec![("tenant".into(), "t1".into())],
            correlation_id: None,
            reply_to: None,
            priority: crate::wit::techub::platform::messaging::Priority::High,
            published_at_ms: 1,
            attempt: 2,
            redelivered: true,
        })
    }

    #[test]
    fn passing_failures_retry_and_permanent_ones_reject() {
        assert!(matches!(
            Failure::from(CacheError::Unavailable("x".into())),
            Failure::Retry(_)
        ));
        assert!(matches!(
            Failure::from(CacheError::InvalidKey("x".into())),
            Failure::Reject(_)
        ));
        assert!(matches!(
            Failure::from(StoreError::QuotaExceeded("x".into())),
            Failure::Retry(_)
        ));
        assert!(matches!(
            Failure::from(StoreError::WrongType),
            Failure::Reject(_)
        ));
        assert!(matches!(
            Failure::from(LockError::Contended),
            Failure::Retry(_)
        ));
        assert!(matches!(
            Failure::from(LockError::InvalidOptions("x".into())),
            Failure::Reject(_)
        ));
        assert!(matches!(
            Failure::from(PublishError::Unavailable("x".into())),
            Failure::Retry(_)
        ));
        assert!(matches!(
            Failure::from(PublishError::NotPermitted("x".into())),
            Failure::Reject(_)
        ));
    }

    #[test]
    fn handler_results_become_outcomes() {
        assert!(matches!(
            Ok::<(), Failure>(()).into_outcome(),
            exported::Outcome::Ok
        ));
        assert!(
            matches!(Err::<(), _>(Failure::retry("later")).into_outcome(), exported::Outcome::Retry(r) if r == "later")
        );
        assert!(
            matches!(Outcome::Reject("bad".into()).into_outcome(), exported::Outcome::Reject(r) if r == "bad")
        );
    }

    #[test]
    fn malformed_json_is_a_rejection_with_the_reason() {
        let failure = message(b"nope").json::<serde_json::Value>().unwrap_err();
        assert!(
            matches!(&failure, Failure::Reject(reason) if reason.contains("not the expected JSON")),
            "{failure}"
        );
        assert_eq!(
            message(br#"{"a":1}"#).json::<serde_json::Value>().unwrap()["a"],
            1
        );
    }

    #[test]
    fn message_exposes_its_delivery() {
        let m = message(b"hi");
        assert_eq!(
            (m.id(), m.queue(), m.routing_key(), m.text().unwrap()),
            ("m1", "email", "user.created", "hi")
        );
        assert_eq!(
            (m.attempt(), m.redelivered(), m.priority()),
            (2, true, Priority::High)
        );
        assert_eq!(m.header("tenant"), Some("t1"));
        assert_eq!(m.header("missing"), None);
    }
}
