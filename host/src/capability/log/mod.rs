//! `log`: guest records into the host's log, tagged with the plugin's name, through
//! `techub:platform/log` and the standard `wasi:logging/logging` (`wasi.rs`).

mod wasi;

use crate::capability::bindings::techub::platform::log::{Host, Level};
use crate::capability::context::Secrets;
use crate::capability::{Usage, truncate};
use std::sync::Arc;
use wasmtime::component::HasData;

/// What one plugin's `log` view reaches: its name, its record rate and the secrets
/// to mask in what it writes.
pub struct LogGrant {
    /// The plugin's name, on every record.
    name: String,
    /// Its guest log rate (shared by its versions).
    rate: Arc<LogRate>,
    /// The plugin's `limits.max_log_records_per_s`.
    max_per_s: u32,
    /// Counts the records dropped past the rate.
    metrics: Arc<crate::metrics::PluginMetrics>,
    /// Masked in what it writes.
    secrets: Arc<Secrets>,
}

impl LogGrant {
    /// The grant of plugin `name`.
    pub fn new(
        name: &str,
        rate: Arc<LogRate>,
        max_per_s: u32,
        metrics: Arc<crate::metrics::PluginMetrics>,
        secrets: Arc<Secrets>,
    ) -> Self {
        Self {
            name: name.to_string(),
            rate,
            max_per_s,
            metrics,
            secrets,
        }
    }
}

/// What the `log` interface reaches of an instance: the plugin's log grant and this
/// invocation's quotas.
pub struct LogView<'a> {
    plugin: &'a LogGrant,
    usage: &'a mut Usage,
}

impl<'a> LogView<'a> {
    /// The view of one instance.
    pub fn new(plugin: &'a LogGrant, usage: &'a mut Usage) -> Self {
        Self { plugin, usage }
    }
}

/// The view of an instance's `state` this capability's host functions run on.
pub(crate) fn view(state: &mut crate::capability::InstanceState) -> LogView<'_> {
    LogView::new(&state.plugin.log, &mut state.usage)
}

/// Links `log`, and `wasi:logging`, with [`LogView`], the [`view`] of an instance's
/// state.
pub fn link<T: crate::capability::HoldsInstanceState>(
    linker: &mut wasmtime::component::Linker<T>,
) -> wasmtime::Result<()> {
    let of_instance: fn(&mut T) -> LogView<'_> = |data| view(data.instance_state());
    crate::capability::bindings::techub::platform::log::add_to_linker::<T, HasLog>(
        linker,
        of_instance,
    )?;
    wasi::link(linker, of_instance)
}

/// Links `log` with [`LogView`].
pub struct HasLog;

impl HasData for HasLog {
    type Data<'a> = LogView<'a>;
}

/// A token bucket of guest log records per plugin: `rate` a second, bursts of as many.
/// Records past it are dropped and counted (`techub_log_records_dropped_total`), so that
/// a chatty plugin cannot flood the host's log or its shipper.
#[derive(Debug)]
pub struct LogRate {
    bucket: std::sync::Mutex<(f64, std::time::Instant)>,
}

impl Default for LogRate {
    fn default() -> Self {
        Self {
            bucket: std::sync::Mutex::new((f64::MAX, std::time::Instant::now())),
        }
    }
}

impl LogRate {
    /// Takes one record's token; `false` when the plugin is over `rate` records/s.
    pub fn allow(&self, rate: u32) -> bool {
        let rate = f64::from(rate.max(1));
        let mut bucket = self.bucket.lock().unwrap_or_else(|e| e.into_inner());
        let now = std::time::Instant::now();
        let refill = now.duration_since(bucket.1).as_secs_f64() * rate;
        bucket.0 = (bucket.0 + refill).min(rate);
        bucket.1 = now;
        if bucket.0 >= 1.0 {
            bucket.0 -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Longest message, and longest fields, kept: the rest is cut so that a plugin cannot
/// flood the log.
const MAX_MESSAGE_BYTES: usize = 8 * 1024;

impl Host for LogView<'_> {
    async fn write(
        &mut self,
        level: Level,
        message: String,
        fields: Vec<(String, String)>,
    ) -> wasmtime::Result<()> {
        // Records count as host calls: past the quota they are dropped, not an error.
        if self.usage.charge("log", "write").is_err() {
            return Ok(());
        }
        if !self.plugin.rate.allow(self.plugin.max_per_s) {
            self.plugin.metrics.log_dropped();
            return Ok(());
        }
        let plugin = self.plugin.name.as_str();
        let mut message = self.plugin.secrets.mask(&message).into_owned();
        truncate(&mut message, MAX_MESSAGE_BYTES);
        let mut fields = fields
            .iter()
            .take(32)
            .map(|(k, v)| format!("{k}={}", self.plugin.secrets.mask(v)))
            .collect::<Vec<_>>()
            .join(" ");
        truncate(&mut fields, MAX_MESSAGE_BYTES);
        // Without fields, no dangling `fields=` on the line.
        // (An `Option` field records nothing when `None`.)
        let fields = (!fields.is_empty()).then_some(fields.as_str());
        match level {
            Level::Trace => tracing::trace!(target: "plugin", plugin, fields, "{message}"),
            Level::Debug => tracing::debug!(target: "plugin", plugin, fields, "{message}"),
            Level::Info => tracing::info!(target: "plugin", plugin, fields, "{message}"),
            Level::Warn => tracing::warn!(target: "plugin", plugin, fields, "{message}"),
            Level::Error => tracing::error!(target: "plugin", plugin, fields, "{message}"),
        }
        Ok(())
    }
}
