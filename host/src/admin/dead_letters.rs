//! The dead-letter routes: list (paginated, payloads as a bounded preview), show one,
//! replay, purge. `techub-host dlq ...` calls these.

use crate::Platform;
use crate::capability::messaging::{DeadLetter, DeadLetterAction, ReplayTo, now_ms};
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use base64::Engine;
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;

/// Letters per page by default, and at most.
const DEFAULT_PAGE: usize = 50;
const MAX_PAGE: usize = 500;
/// Payload bytes a listing shows per letter by default, and at most.
const DEFAULT_PREVIEW: usize = 256;
const MAX_PREVIEW: usize = 64 * 1024;

/// How bytes that are not UTF-8 text are shown.
#[derive(Clone, Copy)]
pub enum Binary {
    /// `"base64"` (dead-letter payloads: compact).
    Base64,
    /// `"hex"` (stored values: byte by byte).
    Hex,
}

/// Bytes as JSON: UTF-8 text as is (`"text"`), anything else in the `binary` encoding
/// (never a lossy decode), cut to `max` bytes, with the full size.
pub fn bounded_json(payload: &[u8], max: usize, binary: Binary) -> Value {
    let shown = &payload[..payload.len().min(max)];
    let truncated = shown.len() < payload.len();
    // A cut may split a character: text is what decodes up to the last whole one.
    let text = match std::str::from_utf8(shown) {
        Ok(text) => Some(text),
        Err(e) if truncated && e.error_len().is_none() => {
            std::str::from_utf8(&shown[..e.valid_up_to()]).ok()
        }
        Err(_) => None,
    };
    match (text, binary) {
        (Some(text), _) => json!({ "size": payload.len(), "truncated": truncated, "text": text }),
        (None, Binary::Base64) => json!({
            "size": payload.len(),
            "truncated": truncated,
            "base64": base64::engine::general_purpose::STANDARD.encode(shown),
        }),
        (None, Binary::Hex) => json!({
            "size": payload.len(),
            "truncated": truncated,
            "hex": shown.iter().map(|b| format!("{b:02x}")).collect::<String>(),
        }),
    }
}

/// A payload as JSON: UTF-8 text as is, anything else base64, cut to `max` bytes.
pub fn payload_preview(payload: &[u8], max: usize) -> Value {
    bounded_json(payload, max, Binary::Base64)
}

fn letter_json(letter: &DeadLetter, preview: usize) -> Value {
    let envelope = &letter.envelope;
    json!({
        "id": envelope.id,
        "queue": letter.queue,
        "routing_key": envelope.routing_key,
        "reason": letter.reason,
        "attempts": envelope.attempt,
        "died_at_ms": letter.died_at_ms,
        "published_at_ms": envelope.published_at_ms,
        "correlation_id": envelope.correlation_id,
        "priority": envelope.priority,
        "headers": envelope.headers,
        "trusted": letter.trusted,
        "payload": payload_preview(&envelope.payload, preview),
    })
}

fn unavailable(error: impl std::fmt::Display) -> (StatusCode, Json<Value>) {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({ "error": error.to_string() })),
    )
}

#[derive(Deserialize)]
pub(super) struct ListQuery {
    offset: Option<usize>,
    limit: Option<usize>,
    preview: Option<usize>,
}

/// `GET /dead-letters?offset=&limit=&preview=`: a page of letters, oldest first.
pub(super) async fn list(
    State(platform): State<Arc<Platform>>,
    Query(query): Query<ListQuery>,
) -> (StatusCode, Json<Value>) {
    let broker = &platform.services.messaging.broker;
    let offset = query.offset.unwrap_or(0);
    let limit = query.limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE);
    let preview = query.preview.unwrap_or(DEFAULT_PREVIEW).min(MAX_PREVIEW);
    let total = match broker.dead_letter_depth().await {
        Ok(total) => total,
        Err(error) => return unavailable(error),
    };
    match broker.dead_letters(offset, limit).await {
        Ok(letters) => {
            // The depth counts only letters at rest: one that an earlier peek still
            // held (RabbitMQ puts it back after that peek's channel closes) is missed,
            // yet this peek saw it. What was seen is a floor.
            let total = total.max((offset + letters.len()) as u64);
            let shown: Vec<Value> = letters.iter().map(|l| letter_json(l, preview)).collect();
            let next = (offset + letters.len() < total as usize && letters.len() == limit)
                .then_some(offset + letters.len());
            (
                StatusCode::OK,
                Json(json!({
                    "total": total,
                    "offset": offset,
                    "next_offset": next,
                    "dead_letters": shown,
                    "refused_when_full": broker.dead_letters_refused(),
                })),
            )
        }
        Err(error) => unavailable(error),
    }
}

/// The first letter with message id `id`.
/// Every dead letter with message id `id` (a redelivered or republished message can
/// die twice), oldest first.
async fn find(platform: &Platform, id: &str) -> Result<Vec<DeadLetter>, String> {
    let broker = &platform.services.messaging.broker;
    let (mut found, mut offset) = (Vec::new(), 0);
    loop {
        let page = broker
            .dead_letters(offset, MAX_PAGE)
            .await
            .map_err(|e| e.to_string())?;
        found.extend(page.iter().filter(|l| l.envelope.id == id).cloned());
        if page.len() < MAX_PAGE {
            return Ok(found);
        }
        offset += page.len();
    }
}

