//! Sends emails (the specification's `email` queue type: `notification.email` → a
//! mail provider).
//!
//! Each `notification.email` becomes one `POST <provider_url>/emails` to the provider's
//! HTTP JSON API, with the `api_key` secret as its bearer token and the message id as
//! its `Idempotency-Key`:
//! - **accepted** (2xx): done; the provider's email id is logged;
//! - **the provider is down** (5xx, 408, 429, a timeout, no connection): retried with
//!   the `email` queue's backoff (3 tries, 5 s apart), then dead-lettered;
//! - **refused** (any other 4xx: a bad address, a wrong key): dead-lettered at once
//!   with the provider's reason, since sending it again cannot succeed.
//!
//! Exactly one email per message despite redeliveries: a redelivery after success
//! sends nothing (`store::once` on the message id), and a retry after an attempt whose
//! outcome is unknown (a timeout after the provider accepted) carries the same
//! idempotency key, which the provider deduplicates.
//!
//! Settings (`[plugins.email-sender.settings]`): `provider_url`. Secrets
//! (`[plugins.email-sender.secrets]`): `api_key`. Grant: `outbound = [<provider_url>]`.

use serde::Deserialize;
use techub_guest::events::EmailRequest;
use techub_guest::http;
use techub_guest::prelude::*;

/// How long a sent message is remembered (redeliveries come within minutes).
const SENT_FOR_MS: u64 = 7 * 24 * 3_600_000;

/// The provider's answer, as far as this plugin reads it.
#[derive(Debug, Deserialize)]
struct Answer {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

#[handler(queue = "email", routing_keys = ["notification.email"])]
fn send(message: Message) -> Result<(), Failure> {
    let email: EmailRequest = message.json()?;
    let provider = config::get("provider_url")
        .ok_or_else(|| Failure::reject("setting provider_url is not set"))?;
    let key = config::get("api_key").ok_or_else(|| Failure::reject("secret api_key is not set"))?;
    let sent = store::once(message.id(), SENT_FOR_MS, || -> Result<(), Failure> {
        let response = http::post(format!("{}/emails", provider.trim_end_matches('/')))
            .header("Authorization", format!("Bearer {key}"))
            .header("Idempotency-Key", message.id())
            .json(&email)?
            .send_any_status()?;
        let answer: Answer = serde_json::from_slice(&response.body).unwrap_or(Answer {
            id: None,
            message: None,
        });
        let reason = || {
            answer
                .message
                .clone()
                .unwrap_or_else(|| response.text().chars().take(200).collect())
        };
        match response.status {
            200..=299 => {
                let id = answer.id.as_deref().unwrap_or("?");
                log::info_with(
                    "email sent",
                    &[("template", &email.template), ("provider_id", id)],
                );
                Ok(())
            }
            408 | 429 | 500.. => Err(Failure::retry(format!(
                "the mail provider answered {}: {}",
                response.status,
                reason()
            ))),
            status => Err(Failure::reject(format!(
                "the mail provider refused the email: {status} {}",
                reason()
            ))),
        }
    })?;
    if !sent {
        log::info("already sent: a redelivery of a message whose email went out");
    }
    Ok(())
}
