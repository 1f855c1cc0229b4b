//! `bench http`: a plugin making one outbound HTTP request per message to a local
//! server, against a native pooled hyper client making the same requests at the same
//! concurrency, and against the plugin's own host client and rules called without wasm
//! (`send_request` as wasmtime-wasi-http calls it), in alternating rounds
//! ([`harness::Rounds`]); the latency a request gains through the plugin, connections
//! opened per 1000 requests, and the host's RSS with 16 plugins each holding 16
//! requests in flight. The third side splits the plugin's cost: the host's rules and
//! pool on one side, the guest's instance and the `wasi:http` resources on the other;
//! a fourth, the plugin reusing its instances (`reuse_instance = 1000`), takes out what
//! the fresh instance per message costs.
//! One at a time is measured twice: on the main runtime with the server, and on a
//! one-thread runtime of the client's own (see [`http`]). Last, plugin and native
//! against a server that answers after 1 ms: the plugin's cost beside a provider's.

use super::harness::{self, Count, Rounds, Sample, quantile};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::sync::Arc;
use std::time::{Duration, Instant};
use techub_host::bindings::Outcome;
use techub_host::plugins::{LoadedPlugin, load_plugin};
use techub_host::runtime::Runtime;
use techub_host::services;
use techub_tests::http_server::{Behaviour, TestServer};
use techub_tests::{PluginDir, config};

static REQUESTS: Count<usize> = Count::new(2_000, 48);
static ROUNDS: Count<usize> = Count::new(5, 1);

/// One side's round: requests/s and each request's latency.
struct Round {
    /// The round's rate and this process's CPU.
    sample: Sample,
    latencies: Vec<Duration>,
}

impl Round {
    fn of(latencies: Vec<Duration>, started: Instant, cpu: Duration) -> Self {
        let sample = harness::sample_of(
            latencies.len() as u64,
            started.elapsed(),
            harness::process_cpu() - cpu,
        );
        Self { sample, latencies }
    }
}

/// `requests` timed calls of `one`, `concurrency` at a time: the round's rate, this
/// process's CPU and each call's latency.
async fn timed_round<F, Fut>(requests: usize, concurrency: usize, one: F) -> anyhow::Result<Round>
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let (started, cpu) = (Instant::now(), harness::process_cpu());
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let one = one.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(requests / concurrency);
                for _ in 0..requests / concurrency {
                    let at = Instant::now();
                    one().await?;
                    latencies.push(at.elapsed());
                }
                Ok::<_, anyhow::Error>(latencies)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await??);
    }
    Ok(Round::of(latencies, started, cpu))
}

/// Plugin invocations, each one request to `url`. With `url` `None`, the same
/// invocations with no request: what the plugin costs without HTTP.
async fn plugin_round(
    runtime: &Arc<Runtime>,
    plugin: &Arc<LoadedPlugin>,
    url: Option<&str>,
    requests: usize,
    concurrency: usize,
) -> anyhow::Result<Round> {
    invocations_round(runtime, plugin, url, requests, concurrency, None).await
}

/// [`plugin_round`] with instances kept for reuse (`reuse_instance = 1000`, as
/// `embedded` and `prefetch` measure it): what the fresh instance costs a request.
async fn reusing_round(
    runtime: &Arc<Runtime>,
    plugin: &Arc<LoadedPlugin>,
    url: &str,
    requests: usize,
    concurrency: usize,
) -> anyhow::Result<Round> {
    let kept = Arc::new(std::sync::Mutex::new(Vec::new()));
    invocations_round(
        runtime,
        plugin,
        Some(url),
        requests,
        concurrency,
        Some(kept),
    )
    .await
}

/// Instances kept between the invocations of a round, one per invocation in flight.
type Kept = Arc<std::sync::Mutex<Vec<techub_host::runtime::Teardown>>>;

