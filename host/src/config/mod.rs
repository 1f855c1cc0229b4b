//! `host.toml`: the typed configuration, its seed defaults and its validation.
//!
//! Every field has a default taken from the specification (`defaults.rs`), so an empty
//! file is a valid configuration: the host on its embedded backends. Unknown fields are
//! errors (a typo must not silently fall back to a default), and every range check
//! names the field it failed on.
//!
//! Files: `defaults.rs` (the specification's values), `live.rs` (what a reload may
//! change, what needs a restart), `merge.rs` (sections merged over
//! the defaults; moved fields), `validate.rs` (ranges), `redact.rs` (secrets out of
//! what is printed), `suggest.rs` ("did you mean" for a misspelled field).

mod defaults;
#[cfg(test)]
mod fuzz;
mod http;
mod live;
mod merge;
mod redact;
mod schedules;
mod stand_ins;
mod suggest;
mod validate;
mod validate_amqp;
mod validate_cache;
mod validate_redis;
mod webhooks;

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use http::{
    GrantHost, GrantScheme, HttpConfig, OutboundGrant, SecretRef, SecretValue, canonical,
    in_network,
};
pub use redact::{redact_url, redacted};
pub use schedules::{ScheduleConfig, Timing};
pub use stand_ins::StandInsConfig;
pub use validate::{ConfigError, MIN_LOCK_TTL_MS, validate_name};
pub use webhooks::{DEFAULT_TOLERANCE, Verify, WebhookRoute, WebhooksConfig};

/// The whole of `host.toml`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct HostConfig {
    /// Where plugins are loaded from, and the admin endpoint.
    pub host: HostSection,
    /// Per-invocation limits every plugin gets unless `[plugins.<name>]` overrides them.
    pub limits: Limits,
    /// Which backend serves each capability.
    pub backends: Backends,
    /// The Redis connection (used when a capability selects `redis`).
    pub redis: RedisConfig,
    /// The RabbitMQ connection (used when messaging selects `amqp`).
    pub amqp: AmqpConfig,
    /// Cache domains and limits.
    pub cache: CacheConfig,
    /// Store limits, and the embedded store's budget.
    pub store: StoreConfig,
    /// Messaging limits, whichever broker serves them.
    pub messaging: MessagingConfig,
    /// Queue types (the seed's `QueueType`) and their retry policy. A `[queues.<type>]`
    /// section overrides the fields it names and keeps the seed's values for the rest;
    /// a new name starts from the generic defaults.
    #[serde(deserialize_with = "merge::queues")]
    pub queues: BTreeMap<String, QueuePolicy>,
    /// The dead-letter queue.
    pub dead_letter: DeadLetterConfig,
    /// Lock limits.
    pub lock: LockConfig,
    /// The client of plugins' outbound HTTP requests.
    pub http: HttpConfig,
    /// Grants, settings and limit overrides per plugin, keyed by plugin name.
    pub plugins: BTreeMap<String, PluginConfig>,
    /// Messages the host publishes on the clock, by schedule name.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub schedules: BTreeMap<String, ScheduleConfig>,
    /// Providers' webhooks taken in: the listener and a route per provider.
    #[serde(skip_serializing_if = "webhooks_absent")]
    pub webhooks: WebhooksConfig,
    /// Local stand-ins for providers (the demo's; absent in production).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stand_ins: Option<StandInsConfig>,
}

fn webhooks_absent(webhooks: &WebhooksConfig) -> bool {
    *webhooks == WebhooksConfig::default()
}

