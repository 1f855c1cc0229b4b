//! `[webhooks]`: providers' webhooks, signed here by each scheme's published algorithm
//! (computed by these tests with `hmac`, never by the host's code), are published with
//! the provider's id once the broker confirms them; forged, replayed and oversize ones
//! are refused and publish nothing; while the broker is away a webhook is answered 503
//! and taken on the provider's retry.

use crate::e2e_services::on_services;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::Mac as _;
use serde_json::{Value, json};
use std::time::Duration;
use techub_host::Platform;
use techub_host::capability::messaging::{Consumer, Envelope};
use techub_host::config::{
    BrokerBackend, HostConfig, SecretRef, Verify, WebhookRoute, WebhooksConfig,
};
use techub_tests::{PluginDir, config, init_tracing, services, sink, unique};

const STRIPE_SECRET: &str = "whsec_stripe_test_secret";
const GITHUB_SECRET: &str = "It's a Secret to Everybody";
/// A Standard Webhooks secret: `whsec_` and the base64 of the key.
const STANDARD_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Stripe: `t=<ts>,v1=<hex HMAC-SHA256("<ts>.<body>")>` keyed by the whole secret.
fn stripe(secret: &str, timestamp: u64, body: &[u8]) -> Vec<(&'static str, String)> {
    let signed = [format!("{timestamp}.").as_bytes(), body].concat();
    let signature = hex::encode(hmac_sha256(secret.as_bytes(), &signed));
    vec![("stripe-signature", format!("t={timestamp},v1={signature}"))]
}

/// Standard Webhooks: `v1,<base64 HMAC-SHA256("<id>.<ts>.<body>")>` keyed by the
/// base64-decoded secret after `whsec_`.
fn standard(secret: &str, id: &str, timestamp: u64, body: &[u8]) -> Vec<(&'static str, String)> {
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    let signed = [format!("{id}.{timestamp}.").as_bytes(), body].concat();
    vec![
        ("webhook-id", id.to_string()),
        ("webhook-timestamp", timestamp.to_string()),
        (
            "webhook-signature",
            format!("v1,{}", STANDARD.encode(hmac_sha256(&key, &signed))),
        ),
    ]
}

/// GitHub: `sha256=<hex HMAC-SHA256(body)>`, the delivery's GUID and its event.
fn github(secret: &str, delivery: &str, event: &str, body: &[u8]) -> Vec<(&'static str, String)> {
    vec![
        (
            "x-hub-signature-256",
            format!(
                "sha256={}",
                hex::encode(hmac_sha256(secret.as_bytes(), body))
            ),
        ),
        ("x-github-delivery", delivery.to_string()),
        ("x-github-event", event.to_string()),
    ]
}

fn route(path: &str, routing_key: &str, verify: Verify, secret: Option<&str>) -> WebhookRoute {
    WebhookRoute {
        path: path.into(),
        routing_key: routing_key.into(),
        verify,
        secret: secret.map(SecretRef::literal),
        max_bytes: None,
        tolerance: None,
    }
}

/// A route per scheme on a free loopback port, publishing to `<topic>.<scheme>`.
fn every_scheme(topic: &str) -> WebhooksConfig {
    WebhooksConfig {
        addr: Some("127.0.0.1:0".into()),
        routes: [
            (
                "stripe",
                route(
                    "/hooks/stripe",
                    &format!("{topic}.stripe"),
                    Verify::Stripe,
                    Some(STRIPE_SECRET),
                ),
            ),
            (
                "svix",
                route(
                    "/hooks/svix",
                    &format!("{topic}.standard"),
                    Verify::StandardWebhooks,
                    Some(STANDARD_SECRET),
                ),
            ),
            (
                "github",
                route(
                    "/hooks/github",
                    &format!("{topic}.github"),
                    Verify::Github,
                    Some(GITHUB_SECRET),
                ),
            ),
            (
                "internal",
                route(
                    "/hooks/internal",
                    &format!("{topic}.internal"),
                    Verify::None,
                    None,
                ),
            ),
        ]
        .into_iter()
        .map(|(name, route)| (name.to_string(), route))
        .collect(),
    }
}

/// A request's answer: status, `Retry-After`, JSON body.
#[derive(Debug)]
struct Answer {
    status: u16,
    retry_after: Option<String>,
    body: Value,
}

/// Sends `method path` with `headers` and `body` on a fresh connection.
async fn send(
    platform: &Platform,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> Answer {
    let addr = platform
        .webhooks_addr()
        .expect("the webhook listener is bound");
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let mut request = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string())
        .header("content-type", "application/json");
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let request = request
        .body(http_body_util::Full::new(bytes::Bytes::copy_from_slice(
            body,
        )))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    let bytes = http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap()
        .to_bytes();
    Answer {
        status,
        retry_after,
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    }
}

