//! Gauges read at an interval, never per scrape: a scrape must not cost the broker a
//! round trip per queue. Queue depths (each serving plugin's queues and the
//! dead-letter queue), pool slots in use, the embedded cache's bytes and evictions,
//! and dead letters refused.

use crate::capability::messaging::DeadLetterFill;
use crate::metrics::Metrics;
use crate::names::topology::queue_name;
use crate::registry::Registry;
use crate::runtime::Runtime;
use crate::services::Services;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

/// Totals read last time, to turn polled totals into counter increments.
#[derive(Default)]
struct Seen {
    evictions: HashMap<String, u64>,
    refused: u64,
    queues: HashSet<String>,
}

/// Polls every `interval` until `stopping` is cancelled.
pub(super) fn spawn_poller(
    registry: Arc<Registry>,
    runtime: Arc<Runtime>,
    services: Arc<Services>,
    interval: Duration,
    stopping: tokio_util::sync::CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let metrics = services.metrics.clone();
        if !metrics.enabled() {
            return;
        }
        let mut seen = Seen::default();
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = stopping.cancelled() => return,
            }
            poll(&metrics, &registry, &runtime, &services, &mut seen).await;
        }
    })
}

async fn poll(
    metrics: &Metrics,
    registry: &Registry,
    runtime: &Runtime,
    services: &Services,
    seen: &mut Seen,
) {
    let (total, free) = runtime.slots.counts();
    metrics.instance_slots(total, total.saturating_sub(free));

    for usage in services.cache.backend.usage() {
        let before = seen
            .evictions
            .insert(usage.domain.clone(), usage.evictions)
            .unwrap_or(0);
        let new = usage.evictions.saturating_sub(before);
        metrics.cache_domain_usage(&usage.domain, usage.bytes, new);
    }

    if let Some(redis) = &services.redis {
        let up = redis.ping(Duration::from_secs(1)).await.is_ok();
        metrics.set_backend_up("redis", up);
    }
    if services.messaging.broker.is_remote() {
        metrics.set_backend_up("amqp", services.messaging.broker.health().is_ok());
    }

    let refused = services.messaging.broker.dead_letters_refused();
    for _ in seen.refused..refused {
        metrics.dead_letter_refused();
    }
    seen.refused = refused;

    let dead_letter = registry.config().dead_letter;
    match DeadLetterFill::read(services.messaging.broker.as_ref(), &dead_letter).await {
        Ok(fill) => metrics.dead_letter_fill(fill.depth, fill.is_full()),
        Err(error) => tracing::debug!(%error, "could not read the dead-letter queue's depth"),
    }
    let prefix = registry.queue_prefix();
    let (plugins, _) = registry.plugins().await;
    let mut queues = HashSet::new();
    for plugin in plugins {
        for (queue_type, _) in &plugin.subscriptions {
            let queue = queue_name(&prefix, queue_type, &plugin.name);
            queues.insert(queue.clone());
            match services.messaging.broker.queue_depth(&queue).await {
                Ok(Some(depth)) => metrics.set_queue_depth(&queue, depth),
                Ok(None) => {}
                Err(error) => tracing::debug!(%queue, %error, "could not read a queue's depth"),
            }
        }
    }
    // Queues of plugins no longer serving drop out of the exposition.
    for gone in seen.queues.difference(&queues) {
        metrics.forget_queue(gone);
    }
    seen.queues = queues;
}
