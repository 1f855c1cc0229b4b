//! `[webhooks]`: providers' webhooks taken in on their own listener, verified, and
//! published for the plugins.
//!
//! A request to a route's `path` is read up to the route's `max_bytes` (413 beyond,
//! 408 when the body does not arrive within [`BODY_TIME`]), verified by the route's
//! scheme (`verify.rs`: 401 for a signature that does not hold, 400 for a signed
//! timestamp outside the tolerance, a replay), and published persistently to the
//! route's `routing_key` as a mandatory publish with the broker's confirm. Only then
//! is it answered 200; a broker that refuses or does not answer, or a routing key no
//! queue is bound to yet, is answered 503 with `Retry-After`, so the provider retries
//! and nothing it sent is lost. The message's id is the provider's id of the webhook
//! (Stripe's event id, `webhook-id`, `X-GitHub-Delivery`), which its retries repeat:
//! a consumer deduplicates them with `store::once`. Its headers name the route
//! (`webhook`), the id (`webhook-id`) and, where the scheme says it, the event's type
//! (`webhook-event`).
//!
//! The listener (`webhooks.addr`) is apart from the admin endpoint and never sees its
//! token; it is bound when the platform starts (a port conflict stops the start) and
//! stops taking requests when the platform stops, finishing those it holds. Routes,
//! secrets and limits follow `host.toml` reloads; the address needs a restart.
//!
//! # Layout
//! - this file: the listener and the request's way to a confirmed publish.
//! - `verify.rs`: the signature schemes (Stripe, Standard Webhooks, GitHub).

mod verify;

use crate::capability::messaging::operator::{OperatorMessage, operator_envelope};
use crate::config::HostConfig;
use crate::services::Services;
use arc_swap::ArcSwap;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// How long a request's body may take to arrive.
pub const BODY_TIME: Duration = Duration::from_secs(10);
/// What a 503 asks the provider to wait before retrying, in seconds.
const RETRY_AFTER_S: &str = "5";
/// The route label of requests to a path no route serves.
const NO_ROUTE: &str = "(none)";

/// Binds `webhooks.addr`, if set.
pub async fn bind(config: &HostConfig) -> anyhow::Result<Option<TcpListener>> {
    let Some(addr) = &config.webhooks.addr else {
        return Ok(None);
    };
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("could not listen on webhooks.addr {addr}: {e}"))?;
    let loopback = listener.local_addr().is_ok_and(|a| a.ip().is_loopback());
    for (name, route) in &config.webhooks.routes {
        if route.verify == crate::config::Verify::None && !loopback {
            tracing::warn!(route = %name, %addr, "webhooks.{name} verifies nothing and webhooks.addr is not loopback: anyone who reaches it publishes to {}", route.routing_key);
        }
    }
    Ok(Some(listener))
}

/// Serves the routes of `config` (as reloaded) on `listener` until `stopping`, then
/// finishes the requests it holds.
pub fn serve(
    listener: TcpListener,
    services: Arc<Services>,
    config: Arc<ArcSwap<HostConfig>>,
    stopping: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let app = Router::new()
        .fallback(receive)
        .with_state(Arc::new(Shared { services, config }));
    tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(stopping.cancelled_owned())
            .await;
        if let Err(error) = served {
            tracing::error!(%error, "the webhook listener failed");
        }
    })
}

struct Shared {
    services: Arc<Services>,
    config: Arc<ArcSwap<HostConfig>>,
}

