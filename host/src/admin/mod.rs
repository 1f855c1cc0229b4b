//! The admin HTTP endpoint: health, readiness, loaded plugins, operator publish, the
//! status page (`/`), `/metrics`, cache statistics, message statuses and the
//! dead-letter tooling; and (`client`) the client side the subcommands use.
//!
//! Files: `mod.rs` (router, token, health, plugins, publish), `ops.rs` (metrics, cache
//! statistics, message status), `dead_letters.rs`, `status_page.rs`, `client.rs`.
//!
//! Every route but `/healthz` requires `Authorization: Bearer <token>` when a token is
//! configured (`host.admin_token_env` or `host.admin_token`); the host refuses to start
//! on a non-loopback address without one, because `/publish` publishes as the operator.
//! Request bodies are bounded by `host.max_message_bytes` (413 beyond).

pub mod client;
mod dead_letters;
pub mod inspect;
mod ops;
mod status_page;
mod tail;

pub use dead_letters::{Selection, payload_preview};
pub use ops::{parse_duration_ms, status_name};

use crate::Platform;
use crate::capability::bindings::techub::platform::messaging::Priority;
use crate::capability::messaging::DeadLetterFill;
use crate::registry::Lifecycle;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// How long `/readyz` waits for a dependency (a Redis `PING`).
const READINESS_TIMEOUT: Duration = Duration::from_secs(1);

/// The admin routes over a running platform; with `token`, every route but
/// `/healthz` requires it as a bearer token.
pub fn router(platform: Arc<Platform>, token: Option<String>) -> Router {
    let body_limit = platform.config().host.max_message_bytes;
    let guarded = Router::new()
        .route("/readyz", get(readyz))
        .route("/plugins", get(plugins))
        .route("/publish/{routing_key}", post(publish))
        .route("/tail/{pattern}", get(tail::tail))
        .route("/", get(status_page::page))
        .route("/metrics", get(ops::metrics))
        .route("/cache/stats", get(ops::cache_stats))
        .route("/cache/warm", post(ops::cache_warm))
        .route("/cache/{domain}/keys/{key}", get(inspect::cache_get))
        .route("/store/{plugin}/keys/{key}", get(inspect::store_get))
        .route("/store/{plugin}/scan/{pattern}", get(inspect::store_scan))
        .route("/messages/{id}", get(ops::message_status))
        .route("/dead-letters", get(dead_letters::list))
        .route("/dead-letters/{id}", get(dead_letters::show))
        .route("/dead-letters/replay", post(dead_letters::replay))
        .route("/dead-letters/purge", post(dead_letters::purge))
        .layer(middleware::from_fn_with_state(
            Arc::new(token),
            require_token,
        ))
        .layer(DefaultBodyLimit::max(body_limit));
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .merge(guarded)
        .with_state(platform)
}

async fn require_token(
    State(token): State<Arc<Option<String>>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(expected) = token.as_deref() else {
        return next.run(request).await;
    };
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token);
    match given {
        Some(given) if constant_time_eq(given.as_bytes(), expected.as_bytes()) => {
            next.run(request).await
        }
        _ => (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            Json(json!({ "error": "a bearer token is required (Authorization: Bearer <token>)" })),
        )
            .into_response(),
    }
}

/// The token of an `Authorization: Bearer <token>` value; the scheme is
/// case-insensitive (RFC 7235), so `bearer` and `BEARER` are accepted too.
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim_start_matches(' '))
}

