//! The one Redis connection the Redis backends share, on one server, a Redis Cluster
//! or a primary followed through sentinels (`[redis] mode`): the seed's retry policy,
//! the command timeout, slow-command accounting, and error mapping onto
//! [`BackendError`].
//!
//! # Layout
//! - `mod.rs`: [`RedisClient`]: connect per mode, `run` a command, pub/sub, errors.
//! - `connection.rs`: [`RedisConnection`], one connection type over the modes.
//! - `sentinel.rs`: following the primary the sentinels name.
//! - `cluster.rs`: the cluster connection, rebuilt when it stays silent.
//! - `subscription.rs`: subscriptions, sharded on a cluster of Redis 7 (`SPUBLISH`).
//! - `slots.rs`: what a cluster changes: hash slots, keys grouped by `{tag}`, scans
//!   over every primary, pipelines split per slot.

mod cluster;
mod connection;
mod sentinel;
mod slots;
mod subscription;

pub use connection::RedisConnection;
pub use slots::{KeyLayout, same_slot};
pub use subscription::Subscription;

use super::{BackendError, BackendResult};
use crate::config::{RedisConfig, RedisMode};
use crate::metrics::Metrics;
use connection::Nodes;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A shared, cheap-to-clone Redis client.
#[derive(Clone)]
pub struct RedisClient {
    nodes: Nodes,
    /// For pub/sub connections of their own, the clients to try in turn (one server;
    /// a cluster's seed nodes, as any node hears every `PUBLISH`); they hold
    /// unredacted URLs, so they are never formatted. Empty with sentinels: the
    /// primary's client is asked for then.
    pubsub_clients: Arc<[redis::Client]>,
    connect_timeout: Duration,
    url: Arc<str>,
    command_timeout: Duration,
    retries: u32,
    retry_delay: Duration,
    slow: Duration,
    slow_commands: Arc<AtomicU64>,
    metrics: Arc<Metrics>,
    /// `[redis] wait_replicas` and `wait_timeout_ms`, when replicas are waited for.
    wait: Option<(u32, u64)>,
    /// The last command failed for want of a connection (a success after it counts as
    /// a reconnect: the `ConnectionManager` reconnects by itself and says nothing).
    disconnected: Arc<AtomicBool>,
}

/// Whether a failed command may run again: only when it is idempotent, because a
/// dropped connection does not tell whether the server executed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Reads and writes that give the same result twice (GET, SET, DEL, EXPIRE...).
    Idempotent,
    /// Counters, pushes and pops: at most once.
    Never,
}

