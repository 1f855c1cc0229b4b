//! The events of the example business flow, typed: what `user.created`,
//! `order.created`, `payment.*`, `inventory.*`, `notification.email` and
//! `webhook.event` carry. The example plugins publish and read these very types, and a
//! test checks the README's table of event formats against them, so the two cannot
//! drift. Amounts are in cents; quantities are whole units.
//!
//! ```no_run
//! # use techub_guest::prelude::*;
//! use techub_guest::events::{self, OrderCreated};
//! # fn handle(message: Message) -> Result<(), Failure> {
//! let order: OrderCreated = message.json()?;
//! let event = events::PaymentEvent::processed(&order.id, order.total, "ch_1");
//! messaging::publish_json(events::PAYMENT_PROCESSED, &event, &PublishOptions::default().follows(&message))?;
//! # Ok(()) }
//! ```

use serde::{Deserialize, Serialize};

/// `user.created`: [`UserCreated`].
pub const USER_CREATED: &str = "user.created";
/// `notification.email`: [`EmailRequest`].
pub const NOTIFICATION_EMAIL: &str = "notification.email";
/// `order.created`: [`OrderCreated`].
pub const ORDER_CREATED: &str = "order.created";
/// `order.cancelled`: [`OrderCancelled`].
pub const ORDER_CANCELLED: &str = "order.cancelled";
/// `payment.processed`: [`PaymentEvent`] with status `processed`.
pub const PAYMENT_PROCESSED: &str = "payment.processed";
/// `payment.failed`: [`PaymentEvent`] with status `failed`.
pub const PAYMENT_FAILED: &str = "payment.failed";
/// `inventory.restocked`: [`InventoryRestocked`].
pub const INVENTORY_RESTOCKED: &str = "inventory.restocked";
/// `inventory.updated`: [`InventoryUpdated`].
pub const INVENTORY_UPDATED: &str = "inventory.updated";
/// `inventory.low`: [`InventoryLevel`].
pub const INVENTORY_LOW: &str = "inventory.low";
/// `inventory.out`: [`InventoryLevel`].
pub const INVENTORY_OUT: &str = "inventory.out";
/// `webhook.event`: [`WebhookEvent`].
pub const WEBHOOK_EVENT: &str = "webhook.event";

/// `user.created`: a user signed up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserCreated {
    /// The user's id.
    pub id: String,
    /// Where to write to them.
    pub email: String,
    /// Their name.
    pub name: String,
}

/// `notification.email`: an email to send (`email-sender` sends it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmailRequest {
    /// Which email (`welcome`, ...): the provider's template.
    pub template: String,
    /// The recipient's address.
    pub to: String,
    /// The sender's address.
    pub from: String,
    /// The recipient's name.
    #[serde(default)]
    pub name: String,
    /// The user it concerns, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
}

/// One line of an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderItem {
    /// The product's id.
    pub product: String,
    /// How many.
    pub quantity: i64,
}

/// `order.created`: an order was placed. Consumers read the fields they need: stock
/// keeping the items, payment the total and the card.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderCreated {
    /// The order's id.
    pub id: String,
    /// What was ordered.
    #[serde(default)]
    pub items: Vec<OrderItem>,
    /// The amount to charge, in cents.
    #[serde(default)]
    pub total: u64,
    /// The card's last four digits (the gateway's token in a real shop).
    #[serde(default)]
    pub card: String,
}

/// `order.cancelled`: an order could not be filled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderCancelled {
    /// The order's id.
    pub order: String,
    /// Why (`out of stock`).
    pub reason: String,
    /// The product that could not be reserved.
    pub product: String,
}

/// `payment.processed` and `payment.failed`: what came of charging an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentEvent {
    /// The order's id.
    pub order: String,
    /// The amount, in cents.
    pub amount: u64,
    /// `processed` or `failed`.
    pub status: String,
    /// The gateway's charge id (processed only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub charge: Option<String>,
    /// Why it failed (failed only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl PaymentEvent {
    /// A charged order.
    pub fn processed(order: &str, amount: u64, charge: &str) -> Self {
        Self {
            order: order.into(),
            amount,
            status: "processed".into(),
            charge: Some(charge.into()),
            reason: None,
        }
    }

    /// An order whose charge was declined, and why.
    pub fn failed(order: &str, amount: u64, reason: &str) -> Self {
        Self {
            order: order.into(),
            amount,
            status: "failed".into(),
            charge: None,
            reason: Some(reason.into()),
        }
    }
}

