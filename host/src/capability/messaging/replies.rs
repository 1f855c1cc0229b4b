//! Request-reply: this host's reply queue and the requests waiting on it.
//!
//! Each host owns one reply queue, `<queue_prefix>reply:<uuid>` (no plugin queue can
//! have that name: queue types have no `:`), exclusive to it and gone with it. A
//! request registers a fresh correlation id (a random UUID, never reused) before it
//! is published; the reply carrying that id completes the wait, and only that one.
//! A reply whose request is no longer waiting (timed out, or its invocation ended) is
//! dropped and counted: it can never reach another caller.

use super::{Broker, Envelope};
use crate::capability::BackendResult;
use crate::metrics::Metrics;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::oneshot;

/// This host's reply queue and its waiting requests.
pub struct Replies {
    /// The reply queue's name: the `reply-to` of this host's requests.
    address: String,
    /// What every host's reply queue starts with.
    family: String,
    waiting: Mutex<HashMap<String, oneshot::Sender<Envelope>>>,
    late: AtomicU64,
    metrics: Arc<Metrics>,
}

impl Replies {
    /// Opens this host's reply queue on `broker` and starts matching what arrives.
    pub async fn open(
        broker: &dyn Broker,
        queue_prefix: &str,
        metrics: Arc<Metrics>,
    ) -> BackendResult<Arc<Self>> {
        let family = format!("{queue_prefix}reply:");
        let address = format!("{family}{}", uuid::Uuid::new_v4().simple());
        let mut inbox = broker.open_replies(&address).await?;
        let replies = Arc::new(Self {
            address,
            family,
            waiting: Mutex::default(),
            late: AtomicU64::new(0),
            metrics,
        });
        let matcher: Weak<Self> = Arc::downgrade(&replies);
        tokio::spawn(async move {
            while let Some(reply) = inbox.recv().await {
                let Some(replies) = matcher.upgrade() else {
                    break;
                };
                replies.arrived(reply);
            }
        });
        Ok(replies)
    }

    /// The `reply-to` of this host's requests.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Whether `reply_to` names a host's reply queue (this one's or another host's of
    /// the deployment), rather than a routing key.
    pub fn is_reply_queue(&self, reply_to: &str) -> bool {
        reply_to.starts_with(&self.family)
    }

    /// Replies dropped because their request was no longer waiting.
    pub fn late(&self) -> u64 {
        self.late.load(Ordering::Relaxed)
    }

    /// Registers a request under a fresh correlation id; its reply, once it arrives.
    /// Dropping the [`Awaited`] (a timeout, an invocation cancelled) forgets it.
    pub fn expect(self: &Arc<Self>) -> Awaited {
        let correlation_id = uuid::Uuid::new_v4().to_string();
        let (sender, receiver) = oneshot::channel();
        self.lock().insert(correlation_id.clone(), sender);
        Awaited {
            replies: self.clone(),
            correlation_id,
            receiver,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, oneshot::Sender<Envelope>>> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn arrived(&self, reply: Envelope) {
        let waiter = reply
            .correlation_id
            .as_deref()
            .and_then(|id| self.lock().remove(id));
        let delivered = waiter.is_some_and(|waiter| waiter.send(reply).is_ok());
        if !delivered {
            self.late.fetch_add(1, Ordering::Relaxed);
            self.metrics.late_reply();
            tracing::debug!(
                "a reply arrived for no waiting request (it timed out, or ended): dropped"
            );
        }
    }
}

/// A request waiting for its reply.
pub struct Awaited {
    replies: Arc<Replies>,
    correlation_id: String,
    receiver: oneshot::Receiver<Envelope>,
}

impl Awaited {
    /// The request's correlation id.
    pub fn correlation_id(&self) -> &str {
        &self.correlation_id
    }

    /// The reply, or `None` when none came within `timeout`.
    pub async fn reply(mut self, timeout: Duration) -> Option<Envelope> {
        tokio::time::timeout(timeout, &mut self.receiver)
            .await
            .ok()?
            .ok()
    }
}

impl Drop for Awaited {
    fn drop(&mut self) {
        self.replies.lock().remove(&self.correlation_id);
    }
}
