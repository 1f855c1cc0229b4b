//! Consumers: queue → the plugin's current version → ack, retry with backoff, or
//! dead-letter.
//!
//! Each subscription of each plugin gets its own queue, `<prefix><queue-type>.<plugin>`
//! (prefix: `[amqp] queue_prefix`), bound to `techub.main` with the subscription's
//! routing keys, so that plugins never steal each other's messages, a retry reaches
//! only the plugin that failed, and two deployments on one broker never share a queue.
//! A delivery is settled only after its handler returned (or failed): at-least-once
//! end to end.
//!
//! A consumer runs each delivery on the plugin's version current *when the delivery
//! arrives* (one atomic load), as a task tracked per consumer (with a prefetch window
//! of one, in the consumer's own task: the broker sends nothing more until it is
//! settled); stopping a consumer stops new deliveries, lets the tracked ones finish
//! and settle, then closes it. The instance that handled a delivery is torn down while
//! its ack travels, not before. A consumer whose plugin keeps breaking its limits is
//! backed off (`backoff.rs`). A plugin allowing instance reuse
//! (`limits.reuse_instance`) has the instance that answered kept for the consumer's
//! next delivery (`idle.rs`).

pub mod backoff;
pub mod consume;
mod idle;
mod settle;

use crate::capability::bindings::Delivery as WitDelivery;
use crate::capability::messaging::{Consumer, Delivery, MessageStatus, QueueSpec};
use crate::metrics::QueueEvent;
use crate::plugins::LoadedPlugin;
use crate::runtime::Runtime;
use crate::services::Services;
use arc_swap::ArcSwap;
use std::sync::Arc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

/// The versions of one plugin: the current one is swapped atomically on a reload.
pub type Versions = Arc<ArcSwap<LoadedPlugin>>;

/// A running consumer of one subscription.
pub struct ConsumerHandle {
    /// The queue type it consumes.
    pub queue_type: String,
    /// The queue.
    pub queue: String,
    /// Its prefetch window.
    pub prefetch: u16,
    cancel: CancellationToken,
    in_flight: TaskTracker,
    task: Option<JoinHandle<()>>,
}

impl ConsumerHandle {
    /// Runs `consumer` of `queue` into `handler` on the consumer loop ([`consume::run`]).
    pub fn spawn<H: consume::Handler>(
        handler: Arc<H>,
        consumer: Box<dyn Consumer>,
        queue_type: &str,
        queue: &str,
        prefetch: u16,
        inline: bool,
    ) -> Self {
        let (cancel, in_flight) = (CancellationToken::new(), TaskTracker::new());
        let task = tokio::spawn(consume::run(
            handler,
            consumer,
            inline,
            cancel.clone(),
            in_flight.clone(),
        ));
        Self {
            queue_type: queue_type.to_string(),
            queue: queue.to_string(),
            prefetch,
            cancel,
            in_flight,
            task: Some(task),
        }
    }

    /// Deliveries being handled now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// The tracker of its deliveries in flight (to count them while it drains).
    pub fn tracker(&self) -> TaskTracker {
        self.in_flight.clone()
    }

    /// Stops taking deliveries; the ones in flight finish and are settled.
    pub fn stop(&self) {
        self.cancel.cancel();
    }