/// `[host]`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct HostSection {
    /// Directory scanned for `*.wasm` plugins; relative to the config file.
    pub plugins_dir: PathBuf,
    /// Address of the admin HTTP endpoint (health, metrics, publish).
    pub admin_addr: String,
    /// Prefix of every key the host writes (seed: `techub:`).
    pub key_prefix: String,
    /// Maximum number of plugin instances alive at once, across plugins; sizes the
    /// pooling allocator.
    pub max_instances: u32,
    /// Instances kept apart for cache loaders, on top of `max_instances`: a handler
    /// that reads through a loader holds its own slot while the loader runs in one of
    /// these, so a full pool cannot wait for itself.
    pub loader_instances: u32,
    /// Largest accepted key or lock name, in bytes (seed: 512).
    pub max_key_length: usize,
    /// Largest accepted message payload, in bytes.
    pub max_message_bytes: usize,
    /// Use the pooling instance allocator (fast instantiation, memory reserved up
    /// front); `false` allocates each instance on demand.
    pub pooling: bool,
    /// Bearer token the admin endpoint requires (all routes but `/healthz`). Prefer
    /// `admin_token_env`, which keeps it out of the file.
    pub admin_token: Option<String>,
    /// Name of an environment variable holding the admin token (read at start).
    pub admin_token_env: Option<String>,
    /// Where compiled components are kept between runs; relative to this file. Whoever
    /// can write it can run native code as the host: keep it the host's own.
    pub cache_dir: PathBuf,
    /// Keep compiled components in `cache_dir` (a restart skips compilation).
    pub compile_cache: bool,
    /// How long a stop (SIGTERM, SIGINT) waits for deliveries in flight, in ms.
    pub drain_timeout_ms: u64,
    /// Memory a pool slot keeps resident between instances, in MiB: reset in place
    /// rather than decommitted and faulted in again (fast instantiation; costs up to
    /// this much RSS per slot that was used). 0 decommits everything.
    pub keep_resident_mib: u32,
    /// Record Prometheus metrics (`/metrics`). Off only to measure their cost.
    pub metrics: bool,
    /// How often queue depths, pool slots and cache bytes are read for `/metrics`, in ms.
    pub metrics_poll_ms: u64,
    /// Largest plugin file read, in bytes (checked before reading and while reading).
    pub max_plugin_bytes: u64,
}

/// Per-invocation limits (`[limits]`, and overrides in `[plugins.<name>]`).
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Linear memory a plugin instance may grow to, in MiB.
    pub memory_mib: u32,
    /// CPU time of wasm code per message, in milliseconds (epoch-based, ~10 ms grain).
    pub cpu_ms: u32,
    /// Wall-clock time per message, including time spent in host calls, in ms.
    pub timeout_ms: u32,
    /// Host calls (cache, store, lock, messaging) per message.
    pub max_host_calls: u32,
    /// Messages published per message handled.
    pub max_publishes: u32,
    /// Leases held at once by one instance.
    pub max_leases: u32,
    /// Bytes of stdout/stderr kept per message; the rest is dropped.
    pub max_output_bytes: u32,
    /// Guest log records per second (a burst of as many is allowed); the rest are
    /// dropped and counted, so that a chatty plugin cannot flood the host's log.
    pub max_log_records_per_s: u32,
    /// Unacknowledged deliveries per consumer, i.e. messages of one plugin handled at
    /// once (the seed's prefetch, 1 to 100).
    pub prefetch: u16,
    /// Invocations in a row that break a limit before the plugin's consumer is backed
    /// off (one delivery at a time, after a growing pause); 0: never.
    pub backoff_after_violations: u32,
    /// Messages one instance handles before it is torn down. 1 (the default): a fresh
    /// instance per message, nothing carried over. Above 1, a consumer keeps the
    /// instance that answered for its next delivery (same version and configuration,
    /// the instance's statics and heap carried over), saving instantiation and
    /// teardown; an instance that failed is never entered again.
    pub reuse_instance: u32,
    /// How long a kept instance (`reuse_instance` > 1) holds its pool slot with no
    /// delivery coming, in ms (default 1000). An invocation that waits for a slot
    /// takes it at once whatever this says.
    pub reuse_idle_ms: u32,
    /// Outbound HTTP requests per message (`wasi:http`); past it a request is denied.
    pub max_http_requests: u32,
    /// Outbound HTTP requests of one plugin in flight at once, across its instances; a
    /// request past it waits up to its connect timeout for a turn, then fails with
    /// `connection-limit-reached`.
    pub max_http_in_flight: u32,
    /// Longest wait for an outbound connection (and TLS handshake), in ms; a guest's
    /// own request options may only shorten it.
    pub http_connect_timeout_ms: u32,
    /// Longest wait from a request sent to its response's headers, in ms.
    pub http_first_byte_timeout_ms: u32,
    /// Longest pause between two chunks of a response body, in ms.
    pub http_between_bytes_timeout_ms: u32,
    /// Largest outbound request body, in bytes.
    pub max_http_request_bytes: u64,
    /// Largest response body a plugin may read, in bytes; past it the body fails with
    /// `HTTP-response-body-size` and the host stops reading.
    pub max_http_response_bytes: u64,
}

