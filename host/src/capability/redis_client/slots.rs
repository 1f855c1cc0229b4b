//! What a Redis Cluster changes, in one place.
//!
//! A cluster hashes each key to one of 16 384 slots (CRC16 of the key, or of the text
//! between its first `{` and the next `}` when that is non-empty) and each slot lives
//! on one primary. A script, a `MULTI` or a multi-key command must keep its keys in
//! one slot, or the cluster refuses it with `CROSSSLOT`; `SCAN` sees one node's keys.
//! So:
//! - [`KeyLayout`]: the host's keys that a script touches together carry the same
//!   `{tag}` on a cluster (and keep their old names elsewhere, so a single Redis's
//!   data, fencing counters included, stays where it was);
//! - [`same_slot`]: a plugin's atomic batch is checked before it is sent, so a
//!   cross-slot batch is a typed error saying how to group the keys;
//! - [`RedisClient::scan_page`]: a scan visits every primary, or only the slot its
//!   pattern names;
//! - [`RedisClient::pipeline`]: a non-atomic pipeline is split per slot.

use super::cluster::{Clients, ClusterNodes};
use super::connection::{Nodes, RedisConnection};
use super::subscription::{self, ShardSubscriber};
use super::{RedisClient, Retry};
use crate::capability::{BackendError, BackendResult};
use crate::config::{RedisConfig, redact_url};
use crate::names::glob;
use redis::cluster::ClusterClientBuilder;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, Slot, SlotAddr};
use redis::{Cmd, Value};
use std::borrow::Cow;
use std::collections::HashMap;
use std::time::Duration;

/// How the host names the keys that its scripts touch together.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeyLayout {
    /// On a Redis Cluster: groups are hash tags.
    pub cluster: bool,
}

impl KeyLayout {
    /// `name` as the part of a key that decides its slot: `{name}` on a cluster, so
    /// that every key built with the same `group(name)` lands in one slot; `name` as
    /// it is elsewhere. (`name` never holds braces: plugin, domain and queue names are
    /// `a-z0-9-_`, and `host.key_prefix` has none.)
    pub fn group<'n>(&self, name: &'n str) -> Cow<'n, str> {
        match self.cluster {
            true => Cow::Owned(format!("{{{name}}}")),
            false => Cow::Borrowed(name),
        }
    }
}

impl KeyLayout {
    /// A counter that scripts update with keys of `group`: `base` as it is elsewhere
    /// (one counter, as before clusters), `base:{group}` on a cluster (one per group,
    /// in the group's slot).
    pub fn counter(&self, base: &str, group: &str) -> String {
        match self.cluster {
            true => format!("{base}:{{{group}}}"),
            false => base.to_string(),
        }
    }
}

/// Whether `keys` all hash to one slot of a cluster.
pub fn same_slot<'k>(keys: impl IntoIterator<Item = &'k str>) -> bool {
    let mut keys = keys.into_iter().map(Slot::for_key);
    let Some(first) = keys.next() else {
        return true;
    };
    keys.all(|slot| slot == first)
}

/// The hash tag every key matching `pattern` has, when its literal prefix holds one.
fn tag_of_pattern(pattern: &str) -> Option<String> {
    let mut literal = glob::literal_prefix(pattern);
    let open = literal.find('{')?;
    let close = literal[open..].find('}')?;
    // An empty tag `{}` does not count: such keys hash whole.
    literal.truncate(open + close + 1);
    (close > 1).then_some(literal)
}

/// Connects to the cluster through its seed nodes: the connection, a pub/sub client
/// per seed, and the seeds' redacted form for texts.
pub(super) async fn connect_cluster(
    config: &RedisConfig,
) -> anyhow::Result<(Nodes, Vec<redis::Client>, String)> {
    let shown: Vec<String> = config.urls.iter().map(|u| redact_url(u)).collect();
    let url = format!("cluster {}", shown.join(","));
    let connect_timeout = Duration::from_millis(config.connection_timeout_ms);
    let client = |retries: u32| {
        ClusterClientBuilder::new(config.urls.clone())
            .connection_timeout(connect_timeout)
            .response_timeout(Duration::from_millis(config.command_timeout_ms))
            .retries(retries)
            .min_retry_wait(config.retry_delay_ms.max(1))
            .build()
            .map_err(|e| anyhow::anyhow!("invalid redis.urls {shown:?}: {:?}", e.kind()))
    };
    let clients = Clients {
        replaying: client(config.max_retries)?,
        once: client(0)?,
    };
    let connections = tokio::time::timeout(connect_timeout, clients.connect())
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "could not connect to the Redis {url}: no answer within {} ms",
                connect_timeout.as_millis()
            )
        })?
        .map_err(|e| {
            let text = config.urls.iter().fold(e.to_string(), |text, raw| {
                text.replace(raw, &redact_url(raw))
            });
            anyhow::anyhow!("could not connect to the Redis {url}: {text}")
        })?;
    let mut pubsub = Vec::new();
    for (raw, shown) in config.urls.iter().zip(&shown) {
        pubsub.push(
            redis::Client::open(raw.as_str()).map_err(|e| {
                anyhow::anyhow!("invalid redis.urls entry {shown:?}: {:?}", e.kind())
            })?,
        );
    }
    let urls = config.urls.clone();
    let response_timeout = Duration::from_millis(config.command_timeout_ms);
    let subscriber: ShardSubscriber = std::sync::Arc::new(move |pushes| {
        ClusterClientBuilder::new(urls.clone())
            .connection_timeout(connect_timeout)
            .response_timeout(response_timeout)
            .use_protocol(redis::ProtocolVersion::RESP3)
            .push_sender(pushes)
            .build()
    });
    let mut probe = connections.replaying();
    let subscriber = subscription::runs_spublish(&mut probe)
        .await
        .then_some(subscriber);
    let nodes = ClusterNodes::new(
        clients,
        connections,
        subscriber,
        Duration::from_millis(config.command_timeout_ms),
        connect_timeout,
    );
    Ok((Nodes::Cluster(std::sync::Arc::new(nodes)), pubsub, url))
}

