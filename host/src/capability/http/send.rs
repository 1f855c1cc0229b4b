//! `send_request`: every outbound request of a plugin passes here, in this order:
//! the per-message quota, the grant, the request body's declared size, a turn among
//! the plugin's requests in flight, then the pooled client (whose connector checks the
//! addresses) under the connect and first-byte timeouts.

use super::body::{RequestBody, RequestBodyError, ResponseBody};
use super::connect::ConnectError;
use super::{HttpHooks, PluginHttp};
use crate::config::GrantScheme;
use http_body_util::BodyExt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody};

/// The future `send_request` hands back to wasmtime-wasi-http.
type Sending = Box<
    dyn Future<
            Output = Result<
                (
                    http::Response<WasiBody>,
                    Box<dyn Future<Output = Result<(), Error>> + Send>,
                ),
                Error,
            >,
        > + Send,
>;

/// Records a request's outcome once, when its response body ends (or at once when
/// it failed before), and holds its in-flight turn until then.
pub struct Finished {
    plugin: Arc<PluginHttp>,
    origin: Arc<str>,
    _turn: tokio::sync::OwnedSemaphorePermit,
}

impl Finished {
    pub(super) fn record(self, outcome: &'static str) {
        self.plugin.record(&self.origin, outcome, None);
    }
}

impl HttpHooks {
    pub(super) fn send(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
    ) -> Sending {
        let Some(plugin) = self.plugin.clone() else {
            return refused(Error::HttpRequestDenied);
        };
        let limits = plugin.limits;
        self.sent += 1;
        if self.sent > limits.max_http_requests {
            self.over = true;
            tracing::warn!(
                plugin = %plugin.name,
                "outbound request refused: more than {} HTTP requests for one message (limits.max_http_requests)",
                limits.max_http_requests
            );
            plugin.record("(none)", "quota", None);
            return refused(Error::HttpRequestDenied);
        }
        let uri = request.uri();
        let scheme = match uri.scheme_str() {
            Some("http") => GrantScheme::Http,
            Some("https") => GrantScheme::Https,
            _ => return refused(Error::HttpProtocolError),
        };
        let Some(host) = uri.host().map(|h| {
            h.trim_start_matches('[')
                .trim_end_matches(']')
                .to_ascii_lowercase()
        }) else {
            // An authority-less request never reaches a connector (CVE-2024-32980).
            return refused(Error::HttpRequestUriInvalid);
        };
        let port = uri.port_u16().unwrap_or(scheme.default_port());
        let Some(grant) = plugin.grants.iter().find(|g| g.covers(scheme, &host, port)) else {
            let shown_host = if host.contains(':') {
                format!("[{host}]")
            } else {
                host.clone()
            };
            tracing::warn!(
                plugin = %plugin.name,
                "outbound request to {}://{shown_host}:{port} denied: no grant covers it; to allow it add \"{}://{shown_host}:{port}\" to outbound in [plugins.{}] of host.toml",
                scheme.as_str(),
                scheme.as_str(),
                plugin.name,
            );
            plugin.record("(none)", "denied", None);
            return refused(Error::HttpRequestDenied);
        };
        let origin = grant.text.clone();
        let declared = request
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limits.max_http_request_bytes) {
            plugin.record(&origin, "request_too_large", None);
            return refused(Error::HttpRequestBodySize(Some(
                limits.max_http_request_bytes,
            )));
        }
        let clamp = |asked: Option<Duration>, limit: u32| {
            let limit = Duration::from_millis(limit.into());
            asked.map_or(limit, |asked| asked.min(limit))
        };
        let options = options.unwrap_or_default();
        let connect = clamp(options.connect_timeout, limits.http_connect_timeout_ms);
        let first_byte = clamp(
            options.first_byte_timeout,
            limits.http_first_byte_timeout_ms,
        );
        let between = clamp(
            options.between_bytes_timeout,
            limits.http_between_bytes_timeout_ms,
        );
        let request = request.map(|body| RequestBody::new(body, limits.max_http_request_bytes));
        Box::new(async move {
            let started = Instant::now();
            let turn = match tokio::time::timeout(connect, plugin.in_flight.clone().acquire_owned())
                .await
            {
                Ok(Ok(turn)) => turn,
                _ => {
                    plugin.record(&origin, "in_flight_limit", None);
                    return Err(Error::ConnectionLimitReached);
                }
            };
            let response = match tokio::time::timeout(
                connect + first_byte,
                plugin.client.request(request),
            )
            .await
            {
                Ok(Ok(response)) => response,
                Ok(Err(error)) => {
                    let (error, outcome) = classify(&error);
                    tracing::debug!(plugin = %plugin.name, %origin, outcome, "outbound request failed");
                    plugin.record(&origin, outcome, Some(started.elapsed()));
                    return Err(error);
                }
                Err(_) => {
                    plugin.record(&origin, "timeout", Some(started.elapsed()));
                    return Err(Error::HttpResponseTimeout);
                }
            };
            plugin.observe(&origin, started.elapsed());
            let done = Finished {
                plugin: plugin.clone(),
                origin,
                _turn: turn,
            };
            let max = limits.max_http_response_bytes;
            let response = response
                .map(|incoming| ResponseBody::new(incoming, max, between, done).boxed_unsync());
            Ok((
                response,
                Box::new(async { Ok(()) }) as Box<dyn Future<Output = _> + Send>,
            ))
        })
    }
}

fn refused(error: Error) -> Sending {
    Box::new(async move { Err(error) })
}

/// The `wasi:http` error, and the metrics outcome, of a failed request.
fn classify(error: &hyper_util::client::legacy::Error) -> (Error, &'static str) {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if let Some(connect) = e.downcast_ref::<ConnectError>() {
            return match connect {
                ConnectError::Dns(_) => (
                    Error::DnsError {
                        rcode: Some("name not resolved".into()),
                        info_code: None,
                    },
                    "dns",
                ),
                ConnectError::Prohibited { .. } => {
                    (Error::DestinationIpProhibited, "address_refused")
                }
                ConnectError::Timeout(_) => (Error::ConnectionTimeout, "timeout"),
                ConnectError::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
                    (Error::ConnectionRefused, "connect_error")
                }
                ConnectError::Io(_) => (Error::DestinationUnavailable, "connect_error"),
                ConnectError::Certificate(_) => (Error::TlsCertificateError, "tls_error"),
                ConnectError::Tls(_) => (Error::TlsProtocolError, "tls_error"),
                ConnectError::NoHost => (Error::HttpRequestUriInvalid, "error"),
            };
        }
        if let Some(RequestBodyError::TooLarge(max)) = e.downcast_ref::<RequestBodyError>() {
            return (Error::HttpRequestBodySize(Some(*max)), "request_too_large");
        }
        if let Some(h) = e.downcast_ref::<hyper::Error>() {
            if h.is_parse_too_large() {
                return (
                    Error::HttpResponseHeaderSectionSize(None),
                    "response_too_large",
                );
            }
            if h.is_timeout() {
                return (Error::HttpResponseTimeout, "timeout");
            }
            if h.is_incomplete_message() || h.is_closed() || h.is_canceled() {
                return (Error::HttpResponseIncomplete, "error");
            }
            if h.is_parse() {
                return (Error::HttpProtocolError, "error");
            }
        }
        source = e.source();
    }
    (Error::ConnectionTerminated, "error")
}