/// Compares without stopping at the first difference, so that the time taken does not
/// tell how much of a guessed token was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Ready when every dependency answers: Redis (`PING`) when a capability uses it, the
/// broker's connection, and at least one plugin serving (or none that failed: an
/// empty plugins directory is a valid deployment), and room in the dead-letter queue.
/// 503 names what is down.
async fn readyz(State(platform): State<Arc<Platform>>) -> (StatusCode, Json<Value>) {
    let mut down = Vec::new();
    if let Some(redis) = &platform.services.redis
        && let Err(reason) = redis.ping(READINESS_TIMEOUT).await
    {
        down.push(reason);
    }
    let broker = platform.services.messaging.broker.as_ref();
    let dead_letter = platform.config().dead_letter;
    let fill = match broker.health() {
        Err(reason) => {
            down.push(reason);
            None
        }
        // Bounded: a stalled broker must not stall the probe.
        Ok(()) => tokio::time::timeout(
            READINESS_TIMEOUT,
            DeadLetterFill::read(broker, &dead_letter),
        )
        .await
        .ok()
        .and_then(Result::ok),
    };
    if let Some(fill) = fill
        && fill.is_full()
    {
        down.push(format!(
            "the dead-letter queue is full ({} of {} letters): new dead letters wait in their retry queues; replay or purge some (techub-host dlq)",
            fill.depth, fill.max_length
        ));
    }
    let (plugins, failed) = platform.registry().plugins().await;
    let serving = plugins
        .iter()
        .filter(|p| p.state == Lifecycle::Serving)
        .count();
    if serving == 0 && !failed.is_empty() {
        down.push(format!(
            "no plugin is serving: {} failed to load",
            failed.len()
        ));
    }
    let status = match down.is_empty() {
        true => StatusCode::OK,
        false => StatusCode::SERVICE_UNAVAILABLE,
    };
    (
        status,
        Json(json!({
            "ready": down.is_empty(),
            "down": down,
            "plugins": serving,
            "load_errors": failed.len(),
        })),
    )
}

/// Each plugin (state, version, loaded at, subscriptions, in flight, last error) and
/// each file that failed, with its reason.
async fn plugins(State(platform): State<Arc<Platform>>) -> Json<Value> {
    let (plugins, failed) = platform.registry().plugins().await;
    Json(json!({ "plugins": plugins, "failed": failed }))
}

#[derive(Deserialize)]
struct PublishQuery {
    priority: Option<String>,
    message_id: Option<String>,
    correlation_id: Option<String>,
    /// A JSON object of application headers.
    headers: Option<String>,
}

async fn publish(
    State(platform): State<Arc<Platform>>,
    Path(routing_key): Path<String>,
    Query(query): Query<PublishQuery>,
    body: Bytes,
) -> (StatusCode, Json<Value>) {
    let priority = match query.priority.as_deref() {
        // No priority: the queue types that bind the key decide.
        None | Some("") | Some("default") => None,
        Some("normal") => Some(Priority::Normal),
        Some("low") => Some(Priority::Low),
        Some("high") => Some(Priority::High),
        Some("urgent") => Some(Priority::Urgent),
        Some(other) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({ "error": format!("unknown priority {other:?}") })),
            );
        }
    };
    let headers = match query
        .headers
        .as_deref()
        .map(serde_json::from_str::<BTreeMap<String, String>>)
    {
        None => Vec::new(),
        Some(Ok(headers)) => headers.into_iter().collect(),
        Some(Err(error)) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(
                    json!({ "error": format!("headers must be a JSON object of strings: {error}") }),
                ),
            );
        }
    };
    let message = crate::capability::messaging::operator::OperatorMessage {
        priority,
        message_id: query.message_id,
        correlation_id: query.correlation_id,
        headers,
    };
    match platform
        .publish_message(&routing_key, body.to_vec(), message)
        .await
    {
        Ok(id) => (StatusCode::ACCEPTED, Json(json!({ "id": id }))),
        Err(error) => (
            StatusCode::BAD_REQUEST,
            Json(json!({ "error": format!("{error:#}") })),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::{bearer_token, constant_time_eq};

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        for value in ["Bearer abc", "bearer abc", "BEARER abc", "bEaReR  abc"] {
            assert_eq!(bearer_token(value), Some("abc"), "{value}");
        }
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearerabc"), None);
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
