//! `request-reply`: the round trip of `messaging.request` between two plugins on
//! RabbitMQ (the asker's own clock around the call: publish confirmed, the answerer's
//! invocation, its confirmed reply, the match) against a native lapin request-reply
//! doing the same broker work (a confirmed request through a topic exchange into a
//! priority queue, as plugin queues are, a consumer that acks after its confirmed
//! reply to an exclusive reply queue), in alternating rounds
//! ([`super::harness::Rounds`]), with each side's p50 and p99 over every round.

use super::harness::Count;
use super::harness::{Latencies, Rounds};
use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions,
    ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use techub_host::Platform;
use techub_host::capability::messaging::Consumer;
use techub_host::config::{BrokerBackend, KvBackend};
use techub_tests::{PluginDir, config, grant, services, sink, unique};

static ROUND_TRIPS: Count<usize> = Count::new(300, 16);
static ROUNDS: Count<usize> = Count::new(5, 1);
/// Round trips that warm each side (instance pool, channels) before any is measured.
const WARM_UP: usize = 20;

pub async fn request_reply() -> anyhow::Result<()> {
    let mut plugins = ThroughPlugins::start().await?;
    let mut native = Native::start().await?;
    plugins.round_trips(WARM_UP).await?;
    native.round_trips(WARM_UP).await?;
    let sides = ["plugins", "native lapin"];
    let mut latencies = Latencies::new(sides.len());
    let rounds = Rounds::alternate(&sides, *ROUNDS, async |side| {
        latencies
            .timed(side, async {
                match side {
                    0 => plugins.round_trips(*ROUND_TRIPS).await,
                    _ => native.round_trips(*ROUND_TRIPS).await,
                }
            })
            .await
    })
    .await?;
    rounds.report(
        &format!("request-reply on RabbitMQ, x{ROUND_TRIPS} round trips one at a time"),
        "trip",
        &[(0, 1)],
    );
    latencies.report(&sides);
    plugins.platform.shutdown().await;
    native.stop().await;
    Ok(())
}

/// The asker and answerer plugins on a platform, and a sink for the asker's reports.
struct ThroughPlugins {
    _dir: PluginDir,
    platform: Platform,
    answers: Box<dyn Consumer>,
}

impl ThroughPlugins {
    async fn start() -> anyhow::Result<Self> {
        let dir = PluginDir::with(&[("asker", "fixture_asker"), ("answerer", "fixture_answerer")]);
        let mut config = config(&dir);
        config.backends.messaging = BrokerBackend::Amqp;
        config.backends.cache = KvBackend::Memory;
        config.amqp = services::amqp_config();
        grant(&mut config, "asker", &[], &["rpc.*", "answers.*"]);
        grant(&mut config, "answerer", &[], &[]);
        let platform = Platform::start(config)
            .await
            .map_err(|e| anyhow::anyhow!(services::rabbitmq_hint(&e)))?;
        let answers = sink(&platform, &["answers.*"]).await;
        Ok(Self {
            _dir: dir,
            platform,
            answers,
        })
    }

    /// `count` round trips, each as the asker measured it (publish confirmed, the
    /// answerer's invocation, its confirmed reply, the match).
    async fn round_trips(&mut self, count: usize) -> anyhow::Result<Vec<Duration>> {
        let mut times = Vec::with_capacity(count);
        for _ in 0..count {
            // Transient, as the native request: a request's caller waits in memory, so
            // writing it to disk buys nothing.
            let ask =
                json!({"key": "rpc.echo", "body": "ping", "timeout_ms": 5_000, "transient": true});
            self.platform
                .publish("ask.bench", ask.to_string().into_bytes(), None)
                .await?;
            let delivery = tokio::time::timeout(Duration::from_secs(30), self.answers.next())
                .await?
                .ok_or_else(|| anyhow::anyhow!("the sink closed"))?;
            let report: Value = serde_json::from_slice(&delivery.envelope().payload)?;
            delivery.ack().await.map_err(anyhow::Error::msg)?;
            let rtt = report["rtt_us"]
                .as_u64()
                .ok_or_else(|| anyhow::anyhow!("the request failed: {report}"))?;
            times.push(Duration::from_micros(rtt));
        }
        Ok(times)
    }
}