/// Timed invocations of the caller, `concurrency` at once, each making the request to
/// `url` (or none); with `kept`, each takes a kept instance if there is one and puts
/// its own back after, as a consumer with `reuse_instance` does.
async fn invocations_round(
    runtime: &Arc<Runtime>,
    plugin: &Arc<LoadedPlugin>,
    url: Option<&str>,
    requests: usize,
    concurrency: usize,
    kept: Option<Kept>,
) -> anyhow::Result<Round> {
    let plan: Arc<str> = match url {
        Some(url) => serde_json::json!({ "requests": [{ "url": url }] }),
        None => serde_json::json!({ "requests": [] }),
    }
    .to_string()
    .into();
    let expected = if url.is_some() { "#0 200" } else { "rejected" };
    let (runtime, plugin) = (runtime.clone(), plugin.clone());
    timed_round(requests, concurrency, move || {
        let (runtime, plugin, plan) = (runtime.clone(), plugin.clone(), plan.clone());
        let kept = kept.clone();
        async move {
            let delivery =
                techub_tests::delivery("webhook", "fixture.caller.bench", plan.as_bytes());
            let reused = kept.as_ref().and_then(|k| k.lock().unwrap().pop());
            let (report, teardown) = runtime
                .invoke_held(&plugin.pre, plugin.context.clone(), &delivery, 5, reused)
                .await;
            if let Some(kept) = &kept
                && teardown.reusable(1000)
            {
                kept.lock().unwrap().push(teardown);
            }
            match report.result {
                Ok(Outcome::Reject(r)) if r.contains(expected) || r.is_empty() => Ok(()),
                other => anyhow::bail!("the request failed: {other:?}"),
            }
        }
    })
    .await
}

/// The same requests from a native pooled client.
async fn native_round(
    client: &Client<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>>,
    url: &str,
    requests: usize,
    concurrency: usize,
) -> anyhow::Result<Round> {
    let uri: hyper::Uri = url.parse()?;
    let client = client.clone();
    timed_round(requests, concurrency, move || {
        let (client, uri) = (client.clone(), uri.clone());
        async move {
            let response = client.get(uri).await?;
            anyhow::ensure!(response.status() == 200, "status {}", response.status());
            response.into_body().collect().await?;
            Ok(())
        }
    })
    .await
}

/// The same requests through the plugin's own host client and rules (grant, quota,
/// in-flight turn, pool, counted bodies: `send_request` as wasmtime-wasi-http calls
/// it), without wasm: what the host's HTTP path costs before the guest's.
async fn host_client_round(
    http: &Arc<techub_host::capability::http::PluginHttp>,
    url: &str,
    requests: usize,
    concurrency: usize,
) -> anyhow::Result<Round> {
    use wasmtime_wasi_http::WasiHttpHooks;
    let uri: hyper::Uri = url.parse()?;
    let http = http.clone();
    timed_round(requests, concurrency, move || {
        let (http, uri) = (http.clone(), uri.clone());
        async move {
            // A fresh instance's hooks per request, as a message gets.
            let mut hooks = techub_host::capability::http::HttpHooks::new(http);
            let body = Empty::<Bytes>::new()
                .map_err(|never| match never {})
                .boxed_unsync();
            let request = hyper::Request::get(uri).body(body)?;
            let sending = hooks.send_request(request, None, Box::new(async { Ok(()) }));
            let (response, _io) = std::pin::Pin::from(sending)
                .await
                .map_err(|e| anyhow::anyhow!("{e:?}"))?;
            anyhow::ensure!(response.status() == 200, "status {}", response.status());
            response
                .into_body()
                .collect()
                .await
                .map_err(|e| anyhow::anyhow!("{e:?}"))?;
            Ok(())
        }
    })
    .await
}

pub async fn http() -> anyhow::Result<()> {
    let server = Arc::new(TestServer::http(Behaviour::Echo).await);
    println!(
        "bench http: {REQUESTS} requests per round to a local keep-alive server, {ROUNDS} alternating rounds per side"
    );
    // One at a time twice. On the main runtime, as the host runs: there the native
    // client, its connection's task and the server often share one worker, and a
    // request costs no thread wake-up at all, which no server in another process
    // allows. And on a one-thread runtime of the client's own (as `cache-get`), the
    // server staying on the main runtime's threads: each side then waits for a server
    // that runs elsewhere, as a real one does. Sixteen at once on the main runtime.
    at_concurrency(&server, 1, "main runtime, server on the same workers").await?;
    let one = server.clone();
    crate::on_one_thread(move || async move {
        at_concurrency(&one, 1, "one-thread runtime, server on other threads")
            .await
            .map(drop)
    })?;
    let config = at_concurrency(&server, 16, "main runtime").await?;
    held_in_flight(&config).await?;
    far_server().await
}

