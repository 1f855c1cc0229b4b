//! Keeps stock and reserves it for orders (the seed's order and inventory events).
//!
//! - `inventory.restocked` `{product, quantity}` adds to the product's stock.
//! - `order.created` `{id, items: [{product, quantity}]}` reserves every item under a
//!   per-product lock, once per order (deliveries are at-least-once), caches the order,
//!   then publishes `inventory.updated` per item; when an item is short it releases what
//!   it reserved and publishes `order.cancelled` instead.
//!
//! A reservation is recorded per order and product (`reservation:<order>`, a hash of
//! product → quantity) in the same locked step that takes the stock. An attempt that
//! fails half-way (a contended lock, a backend error, a trap) leaves its reservations
//! recorded, and the retry skips the products already reserved instead of taking their
//! stock twice.

use techub_guest::events::{
    self, InventoryRestocked, InventoryUpdated, OrderCancelled, OrderCreated, OrderItem as Item,
};
use techub_guest::lock::with_lock;
use techub_guest::prelude::*;

#[handler(queue = "order", routing_keys = ["order.created", "inventory.restocked"])]
fn process(message: Message) -> Result<(), Failure> {
    match message.routing_key() {
        events::INVENTORY_RESTOCKED => restock(message.json()?),
        _ => place(&message, message.json()?),
    }
}

fn stock_key(product: &str) -> String {
    format!("stock:{product}")
}

fn restock(item: InventoryRestocked) -> Result<(), Failure> {
    if item.quantity <= 0 {
        return Err(Failure::reject(format!(
            "restock of {} by {}",
            item.product, item.quantity
        )));
    }
    store::incr_by(stock_key(&item.product), item.quantity)?;
    Ok(())
}

fn reservation_key(order: &str) -> String {
    format!("reservation:{order}")
}

/// Takes `item.quantity` of its product for `order` if there is enough; whether the
/// order holds it now. A product this order reserved before (an earlier attempt) is
/// not taken again.
fn reserve(order: &str, item: &Item) -> Result<bool, Failure> {
    with_lock(
        format!("product:{}", item.product),
        LockOptions::default(),
        |_lease| {
            let reservation = reservation_key(order);
            if store::hash_get(&reservation, &item.product)?.is_some() {
                return Ok(true);
            }
            let key = stock_key(&item.product);
            let available = store::get(&key)?
                .and_then(|v| String::from_utf8(v).ok()?.parse::<i64>().ok())
                .unwrap_or(0);
            if available < item.quantity {
                return Ok(false);
            }
            store::incr_by(&key, -item.quantity)?;
            store::hash_set(
                &reservation,
                &[(item.product.clone(), item.quantity.to_string().into_bytes())],
            )?;
            Ok(true)
        },
    )
}

/// Gives back everything `order` reserved, product by product, under each product's
/// lock (a retry after a failure here gives back only what is still recorded).
fn release(order: &str) -> Result<(), Failure> {
    let reservation = reservation_key(order);
    for (product, quantity) in store::hash_get_all(&reservation)? {
        let quantity: i64 = String::from_utf8(quantity)
            .ok()
            .and_then(|q| q.parse().ok())
            .unwrap_or(0);
        with_lock(
            format!("product:{product}"),
            LockOptions::default(),
            |_lease| -> Result<(), Failure> {
                store::incr_by(stock_key(&product), quantity)?;
                store::hash_delete(&reservation, &[&product])?;
                Ok(())
            },
        )?;
    }
    Ok(())
}

fn place(message: &Message, order: OrderCreated) -> Result<(), Failure> {
    if order.items.iter().any(|i| i.quantity <= 0) {
        return Err(Failure::reject(format!(
            "order {} has a non-positive quantity",
            order.id
        )));
    }
    let follow = PublishOptions::default()
        .follows(message)
        .priority(Priority::High);
    store::once(
        format!("order:{}", order.id),
        86_400_000,
        || -> Result<(), Failure> {
            for item in &order.items {
                if !reserve(&order.id, item)? {
                    release(&order.id)?;
                    let reason = OrderCancelled {
                        order: order.id.clone(),
                        reason: "out of stock".into(),
                        product: item.product.clone(),
                    };
                    messaging::publish_json(events::ORDER_CANCELLED, &reason, &follow)?;
                    return Ok(());
                }
            }
            // State first, then the announcement: whoever reacts to the event finds it.
            cache::set_json(
                Domain::ORDERS,
                &order.id,
                &order,
                &EntryOptions::default().tag(format!("order:{}", order.id)),
            )?;
            for item in &order.items {
                let event = InventoryUpdated {
                    product: item.product.clone(),
                    reserved: item.quantity,
                    order: order.id.clone(),
                };
                messaging::publish_json(events::INVENTORY_UPDATED, &event, &follow)?;
            }
            Ok(())
        },
    )?;
    Ok(())
}
