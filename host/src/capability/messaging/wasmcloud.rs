//! `wasmcloud:messaging/consumer@0.2.0` (publish, request) onto the same
//! [`MessagingView`] as `techub:platform/messaging`: the same grants, validation,
//! limits and quota. A component written for wasmCloud publishes with it.

use super::MessagingView;
use crate::capability::bindings::techub::platform::messaging::{
    Host as Messaging, MessagingError, PublishOptions,
};

wasmtime::component::bindgen!({
    path: "../wit/standard/wasmcloud-messaging-0.2.0",
    world: "wasmcloud:messaging/imports",
    imports: { default: async | trappable },
});

use wasmcloud::messaging::consumer;
use wasmcloud::messaging::types::BrokerMessage;

/// Links the interface.
pub(super) fn link<T: Send + 'static>(
    linker: &mut wasmtime::component::Linker<T>,
    view: fn(&mut T) -> MessagingView<'_>,
) -> wasmtime::Result<()> {
    consumer::add_to_linker::<T, super::HasMessaging>(linker, view)
}

/// Techub's defaults for a message the interface cannot describe further.
fn options(reply_to: Option<String>) -> PublishOptions {
    PublishOptions {
        priority: None,
        persistent: true,
        expiration_ms: None,
        delay_ms: None,
        correlation_id: None,
        reply_to,
        headers: Vec::new(),
        message_id: None,
    }
}

/// A `messaging` error in the interface's one string: the WIT case, then its detail.
fn describe(error: MessagingError) -> String {
    match error {
        MessagingError::InvalidRoutingKey(m) => format!("invalid-routing-key: {m}"),
        MessagingError::NotPermitted(m) => format!("not-permitted: {m}"),
        MessagingError::PayloadTooLarge(max) => {
            format!("payload-too-large: payloads are at most {max} bytes")
        }
        MessagingError::InvalidOptions(m) => format!("invalid-options: {m}"),
        MessagingError::QuotaExceeded(m) => format!("quota-exceeded: {m}"),
        MessagingError::Unavailable(m) => format!("unavailable: {m}"),
        MessagingError::Timeout(m) => format!("timeout: {m}"),
    }
}

/// The guest's error, or the trap.
fn answer<T>(result: Result<T, super::MessagingFailure>) -> wasmtime::Result<Result<T, String>> {
    match result {
        Ok(value) => Ok(Ok(value)),
        Err(failure) => Ok(Err(describe(failure.downcast()?))),
    }
}

impl consumer::Host for MessagingView<'_> {
    async fn request(
        &mut self,
        subject: String,
        body: Vec<u8>,
        timeout_ms: u32,
    ) -> wasmtime::Result<Result<BrokerMessage, String>> {
        let reply =
            Messaging::request(self, subject.clone(), body, options(None), timeout_ms).await;
        answer(reply.map(|response| BrokerMessage {
            subject,
            body: response.payload,
            reply_to: None,
        }))
    }

    async fn publish(&mut self, msg: BrokerMessage) -> wasmtime::Result<Result<(), String>> {
        let published =
            Messaging::publish(self, msg.subject, msg.body, options(msg.reply_to)).await;
        answer(published.map(|_id| ()))
    }
}
