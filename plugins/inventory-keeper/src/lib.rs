//! Keeps stock levels (the specification's inventory flow: `inventory.*`).
//!
//! `inventory.restocked` `{product, quantity}` adds to a product's level and
//! `inventory.updated` `{product, reserved}` (what `order-processor` announces) takes
//! from it, each event counted once whatever the redeliveries. After each change the
//! product's cache entries (tag `product:<id>` in `products`) are invalidated, since
//! what they say of its stock is stale, and the level is announced when it crosses
//! the `low` setting (`inventory.low`) or reaches zero (`inventory.out`).

use techub_guest::events::{self, InventoryLevel, InventoryRestocked, InventoryUpdated};
use techub_guest::prelude::*;

/// What a new level means: the event to announce, if any.
fn announcement(before: i64, after: i64, low: i64) -> Option<&'static str> {
    if after <= 0 && before > 0 {
        Some(events::INVENTORY_OUT)
    } else if after > 0 && after <= low && before > low {
        Some(events::INVENTORY_LOW)
    } else {
        None
    }
}

#[handler(queue = "inventory", routing_keys = ["inventory.restocked", "inventory.updated"])]
fn keep(message: Message) -> Result<(), Failure> {
    let (product, delta) = match message.routing_key() {
        events::INVENTORY_RESTOCKED => {
            let restocked: InventoryRestocked = message.json()?;
            (restocked.product, restocked.quantity)
        }
        _ => {
            let updated: InventoryUpdated = message.json()?;
            (updated.product, -updated.reserved)
        }
    };
    if product.is_empty() || delta == 0 {
        return Err(Failure::reject(
            "an inventory event needs a product and a quantity",
        ));
    }
    let low: i64 = config::parsed_or("low", 5)?;
    store::once(message.id(), 86_400_000, || -> Result<(), Failure> {
        let after = store::incr_by(format!("level:{product}"), delta)?;
        let tag = format!("product:{product}");
        let dropped = cache::invalidate_tag(Some(Domain::PRODUCTS), &tag)?;
        if let Some(event) = announcement(after - delta, after, low) {
            let body = InventoryLevel {
                product: product.clone(),
                level: after,
            };
            let follow = PublishOptions::default()
                .follows(&message)
                .priority(Priority::High);
            messaging::publish_json(event, &body, &follow)?;
        }
        log::info_with(
            "stock level",
            &[
                ("product", &product),
                ("level", &after.to_string()),
                ("cache_entries_dropped", &dropped.to_string()),
            ],
        );
        Ok(())
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::announcement;

    #[test]
    fn crossing_the_low_mark_or_zero_is_announced_once() {
        assert_eq!(announcement(10, 4, 5), Some("inventory.low"));
        assert_eq!(announcement(4, 3, 5), None, "already low");
        assert_eq!(announcement(3, 0, 5), Some("inventory.out"));
        assert_eq!(announcement(0, -1, 5), None, "already out");
        assert_eq!(announcement(0, 10, 5), None, "restocked");
    }
}