/// A partial override of [`Limits`] for one plugin.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LimitOverrides {
    /// See [`Limits::memory_mib`].
    pub memory_mib: Option<u32>,
    /// See [`Limits::cpu_ms`].
    pub cpu_ms: Option<u32>,
    /// See [`Limits::timeout_ms`].
    pub timeout_ms: Option<u32>,
    /// See [`Limits::max_host_calls`].
    pub max_host_calls: Option<u32>,
    /// See [`Limits::max_publishes`].
    pub max_publishes: Option<u32>,
    /// See [`Limits::max_leases`].
    pub max_leases: Option<u32>,
    /// See [`Limits::max_output_bytes`].
    pub max_output_bytes: Option<u32>,
    /// See [`Limits::max_log_records_per_s`].
    pub max_log_records_per_s: Option<u32>,
    /// See [`Limits::prefetch`].
    pub prefetch: Option<u16>,
    /// See [`Limits::backoff_after_violations`].
    pub backoff_after_violations: Option<u32>,
    /// See [`Limits::reuse_instance`].
    pub reuse_instance: Option<u32>,
    /// See [`Limits::reuse_idle_ms`].
    pub reuse_idle_ms: Option<u32>,
    /// See [`Limits::max_http_requests`].
    pub max_http_requests: Option<u32>,
    /// See [`Limits::max_http_in_flight`].
    pub max_http_in_flight: Option<u32>,
    /// See [`Limits::http_connect_timeout_ms`].
    pub http_connect_timeout_ms: Option<u32>,
    /// See [`Limits::http_first_byte_timeout_ms`].
    pub http_first_byte_timeout_ms: Option<u32>,
    /// See [`Limits::http_between_bytes_timeout_ms`].
    pub http_between_bytes_timeout_ms: Option<u32>,
    /// See [`Limits::max_http_request_bytes`].
    pub max_http_request_bytes: Option<u64>,
    /// See [`Limits::max_http_response_bytes`].
    pub max_http_response_bytes: Option<u64>,
}

/// Backend selection for the key-value capabilities.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum KvBackend {
    /// In-process memory (the embedded default).
    #[default]
    Memory,
    /// Redis at `[redis].url`.
    Redis,
}

/// Backend selection for messaging.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum BrokerBackend {
    /// The in-process broker (the embedded default).
    #[default]
    Memory,
    /// RabbitMQ at `[amqp].url`.
    Amqp,
}

/// `[backends]`.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Backends {
    /// Backend of `cache`.
    pub cache: KvBackend,
    /// Backend of `store`.
    pub store: KvBackend,
    /// Backend of `lock`.
    pub lock: KvBackend,
    /// Backend of `messaging`.
    pub messaging: BrokerBackend,
}

/// `[redis]`: the seed's connection constants.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// How the host reaches Redis: one server at `url`, a Redis Cluster through its
    /// seed nodes `urls`, or the primary that `sentinels` name `master_name`.
    pub mode: RedisMode,
    /// `redis://host:port/db`. With `mode = "sentinel"`, only its user, password,
    /// database and scheme are read: they are those of the primary the sentinels name.
    pub url: String,
    /// `mode = "cluster"`: seed nodes of the cluster, each `redis://[:pass@]host:port`;
    /// the client learns the rest of the cluster from the first that answers.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub urls: Vec<String>,
    /// `mode = "sentinel"`: the sentinels, each `redis://[:pass@]host:port`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sentinels: Vec<String>,
    /// `mode = "sentinel"`: the name the sentinels monitor the primary under.
    pub master_name: String,
    /// Claims, fencing counters, compare-and-swaps and atomic batches wait until this
    /// many replicas have the write (`WAIT`), so that a failover right after cannot
    /// lose it; 0 (the default): they return when the primary has it. A write fewer
    /// replicas confirmed within `wait_timeout_ms` is `unavailable` (it did happen on
    /// the primary).
    pub wait_replicas: u32,
    /// How long such a write waits for its replicas, in ms.
    pub wait_timeout_ms: u64,
    /// Attempts after a failed command (seed: 3).
    pub max_retries: u32,
    /// Wait between attempts, in ms (seed: 100).
    pub retry_delay_ms: u64,
    /// Connect timeout, in ms (seed: 10 000).
    pub connection_timeout_ms: u64,
    /// A command that takes longer fails with `unavailable` (seed: 5 000).
    pub command_timeout_ms: u64,
    /// Commands slower than this are logged and counted (seed: 100).
    pub slow_command_ms: u64,
}

/// `[redis] mode`.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum RedisMode {
    /// One server at `url`.
    #[default]
    Single,
    /// A Redis Cluster: keys sharded over primaries by hash slot, each with replicas.
    Cluster,
    /// One primary with replicas, found and followed through failovers by sentinels.
    Sentinel,
}