async fn post(platform: &Platform, path: &str, headers: &[(&str, String)], body: &[u8]) -> Answer {
    send(platform, "POST", path, headers, body).await
}

fn header<'e>(envelope: &'e Envelope, name: &str) -> Option<&'e str> {
    envelope
        .headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// The next message on `consumer` (acked), within 10 s.
async fn next(consumer: &mut Box<dyn Consumer>) -> Envelope {
    let delivery = tokio::time::timeout(Duration::from_secs(10), consumer.next())
        .await
        .expect("a message within 10 s")
        .expect("the consumer is open");
    let envelope = delivery.envelope().clone();
    delivery.ack().await.unwrap();
    envelope
}

/// What arrives on `consumer` within `window` (acked).
async fn drain(consumer: &mut Box<dyn Consumer>, window: Duration) -> Vec<Envelope> {
    let mut seen = Vec::new();
    while let Ok(Some(delivery)) = tokio::time::timeout(window, consumer.next()).await {
        seen.push(delivery.envelope().clone());
        delivery.ack().await.unwrap();
    }
    seen
}

async fn start(config: HostConfig) -> Platform {
    Platform::start(config)
        .await
        .unwrap_or_else(|e| panic!("{}", services::rabbitmq_hint(&e)))
}

/// Each scheme's correctly signed webhook, on Redis and RabbitMQ: answered 200 with the
/// provider's id, and published with that id as its message id, the body unchanged,
/// persistently, with the route and the event's type in its headers.
#[tokio::test(flavor = "multi_thread")]
async fn each_scheme_s_signed_webhook_is_published_with_the_provider_s_id() {
    init_tracing();
    let topic = unique("webhooks");
    let dir = PluginDir::with(&[]);
    let mut config = on_services(&dir);
    config.webhooks = every_scheme(&topic);
    let platform = start(config).await;
    let mut published = sink(&platform, &[&format!("{topic}.#")]).await;

    let event = json!({ "id": "evt_3Nx1", "type": "payment_intent.succeeded", "data": { "object": { "amount": 2000 } } });
    let body = serde_json::to_vec_pretty(&event).unwrap();
    let answer = post(
        &platform,
        "/hooks/stripe",
        &stripe(STRIPE_SECRET, now_s(), &body),
        &body,
    )
    .await;
    assert_eq!(
        (answer.status, &answer.body),
        (200, &json!({ "id": "evt_3Nx1" })),
        "{answer:?}"
    );
    let message = next(&mut published).await;
    assert_eq!(message.id, "evt_3Nx1");
    assert_eq!(message.routing_key, format!("{topic}.stripe"));
    assert_eq!(
        message.payload, body,
        "the body byte for byte, as it was signed"
    );
    assert!(message.persistent);
    assert_eq!(header(&message, "webhook"), Some("stripe"));
    assert_eq!(
        header(&message, "webhook-event"),
        Some("payment_intent.succeeded")
    );

    let body = br#"{"type":"invoice.paid","data":{"n":1}}"#;
    let headers = standard(
        STANDARD_SECRET,
        "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W",
        now_s(),
        body,
    );
    assert_eq!(
        post(&platform, "/hooks/svix", &headers, body).await.status,
        200
    );
    let message = next(&mut published).await;
    assert_eq!(message.id, "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W");
    assert_eq!(message.routing_key, format!("{topic}.standard"));
    assert_eq!(header(&message, "webhook-event"), Some("invoice.paid"));

    let body = br#"{"action":"opened","number":7}"#;
    let delivery = uuid::Uuid::new_v4().to_string();
    let headers = github(GITHUB_SECRET, &delivery, "pull_request", body);
    assert_eq!(
        post(&platform, "/hooks/github", &headers, body)
            .await
            .status,
        200
    );
    let message = next(&mut published).await;
    assert_eq!(message.id, delivery);
    assert_eq!(header(&message, "webhook"), Some("github"));
    assert_eq!(header(&message, "webhook-event"), Some("pull_request"));

    // No scheme: the provider's Idempotency-Key, when it sends one, is the id.
    let body = b"{}";
    let answer = post(
        &platform,
        "/hooks/internal",
        &[("idempotency-key", "job-77".into())],
        body,
    )
    .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(next(&mut published).await.id, "job-77");

    let metrics = platform.services.metrics.encode();
    for route in ["stripe", "svix", "github", "internal"] {
        assert!(
            metrics.contains(&format!(
                "techub_webhooks_total{{route=\"{route}\",outcome=\"published\"}} 1"
            )),
            "{metrics}"
        );
        assert!(
            metrics.contains(&format!(
                "techub_webhook_seconds_count{{route=\"{route}\"}} 1"
            )),
            "{metrics}"
        );
    }
    platform.shutdown().await;
}

