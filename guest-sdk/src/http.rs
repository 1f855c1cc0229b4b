//! Outbound HTTP: call the services a consumer works for (a mail provider, a payment
//! gateway, a customer's webhook endpoint).
//!
//! A small client over the standard `wasi:http/outgoing-handler`. The host sends the
//! request only to origins `host.toml` grants this plugin (`[plugins.<name>] outbound =
//! ["https://api.mail.example"]`), on its own pooled connections, and holds it to the
//! plugin's limits (requests per message, timeouts, body sizes). Keep credentials in
//! `[plugins.<name>.secrets]` and read them with [`crate::config::get`].
//!
//! [`RequestBuilder::send`] fails on a status of 400 or more, and `?` turns every
//! [`HttpError`] into the right [`Failure`]: a timeout, a connection error, a 5xx, 408
//! or 429 is retried with the queue's backoff; any other 4xx, a denied request or a
//! body over the limit is dead-lettered. Match on [`HttpError::Status`] to decide
//! otherwise.
//!
//! ```no_run
//! # use techub_guest::prelude::*;
//! # use techub_guest::http;
//! # fn handle(message: Message) -> Result<(), Failure> {
//! let key = config::get("api_key").ok_or_else(|| Failure::retry("api_key is not set"))?;
//! let sent = http::post("https://api.mail.example/v1/send")
//!     .json(&serde_json::json!({ "to": "ada@example.com" }))?
//!     .header("Authorization", format!("Bearer {key}"))
//!     .header("Idempotency-Key", message.id())
//!     .send()?;
//! let receipt: serde_json::Value = sent.json()?;
//! # Ok(()) }
//! ```

use crate::Failure;
use crate::wit::wasi::http::outgoing_handler;
use crate::wit::wasi::http::types as wit;
use crate::wit::wasi::io::streams::{OutputStream, StreamError};
use std::time::Duration;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The host refused the request: no `outbound` grant covers its origin, the address
    /// it resolves to is not granted, or the plugin sent more requests for this message
    /// than `limits.max_http_requests` allows. Fix `host.toml`; retrying does not help.
    #[error("HTTP request denied by the host: {0}")]
    Denied(String),
    /// No connection, headers or next body bytes within the limits.
    #[error("HTTP request timed out: {0}")]
    Timeout(String),
    /// The connection could not be made or broke (DNS, refused, reset, too many in
    /// flight).
    #[error("HTTP connection failed: {0}")]
    Connection(String),
    /// The TLS handshake failed (an untrusted or invalid certificate).
    #[error("TLS failed: {0}")]
    Tls(String),
    /// The request or response body is larger than the plugin's limit.
    #[error("HTTP body too large: {0}")]
    TooLarge(String),
    /// The server answered with a status of 400 or more; the response is kept.
    #[error("HTTP status {}", .0.status)]
    Status(Box<Response>),
    /// The request could not be built (a malformed URL, method or header).
    #[error("invalid HTTP request: {0}")]
    Invalid(String),
    /// The body is not the JSON expected.
    #[error("JSON: {0}")]
    Json(String),
    /// Another protocol failure.
    #[error("HTTP failed: {0}")]
    Other(String),
}

impl HttpError {
    /// Whether trying again later may succeed: timeouts, connection and TLS failures,
    /// and statuses 408, 429 and 5xx.
    ///
    /// ```no_run
    /// # use techub_guest::http;
    /// # fn f() {
    /// if let Err(error) = http::get("https://api.example/health").send() {
    ///     let _ = error.is_retryable();
    /// }
    /// # }
    /// ```
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Timeout(_) | Self::Connection(_) | Self::Tls(_) | Self::Other(_) => true,
            Self::Status(response) => matches!(response.status, 408 | 429 | 500..=599),
            Self::Denied(_) | Self::TooLarge(_) | Self::Invalid(_) | Self::Json(_) => false,
        }
    }
}

impl From<HttpError> for Failure {
    fn from(error: HttpError) -> Self {
        if error.is_retryable() {
            Failure::retry(error)
        } else {
            Failure::reject(error)
        }
    }
}

