//! The embedded broker: AMQP topic routing, priority queues, prefetch windows, delayed
//! and retried deliveries, and a bounded dead-letter queue, all in process.
//!
//! Semantics follow the RabbitMQ backend: higher priority first and FIFO within a
//! priority; an expired message is dead-lettered when it reaches the head; a delivery
//! dropped unsettled is requeued as redelivered. A queue's TTL counts from when a
//! message entered it; at its length bound it refuses a publish or dead-letters its
//! head (`overflow`), as RabbitMQ's `reject-publish` and `drop-head` do.

use super::{
    Broker, Buried, Consumer, DeadLetter, DeadLetterAction, DeadLetterPicker, Delivery, Envelope,
    Overflow, QueueLimits, QueueSpec, ReplayTo, ReplyInbox, Reworked,
};
use crate::capability::{BackendError, BackendResult};
use crate::config::DeadLetterConfig;
use crate::names::routing::TopicPattern;
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
    /// When it entered the queue (the queue's TTL counts from here).
    enqueued_at: Instant,
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
    limits: QueueLimits,
}

impl Queue {
    fn expired(&self, queued: &Queued) -> bool {
        let per_message = queued.envelope.expiration_ms.is_some_and(|ttl| {
            super::now_ms() >= queued.envelope.published_at_ms.saturating_add(ttl)
        });
        let per_queue = self
            .limits
            .message_ttl_ms
            .is_some_and(|ttl| queued.enqueued_at.elapsed() >= Duration::from_millis(ttl));
        per_message || per_queue
    }

    fn full(&self) -> bool {
        self.limits
            .max_length
            .is_some_and(|max| self.messages.len() >= max as usize)
    }
}

/// The queues that refused a publish (full, with `reject-publish`).
struct Refused(Vec<String>);

/// How a message enters a queue.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Entering {
    /// Published (or replayed) through the exchange.
    Published,
    /// A retry coming back after its delay.
    Retried,
    /// A delivery dropped unsettled.
    Requeued,
}

struct DeadEntry {
    letter: DeadLetter,
    at: Instant,
}

#[derive(Default)]
struct State {
    queues: HashMap<String, Queue>,
    /// Reply queues: name → where their messages go.
    replies: HashMap<String, tokio::sync::mpsc::Sender<Envelope>>,
    dead: VecDeque<DeadEntry>,
    seq: u64,
}

