//! The specification's routing keys and message TTLs, so that plugins name events the
//! same way and a typo is a compile error rather than a message nobody receives.
//!
//! ```no_run
//! # use techub_guest::prelude::*;
//! use techub_guest::messaging::{routing, ttl};
//!
//! # fn main() -> Result<(), messaging::PublishError> {
//! let options = PublishOptions::default().expiration_ms(ttl::SHORT);
//! messaging::publish(routing::ORDER_CANCELLED, br#"{"id":"o-1"}"#, &options)?;
//! # Ok(())
//! # }
//! ```

/// Routing keys of the specification's events.
pub mod routing {
    /// A user signed up.
    pub const USER_CREATED: &str = "user.created";
    /// A user changed.
    pub const USER_UPDATED: &str = "user.updated";
    /// A user was deleted.
    pub const USER_DELETED: &str = "user.deleted";
    /// An order was placed.
    pub const ORDER_CREATED: &str = "order.created";
    /// An order changed.
    pub const ORDER_UPDATED: &str = "order.updated";
    /// An order was cancelled.
    pub const ORDER_CANCELLED: &str = "order.cancelled";
    /// An order was fulfilled.
    pub const ORDER_COMPLETED: &str = "order.completed";
    /// A payment went through.
    pub const PAYMENT_PROCESSED: &str = "payment.processed";
    /// A payment failed.
    pub const PAYMENT_FAILED: &str = "payment.failed";
    /// A payment was refunded.
    pub const PAYMENT_REFUNDED: &str = "payment.refunded";
    /// Stock changed.
    pub const INVENTORY_UPDATED: &str = "inventory.updated";
    /// Stock is low.
    pub const INVENTORY_LOW: &str = "inventory.low";
    /// Stock ran out.
    pub const INVENTORY_OUT: &str = "inventory.out";
    /// Send an email.
    pub const NOTIFICATION_EMAIL: &str = "notification.email";
    /// Send an SMS.
    pub const NOTIFICATION_SMS: &str = "notification.sms";
    /// Send a push notification.
    pub const NOTIFICATION_PUSH: &str = "notification.push";
}

/// The specification's message TTLs, in milliseconds, for
/// [`PublishOptions::expiration_ms`](super::PublishOptions::expiration_ms).
pub mod ttl {
    /// 1 minute.
    pub const SHORT: u64 = 60_000;
    /// 5 minutes.
    pub const MEDIUM: u64 = 300_000;
    /// 30 minutes.
    pub const LONG: u64 = 1_800_000;
    /// 1 hour.
    pub const VERY_LONG: u64 = 3_600_000;
}