/// The lowest slot of each primary, in order: a primary is addressed by one of its
/// slots, which stays valid when a replica takes over from it.
fn primaries(slots: Value) -> BackendResult<Vec<u16>> {
    let bad = |what: &str| BackendError::Unavailable(format!("CLUSTER SLOTS answered {what}"));
    let Value::Array(ranges) = slots else {
        return Err(bad("no list"));
    };
    let mut lowest: HashMap<Vec<u8>, u16> = HashMap::new();
    for range in ranges {
        let Value::Array(range) = range else {
            return Err(bad("a range that is no list"));
        };
        let (Some(Value::Int(start)), Some(Value::Array(primary))) = (range.first(), range.get(2))
        else {
            return Err(bad("a range without start or primary"));
        };
        // The primary by address and port (its id is absent on old servers).
        let node = format!("{:?}{:?}", primary.first(), primary.get(1)).into_bytes();
        let start = u16::try_from(*start).map_err(|_| bad("a slot out of range"))?;
        let slot = lowest.entry(node).or_insert(start);
        *slot = (*slot).min(start);
    }
    let mut lowest: Vec<u16> = lowest.into_values().collect();
    lowest.sort_unstable();
    Ok(lowest)
}

/// `cmd` sent to the primary that `route` names on a cluster; elsewhere to the one
/// server.
async fn routed<T: redis::FromRedisValue>(
    connection: RedisConnection,
    route: Route,
    cmd: Cmd,
) -> redis::RedisResult<T> {
    match connection {
        RedisConnection::Cluster(mut c) => {
            let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route));
            Ok(redis::from_redis_value(c.route_command(cmd, route).await?)?)
        }
        mut single => cmd.query_async(&mut single).await,
    }
}

impl RedisClient {
    /// One page of the keys matching `pattern` (a Redis glob), about `count` long,
    /// and the cursor of the next page (`None`: done). On a cluster a scan walks every
    /// primary in slot order (cursor `<slot>:<cursor>`), unless the pattern's literal
    /// start names a hash tag: then only that slot's primary can hold matches.
    pub async fn scan_page(
        &self,
        pattern: &str,
        cursor: Option<&str>,
        count: u32,
    ) -> BackendResult<(Vec<String>, Option<String>)> {
        let invalid =
            |c: &str| BackendError::InvalidArgument(format!("cursor {c:?} did not come from scan"));
        let scan = |at: u64| {
            redis::cmd("SCAN")
                .arg(at)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(count)
                .clone()
        };
        let tagged = tag_of_pattern(pattern).filter(|_| self.nodes.is_cluster());
        if !self.nodes.is_cluster() || tagged.is_some() {
            // One node holds every match: its own cursor is the cursor.
            let at: u64 = match cursor {
                None => 0,
                Some(c) => c.parse().map_err(|_| invalid(c))?,
            };
            let key = tagged.unwrap_or_default();
            let (next, keys): (u64, Vec<String>) = self
                .run("SCAN", Retry::Idempotent, |c| {
                    routed(c, Route::with_key(&key, SlotAddr::Master), scan(at))
                })
                .await?;
            return Ok((keys, (next != 0).then(|| next.to_string())));
        }
        let answer: Value = self
            .run("CLUSTER SLOTS", Retry::Idempotent, |mut c| async move {
                redis::cmd("CLUSTER").arg("SLOTS").query_async(&mut c).await
            })
            .await?;
        let primaries = primaries(answer)?;
        let (slot, at): (u16, u64) = match cursor {
            None => (primaries.first().copied().unwrap_or_default(), 0),
            Some(c) => {
                let (slot, at) = c.split_once(':').ok_or_else(|| invalid(c))?;
                let slot = slot.parse().map_err(|_| invalid(c))?;
                (slot, at.parse().map_err(|_| invalid(c))?)
            }
        };
        let (next, keys): (u64, Vec<String>) = self
            .run("SCAN", Retry::Idempotent, |c| {
                routed(c, Route::new(slot, SlotAddr::Master), scan(at))
            })
            .await?;
        let next = match next {
            0 => primaries
                .iter()
                .find(|s| **s > slot)
                .map(|s| format!("{s}:0")),
            n => Some(format!("{slot}:{n}")),
        };
        Ok((keys, next))
    }

