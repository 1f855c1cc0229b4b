//! Request-reply: ask another plugin and wait for its answer; answer a request.

use super::{PublishError, PublishOptions, wit};
use crate::{Failure, Message};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The answer to a [`request`].
///
/// ```no_run
/// # use techub_guest::prelude::*;
/// # fn handle() -> Result<(), Failure> {
/// let answer = messaging::request("rpc.stock", br#"{"product":"p-1"}"#, &PublishOptions::default(), 2_000)?;
/// let source = answer.header("source").unwrap_or("unknown");
/// let stock: serde_json::Value = answer.json()?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    payload: Vec<u8>,
    headers: Vec<(String, String)>,
}

impl Response {
    /// The reply's body.
    ///
    /// ```no_run
    /// # use techub_guest::prelude::*;
    /// # fn handle() -> Result<(), Failure> {
    /// let answer = messaging::request("rpc.stock", b"p-1", &PublishOptions::default(), 2_000)?;
    /// let bytes: &[u8] = answer.payload();
    /// # Ok(()) }
    /// ```
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }
    /// The body as UTF-8 text (a `reject` failure if it is not).
    ///
    /// ```no_run
    /// # use techub_guest::prelude::*;
    /// # fn handle() -> Result<(), Failure> {
    /// let answer = messaging::request("rpc.stock", b"p-1", &PublishOptions::default(), 2_000)?;
    /// let text: &str = answer.text()?;
    /// # Ok(()) }
    /// ```
    pub fn text(&self) -> Result<&str, Failure> {
        std::str::from_utf8(&self.payload).map_err(Failure::reject)
    }
    /// The body parsed as JSON (a `reject` failure if it does not parse).
    ///
    /// ```no_run
    /// # use techub_guest::prelude::*;
    /// # fn handle() -> Result<(), Failure> {
    /// let answer = messaging::request("rpc.stock", b"p-1", &PublishOptions::default(), 2_000)?;
    /// let stock: serde_json::Value = answer.json()?;
    /// # Ok(()) }
    /// ```
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, Failure> {
        Ok(serde_json::from_slice(&self.payload)?)
    }
    /// The value of header `name`, if the reply has it.
    ///
    /// ```no_run
    /// # use techub_guest::prelude::*;
    /// # fn handle() -> Result<(), Failure> {
    /// let answer = messaging::request("rpc.stock", b"p-1", &PublishOptions::default(), 2_000)?;
    /// let source = answer.header("source");
    /// # Ok(()) }
    /// ```
    pub fn header(&self, name: impl AsRef<str>) -> Option<&str> {
        let name = name.as_ref();
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
    /// Every header.
    ///
    /// ```no_run
    /// # use techub_guest::prelude::*;
    /// # fn handle() -> Result<(), Failure> {
    /// let answer = messaging::request("rpc.stock", b"p-1", &PublishOptions::default(), 2_000)?;
    /// let count = answer.headers().len();
    /// # Ok(()) }
    /// ```
    pub fn headers(&self) -> &[(String, String)] {
        &self.headers
    }
}

/// Publishes `payload` with `routing_key` as a request (the same grants and quota as
/// a publish) and waits up to `timeout_ms` (1 to 300 000) for the reply of the plugin
/// that handles it. The host sets the reply-to and correlation id: `options` must not.
/// The wait counts against the invocation's wall-clock limit, not its CPU.
///
/// ```no_run
/// # use techub_guest::prelude::*;
/// # fn main() -> Result<(), Failure> {
/// let answer = messaging::request_json(
///     "inventory.check",
///     &serde_json::json!({"sku": "A-1", "quantity": 2}),
///     &PublishOptions::default(),
///     2_000,
/// )?;
/// let stock: serde_json::Value = answer.json()?;
/// # Ok(())
/// # }
/// ```
pub fn request(
    routing_key: impl AsRef<str>,
    payload: impl AsRef<[u8]>,
    options: &PublishOptions,
    timeout_ms: u32,
) -> Result<Response, PublishError> {
    crate::native::ensure_host();
    let answer = wit::request(
        routing_key.as_ref(),
        payload.as_ref(),
        &options.to_wit(),
        timeout_ms,
    )?;
    Ok(Response {
        payload: answer.payload,
        headers: answer.headers,
    })
}

/// [`request`] with a JSON payload.
///
/// ```no_run
/// # use techub_guest::prelude::*;
/// # fn handle() -> Result<(), Failure> {
/// let answer = messaging::request_json("rpc.stock", &serde_json::json!({"product": "p-1"}), &PublishOptions::default(), 2_000)?;
/// let stock: serde_json::Value = answer.json()?;
/// # Ok(()) }
/// ```
pub fn request_json<T: Serialize + ?Sized>(
    routing_key: impl AsRef<str>,
    value: &T,
    options: &PublishOptions,
    timeout_ms: u32,
) -> Result<Response, PublishError> {
    let payload = serde_json::to_vec(value)
        .map_err(|e| PublishError::InvalidOptions(format!("value does not serialize: {e}")))?;
    request(routing_key, payload, options, timeout_ms)
}

impl Message {
    /// Whether the sender waits for an answer ([`Message::reply`]).
    ///
    /// ```no_run
    /// # use techub_guest::prelude::*;
    /// # fn handle(message: Message) -> Result<(), Failure> {
    /// if message.is_request() {
    ///     message.reply(b"42")?;
    /// }
    /// # Ok(()) }
    /// ```
    pub fn is_request(&self) -> bool {
        self.reply_to().is_some() && self.correlation_id().is_some()
    }

    /// Answers this message, sent with [`request`]; at most once (a publish of the
    /// quota). `InvalidOptions` when it asks for no reply or was answered already.
    ///
    /// ```no_run
    /// # use techub_guest::prelude::*;
    /// fn check(message: &Message) -> Result<(), Failure> {
    ///     message.reply_json(&serde_json::json!({"in_stock": true}))?;
    ///     Ok(())
    /// }
    /// ```
    pub fn reply(&self, payload: impl AsRef<[u8]>) -> Result<(), PublishError> {
        self.reply_with_headers(payload, &[])
    }

    /// [`Message::reply`] with application headers.
    ///
    /// ```no_run
    /// # use techub_guest::prelude::*;
    /// # fn handle(message: Message) -> Result<(), Failure> {
    /// message.reply_with_headers(b"42", &[("source", "warehouse-2")])?;
    /// # Ok(()) }
    /// ```
    pub fn reply_with_headers(
        &self,
        payload: impl AsRef<[u8]>,
        headers: &[(&str, &str)],
    ) -> Result<(), PublishError> {
        crate::native::ensure_host();
        let headers: Vec<(String, String)> = headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        Ok(wit::reply(payload.as_ref(), &headers)?)
    }

    /// [`Message::reply`] with a JSON payload.
    ///
    /// ```no_run
    /// # use techub_guest::prelude::*;
    /// # fn handle(message: Message) -> Result<(), Failure> {
    /// message.reply_json(&serde_json::json!({"stock": 42}))?;
    /// # Ok(()) }
    /// ```
    pub fn reply_json<T: Serialize + ?Sized>(&self, value: &T) -> Result<(), PublishError> {
        let payload = serde_json::to_vec(value)
            .map_err(|e| PublishError::InvalidOptions(format!("value does not serialize: {e}")))?;
        self.reply(payload)
    }
}