/// A native requester and responder on one connection.
struct Native {
    connection: Connection,
    answering: tokio::task::JoinHandle<anyhow::Result<()>>,
    requester: lapin::Channel,
    exchange: String,
    reply_queue: lapin::types::ShortString,
    replies: lapin::Consumer,
}

impl Native {
    async fn start() -> anyhow::Result<Self> {
        let url = techub_host::config::AmqpConfig::default().url;
        let connection = Connection::connect(&url, ConnectionProperties::default()).await?;
        let requests = unique("native-rpc");
        let responder = connection.create_channel().await?;
        responder
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        let transient = QueueDeclareOptions {
            exclusive: true,
            auto_delete: true,
            ..QueueDeclareOptions::default()
        };
        let exchange = format!("{requests}.exchange");
        responder
            .exchange_declare(
                exchange.as_str().into(),
                lapin::ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    auto_delete: true,
                    ..ExchangeDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await?;
        let mut priority = FieldTable::default();
        priority.insert("x-max-priority".into(), AMQPValue::ShortShortUInt(10));
        responder
            .queue_declare(requests.as_str().into(), transient, priority)
            .await?;
        responder
            .queue_bind(
                requests.as_str().into(),
                exchange.as_str().into(),
                "rpc.*".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let mut incoming = responder
            .basic_consume(
                requests.as_str().into(),
                "responder".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let answering = tokio::spawn(async move {
            while let Some(Ok(delivery)) = incoming.next().await {
                let props = &delivery.properties;
                let (Some(to), Some(id)) =
                    (props.reply_to().clone(), props.correlation_id().clone())
                else {
                    continue;
                };
                let confirm = responder
                    .basic_publish(
                        "".into(),
                        to.as_str().into(),
                        BasicPublishOptions::default(),
                        &delivery.data,
                        BasicProperties::default().with_correlation_id(id),
                    )
                    .await?;
                confirm.await?;
                delivery.ack(BasicAckOptions::default()).await?;
            }
            anyhow::Ok(())
        });

        let requester = connection.create_channel().await?;
        requester
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        let reply_queue = requester
            .queue_declare("".into(), transient, FieldTable::default())
            .await?
            .name()
            .clone();
        let replies = requester
            .basic_consume(
                reply_queue.clone(),
                "requester".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..BasicConsumeOptions::default()
                },
                FieldTable::default(),
            )
            .await?;
        Ok(Self {
            connection,
            answering,
            requester,
            exchange,
            reply_queue,
            replies,
        })
    }

    /// `count` round trips, each timed from the request's publish to its reply.
    async fn round_trips(&mut self, count: usize) -> anyhow::Result<Vec<Duration>> {
        let mut times = Vec::with_capacity(count);
        for _ in 0..count {
            let id = uuid::Uuid::new_v4().to_string();
            let started = Instant::now();
            self.requester
                .basic_publish(
                    self.exchange.as_str().into(),
                    "rpc.echo".into(),
                    BasicPublishOptions::default(),
                    b"ping",
                    BasicProperties::default()
                        .with_reply_to(self.reply_queue.clone())
                        .with_correlation_id(id.as_str().into()),
                )
                .await?
                .await?;
            loop {
                let reply = tokio::time::timeout(Duration::from_secs(30), self.replies.next())
                    .await?
                    .ok_or_else(|| anyhow::anyhow!("the reply queue closed"))??;
                if reply
                    .properties
                    .correlation_id()
                    .as_ref()
                    .map(|c| c.as_str())
                    == Some(&id)
                {
                    break;
                }
            }
            times.push(started.elapsed());
        }
        Ok(times)
    }

    async fn stop(self) {
        self.answering.abort();
        let _ = self.connection.close(200, "done".into()).await;
    }
}
