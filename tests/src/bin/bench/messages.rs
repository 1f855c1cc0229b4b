//! `bench messages`: messages/s through the user-notifications example from RabbitMQ,
//! against a native consumer (the same lapin channel setup: same prefetch, manual
//! ack, a task per delivery) doing the same work per message: parse the JSON, write
//! the cache entry to Redis, publish the follow-up with a confirm. Alternating
//! rounds ([`super::harness::Rounds`]); each round publishes while it consumes.

use super::harness::Count;
use super::harness::{self, Rounds, Sample};
use super::{all_completed, envelope};
use std::sync::Arc;
use std::time::{Duration, Instant};
use techub_host::Platform;
use techub_host::capability::cache::redis::RedisCache;
use techub_host::capability::cache::{CacheBackend, CacheWrite};
use techub_host::capability::messaging::amqp::AmqpBroker;
use techub_host::capability::messaging::amqp::seal::DeathSeal;
use techub_host::capability::messaging::{Broker, QueueSpec};
use techub_host::config::{BrokerBackend, HostConfig, KvBackend};
use techub_tests::{PluginDir, config, grant, services, unique};

static MESSAGES: Count<usize> = Count::new(2_000, 48);
const PREFETCH: u16 = 16;
static ROUNDS: Count<usize> = Count::new(5, 1);

fn body(i: usize) -> Vec<u8> {
    serde_json::json!({ "id": format!("u{i}"), "email": "a@b.c", "name": "A" })
        .to_string()
        .into_bytes()
}

/// Publishes a message per id with `routing_key`, from a task of its own.
fn publish_all(
    publisher: AmqpBroker,
    routing_key: String,
    ids: Vec<String>,
) -> tokio::task::JoinHandle<anyhow::Result<()>> {
    tokio::spawn(async move {
        for (i, id) in ids.into_iter().enumerate() {
            let mut e = envelope(&routing_key, body(i));
            e.id = id;
            publisher
                .publish(e, None)
                .await
                .map_err(anyhow::Error::msg)?;
        }
        anyhow::Ok(())
    })
}

async fn connect(config: &HostConfig) -> anyhow::Result<AmqpBroker> {
    AmqpBroker::connect(
        &config.amqp,
        config.dead_letter,
        config.messaging,
        Default::default(),
        DeathSeal::with_key(b"test key"),
    )
    .await
    .map_err(anyhow::Error::msg)
}

/// One round through the platform: a host started for it, the messages published
/// while it consumes, measured until the last completed.
async fn through_platform(config: &HostConfig, publisher: &AmqpBroker) -> anyhow::Result<Sample> {
    let platform = Platform::start(config.clone()).await?;
    let ids: Vec<String> = (0..*MESSAGES)
        .map(|i| format!("p{i}-{}", unique("m")))
        .collect();
    let sample = harness::sample(async {
        let started = Instant::now();
        let publishing = publish_all(publisher.clone(), "user.created".into(), ids.clone());
        all_completed(&platform, &ids, started).await?;
        publishing.await??;
        Ok(*MESSAGES as u64)
    })
    .await;
    platform.shutdown().await;
    sample
}

/// One round of the native consumer on a queue of its own.
async fn native(
    config: &HostConfig,
    publisher: &AmqpBroker,
    cache: &Arc<RedisCache>,
) -> anyhow::Result<Sample> {
    let broker = connect(config).await?;
    let queue = unique("native");
    let routing_key = format!("{queue}.created");
    broker
        .declare_queue(&QueueSpec {
            name: queue.clone(),
            bindings: vec![routing_key.clone()],
            durable: true,
            limits: Default::default(),
        })
        .await
        .map_err(anyhow::Error::msg)?;
    let mut consumer = broker
        .consume(&queue, PREFETCH)
        .await
        .map_err(anyhow::Error::msg)?;
    let write = CacheWrite {
        ttl: Duration::from_secs(1800),
        tags: vec![],
        priority: techub_host::capability::cache::Priority::Medium,
    };
    let sample = harness::sample(async {
        let ids = (0..*MESSAGES).map(|i| format!("n{i}")).collect();
        let publishing = publish_all(publisher.clone(), routing_key.clone(), ids);
        let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
        for _ in 0..*MESSAGES {
            let Some(delivery) = consumer.next().await else {
                anyhow::bail!("consumer closed")
            };
            let (cache, broker, write, done) = (
                cache.clone(),
                broker.clone(),
                write.clone(),
                done_tx.clone(),
            );
            tokio::spawn(async move {
                let user: serde_json::Value =
                    serde_json::from_slice(&delivery.envelope().payload).expect("bench JSON");
                let id = user["id"].as_str().unwrap_or_default().to_string();
                // The same write as the plugin's: the users domain's TTL and the user's tag.
                let write = CacheWrite {
                    tags: vec![format!("user:{id}")],
                    ..write
                };
                cache
                    .set_many(
                        "users",
                        &[(id, delivery.envelope().payload.clone())],
                        &write,
                    )
                    .await
                    .expect("cache write");
                broker
                    .publish(envelope("notification.email", b"{}".to_vec()), None)
                    .await
                    .expect("follow-up");
                delivery.ack().await.expect("ack");
                let _ = done.send(());
            });
        }
        for _ in 0..*MESSAGES {
            done_rx.recv().await;
        }
        publishing.await??;
        Ok(*MESSAGES as u64)
    })
    .await;
    let _ = broker.delete_queue(&queue).await;
    sample
}

pub async fn messages() -> anyhow::Result<()> {
    let plugin_name = unique("user-notifications");
    let dir = PluginDir::with(&[(&plugin_name, "user_notifications")]);
    let mut config: HostConfig = config(&dir);
    config.backends.cache = KvBackend::Redis;
    config.backends.messaging = BrokerBackend::Amqp;
    config.host.key_prefix = format!("{}:", unique("techub-bench"));
    config.amqp = services::amqp_config();
    grant(&mut config, &plugin_name, &["users"], &["notification.*"])
        .limits
        .prefetch = Some(PREFETCH);
    let publisher = connect(&config).await?;
    let cache = Arc::new(RedisCache::new(
        services::redis().await,
        &config.host.key_prefix,
    ));
    // Warm-up, not counted: compiles the plugin, declares the queues, opens channels.
    through_platform(&config, &publisher).await?;
    native(&config, &publisher, &cache).await?;
    let rounds = Rounds::alternate(
        &["plugin", "native consumer"],
        *ROUNDS,
        async |side| match side {
            0 => through_platform(&config, &publisher).await,
            _ => native(&config, &publisher, &cache).await,
        },
    )
    .await?;
    rounds.report(
        &format!("messages x{MESSAGES}, prefetch {PREFETCH}, RabbitMQ + Redis"),
        "msg",
        &[(0, 1)],
    );
    Ok(())
}
