//! `messaging`: publishing to the topic exchange, and the broker the dispatcher
//! consumes from.
//!
//! A [`Broker`] routes [`Envelope`]s by topic to queues, delivers them to one consumer
//! per queue with a prefetch window, and settles each [`Delivery`] one of three ways:
//! ack, retry after a delay (to the same queue only, attempt + 1) or dead-letter.
//!
//! Wiring: [`connect`] opens the broker `host.toml` selects, this host's reply queue
//! and the message tracker; [`MessagingGrant`] is what one plugin's view reaches of
//! them; [`link`] links the interface, and `wasmcloud:messaging/consumer` onto the same
//! view (`wasmcloud.rs`).

pub mod amqp;
mod host;
pub mod memory;
pub mod operator;
mod priorities;
pub mod replies;
mod request;
pub mod shared_status;
mod tracker;
mod wasmcloud;

use super::BackendResult;
use crate::config::DeadLetterConfig;
pub use crate::config::Overflow;
use std::sync::Arc;
use std::time::Duration;

pub use crate::capability::bindings::techub::platform::messaging::MessageStatus;
pub(crate) use host::check_options;
pub use host::{HasMessaging, MessagingFailure, MessagingView, priority_level, priority_of_level};
pub use priorities::DefaultPriorities;
pub use request::{Answering, MAX_REQUEST_TIMEOUT_MS};
pub use tracker::{MessageTracker, Snapshot};

/// Header carrying the attempt number of a retried message.
pub const ATTEMPT_HEADER: &str = "x-techub-attempt";
/// Header carrying why a message was dead-lettered.
pub const DEATH_REASON_HEADER: &str = "x-techub-death-reason";
/// Header carrying the queue a message was dead-lettered from.
pub const DEATH_QUEUE_HEADER: &str = "x-techub-death-queue";
/// Header carrying when a message was dead-lettered, in ms since the Unix epoch.
pub const DEATH_AT_HEADER: &str = "x-techub-death-at-ms";
/// Header of a message the full dead-letter queue refused, waiting in its retry queue:
/// why it died. Back in its queue, it is dead-lettered again without running a handler.
pub const PARKED_HEADER: &str = "x-techub-parked";

/// A message with its metadata, as the broker carries it.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    /// Message id (stable across retries).
    pub id: String,
    /// Routing key it was published with.
    pub routing_key: String,
    /// Body.
    pub payload: Vec<u8>,
    /// Application headers (never the broker's or the host's `x-*` ones).
    pub headers: Vec<(String, String)>,
    /// Correlation id.
    pub correlation_id: Option<String>,
    /// Reply-to routing key.
    pub reply_to: Option<String>,
    /// AMQP priority, 0 to 10.
    pub priority: u8,
    /// Written to disk by the broker.
    pub persistent: bool,
    /// Dropped (dead-lettered) if not delivered within this many ms of publishing.
    pub expiration_ms: Option<u64>,
    /// When first published, in ms since the Unix epoch.
    pub published_at_ms: u64,
    /// 1 on first delivery; incremented by each retry.
    pub attempt: u32,
    /// Set while a dead letter the full dead-letter queue refused waits in its retry
    /// queue: why it died. Such a delivery is dead-lettered again, never handled.
    pub parked: Option<String>,
}

/// A queue to declare: bound to the main exchange with `bindings`.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueSpec {
    /// Queue name.
    pub name: String,
    /// Routing-key patterns.
    pub bindings: Vec<String>,
    /// Survives a broker restart.
    pub durable: bool,
    /// TTL and length bound; they may change each time the queue is declared.
    pub limits: QueueLimits,
}

