//! `wasi:http/outgoing-handler`: plugins' outbound HTTP requests, under grants,
//! address checks, quotas and timeouts, on a pooled client.
//!
//! The interface is wasmtime-wasi-http's own (any wasi:http client in any language
//! works); every request it makes goes through [`HttpHooks`]'s `send_request`, where
//! the host applies the plugin's rules, and out through that plugin's pooled client.
//! Deny by default: a plugin without `outbound` grants sends nothing.
//!
//! # Layout
//! - `mod.rs`: [`HttpService`] (one per platform: the TLS roots and each plugin's
//!   client), [`PluginHttp`] (one plugin's grants, limits, pool and in-flight turns),
//!   [`HttpHooks`] (one instance's requests), and [`link`].
//! - `send.rs`: `send_request`, the order of the checks, and the error each gives.
//! - `connect.rs`: the connector: resolve, check, connect, TLS.
//! - `address.rs`: which addresses are public, and which a grant names.
//! - `body.rs`: request and response bodies held to the byte limits and timeouts.
//!
//! The grant syntax and the `[http]` section are in [`crate::config::OutboundGrant`]
//! and [`crate::config::HttpConfig`].

mod address;
mod body;
mod connect;
mod send;

pub use address::{is_non_public, may_connect};

use crate::config::{HostConfig, HttpConfig, Limits, OutboundGrant};
use crate::metrics::Metrics;
use connect::Connector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use wasmtime::component::Linker;
use wasmtime_wasi_http::{WasiHttp, WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks};

/// Largest response header section a plugin's client reads (hyper's buffer).
const MAX_RESPONSE_HEAD_BYTES: usize = 64 * 1024;
/// Most response header fields.
const MAX_RESPONSE_HEADERS: usize = 100;

/// The view of an instance's `state` wasmtime-wasi-http's host functions run on: its
/// resource table, and [`HttpHooks`] holding every request to the plugin's grants.
pub(crate) fn view(state: &mut crate::capability::InstanceState) -> WasiHttpCtxView<'_> {
    WasiHttpCtxView {
        ctx: &mut state.http_ctx,
        table: &mut state.table,
        hooks: &mut state.http,
    }
}

/// Links `wasi:http/outgoing-handler` and `wasi:http/types` with the [`view`] of an
/// instance's state (what `wasmtime_wasi_http::p2::add_only_http_to_linker_async`
/// does for a `T: WasiHttpView`).
pub fn link<T: crate::capability::HoldsInstanceState>(
    linker: &mut Linker<T>,
) -> wasmtime::Result<()> {
    use wasmtime_wasi_http::p2::bindings::{LinkOptions, http};
    let of_instance: fn(&mut T) -> WasiHttpCtxView<'_> = |data| view(data.instance_state());
    http::outgoing_handler::add_to_linker::<T, WasiHttp>(linker, of_instance)?;
    http::types::add_to_linker::<T, WasiHttp>(linker, &LinkOptions::default().into(), of_instance)
}

/// Outbound HTTP for the whole platform: the TLS configuration and a client per
/// plugin, kept across reloads while the plugin's grants and limits stay the same
/// (so its pooled connections survive an unrelated edit of `host.toml`).
pub struct HttpService {
    metrics: Arc<Metrics>,
    tls: Mutex<Tls>,
    plugins: Mutex<HashMap<String, Arc<PluginHttp>>>,
}

/// The TLS connector and what it was built from.
struct Tls {
    built_from: Option<(HttpConfig, Option<std::time::SystemTime>)>,
    connector: Option<tokio_rustls::TlsConnector>,
}

impl HttpService {
    /// The service; TLS roots are read on first use.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            metrics,
            tls: Mutex::new(Tls {
                built_from: None,
                connector: None,
            }),
            plugins: Mutex::default(),
        }
    }

    /// The outbound HTTP of plugin `name` under `config`: the same client as before
    /// when nothing it depends on changed, else a new one (the old pool drains with
    /// the versions still using it).
    pub fn plugin(&self, name: &str, config: &HostConfig) -> Arc<PluginHttp> {
        let section = config.plugins.get(name);
        let grants: Vec<OutboundGrant> = section
            .map(|p| p.outbound.as_slice())
            .unwrap_or_default()
            .iter()
            // Validated with the configuration: an invalid grant cannot reach here.
            .filter_map(|g| OutboundGrant::parse(g).ok())
            .collect();
        let limits = config.limits_of(name);
        let tls = self.tls(&config.http);
        let mut plugins = self.plugins.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(existing) = plugins.get(name)
            && *existing.grants == *grants
            && existing.limits == limits
            && existing.http == config.http
            && existing.tls_generation == tls.1
        {
            return existing.clone();
        }
        let built = Arc::new(PluginHttp::new(
            name,
            grants,
            limits,
            config.http.clone(),
            tls,
            self.metrics.clone(),
        ));
        plugins.insert(name.to_string(), built.clone());
        built
    }

    /// The TLS connector for `http` (rebuilt when the section or the CA file
    /// changed), and a number that changes with it.
    fn tls(&self, http: &HttpConfig) -> (tokio_rustls::TlsConnector, usize) {
        let modified = http
            .ca_file
            .as_ref()
            .and_then(|p| std::fs::metadata(p).ok()?.modified().ok());
        let key = (http.clone(), modified);
        let mut tls = self.tls.lock().unwrap_or_else(|e| e.into_inner());
        if tls.built_from.as_ref() != Some(&key) || tls.connector.is_none() {
            match connect::tls_config(http.ca_file.as_deref()) {
                Ok(connector) => {
                    tls.connector = Some(connector);
                    tls.built_from = Some(key);
                }
                Err(error) => {
                    // Validation read the file moments ago; keep what worked.
                    tracing::error!(error = format!("{error:#}"), "could not load TLS roots");
                    if tls.connector.is_none() {
                        tls.connector = connect::tls_config(None).ok();
                    }
                }
            }
        }
        let connector = tls.connector.clone().unwrap_or_else(|| {
            tokio_rustls::TlsConnector::from(Arc::new(
                rustls::ClientConfig::builder_with_provider(Arc::new(
                    rustls::crypto::ring::default_provider(),
                ))
                .with_safe_default_protocol_versions()
                .expect("ring supports the default TLS versions")
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth(),
            ))
        });
        let generation = Arc::as_ptr(connector.config()) as usize;
        (connector, generation)
    }
}

