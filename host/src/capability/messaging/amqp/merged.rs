//! A plugin queue consumed as one, whatever queues are behind it (`physical.rs`): the
//! high lane before the normal one, and an old queue being drained (`migrate.rs`)
//! beside them.
//!
//! Each queue has a consumer of its own with the plugin's prefetch (twice that for
//! the high lane; quorum queues have no channel-wide prefetch), and the merged
//! consumer hands out at most
//! `prefetch` deliveries at a time (a permit each, given back when the delivery is
//! settled), so the plugin's concurrency stays what it configured. Of what the
//! queues have sent, the high lane is taken first, except that after [`STREAK`] high
//! deliveries in a row the others get the first look: a busy high lane slows the
//! normal one down and never stops it. As with RabbitMQ's own priorities, the order
//! is that of what the consumer holds: a high message published while the plugin
//! works through normal ones it already holds waits for those (at most `prefetch`).

use super::AmqpBroker;
use super::consumer::AmqpConsumer;
use super::migrate::DrainStep;
use crate::capability::BackendResult;
use crate::capability::messaging::{Buried, Consumer, Delivery, Envelope};
use futures::FutureExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// High-lane deliveries in a row after which the other queues are looked at first.
pub(super) const STREAK: u32 = 4;
/// How often an old queue being drained is looked at.
const DRAIN_CHECK: Duration = Duration::from_millis(500);

/// One queue behind the plugin queue, consumed.
struct Source {
    consumer: AmqpConsumer,
    high: bool,
    /// An old queue being drained.
    old: bool,
    /// Taking deliveries (an old queue stops once drained, and may start again).
    consuming: bool,
    /// Its stream ended (its queue deleted): kept until close for what it handed out.
    ended: bool,
    /// Its deliveries handed out and not settled yet.
    unsettled: Arc<AtomicUsize>,
    /// When a drain check first found it ready to delete.
    quiet_since: Option<Instant>,
}

pub(super) struct MergedConsumer {
    broker: AmqpBroker,
    logical: String,
    prefetch: u16,
    sources: Vec<Source>,
    permits: Arc<Semaphore>,
    /// High-lane deliveries handed out in a row.
    streak: u32,
    layout: tokio::sync::watch::Receiver<u64>,
    /// The layout changed and is not taken up yet (a wait that `changed` ended has
    /// marked the new value seen already).
    relayout: bool,
    next_drain_check: Instant,
}

impl MergedConsumer {
    pub(super) async fn start(
        broker: AmqpBroker,
        logical: &str,
        prefetch: u16,
    ) -> BackendResult<Self> {
        let layout = broker.shared.layout.subscribe();
        let mut merged = Self {
            broker,
            logical: logical.to_string(),
            prefetch,
            sources: Vec::new(),
            permits: Arc::new(Semaphore::new(prefetch.max(1).into())),
            streak: 0,
            layout,
            relayout: false,
            next_drain_check: Instant::now(),
        };
        merged.take_up_layout().await?;
        Ok(merged)
    }

    /// Consumes every queue now behind the plugin queue that it does not consume yet
    /// (after a kind change or at start); queues no longer behind it end by
    /// themselves (deleted).
    async fn take_up_layout(&mut self) -> BackendResult<()> {
        self.layout.borrow_and_update();
        let physical = self.broker.physical(&self.logical);
        let wanted = physical
            .high
            .iter()
            .map(|q| (q.clone(), true, false))
            .chain([(physical.normal.clone(), false, false)])
            .chain(
                self.broker
                    .migration_sources(&self.logical)
                    .into_iter()
                    .map(|q| (q, false, true)),
            );
        for (queue, high, old) in wanted.collect::<Vec<_>>() {
            // Consumed already: what it is now (the queue of a kind just left is an
            // old one from now on).
            if let Some(source) = self
                .sources
                .iter_mut()
                .find(|s| !s.ended && s.consumer.queue() == queue)
            {
                (source.high, source.old) = (high, old);
                continue;
            }
            // The high lane holds twice the window: while `prefetch` of its deliveries
            // are handled, as many more wait here, so that one finishing finds the
            // next high one at hand instead of a normal one (its refill is a round
            // trip away).
            let prefetch = match high {
                true => self.prefetch.saturating_mul(2),
                false => self.prefetch,
            };
            let consumer =
                AmqpConsumer::start(self.broker.clone(), &queue, &self.logical, prefetch).await?;
            self.sources.push(Source {
                consumer,
                high,
                old,
                consuming: true,
                ended: false,
                unsettled: Arc::default(),
                quiet_since: None,
            });
        }
        // The preferred first: the high lane, then the others.
        self.sources.sort_by_key(|s| !s.high);
        Ok(())
    }

    /// The sources to look at, in the order of preference now.
    fn order(&self) -> Vec<usize> {
        let live = |s: &&Source| s.consuming && !s.ended;
        let (high, other): (Vec<usize>, Vec<usize>) = (0..self.sources.len())
            .filter(|&i| live(&&self.sources[i]))
            .partition(|&i| self.sources[i].high);
        match self.streak >= STREAK {
            true => other.into_iter().chain(high).collect(),
            false => high.into_iter().chain(other).collect(),
        }
    }

