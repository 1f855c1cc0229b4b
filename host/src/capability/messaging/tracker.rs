//! The seed's `MessageStatus`, tracked per message and per queue for a bounded number
//! of messages (oldest forgotten first).
//!
//! A message published to a topic exchange may reach several queues (fan-out), each
//! with its own fate, so a status is kept per queue. Who may read it: the plugin that
//! published the message, and the plugins whose queues received it; nobody else. A
//! publish never overwrites what is known of an id (a guest chooses message ids, and
//! must not be able to reset another message's status).

use super::MessageStatus;
use super::shared_status::SharedStatuses;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex};

/// Most queues remembered for one message: a fan-out wider than this keeps the first.
const MAX_QUEUES_PER_MESSAGE: usize = 64;
/// Independent parts of the tracker, each behind its own lock: every delivery writes
/// twice, from every worker thread, and one lock was the most contended in a profile.
const SHARDS: usize = 16;

#[derive(Default)]
struct Entry {
    /// The plugin that published it; `None` for the operator or another producer.
    publisher: Option<String>,
    /// (queue, plugin consuming it, status in that queue); the names are shared with
    /// the consumer, not copied per message.
    queues: Vec<(Arc<str>, Arc<str>, MessageStatus)>,
}

impl Entry {
    /// One status over several queues: the most pressing one (a dead letter, then a
    /// failure, then work still under way), `completed` only when every queue is.
    fn summary<'a>(statuses: impl Iterator<Item = &'a MessageStatus>) -> MessageStatus {
        use MessageStatus::*;
        let rank = |s: &MessageStatus| match s {
            DeadLetter => 0,
            Failed => 1,
            Processing => 2,
            Retrying => 3,
            Pending => 4,
            Completed => 5,
        };
        statuses.copied().min_by_key(rank).unwrap_or(Pending)
    }
}

/// What is known of one message, across hosts when statuses are shared.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// The plugin that published it; `None` for the operator or unknown.
    pub publisher: Option<String>,
    /// (queue, plugin consuming it, status in that queue).
    pub queues: Vec<(String, String, MessageStatus)>,
}

impl Snapshot {
    /// The summary over every queue (pending until the message reached one).
    pub fn summary(&self) -> MessageStatus {
        Entry::summary(self.queues.iter().map(|(_, _, s)| s))
    }

    /// What `plugin` may know: the summary for its publisher, its own queues' for a
    /// receiver, nothing for anyone else (the rule of [`MessageTracker::status_for`]).
    pub fn status_for(&self, plugin: &str) -> Option<MessageStatus> {
        if self.publisher.as_deref() == Some(plugin) {
            return Some(self.summary());
        }
        let own: Vec<&MessageStatus> = self
            .queues
            .iter()
            .filter(|(_, p, _)| p == plugin)
            .map(|(_, _, s)| s)
            .collect();
        (!own.is_empty()).then(|| Entry::summary(own.into_iter()))
    }
}

struct Inner {
    entries: HashMap<String, Entry>,
    order: VecDeque<String>,
}

/// Status per message and queue.
pub struct MessageTracker {
    /// Where statuses are shared with other hosts, when Redis is configured.
    shared: std::sync::OnceLock<Arc<SharedStatuses>>,
    shards: Vec<Mutex<Inner>>,
    hasher: RandomState,
    /// Messages remembered per shard.
    capacity: usize,
}

