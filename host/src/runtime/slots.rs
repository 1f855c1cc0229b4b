//! Instance slots handed out by priority.
//!
//! The pool has `host.max_instances` slots. When the plugins' prefetch windows together
//! ask for more, invocations wait; a freed slot goes to the waiter of the highest
//! priority (the `[queues.<type>].priority` of its queue: payment before analytics),
//! and among equals to the one that waited longest.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

/// The slots of the instance pool.
pub struct Slots {
    inner: Arc<Mutex<Inner>>,
    total: usize,
    /// Told each time an invocation starts waiting: holders of idle instances give
    /// their slots back.
    wanted: tokio::sync::Notify,
}

struct Inner {
    free: usize,
    waiters: BinaryHeap<Waiter>,
    seq: u64,
}

struct Waiter {
    priority: u8,
    seq: u64,
    wake: oneshot::Sender<Slot>,
}

impl PartialEq for Waiter {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Waiter {}
impl PartialOrd for Waiter {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Waiter {
    fn cmp(&self, other: &Self) -> Ordering {
        // Max-heap: higher priority first, then the older waiter.
        self.priority
            .cmp(&other.priority)
            .then_with(|| other.seq.cmp(&self.seq))
    }
}

/// One held slot; dropping it hands the slot to the next waiter.
pub struct Slot {
    inner: Option<Arc<Mutex<Inner>>>,
}

impl Slots {
    /// A pool of `count` slots.
    pub fn new(count: usize) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Inner {
                free: count,
                waiters: BinaryHeap::new(),
                seq: 0,
            })),
            total: count,
            wanted: tokio::sync::Notify::new(),
        }
    }

    /// A slot, waiting behind higher priorities (and older waiters of the same one)
    /// while none is free. Cancel-safe: a waiter dropped after being handed a slot
    /// drops the slot, which passes it on.
    pub async fn acquire(&self, priority: u8) -> Slot {
        let receiver = {
            let mut inner = lock(&self.inner);
            if inner.free > 0 && inner.waiters.is_empty() {
                inner.free -= 1;
                return Slot {
                    inner: Some(self.inner.clone()),
                };
            }
            let (wake, receiver) = oneshot::channel();
            inner.seq += 1;
            let seq = inner.seq;
            inner.waiters.push(Waiter {
                priority,
                seq,
                wake,
            });
            receiver
        };
        self.wanted.notify_waiters();
        // The sender lives in the heap until a slot is handed over, and the heap lives
        // as long as `self`: the receiver cannot see a closed channel.
        receiver
            .await
            .unwrap_or_else(|_| unreachable!("a waiter's sender is dropped only after sending"))
    }

    /// Whether an invocation is waiting for a slot now (so that no one keeps an idle
    /// instance while another needs its slot).
    pub fn wanted(&self) -> bool {
        !lock(&self.inner).waiters.is_empty()
    }

    /// Returns once an invocation starts waiting for a slot.
    pub async fn until_wanted(&self) {
        self.wanted.notified().await
    }

    /// Slots free right now (for tests and metrics).
    pub fn free(&self) -> usize {
        lock(&self.inner).free
    }

    /// The pool's slots, and how many are free right now.
    pub fn counts(&self) -> (usize, usize) {
        (self.total, self.free())
    }
}

fn lock(inner: &Mutex<Inner>) -> std::sync::MutexGuard<'_, Inner> {
    inner.lock().unwrap_or_else(|e| e.into_inner())
}

impl Drop for Slot {
    fn drop(&mut self) {
        let Some(shared) = self.inner.take() else {
            return;
        };
        let mut inner = lock(&shared);
        // Hand the slot to the best waiter still waiting; a waiter that gave up has
        // dropped its receiver, and `send` gives the slot back to try the next.
        while let Some(waiter) = inner.waiters.pop() {
            let slot = Slot {
                inner: Some(shared.clone()),
            };
            match waiter.wake.send(slot) {
                Ok(()) => return,
                Err(mut returned) => {
                    // Not dropped normally: that would re-enter this lock.
                    returned.inner = None;
                }
            }
        }
        inner.free += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_freed_slot_goes_to_the_highest_priority_then_the_oldest() {
        let slots = Arc::new(Slots::new(1));
        let held = slots.acquire(5).await;
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for (name, priority) in [
            ("analytics-1", 5),
            ("analytics-2", 5),
            ("payment", 10),
            ("bulk", 1),
        ] {
            let (slots, order) = (slots.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let _slot = slots.acquire(priority).await;
                order.lock().unwrap().push(name);
            }));
            // Queue them in this order.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        drop(held);
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(
            *order.lock().unwrap(),
            ["payment", "analytics-1", "analytics-2", "bulk"]
        );
        assert_eq!(slots.free(), 1);
    }

    #[tokio::test]
    async fn holders_are_told_when_an_invocation_starts_waiting() {
        let slots = Arc::new(Slots::new(1));
        let held = slots.acquire(5).await;
        assert!(!slots.wanted());
        let told = tokio::spawn({
            let slots = slots.clone();
            async move { slots.until_wanted().await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        let waiter = tokio::spawn({
            let slots = slots.clone();
            async move { drop(slots.acquire(5).await) }
        });
        tokio::time::timeout(Duration::from_secs(5), told)
            .await
            .expect("told of the waiter")
            .unwrap();
        assert!(slots.wanted());
        drop(held);
        waiter.await.unwrap();
        assert!(!slots.wanted());
    }

    #[tokio::test]
    async fn a_waiter_that_gives_up_does_not_keep_the_slot() {
        let slots = Slots::new(1);
        let held = slots.acquire(5).await;
        let gave_up = tokio::time::timeout(Duration::from_millis(10), slots.acquire(10)).await;
        assert!(gave_up.is_err());
        drop(held);
        assert_eq!(
            slots.free(),
            1,
            "the slot came back, not to the dropped waiter"
        );
        let _again = slots.acquire(1).await;
        assert_eq!(slots.free(), 0);
    }
}
