//! The broker on RabbitMQ.
//!
//! Topology, declared idempotently at start (names from `[amqp]`, seed defaults):
//! - `techub.main` (topic): every publish; plugin queues bind to it. A plugin queue
//!   is the classic queue of its name, or `<name>.quorum` (and its high lane
//!   `<name>.quorum.high`, reached through the router `<name>.quorum.lanes`, where
//!   the broker has no quorum priorities): `physical.rs`.
//! - `techub.dlx` (topic) → `dead.letter.queue` (bound `dlx.#`, 24 h TTL, 10 000 max):
//!   rejected and exhausted messages, and messages that expire in a plugin queue.
//! - `techub.delayed` (headers) → `techub.delayed.<ms>` queues whose TTL dead-letters
//!   into `techub.main` with the original routing key: delayed publishes (Debian's
//!   RabbitMQ has no delayed-message plugin).
//! - `<queue>.retry.<ms>`: a TTL queue per queue (the one behind the plugin queue
//!   that a message is in) and delay that dead-letters straight back to `<queue>`
//!   through the default exchange, so a retry reaches only the plugin that failed.
//!
//! Queue limits (TTL, length bound, overflow) of plugin queues and of the dead-letter
//! queue are policies the host keeps through the management API (`policies.rs`), so
//! that they change on a running deployment; without the API they are arguments.
//!
//! Every publish waits for the broker's confirm; settling a delivery publishes its
//! retry or dead letter (confirmed) before acking it, so no outcome loses a message.
//!
//! When the connection drops, publishes fail at once with `Unavailable` (the guest
//! retries its message later) while the host reconnects (`link.rs`: a fresh
//! connection at most 1 s apart), declares the topology and its queues again, and the
//! consumers subscribe again and carry on. Deliveries unsettled at the drop are
//! redelivered by the broker.
//!
//! Several nodes (`amqp.urls`, a cluster): each host tries them in its own shuffled
//! order, and a reconnect moves to the next node at once. Queues are classic or
//! quorum (`amqp.queue_kind`, `[queues.<type>] kind`; `kind.rs`).
//!
//! Files: `mod.rs` (the `Broker` impl), `link.rs` (the connection and its
//! replacement), `topology.rs` (declarations), `kind.rs` (classic or quorum: the
//! arguments each needs; does the broker have quorum priorities), `physical.rs` (the
//! queues behind one plugin queue: kinds and priority lanes), `merged.rs` (consuming
//! them as one), `migrate.rs` (a queue type changing kind, the old queue drained),
//! `publish.rs` (confirmed and mandatory publishes), `consumer.rs` (deliveries and
//! settling), `convert.rs` (envelope ⇄ AMQP properties), `dead_letters.rs` (reading,
//! replaying and purging the dead-letter queue; queue depths), `policies.rs` (queue
//! limits through the management API), `replies.rs` (the host's reply queue).

mod consumer;
mod convert;
mod dead_letters;
mod kind;
mod link;
mod merged;
mod migrate;
mod physical;
pub mod policies;
mod publish;
mod replies;
pub mod seal;
mod topology;

use super::{Broker, Consumer, DeadLetter, DeadLetterPicker, Envelope, QueueSpec, Reworked};
use crate::capability::{BackendError, BackendResult};
use crate::config::{AmqpConfig, DeadLetterConfig, MessagingConfig, QueueKind};
use crate::metrics::Metrics;
use arc_swap::ArcSwap;
use convert::{string, table};
use lapin::types::{AMQPValue, FieldTable};
use link::Link;
use physical::Physical;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Header that routes a delayed publish to its delay queue.
const DELAY_HEADER: &str = "x-techub-delay-ms";
/// Unused delay and retry queues delete themselves after this long.
const IDLE_QUEUE_EXPIRY_MS: u64 = 3_600_000;

/// A queue the host declares on demand, with its arguments and binding.
struct Declared<'a> {
    name: &'a str,
    args: FieldTable,
    bind: Option<(&'a str, FieldTable)>,
}

