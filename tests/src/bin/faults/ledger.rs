//! The confirmed stream into the host, and what the ledger fixture recorded in Redis.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use techub_host::capability::messaging::Broker;
use techub_host::capability::messaging::amqp::AmqpBroker;
use techub_host::capability::redis_client::{RedisClient, Retry};
use techub_host::config::HostConfig;

/// How long a stream lasts, whatever its length: faults land under load.
pub const STREAM: std::time::Duration = std::time::Duration::from_secs(12);

/// Publishes with confirms and remembers which ids the broker confirmed.
#[derive(Clone)]
pub struct Publisher {
    broker: AmqpBroker,
    confirmed: Arc<Mutex<Vec<String>>>,
}

impl Publisher {
    pub async fn connect(config: &HostConfig) -> anyhow::Result<Self> {
        let broker = AmqpBroker::connect(
            &config.amqp,
            config.dead_letter,
            config.messaging,
            Default::default(),
            techub_host::capability::messaging::amqp::seal::DeathSeal::with_key(b"test key"),
        )
        .await?;
        Ok(Self {
            broker,
            confirmed: Arc::default(),
        })
    }

    /// Publishes `count` messages with `routing_key` at a steady rate over
    /// [`STREAM`], in a task; how many it tried.
    pub fn stream(
        &self,
        routing_key: &'static str,
        count: usize,
    ) -> tokio::task::JoinHandle<anyhow::Result<usize>> {
        let this = self.clone();
        let mut pace = tokio::time::interval(STREAM / count.max(1) as u32);
        pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::spawn(async move {
            for i in 0..count {
                pace.tick().await;
                let mut envelope = techub_tests::envelope(routing_key, i.to_string().into_bytes());
                envelope.id = format!("m-{i}");
                if this.broker.publish(envelope, None).await.is_ok() {
                    this.confirmed
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(format!("m-{i}"));
                }
            }
            Ok(count)
        })
    }

    /// The broker it publishes through.
    pub fn broker(&self) -> &AmqpBroker {
        &self.broker
    }

    /// The ids confirmed so far.
    pub fn confirmed(&self) -> Vec<String> {
        self.confirmed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub async fn dead_letter_depth(&self) -> anyhow::Result<u64> {
        self.broker
            .dead_letter_depth()
            .await
            .map_err(anyhow::Error::msg)
    }
}

/// The ledger fixture's records, read from Redis.
pub struct Ledger {
    redis: RedisClient,
    prefix: String,
}

impl Ledger {
    /// The store of `plugin` in the Redis `config` names.
    pub async fn new(config: &HostConfig, plugin: &str) -> anyhow::Result<Self> {
        let redis = RedisClient::connect(&config.redis, Default::default()).await?;
        Ok(Self {
            redis,
            prefix: format!("{}store:{plugin}:", config.host.key_prefix),
        })
    }

    /// The Redis client the ledger reads with.
    pub fn redis(&self) -> &RedisClient {
        &self.redis
    }

    async fn query<T: redis::FromRedisValue>(
        &self,
        command: &'static str,
        key: &str,
    ) -> anyhow::Result<T> {
        let key = format!("{}{key}", self.prefix);
        // Asked again for up to 30 s: a scenario may take the ledger's Redis primary
        // away, and the ledger is read while a replica takes over.
        let asked = std::time::Instant::now();
        loop {
            let answer = self
                .redis
                .run(command, Retry::Idempotent, |mut c| {
                    let cmd = redis::cmd(command).arg(&key).clone();
                    async move { cmd.query_async(&mut c).await }
                })
                .await;
            match answer {
                Ok(answer) => return Ok(answer),
                Err(error) if asked.elapsed() > std::time::Duration::from_secs(30) => {
                    return Err(anyhow::Error::msg(error));
                }
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
            }
        }
    }

    /// Ids whose handling finished (the ledger fixture's `handled` set).
    pub async fn handled(&self) -> anyhow::Result<HashSet<String>> {
        self.members("handled").await
    }

    /// The members of the set `key`.
    pub async fn members(&self, key: &str) -> anyhow::Result<HashSet<String>> {
        self.query("SMEMBERS", key).await
    }

    /// The integer at `key` (0 when missing).
    pub async fn number(&self, key: &str) -> anyhow::Result<i64> {
        Ok(self.query::<Option<i64>>("GET", key).await?.unwrap_or(0))
    }

    /// The bytes at `key`.
    pub async fn bytes(&self, key: &str) -> anyhow::Result<Option<Vec<u8>>> {
        self.query("GET", key).await
    }

    /// Deliveries per id.
    pub async fn attempts(&self) -> anyhow::Result<HashMap<String, u64>> {
        self.query("HGETALL", "attempts").await
    }

    /// Deliveries started so far (every attempt of every id).
    pub async fn deliveries(&self) -> anyhow::Result<i64> {
        self.number("started").await
    }

    /// Deliveries started and not (yet) handled: in flight, or failed.
    pub async fn unfinished(&self) -> anyhow::Result<i64> {
        let handled: i64 = self.query("SCARD", "handled").await?;
        Ok(self.deliveries().await? - handled)
    }

    /// Effects made through the idempotency helper.
    pub async fn effects(&self) -> anyhow::Result<i64> {
        self.number("{ledger}effects").await
    }
}
