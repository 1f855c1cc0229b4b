//! Catching what a plugin logs during one delivery: a `tracing` layer that keeps the
//! guest's records (target `plugin`) made inside a `testkit` span, filed under that
//! span's kit and delivery id, so that tests running side by side in one binary each
//! get their own.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex, Once};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber, span};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::prelude::*;
use tracing_subscriber::registry::LookupSpan;

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

static RECORDS: LazyLock<Mutex<HashMap<String, Vec<LogRecord>>>> = LazyLock::new(Default::default);

/// Installs the layer as the global subscriber (once; if the test installed its own
/// subscriber first, logs are not caught), beside the usual formatter for
/// `RUST_LOG` (default: warnings).
pub fn install() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let filter =
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into());
        let _ = tracing_subscriber::registry()
            .with(Capture)
            .with(
                tracing_subscriber::fmt::layer()
                    .with_test_writer()
                    .with_filter(filter),
            )
            .try_init();
    });
}

/// The records caught under `delivery` (and forgets them).
pub fn take(delivery: &str) -> Vec<LogRecord> {
    RECORDS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(delivery)
        .unwrap_or_default()
}

/// The span a delivery runs in: `testkit{delivery = <id>}`.
pub fn span(delivery: &str) -> tracing::Span {
    tracing::info_span!("testkit", delivery = %delivery)
}

struct Capture;

/// A `testkit` span's delivery id, kept in its extensions.
struct DeliveryId(String);

#[derive(Default)]
struct Fields {
    delivery: Option<String>,
    message: String,
    fields: String,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "delivery" => self.delivery = Some(value.to_string()),
            "fields" => self.fields = value.to_string(),
            _ => {}
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "message" => self.message = format!("{value:?}"),
            "delivery" => self.delivery = Some(format!("{value:?}")),
            "fields" => self.fields = format!("{value:?}"),
            _ => {}
        }
    }
}

impl<S> Layer<S> for Capture
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, ctx: Context<'_, S>) {
        if attrs.metadata().name() != "testkit" {
            return;
        }
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        if let (Some(delivery), Some(span)) = (fields.delivery, ctx.span(id)) {
            span.extensions_mut().insert(DeliveryId(delivery));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        if event.metadata().target() != "plugin" {
            return;
        }
        let Some(scope) = ctx.event_scope(event) else {
            return;
        };
        let Some(delivery) = scope
            .from_root()
            .find_map(|span| span.extensions().get::<DeliveryId>().map(|d| d.0.clone()))
        else {
            return;
        };
        let mut fields = Fields::default();
        event.record(&mut fields);
        RECORDS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(delivery)
            .or_default()
            .push(LogRecord {
                level: event.metadata().level().to_string(),
                message: fields.message,
                fields: fields.fields,
            });
    }
}
