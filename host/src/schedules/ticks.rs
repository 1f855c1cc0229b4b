//! When a schedule ticks: the same times on every host.

use crate::config::Timing;
use chrono::{DateTime, TimeZone, Utc};

/// The first tick strictly after `after`.
pub fn next_after(timing: &Timing, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    match timing {
        Timing::Cron(schedule) => schedule.after(&after).next(),
        Timing::Every(period) => {
            let period = i64::try_from(period.as_millis()).ok()?.max(1);
            let next = (after.timestamp_millis().div_euclid(period) + 1).checked_mul(period)?;
            Utc.timestamp_millis_opt(next).single()
        }
    }
}

/// The latest tick at or before `at` (within the catch-up window for cron).
pub fn latest_at_or_before(timing: &Timing, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
    match timing {
        Timing::Cron(schedule) => {
            let window = chrono::Duration::from_std(super::CATCH_UP).ok()?;
            schedule
                .after(&(at - window))
                .take_while(|t| *t <= at)
                .last()
        }
        Timing::Every(period) => {
            let period = i64::try_from(period.as_millis()).ok()?.max(1);
            let latest = at
                .timestamp_millis()
                .div_euclid(period)
                .checked_mul(period)?;
            Utc.timestamp_millis_opt(latest).single()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ScheduleConfig;

    fn timing(cron: Option<&str>, every: Option<&str>) -> Timing {
        ScheduleConfig {
            cron: cron.map(str::to_string),
            every: every.map(str::to_string),
            routing_key: "a.b".into(),
            payload: None,
        }
        .timing("t")
        .unwrap()
    }

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn every_ticks_on_multiples_of_its_period_since_the_epoch() {
        let t = timing(None, Some("15m"));
        assert_eq!(
            next_after(&t, at("2026-12-03T10:07:00Z")),
            Some(at("2026-12-03T10:15:00Z"))
        );
        assert_eq!(
            next_after(&t, at("2026-12-03T10:15:00Z")),
            Some(at("2026-12-03T10:30:00Z")),
            "strictly after"
        );
        assert_eq!(
            latest_at_or_before(&t, at("2026-12-03T10:15:00Z")),
            Some(at("2026-12-03T10:15:00Z"))
        );
    }

    #[test]
    fn cron_ticks_in_utc_with_five_fields_meaning_second_zero() {
        let t = timing(Some("0 3 * * *"), None);
        assert_eq!(
            next_after(&t, at("2026-12-03T10:07:00Z")),
            Some(at("2026-12-04T03:00:00Z"))
        );
        let t = timing(Some("*/10 * * * *"), None);
        assert_eq!(
            latest_at_or_before(&t, at("2026-12-03T10:07:00Z")),
            Some(at("2026-12-03T10:00:00Z"))
        );
    }
}
