//! Inspection routes: what a plugin stored and what a cache domain holds, read by an
//! operator. `GET /store/{plugin}/keys/{key}`, `GET /store/{plugin}/scan/{pattern}`
//! and `GET /cache/{domain}/keys/{key}`, behind the admin token like every route.
//!
//! Store reads go through the plugin's own `store` view, built from its grant: the
//! namespace, the key checks and the escaping of patterns are the ones its guest
//! meets, so an operator's key or pattern cannot reach outside `<prefix>store:<plugin>:`
//! either. Values are shown as UTF-8 text when they are, hex otherwise, cut at
//! [`MAX_SHOWN_BYTES`]; collections at [`MAX_SHOWN_ITEMS`], scans one page at a time.

use crate::Platform;
use crate::capability::Usage;
use crate::capability::bindings::techub::platform::store::{Host, KeyTtl, StoreError};
use crate::capability::store::{StoreFailure, StoreGrant, StoreView};
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;

/// Longest value shown; the answer says how long it was.
pub const MAX_SHOWN_BYTES: usize = 4096;
/// Most members, fields or elements shown of a collection.
pub const MAX_SHOWN_ITEMS: usize = 100;
/// Most keys asked of one scan page.
const MAX_SCAN_PAGE: u32 = 1000;
/// Most pages one scan request follows (the rest: through the cursor it answers).
const MAX_SCAN_PAGES: usize = 256;

type Answer = (StatusCode, Json<Value>);

fn refused(status: StatusCode, error: impl std::fmt::Display) -> Answer {
    (status, Json(json!({ "error": error.to_string() })))
}

/// `bytes` for people: `{"text": ..}` or `{"hex": ..}`, cut at [`MAX_SHOWN_BYTES`],
/// with the whole size (the dead-letter routes' shape, with hex for binary).
pub fn shown(bytes: &[u8]) -> Value {
    super::dead_letters::bounded_json(bytes, MAX_SHOWN_BYTES, super::dead_letters::Binary::Hex)
}

/// A plugin's store view, as its guest has it, for one read.
struct Reader {
    grant: StoreGrant,
}

impl Reader {
    fn of(platform: &Platform, plugin: &str) -> Result<Self, Answer> {
        if !crate::config::validate_name(plugin) {
            return Err(refused(
                StatusCode::BAD_REQUEST,
                format!("{plugin:?} is not a plugin name (a-z, 0-9, - and _)"),
            ));
        }
        let config = platform.config();
        let grant = StoreGrant::new(plugin, &config, platform.services.store.clone());
        Ok(Self { grant })
    }