    /// With `[redis] wait_replicas`, waits until that many replicas of the primary
    /// that holds `key` have every write this host sent it so far (`WAIT`, on the same
    /// multiplexed connection as the write: on a cluster that is the connection of
    /// [`Retry::Never`], so the write must have been sent as one, as every claim,
    /// swap, batch and lease is): `unavailable` when fewer confirmed within
    /// `wait_timeout_ms`. Without it, returns at once.
    pub async fn replicated(&self, key: &str) -> BackendResult<()> {
        let Some((replicas, timeout_ms)) = self.wait else {
            return Ok(());
        };
        let wait = redis::cmd("WAIT").arg(replicas).arg(timeout_ms).clone();
        let confirmed: i64 = self
            .run("WAIT", Retry::Never, |c| {
                routed(c, Route::with_key(key, SlotAddr::Master), wait.clone())
            })
            .await?;
        match confirmed >= i64::from(replicas) {
            true => Ok(()),
            false => Err(BackendError::Unavailable(format!(
                "Redis at {}: the write happened on the primary, but {confirmed} of {replicas} replicas confirmed it within {timeout_ms} ms",
                self.url
            ))),
        }
    }

    /// Runs `commands` as pipelines (not transactions): one on a single Redis, one
    /// per slot of their first keys on a cluster, sent together. The answers in the
    /// order of `commands`.
    pub async fn pipeline(
        &self,
        op: &'static str,
        retry: Retry,
        commands: &[Cmd],
    ) -> BackendResult<Vec<Value>> {
        let mut groups: HashMap<Option<Slot>, Vec<usize>> = HashMap::new();
        for (i, cmd) in commands.iter().enumerate() {
            let slot = match self.nodes.is_cluster() {
                true => match cmd.args_iter().nth(1) {
                    Some(redis::Arg::Simple(key)) => Some(Slot::for_key(key)),
                    _ => None,
                },
                false => None,
            };
            groups.entry(slot).or_default().push(i);
        }
        let sends = groups.into_values().map(|indices| async move {
            let mut pipe = redis::pipe();
            for i in &indices {
                pipe.add_command(commands[*i].clone());
            }
            let answers: Vec<Value> = self
                .run(op, retry, |mut c| {
                    let pipe = pipe.clone();
                    async move { pipe.query_async(&mut c).await }
                })
                .await?;
            Ok::<_, BackendError>(indices.into_iter().zip(answers).collect::<Vec<_>>())
        });
        let mut answers = vec![Value::Nil; commands.len()];
        for group in futures::future::join_all(sends).await {
            for (i, answer) in group? {
                answers[i] = answer;
            }
        }
        Ok(answers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_is_a_hash_tag_only_on_a_cluster() {
        let cluster = KeyLayout { cluster: true };
        assert_eq!(cluster.group("orders"), "{orders}");
        assert_eq!(KeyLayout::default().group("orders"), "orders");
        let a = format!("techub:cache:{}:a", cluster.group("users"));
        let b = format!("techub:cache-tag:{}:vip", cluster.group("users"));
        assert!(same_slot([a.as_str(), b.as_str()]));
    }

    #[test]
    fn same_slot_follows_the_first_non_empty_hash_tag() {
        assert!(same_slot(["x:{u1}:a", "y:{u1}:b"]));
        assert!(!same_slot(["x:{u1}:a", "x:{u2}:a"]));
        assert!(same_slot(["only-one"]));
        assert!(same_slot(std::iter::empty()));
        // `{}` is not a tag: the whole key hashes.
        assert!(!same_slot(["a{}1", "a{}2"]));
    }

    #[test]
    fn a_pattern_names_a_slot_only_when_its_literal_start_holds_a_whole_tag() {
        assert_eq!(
            tag_of_pattern("t:cache:{users}:a*").as_deref(),
            Some("t:cache:{users}")
        );
        assert_eq!(tag_of_pattern("t:store:p:{ord*"), None);
        assert_eq!(tag_of_pattern("t:store:p:*"), None);
        assert_eq!(tag_of_pattern("t:{}:x*"), None);
    }

    #[test]
    fn primaries_are_listed_once_each_by_their_lowest_slot() {
        let node = |host: &str, port: i64| {
            Value::Array(vec![Value::BulkString(host.into()), Value::Int(port)])
        };
        let range = |start: i64, end: i64, primary: Value| {
            Value::Array(vec![Value::Int(start), Value::Int(end), primary])
        };
        let answer = Value::Array(vec![
            range(10923, 16383, node("c", 3)),
            range(0, 5460, node("a", 1)),
            range(6000, 10922, node("b", 2)),
            range(5461, 5999, node("b", 2)),
        ]);
        assert_eq!(primaries(answer).unwrap(), vec![0, 5461, 10923]);
    }
}
