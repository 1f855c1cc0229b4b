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
use redis::{Cmd, Pipeline, RedisFuture, Value};
use std::sync::Arc;

/// A connection handed to one command (cloned per call: all variants multiplex).
#[derive(Clone)]
pub enum RedisConnection {
    /// One server.
    Single(ConnectionManager),
    /// A Redis Cluster.
    Cluster(ClusterConnection),
}

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
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
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
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