/// Against a server 1 ms away (it answers each request after 1 ms, as a provider
/// nearby would): plugin ÷ native hyper, one at a time and sixteen at once, on the
/// main runtime. What the plugin's cost comes to beside a real provider's time.
async fn far_server() -> anyhow::Result<()> {
    static FAR: Count<usize> = Count::new(400, 16);
    let server = TestServer::http(Behaviour::After(Duration::from_millis(1))).await;
    let url = format!("{}/far", server.origin(false));
    let caller = Caller::granted(&server).await?;
    let (runtime, plugin) = (&caller.runtime, &caller.plugin);
    let native = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    for concurrency in [1, 16] {
        let requests = *FAR * concurrency.min(8);
        // Warm-up: connections.
        plugin_round(runtime, plugin, Some(&url), concurrency, concurrency).await?;
        native_round(&native, &url, concurrency, concurrency).await?;
        let (mut plugin_latency, mut native_latency) = (Vec::new(), Vec::new());
        let sides = ["plugin", "native hyper client"];
        let rounds = Rounds::alternate(&sides, *ROUNDS, async |side| {
            let round = match side {
                0 => plugin_round(runtime, plugin, Some(&url), requests, concurrency).await?,
                _ => native_round(&native, &url, requests, concurrency).await?,
            };
            match side {
                0 => plugin_latency.extend(round.latencies),
                _ => native_latency.extend(round.latencies),
            }
            Ok(round.sample)
        })
        .await?;
        rounds.report(
            &format!(
                "http: {requests} requests to a server that answers after 1 ms, concurrency {concurrency}, main runtime"
            ),
            "req",
            &[(0, 1)],
        );
        print_latencies(&mut plugin_latency, &mut native_latency);
    }
    Ok(())
}

/// Each side's p50 and p99 over all rounds, and what the plugin adds at each.
fn print_latencies(plugin: &mut [Duration], native: &mut [Duration]) {
    plugin.sort();
    native.sort();
    let (p50, p99) = (
        |l: &[Duration]| quantile(l, 0.5),
        |l: &[Duration]| quantile(l, 0.99),
    );
    println!(
        "      per request p50 {:?} / p99 {:?} through the plugin, {:?} / {:?} native: the plugin adds {:?} at p50, {:?} at p99",
        p50(plugin),
        p99(plugin),
        p50(native),
        p99(native),
        p50(plugin).saturating_sub(p50(native)),
        p99(plugin).saturating_sub(p99(native)),
    );
}

/// The caller fixture loaded with a grant to `server`, and what it runs on.
struct Caller {
    _dir: PluginDir,
    config: Arc<techub_host::HostConfig>,
    services: Arc<services::Services>,
    runtime: Arc<Runtime>,
    plugin: Arc<LoadedPlugin>,
}

impl Caller {
    async fn granted(server: &TestServer) -> anyhow::Result<Self> {
        let dir = PluginDir::with(&[("caller", "fixture_caller")]);
        let mut config = config(&dir);
        let section = config.plugins.entry("caller".into()).or_default();
        section.outbound = vec![server.origin(false)];
        let config = Arc::new(config);
        let (services, runtime, plugin) = crate::load_alone(&dir, "caller", &config).await?;
        Ok(Self {
            _dir: dir,
            config,
            services,
            runtime,
            plugin,
        })
    }
}

