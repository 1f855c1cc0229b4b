//! The embedded broker: AMQP topic routing, priority queues, prefetch windows, delayed
//! and retried deliveries, and a bounded dead-letter queue, all in process.
//!
//! Semantics follow the RabbitMQ backend: higher priority first and FIFO within a
//! priority; an expired message is dead-lettered when it reaches the head; a delivery
//! dropped unsettled is requeued as redelivered.

use super::routing::TopicPattern;
use super::{
    Broker, Consumer, DEAD_LETTER_REFUSED_PAUSE, DeadLetter, DeadLetterAction, DeadLetterPicker,
    Delivery, Envelope, QueueSpec, ReplayTo, Reworked,
};
use crate::capability::{BackendError, BackendResult};
use crate::config::DeadLetterConfig;
use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

struct Queued {
    priority: u8,
    seq: u64,
    envelope: Envelope,
    redelivered: bool,
}

impl PartialEq for Queued {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Queued {
    fn cmp(&self, other: &Self) -> Ordering {
        // Max-heap: higher priority first, then lower sequence (older) first.
        self.priority
            .cmp(&other.priority)
            .then_with(|| other.seq.cmp(&self.seq))
    }
}

#[derive(Default)]
struct Queue {
    bindings: Vec<TopicPattern>,
    messages: BinaryHeap<Queued>,
    notify: Arc<Notify>,
}

struct DeadEntry {
    letter: DeadLetter,
    at: Instant,
}

#[derive(Default)]
struct State {
    queues: HashMap<String, Queue>,
    dead: VecDeque<DeadEntry>,
    seq: u64,
}

struct Shared {
    state: Mutex<State>,
    dead_letter: DeadLetterConfig,
    dead_letters_refused: AtomicU64,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn enqueue(&self, queue: &str, envelope: Envelope, redelivered: bool) {
        let mut state = self.lock();
        state.seq += 1;
        let seq = state.seq;
        if let Some(q) = state.queues.get_mut(queue) {
            q.messages.push(Queued {
                priority: envelope.priority,
                seq,
                envelope,
                redelivered,
            });
            q.notify.notify_one();
        }
    }

    fn route(&self, envelope: Envelope) {
        let targets: Vec<String> = self
            .lock()
            .queues
            .iter()
            .filter(|(_, q)| q.bindings.iter().any(|b| b.matches(&envelope.routing_key)))
            .map(|(name, _)| name.clone())
            .collect();
        for queue in targets {
            self.enqueue(&queue, envelope.clone(), false);
        }
    }

    /// Drops the dead letters older than `dead_letter.ttl_ms`, as RabbitMQ's message
    /// TTL on the dead-letter queue does.
    fn expire_dead(&self, state: &mut State) {
        let ttl = Duration::from_millis(self.dead_letter.ttl_ms);
        let now = Instant::now();
        while state
            .dead
            .front()
            .is_some_and(|d| now.duration_since(d.at) >= ttl)
        {
            state.dead.pop_front();
        }
    }

    /// Parks `envelope` in the dead-letter queue; refused when it is full (the seed's
    /// max length), as RabbitMQ's `reject-publish` does: a dead letter is the last copy
    /// of a message, so none is dropped to make room.
    fn bury(&self, queue: &str, envelope: Envelope, reason: &str) -> BackendResult<()> {
        let mut state = self.lock();
        self.expire_dead(&mut state);
        if state.dead.len() >= self.dead_letter.max_length as usize {
            drop(state);
            let refused = self
                .dead_letters_refused
                .fetch_add(1, AtomicOrdering::Relaxed)
                + 1;
            tracing::error!(%queue, id = %envelope.id, refused, "the dead-letter queue is full and refused a dead letter; the message stays in its queue");
            return Err(BackendError::Unavailable(format!(
                "the dead-letter queue is full ({} letters)",
                self.dead_letter.max_length
            )));
        }
        let letter = DeadLetter {
            envelope,
            queue: queue.to_string(),
            reason: reason.to_string(),
            died_at_ms: super::now_ms(),
        };
        state.dead.push_back(DeadEntry {
            letter,
            at: Instant::now(),
        });
        Ok(())
    }