struct Shared {
    state: Mutex<State>,
    /// Changes with `host.toml` (see [`Broker::set_dead_letter_limits`]).
    dead_letter: Mutex<DeadLetterConfig>,
    dead_letters_refused: AtomicU64,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn dead_letter_limits(&self) -> DeadLetterConfig {
        *self.dead_letter.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Puts `envelope` back in `queue`: a delivery dropped unsettled, which goes back
    /// whatever the queue's bound (as RabbitMQ's requeue).
    fn requeue(&self, queue: &str, envelope: Envelope) {
        let _ = self.put(queue, envelope, Entering::Requeued);
    }

    /// Puts `envelope` in `queue`. Into a full queue, a new message is refused and
    /// dead-lettered (`reject-publish`, as RabbitMQ's `reject-publish-dlx`: a retry
    /// coming back to a full queue is parked, not lost) or makes room by
    /// dead-lettering the head (`drop-head`); both with reason `maxlen`.
    fn put(&self, queue: &str, envelope: Envelope, entering: Entering) -> Result<(), ()> {
        let mut state = self.lock();
        state.seq += 1;
        let seq = state.seq;
        let Some(q) = state.queues.get_mut(queue) else {
            return Ok(());
        };
        let mut dropped = None;
        if entering != Entering::Requeued && q.full() {
            match q.limits.overflow {
                Overflow::RejectPublish => {
                    drop(state);
                    let _ = self.bury(queue, envelope, "maxlen");
                    return Err(());
                }
                Overflow::DropHead => dropped = q.messages.pop(),
            }
        }
        let redelivered = entering == Entering::Requeued;
        q.messages.push(Queued {
            priority: envelope.priority,
            seq,
            envelope,
            redelivered,
            enqueued_at: Instant::now(),
        });
        q.notify.notify_one();
        drop(state);
        if let Some(head) = dropped {
            // RabbitMQ drops a head the full dead-letter queue refuses: so do we.
            let _ = self.bury(queue, head.envelope, "maxlen");
        }
        Ok(())
    }

    /// Routes `envelope` to every bound queue; the queues that refused it (full, with
    /// `reject-publish`), whose refusal fails the publish as RabbitMQ's nack does
    /// (the queues that took it keep it).
    /// Puts `envelope` in every queue bound to its key; how many those were.
    fn route(&self, envelope: Envelope) -> Result<usize, Refused> {
        let targets: Vec<String> = self
            .lock()
            .queues
            .iter()
            .filter(|(_, q)| q.bindings.iter().any(|b| b.matches(&envelope.routing_key)))
            .map(|(name, _)| name.clone())
            .collect();
        let mut refused = Vec::new();
        let count = targets.len();
        for queue in targets {
            if self
                .put(&queue, envelope.clone(), Entering::Published)
                .is_err()
            {
                refused.push(queue);
            }
        }
        match refused.is_empty() {
            true => Ok(count),
            false => Err(Refused(refused)),
        }
    }

    /// Drops the dead letters older than `dead_letter.ttl_ms`, as RabbitMQ's message
    /// TTL on the dead-letter queue does.
    fn expire_dead(&self, state: &mut State) {
        let ttl = Duration::from_millis(self.dead_letter_limits().ttl_ms);
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
    /// of a message, so none is dropped to make room. A refused envelope is handed back.
    #[must_use = "a refused envelope is the message's last copy"]
    fn bury(&self, queue: &str, envelope: Envelope, reason: &str) -> Option<Envelope> {
        let limits = self.dead_letter_limits();
        let mut state = self.lock();
        self.expire_dead(&mut state);
        if state.dead.len() >= limits.max_length as usize {
            drop(state);
            let refused = self
                .dead_letters_refused
                .fetch_add(1, AtomicOrdering::Relaxed)
                + 1;
            tracing::error!(%queue, id = %envelope.id, refused, max_length = limits.max_length, "the dead-letter queue is full and refused a dead letter");
            return Some(envelope);
        }
        let letter = DeadLetter {
            envelope,
            queue: queue.to_string(),
            reason: reason.to_string(),
            died_at_ms: super::now_ms(),
            // In process: only the host writes here.
            trusted: true,
        };
        state.dead.push_back(DeadEntry {
            letter,
            at: Instant::now(),
        });
        None
    }

    /// Pops the next live message of `queue`, dead-lettering expired ones on the way.
    fn pop(&self, queue: &str) -> Option<Queued> {
        loop {
            let (next, expired) = {
                let mut state = self.lock();
                let q = state.queues.get_mut(queue)?;
                let next = q.messages.pop()?;
                let expired = q.expired(&next);
                (next, expired)
            };
            if !expired {
                return Some(next);
            }
            // An expired message the full dead-letter queue refuses is dropped, as
            // RabbitMQ drops it: nobody holds it to give back.
            let _ = self.bury(queue, next.envelope, "expired");
        }
    }
}

/// Most replies waiting to be matched to their requests.
const REPLY_BACKLOG: usize = 1024;

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
                dead_letter: Mutex::new(dead_letter),
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
                    // As on RabbitMQ, a delayed message a full queue refuses is gone:
                    // its publisher was answered when it entered the delay.
                    if let Err(Refused(queues)) = shared.route(envelope) {
                        tracing::warn!(
                            ?queues,
                            "a delayed message reached full queues, which refused it"
                        );
                    }
                });
                Ok(())
            }
            _ => self.publish_routed(envelope).await.map(|_| ()),
        }
    }

    async fn publish_routed(&self, mut envelope: Envelope) -> BackendResult<bool> {
        envelope.attempt = 1;
        self.shared
            .route(envelope)
            .map(|queues| queues > 0)
            .map_err(|Refused(queues)| {
                BackendError::Unavailable(format!(
                    "the broker refused the message: queue {} is full (max_length)",
                    queues.join(", ")
                ))
            })
    }

    async fn declare_queue(&self, spec: &QueueSpec) -> BackendResult<()> {
        let bindings = spec
            .bindings
            .iter()
            .map(|b| TopicPattern::parse(b).map_err(BackendError::InvalidArgument))
            .collect::<BackendResult<Vec<_>>>()?;
        let mut state = self.shared.lock();
        let queue = state.queues.entry(spec.name.clone()).or_default();
        queue.limits = spec.limits;
        for binding in bindings {
            if !queue.bindings.contains(&binding) {
                queue.bindings.push(binding);
            }
        }
        Ok(())
    }

    async fn set_dead_letter_limits(&self, limits: DeadLetterConfig) -> BackendResult<()> {
        *self
            .shared
            .dead_letter
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = limits;
        Ok(())
    }

    async fn open_replies(&self, name: &str) -> BackendResult<ReplyInbox> {
        let (sender, inbox) = tokio::sync::mpsc::channel(REPLY_BACKLOG);
        self.shared.lock().replies.insert(name.to_string(), sender);
        Ok(inbox)
    }

    async fn reply(&self, to: &str, envelope: Envelope) -> BackendResult<()> {
        let sender = self.shared.lock().replies.get(to).cloned();
        // A reply to a queue that is gone (its host stopped), or past a backlog nobody
        // reads, is dropped, as one to a deleted queue is on RabbitMQ.
        if let Some(sender) = sender
            && let Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) =
                sender.try_send(envelope)
        {
            self.shared.lock().replies.remove(to);
        }
        Ok(())
    }

    async fn delete_queue(&self, queue: &str) -> BackendResult<()> {
        self.shared.lock().queues.remove(queue);
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
                            match shared.put(&letter.queue, envelope, Entering::Published) {
                                Ok(()) => done.replayed.push((id, Some(letter.queue.clone()))),
                                Err(()) => {
                                    done.errors.push(format!(
                                        "{id}: queue {} is full; the letter stays",
                                        letter.queue
                                    ));
                                    kept.push_back(entry);
                                }
                            }
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
                            match shared.route(envelope) {
                                Ok(_) => done.replayed.push((id, None)),
                                Err(Refused(queues)) => {
                                    done.errors.push(format!(
                                        "{id}: queue {} is full; the letter stays",
                                        queues.join(", ")
                                    ));
                                    kept.push_back(entry);
                                }
                            }
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
            let _ = shared.put(&queue, envelope, Entering::Retried);
        });
        Ok(())
    }

    async fn dead_letter(mut self: Box<Self>, reason: &str) -> BackendResult<Buried> {
        let mut envelope = self.take().envelope;
        // A dead letter is parked no more: its reason travels as the death reason.
        envelope.parked = None;
        match self.shared.bury(&self.queue, envelope, reason) {
            None => Ok(Buried::DeadLettered),
            Some(mut envelope) => {
                // Full: wait as a retry does, at the attempt it died at, marked to be
                // dead-lettered again on return.
                envelope.parked = Some(reason.to_string());
                let when_full =
                    Duration::from_millis(self.shared.dead_letter_limits().retry_when_full_ms);
                let shared = self.shared.clone();
                let queue = self.queue.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(when_full).await;
                    let _ = shared.put(&queue, envelope, Entering::Retried);
                });
                Ok(Buried::Parked)
            }
        }
    }
}

impl Drop for MemoryDelivery {
    fn drop(&mut self) {
        if let Some(queued) = self.queued.take() {
            self.shared.requeue(&self.queue, queued.envelope);
        }
    }
}
