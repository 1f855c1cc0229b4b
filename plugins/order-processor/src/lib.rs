//! Processes `order.created`: reserves stock per item under a per-product lock, once
//! per order (deliveries are at-least-once), caches the order, and publishes
//! `inventory.updated` for each item, or `order.cancelled` when stock is short.

use serde::{Deserialize, Serialize};
use techub_guest::lock::with_lock;
use techub_guest::prelude::*;

#[derive(Debug, Deserialize, Serialize)]
struct Item {
    product: String,
    quantity: i64,
}

#[derive(Debug, Deserialize, Serialize)]
struct OrderCreated {
    id: String,
    items: Vec<Item>,
}

#[handler(queue = "order", routing_keys = ["order.created"])]
fn process(message: Message) -> Result<(), Failure> {
    let order: OrderCreated = message.json()?;
    let follow = PublishOptions::default()
        .follows(&message)
        .priority(Priority::High);
    store::once(
        format!("order:{}", order.id),
        86_400_000,
        || -> Result<(), Failure> {
            for item in &order.items {
                let reserved = with_lock(
                    format!("product:{}", item.product),
                    LockOptions::default(),
                    |_lease| {
                        let key = format!("stock:{}", item.product);
                        let left = store::incr_by(&key, -item.quantity)?;
                        if left < 0 {
                            store::incr_by(&key, item.quantity)?;
                            return Ok::<_, Failure>(false);
                        }
                        Ok(true)
                    },
                )?;
                if !reserved {
                    let reason = serde_json::json!({ "order": order.id, "reason": "out of stock", "product": item.product });
                    messaging::publish_json("order.cancelled", &reason, &follow)?;
                    return Ok(());
                }
                let event = serde_json::json!({ "product": item.product, "reserved": item.quantity, "order": order.id });
                messaging::publish_json("inventory.updated", &event, &follow)?;
            }
            cache::set_json(Domain::ORDERS, &order.id, &order, &EntryOptions::default())?;
            Ok(())
        },
    )?;
    Ok(())
}