    /// Waits until a stopped consumer has settled its deliveries and closed.
    pub async fn drained(mut self) {
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for ConsumerHandle {
    fn drop(&mut self) {
        // Dropped without `drained` (the host going away): stop taking deliveries.
        self.cancel.cancel();
    }
}

/// Declares the queue of `spec` (binding its keys) and starts consuming it for the
/// plugin whose versions are `versions`.
pub async fn start(
    runtime: Arc<Runtime>,
    services: Arc<Services>,
    versions: Versions,
    queue_type: &str,
    spec: &QueueSpec,
    prefetch: u16,
) -> anyhow::Result<ConsumerHandle> {
    services
        .messaging
        .broker
        .declare_queue(spec)
        .await
        .map_err(|e| anyhow::anyhow!("could not declare queue {}: {e}", spec.name))?;
    let consumer = services
        .messaging
        .broker
        .consume(&spec.name, prefetch)
        .await
        .map_err(|e| anyhow::anyhow!("could not consume queue {}: {e}", spec.name))?;
    let plugin: Arc<str> = versions.load().name.as_str().into();
    tracing::info!(%plugin, queue = %spec.name, bindings = ?spec.bindings, prefetch, "consuming");
    let queue_counters = services
        .metrics
        .queue_counters(&Arc::new(plugin.to_string()), queue_type);
    let worker = Arc::new(Worker {
        runtime,
        services,
        queue_counters,
        versions,
        plugin,
        queue_type: queue_type.to_string(),
        queue: spec.name.as_str().into(),
        backoff: Default::default(),
        idle: Default::default(),
    });
    // With a window of one, the broker sends the next delivery only once this one is
    // settled: handled in the loop, without a task to spawn and wake.
    Ok(ConsumerHandle::spawn(
        worker,
        consumer,
        queue_type,
        &spec.name,
        prefetch,
        prefetch <= 1,
    ))
}

#[async_trait::async_trait]
impl consume::Handler for Worker {
    fn name(&self) -> String {
        format!("{} ({})", self.queue, self.plugin)
    }

    async fn handle(self: Arc<Self>, delivery: Box<dyn Delivery>) {
        let span = self.span(delivery.as_ref());
        self.handle_delivery(delivery).instrument(span).await
    }

    /// Looked at as each delivery arrives, so that the invocations which finished
    /// while it was awaited count.
    fn pause(&self) -> Option<std::time::Duration> {
        let after = self.versions.load().context.limits.backoff_after_violations;
        self.backoff.pause(after)
    }

    /// No delivery for a while, or another invocation needs a slot: the kept
    /// instances (if any) free theirs. (No timer to arm for a plugin that keeps none.)
    async fn idle(&self) {
        if !self.reuses() && self.idle.is_empty() {
            return std::future::pending().await;
        }
        tokio::select! {
            _ = tokio::time::sleep(self.idle_release()) => {}
            _ = self.runtime.slots.until_wanted() => {}
        }
        self.idle.clear();
    }

    fn drained(&self) {
        self.idle.clear();
    }
}

/// Everything one subscription's deliveries need.
struct Worker {
    runtime: Arc<Runtime>,
    services: Arc<Services>,
    versions: Versions,
    plugin: Arc<str>,
    /// This queue's delivery counters, resolved at start.
    queue_counters: crate::metrics::QueueCounters,
    queue_type: String,
    queue: Arc<str>,
    /// Violations in a row, and the pause they call for.
    backoff: backoff::Backoff,
    /// Instances kept for the next deliveries (only with `limits.reuse_instance` > 1).
    idle: idle::IdleInstances,
}

impl Worker {
    /// Whether the plugin's current version allows its instances to be reused.
    fn reuses(&self) -> bool {
        self.versions.load().context.limits.reuse_instance > 1
    }

    /// How long kept instances stay while no delivery comes (`limits.reuse_idle_ms`):
    /// long enough to bridge the gaps of a steady stream, short enough that a quiet
    /// plugin gives its memory back soon. (An invocation waiting for a slot gets one
    /// at once.)
    fn idle_release(&self) -> std::time::Duration {
        let ms = self.versions.load().context.limits.reuse_idle_ms;
        std::time::Duration::from_millis(ms.into())
    }

    /// The span of one delivery: every record of its handling, the guest's `log`
    /// records and captured output included, carries these fields. (The version is
    /// recorded once the delivery picks one.)
    fn span(&self, delivery: &dyn Delivery) -> tracing::Span {
        let envelope = delivery.envelope();
        tracing::info_span!(
            "invocation",
            plugin = %self.plugin,
            version = tracing::field::Empty,
            queue = %self.queue,
            routing_key = %envelope.routing_key,
            message_id = %envelope.id,
            correlation_id = envelope.correlation_id.as_deref().unwrap_or(""),
            attempt = envelope.attempt,
        )
    }

    async fn handle_delivery(&self, mut delivery: Box<dyn Delivery>) {
        // The version (and with it the configuration) current as the delivery arrives;
        // a swap in the meantime does not touch this delivery.
        let version = self.versions.load_full();
        let policy = version
            .config
            .queues
            .get(&self.queue_type)
            .copied()
            .unwrap_or_default();
        tracing::Span::current().record("version", crate::runtime::short_version(&version.hash));
        self.track(&delivery.envelope().id, MessageStatus::Processing);
        let (size, max) = (
            delivery.envelope().payload.len(),
            version.config.host.max_message_bytes,
        );
        if size > max {
            settle::dead_letter_oversize(self, delivery, size, max).await;
            return;
        }
        if let Some(reason) = delivery.envelope().parked.clone() {
            // Refused by the full dead-letter queue, back from waiting: it died already.
            settle::dead_letter_unhandled(self, delivery, &reason).await;
            return;
        }
        let redelivered = delivery.redelivered();
        let metrics = &version.context.metrics;
        self.queue_counters.record(QueueEvent::Delivered);
        if redelivered {
            self.queue_counters.record(QueueEvent::Redelivered);
        }
        let in_flight = metrics.start();
        let message = to_wit(delivery.as_mut(), &self.queue_type, redelivered);
        let reuse = version.context.limits.reuse_instance;
        let reused = (reuse > 1).then(|| self.idle.take(&version)).flatten();
        let (mut report, teardown) = self
            .runtime
            .invoke_held(
                &version.pre,
                version.context.clone(),
                &message,
                policy.priority.level(),
                reused,
            )
            .await;
        crate::runtime::mask_outcome(&version.context, &mut report.result);
        let failure = match &report.result {
            Ok(crate::capability::bindings::Outcome::Ok) => None,
            Ok(
                crate::capability::bindings::Outcome::Retry(reason)
                | crate::capability::bindings::Outcome::Reject(reason),
            ) => Some(reason.clone()),
            Err(error) => Some(error.to_string()),
        };
        if let Some(reason) = failure {
            metrics.failed(crate::capability::messaging::now_ms(), &reason);
        }
        drop(in_flight);
        let outcome = crate::runtime::outcome_of(&report.result);
        report.record(metrics, outcome);
        self.record_violations(&report, version.context.limits.backoff_after_violations);
        // The payload goes back for a retry or a dead letter: moved, never copied.
        delivery.envelope_mut().payload = message.payload;
        let envelope = delivery.envelope();
        // One line per handled message at the default level: what an author watches.
        let outcome = outcome.label();
        tracing::info!(plugin = %self.plugin, id = %envelope.id, attempt = envelope.attempt,
            outcome, elapsed_us = report.elapsed.as_micros() as u64,
            host_us = report.host_time.as_micros() as u64,
            cpu_us = report.guest_cpu.as_micros() as u64, "handled");
        // Kept for the next delivery if the plugin allows it, unless an invocation
        // waits for a pool slot.
        let teardown = if teardown.reusable(reuse) && !self.runtime.slots.wanted() {
            self.idle.put(version, teardown);
            None
        } else {
            Some(teardown)
        };
        // The ack first: the broker (at a prefetch of 1) sends the next delivery only
        // once it has it. The instance is torn down while the ack travels.
        let settling = settle::settle(self, &policy, delivery, report.result);
        tokio::join!(settling, async move { drop(teardown) });
    }

    /// Counts the invocation for the back-off, logging when it starts or ends.
    fn record_violations(&self, report: &crate::runtime::InvocationReport, after: u32) {
        let (plugin, queue) = (&self.plugin, &self.queue);
        match self.backoff.record(backoff::violated(report), after) {
            backoff::Change::BackedOff => tracing::warn!(%plugin, %queue, violations = after,
                "backing off: the last invocations all broke the plugin's limits; one delivery at a time, after a pause that doubles up to 5 s, until one ends cleanly"),
            backoff::Change::Recovered => {
                tracing::info!(%plugin, %queue, "no longer backed off: an invocation ended cleanly")
            }
            backoff::Change::None => {}
        }
    }

    /// Records the status of message `id` in this worker's queue.
    fn track(&self, id: &str, status: MessageStatus) {
        self.services
            .messaging
            .tracker
            .delivered(id, &self.queue, &self.plugin, status);
    }
}

/// The guest's view of a delivery; the payload is moved out of the envelope.
fn to_wit(delivery: &mut dyn Delivery, queue_type: &str, redelivered: bool) -> WitDelivery {
    let envelope = delivery.envelope_mut();
    WitDelivery {
        id: envelope.id.clone(),
        queue: queue_type.to_string(),
        routing_key: envelope.routing_key.clone(),
        payload: std::mem::take(&mut envelope.payload),
        headers: envelope.headers.clone(),
        correlation_id: envelope.correlation_id.clone(),
        reply_to: envelope.reply_to.clone(),
        priority: crate::capability::messaging::priority_of_level(envelope.priority),
        published_at_ms: envelope.published_at_ms,
        attempt: envelope.attempt,
        redelivered,
    }
}