pub(crate) struct Shared {
    /// The connection and the publisher channel; replaced whole on a reconnect.
    link: ArcSwap<Link>,
    /// The generation of the newest link whose topology and queues are declared:
    /// consumers subscribe on it once it is announced here.
    ready: tokio::sync::watch::Sender<u64>,
    /// Set by `close`: no more reconnecting, consumers end.
    closing: AtomicBool,
    /// The plugin queues the host declared (with their current bindings), declared
    /// again on a new connection.
    queues: Mutex<HashMap<String, QueueSpec>>,
    /// `[dead_letter]` as last set: the queue's limits (declared again on a new
    /// connection) and how long a refused letter waits.
    dead_letter: Mutex<DeadLetterConfig>,
    /// The URL as it may be shown (no password); the list, for a cluster.
    url: String,
    /// The broker's nodes (`amqp.urls`, or `amqp.url`), in this host's own order.
    nodes: Vec<String>,
    /// The node of `nodes` the link is on (or was last tried).
    node: AtomicUsize,
    confirm_timeout: Duration,
    declared: Mutex<HashSet<String>>,
    names: AmqpConfig,
    /// Dead letters the full dead-letter queue refused (`x-overflow = reject-publish`).
    dead_letters_refused: AtomicU64,
    metrics: Arc<Metrics>,
    /// The management API, when it answered at start: queue limits are policies.
    /// Without it they are queue arguments, fixed once declared.
    policies: Option<policies::Management>,
    /// Seals the dead letters the host writes; a replay trusts only those.
    seal: seal::DeathSeal,
    /// Whether quorum queues get priority lanes (`physical.rs`): where the broker
    /// has no quorum priorities; found out when the host declares its first quorum
    /// queue.
    lanes: tokio::sync::OnceCell<bool>,
    /// Plugin queues changing kind: the old queues each drains (`migrate.rs`).
    migrations: Mutex<HashMap<String, migrate::Migration>>,
    /// Bumped whenever the queues behind a plugin queue change (a kind changed, an
    /// old queue drained): consumers take up the new set.
    layout: tokio::sync::watch::Sender<u64>,
}

/// Broker on a RabbitMQ server.
#[derive(Clone)]
pub struct AmqpBroker {
    shared: Arc<Shared>,
}

fn unavailable(url: &str, what: &str, error: impl std::fmt::Display) -> BackendError {
    BackendError::Unavailable(format!("RabbitMQ at {url}: could not {what}: {error}"))
}

impl AmqpBroker {
    /// Connects, enables publisher confirms and declares the fixed topology.
    pub async fn connect(
        config: &AmqpConfig,
        dead_letter: DeadLetterConfig,
        messaging: MessagingConfig,
        metrics: Arc<Metrics>,
        seal: seal::DeathSeal,
    ) -> anyhow::Result<Self> {
        let mut nodes = config.nodes();
        // Each host its own order, so that the hosts of a deployment spread over the
        // nodes of a cluster.
        nodes.sort_by_cached_key(|_| uuid::Uuid::new_v4());
        let url = shown_nodes(&nodes);
        let timeout = Duration::from_millis(config.connection_timeout_ms);
        // One attempt per node here: a broker none of whose nodes is there at start
        // is an error to report.
        let mut failures = Vec::new();
        let mut opened = None;
        for (index, node) in nodes.iter().enumerate() {
            let shown = crate::config::redact_url(node);
            let attempt = async {
                reachable(node, &shown, timeout).await?;
                Link::open(node, &shown, timeout, 1).await
            };
            match attempt.await {
                Ok(link) => {
                    opened = Some((index, link));
                    break;
                }
                Err(error) => failures.push(format!("{error:#}")),
            }
        }
        let Some((node, link)) = opened else {
            anyhow::bail!("{}", failures.join("; "));
        };
        // The management API of the node connected to (any node's manages them all).
        let on_node = AmqpConfig {
            url: nodes[node].clone(),
            ..config.clone()
        };
        let policies = match policies::Management::new(&on_node) {
            Err(error) => anyhow::bail!("{error}"),
            Ok(api) => match api.probe().await {
                Ok(()) => Some(api),
                Err(error) => {
                    tracing::warn!(api = %api.shown, %error,
                        "RabbitMQ's management API is not reachable: queue TTLs and lengths become queue arguments, which RabbitMQ cannot change later (enable it with `rabbitmq-plugins enable rabbitmq_management`, or set amqp.management_url)");
                    None
                }
            },
        };
        let broker = Self {
            shared: Arc::new(Shared {
                link: ArcSwap::from_pointee(link),
                ready: tokio::sync::watch::Sender::new(1),
                closing: AtomicBool::new(false),
                queues: Mutex::default(),
                dead_letter: Mutex::new(dead_letter),
                url,
                nodes,
                node: AtomicUsize::new(node),
                confirm_timeout: Duration::from_millis(messaging.confirm_timeout_ms),
                declared: Mutex::default(),
                names: config.clone(),
                dead_letters_refused: AtomicU64::new(0),
                metrics,
                policies,
                seal,
                lanes: tokio::sync::OnceCell::new(),
                migrations: Mutex::default(),
                layout: tokio::sync::watch::Sender::new(0),
            }),
        };
        broker
            .declare_topology(dead_letter)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        tokio::spawn(link::supervise(Arc::downgrade(&broker.shared)));
        Ok(broker)
    }

