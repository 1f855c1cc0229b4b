//! `request-reply`: the round trip of `messaging.request` between two plugins on
//! RabbitMQ (the asker's own clock around the call: publish confirmed, the answerer's
//! invocation, its confirmed reply, the match) against a native lapin request-reply
//! doing the same broker work (a confirmed request through a topic exchange into a
//! priority queue, as plugin queues are, a consumer that acks after its confirmed
//! reply to an exclusive reply queue), in the same run.

use super::harness::Count;
use crate::percentile;
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
use techub_host::config::{BrokerBackend, KvBackend};
use techub_tests::{PluginDir, config, grant, services, sink, unique};

static ROUND_TRIPS: Count<usize> = Count::new(300, 16);

pub async fn request_reply() -> anyhow::Result<()> {
    let platform_times = through_plugins().await?;
    let native_times = native().await?;
    let (p50, p99) = (
        percentile(&platform_times, 0.5),
        percentile(&platform_times, 0.99),
    );
    let (n50, n99) = (
        percentile(&native_times, 0.5),
        percentile(&native_times, 0.99),
    );
    println!(
        "request-reply on RabbitMQ over {ROUND_TRIPS} round trips: plugins p50 {p50:?} p99 {p99:?}; native lapin p50 {n50:?} p99 {n99:?}; platform/native p50 {:.2}x p99 {:.2}x",
        p50.as_secs_f64() / n50.as_secs_f64(),
        p99.as_secs_f64() / n99.as_secs_f64(),
    );
    Ok(())
}

/// Each round trip as the asker measured it.
async fn through_plugins() -> anyhow::Result<Vec<Duration>> {
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
    let mut answers = sink(&platform, &["answers.*"]).await;
    let mut times = Vec::with_capacity(*ROUND_TRIPS);
    for round in 0..*ROUND_TRIPS + 20 {
        // Transient, as the native request: a request's caller waits in memory, so
        // writing it to disk buys nothing.
        let ask =
            json!({"key": "rpc.echo", "body": "ping", "timeout_ms": 5_000, "transient": true});
        platform
            .publish("ask.bench", ask.to_string().into_bytes(), None)
            .await?;
        let delivery = tokio::time::timeout(Duration::from_secs(30), answers.next())
            .await?
            .ok_or_else(|| anyhow::anyhow!("the sink closed"))?;
        let report: Value = serde_json::from_slice(&delivery.envelope().payload)?;
        delivery.ack().await.map_err(anyhow::Error::msg)?;
        let rtt = report["rtt_us"]
            .as_u64()
            .ok_or_else(|| anyhow::anyhow!("the request failed: {report}"))?;
        // The first rounds warm the instance pool and the channels.
        if round >= 20 {
            times.push(Duration::from_micros(rtt));
        }
    }
    platform.shutdown().await;
    times.sort();
    Ok(times)
}

/// Each round trip of a native requester and responder on one connection.
async fn native() -> anyhow::Result<Vec<Duration>> {
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
            let (Some(to), Some(id)) = (props.reply_to().clone(), props.correlation_id().clone())
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
    let mut replies = requester
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
    let mut times = Vec::with_capacity(*ROUND_TRIPS);
    for round in 0..*ROUND_TRIPS + 20 {
        let id = uuid::Uuid::new_v4().to_string();
        let started = Instant::now();
        requester
            .basic_publish(
                exchange.as_str().into(),
                "rpc.echo".into(),
                BasicPublishOptions::default(),
                b"ping",
                BasicProperties::default()
                    .with_reply_to(reply_queue.clone())
                    .with_correlation_id(id.as_str().into()),
            )
            .await?
            .await?;
        loop {
            let reply = tokio::time::timeout(Duration::from_secs(30), replies.next())
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
        if round >= 20 {
            times.push(started.elapsed());
        }
    }
    answering.abort();
    let _ = connection.close(200, "done".into()).await;
    times.sort();
    Ok(times)
}
