//! `[schedules.<name>]`: messages the host publishes on the clock (see
//! [`crate::schedules`]).

use super::validate::{ConfigError, invalid, validate_name};
use serde::{Deserialize, Serialize};
use std::str::FromStr;
use std::time::Duration;

/// Shortest `every` (a schedule is a clock, not a load generator).
pub const MIN_EVERY: Duration = Duration::from_secs(1);

/// One schedule: when (`cron` or `every`, exactly one), and what it publishes.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Default)]
#[serde(default, deny_unknown_fields)]
pub struct ScheduleConfig {
    /// A cron expression in UTC: five fields (`0 3 * * *`: 03:00 every day), or six
    /// with seconds first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
    /// A period (`15m`, `1h`, `30s`): ticks at the multiples of it since the Unix
    /// epoch, so every host computes the same ticks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub every: Option<String>,
    /// Where each tick's message goes.
    pub routing_key: String,
    /// The message's payload (any TOML value, published as JSON); none: `{}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<toml::Value>,
}

/// When a schedule ticks.
#[derive(Debug, Clone)]
pub enum Timing {
    Cron(Box<cron::Schedule>),
    Every(Duration),
}

impl ScheduleConfig {
    /// Its timing; the error names the field.
    pub fn timing(&self, name: &str) -> Result<Timing, ConfigError> {
        match (&self.cron, &self.every) {
            (Some(expression), None) => {
                // The cron crate wants seconds first; five fields mean second 0.
                let full = if expression.split_whitespace().count() == 5 {
                    format!("0 {expression}")
                } else {
                    expression.clone()
                };
                cron::Schedule::from_str(&full)
                    .map(|s| Timing::Cron(Box::new(s)))
                    .map_err(|e| {
                        invalid(
                            format!("schedules.{name}.cron"),
                            format!("{expression:?} is not a cron expression: {e}"),
                        )
                    })
            }
            (None, Some(every)) => {
                let period = humantime::parse_duration(every).map_err(|e| {
                    invalid(
                        format!("schedules.{name}.every"),
                        format!("{every:?} is not a duration like \"15m\": {e}"),
                    )
                })?;
                if period < MIN_EVERY {
                    return Err(invalid(
                        format!("schedules.{name}.every"),
                        format!("must be at least {}s", MIN_EVERY.as_secs()),
                    ));
                }
                Ok(Timing::Every(period))
            }
            _ => Err(invalid(
                format!("schedules.{name}"),
                "needs exactly one of cron = \"0 3 * * *\" or every = \"15m\"",
            )),
        }
    }

    /// Checks the whole section.
    pub(super) fn validate(&self, name: &str) -> Result<(), ConfigError> {
        if !validate_name(name) {
            return Err(invalid(
                format!("schedules.{name}"),
                "a schedule's name is 1 to 64 of a-z, 0-9, - and _",
            ));
        }
        self.timing(name)?;
        crate::names::routing::validate_routing_key(&self.routing_key)
            .map_err(|e| invalid(format!("schedules.{name}.routing_key"), e))?;
        Ok(())
    }

    /// The payload as JSON bytes.
    pub fn payload_json(&self) -> Vec<u8> {
        match &self.payload {
            Some(value) => serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec()),
            None => b"{}".to_vec(),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::HostConfig;

    #[test]
    fn a_schedule_needs_one_valid_timing_and_a_routing_key() {
        let ok = HostConfig::parse(
            "[schedules.nightly]\ncron = \"0 3 * * *\"\nrouting_key = \"report.nightly\"\npayload = { kind = \"sales\" }\n\
             [schedules.often]\nevery = \"15m\"\nrouting_key = \"sync.run\"\n",
        )
        .unwrap();
        assert_eq!(ok.schedules.len(), 2);
        assert_eq!(
            ok.schedules["nightly"].payload_json(),
            br#"{"kind":"sales"}"#
        );
        for (text, field) in [
            (
                "cron = \"61 * * * *\"\nrouting_key = \"a.b\"",
                "schedules.x.cron",
            ),
            (
                "every = \"soon\"\nrouting_key = \"a.b\"",
                "schedules.x.every",
            ),
            (
                "every = \"100ms\"\nrouting_key = \"a.b\"",
                "schedules.x.every",
            ),
            (
                "cron = \"* * * * *\"\nevery = \"1m\"\nrouting_key = \"a.b\"",
                "schedules.x",
            ),
            (
                "every = \"1m\"\nrouting_key = \"\"",
                "schedules.x.routing_key",
            ),
        ] {
            let error = HostConfig::parse(&format!("[schedules.x]\n{text}\n"))
                .unwrap_err()
                .to_string();
            assert!(error.contains(field), "{text}: {error}");
        }
    }
}