    async fn read<T>(
        &self,
        call: impl AsyncFnOnce(&mut StoreView<'_>) -> Result<T, StoreFailure>,
    ) -> Result<T, StoreError> {
        let (mut usage, mut claims) = (Usage::within(u32::MAX), Vec::new());
        let mut view = StoreView::new(&self.grant, &mut usage, &mut claims);
        call(&mut view).await.map_err(|failure| {
            failure
                .downcast()
                .unwrap_or_else(|trap| StoreError::Unavailable(format!("{trap:#}")))
        })
    }
}

fn store_error(error: StoreError) -> Answer {
    let status = match &error {
        StoreError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::BAD_REQUEST,
    };
    refused(status, format!("{error:?}"))
}

/// `GET /store/{plugin}/keys/{key}`: the value under the plugin's key, whatever its
/// type (string, hash, list, set, sorted set), and its TTL.
pub(super) async fn store_get(
    State(platform): State<Arc<Platform>>,
    Path((plugin, key)): Path<(String, String)>,
) -> Answer {
    let reader = match Reader::of(&platform, &plugin) {
        Ok(reader) => reader,
        Err(answer) => return answer,
    };
    match read_any(&reader, &key).await {
        Ok(Some((kind, value))) => {
            let ttl = match reader.read(async |v| v.ttl(key.clone()).await).await {
                Ok(KeyTtl::ExpiresInMs(ms)) => json!(ms),
                _ => Value::Null,
            };
            let body = json!({ "plugin": plugin, "key": key, "type": kind, "value": value, "ttl_ms": ttl });
            (StatusCode::OK, Json(body))
        }
        Ok(None) => refused(
            StatusCode::NOT_FOUND,
            format!("plugin {plugin} has no key {key:?}"),
        ),
        Err(error) => store_error(error),
    }
}

/// The value under `key` and its type; `None` when it does not exist.
async fn read_any(reader: &Reader, key: &str) -> Result<Option<(&'static str, Value)>, StoreError> {
    let key = key.to_string();
    let items = |list: Vec<Vec<u8>>| {
        Value::Array(
            list.iter()
                .take(MAX_SHOWN_ITEMS)
                .map(|b| shown(b))
                .collect(),
        )
    };
    match reader.read(async |v| v.get(key.clone()).await).await {
        Ok(Some(value)) => return Ok(Some(("string", shown(&value)))),
        Ok(None) => return Ok(None),
        Err(StoreError::WrongType) => {}
        Err(error) => return Err(error),
    }
    let fields = reader
        .read(async |v| v.hash_get_all(key.clone()).await)
        .await;
    if let Ok(fields) = fields {
        let shown_fields: serde_json::Map<String, Value> = fields
            .iter()
            .take(MAX_SHOWN_ITEMS)
            .map(|(field, value)| (field.clone(), shown(value)))
            .collect();
        return Ok(Some((
            "hash",
            json!({ "fields": shown_fields, "count": fields.len() }),
        )));
    }
    let last = MAX_SHOWN_ITEMS as i64 - 1;
    if let Ok(list) = reader
        .read(async |v| v.list_range(key.clone(), 0, last).await)
        .await
    {
        let len = reader.read(async |v| v.list_len(key.clone()).await).await?;
        return Ok(Some((
            "list",
            json!({ "elements": items(list), "count": len }),
        )));
    }
    if let Ok(members) = reader
        .read(async |v| v.set_members(key.clone()).await)
        .await
    {
        let count = members.len();
        return Ok(Some((
            "set",
            json!({ "members": items(members), "count": count }),
        )));
    }
    let scored = reader
        .read(async |v| v.sorted_range(key.clone(), 0, last, false).await)
        .await?;
    let count = reader
        .read(async |v| v.sorted_len(key.clone()).await)
        .await?;
    let members: Vec<Value> = scored
        .iter()
        .map(|s| json!({ "member": shown(&s.member), "score": s.score }))
        .collect();
    Ok(Some((
        "sorted-set",
        json!({ "members": members, "count": count }),
    )))
}

#[derive(Deserialize)]
pub(super) struct ScanQuery {
    cursor: Option<String>,
    count: Option<u32>,
}

/// `GET /store/{plugin}/scan/{pattern}?cursor=&count=`: about `count` of the plugin's
/// keys matching the glob `pattern` (as its `store.scan` sees them: without the
/// namespace; a key may come twice, as with SCAN), and the cursor to go on from.
pub(super) async fn store_scan(
    State(platform): State<Arc<Platform>>,
    Path((plugin, pattern)): Path<(String, String)>,
    Query(query): Query<ScanQuery>,
) -> Answer {
    let reader = match Reader::of(&platform, &plugin) {
        Ok(reader) => reader,
        Err(answer) => return answer,
    };
    let count = query.count.unwrap_or(100).clamp(1, MAX_SCAN_PAGE) as usize;
    // A Redis page may hold none of the plugin's keys (SCAN walks the whole keyspace):
    // pages are followed until `count` keys or the end, within a bound.
    let (mut keys, mut cursor) = (Vec::new(), query.cursor.clone());
    for _ in 0..MAX_SCAN_PAGES {
        let page = reader
            .read(async |v| v.scan(pattern.clone(), cursor.clone(), MAX_SCAN_PAGE).await)
            .await;
        match page {
            Ok(page) => {
                keys.extend(page.keys);
                cursor = page.cursor;
            }
            Err(error) => return store_error(error),
        }
        if cursor.is_none() || keys.len() >= count {
            break;
        }
    }
    (
        StatusCode::OK,
        Json(json!({ "plugin": plugin, "pattern": pattern, "keys": keys, "cursor": cursor })),
    )
}

/// `GET /cache/{domain}/keys/{key}`: the entry of a declared domain.
pub(super) async fn cache_get(
    State(platform): State<Arc<Platform>>,
    Path((domain, key)): Path<(String, String)>,
) -> Answer {
    let config = platform.config();
    if !config.cache.domains.contains_key(&domain) {
        return refused(
            StatusCode::NOT_FOUND,
            format!("{domain:?} is not a declared cache domain"),
        );
    }
    if let Err(reason) = crate::names::check_name(&key, config.host.max_key_length) {
        return refused(StatusCode::BAD_REQUEST, format!("key {reason}"));
    }
    match platform
        .services
        .cache
        .backend
        .get_many(&domain, std::slice::from_ref(&key))
        .await
    {
        Ok(mut values) => match values.pop().flatten() {
            Some(value) => (
                StatusCode::OK,
                Json(json!({ "domain": domain, "key": key, "value": shown(&value) })),
            ),
            None => refused(
                StatusCode::NOT_FOUND,
                format!("domain {domain} has no entry {key:?}"),
            ),
        },
        Err(error) => refused(StatusCode::SERVICE_UNAVAILABLE, error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_text_when_they_are_and_hex_otherwise_and_cut() {
        let text = shown(b"hi");
        assert_eq!(
            (&text["text"], &text["size"], &text["truncated"]),
            (&json!("hi"), &json!(2), &json!(false))
        );
        assert_eq!(shown(&[0xff, 0x00])["hex"], "ff00");
        let long = "é".repeat(MAX_SHOWN_BYTES);
        let value = shown(long.as_bytes());
        assert_eq!(value["truncated"], true);
        assert_eq!(value["size"], long.len());
        assert_eq!(value["text"].as_str().unwrap().len(), MAX_SHOWN_BYTES);
    }
}