    /// Declares the topology and every plugin queue again (on a new connection).
    async fn redeclare(&self) -> BackendResult<()> {
        self.declare_topology(self.dead_letter_config()).await?;
        let queues: Vec<QueueSpec> = self.queues().values().cloned().collect();
        for spec in &queues {
            self.declare_queue(spec).await?;
        }
        Ok(())
    }

    /// The kind of a queue: `chosen` (its queue type's), else `amqp.queue_kind`; a
    /// queue that does not survive a restart is classic (a quorum queue is durable).
    pub(super) fn kind_of(&self, chosen: Option<QueueKind>, durable: bool) -> QueueKind {
        match durable {
            true => chosen.unwrap_or(self.shared.names.queue_kind),
            false => QueueKind::Classic,
        }
    }

    /// The kind of plugin queue `queue`, as it was declared (its retry queues follow
    /// it).
    pub(super) fn kind_of_queue(&self, queue: &str) -> QueueKind {
        let declared = self.queues().get(queue).map(|s| (s.limits.kind, s.durable));
        match declared {
            Some((kind, durable)) => self.kind_of(kind, durable),
            None => self.shared.names.queue_kind,
        }
    }

    /// Whether any queue the host declares is a quorum queue.
    pub(super) fn uses_quorum(&self) -> bool {
        self.shared.names.queue_kind == QueueKind::Quorum
            || self
                .queues()
                .values()
                .any(|s| self.kind_of(s.limits.kind, s.durable) == QueueKind::Quorum)
    }

    /// The queues behind plugin queue `logical`, as it is declared now.
    pub(super) fn physical(&self, logical: &str) -> Physical {
        Physical::of(logical, self.kind_of_queue(logical), self.lanes())
    }

    /// The queues behind plugin queue `logical`, also where this host did not declare
    /// it (the dead-letter tooling, another process): those that exist.
    pub(super) async fn resolve(&self, logical: &str) -> BackendResult<Physical> {
        let declared = self.queues().contains_key(logical);
        if declared {
            return Ok(self.physical(logical));
        }
        let quorum = Physical::of(logical, QueueKind::Quorum, true);
        if !self.exists(&quorum.normal).await? {
            return Ok(Physical::of(logical, QueueKind::Classic, false));
        }
        let high = quorum.high.as_deref().unwrap_or_default();
        let lanes = self.exists(high).await?;
        Ok(Physical::of(logical, QueueKind::Quorum, lanes))
    }

    /// Whether quorum queues have priority lanes here.
    pub(super) fn lanes(&self) -> bool {
        self.shared.lanes.get().copied().unwrap_or(false)
    }

