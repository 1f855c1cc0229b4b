//! Event-based cache invalidation (the specification's
//! `InvalidationStrategy.EVENT_BASED`): `[[cache.invalidate]]` rules map routing keys
//! to invalidations filled from the event's JSON payload, and the host consumes those
//! events itself.
//!
//! The host's queue `<queue_prefix>cache:invalidation` (a name no plugin queue can
//! take: queue types have no `:`) is durable and bound to the rules' keys; hosts of a
//! deployment share it as competing consumers (the cache they invalidate is shared).
//! Delivery is at least once, like any consumer's: an event is acked after its
//! invalidations; a backend failure retries it (up to [`MAX_ATTEMPTS`]), and an event
//! that cannot apply (not JSON, a field missing) is dead-lettered with the reason,
//! never crashing the consumer. Rules change with `host.toml`: the queue's bindings
//! follow them. The consumer runs on the loop plugins' consumers run on
//! ([`crate::dispatch::consume`]), one event at a time, and drains like them at
//! shutdown.
//!
//! # Layout
//! `mod.rs` (the queue, its bindings and consumer), `rules.rs` (rules and templates).

mod rules;

pub use rules::{Planned, Rule, plan};

use crate::capability::BackendResult;
use crate::capability::cache::{CacheBackend, CacheStats};
use crate::capability::messaging::{Broker, Delivery, QueueSpec};
use crate::config::InvalidationRule;
use crate::metrics::{CacheEvent, Metrics};
use arc_swap::ArcSwap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Attempts of an event whose invalidation the backend failed, before it is
/// dead-lettered.
pub const MAX_ATTEMPTS: u32 = 5;
/// Wait before an event is tried again.
const RETRY_DELAY: Duration = Duration::from_secs(1);
/// Unsettled events per host.
const PREFETCH: u16 = 16;

/// What the consumer did since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EventCounts {
    /// Events whose invalidations were made.
    pub applied: u64,
    /// Entries those removed.
    pub removed: u64,
    /// Events the backend failed, tried again.
    pub retried: u64,
    /// Events dead-lettered (malformed, or the backend failed every attempt).
    pub dead_lettered: u64,
}

#[derive(Default)]
struct Counters {
    applied: AtomicU64,
    removed: AtomicU64,
    retried: AtomicU64,
    dead_lettered: AtomicU64,
}

/// The host's invalidation consumer.
pub struct CacheEvents {
    broker: Arc<dyn Broker>,
    cache: Arc<dyn CacheBackend>,
    stats: Arc<CacheStats>,
    metrics: Arc<Metrics>,
    queue: String,
    rules: ArcSwap<Vec<Rule>>,
    /// The bindings made; also keeps two applies from interleaving.
    bound: tokio::sync::Mutex<Vec<String>>,
    consumer: Mutex<Option<crate::dispatch::ConsumerHandle>>,
    counters: Counters,
}

impl CacheEvents {
    /// The consumer for `queue_prefix`'s deployment; it starts with the first rules.
    pub fn new(
        broker: Arc<dyn Broker>,
        cache: Arc<dyn CacheBackend>,
        stats: Arc<CacheStats>,
        metrics: Arc<Metrics>,
        queue_prefix: &str,
    ) -> Self {
        Self {
            broker,
            cache,
            stats,
            metrics,
            queue: format!("{queue_prefix}cache:invalidation"),
            rules: ArcSwap::from_pointee(Vec::new()),
            bound: tokio::sync::Mutex::default(),
            consumer: Mutex::default(),
            counters: Counters::default(),
        }
    }

    /// The host's invalidation queue.
    pub fn queue(&self) -> &str {
        &self.queue
    }

    /// What the consumer did since start.
    pub fn counts(&self) -> EventCounts {
        let c = &self.counters;
        EventCounts {
            applied: c.applied.load(Ordering::Relaxed),
            removed: c.removed.load(Ordering::Relaxed),
            retried: c.retried.load(Ordering::Relaxed),
            dead_lettered: c.dead_lettered.load(Ordering::Relaxed),
        }
    }

    /// Takes `rules` (validated with the configuration): the queue binds their keys
    /// and drops the keys no rule has any more; the consumer starts with the first.
    pub async fn apply(self: &Arc<Self>, rules: &[InvalidationRule]) -> BackendResult<()> {
        let parsed: Vec<Rule> = rules
            .iter()
            .filter_map(|rule| Rule::parse(rule).ok())
            .collect();
        let mut bound = self.bound.lock().await;
        let mut wanted: Vec<String> = parsed.iter().map(|r| r.binding.clone()).collect();
        wanted.sort();
        wanted.dedup();
        if !wanted.is_empty() {
            self.broker
                .declare_queue(&QueueSpec {
                    name: self.queue.clone(),
                    bindings: wanted.clone(),
                    durable: true,
                    limits: Default::default(),
                })
                .await?;
        }
        let dropped: Vec<String> = bound
            .iter()
            .filter(|b| !wanted.contains(b))
            .cloned()
            .collect();
        if !dropped.is_empty() {
            self.broker.unbind(&self.queue, &dropped).await?;
        }
        self.rules.store(Arc::new(parsed));
        *bound = wanted;
        if !bound.is_empty() {
            self.start().await?;
        }
        Ok(())
    }