/// One plugin's outbound HTTP: its grants and limits, its pooled client, and its
/// turns in flight (shared by all its instances).
pub struct PluginHttp {
    name: crate::metrics::Name,
    grants: Arc<[OutboundGrant]>,
    limits: Limits,
    http: HttpConfig,
    tls_generation: usize,
    client: Client<Connector, body::RequestBody>,
    in_flight: Arc<tokio::sync::Semaphore>,
    opened: Arc<AtomicU64>,
    metrics: Arc<Metrics>,
}

impl PluginHttp {
    fn new(
        name: &str,
        grants: Vec<OutboundGrant>,
        limits: Limits,
        http: HttpConfig,
        (tls, tls_generation): (tokio_rustls::TlsConnector, usize),
        metrics: Arc<Metrics>,
    ) -> Self {
        let grants: Arc<[OutboundGrant]> = grants.into();
        let opened = Arc::new(AtomicU64::new(0));
        let connector = Connector {
            grants: grants.clone(),
            tls,
            connect_timeout: Duration::from_millis(limits.http_connect_timeout_ms.into()),
            opened: opened.clone(),
        };
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_millis(http.idle_timeout_ms))
            .pool_max_idle_per_host(http.max_idle_per_origin as usize)
            .http1_max_buf_size(MAX_RESPONSE_HEAD_BYTES)
            .http1_max_headers(MAX_RESPONSE_HEADERS)
            .build(connector);
        Self {
            name: Arc::new(name.to_string()),
            grants,
            limits,
            http,
            tls_generation,
            client,
            in_flight: Arc::new(tokio::sync::Semaphore::new(
                limits.max_http_in_flight as usize,
            )),
            opened,
            metrics,
        }
    }

    /// The grants, as written in `host.toml`.
    pub fn grants(&self) -> impl Iterator<Item = &str> {
        self.grants.iter().map(|g| &*g.text)
    }

    /// Connections this client opened (a pooled client opens about one per request
    /// in flight, not one per request).
    pub fn connections_opened(&self) -> u64 {
        self.opened.load(Ordering::Relaxed)
    }

    fn record(&self, origin: &str, outcome: &'static str, elapsed: Option<Duration>) {
        self.metrics.http_request(&self.name, origin, outcome);
        if let Some(elapsed) = elapsed {
            self.observe(origin, elapsed);
        }
    }

    fn observe(&self, origin: &str, elapsed: Duration) {
        self.metrics.http_seconds(&self.name, origin, elapsed);
    }
}

/// One instance's outbound HTTP: its plugin's rules and what this message sent.
pub struct HttpHooks {
    plugin: Option<Arc<PluginHttp>>,
    /// Requests sent for the current message.
    sent: u32,
    /// Whether it ran into `max_http_requests`.
    pub(crate) over: bool,
}

impl HttpHooks {
    /// The hooks of an instance of a plugin whose outbound HTTP is `plugin`.
    pub fn new(plugin: Arc<PluginHttp>) -> Self {
        Self {
            plugin: Some(plugin),
            sent: 0,
            over: false,
        }
    }

    /// Readies a reused instance for its next message.
    pub(crate) fn next_message(&mut self) {
        self.sent = 0;
        self.over = false;
    }
}

impl WasiHttpHooks for HttpHooks {
    fn send_request(
        &mut self,
        request: http::Request<wasmtime_wasi_http::WasiBody>,
        options: Option<wasmtime_wasi_http::RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ) -> Box<
        dyn Future<
                Output = Result<
                    (
                        http::Response<wasmtime_wasi_http::WasiBody>,
                        Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
                    ),
                    wasmtime_wasi_http::Error,
                >,
            > + Send,
    > {
        self.send(request, options)
    }
}

/// A fresh `wasi:http` context (its header size limit is wasmtime's 128 KiB).
pub fn context() -> WasiHttpCtx {
    WasiHttpCtx::new()
}