    /// `[dead_letter]` as last set.
    pub(super) fn dead_letter_config(&self) -> DeadLetterConfig {
        *self
            .shared
            .dead_letter
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn queues(&self) -> std::sync::MutexGuard<'_, HashMap<String, QueueSpec>> {
        self.shared.queues.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Nodes as they may be shown: passwords hidden, several joined.
fn shown_nodes(nodes: &[String]) -> String {
    nodes
        .iter()
        .map(|n| crate::config::redact_url(n))
        .collect::<Vec<_>>()
        .join(", ")
}

/// What RabbitMQ shows for the connection of the host process `pid` (`rabbitmqctl
/// list_connections client_properties`, the management UI): the program and its
/// process id, so an operator can tell the hosts of a deployment apart.
pub fn connection_name(pid: u32) -> String {
    format!("techub-host pid {pid}")
}

/// Opens (and closes) a TCP connection to the broker first, so that a refused or
/// unroutable address is reported at once and plainly, instead of through lapin's
/// reconnecting I/O loop (which logs a panic line and waits out the timeout).
async fn reachable(raw_url: &str, shown: &str, timeout: Duration) -> anyhow::Result<()> {
    let uri: lapin::uri::AMQPUri = raw_url
        .parse()
        .map_err(|e| anyhow::anyhow!("invalid amqp.url {shown:?}: {e}"))?;
    let address = (uri.authority.host.as_str(), uri.authority.port);
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(address)).await {
        Ok(Ok(_stream)) => Ok(()),
        Ok(Err(error)) => anyhow::bail!("could not connect to RabbitMQ at {shown}: {error}"),
        Err(_) => anyhow::bail!(
            "could not connect to RabbitMQ at {shown}: no answer within {} ms",
            timeout.as_millis()
        ),
    }
}

#[async_trait::async_trait]
impl Broker for AmqpBroker {
    async fn publish_routed(&self, envelope: Envelope) -> BackendResult<bool> {
        let props = convert::properties(&envelope, &[]);
        let exchange = &self.shared.names.main_exchange;
        match self
            .send(
                link::Lane::Messages,
                exchange,
                &envelope.routing_key,
                &envelope.payload,
                props,
                true,
            )
            .await?
        {
            publish::Sent::Routed => Ok(true),
            publish::Sent::Returned => Ok(false),
            publish::Sent::Nacked => Err(self.nacked()),
        }
    }

    async fn publish(&self, envelope: Envelope, delay: Option<Duration>) -> BackendResult<()> {
        let names = &self.shared.names;
        match delay.map(|d| (d.as_millis() as u64).max(1)) {
            None => {
                let props = convert::properties(&envelope, &[]);
                match self
                    .send(
                        link::Lane::Messages,
                        &names.main_exchange,
                        &envelope.routing_key,
                        &envelope.payload,
                        props,
                        false,
                    )
                    .await?
                {
                    publish::Sent::Nacked => Err(self.nacked()),
                    publish::Sent::Routed | publish::Sent::Returned => Ok(()),
                }
            }
            Some(delay_ms) => {
                let delay_queue = format!("{}delayed.{delay_ms}", names.queue_prefix);
                let mut args =
                    kind::arguments(names.queue_kind, kind::Role::Waiting, names.delivery_limit);
                args.extend([
                    ("x-message-ttl", AMQPValue::LongLongInt(delay_ms as i64)),
                    ("x-dead-letter-exchange", string(&names.main_exchange)),
                    (
                        "x-expires",
                        AMQPValue::LongLongInt((delay_ms + IDLE_QUEUE_EXPIRY_MS) as i64),
                    ),
                ]);
                let args = table(&args);
                let binding = table(&[
                    ("x-match", string("all")),
                    (DELAY_HEADER, string(&delay_ms.to_string())),
                ]);
                let declared = Declared {
                    name: &delay_queue,
                    args,
                    bind: Some((&names.delayed_exchange, binding)),
                };
                let props = convert::properties(&envelope, &[(DELAY_HEADER, delay_ms.to_string())]);
                self.send_via(
                    &declared,
                    &names.delayed_exchange,
                    &envelope.routing_key,
                    &envelope.payload,
                    props,
                )
                .await
            }
        }
    }

    async fn declare_queue(&self, spec: &QueueSpec) -> BackendResult<()> {
        let kind = self.kind_of(spec.limits.kind, spec.durable);
        if kind == QueueKind::Quorum {
            self.decide_lanes().await;
        }
        let physical = Physical::of(&spec.name, kind, self.lanes());
        let limits = policies::Limits::of_queue(spec.limits, kind);
        for queue in physical.all() {
            let mut fixed =
                kind::arguments(kind, kind::Role::Consumed, self.shared.names.delivery_limit);
            // Expired messages dead-letter like rejected ones, under the plugin
            // queue's name whichever lane they were in.
            fixed.extend([
                (
                    "x-dead-letter-exchange",
                    string(&self.shared.names.dead_letter_exchange),
                ),
                (
                    "x-dead-letter-routing-key",
                    string(&format!("dlx.{}", spec.name)),
                ),
            ]);
            let ch = self
                .declare_limited(&queue, spec.durable, fixed, limits)
                .await?;
            let _ = ch.close(200, "declared".into()).await;
        }
        self.route(&physical, &spec.bindings).await?;
        self.queues().insert(spec.name.clone(), spec.clone());
        // A queue of the other kind under this name drains into this one.
        self.begin_migration(spec, kind).await?;
        self.shared
            .layout
            .send_modify(|generation| *generation += 1);
        Ok(())
    }

