//! The WIT `messaging` interface: grants, validation and quotas over the broker.

use super::MessagingGrant;
use super::request::Answering;
use super::{Envelope, MessageStatus, now_ms};
use crate::capability::bindings::techub::platform::messaging::{
    Host, MessagingError, Priority, PublishOptions, Response,
};
use crate::capability::{Failure, Usage, unavailable_for_guest};
use crate::names::routing::validate_routing_key;
use std::time::Duration;
use wasmtime::component::HasData;

/// What a messaging host function fails with.
pub type MessagingFailure = Failure<MessagingError>;

/// What the `messaging` interface reaches of an instance: the plugin's messaging grant
/// (its patterns, the limits, the broker), and this invocation's quotas.
pub struct MessagingView<'a> {
    pub(super) grant: &'a MessagingGrant,
    pub(super) usage: &'a mut Usage,
    /// The request this invocation handles, if its message asked for a reply.
    pub(super) answering: &'a mut Option<Answering>,
}

impl<'a> MessagingView<'a> {
    /// The view of one instance.
    pub fn new(
        grant: &'a MessagingGrant,
        usage: &'a mut Usage,
        answering: &'a mut Option<Answering>,
    ) -> Self {
        Self {
            grant,
            usage,
            answering,
        }
    }
}

/// Links `messaging` with [`MessagingView`].
pub struct HasMessaging;

impl HasData for HasMessaging {
    type Data<'a> = MessagingView<'a>;
}

pub(super) type Result<T> = std::result::Result<T, MessagingError>;

/// Longest delay a publish may ask for (24 h, the dead-letter retention).
const MAX_DELAY_MS: u64 = 86_400_000;
/// Most application headers on one message.
const MAX_HEADERS: usize = 64;
/// Longest AMQP short string: header names, ids, reply-to.
const MAX_SHORT_STRING: usize = 255;
/// Longest header value.
const MAX_HEADER_VALUE: usize = 4096;
/// Most bytes of all header names and values together: AMQP properties travel in one
/// frame (128 KiB by default), with room left for the host's own headers.
const MAX_HEADER_BYTES: usize = 16 * 1024;
/// Longest expiration RabbitMQ accepts (2^32 - 1 ms, about 49 days).
const MAX_EXPIRATION_MS: u64 = u32::MAX as u64;

/// The wire priority of the seed's `MessagePriority`.
pub fn priority_level(priority: Priority) -> u8 {
    match priority {
        Priority::Low => 1,
        Priority::Normal => 5,
        Priority::High => 8,
        Priority::Urgent => 10,
    }
}

/// The seed's `MessagePriority` nearest to a wire priority.
pub fn priority_of_level(level: u8) -> Priority {
    match level {
        0..=2 => Priority::Low,
        3..=6 => Priority::Normal,
        7..=8 => Priority::High,
        _ => Priority::Urgent,
    }
}

impl MessagingView<'_> {
    pub(super) fn charge_call(
        &mut self,
        function: &'static str,
    ) -> std::result::Result<(), String> {
        self.usage.charge("messaging", function)
    }

    /// Takes one publish off the invocation's quota.
    pub(super) fn take_publish(&mut self) -> Result<()> {
        let max_publishes = self.grant.max_publishes;
        if self.usage.publishes >= max_publishes {
            self.usage.over.publishes = true;
            return Err(MessagingError::QuotaExceeded(format!(
                "more than {max_publishes} publishes for one message"
            )));
        }
        Ok(())
    }

    pub(super) async fn publish_message(
        &mut self,
        routing_key: String,
        payload: Vec<u8>,
        options: PublishOptions,
    ) -> Result<String> {
        self.take_publish()?;
        validate_routing_key(&routing_key).map_err(MessagingError::InvalidRoutingKey)?;
        if !self.grant.may_publish(&routing_key) {
            return Err(MessagingError::NotPermitted(format!(
                "{routing_key}: add {routing_key:?} (or a pattern covering it) to [plugins.{}].publish in host.toml",
                self.grant.plugin
            )));
        }
        let max = self.grant.max_message_bytes;
        if payload.len() > max {
            return Err(MessagingError::PayloadTooLarge(max as u64));
        }
        check_options(&options)?;
        let id = options
            .message_id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let services = &self.grant.service;
        let priority = match options.priority {
            Some(priority) => priority_level(priority),
            None => services.priorities.of(&routing_key),
        };
        let envelope = Envelope {
            id: id.clone(),
            routing_key,
            payload,
            headers: options.headers,
            correlation_id: options.correlation_id,
            reply_to: options.reply_to,
            priority,
            persistent: options.persistent,
            expiration_ms: options.expiration_ms,
            published_at_ms: now_ms(),
            attempt: 1,
            parked: None,
        };
        let timeout = self.grant.confirm_timeout;
        let delay = options.delay_ms.map(Duration::from_millis);
        // Pending before the publish: a fast consumer may otherwise mark it done first.
        // An id known already keeps its status and owner.
        let created = services.tracker.published(&id, Some(&self.grant.plugin));
        let failure =
            match tokio::time::timeout(timeout, services.broker.publish(envelope, delay)).await {
                Ok(Ok(())) => None,
                Ok(Err(error)) => Some(error.to_string()),
                Err(_) => Some(format!("no confirm within {} ms", timeout.as_millis())),
            };
        if let Some(failure) = failure {
            if created {
                services.tracker.forget(&id);
            }
            return Err(MessagingError::Unavailable(unavailable_for_guest(
                "messaging",
                &failure,
            )));
        }
        self.usage.publishes += 1;
        Ok(id)
    }
}

