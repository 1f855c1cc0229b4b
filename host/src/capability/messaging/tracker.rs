//! The seed's `MessageStatus`, tracked per message id for a bounded number of
//! messages (oldest forgotten first).

use super::MessageStatus;
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

struct Inner {
    status: HashMap<String, MessageStatus>,
    order: VecDeque<String>,
}

/// Status per message id.
pub struct MessageTracker {
    inner: Mutex<Inner>,
    capacity: usize,
}

impl MessageTracker {
    /// Remembers at most `capacity` messages.
    pub fn new(capacity: usize) -> Self {
        Self {
            inner: Mutex::new(Inner {
                status: HashMap::new(),
                order: VecDeque::new(),
            }),
            capacity,
        }
    }

    /// Records the status of `id`.
    pub fn set(&self, id: &str, status: MessageStatus) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if inner.status.insert(id.to_string(), status).is_none() {
            inner.order.push_back(id.to_string());
            while inner.order.len() > self.capacity {
                if let Some(old) = inner.order.pop_front() {
                    inner.status.remove(&old);
                }
            }
        }
    }

    /// Forgets `id` (its publish failed).
    pub fn forget(&self, id: &str) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if inner.status.remove(id).is_some() {
            inner.order.retain(|known| known != id);
        }
    }

    /// The status of `id`, if remembered.
    pub fn get(&self, id: &str) -> Option<MessageStatus> {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .status
            .get(id)
            .copied()
    }
}
