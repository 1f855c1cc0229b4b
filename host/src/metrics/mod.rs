//! Prometheus metrics, exposed at `/metrics` by the admin endpoint.
//!
//! Every metric lives in one [`prometheus_client`] registry per platform; the crate
//! formats the exposition (Prometheus text format 0.0.4, which `promtool check
//! metrics` and every scraper read). Label values are bounded by construction: plugin
//! names, cache domains, queue types, queue names of the host's own queues, and
//! `&'static str` names chosen here (outcomes, interfaces, functions, commands). No
//! key, routing key or message id is ever a label.
//!
//! Hot paths hold pre-created handles (a `Counter` or `Histogram` is an `Arc` inside):
//! a plugin's per-invocation metrics are resolved once per plugin ([`PluginMetrics`]),
//! the rest are looked up in their family by a small label set.
//!
//! With `host.metrics = false` nothing is recorded (the families stay empty): the
//! baseline the metrics-overhead benchmark compares against.
//!
//! # Layout
//! - `mod.rs`: [`Metrics`], its families, and the recorders of the cache, queues and
//!   backends.
//! - `plugin.rs`: [`PluginMetrics`], one plugin's handles, and [`InvocationOutcome`].
//! - `recent.rs`: one plugin's messages/s and p99 over the last minutes (the status
//!   page's chart).
//! - `polled.rs`: the gauges the platform's poller sets (queue depths, pool slots,
//!   cache bytes), from plain figures.
//!
//! A leaf: metrics record figures handed to them and import nothing of the host.

mod plugin;
mod polled;
mod recent;