    /// Pops the next live message of `queue`, dead-lettering expired ones on the way.
    fn pop(&self, queue: &str) -> Option<Queued> {
        loop {
            let next = self.lock().queues.get_mut(queue)?.messages.pop()?;
            let expired = next.envelope.expiration_ms.is_some_and(|ttl| {
                super::now_ms() >= next.envelope.published_at_ms.saturating_add(ttl)
            });
            if !expired {
                return Some(next);
            }
            // An expired message the full dead-letter queue refuses is dropped, as
            // RabbitMQ drops it: nobody holds it to give back.
            let _ = self.bury(queue, next.envelope, "expired");
        }
    }
}

/// In-process broker.
#[derive(Clone)]
pub struct MemoryBroker {
    shared: Arc<Shared>,
}

impl MemoryBroker {
    /// A broker whose dead-letter queue follows `dead_letter`.
    pub fn new(dead_letter: DeadLetterConfig) -> Self {
        Self {
            shared: Arc::new(Shared {
                state: Mutex::default(),
                dead_letter,
                dead_letters_refused: AtomicU64::new(0),
            }),
        }
    }
}

#[async_trait::async_trait]
impl Broker for MemoryBroker {
    async fn publish(&self, mut envelope: Envelope, delay: Option<Duration>) -> BackendResult<()> {
        // Whatever the publisher claims, a published message is a first attempt: only
        // the broker's own retries count (as on RabbitMQ, where the host ignores its
        // headers on messages that enter through the exchange).
        envelope.attempt = 1;
        match delay {
            Some(delay) if !delay.is_zero() => {
                let shared = self.shared.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    shared.route(envelope);
                });
            }
            _ => self.shared.route(envelope),
        }
        Ok(())
    }

    async fn declare_queue(&self, spec: &QueueSpec) -> BackendResult<()> {
        let bindings = spec
            .bindings
            .iter()
            .map(|b| TopicPattern::parse(b).map_err(BackendError::InvalidArgument))
            .collect::<BackendResult<Vec<_>>>()?;
        let mut state = self.shared.lock();
        let queue = state.queues.entry(spec.name.clone()).or_default();
        for binding in bindings {
            if !queue.bindings.contains(&binding) {
                queue.bindings.push(binding);
            }
        }
        Ok(())
    }

    async fn unbind(&self, queue: &str, bindings: &[String]) -> BackendResult<()> {
        let mut state = self.shared.lock();
        if let Some(q) = state.queues.get_mut(queue) {
            q.bindings
                .retain(|b| !bindings.iter().any(|r| r == b.as_str()));
        }
        Ok(())
    }

    async fn consume(&self, queue: &str, prefetch: u16) -> BackendResult<Box<dyn Consumer>> {
        let notify = match self.shared.lock().queues.get(queue) {
            Some(q) => q.notify.clone(),
            None => {
                return Err(BackendError::InvalidArgument(format!(
                    "queue {queue:?} is not declared"
                )));
            }
        };
        Ok(Box::new(MemoryConsumer {
            shared: self.shared.clone(),
            queue: queue.to_string(),
            notify,
            window: Arc::new(Semaphore::new(prefetch.max(1).into())),
        }))
    }

    fn dead_letters_refused(&self) -> u64 {
        self.shared
            .dead_letters_refused
            .load(AtomicOrdering::Relaxed)
    }

    async fn dead_letters(&self, offset: usize, limit: usize) -> BackendResult<Vec<DeadLetter>> {
        let mut state = self.shared.lock();
        self.shared.expire_dead(&mut state);
        Ok(state
            .dead
            .iter()
            .skip(offset)
            .take(limit)
            .map(|d| d.letter.clone())
            .collect())
    }

    async fn rework_dead_letters(&self, pick: &DeadLetterPicker<'_>) -> BackendResult<Reworked> {
        let shared = &self.shared;
        let letters = {
            let mut state = shared.lock();
            shared.expire_dead(&mut state);
            std::mem::take(&mut state.dead)
        };
        let mut done = Reworked::default();
        let mut kept = VecDeque::new();
        for entry in letters {
            let letter = &entry.letter;
            match pick(letter) {
                DeadLetterAction::Keep => kept.push_back(entry),
                DeadLetterAction::Purge => done.purged += 1,
                DeadLetterAction::Replay(to) => {
                    let mut envelope = letter.envelope.clone();
                    envelope.attempt = 1;
                    envelope.expiration_ms = None;
                    let id = envelope.id.clone();
                    match to {
                        ReplayTo::Queue if shared.lock().queues.contains_key(&letter.queue) => {
                            shared.enqueue(&letter.queue, envelope, false);
                            done.replayed.push((id, Some(letter.queue.clone())));
                        }
                        ReplayTo::Queue => {
                            done.errors.push(format!(
                                "{id}: queue {} no longer exists; replay it with a routing key",
                                letter.queue
                            ));
                            kept.push_back(entry);
                        }
                        ReplayTo::RoutingKey(key) => {
                            envelope.routing_key = key;
                            shared.route(envelope);
                            done.replayed.push((id, None));
                        }
                    }
                }
            }
        }
        done.kept = kept.len() as u64;
        // Letters buried during the pass go after the kept ones, as they came later.
        let mut state = shared.lock();
        kept.extend(state.dead.drain(..));
        state.dead = kept;
        Ok(done)
    }

    async fn dead_letter_depth(&self) -> BackendResult<u64> {
        let mut state = self.shared.lock();
        self.shared.expire_dead(&mut state);
        Ok(state.dead.len() as u64)
    }

    async fn queue_depth(&self, queue: &str) -> BackendResult<Option<u64>> {
        Ok(self
            .shared
            .lock()
            .queues
            .get(queue)
            .map(|q| q.messages.len() as u64))
    }
}

