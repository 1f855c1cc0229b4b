//! One plain HTTP/1.1 request on a connection of its own: the admin endpoint's client
//! (`techub-host` subcommands, tests) and the calls to RabbitMQ's management API. A
//! leaf: it imports nothing of the host.

use anyhow::Context;
use http_body_util::{BodyExt, Full};

/// Characters that cannot stand as they are in one path segment: `#` would start a
/// fragment (`tail '#'`), `?` a query, `/` another segment, `%` an escape.
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}');

/// `text` as one URL path segment (the admin endpoint decodes it back).
pub fn segment(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, SEGMENT).to_string()
}

/// Sends `request` to `addr` (`host:port`) on a connection of its own (the admin
/// endpoint and RabbitMQ's management API are rarely called: no pool is worth having).
pub async fn request_on_own_connection(
    addr: &str,
    request: hyper::Request<Full<bytes::Bytes>>,
) -> anyhow::Result<hyper::Response<hyper::body::Incoming>> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .context("could not connect")?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .context("could not speak HTTP")?;
    tokio::spawn(connection);
    sender.send_request(request).await.context("no answer")
}

/// One request to `addr` (`host:port`); the HTTP status and the body.
pub async fn send(
    addr: &str,
    request: hyper::Request<Full<bytes::Bytes>>,
) -> anyhow::Result<(u16, String)> {
    let response = request_on_own_connection(addr, request).await?;
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .context("could not read the answer")?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}
