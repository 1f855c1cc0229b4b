//! Opening a plugin's connections: resolve by the host, check every address, connect
//! within the plugin's connect timeout, then TLS with the platform's roots (and
//! `http.ca_file`). Pooling is hyper-util's; this is the connector it calls for each
//! new connection, so a reused connection was checked when it was opened.

use super::address::may_connect;
use crate::config::OutboundGrant;
use hyper::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// Why a connection was not opened; the caller maps it onto a `wasi:http` error.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The name did not resolve.
    #[error("could not resolve {0}")]
    Dns(String),
    /// Every address the host resolved to is non-public and not granted.
    #[error("{host} resolves only to addresses no grant names ({addresses})")]
    Prohibited {
        /// The request's host.
        host: String,
        /// What it resolved to.
        addresses: String,
    },
    /// No connection within the connect timeout.
    #[error("no connection within {0:?}")]
    Timeout(Duration),
    /// The server refused or the network failed.
    #[error("could not connect: {0}")]
    Io(io::Error),
    /// The TLS handshake failed on the server's certificate.
    #[error("TLS certificate refused: {0}")]
    Certificate(String),
    /// The TLS handshake failed otherwise.
    #[error("TLS handshake failed: {0}")]
    Tls(String),
    /// The request's URI has no host.
    #[error("the request has no host")]
    NoHost,
}

/// The connector of one plugin's pooled client.
#[derive(Clone)]
pub struct Connector {
    pub(super) grants: Arc<[OutboundGrant]>,
    pub(super) tls: TlsConnector,
    pub(super) connect_timeout: Duration,
    /// Connections opened, for the metrics and the pooling benchmark.
    pub(super) opened: Arc<AtomicU64>,
}

impl tower_service::Service<Uri> for Connector {
    type Response = TokioIo<Stream>;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, ConnectError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ConnectError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let timeout = this.connect_timeout;
            tokio::time::timeout(timeout, this.connect(uri))
                .await
                .map_err(|_| ConnectError::Timeout(timeout))?
        })
    }
}

impl Connector {
    async fn connect(self, uri: Uri) -> Result<TokioIo<Stream>, ConnectError> {
        let host = uri.host().ok_or(ConnectError::NoHost)?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let https = uri.scheme() == Some(&http::uri::Scheme::HTTPS);
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let addresses = resolve(&host, port).await?;
        let (allowed, refused): (Vec<SocketAddr>, Vec<SocketAddr>) = addresses
            .into_iter()
            .partition(|a| may_connect(&self.grants, a.ip()));
        if allowed.is_empty() {
            let addresses = refused
                .iter()
                .map(|a| a.ip().to_string())
                .collect::<Vec<_>>()
                .join(", ");
            return Err(ConnectError::Prohibited { host, addresses });
        }
        let mut last = None;
        let mut tcp = None;
        for address in allowed {
            match TcpStream::connect(address).await {
                Ok(stream) => {
                    tcp = Some(stream);
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        let tcp = match tcp {
            Some(tcp) => tcp,
            None => {
                return Err(ConnectError::Io(last.unwrap_or_else(|| {
                    io::Error::new(io::ErrorKind::NotFound, "no address")
                })));
            }
        };
        let _ = tcp.set_nodelay(true);
        self.opened.fetch_add(1, Ordering::Relaxed);
        if !https {
            return Ok(TokioIo::new(Stream::Plain(tcp)));
        }
        let name = match host.parse::<IpAddr>() {
            Ok(ip) => rustls::pki_types::ServerName::from(ip),
            Err(_) => rustls::pki_types::ServerName::try_from(host.clone())
                .map_err(|e| ConnectError::Tls(e.to_string()))?,
        };
        let tls = self.tls.connect(name, tcp).await.map_err(tls_error)?;
        Ok(TokioIo::new(Stream::Tls(Box::new(tls))))
    }
}

/// Resolves `host` (a name, or an address literal in any form the system's resolver
/// reads, such as `2130706433` or `0x7f.1`): every form ends as the addresses checked.
async fn resolve(host: &str, port: u16) -> Result<Vec<SocketAddr>, ConnectError> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let found = tokio::net::lookup_host((host, port))
        .await
        .map_err(|_| ConnectError::Dns(host.to_string()))?
        .collect::<Vec<_>>();
    if found.is_empty() {
        return Err(ConnectError::Dns(host.to_string()));
    }
    Ok(found)
}

fn tls_error(error: io::Error) -> ConnectError {
    let inner = error
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>());
    match inner {
        Some(rustls::Error::InvalidCertificate(reason)) => {
            ConnectError::Certificate(format!("{reason:?}"))
        }
        Some(other) => ConnectError::Tls(other.to_string()),
        None => ConnectError::Tls(error.to_string()),
    }
}

/// The TLS client configuration: the system's roots plus `ca_file`'s.
pub fn tls_config(ca_file: Option<&std::path::Path>) -> anyhow::Result<TlsConnector> {
    use anyhow::Context as _;
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for error in &native.errors {
        tracing::warn!(%error, "a system root certificate could not be read");
    }
    let (added, _) = roots.add_parsable_certificates(native.certs);
    if added == 0 {
        tracing::warn!("no system root certificates: HTTPS works only with http.ca_file's");
    }
    if let Some(path) = ca_file {
        let certs = CertificateDer::pem_file_iter(path)
            .with_context(|| format!("could not read http.ca_file {}", path.display()))?
            .collect::<Result<Vec<_>, _>>()
            .with_context(|| format!("http.ca_file {} is not PEM", path.display()))?;
        for cert in certs {
            roots.add(cert).with_context(|| {
                format!("http.ca_file {} holds a bad certificate", path.display())
            })?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("could not set up TLS")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

/// A connection, plain or TLS.
pub enum Stream {
    /// `http`
    Plain(TcpStream),
    /// `https`
    Tls(Box<TlsStream<TcpStream>>),
}

impl Connection for Stream {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    // Forwarded so that hyper sees the stream writes vectors (as a bare `TcpStream`
    // does) and sends a request's head and body in one `writev`, instead of first
    // copying the body into its own buffer.
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(s) => s.is_write_vectored(),
            Self::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