/// `[amqp]`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AmqpConfig {
    /// `amqp://user:pass@host:port/vhost`.
    pub url: String,
    /// The nodes of a cluster, each such a URL; when set, used instead of `url`. Each
    /// host tries them in its own shuffled order and moves to the next when the one it
    /// is on fails.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub urls: Vec<String>,
    /// The kind of every queue the host declares (plugin, retry, delay and
    /// dead-letter queues) unless `[queues.<type>] kind` says otherwise. `quorum` for
    /// a cluster; `classic` (the default) keeps a one-node broker as it was.
    pub queue_kind: QueueKind,
    /// Quorum queues: deliveries of one message the broker makes before it
    /// dead-letters it (reason `delivery_limit`), a guard against a message that
    /// kills its consumer before it can settle it.
    pub delivery_limit: u32,
    /// Connect timeout, in ms.
    pub connection_timeout_ms: u64,
    /// The topic exchange every publish goes to (seed: `techub.main`).
    pub main_exchange: String,
    /// The dead-letter exchange (seed: `techub.dlx`).
    pub dead_letter_exchange: String,
    /// The dead-letter queue (seed: `dead.letter.queue`).
    pub dead_letter_queue: String,
    /// The headers exchange of delayed publishes (seed: `techub.delayed`).
    pub delayed_exchange: String,
    /// Prefix of every queue the host declares (plugin, retry and delay queues), so
    /// that two deployments on one vhost never share a queue (default `techub.`).
    pub queue_prefix: String,
    /// RabbitMQ's management API (`http://user:pass@host:15672`), through which the
    /// host keeps queue TTLs and lengths as policies, so that they can change on a
    /// running deployment. Default: the AMQP URL's host on port 15672, with its
    /// credentials and vhost. Without it (unreachable), they become queue arguments,
    /// which RabbitMQ cannot change later.
    pub management_url: Option<String>,
    /// The key that seals the dead letters the host writes (`{ env = ".." }` or
    /// `{ file = ".." }`): a replay moves only letters whose seal checks. Without it,
    /// a key made at first start in `<host.cache_dir>/dead-letter.key`; hosts that
    /// share a dead-letter queue must share this key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dead_letter_key: Option<SecretRef>,
}

impl AmqpConfig {
    /// The broker's nodes: `urls`, or `url` alone.
    pub fn nodes(&self) -> Vec<String> {
        match self.urls.is_empty() {
            true => vec![self.url.clone()],
            false => self.urls.clone(),
        }
    }
}

/// `[cache]`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    /// Largest entry, in bytes (seed: 5 MB).
    pub max_entry_bytes: usize,
    /// Most keys in one bulk call (seed: 1000).
    pub max_bulk_keys: u32,
    /// Most tags on one entry.
    pub max_tags: u32,
    /// Memory budget of the embedded cache, in MiB; lower priorities are evicted first.
    pub memory_budget_mib: u64,
    /// How long hit/miss statistics are kept, in seconds (the specification's stats
    /// cleanup interval: 1 h). On Redis, per-minute buckets expire by TTL.
    pub stats_retention_s: u64,
    /// How often a host adds its counted hits and misses to Redis, in ms (one pipeline
    /// per flush, never a round trip per read).
    pub stats_flush_ms: u64,
    /// Domain name → default TTL in seconds (seeded with the 14 `CacheDomain`s; a
    /// `[cache.domains]` table adds to them and overrides the TTLs it names).
    #[serde(deserialize_with = "merge::domains")]
    pub domains: BTreeMap<String, u32>,
    /// `[[cache.invalidate]]`: events that invalidate entries (the specification's
    /// event-based invalidation). The host consumes them itself.
    pub invalidate: Vec<InvalidationRule>,
    /// `[cache.loaders]`: domain → the plugin whose `loader` export fills its misses
    /// on `get-or-load` and warms it.
    pub loaders: BTreeMap<String, String>,
    /// How long a `get-or-load` waits for another host's load of the same key before
    /// loading it itself, in ms; also the lifetime of a host's load lease.
    pub load_wait_ms: u64,
    /// `[cache.warm.<domain>]`: entries the host loads at start and keeps fresh (the
    /// specification's cache warming).
    pub warm: BTreeMap<String, WarmConfig>,
    /// `[cache.l1.<domain>]`: domains of the cache on Redis that this host also keeps
    /// in process (a two-layer cache); every host hears of every write, delete and
    /// invalidation on Redis pub/sub and drops its copies.
    pub l1: BTreeMap<String, L1Config>,
    /// The longest an L1 may serve a copy after another host's write to it returned,
    /// in ms: a host serves from L1 only while its invalidation channel proved itself
    /// this recently (a ping it sent to itself came back through it), else it reads
    /// Redis. The host pings every quarter of it.
    pub l1_max_stale_ms: u64,
}

