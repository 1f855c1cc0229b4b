//! The admin HTTP endpoint: health, readiness, loaded plugins, operator publish and
//! the dead-letter queue; and (`client`) the client side `techub-host publish` uses.

pub mod client;

use crate::Platform;
use crate::bindings::techub::platform::messaging::Priority;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;

/// The admin routes over a running platform.
pub fn router(platform: Arc<Platform>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/plugins", get(plugins))
        .route("/publish/{routing_key}", post(publish))
        .route("/dead-letters", get(dead_letters))
        .with_state(platform)
}

async fn readyz(State(platform): State<Arc<Platform>>) -> (StatusCode, Json<Value>) {
    let ready = !platform.plugins.is_empty() || platform.load_errors.is_empty();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(
            json!({ "plugins": platform.plugins.len(), "load_errors": platform.load_errors.len() }),
        ),
    )
}

async fn plugins(State(platform): State<Arc<Platform>>) -> Json<Value> {
    let loaded: Vec<Value> = platform
        .plugins
        .iter()
        .map(|p| {
            json!({
                "name": p.name,
                "path": p.path.display().to_string(),
                "subscriptions": p.subscriptions.iter().map(|s| json!({"queue": s.queue, "routing_keys": s.routing_keys})).collect::<Vec<_>>(),
            })
        })
        .collect();
    let failed: Vec<String> = platform.load_errors.iter().map(|e| e.to_string()).collect();
    Json(json!({ "loaded": loaded, "failed": failed }))
}

#[derive(Deserialize)]
struct PublishQuery {
    priority: Option<String>,
}

async fn publish(
    State(platform): State<Arc<Platform>>,
    Path(routing_key): Path<String>,
    Query(query): Query<PublishQuery>,
    body: Bytes,
) -> (StatusCode, Json<Value>) {
    let priority = match query.priority.as_deref() {
        None | Some("normal") => Priority::Normal,
        Some("low") => Priority::Low,
        Some("high") => Priority::High,
        Some("urgent") => Priority::Urgent,
        Some(other) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({ "error": format!("unknown priority {other:?}") })),
            );
        }
    };
    match platform
        .publish(&routing_key, body.to_vec(), priority)
        .await
    {
        Ok(id) => (StatusCode::ACCEPTED, Json(json!({ "id": id }))),
        Err(error) => (
            StatusCode::BAD_REQUEST,
            Json(json!({ "error": format!("{error:#}") })),
        ),
    }
}

async fn dead_letters(State(platform): State<Arc<Platform>>) -> (StatusCode, Json<Value>) {
    match platform.services.broker.dead_letters(100).await {
        Ok(letters) => {
            let letters: Vec<Value> = letters
                .iter()
                .map(|d| {
                    json!({
                        "id": d.envelope.id,
                        "queue": d.queue,
                        "routing_key": d.envelope.routing_key,
                        "reason": d.reason,
                        "attempt": d.envelope.attempt,
                        "payload": String::from_utf8_lossy(&d.envelope.payload),
                    })
                })
                .collect();
            (StatusCode::OK, Json(json!({ "dead_letters": letters })))
        }
        Err(error) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "error": error.to_string() })),
        ),
    }
}