/// A refused request: what it is, the status it gets, its path, headers and body.
type Case = (
    &'static str,
    u16,
    &'static str,
    Vec<(&'static str, String)>,
    Vec<u8>,
);

/// Forged, tampered, replayed (old or future timestamps), oversize (declared or
/// streamed), unsigned, mis-addressed and non-POST requests are each refused with
/// their status and counted by outcome, and none of them publishes anything: the
/// first message to arrive is the good one sent after them all.
#[tokio::test(flavor = "multi_thread")]
async fn forged_replayed_and_oversize_webhooks_are_refused_and_publish_nothing() {
    init_tracing();
    let topic = unique("webhooks-refused");
    let dir = PluginDir::with(&[]);
    let mut config = config(&dir);
    config.webhooks = every_scheme(&topic);
    config.webhooks.routes.get_mut("stripe").unwrap().max_bytes = Some(1024);
    let platform = start(config).await;
    let mut published = sink(&platform, &[&format!("{topic}.#")]).await;

    let event =
        |id: &str| serde_json::to_vec(&json!({ "id": id, "type": "charge.succeeded" })).unwrap();
    let body = event("evt_forged");
    let now = now_s();
    let cases: Vec<Case> = vec![
        (
            "wrong secret",
            401,
            "/hooks/stripe",
            stripe("whsec_guessed", now, &body),
            body.clone(),
        ),
        (
            "tampered body",
            401,
            "/hooks/stripe",
            stripe(STRIPE_SECRET, now, &body),
            event("evt_other"),
        ),
        ("no signature", 401, "/hooks/stripe", vec![], body.clone()),
        (
            "replayed, 10 min old",
            400,
            "/hooks/stripe",
            stripe(STRIPE_SECRET, now - 600, &body),
            body.clone(),
        ),
        (
            "timestamp from the future",
            400,
            "/hooks/svix",
            standard(STANDARD_SECRET, "msg_future", now + 600, &body),
            body.clone(),
        ),
        (
            "signed for another id",
            401,
            "/hooks/svix",
            {
                let mut headers = standard(STANDARD_SECRET, "msg_a", now, &body);
                headers[0].1 = "msg_b".into();
                headers
            },
            body.clone(),
        ),
        (
            "github, wrong secret",
            401,
            "/hooks/github",
            github("guess", "d-1", "push", &body),
            body.clone(),
        ),
        (
            "oversize",
            413,
            "/hooks/stripe",
            stripe(STRIPE_SECRET, now, &vec![b' '; 2048]),
            vec![b' '; 2048],
        ),
        ("no such route", 404, "/hooks/nothing", vec![], body.clone()),
        (
            "the admin's publish is not here",
            404,
            "/publish/a.b",
            vec![],
            body.clone(),
        ),
    ];
    for (case, status, path, headers, body) in &cases {
        let answer = post(&platform, path, headers, body).await;
        assert_eq!(answer.status, *status, "{case}: {answer:?}");
        assert!(answer.body["error"].is_string(), "{case}: {answer:?}");
    }
    let answer = send(&platform, "GET", "/hooks/stripe", &[], b"").await;
    assert_eq!(answer.status, 405);
    // Streamed (chunked, no length declared) past the route's limit.
    assert_eq!(chunked_post(&platform, "/hooks/stripe", 4096).await, 413);

    let good = event("evt_good");
    let answer = post(
        &platform,
        "/hooks/stripe",
        &stripe(STRIPE_SECRET, now, &good),
        &good,
    )
    .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let first = next(&mut published).await;
    assert_eq!(
        first.id, "evt_good",
        "nothing refused was published before it"
    );
    assert!(
        drain(&mut published, Duration::from_millis(300))
            .await
            .is_empty()
    );

    let metrics = platform.services.metrics.encode();
    for (route, outcome, count) in [
        ("stripe", "bad_signature", 3),
        ("stripe", "stale", 1),
        ("stripe", "too_large", 2),
        ("stripe", "method", 1),
        ("stripe", "published", 1),
        ("svix", "stale", 1),
        ("svix", "bad_signature", 1),
        ("github", "bad_signature", 1),
        ("(none)", "unknown_route", 2),
    ] {
        let line =
            format!("techub_webhooks_total{{route=\"{route}\",outcome=\"{outcome}\"}} {count}");
        assert!(metrics.contains(&line), "{line}\n{metrics}");
    }
}

/// Sends `size` bytes to `path` chunked (no Content-Length): the limit holds on
/// bytes as they arrive, not only on what a client declares. The answer's status.
async fn chunked_post(platform: &Platform, path: &str, size: usize) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = platform.webhooks_addr().unwrap();
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head =
        format!("POST {path} HTTP/1.1\r\nhost: {addr}\r\ntransfer-encoding: chunked\r\n\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    let chunk = vec![b'x'; 512];
    for _ in 0..size / chunk.len() {
        // The server may answer and close before all of it is sent.
        if stream
            .write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
            .await
            .is_err()
            || stream.write_all(&chunk).await.is_err()
            || stream.write_all(b"\r\n").await.is_err()
        {
            break;
        }
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
    let mut answer = vec![0; 1024];
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut answer))
        .await
        .expect("an answer")
        .unwrap();
    let status_line = String::from_utf8_lossy(&answer[..read]).to_string();
    status_line[9..12]
        .parse()
        .unwrap_or_else(|_| panic!("{status_line}"))
}

