//! `bench webhooks`: the time from a provider's webhook request to its answer (the
//! host answers only after RabbitMQ confirms the publish), one request at a time over
//! a kept-alive connection, against the native floor: the same message published
//! straight to the broker as a mandatory, confirmed publish. Alternating rounds
//! ([`super::harness::Rounds`]; a rate is requests per second of their summed
//! times), with each side's p50 and p99 over every round.

use super::harness::{Count, Latencies, Rounds};
use base64::Engine as _;
use bytes::Bytes;
use hmac::Mac as _;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::time::{Duration, Instant};
use techub_host::Platform;
use techub_host::capability::messaging::QueueSpec;
use techub_host::config::{BrokerBackend, SecretRef, Verify, WebhookRoute, WebhooksConfig};
use techub_tests::{PluginDir, config, services, unique};

static REQUESTS: Count<usize> = Count::new(500, 16);
static ROUNDS: Count<usize> = Count::new(5, 1);
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn sign(id: &str, timestamp: u64, body: &[u8]) -> String {
    let key = base64::engine::general_purpose::STANDARD
        .decode(SECRET.trim_start_matches("whsec_"))
        .expect("the secret is base64");
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).expect("any key length");
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    )
}

/// Each webhook's time from request to answer.
async fn webhook_round(
    client: &Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    url: &str,
    body: &Bytes,
) -> anyhow::Result<Vec<Duration>> {
    let mut times = Vec::with_capacity(*REQUESTS);
    for _ in 0..*REQUESTS {
        let id = format!("msg_{}", uuid::Uuid::new_v4().simple());
        let timestamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs();
        let request = hyper::Request::post(url)
            .header("webhook-id", &id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", sign(&id, timestamp, body))
            .header("content-type", "application/json")
            .body(Full::new(body.clone()))?;
        let started = Instant::now();
        let response = client.request(request).await?;
        let status = response.status();
        response.into_body().collect().await?;
        times.push(started.elapsed());
        anyhow::ensure!(status == 200, "status {status}");
    }
    Ok(times)
}

/// Each confirmed, mandatory publish of the same message straight to the broker.
async fn native_round(
    platform: &Platform,
    routing_key: &str,
    body: &Bytes,
) -> anyhow::Result<Vec<Duration>> {
    let mut times = Vec::with_capacity(*REQUESTS);
    for _ in 0..*REQUESTS {
        let envelope = techub_tests::envelope(routing_key, body.to_vec());
        let started = Instant::now();
        let routed = platform
            .services
            .messaging
            .broker
            .publish_routed(envelope)
            .await?;
        times.push(started.elapsed());
        anyhow::ensure!(routed, "the bench queue is bound");
    }
    Ok(times)
}

pub async fn webhooks() -> anyhow::Result<()> {
    let topic = unique("bench-webhooks");
    let routing_key = format!("{topic}.event");
    let dir = PluginDir::with(&[]);
    let mut config = config(&dir);
    config.backends.messaging = BrokerBackend::Amqp;
    config.amqp = services::amqp_config();
    config.webhooks = WebhooksConfig {
        addr: Some("127.0.0.1:0".into()),
        routes: [(
            "bench".to_string(),
            WebhookRoute {
                path: "/hooks/bench".into(),
                routing_key: routing_key.clone(),
                verify: Verify::StandardWebhooks,
                secret: Some(SecretRef::literal(SECRET)),
                max_bytes: None,
                tolerance: None,
            },
        )]
        .into_iter()
        .collect(),
    };
    let platform = Platform::start(config)
        .await
        .map_err(|e| anyhow::anyhow!(services::rabbitmq_hint(&e)))?;
    // A queue for the messages, emptied as they come so that it does not grow.
    let queue = unique("bench-webhooks-sink");
    let broker = platform.services.messaging.broker.clone();
    broker
        .declare_queue(&QueueSpec {
            name: queue.clone(),
            bindings: vec![routing_key.clone()],
            durable: false,
            limits: Default::default(),
        })
        .await?;
    let mut consumer = broker.consume(&queue, 100).await?;
    let drain = tokio::spawn(async move {
        while let Some(delivery) = consumer.next().await {
            let _ = delivery.ack().await;
        }
    });
    let addr = platform
        .webhooks_addr()
        .ok_or_else(|| anyhow::anyhow!("no webhook listener"))?;
    let url = format!("http://{addr}/hooks/bench");
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let body = Bytes::from(
        serde_json::json!({ "type": "payment.succeeded", "data": { "order_id": "o-1", "amount": 2000, "currency": "eur" } })
            .to_string(),
    );
    println!(
        "bench webhooks: {REQUESTS} signed webhooks (Standard Webhooks, {} bytes) one at a time per round over a kept-alive connection, to a confirmed RabbitMQ publish, {ROUNDS} alternating rounds per side",
        body.len()
    );
    webhook_round(&client, &url, &body).await?;
    native_round(&platform, &routing_key, &body).await?;
    let sides = ["webhook", "broker's own confirmed publish"];
    let mut latencies = Latencies::new(sides.len());
    let rounds = Rounds::alternate(&sides, *ROUNDS, async |side| {
        latencies
            .timed(side, async {
                match side {
                    0 => webhook_round(&client, &url, &body).await,
                    _ => native_round(&platform, &routing_key, &body).await,
                }
            })
            .await
    })
    .await?;
    rounds.report(
        "webhooks: request to confirmed publish, one at a time",
        "req",
        &[(0, 1)],
    );
    latencies.report(&sides);
    drain.abort();
    broker.delete_queue(&queue).await?;
    platform.shutdown().await;
    Ok(())
}