/// A response: status, headers and the whole body.
#[derive(Debug, Clone)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The header fields, names in lower case, in the order received.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Response {
    /// The first value of header `name` (any case), as text.
    ///
    /// ```no_run
    /// # use techub_guest::http;
    /// # fn f() -> Result<(), http::HttpError> {
    /// let response = http::get("https://api.example/items").send()?;
    /// let kind = response.header("content-type");
    /// # Ok(()) }
    /// ```
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }

    /// The body parsed as JSON.
    ///
    /// ```no_run
    /// # use techub_guest::http;
    /// # fn f() -> Result<(), http::HttpError> {
    /// let items: Vec<String> = http::get("https://api.example/items").send()?.json()?;
    /// # Ok(()) }
    /// ```
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, HttpError> {
        serde_json::from_slice(&self.body).map_err(|e| HttpError::Json(e.to_string()))
    }

    /// The body as text (invalid UTF-8 replaced).
    ///
    /// ```no_run
    /// # use techub_guest::http;
    /// # fn f() -> Result<(), http::HttpError> {
    /// let page = http::get("https://api.example/").send()?.text();
    /// # Ok(()) }
    /// ```
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A request being built; [`RequestBuilder::send`] sends it.
#[derive(Debug, Clone)]
#[must_use = "a request is sent only by .send()"]
pub struct RequestBuilder {
    method: String,
    url: String,
    headers: Vec<(String, Vec<u8>)>,
    body: Option<Vec<u8>>,
    timeout: Option<Duration>,
}

/// A `GET` of `url`.
///
/// ```no_run
/// # use techub_guest::http;
/// # fn f() -> Result<(), http::HttpError> {
/// let response = http::get("https://api.example/orders/42").send()?;
/// # Ok(()) }
/// ```
pub fn get(url: impl Into<String>) -> RequestBuilder {
    request("GET", url)
}

/// A `POST` to `url`.
///
/// ```no_run
/// # use techub_guest::http;
/// # fn f() -> Result<(), http::HttpError> {
/// http::post("https://api.example/events").body("hello").send()?;
/// # Ok(()) }
/// ```
pub fn post(url: impl Into<String>) -> RequestBuilder {
    request("POST", url)
}

/// A `PUT` to `url`.
///
/// ```no_run
/// # use techub_guest::http;
/// # fn f() -> Result<(), http::HttpError> {
/// http::put("https://api.example/items/1").body("{}").send()?;
/// # Ok(()) }
/// ```
pub fn put(url: impl Into<String>) -> RequestBuilder {
    request("PUT", url)
}

/// A `DELETE` of `url`.
///
/// ```no_run
/// # use techub_guest::http;
/// # fn f() -> Result<(), http::HttpError> {
/// http::delete("https://api.example/items/1").send()?;
/// # Ok(()) }
/// ```
pub fn delete(url: impl Into<String>) -> RequestBuilder {
    request("DELETE", url)
}

/// A request with any `method` (`PATCH`, `HEAD`, ...).
///
/// ```no_run
/// # use techub_guest::http;
/// # fn f() -> Result<(), http::HttpError> {
/// http::request("PATCH", "https://api.example/items/1").body("{}").send()?;
/// # Ok(()) }
/// ```
pub fn request(method: impl Into<String>, url: impl Into<String>) -> RequestBuilder {
    RequestBuilder {
        method: method.into(),
        url: url.into(),
        headers: Vec::new(),
        body: None,
        timeout: None,
    }
}

impl RequestBuilder {
    /// Adds a header field (the host refuses `Host`, `Connection` and the other
    /// hop-by-hop fields).
    ///
    /// ```no_run
    /// # use techub_guest::http;
    /// # fn f() -> Result<(), http::HttpError> {
    /// http::get("https://api.example/").header("Accept", "application/json").send()?;
    /// # Ok(()) }
    /// ```
    pub fn header(mut self, name: impl Into<String>, value: impl AsRef<[u8]>) -> Self {
        self.headers.push((name.into(), value.as_ref().to_vec()));
        self
    }