/// A webhook whose routing key no queue is bound to yet is answered 503, not 200: a
/// message taken and then dropped by the broker would be lost.
#[tokio::test(flavor = "multi_thread")]
async fn a_webhook_no_queue_would_receive_is_answered_503() {
    init_tracing();
    let topic = unique("webhooks-unrouted");
    let dir = PluginDir::with(&[]);
    let mut config = on_services(&dir);
    config.webhooks = every_scheme(&topic);
    let platform = start(config).await;
    let answer = post(&platform, "/hooks/internal", &[], b"{}").await;
    assert_eq!(answer.status, 503, "{answer:?}");
    assert_eq!(answer.retry_after.as_deref(), Some("5"));
    assert!(
        answer.body["error"]
            .as_str()
            .unwrap()
            .contains("no queue is bound"),
        "{answer:?}"
    );
    let mut published = sink(&platform, &[&format!("{topic}.internal")]).await;
    let answer = post(
        &platform,
        "/hooks/internal",
        &[("webhook-id", "w-1".into())],
        b"{}",
    )
    .await;
    assert_eq!(
        answer.status, 200,
        "the provider's retry, once a queue is bound"
    );
    assert_eq!(next(&mut published).await.id, "w-1");
    platform.shutdown().await;
}

/// RabbitMQ reached through a proxy: while it is cut, a webhook is answered 503 with
/// `Retry-After`; while it is stalled (the confirm never comes), 503 again, never
/// 200; once it is back, the provider's retry is answered 200 and the message arrives
/// with the webhook's id (a stalled attempt may arrive too, with the same id, for
/// `store::once` to absorb).
#[tokio::test(flavor = "multi_thread")]
async fn a_webhook_during_a_broker_outage_is_answered_503_and_taken_on_retry() {
    init_tracing();
    let topic = unique("webhooks-outage");
    let proxy = techub_tests::TcpProxy::start("127.0.0.1:5672").await;
    let dir = PluginDir::with(&[]);
    let mut config = config(&dir);
    config.backends.messaging = BrokerBackend::Amqp;
    config.amqp = services::amqp_config();
    let direct = config.amqp.clone();
    config.amqp.url = format!("amqp://guest:guest@127.0.0.1:{}/%2f", proxy.port);
    config.messaging.confirm_timeout_ms = 1_000;
    config.webhooks = every_scheme(&topic);
    let platform = start(config).await;
    // Watched over a connection of its own, which the proxy does not touch.
    let watcher = techub_host::capability::messaging::amqp::AmqpBroker::connect(
        &direct,
        Default::default(),
        Default::default(),
        Default::default(),
        techub_host::capability::messaging::amqp::seal::DeathSeal::with_key(b"test key"),
    )
    .await
    .unwrap();
    let spec = techub_host::capability::messaging::QueueSpec {
        name: unique("webhook-sink"),
        bindings: vec![format!("{topic}.#")],
        durable: false,
        limits: Default::default(),
    };
    use techub_host::capability::messaging::Broker as _;
    watcher.declare_queue(&spec).await.unwrap();
    let mut published = watcher.consume(&spec.name, 10).await.unwrap();

    let body = br#"{"type":"order.paid"}"#;
    let signed = |id: &str| standard(STANDARD_SECRET, id, now_s(), body);
    proxy.cut();
    let answer = post(&platform, "/hooks/svix", &signed("msg_outage"), body).await;
    assert_eq!(answer.status, 503, "{answer:?}");
    assert_eq!(answer.retry_after.as_deref(), Some("5"));

    proxy.restore();
    let answer = retry_until_taken(&platform, &signed("msg_outage"), body).await;
    assert_eq!(answer.body["id"], "msg_outage");
    let arrived = next(&mut published).await;
    assert_eq!(arrived.id, "msg_outage");
    assert!(
        drain(&mut published, Duration::from_millis(500))
            .await
            .is_empty(),
        "the refused attempt was not published"
    );

    proxy.stall();
    let answer = post(&platform, "/hooks/svix", &signed("msg_stalled"), body).await;
    assert_eq!(answer.status, 503, "no confirm, no 200: {answer:?}");
    proxy.flow();
    retry_until_taken(&platform, &signed("msg_stalled"), body).await;
    let copies = drain(&mut published, Duration::from_secs(2)).await;
    assert!(
        !copies.is_empty() && copies.iter().all(|m| m.id == "msg_stalled"),
        "{copies:?}"
    );
    let metrics = platform.services.metrics.encode();
    assert!(
        metrics.contains("techub_webhooks_total{route=\"svix\",outcome=\"broker_unavailable\"}"),
        "{metrics}"
    );
    platform.shutdown().await;
    watcher.delete_queue(&spec.name).await.unwrap();
}

