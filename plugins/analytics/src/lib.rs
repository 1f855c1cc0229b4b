//! Counts what happens on the platform (the specification's analytics consumer).
//!
//! Every `user.*`, `order.*`, `payment.*` and `inventory.*` event adds one to its
//! kind's counter for the day (`events:<routing key>:<yyyy-mm-dd>`, a store counter)
//! and to the day's sorted set of kinds (`kinds:<day>`, for "what happened most");
//! `payment.processed` adds its amount to `revenue:<day>`; `inventory.updated` adds
//! the reserved quantity to the best-sellers sorted set (`best-sellers`). Each event
//! is counted once, whatever the redeliveries.

use serde::Deserialize;
use techub_guest::prelude::*;

#[derive(Debug, Default, Deserialize)]
struct Fields {
    #[serde(default)]
    amount: i64,
    #[serde(default)]
    product: String,
    #[serde(default)]
    reserved: i64,
}

/// `yyyy-mm-dd` of a time in ms since the Unix epoch (UTC; civil from days).
fn day(ms: u64) -> String {
    let days = (ms / 86_400_000) as i64 + 719_468;
    let era = days.div_euclid(146_097);
    let doe = days.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

#[handler(
    queue = "analytics",
    routing_keys = ["user.*", "order.*", "payment.*", "inventory.*"]
)]
fn count(message: Message) -> Result<(), Failure> {
    // Any payload counts; the fields only add to the figures they feed.
    let fields: Fields = message.json().unwrap_or_default();
    let day = day(message.published_at_ms());
    let kind = message.routing_key().to_string();
    store::once(message.id(), 7 * 86_400_000, || -> Result<(), Failure> {
        store::incr(format!("events:{kind}:{day}"))?;
        store::sorted_incr_by(format!("kinds:{day}"), &kind, 1.0)?;
        match kind.as_str() {
            "payment.processed" => {
                store::incr_by(format!("revenue:{day}"), fields.amount)?;
            }
            "inventory.updated" if !fields.product.is_empty() => {
                store::sorted_incr_by("best-sellers", &fields.product, fields.reserved as f64)?;
            }
            _ => {}
        }
        Ok(())
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn days_are_utc_calendar_dates() {
        assert_eq!(super::day(0), "1970-01-01");
        assert_eq!(super::day(1_796_083_200_000), "2026-12-01");
        assert_eq!(super::day(951_782_400_000), "2000-02-29");
    }
}