    /// Sets the body.
    ///
    /// ```no_run
    /// # use techub_guest::http;
    /// # fn f() -> Result<(), http::HttpError> {
    /// http::post("https://api.example/raw").body(vec![1, 2, 3]).send()?;
    /// # Ok(()) }
    /// ```
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = Some(body.into());
        self
    }

    /// Sets a JSON body and `Content-Type: application/json`.
    ///
    /// ```no_run
    /// # use techub_guest::http;
    /// # fn f() -> Result<(), http::HttpError> {
    /// http::post("https://api.example/orders").json(&serde_json::json!({"id": 1}))?.send()?;
    /// # Ok(()) }
    /// ```
    pub fn json<T: serde::Serialize + ?Sized>(self, body: &T) -> Result<Self, HttpError> {
        let bytes = serde_json::to_vec(body).map_err(|e| HttpError::Json(e.to_string()))?;
        Ok(self.header("content-type", "application/json").body(bytes))
    }

    /// Waits at most `timeout` for the connection, for the response's headers and
    /// between body chunks (each); the host's limits apply when they are shorter.
    ///
    /// ```no_run
    /// # use techub_guest::http;
    /// # use std::time::Duration;
    /// # fn f() -> Result<(), http::HttpError> {
    /// http::get("https://api.example/").timeout(Duration::from_secs(2)).send()?;
    /// # Ok(()) }
    /// ```
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Sends the request and reads the whole response; a status of 400 or more is
    /// [`HttpError::Status`].
    ///
    /// ```no_run
    /// # use techub_guest::http;
    /// # fn f() -> Result<(), http::HttpError> {
    /// match http::get("https://api.example/items/9").send() {
    ///     Ok(found) => {}
    ///     Err(http::HttpError::Status(response)) if response.status == 404 => {}
    ///     Err(other) => return Err(other),
    /// }
    /// # Ok(()) }
    /// ```
    pub fn send(self) -> Result<Response, HttpError> {
        let response = self.send_any_status()?;
        if response.status >= 400 {
            return Err(HttpError::Status(Box::new(response)));
        }
        Ok(response)
    }

    /// Sends the request and reads the whole response, whatever its status.
    ///
    /// ```no_run
    /// # use techub_guest::http;
    /// # fn f() -> Result<(), http::HttpError> {
    /// let response = http::get("https://api.example/items/9").send_any_status()?;
    /// if response.status == 410 { /* the endpoint is gone */ }
    /// # Ok(()) }
    /// ```
    pub fn send_any_status(self) -> Result<Response, HttpError> {
        crate::native::ensure_host();
        let url = Url::parse(&self.url)?;
        let fields = wit::Fields::new();
        for (name, value) in &self.headers {
            fields
                .append(name, value)
                .map_err(|e| HttpError::Invalid(format!("header {name}: {e:?}")))?;
        }
        // A body of known length goes out with `Content-Length`, not chunked: the
        // host's client then writes the head and a small body in one go.
        if let Some(body) = &self.body
            && !self
                .headers
                .iter()
                .any(|(name, _)| name.eq_ignore_ascii_case("content-length"))
        {
            fields
                .append("content-length", body.len().to_string().as_bytes())
                .map_err(|e| HttpError::Invalid(format!("header content-length: {e:?}")))?;
        }
        let request = wit::OutgoingRequest::new(fields);
        let method = method(&self.method);
        let invalid = |what: &str| HttpError::Invalid(format!("{what} of {}", self.url));
        request
            .set_method(&method)
            .map_err(|()| invalid("method"))?;
        request
            .set_scheme(Some(&url.scheme))
            .map_err(|()| invalid("scheme"))?;
        request
            .set_authority(Some(url.authority))
            .map_err(|()| invalid("host"))?;
        request
            .set_path_with_query(Some(url.path_and_query))
            .map_err(|()| invalid("path"))?;
        let options = self.timeout.map(|timeout| {
            let nanos = u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX);
            let options = wit::RequestOptions::new();
            // Each setter fails only when the host does not support the option.
            let _ = options.set_connect_timeout(Some(nanos));
            let _ = options.set_first_byte_timeout(Some(nanos));
            let _ = options.set_between_bytes_timeout(Some(nanos));
            options
        });
        // Without a body the request has none at all (not an empty stream the host
        // would have to wait on). A body is written, as far as the host buffers it,
        // before `handle`: one that fits is finished before the request leaves.
        let mut unsent = None;
        if let Some(body) = &self.body {
            let outgoing = request.body().map_err(|()| invalid("body"))?;
            let stream = outgoing
                .write()
                .map_err(|()| HttpError::Other("request body taken twice".into()))?;
            let rest = write_ready(&stream, body)?.ok_or_else(|| {
                HttpError::Other("the host closed the request body before the request".into())
            })?;
            if rest.is_empty() {
                drop(stream);
                wit::OutgoingBody::finish(outgoing, None).map_err(error_of)?;
            } else {
                unsent = Some((outgoing, stream, rest));
            }
        }
        let pending = outgoing_handler::handle(request, options).map_err(error_of)?;
        if let Some((outgoing, stream, rest)) = unsent {
            let taken = write_all(&stream, rest)?;
            drop(stream);
            if taken {
                wit::OutgoingBody::finish(outgoing, None).map_err(error_of)?;
            }
            // Else the host stopped taking the body: the request failed, and its
            // response says why (a grant, a size limit, a dead server).
        }
        let incoming = loop {
            match pending.get() {
                Some(Ok(Ok(response))) => break response,
                Some(Ok(Err(code))) => return Err(error_of(code)),
                Some(Err(())) => return Err(HttpError::Other("response taken twice".into())),
                None => pending.subscribe().block(),
            }
        };
        let status = incoming.status();
        let headers = incoming.headers().entries();
        let body = read_all(incoming)?;
        Ok(Response {
            status,
            headers,
            body,
        })
    }
}

