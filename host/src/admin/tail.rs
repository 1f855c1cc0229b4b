//! `GET /tail/{pattern}`: the messages passing through the main exchange whose routing
//! key matches `pattern`, as they pass, one JSON line each (`techub-host tail`).
//!
//! The host binds a temporary queue of its own, `<queue_prefix>tail:<uuid>`, to the
//! pattern, reads it promptly (acking at once) and hands each message to the client;
//! a client that reads too slowly skips messages (counted in a line) rather than
//! fill a queue. When the client goes, the queue is deleted. The first line names the
//! queue: `{"tailing": pattern, "queue": name}`; when the host stops, the last says so,
//! `{"ended": "the host is stopping"}`, and the stream ends.

use super::dead_letters::payload_preview;
use crate::Platform;
use crate::capability::messaging::{Broker, Envelope, open_watch};
use crate::names::routing::TopicPattern;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::sync::Arc;

/// Lines waiting for a slow client before messages are skipped.
const BACKLOG: usize = 1024;
/// Bytes of each payload shown.
const PREVIEW: usize = 1024;

pub(super) async fn tail(
    State(platform): State<Arc<Platform>>,
    Path(pattern): Path<String>,
) -> Response {
    if let Err(error) = TopicPattern::parse(&pattern) {
        let body = json!({ "error": format!("invalid pattern {pattern:?}: {error}") });
        return (StatusCode::BAD_REQUEST, axum::Json(body)).into_response();
    }
    let broker = platform.services.messaging.broker.clone();
    let queue = format!(
        "{}tail:{}",
        platform.config().amqp.queue_prefix,
        uuid::Uuid::new_v4().simple()
    );
    let opened = open_watch(broker.as_ref(), &queue, vec![pattern.clone()], 64).await;
    let mut consumer = match opened {
        Ok(consumer) => consumer,
        Err(error) => {
            let body = json!({ "error": format!("could not tail {pattern:?}: {error}") });
            return (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response();
        }
    };
    let (lines, receiver) = tokio::sync::mpsc::channel::<Bytes>(BACKLOG);
    let _ = lines.try_send(line(&json!({ "tailing": pattern, "queue": queue })));
    let stopping = platform.stopping().clone();
    tokio::spawn(async move {
        let mut skipped = 0u64;
        loop {
            let next = tokio::select! {
                next = consumer.next() => next,
                // The client went away: stop at once, even with nothing passing.
                () = lines.closed() => break,
                // The host is stopping: say so and end the stream, so that the admin
                // endpoint's graceful shutdown does not wait for this client.
                () = stopping.cancelled() => {
                    let _ = lines.try_send(line(&json!({ "ended": "the host is stopping" })));
                    break;
                }
            };
            let Some(delivery) = next else { break };
            let shown = line(&message_json(delivery.envelope()));
            let _ = delivery.ack().await;
            match lines.try_send(shown) {
                Ok(()) => {}
                Err(tokio::sync::mpsc::error::TrySendError::Full(_)) => skipped += 1,
                Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => break,
            }
            if skipped > 0 && lines.try_send(line(&json!({ "skipped": skipped }))).is_ok() {
                skipped = 0;
            }
        }
        consumer.close().await;
        forget(broker.as_ref(), &queue).await;
    });
    let stream = futures::stream::unfold(receiver, |mut receiver| async move {
        let next = receiver.recv().await?;
        Some((Ok::<_, std::convert::Infallible>(next), receiver))
    });
    Response::builder()
        .header("content-type", "application/x-ndjson")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

async fn forget(broker: &dyn Broker, queue: &str) {
    if let Err(error) = broker.delete_queue(queue).await {
        tracing::warn!(%queue, %error, "could not delete a tail queue");
    }
}

fn line(value: &Value) -> Bytes {
    let mut text = value.to_string();
    text.push('\n');
    Bytes::from(text)
}

fn message_json(envelope: &Envelope) -> Value {
    json!({
        "routing_key": envelope.routing_key,
        "id": envelope.id,
        "correlation_id": envelope.correlation_id,
        "headers": envelope.headers.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
        "published_at_ms": envelope.published_at_ms,
        "payload": payload_preview(&envelope.payload, PREVIEW),
    })
}
