//! One plugin's metric handles, resolved once so that an invocation records with a few
//! atomic operations and no label lookups.

use super::{HostCallLabels, Metrics, Name, OutcomeLabels, PartLabels, PluginLabel, QuotaLabels};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use std::sync::Arc;
use std::time::Duration;

/// How an invocation ended, as the `outcome` label says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvocationOutcome {
    /// `ok`.
    Ok,
    /// The handler asked for a retry.
    Retry,
    /// The handler rejected the message.
    Reject,
    /// The guest trapped.
    Trap,
    /// Over its CPU limit.
    CpuLimit,
    /// Over its wall-clock limit.
    Timeout,
    /// Its memory could not grow within its limit.
    MemoryLimit,
}

impl InvocationOutcome {
    const ALL: [Self; 7] = [
        Self::Ok,
        Self::Retry,
        Self::Reject,
        Self::Trap,
        Self::CpuLimit,
        Self::Timeout,
        Self::MemoryLimit,
    ];

    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Retry => "retry",
            Self::Reject => "reject",
            Self::Trap => "trap",
            Self::CpuLimit => "cpu_limit",
            Self::Timeout => "timeout",
            Self::MemoryLimit => "memory_limit",
        }
    }
}

/// A quota an invocation ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaKind {
    /// `limits.max_host_calls`.
    HostCalls,
    /// `limits.max_publishes`.
    Publishes,
    /// `limits.max_leases`.
    Leases,
    /// `limits.max_output_bytes`: output dropped.
    Output,
    /// `limits.cpu_ms`.
    Cpu,
    /// `limits.memory_mib`.
    Memory,
    /// `limits.timeout_ms`.
    Timeout,
    /// `limits.max_http_requests`.
    HttpRequests,
}

impl QuotaKind {
    const ALL: [Self; 8] = [
        Self::HostCalls,
        Self::Publishes,
        Self::Leases,
        Self::Output,
        Self::Cpu,
        Self::Memory,
        Self::Timeout,
        Self::HttpRequests,
    ];

    fn label(self) -> &'static str {
        match self {
            Self::HostCalls => "host_calls",
            Self::Publishes => "publishes",
            Self::Leases => "leases",
            Self::Output => "output",
            Self::Cpu => "cpu",
            Self::Memory => "memory",
            Self::Timeout => "timeout",
            Self::HttpRequests => "http_requests",
        }
    }
}

/// What one invocation used, in plain figures (the runtime reads them off its report).
#[derive(Debug, Clone, Copy, Default)]
pub struct InvocationFigures<'a> {
    /// CPU time of the guest's own code.
    pub guest_cpu: Duration,
    /// Time spent in host calls.
    pub host_time: Duration,
    /// Wall time of the whole invocation.
    pub elapsed: Duration,
    /// Largest linear memory the instance reached, in bytes.
    pub memory_peak: usize,
    /// Host calls per (interface, function).
    pub calls: &'a [(&'static str, &'static str, u32)],
    /// The per-message quotas it ran into, besides those its outcome says (CPU,
    /// memory, timeout).
    pub quotas: &'a [QuotaKind],
}

/// The metric handles of one plugin (shared by its versions).
pub struct PluginMetrics {
    metrics: Arc<Metrics>,
    name: Name,
    outcomes: [Counter; 7],
    guest: Histogram,
    host: Histogram,
    total: Histogram,
    in_flight: Gauge,
    memory_peak: Gauge,
    loads: Counter,
    load_failures: Counter,
    quotas: [Counter; 8],
    log_dropped: Counter,
    /// Why its last handled message did not end `ok`, and when (ms since the epoch):
    /// the status page shows it (kept even with metrics off: it is not a metric).
    last_failure: std::sync::Mutex<Option<(u64, String)>>,
    /// Messages handled and their latency over the last minutes.
    recent: super::Recent,
}

impl std::fmt::Debug for PluginMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginMetrics")
            .field("plugin", &self.name)
            .finish()
    }
}

impl PluginMetrics {
    pub(super) fn new(metrics: Arc<Metrics>, plugin: &str) -> Self {
        let name: Name = Arc::new(plugin.to_string());
        if !metrics.enabled {
            // Handles of their own, not in the registry: nothing is exposed.
            return Self {
                outcomes: Default::default(),
                guest: super::duration_buckets(),
                host: super::duration_buckets(),
                total: super::duration_buckets(),
                in_flight: Gauge::default(),
                memory_peak: Gauge::default(),
                loads: Counter::default(),
                load_failures: Counter::default(),
                quotas: Default::default(),
                log_dropped: Counter::default(),
                last_failure: Default::default(),
                recent: Default::default(),
                name,
                metrics,
            };
        }
        let label = PluginLabel {
            plugin: name.clone(),
        };
        let part = |part| {
            metrics.invocation_seconds.get_or_create_owned(&PartLabels {
                plugin: name.clone(),
                part,
            })
        };
        let outcomes = InvocationOutcome::ALL.map(|outcome| {
            metrics.invocations.get_or_create_owned(&OutcomeLabels {
                plugin: name.clone(),
                outcome: outcome.label(),
            })
        });
        Self {
            outcomes,
            guest: part("guest"),
            host: part("host"),
            total: part("total"),
            in_flight: metrics.in_flight.get_or_create_owned(&label),
            memory_peak: metrics.memory_peak.get_or_create_owned(&label),
            loads: metrics.loads.get_or_create_owned(&label),
            load_failures: metrics.load_failures.get_or_create_owned(&label),
            quotas: QuotaKind::ALL.map(|kind| {
                metrics.quota_violations.get_or_create_owned(&QuotaLabels {
                    plugin: name.clone(),
                    kind: kind.label(),
                })
            }),
            log_dropped: metrics.log_dropped.get_or_create_owned(&label),
            last_failure: Default::default(),
            recent: Default::default(),
            name,
            metrics,
        }
    }