/// Writes what the host takes of `bytes` without waiting; returns the rest, or `None`
/// when the host stopped taking the body.
fn write_ready<'a>(stream: &OutputStream, bytes: &'a [u8]) -> Result<Option<&'a [u8]>, HttpError> {
    let mut rest = bytes;
    while !rest.is_empty() {
        let ready = match stream.check_write() {
            Ok(0) => break,
            Ok(n) => n,
            Err(StreamError::Closed) => return Ok(None),
            Err(e) => return Err(stream_error(e)),
        };
        let take = rest.len().min(usize::try_from(ready).unwrap_or(usize::MAX));
        match stream.write(&rest[..take]) {
            Ok(()) => rest = &rest[take..],
            Err(StreamError::Closed) => return Ok(None),
            Err(e) => return Err(stream_error(e)),
        }
    }
    Ok(Some(rest))
}

/// Writes `bytes` to the request body, as fast as the host takes them; `false` when
/// the host stopped taking them.
fn write_all(stream: &OutputStream, bytes: &[u8]) -> Result<bool, HttpError> {
    let mut rest = bytes;
    while !rest.is_empty() {
        match write_ready(stream, rest)? {
            Some(left) => rest = left,
            None => return Ok(false),
        }
        if !rest.is_empty() {
            stream.subscribe().block();
        }
    }
    match stream.blocking_flush() {
        Ok(()) => Ok(true),
        Err(StreamError::Closed) => Ok(false),
        Err(e) => Err(stream_error(e)),
    }
}

/// Reads the whole response body.
fn read_all(response: wit::IncomingResponse) -> Result<Vec<u8>, HttpError> {
    let body = response
        .consume()
        .map_err(|()| HttpError::Other("response body taken twice".into()))?;
    let stream = body
        .stream()
        .map_err(|()| HttpError::Other("response body taken twice".into()))?;
    let mut bytes = Vec::new();
    loop {
        match stream.blocking_read(64 * 1024) {
            Ok(chunk) => bytes.extend_from_slice(&chunk),
            Err(StreamError::Closed) => break,
            Err(e) => return Err(stream_error(e)),
        }
    }
    drop(stream);
    drop(body);
    Ok(bytes)
}

fn stream_error(error: StreamError) -> HttpError {
    match error {
        StreamError::Closed => HttpError::Other("the stream closed early".into()),
        StreamError::LastOperationFailed(e) => match wit::http_error_code(&e) {
            Some(code) => error_of(code),
            // wasmtime-wasi-http 48 reports a response body's failure as text only
            // (its `http-error-code` finds no code there): read the kind from it.
            None => {
                let text = e.to_debug_string();
                if text.contains("body size exceeds limit") {
                    HttpError::TooLarge(text)
                } else if text.contains("timeout") || text.contains("timed out") {
                    HttpError::Timeout(text)
                } else {
                    HttpError::Connection(text)
                }
            }
        },
    }
}

