//! `messaging.request` and `messaging.reply`: a handler asks another plugin and
//! waits for its answer; the answering plugin replies to the message it handles.
//!
//! A request is a publish (same grants, limits and quota) whose `reply-to` is this
//! host's reply queue and whose correlation id is fresh (see [`super::replies`]). Its
//! wait is host time: it counts against the invocation's wall-clock limit, which
//! cancels it like any host call when it runs out, and never against its CPU.

use super::host::{MessagingView, Result, check_options};
use super::{Envelope, now_ms};
use crate::capability::bindings::Delivery;
use crate::capability::bindings::techub::platform::messaging::{
    MessagingError, PublishOptions, Response,
};
use crate::capability::unavailable_for_guest;
use std::time::Duration;

/// Longest wait a request may ask for (5 minutes); the invocation's wall-clock limit
/// usually ends it sooner.
pub const MAX_REQUEST_TIMEOUT_MS: u32 = 300_000;

/// The request an invocation handles: where its reply goes, and whether it went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answering {
    reply_to: String,
    correlation_id: String,
    replied: bool,
}

impl Answering {
    /// What `delivery` asks to be answered on, if it asks (a `reply-to` and a
    /// correlation id).
    pub fn of(delivery: &Delivery) -> Option<Self> {
        Some(Self {
            reply_to: delivery.reply_to.clone()?,
            correlation_id: delivery.correlation_id.clone()?,
            replied: false,
        })
    }
}

impl MessagingView<'_> {
    pub(super) async fn request_reply(
        &mut self,
        routing_key: String,
        payload: Vec<u8>,
        mut options: PublishOptions,
        timeout_ms: u32,
    ) -> Result<Response> {
        self.charge_call("request")
            .map_err(MessagingError::QuotaExceeded)?;
        if options.reply_to.is_some() || options.correlation_id.is_some() {
            return Err(MessagingError::InvalidOptions(
                "a request's reply-to and correlation-id are the host's: leave them none".into(),
            ));
        }
        if !(1..=MAX_REQUEST_TIMEOUT_MS).contains(&timeout_ms) {
            return Err(MessagingError::InvalidOptions(format!(
                "timeout-ms must be 1 to {MAX_REQUEST_TIMEOUT_MS}"
            )));
        }
        let replies = self.grant.service.replies.clone();
        // Waiting before the publish: a fast answer must find its caller.
        let awaited = replies.expect();
        options.reply_to = Some(replies.address().to_string());
        options.correlation_id = Some(awaited.correlation_id().to_string());
        self.publish_message(routing_key.clone(), payload, options)
            .await?;
        match awaited
            .reply(Duration::from_millis(timeout_ms.into()))
            .await
        {
            Some(reply) => Ok(Response {
                payload: reply.payload,
                headers: reply.headers,
            }),
            None => {
                self.grant.service.metrics.request_timed_out();
                Err(MessagingError::Timeout(format!(
                    "no reply to {routing_key} within {timeout_ms} ms"
                )))
            }
        }
    }

    pub(super) async fn answer(
        &mut self,
        payload: Vec<u8>,
        headers: Vec<(String, String)>,
    ) -> Result<()> {
        self.charge_call("reply")
            .map_err(MessagingError::QuotaExceeded)?;
        let replies = self.grant.service.replies.clone();
        let Some(answering) = self.answering.clone() else {
            return Err(MessagingError::InvalidOptions(
                "the message being handled asks for no reply".into(),
            ));
        };
        // Only a host's reply queue is answered directly: a reply-to that is anything
        // else (a routing key, or another plugin's queue) must not become a way into
        // a queue around the publish grants.
        if !replies.is_reply_queue(&answering.reply_to) {
            return Err(MessagingError::InvalidOptions(format!(
                "the message's reply-to {:?} is not a request's: publish the answer to it instead",
                answering.reply_to
            )));
        }
        if answering.replied {
            return Err(MessagingError::InvalidOptions(
                "this message was answered already".into(),
            ));
        }
        self.take_publish()?;
        let max = self.grant.max_message_bytes;
        if payload.len() > max {
            return Err(MessagingError::PayloadTooLarge(max as u64));
        }
        check_options(&PublishOptions {
            priority: None,
            persistent: false,
            expiration_ms: None,
            delay_ms: None,
            correlation_id: None,
            reply_to: None,
            headers: headers.clone(),
            message_id: None,
        })?;
        let to = answering.reply_to;
        let envelope = Envelope {
            id: uuid::Uuid::new_v4().to_string(),
            routing_key: to.clone(),
            payload,
            headers,
            correlation_id: Some(answering.correlation_id),
            reply_to: None,
            priority: 5,
            // The caller waits in memory: a reply outliving a broker restart is late.
            persistent: false,
            expiration_ms: None,
            published_at_ms: now_ms(),
            attempt: 1,
            parked: None,
        };
        let services = &self.grant.service;
        let timeout = self.grant.confirm_timeout;
        let failure =
            match tokio::time::timeout(timeout, services.broker.reply(&to, envelope)).await {
                Ok(Ok(())) => None,
                Ok(Err(error)) => Some(error.to_string()),
                Err(_) => Some(format!("no confirm within {} ms", timeout.as_millis())),
            };
        if let Some(failure) = failure {
            return Err(MessagingError::Unavailable(unavailable_for_guest(
                "messaging",
                &failure,
            )));
        }
        self.usage.publishes += 1;
        if let Some(answering) = self.answering.as_mut() {
            answering.replied = true;
        }
        Ok(())
    }
}
