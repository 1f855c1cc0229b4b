//! Message statuses shared by every host through Redis, so that a host reports the
//! status of a message another host published or handled.
//!
//! Each host keeps its own [`MessageTracker`](super::MessageTracker) (the fast path,
//! and the whole story without Redis) and writes what it records behind itself: a
//! flusher sends the updates every `FLUSH_INTERVAL` in one pipeline to
//! `<prefix>msg-status:<id>` hashes (`publisher`, set once; `q:<queue>` =
//! `<status>|<plugin>`), which expire after `messaging.status_ttl_ms`. A lookup
//! merges that hash with what this host knows (its own, fresher, wins per queue).

use super::MessageStatus;
use crate::capability::redis_client::{RedisClient, Retry};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How often recorded statuses reach Redis.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(50);

/// A status as stored.
pub fn status_text(status: MessageStatus) -> &'static str {
    match status {
        MessageStatus::Pending => "pending",
        MessageStatus::Processing => "processing",
        MessageStatus::Completed => "completed",
        MessageStatus::Failed => "failed",
        MessageStatus::Retrying => "retrying",
        MessageStatus::DeadLetter => "dead_letter",
    }
}

fn parse_status(text: &str) -> Option<MessageStatus> {
    Some(match text {
        "pending" => MessageStatus::Pending,
        "processing" => MessageStatus::Processing,
        "completed" => MessageStatus::Completed,
        "failed" => MessageStatus::Failed,
        "retrying" => MessageStatus::Retrying,
        "dead_letter" => MessageStatus::DeadLetter,
        _ => return None,
    })
}

/// One recorded change, waiting for the next flush.
enum Update {
    Published {
        id: String,
        publisher: String,
    },
    Forget {
        id: String,
    },
    Delivered {
        id: String,
        queue: Arc<str>,
        plugin: Arc<str>,
        status: MessageStatus,
    },
}

/// What Redis knows of a message.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Stored {
    /// Its publisher: `Some("")` for the operator; `None` when no host recorded one.
    pub publisher: Option<String>,
    /// (queue, plugin, status) per queue it reached.
    pub queues: Vec<(String, String, MessageStatus)>,
}

/// The Redis side of the statuses.
pub struct SharedStatuses {
    redis: RedisClient,
    prefix: String,
    ttl: Duration,
    pending: Mutex<Vec<Update>>,
}

impl SharedStatuses {
    /// Statuses under `<key_prefix>msg-status:`, kept `ttl` after their last change.
    pub fn new(redis: RedisClient, key_prefix: &str, ttl: Duration) -> Self {
        Self {
            redis,
            prefix: format!("{key_prefix}msg-status:"),
            ttl,
            pending: Mutex::default(),
        }
    }

    fn push(&self, update: Update) {
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(update);
    }

    pub(super) fn published(&self, id: &str, publisher: Option<&str>) {
        self.push(Update::Published {
            id: id.to_string(),
            publisher: publisher.unwrap_or_default().to_string(),
        });
    }

    pub(super) fn forget(&self, id: &str) {
        self.push(Update::Forget { id: id.to_string() });
    }

    pub(super) fn delivered(
        &self,
        id: &str,
        queue: &Arc<str>,
        plugin: &Arc<str>,
        status: MessageStatus,
    ) {
        self.push(Update::Delivered {
            id: id.to_string(),
            queue: queue.clone(),
            plugin: plugin.clone(),
            status,
        });
    }

    /// Sends the recorded updates in one pipeline; on failure they are dropped (logged):
    /// statuses are advisory, and this host still answers from its own tracker.
    pub async fn flush(&self) {
        let updates = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()));
        if updates.is_empty() {
            return;
        }
        let ttl_ms = self.ttl.as_millis() as u64;
        let mut commands = Vec::new();
        for update in &updates {
            match update {
                Update::Published { id, publisher } => {
                    let key = format!("{}{id}", self.prefix);
                    commands.push(
                        redis::cmd("HSETNX")
                            .arg(&key)
                            .arg("publisher")
                            .arg(publisher)
                            .clone(),
                    );
                    commands.push(redis::cmd("PEXPIRE").arg(&key).arg(ttl_ms).clone());
                }
                Update::Forget { id } => {
                    commands.push(
                        redis::cmd("DEL")
                            .arg(format!("{}{id}", self.prefix))
                            .clone(),
                    );
                }
                Update::Delivered {
                    id,
                    queue,
                    plugin,
                    status,
                } => {
                    let key = format!("{}{id}", self.prefix);
                    let value = format!("{}|{plugin}", status_text(*status));
                    commands.push(
                        redis::cmd("HSET")
                            .arg(&key)
                            .arg(format!("q:{queue}"))
                            .arg(value)
                            .clone(),
                    );
                    commands.push(redis::cmd("PEXPIRE").arg(&key).arg(ttl_ms).clone());
                }
            }
        }
        // A pipeline per slot on a cluster keeps each key's updates in order.
        let sent = self
            .redis
            .pipeline("msg-status-flush", Retry::Idempotent, &commands)
            .await;
        if let Err(error) = sent {
            tracing::warn!(%error, dropped = updates.len(), "could not share message statuses through Redis");
        }
    }

    /// What Redis knows of `id` (`None`: nothing, or Redis did not answer).
    pub async fn read(&self, id: &str) -> Option<Stored> {
        let key = format!("{}{id}", self.prefix);
        let fields: HashMap<String, String> = self
            .redis
            .run("msg-status-read", Retry::Idempotent, |mut c| {
                let key = key.clone();
                async move { redis::cmd("HGETALL").arg(&key).query_async(&mut c).await }
            })
            .await
            .map_err(|error| tracing::debug!(%error, "could not read a shared message status"))
            .ok()?;
        if fields.is_empty() {
            return None;
        }
        let mut stored = Stored::default();
        for (field, value) in fields {
            if field == "publisher" {
                stored.publisher = Some(value);
            } else if let Some(queue) = field.strip_prefix("q:")
                && let Some((status, plugin)) = value.split_once('|')
                && let Some(status) = parse_status(status)
            {
                stored
                    .queues
                    .push((queue.to_string(), plugin.to_string(), status));
            }
        }
        stored.queues.sort_by(|a, b| a.0.cmp(&b.0));
        Some(stored)
    }

    /// Flushes every [`FLUSH_INTERVAL`] until `stopping` is cancelled, then once more.
    pub fn spawn_flusher(
        self: &Arc<Self>,
        stopping: tokio_util::sync::CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let statuses = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(FLUSH_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                // Cancelled: one last flush, then end (never aborted mid-flush).
                let last = tokio::select! {
                    _ = tick.tick() => false,
                    () = stopping.cancelled() => true,
                };
                let Some(statuses) = statuses.upgrade() else {
                    return;
                };
                statuses.flush().await;
                if last {
                    return;
                }
            }
        })
    }
}
