//! Delivers events to customers' webhook endpoints (the specification's `webhook` queue
//! type), signed per the Standard Webhooks scheme (<https://www.standardwebhooks.com>).
//!
//! A `webhook.event` message (`{"customer": .., "type": .., "data": ..}`) becomes one
//! `POST` of `{"type", "timestamp", "data"}` to the customer's endpoint, with
//! - `webhook-id`: the message id, the same on every retry, so the receiver can drop
//!   a delivery it already processed;
//! - `webhook-timestamp`: this attempt's Unix time in seconds;
//! - `webhook-signature`: `v1,` and the base64 HMAC-SHA256 of `id.timestamp.body`
//!   under the endpoint's secret (`whsec_` and its base64 key bytes).
//!
//! What the endpoint answers decides the message's fate: 2xx acknowledges it; 5xx,
//! 408, 429, a timeout or no connection retry with the `webhook` queue's backoff, then
//! dead-letter; **410 Gone** disables the endpoint (recorded in the plugin's store:
//! later events for that customer are dead-lettered at once, saying so, until an
//! operator deletes `disabled:<customer>`); another 4xx is dead-lettered with the status.
//!
//! Configuration, per customer `<c>`: the setting `endpoint_<c>` (the URL, which
//! `outbound` must grant) and the secret `secret_<c>` (`whsec_...`).

mod signature;

use serde::Serialize;
use techub_guest::events::WebhookEvent;
use techub_guest::http;
use techub_guest::prelude::*;

/// The body the endpoint receives.
#[derive(Debug, Serialize)]
struct Payload<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    /// RFC 3339, UTC.
    timestamp: String,
    data: &'a serde_json::Value,
}

#[handler(queue = "webhook", routing_keys = ["webhook.event"])]
fn deliver(message: Message) -> Result<(), Failure> {
    let event: WebhookEvent = message.json()?;
    let customer = &event.customer;
    let url = config::get(format!("endpoint_{customer}")).ok_or_else(|| {
        Failure::reject(format!(
            "no endpoint for customer {customer:?} (setting endpoint_{customer})"
        ))
    })?;
    let secret = config::get(format!("secret_{customer}")).ok_or_else(|| {
        Failure::reject(format!(
            "no signing secret for customer {customer:?} (secret secret_{customer})"
        ))
    })?;
    let disabled = format!("disabled:{customer}");
    if let Some(why) = store::get(&disabled)? {
        return Err(Failure::reject(format!(
            "the endpoint of customer {customer} is disabled: {}",
            String::from_utf8_lossy(&why)
        )));
    }
    let now = signature::unix_now();
    let body = serde_json::to_vec(&Payload {
        kind: &event.kind,
        timestamp: signature::rfc3339(now),
        data: &event.data,
    })
    .map_err(|e| Failure::reject(format!("the event does not serialize: {e}")))?;
    let signed = signature::sign(&secret, message.id(), now, &body)
        .map_err(|e| Failure::reject(format!("secret_{customer}: {e}")))?;
    let response = http::post(url)
        .header("content-type", "application/json")
        .header("webhook-id", message.id())
        .header("webhook-timestamp", now.to_string())
        .header("webhook-signature", signed)
        .body(body)
        .send_any_status()?;
    match response.status {
        200..=299 => {
            log::info_with(
                "webhook delivered",
                &[("customer", customer), ("type", &event.kind)],
            );
            Ok(())
        }
        410 => {
            store::set(
                &disabled,
                format!("it answered 410 Gone to message {}", message.id()),
            )?;
            log::warn(format!(
                "webhook endpoint of customer {customer} disabled: it answered 410 Gone"
            ));
            Err(Failure::reject(format!(
                "the endpoint of customer {customer} answered 410 Gone: disabled"
            )))
        }
        408 | 429 | 500.. => Err(Failure::retry(format!(
            "the endpoint of customer {customer} answered {}",
            response.status
        ))),
        status => Err(Failure::reject(format!(
            "the endpoint of customer {customer} refused the event: {status}"
        ))),
    }
}