/// One `[cache.l1.<domain>]`: the in-process layer of a domain of the cache on Redis.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct L1Config {
    /// Longest an entry stays in L1, in seconds (never past its TTL in Redis).
    #[serde(default = "default_l1_ttl")]
    pub ttl_s: u64,
    /// Memory budget of this domain's L1, in MiB; past it, expired entries go first,
    /// then `low`, `medium`, `high` and last `critical` ones, oldest first.
    #[serde(default = "default_l1_budget")]
    pub budget_mib: u64,
}

fn default_l1_ttl() -> u64 {
    30
}

fn default_l1_budget() -> u64 {
    16
}

/// One `[cache.warm.<domain>]` (the specification's `CacheWarmingDto`): the keys the
/// domain's loader is asked for at start and on every round, one host per round.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct WarmConfig {
    /// The keys to load.
    pub keys: Vec<String>,
    /// Seconds between rounds (the specification's warming interval: 60). A round
    /// comes sooner when the entries would expire first: at 80% of their TTL.
    #[serde(default = "default_warm_interval")]
    pub interval_s: u64,
    /// TTL of the warmed entries in seconds; default: the loader's, else the domain's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_s: Option<u32>,
}

fn default_warm_interval() -> u64 {
    60
}

/// One `[[cache.invalidate]]`: an event whose routing key matches `on` removes, from
/// `domain`, the entries of `keys`, those filed under `tags` and those matching
/// `pattern`, each filled from the event's JSON payload (`"product:{id}"`,
/// `"{vendor.id}"`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct InvalidationRule {
    /// Routing-key pattern of the events (`product.updated`, `product.*`).
    pub on: String,
    /// The cache domain.
    pub domain: String,
    /// Keys to remove.
    #[serde(default)]
    pub keys: Vec<String>,
    /// Tags whose entries to remove.
    #[serde(default)]
    pub tags: Vec<String>,
    /// A glob of keys to remove.
    #[serde(default)]
    pub pattern: Option<String>,
}

/// An [`InvalidationRule`]'s pattern and templates, parsed.
#[derive(Debug, Clone)]
pub struct ParsedRule {
    /// Which events it applies to.
    pub on: crate::names::routing::TopicPattern,
    /// Keys to remove.
    pub keys: Vec<crate::names::template::Template>,
    /// Tags whose entries to remove.
    pub tags: Vec<crate::names::template::Template>,
    /// A glob of keys to remove.
    pub pattern: Option<crate::names::template::Template>,
}

impl InvalidationRule {
    /// The rule parsed; the reason when it is malformed (named by the caller).
    pub fn parse(&self) -> Result<ParsedRule, String> {
        use crate::names::template::Template;
        let on =
            crate::names::routing::TopicPattern::parse(&self.on).map_err(|e| format!("on: {e}"))?;
        if self.keys.is_empty() && self.tags.is_empty() && self.pattern.is_none() {
            return Err("names no keys, tags or pattern to invalidate".into());
        }
        let templates = |texts: &[String]| {
            texts
                .iter()
                .map(|t| Template::parse(t))
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(ParsedRule {
            on,
            keys: templates(&self.keys)?,
            tags: templates(&self.tags)?,
            pattern: self.pattern.as_deref().map(Template::parse).transpose()?,
        })
    }
}

/// `[store]`.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// Memory budget of the embedded store, in MiB; writes past it fail with
    /// `unavailable` (as Redis does under `maxmemory` with `noeviction`).
    pub memory_budget_mib: u64,
    /// Largest accepted value, in bytes (seed: 10 MB), on every backend.
    pub max_value_bytes: usize,
}

/// `[messaging]`.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct MessagingConfig {
    /// How long a publish waits for the broker to take the message (its confirm, on
    /// RabbitMQ), in ms; past it the guest gets `unavailable`.
    pub confirm_timeout_ms: u64,
    /// With Redis configured, how long a message's status stays readable from every
    /// host after its last change, in ms (default 24 h, the dead-letter TTL).
    pub status_ttl_ms: u64,
}

/// The priority a queue type's messages default to.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum QueuePriority {
    /// 1
    Low,
    /// 5
    #[default]
    Normal,
    /// 8
    High,
    /// 10
    Urgent,
}

impl QueuePriority {
    /// The AMQP priority (the seed's 1/5/8/10).
    pub fn level(self) -> u8 {
        match self {
            Self::Low => 1,
            Self::Normal => 5,
            Self::High => 8,
            Self::Urgent => 10,
        }
    }
}