/// `inventory.restocked`: stock arrived.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InventoryRestocked {
    /// The product's id.
    pub product: String,
    /// How many arrived.
    pub quantity: i64,
}

/// `inventory.updated`: stock was reserved for an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InventoryUpdated {
    /// The product's id.
    pub product: String,
    /// How many were reserved.
    pub reserved: i64,
    /// For which order.
    #[serde(default)]
    pub order: String,
}

/// `inventory.low` and `inventory.out`: a product's level crossed the low mark or
/// reached zero.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InventoryLevel {
    /// The product's id.
    pub product: String,
    /// Its level now.
    pub level: i64,
}

/// `webhook.event`: an event to deliver to a customer's webhook endpoint
/// (`webhook-dispatcher` signs and sends it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebhookEvent {
    /// The customer whose endpoint receives it.
    pub customer: String,
    /// The event's type, e.g. `order.shipped`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Its data, as the customer receives it.
    #[serde(default)]
    pub data: serde_json::Value,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::de::DeserializeOwned;
    use serde_json::Value;

    /// The README's example of each event: the `json` block after its
    /// `<!-- event: <routing key> -->` line.
    fn readme_examples() -> Vec<(String, Value)> {
        let readme = include_str!("../../README.md");
        let mut examples = Vec::new();
        let mut lines = readme.lines();
        while let Some(line) = lines.next() {
            let Some(key) = line
                .strip_prefix("<!-- event: ")
                .and_then(|rest| rest.strip_suffix(" -->"))
            else {
                continue;
            };
            assert_eq!(lines.next(), Some("```json"), "the example of {key}");
            let block: Vec<&str> = lines.by_ref().take_while(|l| *l != "```").collect();
            let value = serde_json::from_str(&block.join("\n"))
                .unwrap_or_else(|e| panic!("the README's {key} example is not JSON: {e}"));
            examples.push((key.to_string(), value));
        }
        examples
    }

    /// `value` read as `T` and written back: the same JSON, or the type and the
    /// README differ (a field missing, added or renamed on one side).
    fn round_trips<T: DeserializeOwned + Serialize>(key: &str, value: &Value) {
        let typed: T = serde_json::from_value(value.clone())
            .unwrap_or_else(|e| panic!("the README's {key} example does not read: {e}"));
        assert_eq!(
            &serde_json::to_value(&typed).unwrap(),
            value,
            "the README's {key} example and its SDK type differ"
        );
    }

    #[test]
    fn the_readme_shows_every_event_as_its_type_writes_it() {
        let examples = readme_examples();
        let mut shown: Vec<&str> = examples.iter().map(|(k, _)| k.as_str()).collect();
        shown.sort_unstable();
        let mut expected = vec![
            USER_CREATED,
            NOTIFICATION_EMAIL,
            ORDER_CREATED,
            ORDER_CANCELLED,
            PAYMENT_PROCESSED,
            PAYMENT_FAILED,
            INVENTORY_RESTOCKED,
            INVENTORY_UPDATED,
            INVENTORY_LOW,
            WEBHOOK_EVENT,
        ];
        expected.sort_unstable();
        assert_eq!(shown, expected, "the README's examples");
        for (key, value) in &examples {
            match key.as_str() {
                USER_CREATED => round_trips::<UserCreated>(key, value),
                NOTIFICATION_EMAIL => round_trips::<EmailRequest>(key, value),
                ORDER_CREATED => round_trips::<OrderCreated>(key, value),
                ORDER_CANCELLED => round_trips::<OrderCancelled>(key, value),
                PAYMENT_PROCESSED | PAYMENT_FAILED => round_trips::<PaymentEvent>(key, value),
                INVENTORY_RESTOCKED => round_trips::<InventoryRestocked>(key, value),
                INVENTORY_UPDATED => round_trips::<InventoryUpdated>(key, value),
                INVENTORY_LOW => round_trips::<InventoryLevel>(key, value),
                WEBHOOK_EVENT => round_trips::<WebhookEvent>(key, value),
                other => panic!("the README shows an event the SDK has no type for: {other}"),
            }
        }
    }
}
