//! One connection type over the three `[redis] mode`s, so that every backend runs the
//! same commands and scripts whatever Redis it is on:
//! - `single`: a `ConnectionManager` (multiplexed, reconnecting);
//! - `cluster`: redis-rs's async cluster connections, which route each command by the
//!   hash slot of its first key and follow `MOVED`/`ASK` and failovers by themselves
//!   (one of them only for commands that may run twice: [`super::cluster`]);
//! - `sentinel`: a `ConnectionManager` to the primary the sentinels name, replaced
//!   when they name another ([`super::sentinel::FollowPrimary`]).

use super::Retry;
use super::cluster::ClusterNodes;
use super::sentinel::FollowPrimary;
use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::SingleNodeRoutingInfo;
use redis::{Cmd, ErrorKind, Pipeline, RedisFuture, Value};
use std::sync::Arc;

/// A connection handed to one command (cloned per call: all variants multiplex).
#[derive(Clone)]
pub enum RedisConnection {
    /// One server.
    Single(ConnectionManager),
    /// A Redis Cluster.
    Cluster(ClusterConnection),
    /// A Redis Cluster node importing a slot that is being migrated, which answered
    /// `ASK` for a key already moved there: each command or pipeline goes to that
    /// node after `ASKING`, in one write, so that no other request on the shared
    /// connection comes between them (and takes the node's one-command permission).
    Asking {
        /// The cluster connection, which holds a connection to every primary.
        cluster: ClusterConnection,
        /// The importing node.
        node: SingleNodeRoutingInfo,
    },
}

impl RedisConnection {
    /// This connection asking `address` (`host:port`, from an `ASK` error) instead;
    /// itself unchanged when it is not to a cluster or the address does not parse.
    pub(super) fn asking(self, address: &str) -> Self {
        let node = address.rsplit_once(':').and_then(|(host, port)| {
            Some(SingleNodeRoutingInfo::ByAddress {
                host: host.to_string(),
                port: port.parse().ok()?,
            })
        });
        match (self, node) {
            (Self::Cluster(cluster) | Self::Asking { cluster, .. }, Some(node)) => {
                Self::Asking { cluster, node }
            }
            (connection, _) => connection,
        }
    }
}

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
            Self::Asking { cluster, node } => {
                let mut asking = redis::pipe();
                asking.cmd("ASKING").add_command(cmd.clone());
                let node = node.clone();
                Box::pin(async move {
                    let mut answers = cluster.route_pipeline(asking, 1, 1, node).await?;
                    match answers.pop() {
                        Some(answer) => answer.extract_error(),
                        None => Err((ErrorKind::Parse, "no answer after ASKING").into()),
                    }
                })
            }
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Asking { cluster, node } => {
                // `ASKING` first, outside the transaction: inside one, it would be
                // queued until `EXEC`. The node keeps the permission until `EXEC`.
                let mut asking = redis::pipe();
                asking.cmd("ASKING");
                if pipeline.is_transaction() {
                    asking.cmd("MULTI");
                }
                for cmd in pipeline.cmd_iter() {
                    asking.add_command(cmd.clone());
                }
                if pipeline.is_transaction() {
                    asking.cmd("EXEC");
                }
                Box::pin(cluster.route_pipeline(asking, offset + 1, count, node.clone()))
            }
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) | Self::Asking { cluster: c, .. } => c.get_db(),
        }
    }
}

/// Answers that say the command did not run, so that sending it again is safe whatever
/// it is: a failover in progress, or a slot that moved or is moving.
const REFUSED_BEFORE_RUNNING: [&str; 7] = [
    "READONLY",
    "MASTERDOWN",
    "LOADING",
    "CLUSTERDOWN",
    "TRYAGAIN",
    "MOVED",
    "ASK",
];

/// Whether `error` refused the command before it ran ([`REFUSED_BEFORE_RUNNING`]);
/// then `Some`, holding the node to ask next (`host:port`) after an `ASK`. A
/// transaction aborted at `EXEC` counts when every command it queued was refused so
/// (an `ASK` for a key already moved refuses the command at queueing): redis-rs
/// gives one server error for a command, and the queued commands' for a transaction.
pub(super) fn refused_before_running(error: &redis::RedisError) -> Option<Option<String>> {
    let refusals = error.clone().into_server_errors()?;
    let mut ask = None;
    for (_, refusal) in refusals.iter() {
        if !REFUSED_BEFORE_RUNNING.contains(&refusal.code()) {
            return None;
        }
        if refusal.code() == "ASK" && ask.is_none() {
            // `ASK <slot> <host:port>`: the details are the slot and the node.
            ask = refusal
                .details()
                .and_then(|details| details.split_ascii_whitespace().nth(1))
                .map(String::from);
        }
    }
    (!refusals.is_empty()).then_some(ask)
}

/// Where connections come from, per mode.
#[derive(Clone)]
pub(super) enum Nodes {
    Single(ConnectionManager),
    Cluster(Arc<ClusterNodes>),
    Sentinel(Arc<FollowPrimary>),
}

impl Nodes {
    /// A connection for one command that `retry` allows to run twice or not (one
    /// server and sentinels: the same connection, which never sends a command again
    /// by itself).
    pub(super) fn connection(&self, retry: Retry) -> RedisConnection {
        match self {
            Self::Single(c) => RedisConnection::Single(c.clone()),
            Self::Cluster(nodes) => RedisConnection::Cluster(nodes.current(retry)),
            Self::Sentinel(follow) => RedisConnection::Single(follow.current()),
        }
    }

    /// After a failed command: with sentinels, asks them whether the primary moved
    /// (a refused connection, or `READONLY` from a demoted primary), so that the next
    /// attempt goes to the new one; on a cluster, rebuilds a connection that answers
    /// nothing but failures. One server: its `ConnectionManager` reconnects by itself.
    pub(super) fn after_failure(&self, error: &redis::RedisError) {
        match self {
            Self::Sentinel(follow) => follow.after_failure(error),
            Self::Cluster(nodes) => nodes.after_failure(error),
            Self::Single(_) => {}
        }
    }

    /// A command succeeded.
    pub(super) fn succeeded(&self) {
        if let Self::Cluster(nodes) = self {
            nodes.succeeded();
        }
    }

    /// Whether this is a cluster.
    pub(super) fn is_cluster(&self) -> bool {
        matches!(self, Self::Cluster(_))
    }
}
