//! The admin endpoint's client: `techub-host publish` and the tests use it.

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
    let request = authorized(
        hyper::Request::post(format!("/publish/{routing_key}?priority={priority}")),
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

fn authorized(
    request: hyper::http::request::Builder,
    token: Option<&str>,
) -> hyper::http::request::Builder {
    match token {
        Some(token) => request.header(hyper::header::AUTHORIZATION, format!("Bearer {token}")),
        None => request,
    }
}

/// One request to `admin` (`host:port`) on a connection of its own (the admin endpoint
/// and RabbitMQ's management API are rarely called: no pool is worth having); the HTTP
/// status and the body.
pub(crate) async fn send(
    admin: &str,
    request: hyper::Request<Full<bytes::Bytes>>,
) -> anyhow::Result<(u16, String)> {
    let stream = tokio::net::TcpStream::connect(admin)
        .await
        .context("could not connect")?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .context("could not speak HTTP")?;
    tokio::spawn(connection);
    let response = sender.send_request(request).await.context("no answer")?;
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .context("could not read the answer")?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}