/// `GET /dead-letters/{id}`: one letter, with up to 64 KiB of its payload; when
/// several letters share the id, the oldest, and the others under
/// `more_with_this_id`.
pub(super) async fn show(
    State(platform): State<Arc<Platform>>,
    Path(id): Path<String>,
) -> (StatusCode, Json<Value>) {
    match find(&platform, &id).await {
        Ok(letters) if !letters.is_empty() => {
            let mut shown = letter_json(&letters[0], MAX_PREVIEW);
            if letters.len() > 1 {
                shown["more_with_this_id"] = letters[1..]
                    .iter()
                    .map(|letter| letter_json(letter, MAX_PREVIEW))
                    .collect();
            }
            (StatusCode::OK, Json(shown))
        }
        Ok(_) => (
            StatusCode::NOT_FOUND,
            Json(json!({ "error": format!("no dead letter with id {id}") })),
        ),
        Err(error) => unavailable(error),
    }
}

/// What to replay or purge: given ids, or every letter (`all`), or (purge only) the
/// letters dead for longer than `older_than_ms`.
#[derive(Deserialize, Default)]
pub struct Selection {
    /// Message ids.
    #[serde(default)]
    pub ids: Vec<String>,
    /// Every letter.
    #[serde(default)]
    pub all: bool,
    /// Purge: letters dead-lettered more than this many ms ago.
    pub older_than_ms: Option<u64>,
    /// Replay: through the main exchange with this routing key, instead of back into
    /// the queue each letter died in.
    pub routing_key: Option<String>,
}

impl Selection {
    fn picks(&self, letter: &DeadLetter, now: u64) -> bool {
        self.all
            || self.ids.contains(&letter.envelope.id)
            || self
                .older_than_ms
                .is_some_and(|age| now.saturating_sub(letter.died_at_ms) > age)
    }

    fn is_empty(&self) -> bool {
        !self.all && self.ids.is_empty() && self.older_than_ms.is_none()
    }
}

fn refuse(message: &str) -> (StatusCode, Json<Value>) {
    (StatusCode::BAD_REQUEST, Json(json!({ "error": message })))
}

/// `POST /dead-letters/replay` with a [`Selection`]: each picked letter is published
/// again as a first attempt and removed once the broker confirmed it. A picked letter
/// the host did not dead-letter itself (untrusted) is kept and listed.
pub(super) async fn replay(
    State(platform): State<Arc<Platform>>,
    Json(selection): Json<Selection>,
) -> (StatusCode, Json<Value>) {
    if selection.is_empty() || selection.older_than_ms.is_some() {
        return refuse("name the letters to replay: ids, or all");
    }
    let to = match &selection.routing_key {
        Some(key) => {
            if let Err(message) = crate::names::routing::validate_routing_key(key) {
                return refuse(&message);
            }
            ReplayTo::RoutingKey(key.clone())
        }
        None => ReplayTo::Queue,
    };
    let now = now_ms();
    let services = &platform.services;
    let untrusted = std::sync::Mutex::new(Vec::new());
    let pick = |letter: &DeadLetter| match selection.picks(letter, now) {
        true if !letter.trusted => {
            tracing::warn!(id = %letter.envelope.id, queue = %letter.queue, "not replaying an untrusted dead letter (not sealed by this deployment); kept");
            untrusted
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(letter.envelope.id.clone());
            DeadLetterAction::Keep
        }
        true => {
            // Pending again before it can be delivered (and marked) anew.
            services
                .messaging
                .tracker
                .published(&letter.envelope.id, None);
            DeadLetterAction::Replay(to.clone())
        }
        false => DeadLetterAction::Keep,
    };
    match services.messaging.broker.rework_dead_letters(&pick).await {
        Ok(done) => {
            let replayed: Vec<&String> = done.replayed.iter().map(|(id, _)| id).collect();
            let untrusted = untrusted.into_inner().unwrap_or_else(|e| e.into_inner());
            (
                StatusCode::OK,
                Json(json!({
                    "replayed": replayed,
                    "errors": done.errors,
                    "kept": done.kept,
                    "untrusted": untrusted,
                })),
            )
        }
        Err(error) => unavailable(error),
    }
}

/// `POST /dead-letters/purge` with a [`Selection`]: removes the picked letters.
pub(super) async fn purge(
    State(platform): State<Arc<Platform>>,
    Json(selection): Json<Selection>,
) -> (StatusCode, Json<Value>) {
    if selection.is_empty() {
        return refuse("name the letters to purge: ids, all, or older_than_ms");
    }
    let now = now_ms();
    let pick = |letter: &DeadLetter| match selection.picks(letter, now) {
        true => DeadLetterAction::Purge,
        false => DeadLetterAction::Keep,
    };
    match platform
        .services
        .messaging
        .broker
        .rework_dead_letters(&pick)
        .await
    {
        Ok(done) => (
            StatusCode::OK,
            Json(json!({ "purged": done.purged, "kept": done.kept })),
        ),
        Err(error) => unavailable(error),
    }
}

#[cfg(test)]
mod tests {
    use super::payload_preview;

    #[test]
    fn text_is_shown_as_text_and_binary_as_base64_both_bounded() {
        let text = payload_preview("héllo world".as_bytes(), 2);
        assert_eq!(text["text"], "h", "a cut inside 'é' keeps whole characters");
        assert_eq!(text["truncated"], true);
        assert_eq!(text["size"], 12);
        let binary = payload_preview(&[0xff, 0x00, 0xfe], 10);
        assert_eq!(binary["base64"], "/wD+");
        assert_eq!(binary["truncated"], false);
    }
}