    /// The plugin's name, as a label value.
    pub fn name(&self) -> &Name {
        &self.name
    }

    /// The platform's metrics.
    pub fn platform(&self) -> &Metrics {
        &self.metrics
    }

    /// Invocations so far by outcome label (zero when metrics are off).
    pub fn outcome_counts(&self) -> Vec<(&'static str, u64)> {
        InvocationOutcome::ALL
            .iter()
            .map(|o| (o.label(), self.outcomes[*o as usize].get()))
            .collect()
    }

    /// A version of the plugin loaded.
    pub fn loaded(&self) {
        if self.metrics.enabled {
            self.loads.inc();
        }
    }

    /// A file of the plugin failed to load.
    pub fn load_failed(&self) {
        if self.metrics.enabled {
            self.load_failures.inc();
        }
    }

    /// A guest log record dropped by the rate limit.
    pub fn log_dropped(&self) {
        if self.metrics.enabled {
            self.log_dropped.inc();
        }
    }

    /// A handled message did not end `ok`, for `reason` (already masked), at `at_ms`.
    pub fn failed(&self, at_ms: u64, reason: &str) {
        // Bounded: a reason is cut before it reaches a dead letter, but not always here.
        let reason: String = reason.chars().take(500).collect();
        *self.last_failure.lock().unwrap_or_else(|e| e.into_inner()) = Some((at_ms, reason));
    }

    /// Why its last handled message did not end `ok`, and when (ms since the epoch).
    pub fn last_failure(&self) -> Option<(u64, String)> {
        self.last_failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Messages/s and p99 per slot over the last minutes, oldest first, up to `now_s`.
    pub fn recent(&self, now_s: u64) -> Vec<super::RecentPoint> {
        self.recent.points(now_s)
    }

    /// An invocation starts; the guard counts it in flight until dropped.
    pub fn start(&self) -> InFlight {
        if self.metrics.enabled {
            self.in_flight.inc();
        }
        InFlight {
            gauge: self.metrics.enabled.then(|| self.in_flight.clone()),
        }
    }

    /// Records a finished invocation that ended `outcome`: times, memory, host calls
    /// and the quotas it ran into.
    pub fn finished(&self, figures: &InvocationFigures<'_>, outcome: InvocationOutcome) {
        if !self.metrics.enabled {
            return;
        }
        self.outcomes[outcome as usize].inc();
        if let Ok(now) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
            self.recent.record(now.as_secs(), figures.elapsed);
        }
        self.guest.observe(figures.guest_cpu.as_secs_f64());
        self.host.observe(figures.host_time.as_secs_f64());
        self.total.observe(figures.elapsed.as_secs_f64());
        let peak = i64::try_from(figures.memory_peak).unwrap_or(i64::MAX);
        if peak > self.memory_peak.get() {
            self.memory_peak.set(peak);
        }
        for &(interface, function, count) in figures.calls {
            self.metrics
                .host_calls
                .get_or_create(&HostCallLabels {
                    plugin: self.name.clone(),
                    interface,
                    function,
                })
                .inc_by(count.into());
        }
        let by_outcome = match outcome {
            InvocationOutcome::CpuLimit => Some(QuotaKind::Cpu),
            InvocationOutcome::MemoryLimit => Some(QuotaKind::Memory),
            InvocationOutcome::Timeout => Some(QuotaKind::Timeout),
            _ => None,
        };
        for kind in figures.quotas.iter().chain(&by_outcome) {
            self.quotas[*kind as usize].inc();
        }
    }
}

/// Counts one invocation in flight while it lives.
#[derive(Debug)]
pub struct InFlight {
    gauge: Option<Gauge>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(gauge) = &self.gauge {
            gauge.dec();
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::InvocationFigures;
    use std::time::Duration;

    pub(crate) fn figures_ok() -> InvocationFigures<'static> {
        InvocationFigures {
            guest_cpu: Duration::from_micros(500),
            host_time: Duration::from_millis(1),
            elapsed: Duration::from_millis(2),
            memory_peak: 65536,
            calls: &[],
            quotas: &[],
        }
    }
}