    async fn set_dead_letter_limits(&self, limits: DeadLetterConfig) -> BackendResult<()> {
        *self
            .shared
            .dead_letter
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = limits;
        let queue = &self.shared.names.dead_letter_queue;
        match &self.shared.policies {
            Some(api) => api.apply(queue, topology::dead_letter_limits(limits)).await,
            None => Err(BackendError::Unavailable(format!(
                "the limits of {queue} are queue arguments (RabbitMQ's management API was not reachable at start): they change only once the queue is deleted, or with the API enabled"
            ))),
        }
    }

    async fn delete_queue(&self, queue: &str) -> BackendResult<()> {
        let ch = self.open_channel().await?;
        for name in &Physical::every(queue) {
            ch.queue_delete(
                name.as_str().into(),
                lapin::options::QueueDeleteOptions::default(),
            )
            .await
            .map_err(|e| unavailable(&self.shared.url, &format!("delete queue {name}"), e))?;
        }
        let _ = ch.close(200, "deleted".into()).await;
        self.delete_lane_router(queue).await;
        self.queues().remove(queue);
        self.end_migration(queue);
        Ok(())
    }

    async fn unbind(&self, queue: &str, bindings: &[String]) -> BackendResult<()> {
        self.unroute(&self.physical(queue), bindings).await?;
        if let Some(spec) = self.queues().get_mut(queue) {
            spec.bindings.retain(|b| !bindings.contains(b));
        }
        Ok(())
    }

    async fn open_replies(&self, name: &str) -> BackendResult<super::ReplyInbox> {
        self.open_reply_queue(name).await
    }

    async fn reply(&self, to: &str, envelope: Envelope) -> BackendResult<()> {
        self.send_reply(to, envelope).await
    }

    async fn close(&self) {
        self.shared.closing.store(true, Ordering::Release);
        let link = self.shared.link.load_full();
        let _ = link.publisher.load().close(200, "shutdown".into()).await;
        let _ = link.dead_letters.load().close(200, "shutdown".into()).await;
        if let Err(error) = link.connection.close(200, "shutdown".into()).await {
            tracing::warn!(%error, "closing the RabbitMQ connection");
        }
    }

    async fn consume(&self, queue: &str, prefetch: u16) -> BackendResult<Box<dyn Consumer>> {
        Ok(Box::new(
            merged::MergedConsumer::start(self.clone(), queue, prefetch).await?,
        ))
    }

    fn is_remote(&self) -> bool {
        true
    }

    fn connected_node(&self) -> Option<String> {
        let node = self.shared.node.load(Ordering::Acquire);
        let url = self.shared.nodes.get(node)?;
        Some(crate::config::redact_url(url))
    }

    fn health(&self) -> Result<(), String> {
        let link = self.shared.link.load();
        if link.healthy() {
            return Ok(());
        }
        let state = match () {
            _ if self.shared.closing.load(Ordering::Acquire) => "closed",
            _ => "reconnecting",
        };
        Err(format!(
            "RabbitMQ at {} is not connected ({state})",
            self.shared.url
        ))
    }

    fn dead_letters_refused(&self) -> u64 {
        self.shared.dead_letters_refused.load(Ordering::Relaxed)
    }

    async fn dead_letters(&self, offset: usize, limit: usize) -> BackendResult<Vec<DeadLetter>> {
        self.peek_dead_letters(offset, limit).await
    }

    async fn rework_dead_letters(&self, pick: &DeadLetterPicker<'_>) -> BackendResult<Reworked> {
        self.rework(pick).await
    }

    async fn dead_letter_depth(&self) -> BackendResult<u64> {
        let queue = self.shared.names.dead_letter_queue.clone();
        Ok(self.depth(&queue).await?.unwrap_or(0))
    }

    async fn queue_depth(&self, queue: &str) -> BackendResult<Option<u64>> {
        // Every queue behind it: both lanes, and an old queue still draining (for a
        // queue this host did not declare, every queue either kind would have).
        let declared = self.queues().contains_key(queue);
        let mut physical = match declared {
            true => self.physical(queue).all(),
            false => Physical::every(queue),
        };
        physical.extend(self.migration_sources(queue));
        let mut total = None;
        for name in &physical {
            if let Some(depth) = self.depth(name).await? {
                total = Some(total.unwrap_or(0) + depth);
            }
        }
        Ok(total)
    }
}