/// `[queues.<type>]`: the seed's queue configuration and `RetryConfig`.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct QueuePolicy {
    /// Whether the queue survives a broker restart.
    pub durable: bool,
    /// Retries after the first attempt before dead-lettering (1 to 10).
    pub max_retries: u32,
    /// Delay before the first retry, in ms (at least 100).
    pub retry_delay_ms: u64,
    /// Each further retry waits this much longer (1.0 to 10.0).
    pub backoff_multiplier: f64,
    /// Upper bound of the retry delay, in ms (at least 1000).
    pub max_retry_delay_ms: u64,
    /// Default priority of the queue's messages.
    pub priority: QueuePriority,
    /// Messages not consumed within this many ms of reaching the queue are
    /// dead-lettered with reason `expired` (the specification's `messageTtl`; none:
    /// they wait forever). Changes apply to a running deployment (a policy on RabbitMQ).
    pub message_ttl_ms: Option<u64>,
    /// Most ready messages the queue holds (the specification's `maxLength`; none: no
    /// bound). What happens at the bound is `overflow`.
    pub max_length: Option<u32>,
    /// What a full queue does with one more message.
    pub overflow: Overflow,
    /// On RabbitMQ, a classic or a quorum queue (none: `amqp.queue_kind`). A change
    /// applies on a reload: the queue type's new queues take the new messages and
    /// the old ones drain into them, then go (RabbitMQ cannot change a queue's kind
    /// in place).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<QueueKind>,
}

/// What a RabbitMQ queue is.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum QueueKind {
    /// On one node: lost with that node's disk.
    #[default]
    Classic,
    /// Replicated over the cluster (Raft): a confirmed message is on a majority of
    /// the nodes and survives the loss of a minority.
    Quorum,
}

/// What a queue at its `max_length` does with one more message.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Overflow {
    /// Refuse it: the publish fails with `unavailable` (the broker nacks it) and the
    /// publisher tries again later; nothing is dropped.
    #[default]
    RejectPublish,
    /// Take it and dead-letter the message at the head of the queue (reason `maxlen`);
    /// if the dead-letter queue is full too, that message is lost.
    DropHead,
}

impl Overflow {
    /// RabbitMQ's name for it (`x-overflow`, the `overflow` policy key).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RejectPublish => "reject-publish",
            Self::DropHead => "drop-head",
        }
    }
}

impl QueuePolicy {
    /// The delay before attempt `attempt + 1`, given that `attempt` failed (1-based).
    pub fn retry_delay(&self, attempt: u32) -> std::time::Duration {
        let exponent = attempt.saturating_sub(1).min(30) as i32;
        let delay = self.retry_delay_ms as f64 * self.backoff_multiplier.powi(exponent);
        std::time::Duration::from_millis(delay.min(self.max_retry_delay_ms as f64) as u64)
    }
}

/// `[dead_letter]`.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DeadLetterConfig {
    /// How long a dead letter is kept, in ms (seed: 24 h).
    pub ttl_ms: u64,
    /// Most dead letters kept (seed: 10 000). A full queue refuses more (nothing is
    /// dropped to make room): a refused letter waits in its own queue's retry queue.
    pub max_length: u32,
    /// How long a letter the full queue refused waits in its retry queue before it is
    /// dead-lettered again (without running its handler); 100 ms to 1 h.
    pub retry_when_full_ms: u64,
}

/// `[lock]`: the seed's lock constants.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LockConfig {
    /// Largest lease TTL, in ms (seed: 300 s; the smallest is always 1 s).
    pub max_ttl_ms: u32,
    /// Most retries of one acquire (seed: 10).
    pub max_retries: u32,
}

/// The `wasi:keyvalue` bucket every plugin may open: its own store namespace (so no
/// shared bucket may take the name).
pub const DEFAULT_BUCKET: &str = "default";

/// `[plugins.<name>]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct PluginConfig {
    /// Cache domains the plugin may use.
    pub cache_domains: Vec<String>,
    /// Routing-key patterns the plugin may publish to (`*` and `#` as in AMQP).
    pub publish: Vec<String>,
    /// Routing-key patterns the plugin may subscribe to: each routing key its
    /// subscriptions bind must be covered by one of them (`order.*` covers
    /// `order.created`, `#` covers everything). None granted: it may bind nothing.
    pub subscribe: Vec<String>,
    /// Free-form settings the plugin reads through `config`.
    pub settings: BTreeMap<String, String>,
    /// Origins the plugin may send HTTP requests to (`https://api.mail.example`,
    /// `https://*.gateway.example:8443`, `http://127.0.0.1:9000`); none: no request
    /// leaves. See [`OutboundGrant`].
    pub outbound: Vec<String>,
    /// Shared `wasi:keyvalue` buckets the plugin may open besides `default` (its own
    /// store namespace): every plugin granted a bucket sees the same keys.
    pub buckets: Vec<String>,
    /// The queue type a standard consumer (a component exporting
    /// `wasmcloud:messaging/handler` instead of techub's `handler`) consumes, bound
    /// with each `subscribe` pattern as given. A techub plugin names its own.
    pub queue: Option<String>,
    /// `[plugins.<name>.secrets]`: values the plugin reads through `config` like its
    /// settings, taken from the environment or a file and never printed.
    pub secrets: BTreeMap<String, SecretRef>,
    /// Limit overrides.
    pub limits: LimitOverrides,
    /// Set to `false` to keep the plugin unloaded.
    pub enabled: Option<bool>,
}

