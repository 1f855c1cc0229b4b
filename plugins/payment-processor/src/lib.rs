//! Charges orders (the specification's payment flow: `order.created` → `payment.*`).
//!
//! On `order.created` (through the `payment` queue type: 5 retries, 5 s apart, urgent)
//! it charges the order's total once per order, whatever the redeliveries:
//! - **approved**: records the payment in its store (`payment:<order>`, a hash) and
//!   publishes `payment.processed`;
//! - **declined** (a card the gateway refuses, or a total over the `limit` setting): a
//!   decline cannot succeed later, so it publishes `payment.failed` and rejects: the
//!   message is dead-lettered with the reason;
//! - **gateway down** (the `gateway_failures` setting: its first N attempts fail, as a
//!   flaky gateway would): retries with the queue's backoff, then succeeds.
//!
//! The gateway is simulated, deterministically, so that each path can be tested.

use serde::{Deserialize, Serialize};
use techub_guest::prelude::*;

#[derive(Debug, Deserialize, Serialize)]
struct OrderCreated {
    id: String,
    /// In cents.
    total: u64,
    /// The card's last four digits.
    card: String,
}

#[derive(Debug, Serialize)]
struct PaymentEvent<'a> {
    order: &'a str,
    amount: u64,
    status: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

/// What the (simulated) gateway answers.
#[derive(Debug, PartialEq, Eq)]
enum Charge {
    Approved,
    Declined(String),
    Unavailable,
}

/// The gateway's decision: pure, so a native unit test reaches it.
fn charge(order: &OrderCreated, attempt: u32, limit: u64, gateway_failures: u32) -> Charge {
    if attempt <= gateway_failures {
        return Charge::Unavailable;
    }
    if order.card == "0002" {
        return Charge::Declined("card declined by the issuer".into());
    }
    if order.total > limit {
        return Charge::Declined(format!("total {} over the limit {limit}", order.total));
    }
    Charge::Approved
}

#[handler(queue = "payment", routing_keys = ["order.created"])]
fn process(message: Message) -> Result<(), Failure> {
    let order: OrderCreated = message.json()?;
    let limit: u64 = config::parsed_or("limit", 100_000)?;
    let gateway_failures: u32 = config::parsed_or("gateway_failures", 0)?;
    let follow = PublishOptions::default()
        .follows(&message)
        .priority(Priority::Urgent);
    let record = format!("payment:{}", order.id);
    // A charge that went through is never made again (redeliveries are at-least-once).
    if store::hash_get(&record, "status")?.is_some() {
        log::info_with("already charged", &[("order", &order.id)]);
        return Ok(());
    }
    match charge(&order, message.attempt(), limit, gateway_failures) {
        Charge::Approved => {
            let fields = [
                ("status".to_string(), b"processed".to_vec()),
                ("amount".to_string(), order.total.to_string().into_bytes()),
            ];
            store::hash_set(&record, &fields)?;
            let event = PaymentEvent {
                order: &order.id,
                amount: order.total,
                status: "processed",
                reason: None,
            };
            messaging::publish_json("payment.processed", &event, &follow)?;
            log::info_with("payment processed", &[("order", &order.id)]);
            Ok(())
        }
        Charge::Declined(reason) => {
            let event = PaymentEvent {
                order: &order.id,
                amount: order.total,
                status: "failed",
                reason: Some(reason.clone()),
            };
            messaging::publish_json("payment.failed", &event, &follow)?;
            Err(Failure::reject(format!("order {}: {reason}", order.id)))
        }
        Charge::Unavailable => Err(Failure::retry(format!(
            "payment gateway unavailable (attempt {})",
            message.attempt()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(total: u64, card: &str) -> OrderCreated {
        OrderCreated {
            id: "o-1".into(),
            total,
            card: card.into(),
        }
    }

    #[test]
    fn the_gateway_approves_declines_and_fails_for_the_first_attempts() {
        assert_eq!(charge(&order(500, "4242"), 1, 1000, 0), Charge::Approved);
        assert!(matches!(
            charge(&order(500, "0002"), 1, 1000, 0),
            Charge::Declined(_)
        ));
        assert!(matches!(
            charge(&order(5000, "4242"), 1, 1000, 0),
            Charge::Declined(_)
        ));
        assert_eq!(charge(&order(500, "4242"), 2, 1000, 2), Charge::Unavailable);
        assert_eq!(charge(&order(500, "4242"), 3, 1000, 2), Charge::Approved);
    }
}