async fn receive(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let started = Instant::now();
    let config = shared.config.load_full();
    let metrics = &shared.services.metrics;
    let path = request.uri().path();
    let Some((name, route)) = config
        .webhooks
        .routes
        .iter()
        .find(|(_, route)| route.path == path)
    else {
        metrics.webhook(NO_ROUTE, "unknown_route");
        return refuse(StatusCode::NOT_FOUND, "no webhook route at this path");
    };
    let refused = |status: StatusCode, outcome: &'static str, reason: String| {
        tracing::info!(route = %name, status = status.as_u16(), %reason, "webhook refused");
        metrics.webhook(name, outcome);
        refuse(status, &reason)
    };
    if request.method() != Method::POST {
        let mut response = refused(
            StatusCode::METHOD_NOT_ALLOWED,
            "method",
            "webhooks are POSTed".into(),
        );
        response
            .headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("POST"));
        return response;
    }
    let max = route.max_bytes(config.host.max_message_bytes);
    let too_large = || format!("the body is larger than this route's {max} bytes");
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|length| length > max as u64) {
        return refused(StatusCode::PAYLOAD_TOO_LARGE, "too_large", too_large());
    }
    let (parts, body) = request.into_parts();
    let body = match tokio::time::timeout(BODY_TIME, Limited::new(body, max).collect()).await {
        Err(_) => {
            return refused(
                StatusCode::REQUEST_TIMEOUT,
                "malformed",
                format!("the body did not arrive within {} s", BODY_TIME.as_secs()),
            );
        }
        Ok(Err(error)) if error.is::<LengthLimitError>() => {
            return refused(StatusCode::PAYLOAD_TOO_LARGE, "too_large", too_large());
        }
        Ok(Err(error)) => {
            return refused(
                StatusCode::BAD_REQUEST,
                "malformed",
                format!("the body could not be read: {error}"),
            );
        }
        Ok(Ok(collected)) => collected.to_bytes(),
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let verified = match verify::verify(route, &parts.headers, &body, now) {
        Ok(verified) => verified,
        Err(refusal) => {
            let status = StatusCode::from_u16(refusal.status).unwrap_or(StatusCode::BAD_REQUEST);
            return refused(status, refusal.outcome, refusal.reason);
        }
    };
    let mut headers = vec![("webhook".to_string(), name.clone())];
    if let Some(id) = &verified.id {
        headers.push(("webhook-id".into(), id.clone()));
    }
    if let Some(event) = verified.event {
        headers.push(("webhook-event".into(), event));
    }
    let message = OperatorMessage {
        priority: None,
        message_id: verified.id,
        correlation_id: None,
        headers,
    };
    let services = &shared.services;
    let envelope = match operator_envelope(
        &services.messaging,
        config.host.max_message_bytes,
        &route.routing_key,
        body.to_vec(),
        message,
    ) {
        Ok(envelope) => envelope,
        Err(error) => {
            return refused(StatusCode::BAD_REQUEST, "malformed", format!("{error:#}"));
        }
    };
    let id = envelope.id.clone();
    // Pending before the publish: a fast consumer may otherwise mark it done first.
    services.messaging.tracker.published(&id, None);
    let unavailable = |outcome: &'static str, reason: String| {
        services.messaging.tracker.forget(&id);
        tracing::warn!(route = %name, webhook_id = %id, %reason, "webhook not taken; the provider is asked to retry");
        metrics.webhook(name, outcome);
        let mut response = refuse(StatusCode::SERVICE_UNAVAILABLE, &reason);
        response.headers_mut().insert(
            header::RETRY_AFTER,
            header::HeaderValue::from_static(RETRY_AFTER_S),
        );
        response
    };
    match services.messaging.broker.publish_routed(envelope).await {
        Ok(true) => {
            metrics.webhook(name, "published");
            metrics.webhook_seconds(name, started.elapsed());
            tracing::debug!(route = %name, webhook_id = %id, "webhook published");
            (StatusCode::OK, axum::Json(json!({ "id": id }))).into_response()
        }
        Ok(false) => unavailable(
            "unrouted",
            format!(
                "no queue is bound to {:?} yet: not taken",
                route.routing_key
            ),
        ),
        Err(error) => unavailable(
            "broker_unavailable",
            format!("the broker did not take it: {error}"),
        ),
    }
}

fn refuse(status: StatusCode, reason: &str) -> Response {
    (status, axum::Json(json!({ "error": reason }))).into_response()
}

#[cfg(test)]
mod tests;
