//! Charges orders (the specification's payment flow: `order.created` → `payment.*`).
//!
//! On `order.created` (through the `payment` queue type: 5 retries, 5 s apart, urgent)
//! it charges the order's total through a card gateway's HTTP API
//! (`POST <gateway_url>/charges`, the `gateway_key` secret as bearer token, and
//! `order-<id>` as the `Idempotency-Key`), once per order whatever the redeliveries:
//! - **approved** (2xx): records the payment in its store (`payment:<order>`, a hash
//!   with the gateway's charge id) and publishes `payment.processed`;
//! - **declined** (402 from the gateway, or a total over the `limit` setting): a
//!   decline cannot succeed later, so it publishes `payment.failed` and rejects: the
//!   message is dead-lettered with the reason;
//! - **gateway down** (5xx, 408, 429, a timeout, no connection): retries with the
//!   queue's backoff. A retry after a timeout whose charge went through carries the
//!   same idempotency key, so the gateway returns that charge instead of making another;
//! - **refused** (another 4xx: a wrong key, a malformed charge): dead-lettered with
//!   the gateway's reason, to replay once the configuration is fixed.
//!
//! Settings: `gateway_url`, `limit` (cents). Secrets: `gateway_key`. Grant:
//! `outbound = [<gateway_url>]`.

use serde::Serialize;
use techub_guest::events::{self, OrderCreated, PaymentEvent};
use techub_guest::http;
use techub_guest::prelude::*;

/// What the charge request sends.
#[derive(Debug, Serialize)]
struct ChargeRequest<'a> {
    amount: u64,
    currency: &'a str,
    card: &'a str,
    order: &'a str,
}

/// What the gateway's answer means for the order.
#[derive(Debug, PartialEq, Eq)]
enum Charge {
    Approved { id: String },
    Declined(String),
    Unavailable(String),
    Refused(String),
}

/// The gateway's answer, read: pure, so a native unit test reaches it.
fn read_answer(status: u16, body: &[u8]) -> Charge {
    let value: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let message = value["error"]["message"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| String::from_utf8_lossy(body).chars().take(200).collect());
    match status {
        200..=299 => match value["id"].as_str() {
            Some(id) => Charge::Approved { id: id.to_string() },
            None => Charge::Unavailable("the gateway's answer has no charge id".into()),
        },
        402 => Charge::Declined(message),
        408 | 429 | 500.. => {
            Charge::Unavailable(format!("the gateway answered {status}: {message}"))
        }
        _ => Charge::Refused(format!(
            "the gateway refused the charge: {status} {message}"
        )),
    }
}

#[handler(queue = "payment", routing_keys = ["order.created"])]
fn process(message: Message) -> Result<(), Failure> {
    let order: OrderCreated = message.json()?;
    let limit: u64 = config::parsed_or("limit", 100_000)?;
    let follow = PublishOptions::default()
        .follows(&message)
        .priority(Priority::Urgent);
    let record = format!("payment:{}", order.id);
    // A charge that went through is never made again (redeliveries are at-least-once).
    if store::hash_get(&record, "status")?.is_some() {
        log::info_with("already charged", &[("order", &order.id)]);
        return Ok(());
    }
    let decline = |reason: String| -> Result<(), Failure> {
        let event = PaymentEvent::failed(&order.id, order.total, &reason);
        messaging::publish_json(events::PAYMENT_FAILED, &event, &follow)?;
        Err(Failure::reject(format!("order {}: {reason}", order.id)))
    };
    if order.total > limit {
        return decline(format!("total {} over the limit {limit}", order.total));
    }
    let gateway = config::get("gateway_url")
        .ok_or_else(|| Failure::reject("setting gateway_url is not set"))?;
    let key = config::get("gateway_key")
        .ok_or_else(|| Failure::reject("secret gateway_key is not set"))?;
    let response = http::post(format!("{}/charges", gateway.trim_end_matches('/')))
        .header("Authorization", format!("Bearer {key}"))
        .header("Idempotency-Key", format!("order-{}", order.id))
        .json(&ChargeRequest {
            amount: order.total,
            currency: "usd",
            card: &order.card,
            order: &order.id,
        })?
        .send_any_status()?;
    match read_answer(response.status, &response.body) {
        Charge::Approved { id } => {
            let fields = [
                ("status".to_string(), b"processed".to_vec()),
                ("amount".to_string(), order.total.to_string().into_bytes()),
                ("charge".to_string(), id.clone().into_bytes()),
            ];
            store::hash_set(&record, &fields)?;
            let event = PaymentEvent::processed(&order.id, order.total, &id);
            messaging::publish_json(events::PAYMENT_PROCESSED, &event, &follow)?;
            log::info_with(
                "payment processed",
                &[("order", &order.id), ("charge", &id)],
            );
            Ok(())
        }
        Charge::Declined(reason) => decline(reason),
        Charge::Unavailable(reason) => Err(Failure::retry(reason)),
        Charge::Refused(reason) => Err(Failure::reject(format!("order {}: {reason}", order.id))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gateways_answers_approve_decline_retry_or_refuse() {
        assert_eq!(
            read_answer(200, br#"{"id":"ch_1","status":"succeeded"}"#),
            Charge::Approved { id: "ch_1".into() }
        );
        assert_eq!(
            read_answer(
                402,
                br#"{"error":{"code":"card_declined","message":"card declined"}}"#
            ),
            Charge::Declined("card declined".into())
        );
        assert!(matches!(read_answer(503, b"down"), Charge::Unavailable(r) if r.contains("503")));
        assert!(matches!(read_answer(429, b""), Charge::Unavailable(_)));
        assert!(matches!(
            read_answer(401, br#"{"error":{"message":"invalid API key"}}"#),
            Charge::Refused(r) if r.contains("401 invalid API key")
        ));
    }
}