struct MemoryConsumer {
    shared: Arc<Shared>,
    queue: String,
    notify: Arc<Notify>,
    window: Arc<Semaphore>,
}

#[async_trait::async_trait]
impl Consumer for MemoryConsumer {
    async fn next(&mut self) -> Option<Box<dyn Delivery>> {
        let permit = self.window.clone().acquire_owned().await.ok()?;
        loop {
            if let Some(queued) = self.shared.pop(&self.queue) {
                return Some(Box::new(MemoryDelivery {
                    shared: self.shared.clone(),
                    queue: self.queue.clone(),
                    queued: Some(queued),
                    _permit: permit,
                }));
            }
            // `notify_one` stores a permit when nobody waits, so a message enqueued
            // between `pop` and here is not missed.
            self.notify.notified().await;
        }
    }
}

struct MemoryDelivery {
    shared: Arc<Shared>,
    queue: String,
    queued: Option<Queued>,
    _permit: OwnedSemaphorePermit,
}

impl MemoryDelivery {
    fn take(&mut self) -> Queued {
        self.queued
            .take()
            .expect("a delivery is settled once: settling consumes it")
    }
}

#[async_trait::async_trait]
impl Delivery for MemoryDelivery {
    fn envelope(&self) -> &Envelope {
        &self
            .queued
            .as_ref()
            .expect("unsettled until consumed")
            .envelope
    }

    fn envelope_mut(&mut self) -> &mut Envelope {
        &mut self
            .queued
            .as_mut()
            .expect("unsettled until consumed")
            .envelope
    }

    fn redelivered(&self) -> bool {
        self.queued.as_ref().is_some_and(|q| q.redelivered)
    }

    async fn ack(mut self: Box<Self>) -> BackendResult<()> {
        self.take();
        Ok(())
    }

    async fn retry(mut self: Box<Self>, delay: Duration) -> BackendResult<()> {
        let mut envelope = self.take().envelope;
        envelope.attempt += 1;
        // Expiration bounds the first delivery; a retry is the host's own decision.
        envelope.expiration_ms = None;
        let shared = self.shared.clone();
        let queue = self.queue.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            shared.enqueue(&queue, envelope, false);
        });
        Ok(())
    }

    async fn dead_letter(mut self: Box<Self>, reason: &str) -> BackendResult<()> {
        let envelope = self.envelope().clone();
        if let Err(error) = self.shared.bury(&self.queue, envelope, reason) {
            // Unsettled, it goes back to its queue when dropped: after a pause, so that
            // a full dead-letter queue does not spin the consumer.
            tokio::time::sleep(DEAD_LETTER_REFUSED_PAUSE).await;
            return Err(error);
        }
        self.take();
        Ok(())
    }
}

impl Drop for MemoryDelivery {
    fn drop(&mut self) {
        if let Some(queued) = self.queued.take() {
            self.shared.enqueue(&self.queue, queued.envelope, true);
        }
    }
}