    /// One look at each old queue being drained (at most every [`DRAIN_CHECK`]),
    /// made while the consumer waits for deliveries, as the host's dispatcher always
    /// does.
    async fn check_drains(&mut self) {
        if Instant::now() < self.next_drain_check {
            return;
        }
        self.next_drain_check = Instant::now() + DRAIN_CHECK;
        for source in self.sources.iter_mut().filter(|s| s.old && !s.ended) {
            let step = self
                .broker
                .drain_step(
                    &self.logical,
                    source.consumer.queue(),
                    source.consuming,
                    source.unsettled.load(Ordering::Acquire),
                    &mut source.quiet_since,
                )
                .await;
            match step {
                Ok(DrainStep::Stop) => {
                    source.consumer.stop().await;
                    source.consuming = false;
                }
                Ok(DrainStep::Consume) if !source.consuming => {
                    source.consuming = source.consumer.resubscribe().await;
                }
                Ok(DrainStep::Gone) => {
                    source.consumer.stop().await;
                    (source.consuming, source.ended) = (false, true);
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(queue = %self.logical, old = %source.consumer.queue(), %error, "could not look at the old queue being drained");
                }
            }
        }
    }

    fn hand_out(
        &mut self,
        index: usize,
        delivery: Box<dyn Delivery>,
        permit: OwnedSemaphorePermit,
    ) -> Box<dyn Delivery> {
        let source = &self.sources[index];
        self.streak = match source.high {
            true => self.streak + 1,
            false => 0,
        };
        source.unsettled.fetch_add(1, Ordering::AcqRel);
        Box::new(Handed {
            inner: Some(delivery),
            unsettled: source.unsettled.clone(),
            _permit: permit,
        })
    }

    fn draining(&self) -> bool {
        self.sources.iter().any(|s| s.old && !s.ended)
    }
}

#[async_trait::async_trait]
impl Consumer for MergedConsumer {
    async fn next(&mut self) -> Option<Box<dyn Delivery>> {
        loop {
            if self.relayout || self.layout.has_changed().unwrap_or(false) {
                match self.take_up_layout().await {
                    Ok(()) => self.relayout = false,
                    Err(error) => {
                        self.relayout = true;
                        tracing::warn!(queue = %self.logical, %error, "could not consume the queue's new queues yet");
                    }
                }
            }
            if self.draining() {
                self.check_drains().await;
            }
            let permit = self
                .permits
                .clone()
                .acquire_owned()
                .await
                .expect("the permits are never closed");
            let order = self.order();
            if order.is_empty() && !self.draining() {
                return None;
            }
            // What is there already, in order of preference.
            for &index in &order {
                if let Some(next) = self.sources[index].consumer.next().now_or_never() {
                    match next {
                        Some(delivery) => return Some(self.hand_out(index, delivery, permit)),
                        None => self.sources[index].ended = true,
                    }
                }
            }
            if order.iter().any(|&i| self.sources[i].ended) {
                continue;
            }
            // Else the first to send one, a change of layout, or a drain check.
            // (A layout not taken up yet is tried again as soon.)
            let check = match self.draining() || self.relayout {
                true => DRAIN_CHECK,
                false => Duration::from_secs(3600),
            };
            let waited = {
                let mut waiting = Vec::new();
                let mut indices = Vec::new();
                for (index, source) in self.sources.iter_mut().enumerate() {
                    if order.contains(&index) {
                        indices.push(index);
                        waiting.push(source.consumer.next());
                    }
                }
                let any = async {
                    match waiting.is_empty() {
                        true => futures::future::pending().await,
                        false => futures::future::select_all(waiting).await,
                    }
                };
                tokio::select! {
                    (next, position, _) = any => Some((indices[position], next)),
                    _ = self.layout.changed() => {
                        self.relayout = true;
                        None
                    }
                    _ = tokio::time::sleep(check) => None,
                }
            };
            match waited {
                Some((index, Some(delivery))) => {
                    return Some(self.hand_out(index, delivery, permit));
                }
                Some((index, None)) => self.sources[index].ended = true,
                None => {}
            }
        }
    }

    async fn stop(&mut self) {
        for source in &mut self.sources {
            source.consumer.stop().await;
        }
    }

    async fn close(self: Box<Self>) {
        for source in self.sources {
            Box::new(source.consumer).close().await;
        }
    }
}

/// A delivery handed out: holds one permit of the window, and counts as unsettled for
/// its queue until settled or dropped.
struct Handed {
    inner: Option<Box<dyn Delivery>>,
    unsettled: Arc<AtomicUsize>,
    _permit: OwnedSemaphorePermit,
}

impl Handed {
    fn take(&mut self) -> Box<dyn Delivery> {
        self.inner
            .take()
            .expect("a delivery is settled once: settling consumes it")
    }
}

impl Drop for Handed {
    fn drop(&mut self) {
        self.unsettled.fetch_sub(1, Ordering::AcqRel);
    }
}

#[async_trait::async_trait]
impl Delivery for Handed {
    fn envelope(&self) -> &Envelope {
        self.inner.as_ref().expect("unsettled").envelope()
    }

    fn envelope_mut(&mut self) -> &mut Envelope {
        self.inner.as_mut().expect("unsettled").envelope_mut()
    }

    fn redelivered(&self) -> bool {
        self.inner.as_ref().expect("unsettled").redelivered()
    }

    async fn ack(mut self: Box<Self>) -> BackendResult<()> {
        self.take().ack().await
    }

    async fn retry(mut self: Box<Self>, delay: Duration) -> BackendResult<()> {
        self.take().retry(delay).await
    }

    async fn dead_letter(mut self: Box<Self>, reason: &str) -> BackendResult<Buried> {
        self.take().dead_letter(reason).await
    }
}
