//! Real HTTP and HTTPS servers on loopback for the outbound HTTP tests and benchmark:
//! they record what they receive and answer as told, including the ways a slow or
//! hostile server misbehaves. Every server stops with its handle, and each misbehaviour
//! is bounded in time and bytes.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;

/// How a server answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// 200 with `ok <method> <path> <body bytes>`.
    Echo,
    /// This status, with a short body.
    Status(u16),
    /// Reads the request and never answers (for 30 s at most).
    Silent,
    /// Answers like `Echo`, after 1 s.
    Slow,
    /// Answers like `Echo`, after this long (a provider that far away).
    After(Duration),
    /// Headers at once, then one byte per 100 ms (for 30 s at most).
    Dribble,
    /// Headers, 10 bytes, then nothing (for 30 s at most).
    StallBody,
    /// An endless body of 64 KiB chunks (2 GiB at most).
    Endless,
    /// A response whose headers are 1 MiB.
    HugeHeader,
}

/// One request a server received: the same record the host's provider stand-ins keep
/// (`techub_host::stand_ins::Request`).
pub use techub_host::stand_ins::Request as Received;

/// A running server; stops when dropped.
pub struct TestServer {
    /// Where it listens.
    pub addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    connections: Arc<AtomicU64>,
    streamed: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestServer {
    /// A plain HTTP server on 127.0.0.1.
    pub async fn http(behaviour: Behaviour) -> Self {
        Self::start(behaviour, None).await
    }

    /// An HTTPS server on 127.0.0.1 with a certificate from `ca`.
    pub async fn https(behaviour: Behaviour, ca: &TestCa) -> Self {
        Self::start(behaviour, Some(ca.acceptor())).await
    }

    /// An HTTPS server whose certificate signs itself (no CA anyone trusts).
    pub async fn https_self_signed(behaviour: Behaviour) -> Self {
        let ca = TestCa::new();
        Self::start(behaviour, Some(ca.self_signed_acceptor())).await
    }

    async fn start(behaviour: Behaviour, tls: Option<tokio_rustls::TlsAcceptor>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let addr = listener.local_addr().expect("a bound address");
        let received = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicU64::new(0));
        let streamed = Arc::new(AtomicU64::new(0));
        let (seen, opened, counted) = (received.clone(), connections.clone(), streamed.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                opened.fetch_add(1, Ordering::Relaxed);
                let (seen, tls, counted) = (seen.clone(), tls.clone(), counted.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |request| {
                        let (seen, counted) = (seen.clone(), counted.clone());
                        async move {
                            Ok::<_, Infallible>(answer(behaviour, request, &seen, counted).await)
                        }
                    });
                    let builder = hyper::server::conn::http1::Builder::new();
                    match tls {
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(stream).await {
                                let _ = builder
                                    .serve_connection(TokioIo::new(stream), service)
                                    .await;
                            }
                        }
                        None => {
                            let _ = builder
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        }
                    }
                });
            }
        });
        Self {
            addr,
            received,
            connections,
            streamed,
            task,
        }
    }

    /// `http://127.0.0.1:<port>` (or `https://`).
    pub fn origin(&self, https: bool) -> String {
        let scheme = if https { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// What it received so far.
    pub fn received(&self) -> Vec<Received> {
        self.received
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Body bytes of streamed answers (`Dribble`, `StallBody`, `Endless`) that the
    /// server's connection took to send: a client that stops reading stops this.
    pub fn bytes_streamed(&self) -> u64 {
        self.streamed.load(Ordering::Relaxed)
    }

    /// TCP connections it accepted so far.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }
}

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

async fn answer(
    behaviour: Behaviour,
    request: hyper::Request<hyper::body::Incoming>,
    seen: &Mutex<Vec<Received>>,
    streamed: Arc<AtomicU64>,
) -> hyper::Response<Body> {
    let (parts, body) = request.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes().to_vec())
        .unwrap_or_default();
    let method = parts.method.to_string();
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    let summary = format!("ok {method} {path} {}", body.len());
    seen.lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(Received {
            method,
            path,
            headers: parts
                .headers
                .iter()
                .map(|(n, v)| (n.to_string(), String::from_utf8_lossy(v.as_bytes()).into()))
                .collect(),
            body,
        });
    let full = |status: u16, text: String| {
        hyper::Response::builder()
            .status(status)
            .body(Full::new(Bytes::from(text)).boxed())
            .expect("a valid response")
    };
    let streamed = |chunks: Vec<(Duration, Bytes)>| {
        let stream = futures::stream::iter(chunks).then(move |(pause, chunk)| {
            let streamed = streamed.clone();
            async move {
                tokio::time::sleep(pause).await;
                streamed.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                Ok::<_, Infallible>(Frame::data(chunk))
            }
        });
        hyper::Response::new(BodyExt::boxed(StreamBody::new(stream)))
    };
    match behaviour {
        Behaviour::Echo => full(200, summary),
        Behaviour::Status(status) => full(status, format!("status {status}")),
        Behaviour::Slow => {
            tokio::time::sleep(Duration::from_secs(1)).await;
            full(200, summary)
        }
        Behaviour::After(delay) => {
            // A thread's sleep, not tokio's timer: the timer wheel rounds a deadline up
            // to its next millisecond, so a client a few microseconds later would wait
            // a whole millisecond more.
            let _ = tokio::task::spawn_blocking(move || std::thread::sleep(delay)).await;
            full(200, summary)
        }
        Behaviour::Silent => {
            tokio::time::sleep(Duration::from_secs(30)).await;
            full(200, "late".into())
        }
        Behaviour::Dribble => streamed(
            (0..300)
                .map(|_| (Duration::from_millis(100), Bytes::from_static(b".")))
                .collect(),
        ),
        Behaviour::StallBody => streamed(vec![
            (Duration::ZERO, Bytes::from_static(b"0123456789")),
            (Duration::from_secs(30), Bytes::from_static(b"late")),
        ]),
        Behaviour::Endless => {
            let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
            streamed(
                (0..32 * 1024)
                    .map(|_| (Duration::ZERO, chunk.clone()))
                    .collect(),
            )
        }
        Behaviour::HugeHeader => hyper::Response::builder()
            .header("x-huge", "h".repeat(1024 * 1024))
            .body(Full::new(Bytes::from_static(b"huge")).boxed())
            .expect("a valid response"),
    }
}

use futures::StreamExt as _;

/// A certificate authority made for one test, and a server certificate it signed for
/// `127.0.0.1` and `localhost`.
pub struct TestCa {
    ca_pem: String,
    cert: rustls::pki_types::CertificateDer<'static>,
    key: Vec<u8>,
    self_signed: (rustls::pki_types::CertificateDer<'static>, Vec<u8>),
    dir: tempfile::TempDir,
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}

impl TestCa {
    /// A fresh CA and server certificate.
    pub fn new() -> Self {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
        let ca_key = KeyPair::generate().expect("a CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "techub test CA");
        let ca_cert = ca_params.self_signed(&ca_key).expect("a CA certificate");
        let issuer = Issuer::new(ca_params, ca_key);
        let names = vec!["127.0.0.1".to_string(), "localhost".to_string()];
        let key = KeyPair::generate().expect("a server key");
        let cert = CertificateParams::new(names.clone())
            .expect("server params")
            .signed_by(&key, &issuer)
            .expect("a server certificate");
        let lone_key = KeyPair::generate().expect("a key");
        let lone = CertificateParams::new(names)
            .expect("params")
            .self_signed(&lone_key)
            .expect("a self-signed certificate");
        Self {
            ca_pem: ca_cert.pem(),
            cert: cert.der().clone(),
            key: key.serialize_der(),
            self_signed: (lone.der().clone(), lone_key.serialize_der()),
            dir: tempfile::tempdir().expect("a temporary directory"),
        }
    }

    /// A PEM file holding the CA certificate (for `http.ca_file`).
    pub fn ca_file(&self) -> PathBuf {
        let path = self.dir.path().join("ca.pem");
        std::fs::write(&path, &self.ca_pem).expect("write the CA file");
        path
    }

    fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        acceptor(self.cert.clone(), self.key.clone())
    }

    fn self_signed_acceptor(&self) -> tokio_rustls::TlsAcceptor {
        acceptor(self.self_signed.0.clone(), self.self_signed.1.clone())
    }
}

fn acceptor(
    cert: rustls::pki_types::CertificateDer<'static>,
    key: Vec<u8>,
) -> tokio_rustls::TlsAcceptor {
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(key.into());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_no_client_auth()
    .with_single_cert(vec![cert], key)
    .expect("a server TLS configuration");
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}