/// The three sides at `concurrency`, in alternating rounds; the configuration used.
async fn at_concurrency(
    server: &TestServer,
    concurrency: usize,
    runtime_kind: &str,
) -> anyhow::Result<Arc<techub_host::HostConfig>> {
    let url = format!("{}/bench", server.origin(false));
    let Caller {
        _dir,
        config,
        services,
        runtime,
        plugin,
    } = Caller::granted(server).await?;
    let native = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let host_client = services.http.plugin("caller", &config);
    {
        // Warm-up: connections and the compiled plugin.
        plugin_round(&runtime, &plugin, Some(&url), *REQUESTS, concurrency).await?;
        native_round(&native, &url, *REQUESTS, concurrency).await?;
        let (mut plugin_latency, mut native_latency) = (Vec::new(), Vec::new());
        let (mut plugin_connections, mut native_connections) = (0, 0);
        host_client_round(&host_client, &url, *REQUESTS, concurrency).await?;
        let (mut host_latency, mut reusing_latency) = (Vec::new(), Vec::new());
        let sides = [
            "plugin",
            "native hyper client",
            "host client without wasm",
            "plugin reusing its instance",
        ];
        let rounds = Rounds::alternate(&sides, *ROUNDS, async |side| {
            let before = server.connections();
            let round = match side {
                0 => plugin_round(&runtime, &plugin, Some(&url), *REQUESTS, concurrency).await?,
                1 => native_round(&native, &url, *REQUESTS, concurrency).await?,
                2 => host_client_round(&host_client, &url, *REQUESTS, concurrency).await?,
                _ => reusing_round(&runtime, &plugin, &url, *REQUESTS, concurrency).await?,
            };
            let opened = server.connections() - before;
            match side {
                0 => {
                    plugin_latency.extend(round.latencies);
                    plugin_connections += opened;
                }
                1 => {
                    native_latency.extend(round.latencies);
                    native_connections += opened;
                }
                2 => host_latency.extend(round.latencies),
                _ => reusing_latency.extend(round.latencies),
            }
            Ok(round.sample)
        })
        .await?;
        rounds.report(
            &format!(
                "http: {REQUESTS} requests, concurrency {concurrency}, {runtime_kind} (goal plugin/native >= 0.8)"
            ),
            "req",
            &[(0, 1), (2, 1), (0, 2), (3, 1)],
        );
        host_latency.sort();
        reusing_latency.sort();
        print_latencies(&mut plugin_latency, &mut native_latency);
        let total = (*REQUESTS * *ROUNDS) as f64;
        println!(
            "      the host's client and rules without wasm: p50 {:?} / p99 {:?}",
            quantile(&host_latency, 0.5),
            quantile(&host_latency, 0.99),
        );
        println!(
            "      the plugin reusing its instance: p50 {:?} / p99 {:?}",
            quantile(&reusing_latency, 0.5),
            quantile(&reusing_latency, 0.99),
        );
        println!(
            "      connections opened per 1000 requests: plugin {:.2}, native {:.2} (pooled: at most the concurrency, {concurrency}, in all)",
            plugin_connections as f64 * 1000.0 / total,
            native_connections as f64 * 1000.0 / total,
        );
        let bare = plugin_round(&runtime, &plugin, None, *REQUESTS, concurrency).await?;
        let mut bare_latency = bare.latencies;
        bare_latency.sort();
        println!(
            "      the same plugin making no request: {:.0} invocations/s, p50 {:?} (instance, JSON and the report: the part of the plugin's time that is not HTTP)",
            bare.sample.rate(),
            quantile(&bare_latency, 0.5),
        );
    }
    Ok(config)
}

/// RSS of a host whose 16 plugins each hold 16 requests in flight to a server that
/// answers after 1 s.
async fn held_in_flight(base: &techub_host::HostConfig) -> anyhow::Result<()> {
    const PLUGINS: usize = 16;
    const EACH: usize = 16;
    let server = TestServer::http(Behaviour::Slow).await;
    let names: Vec<String> = (0..PLUGINS).map(|i| format!("caller-{i}")).collect();
    let pairs: Vec<(&str, &str)> = names
        .iter()
        .map(|n| (n.as_str(), "fixture_caller"))
        .collect();
    let dir = PluginDir::with(&pairs);
    let mut config = config(&dir);
    config.host.max_instances = (PLUGINS * EACH + 16) as u32;
    config.limits = base.limits;
    for name in &names {
        config.plugins.entry(name.clone()).or_default().outbound = vec![server.origin(false)];
    }
    let config = Arc::new(config);
    let services = Arc::new(services::connect(&config).await?);
    let runtime = Arc::new(Runtime::new(&config)?);
    let mut plugins = Vec::new();
    for name in &names {
        let path = dir.path().join(format!("{name}.wasm"));
        plugins.push(Arc::new(
            load_plugin(&runtime, &path, config.clone(), services.clone()).await?,
        ));
    }
    let idle = super::start::rss_kib() as f64 / 1024.0;
    let plan =
        serde_json::json!({ "requests": [{ "url": format!("{}/held", server.origin(false)) }] })
            .to_string();
    let tasks: Vec<_> = plugins
        .iter()
        .flat_map(|plugin| (0..EACH).map(move |_| plugin.clone()))
        .map(|plugin| {
            let (runtime, plan) = (runtime.clone(), plan.clone());
            tokio::spawn(async move {
                let delivery =
                    techub_tests::delivery("webhook", "fixture.caller.bench", plan.as_bytes());
                runtime
                    .invoke(&plugin.pre, plugin.context.clone(), &delivery, 5)
                    .await
                    .result
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let held = super::start::rss_kib() as f64 / 1024.0;
    let mut ok = 0;
    for task in tasks {
        if matches!(task.await?, Ok(Outcome::Reject(r)) if r.contains("#0 200")) {
            ok += 1;
        }
    }
    println!(
        "  {PLUGINS} plugins x {EACH} requests in flight: host RSS {held:.0} MiB (idle with them loaded: {idle:.0} MiB; +{:.1} MiB, {:.0} KiB per request held); {ok} of {} answered",
        held - idle,
        (held - idle) * 1024.0 / (PLUGINS * EACH) as f64,
        PLUGINS * EACH
    );
    Ok(())
}
