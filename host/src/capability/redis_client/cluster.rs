//! `[redis] mode = "cluster"`: redis-rs's async cluster connection, and a new one when
//! it stops answering.
//!
//! The cluster connection follows `MOVED`, refreshes its slot map and reconnects by
//! itself. Under a host's load, a primary killed mid-stream was seen (redis-rs 1.8,
//! Redis 7.0, the fault suite) to leave it answering nothing but timeouts long after
//! the replica took over, for the slots that primary held (commands to the other
//! primaries went on working). So when commands have gone on failing with timeouts
//! or lost connections for `stale` (twice the command timeout), the connection is
//! built again from the seed nodes, at most once per `stale`.
//!
//! redis-rs also sends a request again after its connection dropped, whatever the
//! request: an `INCRBY` or a transaction that ran, whose answer the drop lost, ran
//! twice. So commands that may not run twice ([`Retry::Never`]) go through a second
//! connection built with no retries of its own: a drop is the caller's `unavailable`,
//! and a `MOVED` or `ASK` comes back to [`super::RedisClient::run`], which sends the
//! command again (it did not run): after a `MOVED` the connection has refreshed its
//! slot map; after an `ASK` (a key of a slot being migrated, already moved) it goes
//! to the importing node after `ASKING` ([`super::connection::RedisConnection`]).

use super::Retry;
use super::subscription::ShardSubscriber;
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// The two cluster connections, rebuilt when they stay silent.
pub struct ClusterNodes {
    clients: Clients,
    current: RwLock<Connections>,
    /// Milliseconds since `epoch` of the first failure of the current run of
    /// failures (`u64::MAX`: none), and of the last rebuild.
    failing_since: AtomicU64,
    last_rebuild: AtomicU64,
    epoch: Instant,
    rebuilding: Arc<tokio::sync::Mutex<()>>,
    stale: Duration,
    connect_timeout: Duration,
    /// Sharded subscriptions' clients, when the cluster runs `SPUBLISH`.
    shard_subscriber: Option<ShardSubscriber>,
}

/// The cluster clients: one whose requests redis-rs sends again after a failure (for
/// commands that may run twice), one whose requests it never sends again.
#[derive(Clone)]
pub(super) struct Clients {
    pub replaying: ClusterClient,
    pub once: ClusterClient,
}

/// A connection of each client.
#[derive(Clone)]
pub(super) struct Connections {
    replaying: ClusterConnection,
    once: ClusterConnection,
}

impl Connections {
    /// The connection whose requests redis-rs sends again after a failure.
    pub(super) fn replaying(&self) -> ClusterConnection {
        self.replaying.clone()
    }
}

impl Clients {
    /// A connection of each, or the first error.
    pub(super) async fn connect(&self) -> redis::RedisResult<Connections> {
        let (replaying, once) = tokio::try_join!(
            self.replaying.get_async_connection(),
            self.once.get_async_connection()
        )?;
        Ok(Connections { replaying, once })
    }
}

impl ClusterNodes {
    pub(super) fn new(
        clients: Clients,
        connections: Connections,
        shard_subscriber: Option<ShardSubscriber>,
        command_timeout: Duration,
        connect_timeout: Duration,
    ) -> Self {
        Self {
            clients,
            current: RwLock::new(connections),
            failing_since: AtomicU64::new(u64::MAX),
            last_rebuild: AtomicU64::new(0),
            epoch: Instant::now(),
            rebuilding: Arc::default(),
            stale: command_timeout * 2,
            connect_timeout,
            shard_subscriber,
        }
    }

    /// Whether the cluster runs `SPUBLISH`.
    pub(super) fn shards_pubsub(&self) -> bool {
        self.shard_subscriber.is_some()
    }

    /// The clients of sharded subscriptions, when the cluster runs `SPUBLISH`.
    pub(super) fn shard_subscriber(&self) -> Option<ShardSubscriber> {
        self.shard_subscriber.clone()
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// The connection for one command that `retry` allows to run twice or not.
    pub(super) fn current(&self, retry: Retry) -> ClusterConnection {
        let current = self.current.read().unwrap_or_else(|e| e.into_inner());
        match retry {
            Retry::Idempotent => current.replaying.clone(),
            Retry::Never => current.once.clone(),
        }
    }

    /// A command succeeded on a connection built after the current run of failures
    /// began: the run is over. (A success on another primary does not end it: one
    /// primary's slots can stay silent while the others answer.)
    pub(super) fn succeeded(&self) {
        let since = self.failing_since.load(Ordering::Relaxed);
        if since != u64::MAX && self.last_rebuild.load(Ordering::Relaxed) > since {
            self.failing_since.store(u64::MAX, Ordering::Relaxed);
        }
    }

    /// A command failed with `error`: when timeouts or lost connections have gone on
    /// for `stale`, builds the connection again, in a task of its own (the failed
    /// command's own timeout would cancel it half-way otherwise).
    pub(super) fn after_failure(self: &Arc<Self>, error: &redis::RedisError) {
        let silent = error.is_timeout() || error.is_io_error() || error.is_connection_dropped();
        if !silent {
            return;
        }
        let now = self.now_ms();
        let _ = self.failing_since.compare_exchange(
            u64::MAX,
            now,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
        let stale = self.stale.as_millis() as u64;
        let quiet_for = |mark: &AtomicU64| now.saturating_sub(mark.load(Ordering::Relaxed));
        if quiet_for(&self.failing_since) < stale || quiet_for(&self.last_rebuild) < stale {
            return;
        }
        let Ok(only) = self.rebuilding.clone().try_lock_owned() else {
            return;
        };
        self.last_rebuild.store(now, Ordering::Relaxed);
        let failing_ms = quiet_for(&self.failing_since);
        let this = self.clone();
        tokio::spawn(async move {
            let _only = only;
            let built = tokio::time::timeout(this.connect_timeout, this.clients.connect()).await;
            match built {
                Ok(Ok(connections)) => {
                    tracing::warn!(
                        failing_ms,
                        "commands to the Redis Cluster went on failing; built new connections from the seed nodes"
                    );
                    *this.current.write().unwrap_or_else(|e| e.into_inner()) = connections;
                }
                Ok(Err(error)) => {
                    tracing::warn!(kind = ?error.kind(), "could not build a new Redis Cluster connection yet")
                }
                Err(_) => tracing::warn!(
                    "no seed node of the Redis Cluster answered within the connect timeout"
                ),
            }
        });
    }
}