/// A queue's TTL and length bound (`[queues.<type>]`'s `message_ttl_ms`, `max_length`
/// and `overflow`). On RabbitMQ they are a policy the host keeps (so a change applies
/// to the existing queue), on the embedded broker part of the queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueLimits {
    /// Messages waiting longer than this are dead-lettered (`expired`).
    pub message_ttl_ms: Option<u64>,
    /// Most ready messages.
    pub max_length: Option<u32>,
    /// What a full queue does with one more message.
    pub overflow: Overflow,
    /// On RabbitMQ, classic or quorum (none: `amqp.queue_kind`); the embedded broker
    /// has one kind.
    pub kind: Option<crate::config::QueueKind>,
    /// The longest a retry of this queue waits (`max_retry_delay_ms`): a queue that
    /// changes kind keeps its old queue at least this long, for the retries still on
    /// their way back to it.
    pub longest_retry_ms: u64,
}

impl QueueLimits {
    /// The limits `[queues.<type>]` sets.
    pub fn of(policy: &crate::config::QueuePolicy) -> Self {
        Self {
            message_ttl_ms: policy.message_ttl_ms,
            max_length: policy.max_length,
            overflow: policy.overflow,
            kind: policy.kind,
            longest_retry_ms: policy.max_retry_delay_ms,
        }
    }

    /// Whether any limit is set.
    pub fn is_unbounded(&self) -> bool {
        self.message_ttl_ms.is_none() && self.max_length.is_none()
    }
}

/// A message parked in the dead-letter queue.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    /// The message, with its original routing key and the attempts it had.
    pub envelope: Envelope,
    /// The queue it died in.
    pub queue: String,
    /// Why.
    pub reason: String,
    /// When it was dead-lettered, in ms since the Unix epoch.
    pub died_at_ms: u64,
    /// Whether the host dead-lettered it itself (on RabbitMQ: its seal checks with
    /// this deployment's key). Only trusted letters are replayed: anyone who may
    /// publish to the dead-letter exchange could write one naming any queue.
    pub trusted: bool,
}

/// What [`Broker::rework_dead_letters`] does with one dead letter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeadLetterAction {
    /// Leave it where it is.
    Keep,
    /// Remove it.
    Purge,
    /// Publish it again as a first attempt, then remove it once the broker confirmed.
    Replay(ReplayTo),
}

/// Where a replayed dead letter goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplayTo {
    /// Back into the queue it died in only (the plugin that failed it), keeping its
    /// routing key.
    Queue,
    /// Through the main exchange with this routing key (every plugin bound to it).
    RoutingKey(String),
}

/// What a pass over the dead letters did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reworked {
    /// Replayed and removed: (message id, queue it now waits in, if one queue).
    pub replayed: Vec<(String, Option<String>)>,
    /// Removed.
    pub purged: u64,
    /// Left in place (not picked, or a replay that failed).
    pub kept: u64,
    /// Why replays failed (each such letter stays).
    pub errors: Vec<String>,
}

/// Picks what to do with each dead letter in a pass.
pub type DeadLetterPicker<'a> = dyn Fn(&DeadLetter) -> DeadLetterAction + Send + Sync + 'a;