/// Checks what the guest controls against what AMQP can carry. Anything that reaches
/// the broker malformed (a short string over 255 bytes, an expiration over 2^32 - 1)
/// would close the host's publishing channel, so it stops here.
pub(crate) fn check_options(options: &PublishOptions) -> Result<()> {
    let bad = |m: String| Err(MessagingError::InvalidOptions(m));
    if options.headers.len() > MAX_HEADERS {
        return bad(format!("more than {MAX_HEADERS} headers"));
    }
    for (name, value) in &options.headers {
        if name.is_empty() || name.len() > MAX_SHORT_STRING || name.chars().any(char::is_control) {
            return bad(format!(
                "header name {name:?} must be 1 to {MAX_SHORT_STRING} bytes without control characters"
            ));
        }
        if name.to_ascii_lowercase().starts_with("x-") {
            return bad(format!(
                "header {name:?}: names starting with x- are the broker's and the host's"
            ));
        }
        if value.len() > MAX_HEADER_VALUE {
            return bad(format!(
                "header {name:?} is longer than {MAX_HEADER_VALUE} bytes"
            ));
        }
    }
    let header_bytes: usize = options.headers.iter().map(|(n, v)| n.len() + v.len()).sum();
    if header_bytes > MAX_HEADER_BYTES {
        return bad(format!(
            "headers take {header_bytes} bytes, more than {MAX_HEADER_BYTES}"
        ));
    }
    if options.delay_ms.is_some_and(|d| d > MAX_DELAY_MS) {
        return bad(format!("delay-ms is more than {MAX_DELAY_MS}"));
    }
    if options.expiration_ms.is_some() && options.delay_ms.is_some() {
        // RabbitMQ counts a message's TTL from when it enters a queue, so a TTL would
        // run out in the delay queue and deliver the message early.
        return bad("expiration-ms and delay-ms cannot be combined".into());
    }
    if options
        .expiration_ms
        .is_some_and(|ms| ms == 0 || ms > MAX_EXPIRATION_MS)
    {
        return bad(format!("expiration-ms must be 1 to {MAX_EXPIRATION_MS}"));
    }
    for (field, value) in [
        ("message-id", &options.message_id),
        ("correlation-id", &options.correlation_id),
        ("reply-to", &options.reply_to),
    ] {
        if let Some(value) = value
            && (value.is_empty() || value.len() > MAX_SHORT_STRING)
        {
            return bad(format!("{field} must be 1 to {MAX_SHORT_STRING} bytes"));
        }
    }
    Ok(())
}

impl Host for MessagingView<'_> {
    fn convert_messaging_error(
        &mut self,
        error: MessagingFailure,
    ) -> wasmtime::Result<MessagingError> {
        error.downcast()
    }

    async fn publish(
        &mut self,
        routing_key: String,
        payload: Vec<u8>,
        options: PublishOptions,
    ) -> std::result::Result<String, MessagingFailure> {
        self.charge_call("publish")
            .map_err(MessagingError::QuotaExceeded)?;
        Ok(self.publish_message(routing_key, payload, options).await?)
    }

    async fn request(
        &mut self,
        routing_key: String,
        payload: Vec<u8>,
        options: PublishOptions,
        timeout_ms: u32,
    ) -> std::result::Result<Response, MessagingFailure> {
        Ok(self
            .request_reply(routing_key, payload, options, timeout_ms)
            .await?)
    }

    async fn reply(
        &mut self,
        payload: Vec<u8>,
        headers: Vec<(String, String)>,
    ) -> std::result::Result<(), MessagingFailure> {
        Ok(self.answer(payload, headers).await?)
    }

    async fn status(&mut self, message_id: String) -> wasmtime::Result<Option<MessageStatus>> {
        self.usage.charge_or_trap("messaging", "status")?;
        // Across hosts when statuses are shared through Redis.
        let known = self.grant.service.tracker.lookup(&message_id).await;
        Ok(known.and_then(|snapshot| snapshot.status_for(&self.grant.plugin)))
    }
}