    async fn start(self: &Arc<Self>) -> BackendResult<()> {
        if self.lock_consumer().is_some() {
            return Ok(());
        }
        let consumer = self.broker.consume(&self.queue, PREFETCH).await?;
        // One event at a time, in the order they come: a rule's invalidations of one
        // entity apply in the order its events were published.
        let handle = crate::dispatch::ConsumerHandle::spawn(
            self.clone(),
            consumer,
            "cache-invalidation",
            &self.queue,
            PREFETCH,
            true,
        );
        *self.lock_consumer() = Some(handle);
        Ok(())
    }

    /// Events being applied now.
    pub fn in_flight(&self) -> usize {
        self.lock_consumer()
            .as_ref()
            .map_or(0, crate::dispatch::ConsumerHandle::in_flight)
    }

    /// Stops consuming (at shutdown): the event being applied is finished and settled,
    /// the ones the broker sent ahead go back to the queue.
    pub async fn stop(&self) {
        let handle = self.lock_consumer().take();
        if let Some(handle) = handle {
            handle.stop();
            handle.drained().await;
        }
    }

    /// Stops taking events, without waiting for the one being applied (a host dropped
    /// without a shutdown).
    pub fn cancel(&self) {
        if let Some(handle) = self.lock_consumer().as_ref() {
            handle.stop();
        }
    }

    fn lock_consumer(&self) -> std::sync::MutexGuard<'_, Option<crate::dispatch::ConsumerHandle>> {
        self.consumer.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn handle_event(&self, delivery: Box<dyn Delivery>) {
        if let Some(reason) = delivery.envelope().parked.clone() {
            // Refused by the full dead-letter queue before: dead-lettered again.
            return self.dead_letter(delivery, &reason).await;
        }
        let envelope = delivery.envelope();
        let (key, attempt) = (envelope.routing_key.clone(), envelope.attempt);
        let planned = match plan(&self.rules.load(), &key, &envelope.payload) {
            Ok(planned) => planned,
            Err(reason) => {
                tracing::warn!(routing_key = %key, %reason, "cache invalidation event dead-lettered");
                return self
                    .dead_letter(delivery, &format!("rejected: {reason}"))
                    .await;
            }
        };
        let mut removed = 0;
        for planned in &planned {
            match self.invalidate(planned).await {
                Ok(n) => removed += n,
                Err(error) if attempt >= MAX_ATTEMPTS => {
                    let reason = format!("retries exhausted: {error}");
                    return self.dead_letter(delivery, &reason).await;
                }
                Err(error) => {
                    tracing::warn!(routing_key = %key, %error, attempt, "cache invalidation failed; trying again");
                    self.counters.retried.fetch_add(1, Ordering::Relaxed);
                    self.metrics.cache_event("retried");
                    if let Err(error) = delivery.retry(RETRY_DELAY).await {
                        tracing::warn!(%error, "could not schedule the retry; the broker delivers the event again");
                    }
                    return;
                }
            }
        }
        self.counters.applied.fetch_add(1, Ordering::Relaxed);
        self.counters.removed.fetch_add(removed, Ordering::Relaxed);
        self.metrics.cache_event("applied");
        if let Err(error) = delivery.ack().await {
            tracing::warn!(%error, "could not ack an applied invalidation event; it comes again (invalidating twice is harmless)");
        }
    }

    async fn invalidate(&self, planned: &Planned) -> BackendResult<u64> {
        let domain = &planned.domain;
        let done = self
            .cache
            .invalidate(domain, &planned.keys, &planned.tags)
            .await?;
        let by_pattern = match &planned.pattern {
            Some(pattern) => self.cache.invalidate_pattern(domain, pattern).await?,
            None => 0,
        };
        self.stats
            .record(domain, CacheEvent::DeleteByKey, done.by_key);
        self.stats
            .record(domain, CacheEvent::InvalidateByTag, done.by_tag);
        self.stats
            .record(domain, CacheEvent::InvalidateByPattern, by_pattern);
        Ok(done.by_key + done.by_tag + by_pattern)
    }

    async fn dead_letter(&self, delivery: Box<dyn Delivery>, reason: &str) {
        self.counters.dead_lettered.fetch_add(1, Ordering::Relaxed);
        self.metrics.cache_event("dead_lettered");
        if let Err(error) = delivery.dead_letter(reason).await {
            tracing::error!(%error, "could not dead-letter a cache invalidation event; it comes again");
        }
    }
}

#[async_trait::async_trait]
impl crate::dispatch::consume::Handler for CacheEvents {
    fn name(&self) -> String {
        self.queue.clone()
    }

    async fn handle(self: Arc<Self>, delivery: Box<dyn Delivery>) {
        self.handle_event(delivery).await
    }
}