/// A message broker with a topic exchange, per-queue consumers and a dead-letter queue.
#[async_trait::async_trait]
pub trait Broker: Send + Sync {
    /// Routes `envelope` to every queue bound to its routing key, after `delay` if any;
    /// returns once the broker has it (publisher confirm).
    async fn publish(&self, envelope: Envelope, delay: Option<Duration>) -> BackendResult<()>;
    /// Routes `envelope` now and says whether any queue took it (a mandatory publish;
    /// one no queue takes is dropped and `false` returned): for a publisher that must
    /// not answer "taken" for a message nobody will read, such as an incoming webhook.
    async fn publish_routed(&self, envelope: Envelope) -> BackendResult<bool>;
    /// Declares a queue and its bindings, idempotently (bindings it has already stay),
    /// and sets its limits (those of an existing queue change to `spec.limits`).
    async fn declare_queue(&self, spec: &QueueSpec) -> BackendResult<()>;
    /// Changes the dead-letter queue's TTL and length bound (`[dead_letter]` reloaded).
    async fn set_dead_letter_limits(&self, limits: DeadLetterConfig) -> BackendResult<()>;
    /// Deletes `queue` and what is in it (a host's own temporary queue, such as a
    /// `tail`'s); deleting one that is gone is no error.
    async fn delete_queue(&self, queue: &str) -> BackendResult<()>;
    /// Removes `bindings` from `queue`: messages with only those keys stop arriving;
    /// what is in the queue stays.
    async fn unbind(&self, queue: &str, bindings: &[String]) -> BackendResult<()>;
    /// Starts consuming `queue` with at most `prefetch` unsettled deliveries.
    async fn consume(&self, queue: &str, prefetch: u16) -> BackendResult<Box<dyn Consumer>>;
    /// Up to `limit` dead letters after the first `offset`, oldest first, without
    /// removing them.
    async fn dead_letters(&self, offset: usize, limit: usize) -> BackendResult<Vec<DeadLetter>>;
    /// Goes once through the dead letters, oldest first, doing what `pick` says with
    /// each: a replay publishes (confirmed) before it removes, so that a failure keeps
    /// the letter. Letters that arrive during the pass may be left for the next one.
    async fn rework_dead_letters(&self, pick: &DeadLetterPicker<'_>) -> BackendResult<Reworked>;
    /// Messages in the dead-letter queue.
    async fn dead_letter_depth(&self) -> BackendResult<u64>;
    /// Messages ready in `queue`; `None` when there is no such queue.
    async fn queue_depth(&self, queue: &str) -> BackendResult<Option<u64>>;
    /// Opens `name` as this host's reply queue (exclusive to this host, gone with it):
    /// the messages sent to it with [`Broker::reply`], as they arrive.
    async fn open_replies(&self, name: &str) -> BackendResult<ReplyInbox>;
    /// Sends `envelope` straight to the reply queue `to` (not through the main
    /// exchange); a queue that is gone (its host stopped) drops it.
    async fn reply(&self, to: &str, envelope: Envelope) -> BackendResult<()>;
    /// Closes the connection cleanly (at shutdown, after the consumers drained);
    /// unsettled deliveries go back to their queues.
    async fn close(&self) {}
    /// The node the broker's connection is on (its URL, password hidden), for a
    /// broker of several nodes; `None` in process.
    fn connected_node(&self) -> Option<String> {
        None
    }
    /// Whether the broker is a server (RabbitMQ) rather than in process.
    fn is_remote(&self) -> bool {
        false
    }
    /// Whether the broker is reachable now; the reason when not (for `/readyz`).
    fn health(&self) -> Result<(), String> {
        Ok(())
    }
    /// Dead letters the dead-letter queue refused so far because it was full. Each
    /// refused message waits in its queue's retry queue and is dead-lettered again
    /// later (see [`Buried::Parked`]).
    fn dead_letters_refused(&self) -> u64 {
        0
    }
}

/// Where [`Delivery::dead_letter`] put a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Buried {
    /// In the dead-letter queue.
    DeadLettered,
    /// The dead-letter queue is full (`reject-publish`): the message waits in its own
    /// queue's retry queue for `[dead_letter] retry_when_full_ms`, then is
    /// dead-lettered again without running its handler. Acked from the queue only
    /// once the retry queue has it: nothing is dropped, and the consumer's prefetch
    /// window is not held by letters that cannot leave (good messages keep flowing).
    Parked,
}

/// How full the dead-letter queue is, for `/readyz`, the status page and the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeadLetterFill {
    /// Letters in it.
    pub depth: u64,
    /// `[dead_letter] max_length`.
    pub max_length: u32,
}

impl DeadLetterFill {
    /// Reads the depth of `broker`'s dead-letter queue against `config`'s bound.
    pub async fn read(broker: &dyn Broker, config: &DeadLetterConfig) -> BackendResult<Self> {
        Ok(Self {
            depth: broker.dead_letter_depth().await?,
            max_length: config.max_length,
        })
    }

    /// Whether the next dead letter would be refused.
    pub fn is_full(&self) -> bool {
        self.depth >= u64::from(self.max_length)
    }
}

/// The replies arriving on a host's reply queue.
pub type ReplyInbox = tokio::sync::mpsc::Receiver<Envelope>;

