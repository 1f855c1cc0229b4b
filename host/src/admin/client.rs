//! The admin endpoint's client: `techub-host publish` and the tests use it.

pub use crate::http1::segment;
use crate::http1::{request_on_own_connection, send};
use anyhow::Context;
use http_body_util::{BodyExt, Full};

/// POSTs `payload` to `/publish/{routing_key}` of the admin endpoint at `admin`
/// (`host:port`); the HTTP status and the body of the answer. An empty `priority`
/// lets the queue types that bind the key decide.
pub async fn publish(
    admin: &str,
    token: Option<&str>,
    routing_key: &str,
    payload: Vec<u8>,
    priority: &str,
) -> anyhow::Result<(u16, String)> {
    let message = Publish {
        priority: priority.to_string(),
        ..Publish::default()
    };
    publish_message(admin, token, routing_key, payload, &message).await
}

/// What `techub-host publish` may set besides the routing key and payload.
#[derive(Debug, Clone, Default)]
pub struct Publish {
    /// low, normal, high, urgent; empty: the queue types that bind the key decide.
    pub priority: String,
    /// The message id (to test a plugin's idempotency).
    pub message_id: Option<String>,
    /// The correlation id.
    pub correlation_id: Option<String>,
    /// Application headers.
    pub headers: Vec<(String, String)>,
}

/// [`publish`] with the message id, correlation id and headers of `message`.
pub async fn publish_message(
    admin: &str,
    token: Option<&str>,
    routing_key: &str,
    payload: Vec<u8>,
    message: &Publish,
) -> anyhow::Result<(u16, String)> {
    let mut query = vec![("priority", message.priority.clone())];
    if let Some(id) = &message.message_id {
        query.push(("message_id", id.clone()));
    }
    if let Some(id) = &message.correlation_id {
        query.push(("correlation_id", id.clone()));
    }
    if !message.headers.is_empty() {
        let headers: serde_json::Map<String, serde_json::Value> = message
            .headers
            .iter()
            .map(|(name, value)| (name.clone(), value.clone().into()))
            .collect();
        query.push(("headers", serde_json::Value::Object(headers).to_string()));
    }
    let query = serde_urlencoded::to_string(&query).context("the options do not fit in a URL")?;
    let request = authorized(
        hyper::Request::post(format!("/publish/{}?{query}", segment(routing_key))),
        token,
    )
    .header(hyper::header::HOST, admin)
    .header(hyper::header::CONTENT_TYPE, "application/octet-stream")
    .body(Full::new(bytes::Bytes::from(payload)))
    .context("the routing key or priority does not fit in a URL")?;
    send(admin, request).await
}

/// GETs `path` of the admin endpoint at `admin`; the HTTP status and the body.
pub async fn get(admin: &str, token: Option<&str>, path: &str) -> anyhow::Result<(u16, String)> {
    let request = authorized(hyper::Request::get(path), token)
        .header(hyper::header::HOST, admin)
        .body(Full::new(bytes::Bytes::new()))
        .context("the path does not fit in a URL")?;
    send(admin, request).await
}

/// POSTs `body` as JSON to `path` of the admin endpoint at `admin`; the HTTP status and
/// the body of the answer.
pub async fn post_json(
    admin: &str,
    token: Option<&str>,
    path: &str,
    body: &serde_json::Value,
) -> anyhow::Result<(u16, String)> {
    let request = authorized(hyper::Request::post(path), token)
        .header(hyper::header::HOST, admin)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(bytes::Bytes::from(body.to_string())))
        .context("the path does not fit in a URL")?;
    send(admin, request).await
}

/// Follows `/tail/{pattern}` of the admin endpoint at `admin`: calls `on_line` with
/// each JSON line as it arrives, until it returns `false` or the host ends the stream.
pub async fn tail(
    admin: &str,
    token: Option<&str>,
    pattern: &str,
    mut on_line: impl FnMut(&str) -> bool,
) -> anyhow::Result<()> {
    let request = authorized(
        hyper::Request::get(format!("/tail/{}", segment(pattern))),
        token,
    )
    .header(hyper::header::HOST, admin)
    .body(Full::new(bytes::Bytes::new()))
    .context("the pattern does not fit in a URL")?;
    let response = request_on_own_connection(admin, request).await?;
    let status = response.status().as_u16();
    let mut body = response.into_body();
    if status != 200 {
        let text = body
            .collect()
            .await
            .context("could not read the answer")?
            .to_bytes();
        anyhow::bail!("{status}: {}", String::from_utf8_lossy(&text));
    }
    let mut pending = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(frame) => frame,
            // The connection ended mid-stream: the host went away (stopped, restarted).
            Err(error) if cut_short(&error) => {
                anyhow::bail!("the host at {admin} closed the stream: it stopped or restarted")
            }
            Err(error) => return Err(error).context("the stream broke"),
        };
        let Some(data) = frame.data_ref() else {
            continue;
        };
        pending.extend_from_slice(data);
        while let Some(end) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            if !on_line(String::from_utf8_lossy(&line[..end]).as_ref()) {
                return Ok(());
            }
        }
    }
    Ok(())
}

/// Whether a body read failed because the connection ended mid-message (the server
/// went away), rather than for another reason.
fn cut_short(error: &hyper::Error) -> bool {
    let eof = std::error::Error::source(error)
        .and_then(|source| source.downcast_ref::<std::io::Error>())
        .is_some_and(|io| io.kind() == std::io::ErrorKind::UnexpectedEof);
    error.is_incomplete_message() || eof
}

fn authorized(
    request: hyper::http::request::Builder,
    token: Option<&str>,
) -> hyper::http::request::Builder {
    match token {
        Some(token) => request.header(hyper::header::AUTHORIZATION, format!("Bearer {token}")),
        None => request,
    }
}