impl HostConfig {
    /// Parses and validates `host.toml` text. Relative paths stay relative; see
    /// [`HostConfig::load`] to resolve them against the file.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let mut config = Self::parse_unread(text)?;
        config.read_secrets()?;
        Ok(config)
    }

    /// Parses and validates, without reading secrets (whose files may be relative to a
    /// file's directory).
    fn parse_unread(text: &str) -> Result<Self, ConfigError> {
        let table: toml::Table =
            toml::from_str(text).map_err(|e| ConfigError::Syntax(e.to_string()))?;
        merge::refuse_moved_fields(&table)?;
        let config: HostConfig = table.try_into().map_err(|e: toml::de::Error| {
            ConfigError::Syntax(suggest::with_suggestion(e.to_string()))
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Reads, parses and validates a config file; relative paths in it are resolved
    /// against the file's directory.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        Self::from_file_text(path, &text)
    }

    /// Parses and validates `text`, read from `path` (relative paths resolve against
    /// its directory).
    pub fn from_file_text(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let mut config = Self::parse_unread(text).map_err(|e| e.in_file(path))?;
        let base = path.parent().unwrap_or(Path::new("."));
        config.resolve_paths(base);
        config.read_secrets().map_err(|e| e.in_file(path))?;
        Ok(config)
    }

    /// Makes relative paths absolute against `base`.
    pub fn resolve_paths(&mut self, base: &Path) {
        if self.host.plugins_dir.is_relative() {
            self.host.plugins_dir = base.join(&self.host.plugins_dir);
        }
        if self.host.cache_dir.is_relative() {
            self.host.cache_dir = base.join(&self.host.cache_dir);
        }
        if let Some(ca) = &mut self.http.ca_file
            && ca.is_relative()
        {
            *ca = base.join(&*ca);
        }
        if let Some(key) = &mut self.amqp.dead_letter_key {
            key.resolve_path(base);
        }
        for plugin in self.plugins.values_mut() {
            for secret in plugin.secrets.values_mut() {
                secret.resolve_path(base);
            }
        }
        self.webhooks.resolve_paths(base);
        if let Some(stand_ins) = &mut self.stand_ins {
            for secret in [&mut stand_ins.key, &mut stand_ins.webhook_secret]
                .into_iter()
                .flatten()
            {
                secret.resolve_path(base);
            }
        }
    }

    /// Reads every plugin's secrets and `amqp.dead_letter_key` (at start and on every
    /// reload) and checks `http.ca_file`; the error names the field.
    pub fn read_secrets(&mut self) -> Result<(), ConfigError> {
        self.http.check_ca_file()?;
        if let Some(key) = &mut self.amqp.dead_letter_key {
            key.load("amqp.dead_letter_key")?;
        }
        for (name, plugin) in &mut self.plugins {
            for (key, secret) in &mut plugin.secrets {
                secret.load(&format!("plugins.{name}.secrets.{key}"))?;
            }
        }
        self.webhooks.read_secrets()?;
        if let Some(stand_ins) = &mut self.stand_ins {
            if let Some(key) = &mut stand_ins.key {
                key.load("stand_ins.key")?;
            }
            if let Some(secret) = &mut stand_ins.webhook_secret {
                secret.load("stand_ins.webhook_secret")?;
            }
        }
        Ok(())
    }

    /// The effective limits of `plugin`: its overrides over `[limits]`.
    pub fn limits_of(&self, plugin: &str) -> Limits {
        let mut limits = self.limits;
        if let Some(o) = self.plugins.get(plugin).map(|p| p.limits) {
            limits.memory_mib = o.memory_mib.unwrap_or(limits.memory_mib);
            limits.cpu_ms = o.cpu_ms.unwrap_or(limits.cpu_ms);
            limits.timeout_ms = o.timeout_ms.unwrap_or(limits.timeout_ms);
            limits.max_host_calls = o.max_host_calls.unwrap_or(limits.max_host_calls);
            limits.max_publishes = o.max_publishes.unwrap_or(limits.max_publishes);
            limits.max_leases = o.max_leases.unwrap_or(limits.max_leases);
            limits.max_output_bytes = o.max_output_bytes.unwrap_or(limits.max_output_bytes);
            limits.prefetch = o.prefetch.unwrap_or(limits.prefetch);
            limits.backoff_after_violations = o
                .backoff_after_violations
                .unwrap_or(limits.backoff_after_violations);
            limits.max_log_records_per_s = o
                .max_log_records_per_s
                .unwrap_or(limits.max_log_records_per_s);
            limits.reuse_instance = o.reuse_instance.unwrap_or(limits.reuse_instance);
            limits.reuse_idle_ms = o.reuse_idle_ms.unwrap_or(limits.reuse_idle_ms);
            limits.max_http_requests = o.max_http_requests.unwrap_or(limits.max_http_requests);
            limits.max_http_in_flight = o.max_http_in_flight.unwrap_or(limits.max_http_in_flight);
            limits.http_connect_timeout_ms = o
                .http_connect_timeout_ms
                .unwrap_or(limits.http_connect_timeout_ms);
            limits.http_first_byte_timeout_ms = o
                .http_first_byte_timeout_ms
                .unwrap_or(limits.http_first_byte_timeout_ms);
            limits.http_between_bytes_timeout_ms = o
                .http_between_bytes_timeout_ms
                .unwrap_or(limits.http_between_bytes_timeout_ms);
            limits.max_http_request_bytes = o
                .max_http_request_bytes
                .unwrap_or(limits.max_http_request_bytes);
            limits.max_http_response_bytes = o
                .max_http_response_bytes
                .unwrap_or(limits.max_http_response_bytes);
        }
        limits
    }

    /// The admin token: `host.admin_token`, or the environment variable that
    /// `host.admin_token_env` names (which must then be set and non-empty).
    pub fn admin_token(&self) -> Result<Option<String>, ConfigError> {
        if let Some(variable) = &self.host.admin_token_env {
            return match std::env::var(variable) {
                Ok(token) if token.len() >= 16 => Ok(Some(token)),
                _ => Err(ConfigError::Invalid {
                    field: "host.admin_token_env".into(),
                    message: format!(
                        "names {variable}, which must be set to a token of at least 16 characters"
                    ),
                }),
            };
        }
        Ok(self.host.admin_token.clone())
    }

    /// `[plugins.<name>]` sections that name no plugin among `plugin_names` (the files
    /// of the plugins directory): likely a typo, so warned about.
    pub fn unknown_plugin_sections(&self, plugin_names: &[String]) -> Vec<String> {
        self.plugins
            .keys()
            .filter(|name| !plugin_names.contains(name))
            .map(|name| {
                format!(
                    "[plugins.{name}] names no plugin file {name}.wasm in the plugins directory"
                )
            })
            .collect()
    }

    /// Plugin files with no `[plugins.<name>]` section: they run with no grants (no
    /// cache domain, subscription or publish), which is rarely what was meant.
    pub fn plugins_without_section(&self, plugin_names: &[String]) -> Vec<String> {
        plugin_names
            .iter()
            .filter(|name| !self.plugins.contains_key(*name))
            .map(|name| {
                format!(
                    "plugin file {name}.wasm has no [plugins.{name}] section: it has no grants (cache_domains, subscribe, publish); add one"
                )
            })
            .collect()
    }

    /// Queue types that are not the specification's and that nothing among
    /// `subscribed` consumes: likely a typo of a seed type, so warned about.
    pub fn unused_queue_types<'a>(
        &self,
        subscribed: impl IntoIterator<Item = &'a str>,
    ) -> Vec<String> {
        let subscribed: std::collections::BTreeSet<&str> = subscribed.into_iter().collect();
        let seed = defaults::seed_queues();
        self.queues
            .keys()
            .filter(|q| !seed.contains_key(*q) && !subscribed.contains(q.as_str()))
            .map(|q| {
                format!("[queues.{q}] is not a seed queue type and no plugin subscribes to it")
            })
            .collect()
    }

    /// The largest memory limit any plugin may have, which sizes the pool's slots.
    pub fn max_memory_mib(&self) -> u32 {
        self.plugins
            .keys()
            .map(|name| self.limits_of(name).memory_mib)
            .chain([self.limits.memory_mib])
            .max()
            .unwrap_or(self.limits.memory_mib)
    }
}