/// How long a delivery is held before it goes back to its queue when it could neither
/// be dead-lettered nor parked (the broker failed): a failing broker slows the consumer
/// down instead of spinning it, and nothing is lost.
pub const DEAD_LETTER_REFUSED_PAUSE: Duration = Duration::from_secs(1);

/// The deliveries of one queue.
#[async_trait::async_trait]
pub trait Consumer: Send {
    /// The next delivery; waits while the prefetch window is full or the queue empty.
    /// `None` once the consumer is closed (the broker went away).
    async fn next(&mut self) -> Option<Box<dyn Delivery>>;
    /// Stops taking deliveries (AMQP `basic.cancel`). The deliveries already handed
    /// out can still be settled; those the broker sent but `next` did not return yet
    /// go back to the queue at [`Consumer::close`].
    async fn stop(&mut self) {}
    /// Ends the consumer once its deliveries are settled (closes its channel).
    async fn close(self: Box<Self>) {}
}

/// One delivered message, to be settled exactly once. Dropping it unsettled puts it
/// back in the queue as redelivered.
#[async_trait::async_trait]
pub trait Delivery: Send {
    /// The message.
    fn envelope(&self) -> &Envelope;
    /// The message, to move its payload into the guest without a copy (and back).
    fn envelope_mut(&mut self) -> &mut Envelope;
    /// Whether the broker delivered it before (e.g. to a host that died).
    fn redelivered(&self) -> bool;
    /// Done: remove it.
    async fn ack(self: Box<Self>) -> BackendResult<()>;
    /// Deliver it again to this queue only, after `delay`, with `attempt + 1`.
    async fn retry(self: Box<Self>, delay: Duration) -> BackendResult<()>;
    /// Park it in the dead-letter queue with `reason`; when that queue is full, in this
    /// queue's retry queue for `[dead_letter] retry_when_full_ms` instead (the value
    /// last given to [`Broker::set_dead_letter_limits`]; [`Buried::Parked`]).
    async fn dead_letter(self: Box<Self>, reason: &str) -> BackendResult<Buried>;
}

/// The current time in ms since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A watching queue: not durable, named `name`, bound to `bindings`, consumed with a
/// window of `prefetch`. What `tail`, the demo, the test kit and the tests see the
/// traffic through. If it cannot be consumed, it is deleted again.
pub async fn open_watch(
    broker: &dyn Broker,
    name: &str,
    bindings: Vec<String>,
    prefetch: u16,
) -> BackendResult<Box<dyn Consumer>> {
    let spec = QueueSpec {
        name: name.to_string(),
        bindings,
        durable: false,
        limits: Default::default(),
    };
    broker.declare_queue(&spec).await?;
    match broker.consume(name, prefetch).await {
        Ok(consumer) => Ok(consumer),
        Err(error) => {
            let _ = broker.delete_queue(name).await;
            Err(error)
        }
    }
}

