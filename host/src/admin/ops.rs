//! Operations routes: `/metrics`, `/cache/stats`, `/messages/{id}`.

use crate::Platform;
use crate::capability::cache::Window;
use crate::capability::messaging::now_ms;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;

/// `GET /metrics`: the Prometheus text exposition.
pub(super) async fn metrics(State(platform): State<Arc<Platform>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
        )],
        platform.services.metrics.encode(),
    )
}

/// A duration like `90s`, `10m`, `2h`, `1d`, or plain milliseconds, in ms.
pub fn parse_duration_ms(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 90s, 10m, 2h or 1d"))?;
    let scale = match unit {
        "" | "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(format!("{text:?}: unknown unit {unit:?} (ms, s, m, h, d)")),
    };
    number
        .checked_mul(scale)
        .ok_or_else(|| format!("{text:?} is too long"))
}

#[derive(Deserialize)]
pub(super) struct StatsQuery {
    domain: Option<String>,
    since: Option<String>,
}

/// `GET /cache/stats?domain=&since=10m`: hits, misses, sets, deletes and hit rate per
/// domain over the window (default: everything retained), from every host when the
/// cache is on Redis.
pub(super) async fn cache_stats(
    State(platform): State<Arc<Platform>>,
    Query(query): Query<StatsQuery>,
) -> (StatusCode, Json<Value>) {
    let window = match query.since.as_deref().map(parse_duration_ms) {
        None => None,
        Some(Ok(age)) => Some(Window {
            start_ms: now_ms().saturating_sub(age),
            end_ms: None,
        }),
        Some(Err(message)) => {
            return (StatusCode::BAD_REQUEST, Json(json!({ "error": message })));
        }
    };
    let config = platform.config();
    let domains: Vec<String> = match query.domain {
        Some(domain) if config.cache.domains.contains_key(&domain) => vec![domain],
        Some(domain) => {
            return (
                StatusCode::NOT_FOUND,
                Json(json!({ "error": format!("no cache domain {domain:?}") })),
            );
        }
        None => config.cache.domains.keys().cloned().collect(),
    };
    let mut rows = Vec::new();
    for domain in domains {
        let stats = platform
            .services
            .cache
            .stats
            .sum(std::slice::from_ref(&domain), window)
            .await;
        let reads = stats.hits + stats.misses;
        rows.push(json!({
            "domain": domain,
            "hits": stats.hits,
            "misses": stats.misses,
            "sets": stats.sets,
            "deletes": stats.deletes,
            "hit_rate": if reads == 0 { Value::Null } else { json!(stats.hits as f64 / reads as f64) },
        }));
    }
    (
        StatusCode::OK,
        Json(json!({
            "since_ms": window.map(|w| w.start_ms),
            "retention_s": config.cache.stats_retention_s,
            "domains": rows,
        })),
    )
}

/// The body of `POST /cache/warm`: the specification's `CacheWarmingDto`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct WarmRequest {
    domain: String,
    /// Keys to load; default: the domain's `[cache.warm.<domain>].keys`.
    #[serde(default)]
    keys: Option<Vec<String>>,
    /// TTL of the warmed entries, in seconds; default: `[cache.warm.<domain>].ttl_s`,
    /// else the loader's.
    #[serde(default)]
    ttl: Option<u32>,
}

/// `POST /cache/warm`: loads the keys of a domain through its loader now, on this
/// host (no round lock: an operator asked), and says what was loaded.
pub(super) async fn cache_warm(
    State(platform): State<Arc<Platform>>,
    Json(request): Json<WarmRequest>,
) -> (StatusCode, Json<Value>) {
    let config = platform.config();
    let configured = config.cache.warm.get(&request.domain);
    let keys = request
        .keys
        .or_else(|| configured.map(|w| w.keys.clone()))
        .unwrap_or_default();
    if request.ttl == Some(0) {
        let error = "ttl must be at least 1 second";
        return (StatusCode::BAD_REQUEST, Json(json!({ "error": error })));
    }
    let ttl = request.ttl.or_else(|| configured.and_then(|w| w.ttl_s));
    match crate::cache_warm::warm(&platform.services, &config, &request.domain, &keys, ttl).await {
        Ok(report) => (StatusCode::OK, Json(json!(report))),
        Err(error) => (StatusCode::BAD_REQUEST, Json(json!({ "error": error }))),
    }
}

/// The specification's name of a status.
pub use crate::capability::messaging::shared_status::status_text as status_name;

/// `GET /messages/{id}`: the status of a message in each queue it reached (from every
/// host when statuses are shared through Redis), and the summary.
pub(super) async fn message_status(
    State(platform): State<Arc<Platform>>,
    Path(id): Path<String>,
) -> (StatusCode, Json<Value>) {
    // Across hosts when statuses are shared through Redis.
    match platform.services.messaging.tracker.lookup(&id).await {
        Some(snapshot) => {
            let summary = snapshot.summary();
            let queues: Vec<Value> = snapshot
                .queues
                .into_iter()
                .map(|(queue, plugin, status)| {
                    json!({ "queue": queue, "plugin": plugin, "status": status_name(status) })
                })
                .collect();
            (
                StatusCode::OK,
                Json(json!({ "id": id, "status": status_name(summary), "queues": queues })),
            )
        }
        None => (
            StatusCode::NOT_FOUND,
            Json(
                json!({ "error": format!("message {id} is not known (never seen, or forgotten)") }),
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_duration_ms;

    #[test]
    fn durations_parse_with_units_and_refuse_garbage() {
        assert_eq!(parse_duration_ms("10m"), Ok(600_000));
        assert_eq!(parse_duration_ms("90s"), Ok(90_000));
        assert_eq!(parse_duration_ms("1500"), Ok(1500));
        assert_eq!(parse_duration_ms("2h"), Ok(7_200_000));
        assert!(parse_duration_ms("ten").is_err());
        assert!(parse_duration_ms("5y").is_err());
        assert!(parse_duration_ms("99999999999999999d").is_err());
    }
}