fn error_of(code: wit::ErrorCode) -> HttpError {
    use wit::ErrorCode as E;
    let text = format!("{code:?}")
        .trim_start_matches("ErrorCode::")
        .to_string();
    match code {
        E::HttpRequestDenied | E::DestinationIpProhibited => HttpError::Denied(text),
        E::DnsTimeout
        | E::ConnectionTimeout
        | E::ConnectionReadTimeout
        | E::ConnectionWriteTimeout
        | E::HttpResponseTimeout => HttpError::Timeout(text),
        E::DnsError(_)
        | E::DestinationNotFound
        | E::DestinationUnavailable
        | E::DestinationIpUnroutable
        | E::ConnectionRefused
        | E::ConnectionTerminated
        | E::ConnectionLimitReached
        | E::HttpResponseIncomplete => HttpError::Connection(text),
        E::TlsProtocolError | E::TlsCertificateError | E::TlsAlertReceived(_) => {
            HttpError::Tls(text)
        }
        E::HttpRequestBodySize(_)
        | E::HttpResponseBodySize(_)
        | E::HttpResponseHeaderSectionSize(_)
        | E::HttpResponseHeaderSize(_) => HttpError::TooLarge(text),
        E::HttpRequestMethodInvalid | E::HttpRequestUriInvalid | E::HttpRequestUriTooLong => {
            HttpError::Invalid(text)
        }
        _ => HttpError::Other(text),
    }
}

fn method(name: &str) -> wit::Method {
    match name.to_ascii_uppercase().as_str() {
        "GET" => wit::Method::Get,
        "HEAD" => wit::Method::Head,
        "POST" => wit::Method::Post,
        "PUT" => wit::Method::Put,
        "DELETE" => wit::Method::Delete,
        "CONNECT" => wit::Method::Connect,
        "OPTIONS" => wit::Method::Options,
        "TRACE" => wit::Method::Trace,
        "PATCH" => wit::Method::Patch,
        other => wit::Method::Other(other.to_string()),
    }
}

/// The parts of an absolute `http`/`https` URL that a `wasi:http` request takes.
struct Url<'a> {
    scheme: wit::Scheme,
    authority: &'a str,
    path_and_query: &'a str,
}

impl<'a> Url<'a> {
    fn parse(url: &'a str) -> Result<Self, HttpError> {
        let invalid = || HttpError::Invalid(format!("{url:?} is not an http:// or https:// URL"));
        let (scheme, rest) = url.split_once("://").ok_or_else(invalid)?;
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "http" => wit::Scheme::Http,
            "https" => wit::Scheme::Https,
            _ => return Err(invalid()),
        };
        let rest = rest.split('#').next().unwrap_or_default();
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(end);
        if authority.is_empty() || authority.contains('@') {
            return Err(invalid());
        }
        let path_and_query = if path.is_empty() { "/" } else { path };
        Ok(Self {
            scheme,
            authority,
            path_and_query,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_scheme_authority_and_path() {
        let url = Url::parse("https://api.example:8443/v1/send?x=1#frag").unwrap();
        assert!(matches!(url.scheme, wit::Scheme::Https));
        assert_eq!(url.authority, "api.example:8443");
        assert_eq!(url.path_and_query, "/v1/send?x=1");
        assert_eq!(Url::parse("http://h").unwrap().path_and_query, "/");
        assert_eq!(Url::parse("http://h?q").unwrap().path_and_query, "?q");
        for bad in ["ftp://h/", "h/path", "https://", "https://u:p@h/"] {
            assert!(Url::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn retryable_failures_retry_and_the_rest_reject() {
        let status = |status| {
            HttpError::Status(Box::new(Response {
                status,
                headers: vec![],
                body: vec![],
            }))
        };
        for retry in [
            HttpError::Timeout(String::new()),
            HttpError::Connection(String::new()),
            status(503),
            status(429),
            status(408),
        ] {
            assert!(matches!(Failure::from(retry), Failure::Retry(_)));
        }
        for reject in [
            HttpError::Denied(String::new()),
            HttpError::TooLarge(String::new()),
            status(404),
            status(400),
        ] {
            assert!(matches!(Failure::from(reject), Failure::Reject(_)));
        }
    }
}