/// The broker and what publishing needs beside it, connected.
#[derive(Clone)]
pub struct MessagingService {
    /// The message broker.
    pub broker: Arc<dyn Broker>,
    /// This host's reply queue and the requests waiting on it.
    pub replies: Arc<replies::Replies>,
    /// Status per message and queue.
    pub tracker: Arc<MessageTracker>,
    /// The priority of publishes that name none, from the queue types that bind them.
    pub priorities: Arc<DefaultPriorities>,
    /// The Prometheus metrics (requests timed out).
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// How many message statuses the tracker remembers.
const TRACKED_MESSAGES: usize = 100_000;

/// The broker `config` selects (embedded, or RabbitMQ), this host's reply queue, and
/// the tracker (sharing statuses through `redis` when there is one); a connection
/// failure names the URL without its password.
pub async fn connect(
    config: &crate::config::HostConfig,
    redis: Option<&crate::capability::redis_client::RedisClient>,
    metrics: Arc<crate::metrics::Metrics>,
) -> anyhow::Result<MessagingService> {
    use anyhow::Context;
    let broker: Arc<dyn Broker> = match config.backends.messaging {
        crate::config::BrokerBackend::Memory => {
            Arc::new(memory::MemoryBroker::new(config.dead_letter))
        }
        crate::config::BrokerBackend::Amqp => Arc::new(
            amqp::AmqpBroker::connect(
                &config.amqp,
                config.dead_letter,
                config.messaging,
                metrics.clone(),
                amqp::seal::DeathSeal::for_config(config)?,
            )
            .await?,
        ),
    };
    let replies =
        replies::Replies::open(broker.as_ref(), &config.amqp.queue_prefix, metrics.clone())
            .await
            .context("could not open the reply queue")?;
    let tracker = MessageTracker::new(TRACKED_MESSAGES);
    if let Some(redis) = redis {
        let ttl = Duration::from_millis(config.messaging.status_ttl_ms);
        let prefix = &config.host.key_prefix;
        tracker.share_through(Arc::new(shared_status::SharedStatuses::new(
            redis.clone(),
            prefix,
            ttl,
        )));
    }
    Ok(MessagingService {
        broker,
        replies,
        tracker: Arc::new(tracker),
        priorities: Arc::default(),
        metrics,
    })
}

/// What one plugin's `messaging` view reaches: its publish and subscribe grants, the
/// limits of messages, and the broker. Nothing of another capability, nor the rest
/// of the configuration.
pub struct MessagingGrant {
    /// The plugin's name: the owner of what it publishes.
    plugin: String,
    /// Routing-key patterns it may publish to.
    publish: Vec<crate::names::routing::TopicPattern>,
    /// Routing-key patterns its subscriptions may bind.
    pub subscribe: Vec<crate::names::routing::TopicPattern>,
    /// The plugin's `limits.max_publishes`.
    max_publishes: u32,
    /// `host.max_message_bytes`.
    max_message_bytes: usize,
    /// `messaging.confirm_timeout_ms`.
    confirm_timeout: Duration,
    /// The broker.
    service: MessagingService,
}

impl MessagingGrant {
    /// Whether a publish with `routing_key` is granted.
    pub fn may_publish(&self, routing_key: &str) -> bool {
        self.publish.iter().any(|grant| grant.matches(routing_key))
    }

    /// `plugin`'s grant under `config`.
    pub fn new(
        plugin: &str,
        config: &crate::config::HostConfig,
        service: MessagingService,
    ) -> Self {
        let section = config.plugins.get(plugin);
        // Patterns were validated with the config; an invalid one cannot reach here.
        let patterns = |list: Option<&Vec<String>>| {
            list.into_iter()
                .flatten()
                .filter_map(|p| crate::names::routing::TopicPattern::parse(p).ok())
                .collect::<Vec<_>>()
        };
        Self {
            plugin: plugin.to_string(),
            publish: patterns(section.map(|p| &p.publish)),
            subscribe: patterns(section.map(|p| &p.subscribe)),
            max_publishes: config.limits_of(plugin).max_publishes,
            max_message_bytes: config.host.max_message_bytes,
            confirm_timeout: Duration::from_millis(config.messaging.confirm_timeout_ms),
            service,
        }
    }
}

/// The view of an instance's `state` this capability's host functions run on.
pub(crate) fn view(state: &mut crate::capability::InstanceState) -> MessagingView<'_> {
    MessagingView::new(
        &state.plugin.messaging,
        &mut state.usage,
        &mut state.answering,
    )
}

/// Links `messaging`, and wasmCloud's `wasmcloud:messaging`, with [`MessagingView`],
/// the [`view`] of an instance's state.
pub fn link<T: crate::capability::HoldsInstanceState>(
    linker: &mut wasmtime::component::Linker<T>,
) -> wasmtime::Result<()> {
    let of_instance: fn(&mut T) -> MessagingView<'_> = |data| view(data.instance_state());
    crate::capability::bindings::techub::platform::messaging::add_to_linker::<T, HasMessaging>(
        linker,
        of_instance,
    )?;
    wasmcloud::link(linker, of_instance)
}