/// Posts as a provider retrying: until answered 200 (within 30 s).
async fn retry_until_taken(platform: &Platform, headers: &[(&str, String)], body: &[u8]) -> Answer {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let answer = post(platform, "/hooks/svix", headers, body).await;
        if answer.status == 200 {
            return answer;
        }
        assert_eq!(answer.status, 503, "{answer:?}");
        assert!(
            tokio::time::Instant::now() < deadline,
            "not taken within 30 s: {answer:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Routes and secrets follow `host.toml`: a rotated secret verifies at once and the
/// old one is refused; a route added by a reload is served, a removed one is gone.
#[tokio::test(flavor = "multi_thread")]
async fn routes_and_secrets_follow_reloads() {
    init_tracing();
    let topic = unique("webhooks-reload");
    let dir = PluginDir::with(&[]);
    let mut config = config(&dir);
    config.webhooks = every_scheme(&topic);
    let platform = start(config.clone()).await;
    let mut published = sink(&platform, &[&format!("{topic}.#")]).await;
    let body = br#"{"action":"push"}"#;

    let mut reloaded = config.clone();
    let github = reloaded.webhooks.routes.get_mut("github").unwrap();
    github.secret = Some(SecretRef::literal("rotated"));
    reloaded.webhooks.routes.remove("internal");
    reloaded.webhooks.routes.insert(
        "added".into(),
        route(
            "/hooks/added",
            &format!("{topic}.added"),
            Verify::None,
            None,
        ),
    );
    let ignored = platform.reload_config(reloaded).await.unwrap();
    assert!(ignored.is_empty(), "{ignored:?}");

    let old = github_headers("old", GITHUB_SECRET, body);
    assert_eq!(
        post(&platform, "/hooks/github", &old, body).await.status,
        401
    );
    let new = github_headers("new", "rotated", body);
    assert_eq!(
        post(&platform, "/hooks/github", &new, body).await.status,
        200
    );
    assert_eq!(next(&mut published).await.id, "new");
    assert_eq!(
        post(&platform, "/hooks/internal", &[], body).await.status,
        404
    );
    let answer = post(
        &platform,
        "/hooks/added",
        &[("webhook-id", "added-1".into())],
        body,
    )
    .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(
        next(&mut published).await.routing_key,
        format!("{topic}.added")
    );

    // The address is the listener's, fixed at start.
    let mut moved = config.clone();
    moved.webhooks.addr = Some("127.0.0.1:1".into());
    let ignored = platform.reload_config(moved).await.unwrap();
    assert_eq!(ignored, ["webhooks.addr"]);
}

fn github_headers(delivery: &str, secret: &str, body: &[u8]) -> Vec<(&'static str, String)> {
    github(secret, delivery, "push", body)
}

/// A port already taken stops the start, before any message is consumed.
#[tokio::test(flavor = "multi_thread")]
async fn a_taken_webhook_port_stops_the_start() {
    let taken = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dir = PluginDir::with(&[]);
    let mut config = config(&dir);
    config.webhooks = every_scheme("taken");
    config.webhooks.addr = Some(taken.local_addr().unwrap().to_string());
    let error = Platform::start(config).await.err().expect("refused");
    assert!(format!("{error:#}").contains("webhooks.addr"), "{error:#}");
}