impl MessageTracker {
    /// Remembers at most `capacity` messages.
    pub fn new(capacity: usize) -> Self {
        Self {
            shared: std::sync::OnceLock::new(),
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(Inner {
                        entries: HashMap::new(),
                        order: VecDeque::new(),
                    })
                })
                .collect(),
            hasher: RandomState::new(),
            capacity: capacity.div_ceil(SHARDS),
        }
    }

    /// Where statuses are shared, if they are.
    pub fn shared(&self) -> Option<&Arc<SharedStatuses>> {
        self.shared.get()
    }

    /// Shares every status this tracker records through `shared` (set once, at start).
    pub fn share_through(&self, shared: Arc<SharedStatuses>) {
        let _ = self.shared.set(shared);
    }

    /// What every host knows of `id`: the shared statuses merged with this host's own
    /// (fresher for the queues this host handles). Without Redis, this host's only.
    pub async fn lookup(&self, id: &str) -> Option<Snapshot> {
        let remote = match self.shared.get() {
            Some(shared) => shared.read(id).await,
            None => None,
        };
        let local = {
            let inner = self.lock(id);
            inner.entries.get(id).map(|entry| Snapshot {
                publisher: entry.publisher.clone(),
                queues: entry
                    .queues
                    .iter()
                    .map(|(q, p, s)| (q.to_string(), p.to_string(), *s))
                    .collect(),
            })
        };
        match (remote, local) {
            (None, local) => local,
            (Some(remote), local) => {
                let mut merged = Snapshot {
                    publisher: remote.publisher.filter(|p| !p.is_empty()),
                    queues: remote.queues,
                };
                if let Some(local) = local {
                    if merged.publisher.is_none() {
                        merged.publisher = local.publisher;
                    }
                    for (queue, plugin, status) in local.queues {
                        match merged.queues.iter_mut().find(|(q, _, _)| *q == queue) {
                            Some(known) => known.2 = status,
                            None => merged.queues.push((queue, plugin, status)),
                        }
                    }
                }
                Some(merged)
            }
        }
    }

    /// The shard of message `id`, locked.
    fn lock(&self, id: &str) -> std::sync::MutexGuard<'_, Inner> {
        let shard = self.hasher.hash_one(id) as usize % SHARDS;
        self.shards[shard].lock().unwrap_or_else(|e| e.into_inner())
    }

    fn entry<'a>(&self, inner: &'a mut Inner, id: &str) -> &'a mut Entry {
        if !inner.entries.contains_key(id) {
            inner.order.push_back(id.to_string());
            while inner.order.len() > self.capacity {
                if let Some(old) = inner.order.pop_front() {
                    inner.entries.remove(&old);
                }
            }
        }
        inner.entries.entry(id.to_string()).or_default()
    }

    /// Records that `publisher` (`None`: the operator) is publishing `id`, as pending.
    /// Returns `false`, changing nothing, when `id` is known already: a publish never
    /// overwrites another message's status nor takes over its ownership.
    pub fn published(&self, id: &str, publisher: Option<&str>) -> bool {
        let mut inner = self.lock(id);
        if inner.entries.contains_key(id) {
            return false;
        }
        self.entry(&mut inner, id).publisher = publisher.map(str::to_string);
        if let Some(shared) = self.shared.get() {
            shared.published(id, publisher);
        }
        true
    }

    /// Forgets `id` after its publish failed; only call it when [`Self::published`]
    /// answered `true` for that publish.
    pub fn forget(&self, id: &str) {
        let mut inner = self.lock(id);
        if inner.entries.remove(id).is_some() {
            inner.order.retain(|known| known != id);
            if let Some(shared) = self.shared.get() {
                shared.forget(id);
            }
        }
    }

    /// Records the status of `id` in `queue`, which `plugin` consumes.
    pub fn delivered(&self, id: &str, queue: &Arc<str>, plugin: &Arc<str>, status: MessageStatus) {
        let mut inner = self.lock(id);
        let entry = self.entry(&mut inner, id);
        if let Some(known) = entry.queues.iter_mut().find(|(q, _, _)| q == queue) {
            known.2 = status;
        } else if entry.queues.len() < MAX_QUEUES_PER_MESSAGE {
            entry.queues.push((queue.clone(), plugin.clone(), status));
        } else {
            return;
        }
        if let Some(shared) = self.shared.get() {
            shared.delivered(id, queue, plugin, status);
        }
    }

    /// What `plugin` may know of `id`: for its publisher, the summary over every queue
    /// the message reached (pending until one did); for a receiver, over its own
    /// queues; for anyone else, nothing.
    pub fn status_for(&self, id: &str, plugin: &str) -> Option<MessageStatus> {
        let inner = self.lock(id);
        let entry = inner.entries.get(id)?;
        if entry.publisher.as_deref() == Some(plugin) {
            return Some(Entry::summary(entry.queues.iter().map(|(_, _, s)| s)));
        }
        let own: Vec<&MessageStatus> = entry
            .queues
            .iter()
            .filter(|(_, p, _)| &**p == plugin)
            .map(|(_, _, s)| s)
            .collect();
        (!own.is_empty()).then(|| Entry::summary(own.into_iter()))
    }

    /// The operator's view of `id`: the summary over every queue.
    pub fn get(&self, id: &str) -> Option<MessageStatus> {
        let inner = self.lock(id);
        let entry = inner.entries.get(id)?;
        Some(Entry::summary(entry.queues.iter().map(|(_, _, s)| s)))
    }

    /// The status of `id` in `queue`, if known.
    pub fn in_queue(&self, id: &str, queue: &str) -> Option<MessageStatus> {
        let inner = self.lock(id);
        let entry = inner.entries.get(id)?;
        entry
            .queues
            .iter()
            .find(|(q, _, _)| &**q == queue)
            .map(|(_, _, s)| *s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use MessageStatus::*;

    #[test]
    fn only_the_publisher_and_receivers_see_a_status() {
        let tracker = MessageTracker::new(10);
        assert!(tracker.published("m", Some("a")));
        assert_eq!(tracker.status_for("m", "a"), Some(Pending));
        assert_eq!(tracker.status_for("m", "b"), None);
        tracker.delivered("m", &"q.b".into(), &"b".into(), Processing);
        assert_eq!(tracker.status_for("m", "b"), Some(Processing));
        assert_eq!(tracker.status_for("m", "c"), None);
    }

    #[test]
    fn a_publish_cannot_overwrite_or_take_over_a_known_id() {
        let tracker = MessageTracker::new(10);
        assert!(tracker.published("m", Some("a")));
        tracker.delivered("m", &"q.b".into(), &"b".into(), Completed);
        assert!(!tracker.published("m", Some("evil")), "the id is known");
        assert_eq!(tracker.get("m"), Some(Completed), "not reset to pending");
        assert_eq!(tracker.status_for("m", "evil"), None, "no ownership taken");
    }

    #[test]
    fn fan_out_keeps_a_status_per_queue() {
        let tracker = MessageTracker::new(10);
        tracker.published("m", Some("a"));
        tracker.delivered("m", &"q.b".into(), &"b".into(), Completed);
        tracker.delivered("m", &"q.c".into(), &"c".into(), DeadLetter);
        assert_eq!(tracker.status_for("m", "b"), Some(Completed));
        assert_eq!(tracker.status_for("m", "c"), Some(DeadLetter));
        assert_eq!(
            tracker.status_for("m", "a"),
            Some(DeadLetter),
            "the publisher sees the worst"
        );
        assert_eq!(tracker.in_queue("m", "q.b"), Some(Completed));
    }

    #[test]
    fn the_oldest_messages_are_forgotten_first() {
        let tracker = MessageTracker::new(2 * SHARDS);
        let ids: Vec<String> = (0..100).map(|i| i.to_string()).collect();
        for id in &ids {
            tracker.published(id, None);
        }
        let remembered = ids.iter().filter(|id| tracker.get(id).is_some()).count();
        assert!(remembered <= 2 * SHARDS, "bounded: {remembered}");
        assert_eq!(tracker.get("99"), Some(Pending), "the newest is remembered");
    }
}