pub use plugin::{InvocationFigures, InvocationOutcome, PluginMetrics, QuotaKind};
pub use recent::{Recent, RecentPoint};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A plugin's name as a label value: shared, so cloning a label set allocates nothing.
pub type Name = Arc<String>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginLabel {
    plugin: Name,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    plugin: Name,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PartLabels {
    plugin: Name,
    part: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HostCallLabels {
    plugin: Name,
    interface: &'static str,
    function: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QuotaLabels {
    plugin: Name,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    plugin: Name,
    origin: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpOriginLabels {
    plugin: Name,
    origin: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WebhookLabels {
    route: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabel {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DomainLabel {
    domain: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InvalidationLabels {
    domain: String,
    by: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabels {
    plugin: Name,
    queue_type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueNameLabel {
    queue: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventOutcomeLabel {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendLabel {
    backend: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CommandLabel {
    command: &'static str,
}

/// What happened to a delivery, per plugin queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueEvent {
    /// Handed to the plugin.
    Delivered,
    /// Handed to the plugin again by the broker (after a host died or a channel closed).
    Redelivered,
    /// Acknowledged after `ok`.
    Acked,
    /// Sent back for another attempt.
    Retried,
    /// Parked in the dead-letter queue.
    DeadLettered,
}

/// The delivery counters of one plugin queue (see [`Metrics::queue_counters`]).
#[derive(Debug, Clone)]
pub struct QueueCounters {
    enabled: bool,
    counters: [Counter; 5],
}

impl QueueCounters {
    /// Counts one `event`.
    pub fn record(&self, event: QueueEvent) {
        if self.enabled {
            self.counters[event as usize].inc();
        }
    }
}

/// Publisher events on RabbitMQ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AmqpEvent {
    /// A publish sent.
    Publish,
    /// The broker confirmed it (ack).
    Confirm,
    /// The broker refused it (nack).
    Nack,
    /// Mandatory and unroutable: it came back.
    Return,
    /// The connection recovered after a failure.
    Reconnect,
}

/// Cache domain counters; the embedded cache's bytes and evictions are polled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheEvent {
    /// A read found an entry.
    Hit,
    /// A read found nothing.
    Miss,
    /// An entry was written.
    Set,
    /// Entries removed by key.
    DeleteByKey,
    /// Entries removed by tag.
    InvalidateByTag,
    /// Entries removed by pattern.
    InvalidateByPattern,
}

/// Every metric family of one platform.
pub struct Metrics {
    enabled: bool,
    registry: Registry,
    invocations: Family<OutcomeLabels, Counter>,
    invocation_seconds: Family<PartLabels, Histogram>,
    host_calls: Family<HostCallLabels, Counter>,
    quota_violations: Family<QuotaLabels, Counter>,
    in_flight: Family<PluginLabel, Gauge>,
    memory_peak: Family<PluginLabel, Gauge>,
    loads: Family<PluginLabel, Counter>,
    load_failures: Family<PluginLabel, Counter>,
    log_dropped: Family<PluginLabel, Counter>,
    cache_hits: Family<DomainLabel, Counter>,
    cache_misses: Family<DomainLabel, Counter>,
    cache_sets: Family<DomainLabel, Counter>,
    cache_invalidations: Family<InvalidationLabels, Counter>,
    cache_evictions: Family<DomainLabel, Counter>,
    cache_bytes: Family<DomainLabel, Gauge>,
    queue_events: [Family<QueueLabels, Counter>; 5],
    queue_depth: Family<QueueNameLabel, Gauge>,
    dead_letter_depth: Gauge,
    dead_letter_queue_full: Gauge,
    dead_letters_refused: Counter,
    replies_late: Counter,
    requests_timed_out: Counter,
    cache_events: Family<EventOutcomeLabel, Counter>,
    cache_loads: Family<EventOutcomeLabel, Counter>,
    cache_l1_reads: Family<EventOutcomeLabel, Counter>,
    cache_l1_dropped: Counter,
    cache_l1_channel_up: Gauge,
    redis_seconds: Family<CommandLabel, Histogram>,
    redis_slow: Family<CommandLabel, Counter>,
    redis_timeouts: Family<CommandLabel, Counter>,
    redis_reconnects: Counter,
    amqp: [Counter; 5],
    slots_in_use: Gauge,
    slots_total: Gauge,
    backend_up: Family<BackendLabel, Gauge>,
    cache_stats_flush_failures: Counter,
    http_requests: Family<HttpLabels, Counter>,
    http_seconds: Family<HttpOriginLabels, Histogram>,
    webhooks: Family<WebhookLabels, Counter>,
    webhook_seconds: Family<RouteLabel, Histogram>,
    plugins: Mutex<HashMap<String, Arc<PluginMetrics>>>,
    /// Each cache domain's counters, in `CacheEvent` order.
    domains: std::sync::RwLock<HashMap<String, Arc<[Counter; 6]>>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("enabled", &self.enabled)
            .finish_non_exhaustive()
    }
}

/// Buckets of durations, 50 µs to ~26 s.
fn duration_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.000_05, 2.0, 20))
}

impl Default for Metrics {
    /// Metrics that record (for backends built outside a platform, e.g. in tests).
    fn default() -> Self {
        Self::new(true)
    }
}

impl Metrics {
    /// The families, registered; with `enabled = false` nothing is ever recorded.
    pub fn new(enabled: bool) -> Self {
        let mut registry = Registry::with_prefix("techub");
        let queue_events: [Family<QueueLabels, Counter>; 5] = Default::default();
        let amqp: [Counter; 5] = Default::default();
        let metrics = Self {
            enabled,
            registry: Registry::default(),
            invocations: Family::default(),
            invocation_seconds: Family::new_with_constructor(duration_buckets),
            host_calls: Family::default(),
            quota_violations: Family::default(),
            in_flight: Family::default(),
            memory_peak: Family::default(),
            loads: Family::default(),
            load_failures: Family::default(),
            log_dropped: Family::default(),
            cache_hits: Family::default(),
            cache_misses: Family::default(),
            cache_sets: Family::default(),
            cache_invalidations: Family::default(),
            cache_evictions: Family::default(),
            cache_bytes: Family::default(),
            queue_events,
            queue_depth: Family::default(),
            dead_letter_depth: Gauge::default(),
            dead_letter_queue_full: Gauge::default(),
            dead_letters_refused: Counter::default(),
            replies_late: Counter::default(),
            requests_timed_out: Counter::default(),
            cache_events: Family::default(),
            cache_loads: Family::default(),
            cache_l1_reads: Family::default(),
            cache_l1_dropped: Counter::default(),
            cache_l1_channel_up: Gauge::default(),
            redis_seconds: Family::new_with_constructor(duration_buckets),
            redis_slow: Family::default(),
            redis_timeouts: Family::default(),
            redis_reconnects: Counter::default(),
            amqp,
            slots_in_use: Gauge::default(),
            slots_total: Gauge::default(),
            backend_up: Family::default(),
            cache_stats_flush_failures: Counter::default(),
            http_requests: Family::default(),
            http_seconds: Family::new_with_constructor(duration_buckets),
            webhooks: Family::default(),
            webhook_seconds: Family::new_with_constructor(duration_buckets),
            plugins: Mutex::default(),
            domains: Default::default(),
        };
        let r = &mut registry;
        let m = &metrics;
        r.register(
            "invocations",
            "Plugin invocations by outcome",
            m.invocations.clone(),
        );
        r.register(
            "invocation_seconds",
            "Invocation time by part: guest (CPU of the guest's code), host (time in host calls), total (wall)",
            m.invocation_seconds.clone(),
        );
        r.register(
            "host_calls",
            "Host calls by interface and function",
            m.host_calls.clone(),
        );
        r.register(
            "quota_violations",
            "Invocations that ran into a quota, by kind",
            m.quota_violations.clone(),
        );
        r.register(
            "invocations_in_flight",
            "Invocations running now",
            m.in_flight.clone(),
        );
        r.register(
            "instance_memory_peak_bytes",
            "Largest linear memory one instance of the plugin reached",
            m.memory_peak.clone(),
        );
        r.register(
            "plugin_loads",
            "Versions of the plugin loaded",
            m.loads.clone(),
        );
        r.register(
            "plugin_load_failures",
            "Files of the plugin that failed to load or reload",
            m.load_failures.clone(),
        );
        r.register(
            "log_records_dropped",
            "Guest log records dropped by the per-plugin rate limit",
            m.log_dropped.clone(),
        );
        r.register(
            "cache_hits",
            "Cache reads that found an entry",
            m.cache_hits.clone(),
        );
        r.register(
            "cache_misses",
            "Cache reads that found nothing",
            m.cache_misses.clone(),
        );
        r.register("cache_sets", "Cache entries written", m.cache_sets.clone());
        r.register(
            "cache_invalidations",
            "Cache entries removed, by how (key, tag, pattern)",
            m.cache_invalidations.clone(),
        );
        r.register(
            "cache_evictions",
            "Entries the embedded cache, or a host's L1 of a Redis domain, evicted to stay in its budget",
            m.cache_evictions.clone(),
        );
        r.register(
            "cache_bytes",
            "Bytes held by the embedded cache, or by this host's L1 of a Redis domain",
            m.cache_bytes.clone(),
        );
        for (event, (name, help)) in [
            ("queue_delivered", "Deliveries handed to the plugin"),
            (
                "queue_redelivered",
                "Deliveries the broker marked redelivered",
            ),
            ("queue_acked", "Deliveries acknowledged"),
            ("queue_retried", "Deliveries sent back for another attempt"),
            (
                "queue_dead_lettered",
                "Deliveries parked in the dead-letter queue",
            ),
        ]
        .into_iter()
        .enumerate()
        {
            r.register(name, help, m.queue_events[event].clone());
        }
        r.register(
            "queue_depth",
            "Messages ready in each plugin queue (polled)",
            m.queue_depth.clone(),
        );
        r.register(
            "dead_letter_depth",
            "Messages in the dead-letter queue (polled)",
            m.dead_letter_depth.clone(),
        );
        r.register(
            "dead_letter_queue_full",
            "Whether the dead-letter queue is at its max_length (1: new dead letters wait in their retry queues; polled)",
            m.dead_letter_queue_full.clone(),
        );
        r.register(
            "dead_letters_refused",
            "Dead letters the full dead-letter queue refused",
            m.dead_letters_refused.clone(),
        );
        r.register(
            "replies_late",
            "Replies that arrived after their request stopped waiting (dropped)",
            m.replies_late.clone(),
        );
        r.register(
            "cache_invalidation_events",
            "Events of [[cache.invalidate]] rules by outcome: applied, retried, dead_lettered",
            m.cache_events.clone(),
        );
        r.register(
            "cache_loads",
            "Cache read-through and warming: loader calls (called), calls that failed (failed), keys a reader got by joining a load in this host (coalesced) or by waiting on another host's (waited)",
            m.cache_loads.clone(),
        );
        for outcome in ["called", "failed", "coalesced", "waited"] {
            let _ = m.cache_loads.get_or_create(&EventOutcomeLabel { outcome });
        }
        r.register(
            "cache_l1_reads",
            "Keys read from an L1 domain: answered by L1 (hit), read from Redis and copied (miss), or read from Redis because the invalidation channel was not fresh (bypass)",
            m.cache_l1_reads.clone(),
        );
        for outcome in ["hit", "miss", "bypass"] {
            let _ = m
                .cache_l1_reads
                .get_or_create(&EventOutcomeLabel { outcome });
        }
        r.register(
            "cache_l1_dropped",
            "L1 copies dropped on another host's write, delete or invalidation",
            m.cache_l1_dropped.clone(),
        );
        r.register(
            "cache_l1_channel_up",
            "1 while the L1 invalidation channel (Redis pub/sub) is subscribed",
            m.cache_l1_channel_up.clone(),
        );
        r.register(
            "requests_timed_out",
            "Requests (messaging.request) that got no reply within their timeout",
            m.requests_timed_out.clone(),
        );
        r.register(
            "redis_command_seconds",
            "Redis command latency, retries included",
            m.redis_seconds.clone(),
        );
        r.register(
            "redis_slow_commands",
            "Redis commands slower than redis.slow_command_ms",
            m.redis_slow.clone(),
        );
        r.register(
            "redis_timeouts",
            "Redis commands that did not answer within redis.command_timeout_ms",
            m.redis_timeouts.clone(),
        );
        r.register(
            "redis_reconnects",
            "Times the Redis connection worked again after failing",
            m.redis_reconnects.clone(),
        );
        for (event, (name, help)) in [
            ("amqp_publishes", "Messages published to RabbitMQ"),
            ("amqp_confirms", "Publishes RabbitMQ confirmed"),
            ("amqp_nacks", "Publishes RabbitMQ refused"),
            (
                "amqp_returns",
                "Mandatory publishes RabbitMQ returned unroutable",
            ),
            (
                "amqp_reconnects",
                "Times a RabbitMQ channel recovered after a failure",
            ),
        ]
        .into_iter()
        .enumerate()
        {
            r.register(name, help, m.amqp[event].clone());
        }
        r.register(
            "instance_slots_in_use",
            "Instance pool slots in use",
            m.slots_in_use.clone(),
        );
        r.register(
            "instance_slots",
            "Instance pool slots",
            m.slots_total.clone(),
        );
        r.register(
            "backend_up",
            "Whether a backend answered its last health check (polled): redis, amqp",
            m.backend_up.clone(),
        );
        r.register(
            "cache_stats_flush_failures",
            "Flushes of cluster-wide cache statistics to Redis that failed",
            m.cache_stats_flush_failures.clone(),
        );
        r.register(
            "http_requests",
            "Plugins' outbound HTTP requests by origin (the grant that covered them; \"(none)\" when none did) and outcome",
            m.http_requests.clone(),
        );
        r.register(
            "http_request_seconds",
            "Time from an outbound HTTP request sent to its response's headers, by origin",
            m.http_seconds.clone(),
        );
        r.register(
            "webhooks",
            "Incoming webhooks by route (\"(none)\" for a path no route serves) and outcome: published, bad_signature, stale, malformed, too_large, unrouted, broker_unavailable, ...",
            m.webhooks.clone(),
        );
        r.register(
            "webhook_seconds",
            "Time from an incoming webhook's request to its confirmed publish, by route",
            m.webhook_seconds.clone(),
        );
        Self {
            registry,
            ..metrics
        }
    }

    /// Whether anything is recorded.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The exposition, in the Prometheus text format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry);
        text
    }

    /// The handles of `plugin`, created on first use and kept across its versions.
    pub fn plugin(self: &Arc<Self>, plugin: &str) -> Arc<PluginMetrics> {
        let mut plugins = self.plugins.lock().unwrap_or_else(|e| e.into_inner());
        plugins
            .entry(plugin.to_string())
            .or_insert_with(|| Arc::new(PluginMetrics::new(self.clone(), plugin)))
            .clone()
    }

    /// A file of `plugin` failed to load.
    pub fn load_failed(self: &Arc<Self>, plugin: &str) {
        self.plugin(plugin).load_failed();
    }

    /// `count` cache events of `domain`.
    pub fn cache(&self, domain: &str, event: CacheEvent, count: u64) {
        if !self.enabled || count == 0 {
            return;
        }
        // Looked up by `&str`: counting a cache call allocates nothing once the
        // domain's handles exist.
        let known = self
            .domains
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(domain)
            .cloned();
        let counters = known.unwrap_or_else(|| self.domain_counters(domain));
        counters[event as usize].inc_by(count);
    }

    /// The six counters of `domain`, created (all at 0, so that a rate over them has
    /// data from the start) and kept.
    fn domain_counters(&self, domain: &str) -> Arc<[Counter; 6]> {
        let label = DomainLabel {
            domain: domain.to_string(),
        };
        let by = |by| InvalidationLabels {
            domain: domain.to_string(),
            by,
        };
        let counters = Arc::new([
            self.cache_hits.get_or_create_owned(&label),
            self.cache_misses.get_or_create_owned(&label),
            self.cache_sets.get_or_create_owned(&label),
            self.cache_invalidations.get_or_create_owned(&by("key")),
            self.cache_invalidations.get_or_create_owned(&by("tag")),
            self.cache_invalidations.get_or_create_owned(&by("pattern")),
        ]);
        self.domains
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .entry(domain.to_string())
            .or_insert(counters)
            .clone()
    }

    /// The delivery counters of `plugin`'s queue of `queue_type`, all five series
    /// created now (a consumer resolves them once, at start).
    pub fn queue_counters(&self, plugin: &Name, queue_type: &str) -> QueueCounters {
        let labels = QueueLabels {
            plugin: plugin.clone(),
            queue_type: queue_type.to_string(),
        };
        QueueCounters {
            enabled: self.enabled,
            counters: match self.enabled {
                true => std::array::from_fn(|i| self.queue_events[i].get_or_create_owned(&labels)),
                false => Default::default(),
            },
        }
    }

    /// A dead letter the full dead-letter queue refused.
    pub fn dead_letter_refused(&self) {
        if self.enabled {
            self.dead_letters_refused.inc();
        }
    }

    /// A reply that came when its request no longer waited.
    pub fn late_reply(&self) {
        if self.enabled {
            self.replies_late.inc();
        }
    }

    /// An invalidation event handled (`applied`, `retried` or `dead_lettered`).
    pub fn cache_event(&self, outcome: &'static str) {
        if self.enabled {
            self.cache_events
                .get_or_create(&EventOutcomeLabel { outcome })
                .inc();
        }
    }

    /// `count` read-through events (`called`, `failed`, `coalesced` or `waited`).
    pub fn cache_load(&self, outcome: &'static str, count: u64) {
        if self.enabled {
            self.cache_loads
                .get_or_create(&EventOutcomeLabel { outcome })
                .inc_by(count);
        }
    }

    /// `count` keys read from an L1 domain (`hit`, `miss` or `bypass`).
    pub fn cache_l1_read(&self, outcome: &'static str, count: u64) {
        if self.enabled {
            self.cache_l1_reads
                .get_or_create(&EventOutcomeLabel { outcome })
                .inc_by(count);
        }
    }

    /// `count` L1 copies dropped on another host's change.
    pub fn cache_l1_dropped(&self, count: u64) {
        if self.enabled {
            self.cache_l1_dropped.inc_by(count);
        }
    }

    /// The L1 invalidation channel went up or down.
    pub fn cache_l1_channel(&self, up: bool) {
        if self.enabled {
            self.cache_l1_channel_up.set(i64::from(up));
        }
    }

    /// A request that got no reply in time.
    pub fn request_timed_out(&self) {
        if self.enabled {
            self.requests_timed_out.inc();
        }
    }

    /// One Redis command (`command` is the operation's name) and how long it took.
    pub fn redis_command(
        &self,
        command: &'static str,
        elapsed: Duration,
        slow: bool,
        timed_out: bool,
    ) {
        if !self.enabled {
            return;
        }
        let label = CommandLabel { command };
        if self.redis_slow.get(&label).is_none() {
            // All three series of a command at once (see `cache`).
            let _ = self.redis_slow.get_or_create(&label);
            let _ = self.redis_timeouts.get_or_create(&label);
        }
        self.redis_seconds
            .get_or_create(&label)
            .observe(elapsed.as_secs_f64());
        if slow {
            self.redis_slow.get_or_create(&label).inc();
        }
        if timed_out {
            self.redis_timeouts.get_or_create(&label).inc();
        }
    }

    /// The Redis connection works again after failing.
    pub fn redis_reconnected(&self) {
        if self.enabled {
            self.redis_reconnects.inc();
        }
    }

    /// A publisher event on RabbitMQ.
    pub fn amqp(&self, event: AmqpEvent) {
        if self.enabled {
            self.amqp[event as usize].inc();
        }
    }

    /// Counts one outbound HTTP request of `plugin` to `origin` that ended `outcome`.
    pub fn http_request(&self, plugin: &Name, origin: &str, outcome: &'static str) {
        if self.enabled {
            self.http_requests
                .get_or_create(&HttpLabels {
                    plugin: plugin.clone(),
                    origin: origin.to_string(),
                    outcome,
                })
                .inc();
        }
    }

    /// Times one outbound HTTP request of `plugin` to `origin`, up to its headers.
    pub fn http_seconds(&self, plugin: &Name, origin: &str, elapsed: Duration) {
        if self.enabled {
            self.http_seconds
                .get_or_create(&HttpOriginLabels {
                    plugin: plugin.clone(),
                    origin: origin.to_string(),
                })
                .observe(elapsed.as_secs_f64());
        }
    }

    /// Counts one incoming webhook on `route` that ended `outcome`.
    pub fn webhook(&self, route: &str, outcome: &'static str) {
        if self.enabled {
            self.webhooks
                .get_or_create(&WebhookLabels {
                    route: route.to_string(),
                    outcome,
                })
                .inc();
        }
    }

    /// Times one published webhook on `route`, from its request to its confirm.
    pub fn webhook_seconds(&self, route: &str, elapsed: Duration) {
        if self.enabled {
            self.webhook_seconds
                .get_or_create(&RouteLabel {
                    route: route.to_string(),
                })
                .observe(elapsed.as_secs_f64());
        }
    }

    /// A flush of cache statistics to Redis failed.
    pub fn cache_stats_flush_failed(&self) {
        if self.enabled {
            self.cache_stats_flush_failures.inc();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_names_every_family_with_the_techub_prefix() {
        let metrics = Arc::new(Metrics::new(true));
        metrics.plugin("p").finished(
            &crate::metrics::plugin::tests::figures_ok(),
            InvocationOutcome::Ok,
        );
        metrics.cache("users", CacheEvent::Hit, 2);
        let text = metrics.encode();
        assert!(
            text.contains("techub_invocations_total{plugin=\"p\",outcome=\"ok\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("techub_cache_hits_total{domain=\"users\"} 2"),
            "{text}"
        );
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            assert!(line.starts_with("techub_"), "{line}");
        }
    }

    #[test]
    fn disabled_metrics_record_nothing() {
        let metrics = Arc::new(Metrics::new(false));
        metrics.plugin("p").finished(
            &crate::metrics::plugin::tests::figures_ok(),
            InvocationOutcome::Ok,
        );
        metrics.cache("users", CacheEvent::Hit, 2);
        let text = metrics.encode();
        assert!(!text.contains("plugin=\"p\""), "{text}");
        assert!(!text.contains("users"), "{text}");
    }
}
