//! Subscriptions, classic or sharded.
//!
//! Classic pub/sub (`PUBLISH`, `SUBSCRIBE`) on a Redis Cluster crosses the cluster bus
//! to every node, whichever node the subscribers are on: each message costs every node
//! of the cluster, and two messages published on two nodes may reach a subscriber in
//! either order. Sharded pub/sub (Redis 7: `SPUBLISH`, `SSUBSCRIBE`) keeps a message on
//! the shard that owns its channel's slot, in the order that shard ran its publishes.
//! So on a cluster whose nodes know `SPUBLISH` (asked once at connect), the host
//! publishes and subscribes sharded; on one server, through sentinels, or on an older
//! cluster, classic.
//!
//! A sharded subscription is a cluster connection of its own, speaking RESP3 (the
//! protocol that carries pushes on a connection that also runs commands); it ends at
//! the first sign of a gap (a node's connection dropped, or the shard giving a slot
//! away), since what was published meanwhile is unknown.

use super::RedisClient;
use super::connection::Nodes;
use futures::StreamExt;
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{PushInfo, PushKind, Value};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};

/// Builds the cluster client of a sharded subscription, its pushes going to the
/// sender (from the seed nodes' URLs, which it holds: it is never formatted).
pub(super) type ShardSubscriber = std::sync::Arc<
    dyn Fn(UnboundedSender<PushInfo>) -> redis::RedisResult<ClusterClient> + Send + Sync,
>;

/// Whether the cluster behind `connection` runs `SPUBLISH` (Redis 7 or later).
pub(super) async fn runs_spublish(connection: &mut ClusterConnection) -> bool {
    redis::cmd("SPUBLISH")
        .arg("techub-probe")
        .arg("")
        .query_async::<i64>(connection)
        .await
        .is_ok()
}

/// A subscription to channels, classic or sharded.
pub enum Subscription {
    /// `SUBSCRIBE` on a connection of its own.
    Classic(redis::aio::PubSubStream),
    /// `SSUBSCRIBE` through a cluster connection of its own.
    Sharded {
        /// The connection: kept to subscribe to more channels, and alive while it is.
        connection: ClusterConnection,
        /// Its pushes: confirmations, messages, and the signs of a gap.
        pushes: UnboundedReceiver<PushInfo>,
    },
}

impl Subscription {
    /// The next message, as (channel, payload); `None` once the subscription ended
    /// (connection lost, or on a cluster a node's connection dropped or a subscribed
    /// slot moved away): anything published meanwhile may have been missed.
    pub async fn next(&mut self) -> Option<(Vec<u8>, Vec<u8>)> {
        match self {
            Self::Classic(stream) => {
                let message = stream.next().await?;
                Some((
                    message.get_channel_name().as_bytes().to_vec(),
                    message.get_payload_bytes().to_vec(),
                ))
            }
            Self::Sharded { pushes, .. } => loop {
                let push = pushes.recv().await?;
                match push.kind {
                    PushKind::SMessage => {
                        let mut data = push.data.into_iter();
                        if let (
                            Some(Value::BulkString(channel)),
                            Some(Value::BulkString(payload)),
                        ) = (data.next(), data.next())
                        {
                            return Some((channel, payload));
                        }
                    }
                    PushKind::Disconnection | PushKind::SUnsubscribe => return None,
                    _ => {}
                }
            },
        }
    }

    /// Subscribes to more channels: each group's channels hash to one slot (sharded
    /// subscriptions are per slot). Classic subscriptions are made whole at the start.
    pub async fn add(&mut self, group: &[String]) -> Result<(), String> {
        match self {
            Self::Classic(_) => Ok(()),
            Self::Sharded { connection, .. } => connection
                .ssubscribe(group)
                .await
                .map_err(|e| format!("SSUBSCRIBE failed: {:?} {:?}", e.kind(), e.code())),
        }
    }
}

impl RedisClient {
    /// Whether this client publishes and subscribes sharded (a cluster of Redis 7 or
    /// later): callers then name one channel per slot they want to hear from.
    pub fn sharded_pubsub(&self) -> bool {
        matches!(&self.nodes, Nodes::Cluster(nodes) if nodes.shards_pubsub())
    }

    /// The command a script or a caller publishes with: `SPUBLISH` when
    /// [`Self::sharded_pubsub`], else `PUBLISH`.
    pub fn publish_command(&self) -> &'static str {
        match self.sharded_pubsub() {
            true => "SPUBLISH",
            false => "PUBLISH",
        }
    }

    /// A subscription to `groups` of channels, within the connect timeout; the reason,
    /// URLs redacted, when not. Sharded, each group's channels must hash to one slot;
    /// classic, the groups are one subscription.
    pub async fn subscribe(&self, groups: &[Vec<String>]) -> Result<Subscription, String> {
        let subscriber = match &self.nodes {
            Nodes::Cluster(nodes) => nodes.shard_subscriber(),
            _ => None,
        };
        let Some(subscriber) = subscriber else {
            let mut pubsub = self.pubsub().await?;
            let channels: Vec<&String> = groups.iter().flatten().collect();
            pubsub
                .subscribe(&channels)
                .await
                .map_err(|e| format!("SUBSCRIBE failed: {:?}", e.kind()))?;
            return Ok(Subscription::Classic(pubsub.into_on_message()));
        };
        let (sender, pushes) = tokio::sync::mpsc::unbounded_channel();
        let client = subscriber(sender).map_err(|e| format!("{:?}", e.kind()))?;
        let connection =
            match tokio::time::timeout(self.connect_timeout, client.get_async_connection()).await {
                Ok(Ok(connection)) => connection,
                Ok(Err(error)) => {
                    return Err(format!(
                        "could not open a subscription to the Redis {}: {:?}",
                        self.url,
                        error.kind()
                    ));
                }
                Err(_) => {
                    return Err(format!(
                        "could not open a subscription to the Redis {}: no answer within {} ms",
                        self.url,
                        self.connect_timeout.as_millis()
                    ));
                }
            };
        let mut subscription = Subscription::Sharded { connection, pushes };
        for group in groups {
            subscription.add(group).await?;
        }
        Ok(subscription)
    }
}
