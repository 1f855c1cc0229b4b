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
    let broker: Arc<dyn Broker> = Arc::new(super::amqp_broker(config).await?);
    let publisher = publisher.clone();
    native_consumer(
        broker,
        cache.clone(),
        PREFETCH,
        *MESSAGES,
        true,
        move |routing_key| {
            let ids = (0..*MESSAGES).map(|i| format!("n{i}")).collect();
            publish_all(publisher, routing_key, ids)
        },
    )
    .await
}

/// A native consumer's round: `count` messages that `publish` sends to the routing
/// key it is given (while they are consumed), from a queue of their own on `broker`
/// at `prefetch`, a task per delivery doing the user-notifications work (when
/// `user_notifications`, else nothing) and the ack. The baseline of `messages` and
/// `embedded`.
pub async fn native_consumer(
    broker: Arc<dyn Broker>,
    cache: Arc<dyn CacheBackend>,
    prefetch: u16,
    count: usize,
    user_notifications: bool,
    publish: impl FnOnce(String) -> tokio::task::JoinHandle<anyhow::Result<()>>,
) -> anyhow::Result<Sample> {
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
        .consume(&queue, prefetch)
        .await
        .map_err(anyhow::Error::msg)?;
    let sample = harness::sample(async {
        let publishing = publish(routing_key);
        let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
        for _ in 0..count {
            let Some(delivery) = consumer.next().await else {
                anyhow::bail!("consumer closed")
            };
            let (cache, broker, done) = (cache.clone(), broker.clone(), done_tx.clone());
            tokio::spawn(async move {
                if user_notifications {
                    let payload = &delivery.envelope().payload;
                    user_notification(cache.as_ref(), broker.as_ref(), payload).await;
                }
                delivery.ack().await.expect("ack");
                let _ = done.send(());
            });
        }
        for _ in 0..count {
            done_rx.recv().await;
        }
        publishing.await??;
        Ok(count as u64)
    })
    .await;
    let _ = broker.delete_queue(&queue).await;
    sample
}

/// What user-notifications does with a `user.created`, done natively: parse the
/// JSON, cache the user in the `users` domain with its TTL and the user's tag, publish
/// the follow-up. The baseline of `messages` and `embedded`.
pub async fn user_notification(cache: &dyn CacheBackend, broker: &dyn Broker, payload: &[u8]) {
    let user: serde_json::Value = serde_json::from_slice(payload).expect("bench JSON");
    let id = user["id"].as_str().unwrap_or_default().to_string();
    let write = CacheWrite {
        ttl: Duration::from_secs(1800),
        tags: vec![format!("user:{id}")],
        priority: techub_host::capability::cache::Priority::Medium,
    };
    cache
        .set_many("users", &[(id, payload.to_vec())], &write)
        .await
        .expect("cache write");
    broker
        .publish(envelope("notification.email", b"{}".to_vec()), None)
        .await
        .expect("follow-up");
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
    let publisher = super::amqp_broker(&config).await?;
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
