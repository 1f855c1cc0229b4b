//! Catching what a plugin logs during one delivery: the delivery runs with a
//! `tracing` subscriber of its own (whatever global subscriber the test set up), whose
//! layer keeps the guest's records (target `plugin`), beside the usual formatter for
//! `RUST_LOG` (default: warnings) on the test's output.

use std::sync::{Arc, Mutex};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::prelude::*;

/// One record the plugin logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    /// `TRACE` .. `ERROR`.
    pub level: String,
    /// The message.
    pub message: String,
    /// The structured fields, as the host printed them (`key=value ...`).
    pub fields: String,
}

/// Where one delivery's records go.
pub type Records = Arc<Mutex<Vec<LogRecord>>>;

/// A subscriber for one delivery, keeping the plugin's records in `records`.
pub fn subscriber(records: Records) -> tracing::Dispatch {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into());
    tracing_subscriber::registry()
        .with(Capture { records })
        .with(
            tracing_subscriber::fmt::layer()
                .with_test_writer()
                .with_filter(filter),
        )
        .into()
}

struct Capture {
    records: Records,
}

#[derive(Default)]
struct Fields {
    message: String,
    fields: String,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "fields" {
            self.fields = value.to_string();
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "message" => self.message = format!("{value:?}"),
            "fields" => self.fields = format!("{value:?}"),
            _ => {}
        }
    }
}

impl<S: Subscriber> Layer<S> for Capture {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        if event.metadata().target() != "plugin" {
            return;
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        self.records
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(LogRecord {
                level: event.metadata().level().to_string(),
                message: fields.message,
                fields: fields.fields,
            });
    }
}