impl RedisClient {
    /// Connects as `config.mode` says, failing with an error naming the URLs
    /// (passwords redacted).
    pub async fn connect(config: &RedisConfig, metrics: Arc<Metrics>) -> anyhow::Result<Self> {
        let connect_timeout = Duration::from_millis(config.connection_timeout_ms);
        let command_timeout = Duration::from_millis(config.command_timeout_ms);
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(connect_timeout))
            .set_response_timeout(Some(command_timeout))
            .set_number_of_retries(config.max_retries as usize)
            .set_min_delay(Duration::from_millis(config.retry_delay_ms.max(1)));
        // Only redacted forms are kept: they go into errors and logs.
        let (nodes, pubsub_clients, url) = match config.mode {
            RedisMode::Single => {
                let url = crate::config::redact_url(&config.url);
                let client = redis::Client::open(config.url.as_str())
                    .map_err(|e| anyhow::anyhow!("invalid redis.url {url:?}: {:?}", e.kind()))?;
                let manager = tokio::time::timeout(
                    connect_timeout,
                    ConnectionManager::new_with_config(client.clone(), manager_config),
                )
                .await
                .map_err(|_| {
                    anyhow::anyhow!(
                        "could not connect to Redis at {url}: no answer within {} ms",
                        connect_timeout.as_millis()
                    )
                })?
                .map_err(|e| {
                    anyhow::anyhow!(
                        "could not connect to Redis at {url}: {}",
                        scrub(&e, &config.url)
                    )
                })?;
                (Nodes::Single(manager), vec![client], url)
            }
            RedisMode::Cluster => slots::connect_cluster(config).await?,
            RedisMode::Sentinel => {
                let follow = sentinel::FollowPrimary::connect(config, manager_config).await?;
                let url = format!("sentinel primary {:?}", config.master_name);
                (Nodes::Sentinel(Arc::new(follow)), Vec::new(), url)
            }
        };
        Ok(Self {
            nodes,
            pubsub_clients: pubsub_clients.into(),
            connect_timeout,
            url: url.into(),
            command_timeout,
            retries: config.max_retries,
            retry_delay: Duration::from_millis(config.retry_delay_ms),
            slow: Duration::from_millis(config.slow_command_ms),
            slow_commands: Arc::default(),
            metrics,
            wait: (config.wait_replicas > 0)
                .then_some((config.wait_replicas, config.wait_timeout_ms)),
            disconnected: Arc::default(),
        })
    }

    /// How keys are laid out on this Redis (hash tags on a cluster).
    pub fn layout(&self) -> KeyLayout {
        KeyLayout {
            cluster: self.nodes.is_cluster(),
        }
    }

    /// `PING`, answered within `within`; the reason when not.
    pub async fn ping(&self, within: Duration) -> Result<(), String> {
        let mut conn = self.nodes.connection(Retry::Idempotent);
        let command = redis::cmd("PING");
        let ping = command.query_async::<String>(&mut conn);
        match tokio::time::timeout(within, ping).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(error)) => Err(format!("Redis at {} failed PING: {error}", self.url)),
            Err(_) => Err(format!(
                "Redis at {} did not answer PING within {} ms",
                self.url,
                within.as_millis()
            )),
        }
    }

    /// A pub/sub connection of its own (a subscribed connection runs no other
    /// commands), within the connect timeout; the reason, URL redacted, when not. On a
    /// cluster, to the first seed node that accepts (classic pub/sub reaches every
    /// node); with sentinels, to the primary as last known.
    async fn pubsub(&self) -> Result<redis::aio::PubSub, String> {
        let clients: Vec<(redis::Client, String)> = match &self.nodes {
            Nodes::Sentinel(follow) => vec![(follow.client(), follow.address())],
            _ => self
                .pubsub_clients
                .iter()
                .map(|c| (c.clone(), c.get_connection_info().addr().to_string()))
                .collect(),
        };
        let mut reasons = Vec::new();
        for (client, address) in clients {
            match tokio::time::timeout(self.connect_timeout, client.get_async_pubsub()).await {
                Ok(Ok(pubsub)) => return Ok(pubsub),
                // An I/O error's text names no URL; other texts might, so only their kind.
                Ok(Err(error)) => reasons.push(match error.is_io_error() {
                    true => format!("{address}: {error}"),
                    false => format!("{address}: {:?}", error.kind()),
                }),
                Err(_) => reasons.push(format!(
                    "{address}: no answer within {} ms",
                    self.connect_timeout.as_millis()
                )),
            }
        }
        Err(format!(
            "could not open a pub/sub connection to Redis at {}: {}",
            self.url,
            reasons.join("; ")
        ))
    }

    /// The server's URL, password redacted (for error texts).
    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// Commands slower than `redis.slow_command_ms` so far.
    pub fn slow_commands(&self) -> u64 {
        self.slow_commands.load(Ordering::Relaxed)
    }

    /// Runs `command` on a clone of the connection, retrying connection failures as
    /// `retry` allows, and failing with `Unavailable` once the command timeout has
    /// passed in all.
    pub async fn run<T, F, Fut>(
        &self,
        op: &'static str,
        retry: Retry,
        command: F,
    ) -> BackendResult<T>
    where
        F: Fn(RedisConnection) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let started = Instant::now();
        let deadline = tokio::time::Instant::from_std(started) + self.command_timeout;
        // A cluster connection bounds each request by the command timeout itself, its
        // redirections and reconnections included (redis-rs's overall response
        // timeout), so its first attempt needs no timer of ours: one per command cost
        // 2-4 µs of CPU (`bench redis-cluster`). A `ConnectionManager` waits for a
        // reconnection without bound, so on one server and through sentinels every
        // attempt runs under the deadline.
        let bounded_by_connection = self.nodes.is_cluster();
        // `None`: the command timeout passed.
        let attempts = async {
            let mut attempt = 0;
            // The node an `ASK` named: the next attempt goes there, after `ASKING`.
            let mut asking: Option<String> = None;
            loop {
                let connection = match asking.take() {
                    Some(node) => self.nodes.connection(retry).asking(&node),
                    None => self.nodes.connection(retry),
                };
                let outcome = match attempt == 0 && bounded_by_connection {
                    true => command(connection).await,
                    false => tokio::time::timeout_at(deadline, command(connection))
                        .await
                        .ok()?,
                };
                match outcome {
                    Ok(value) => {
                        self.nodes.succeeded();
                        if self.disconnected.load(Ordering::Relaxed)
                            && self.disconnected.swap(false, Ordering::Relaxed)
                        {
                            self.metrics.redis_reconnected();
                            tracing::info!(url = %self.url, "Redis connection works again");
                        }
                        return Some(Ok(value));
                    }
                    Err(error) => {
                        let transient = error.is_io_error()
                            || error.is_connection_dropped()
                            || error.is_connection_refusal()
                            || error.is_timeout();
                        if transient {
                            self.disconnected.store(true, Ordering::Relaxed);
                        }
                        self.nodes.after_failure(&error);
                        // Refused before it ran: safe to send again whatever the
                        // command is. (The cluster connection of commands that may not
                        // run twice leaves `MOVED` and `ASK` to this loop.)
                        let refused = connection::refused_before_running(&error);
                        let again = refused.is_some() || (retry == Retry::Idempotent && transient);
                        if again && attempt < self.retries {
                            attempt += 1;
                            // A key of a slot being migrated, already on the node
                            // importing it: asked there at once (redis-rs follows `ASK`
                            // itself, except on the connection without retries).
                            match refused.flatten() {
                                Some(node) => asking = Some(node),
                                None => {
                                    let pause = tokio::time::sleep(self.retry_delay);
                                    tokio::time::timeout_at(deadline, pause).await.ok()?;
                                }
                            }
                            continue;
                        }
                        // The connection's own timeout: the command timeout passed.
                        if error.is_timeout() {
                            return None;
                        }
                        return Some(Err(map_error(&self.url, op, error)));
                    }
                }
            }
        };
        let mut timed_out = false;
        let result = attempts.await.unwrap_or_else(|| {
            timed_out = true;
            Err(BackendError::Unavailable(format!(
                "Redis at {} did not answer {op} within {} ms",
                self.url,
                self.command_timeout.as_millis()
            )))
        });
        let elapsed = started.elapsed();
        let slow = elapsed >= self.slow;
        self.metrics.redis_command(op, elapsed, slow, timed_out);
        if slow {
            self.slow_commands.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                op,
                elapsed_ms = elapsed.as_millis() as u64,
                "slow Redis command"
            );
        }
        result
    }
}

/// Server errors the guest can act on become their own cases; the rest is
/// `Unavailable`.
pub(crate) fn map_error(url: &str, op: &str, error: redis::RedisError) -> BackendError {
    let text = error.to_string();
    if error.code() == Some("WRONGTYPE") || text.contains("not an integer") {
        return BackendError::WrongType;
    }
    if error.code() == Some("CROSSSLOT") || text.contains("crossed slots") {
        return BackendError::InvalidArgument(format!(
            "{op}: keys in different hash slots of the Redis Cluster; give them one {{hash tag}} (e.g. `order:{{42}}:total` and `order:{{42}}:items`)"
        ));
    }
    if text.contains("overflow") {
        return BackendError::Overflow;
    }
    if text.contains("not a number (NaN)") || text.contains("not a valid float") {
        return BackendError::InvalidArgument(text);
    }
    BackendError::Unavailable(format!("Redis at {url} failed {op}: {text}"))
}

/// A connection error's text with the raw URL (should the client ever quote it)
/// replaced by its redacted form.
fn scrub(error: &redis::RedisError, raw_url: &str) -> String {
    error
        .to_string()
        .replace(raw_url, &crate::config::redact_url(raw_url))
}
