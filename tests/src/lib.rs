//! # techub-tests: helpers of the end-to-end and conformance suites
//!
//! The suites (`tests/suite/`) run real plugins built from `plugins/` (`cargo xtask
//! test` builds them first) against the embedded backends and against the real Redis
//! and RabbitMQ of this machine. Nothing here is a mock.
//!
//! # Layout
//! - [`fixture`]: paths of built plugins; a plugins directory for one test.
//! - [`config`]: a host configuration for tests (fast retries, small pool).
//! - [`wait_for`]: polling with a deadline, for asynchronous outcomes.
//! - [`http_server`]: real HTTP/HTTPS servers on loopback (and a CA made at test
//!   time) for the outbound HTTP tests.
//! - [`rabbit_cluster`]: a local three-node RabbitMQ cluster; [`redis_nodes`]: a local
//!   six-node Redis Cluster and a primary with replicas behind three sentinels.
//! - `bin/bench.rs`: the benchmarks (`cargo xtask bench`).

/// The test kit's real HTTP/HTTPS servers (one implementation for the kit's users and
/// these suites).
pub use techub_testkit::http_server;
pub mod rabbit_cluster;
pub mod redis_nodes;
pub use rabbit_cluster::RabbitCluster;

use std::path::{Path, PathBuf};
use std::time::Duration;
use techub_host::config::{HostConfig, PluginConfig, QueuePolicy};

/// The built `.wasm` of a plugin crate (`user_notifications`, `fixture_trap`, ...).
///
/// # Panics
/// When it was not built, with the command that builds it.
pub fn fixture(crate_name: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the repository");
    let path = root
        .join("target/wasm32-wasip2/release")
        .join(format!("{crate_name}.wasm"));
    assert!(
        path.exists(),
        "{} is missing: run `cargo xtask build-plugins` (or `cargo xtask test`)",
        path.display()
    );
    path
}

/// The repository's root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the repository")
        .to_path_buf()
}

/// `target/test-artifacts/<name>`: where tests leave files for people to look at
/// (screenshots, expositions). The directory exists on return.
pub fn artifact(name: &str) -> PathBuf {
    let dir = repo_root().join("target/test-artifacts");
    std::fs::create_dir_all(&dir).expect("target/ is writable");
    dir.join(name)
}

/// A tool a test needs (e.g. `promtool`, `chromium`), or a panic saying how to install it.
pub fn tool(name: &str, package: &str) -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|path| path.is_file())
    });
    found.unwrap_or_else(|| {
        panic!("{name} is not installed: `apt-get install {package}` (or run `cargo xtask test`, which installs it)")
    })
}

/// The `techub-host` binary of this build (`cargo test --workspace` builds it).
///
/// # Panics
/// When it was not built, with the command that builds it.
pub fn host_binary() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the repository");
    let path = root.join("target/debug/techub-host");
    assert!(
        path.exists(),
        "{} is missing: run `cargo build -p techub-host` (or `cargo xtask test`)",
        path.display()
    );
    path
}

/// A temporary plugins directory holding copies of built plugins under given names.
pub struct PluginDir {
    dir: tempfile::TempDir,
}

impl PluginDir {
    /// Copies each `(plugin name, crate name)` into a new directory.
    pub fn with(plugins: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        for (name, crate_name) in plugins {
            std::fs::copy(fixture(crate_name), dir.path().join(format!("{name}.wasm")))
                .expect("copy a plugin");
        }
        Self { dir }
    }

    /// Writes a file with arbitrary bytes (for malformed plugins).
    pub fn write(&self, file: &str, bytes: &[u8]) {
        std::fs::write(self.dir.path().join(file), bytes).expect("write a file");
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The plugin names of the `.wasm` files in it now.
    pub fn names(&self) -> Vec<String> {
        std::fs::read_dir(self.dir.path())
            .expect("the plugins directory is readable")
            .filter_map(|e| {
                let path = e.ok()?.path();
                (path.extension()? == "wasm")
                    .then(|| path.file_stem()?.to_str().map(String::from))?
            })
            .collect()
    }
}

/// A configuration for tests: plugins from `dir`, a small pool, and every queue type
/// retrying twice after 100 ms so that retry paths finish quickly. Each plugin copied
/// into `dir` may subscribe to any routing key (`subscribe = ["#"]`): the suites test
/// other things; the subscription grant has tests of its own that narrow it.
pub fn config(dir: &PluginDir) -> HostConfig {
    let mut config = HostConfig::default();
    config.host.plugins_dir = dir.path().to_path_buf();
    config.host.cache_dir = dir.path().join(".cache");
    config.host.max_instances = 64;
    for name in dir.names() {
        config.plugins.entry(name).or_default().subscribe = vec!["#".to_string()];
    }
    for policy in config.queues.values_mut() {
        *policy = QueuePolicy {
            max_retries: 2,
            retry_delay_ms: 100,
            backoff_multiplier: 1.0,
            max_retry_delay_ms: 1_000,
            ..*policy
        };
    }
    config
}

/// The example plugin `user-notifications` in a directory of its own, and a test
/// configuration granting it what it uses (the `users` domain, `notification.*`).
pub fn user_notifications() -> (PluginDir, HostConfig) {
    let dir = PluginDir::with(&[("user-notifications", "user_notifications")]);
    let mut config = config(&dir);
    grant(
        &mut config,
        "user-notifications",
        &["users"],
        &["notification.*"],
    );
    (dir, config)
}

/// Grants a plugin cache domains and publish patterns.
pub fn grant<'c>(
    config: &'c mut HostConfig,
    plugin: &str,
    cache_domains: &[&str],
    publish: &[&str],
) -> &'c mut PluginConfig {
    let entry = config.plugins.entry(plugin.to_string()).or_default();
    if entry.subscribe.is_empty() {
        entry.subscribe = vec!["#".to_string()];
    }
    entry.cache_domains = cache_domains.iter().map(|s| s.to_string()).collect();
    entry.publish = publish.iter().map(|s| s.to_string()).collect();
    entry
}

/// Polls `check` every 20 ms until it returns `Some`, or panics after `limit` with
/// `what` (so a hung test names what it waited for).
pub async fn wait_for<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A delivery as the host hands it to a plugin: the first attempt of a fresh message
/// with `routing_key` and `payload`, through the queue type `queue`.
pub fn delivery(queue: &str, routing_key: &str, payload: &[u8]) -> techub_host::bindings::Delivery {
    techub_host::bindings::Delivery {
        id: unique("delivery"),
        queue: queue.into(),
        routing_key: routing_key.into(),
        payload: payload.to_vec(),
        headers: vec![],
        correlation_id: None,
        reply_to: None,
        priority: techub_host::bindings::techub::platform::messaging::Priority::Normal,
        published_at_ms: 0,
        attempt: 1,
        redelivered: false,
    }
}

/// A unique name for this test run, so tests can share services and re-run.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// Turns on the host's log for a test run (`RUST_LOG` picks the level).
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}

/// Services on this machine, for the suites that need the real ones.
pub mod services {
    use techub_host::capability::redis_client::RedisClient;
    use techub_host::config::{AmqpConfig, RedisConfig};

    /// A connection to the shared Redis, or a panic saying how to start it.
    pub async fn redis() -> RedisClient {
        RedisClient::connect(&RedisConfig::default(), Default::default()).await.unwrap_or_else(|e| {
            panic!("Redis must run on 127.0.0.1:6379 ({e:#}); start it with `redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save \"\" --appendonly no` or run `cargo xtask test`")
        })
    }

    /// An AMQP configuration whose exchanges, queue prefix and dead-letter queue are
    /// unique to this test, so tests neither see each other's messages nor need cleanup.
    pub fn amqp_config() -> AmqpConfig {
        let tag = crate::unique("t");
        AmqpConfig {
            main_exchange: format!("{tag}.main"),
            dead_letter_exchange: format!("{tag}.dlx"),
            dead_letter_queue: format!("{tag}.dead"),
            delayed_exchange: format!("{tag}.delayed"),
            queue_prefix: format!("{tag}."),
            ..AmqpConfig::default()
        }
    }

    /// Deletes a queue behind the host's back, as the broker does when one expires.
    pub async fn delete_queue(name: &str) {
        use lapin::options::QueueDeleteOptions;
        let connection = lapin::Connection::connect(
            &AmqpConfig::default().url,
            lapin::ConnectionProperties::default(),
        )
        .await
        .expect("RabbitMQ answers");
        let channel = connection.create_channel().await.expect("a channel");
        channel
            .queue_delete(name.into(), QueueDeleteOptions::default())
            .await
            .expect("queue deleted");
        let _ = connection.close(200, "done".into()).await;
    }

    /// The queues of the shared broker and their kinds: name → type (`classic`,
    /// `quorum`).
    pub fn queue_types() -> std::collections::HashMap<String, String> {
        let out = std::process::Command::new("rabbitmqctl")
            .args(["-q", "list_queues", "name", "type", "--no-table-headers"])
            .output()
            .expect("rabbitmqctl (apt-get install rabbitmq-server)");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once('\t'))
            .map(|(n, t)| (n.to_string(), t.trim().to_string()))
            .collect()
    }

    /// Deletes the quorum queues of the shared broker whose names start with one of
    /// `prefixes`: a quorum queue never expires, and each keeps a Raft log, so the
    /// tests that make them on the shared broker remove them.
    pub async fn delete_quorum_queues(prefixes: &[&str]) {
        for (name, kind) in queue_types() {
            if kind == "quorum" && prefixes.iter().any(|p| name.starts_with(p)) {
                delete_queue(&name).await;
            }
        }
    }

    /// A broker on the shared RabbitMQ with `config`'s names and `dead_letter`, its
    /// dead letters sealed with a test key; panics saying how to start RabbitMQ.
    pub async fn amqp_broker(
        config: &AmqpConfig,
        dead_letter: techub_host::config::DeadLetterConfig,
    ) -> techub_host::capability::messaging::amqp::AmqpBroker {
        techub_host::capability::messaging::amqp::AmqpBroker::connect(
            config,
            dead_letter,
            Default::default(),
            Default::default(),
            techub_host::capability::messaging::amqp::seal::DeathSeal::with_key(b"test key"),
        )
        .await
        .unwrap_or_else(|e| panic!("{}", rabbitmq_hint(&e)))
    }

    /// The panic message when RabbitMQ is down.
    pub fn rabbitmq_hint(error: &anyhow::Error) -> String {
        format!(
            "RabbitMQ must run on 127.0.0.1:5672 with guest/guest ({error:#}); start it with `rabbitmq-server -detached && rabbitmqctl await_startup` or run `cargo xtask test`"
        )
    }
}

/// A Redis server of this test's own, on a free port, killed on drop; for tests that
/// take Redis away (the shared one is never stopped).
pub struct OwnRedis {
    child: std::process::Child,
    /// Its port.
    pub port: u16,
    extra: Vec<String>,
}

impl OwnRedis {
    /// Starts `redis-server` on a free port and waits until it answers.
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// Starts `redis-server` with extra arguments (e.g. `--requirepass`).
    pub async fn start_with(extra: &[&str]) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("a free port")
            .local_addr()
            .expect("an address")
            .port();
        let extra: Vec<String> = extra.iter().map(|a| a.to_string()).collect();
        Self::spawn(port, extra).await
    }

    /// Starts it again on the same port with the same arguments (after [`OwnRedis::kill`]).
    pub async fn restart(&mut self) {
        let again = Self::spawn(self.port, std::mem::take(&mut self.extra)).await;
        let old = std::mem::replace(self, again);
        std::mem::forget(old); // its process is gone already; do not kill the new one
    }

    async fn spawn(port: u16, extra: Vec<String>) -> Self {
        let child = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(&extra)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server must be installed (apt-get install redis-server, or run `cargo xtask test`)");
        let server = Self { child, port, extra };
        wait_for(
            Duration::from_secs(10),
            "the test's own redis-server to answer",
            || async {
                tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .ok()
            },
        )
        .await;
        server
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A TCP proxy in front of a real service, so a test can take the service away from
/// the host (`cut`) and give it back (`restore`), or hold every byte in flight
/// (`stall`) and let them go (`flow`), without touching the shared server.
pub struct TcpProxy {
    /// The port the host connects to.
    pub port: u16,
    blocked: tokio::sync::watch::Sender<bool>,
    stalled: tokio::sync::watch::Sender<bool>,
    tripwire: Tripwire,
    accept: tokio::task::JoinHandle<()>,
}

/// Bytes that, once sent by a client, end that client's connection before the answer
/// comes back ([`TcpProxy::lose_the_answer_to`]); one use.
type Tripwire = std::sync::Arc<std::sync::Mutex<Option<&'static [u8]>>>;

impl TcpProxy {
    /// Proxies a free local port to `target` (e.g. `127.0.0.1:5672`).
    pub async fn start(target: &'static str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a free port");
        let port = listener.local_addr().expect("an address").port();
        let (blocked, blocked_rx) = tokio::sync::watch::channel(false);
        let (stalled, stalled_rx) = tokio::sync::watch::channel(false);
        let tripwire = Tripwire::default();
        let armed = tripwire.clone();
        let accept = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let mut blocked_rx = blocked_rx.clone();
                let stalled_rx = stalled_rx.clone();
                let armed = armed.clone();
                if *blocked_rx.borrow() {
                    continue; // dropping `inbound` refuses the connection
                }
                tokio::spawn(async move {
                    let Ok(outbound) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    let (from_client, to_client) = inbound.into_split();
                    let (from_server, to_server) = outbound.into_split();
                    let blocked = blocked_rx.clone();
                    let tripped = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
                    let to_service = Pump {
                        stalled: stalled_rx.clone(),
                        blocked: blocked.clone(),
                        tripped: tripped.clone(),
                        tripwire: Some(armed),
                    };
                    let to_client_pump = Pump {
                        stalled: stalled_rx,
                        blocked,
                        tripped,
                        tripwire: None,
                    };
                    tokio::select! {
                        _ = async {
                            tokio::join!(
                                to_service.run(from_client, to_server),
                                to_client_pump.run(from_server, to_client),
                            )
                        } => {}
                        _ = blocked_rx.wait_for(|blocked| *blocked) => {}
                    }
                });
            }
        });
        Self {
            port,
            blocked,
            stalled,
            tripwire,
            accept,
        }
    }

    /// The next time a client sends `request` (bytes as they go on the wire), the proxy
    /// delivers it to the service and then ends that client's connection without a
    /// byte of the answer: the service did the work, the client saw its connection drop
    /// (an answer lost in a crash or a failover). Other connections are untouched.
    pub fn lose_the_answer_to(&self, request: &'static [u8]) {
        *self.tripwire.lock().unwrap_or_else(|e| e.into_inner()) = Some(request);
    }

    /// Whether the request armed by [`TcpProxy::lose_the_answer_to`] went by.
    pub fn answer_lost(&self) -> bool {
        self.tripwire
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_none()
    }

    /// Drops every connection and refuses new ones until [`TcpProxy::restore`].
    pub fn cut(&self) {
        let _ = self.blocked.send(true);
    }

    /// Accepts connections again.
    pub fn restore(&self) {
        let _ = self.blocked.send(false);
    }

    /// Holds every byte in both directions, connections left open (a network that
    /// stops delivering without resetting anything), until [`TcpProxy::flow`].
    pub fn stall(&self) {
        let _ = self.stalled.send(true);
    }

    /// Delivers what was held, and everything after it.
    pub fn flow(&self) {
        let _ = self.stalled.send(false);
    }
}

/// One direction of a proxied connection.
struct Pump {
    stalled: tokio::sync::watch::Receiver<bool>,
    blocked: tokio::sync::watch::Receiver<bool>,
    /// Set once the armed request went by on this connection: from then on nothing
    /// more is forwarded either way.
    tripped: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Client to service only: the armed request to look for.
    tripwire: Option<Tripwire>,
}

impl Pump {
    /// Copies `from` to `to`, holding the bytes while stalled. Once cut, it forwards
    /// nothing more: the connection's task may not have seen the cut yet when the
    /// test goes on, and bytes written after `cut` returned must not reach the service
    /// (a publish would go through and then lose its confirm).
    async fn run(
        mut self,
        mut from: tokio::net::tcp::OwnedReadHalf,
        mut to: tokio::net::tcp::OwnedWriteHalf,
    ) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut buffer = vec![0; 64 * 1024];
        loop {
            let read = match from.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(read) => read,
            };
            let chunk = &buffer[..read];
            if *self.blocked.borrow()
                || self.stalled.wait_for(|stalled| !*stalled).await.is_err()
                || *self.blocked.borrow()
                || self.tripped.load(std::sync::atomic::Ordering::SeqCst)
            {
                return;
            }
            let trips = self.tripwire.as_ref().is_some_and(|wire| {
                let mut armed = wire.lock().unwrap_or_else(|e| e.into_inner());
                let found = armed.is_some_and(|request| {
                    chunk.windows(request.len()).any(|window| window == request)
                });
                if found {
                    *armed = None;
                }
                found
            });
            // Tripped before the request is written, so that no byte of its answer
            // can be forwarded by the other direction.
            if trips {
                self.tripped
                    .store(true, std::sync::atomic::Ordering::SeqCst);
            }
            if to.write_all(chunk).await.is_err() || trips {
                return;
            }
        }
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}

/// Waits until `key` is in `domain` of the platform's cache (at most 20 s); its value.
pub async fn cached(platform: &techub_host::Platform, domain: &str, key: &str) -> Vec<u8> {
    let keys = [key.to_string()];
    wait_for(
        Duration::from_secs(20),
        &format!("{domain}/{key} to be cached"),
        || async {
            platform
                .services
                .cache
                .backend
                .get_many(domain, &keys)
                .await
                .expect("the cache answers")
                .pop()
                .flatten()
        },
    )
    .await
}

/// A consumer of a fresh queue bound to `bindings` on the platform's broker, to watch
/// what plugins publish.
pub async fn sink(
    platform: &techub_host::Platform,
    bindings: &[&str],
) -> Box<dyn techub_host::capability::messaging::Consumer> {
    let bindings = bindings.iter().map(|b| b.to_string()).collect();
    techub_host::capability::messaging::open_watch(
        platform.services.messaging.broker.as_ref(),
        &unique("sink"),
        bindings,
        10,
    )
    .await
    .expect("the sink queue is declared and consumed")
}

/// Publishes `user.created` for the user `id` as the operator; the message id.
pub async fn publish_user(platform: &techub_host::Platform, id: &str) -> String {
    let user = serde_json::json!({ "id": id, "email": format!("{id}@example.com"), "name": id });
    let priority = techub_host::bindings::techub::platform::messaging::Priority::Normal;
    platform
        .publish(
            "user.created",
            user.to_string().into_bytes(),
            Some(priority),
        )
        .await
        .expect("the operator publishes")
}

/// A persistent message as a publisher sends it: a fresh id, normal priority.
pub fn envelope(
    routing_key: &str,
    payload: Vec<u8>,
) -> techub_host::capability::messaging::Envelope {
    techub_host::capability::messaging::Envelope {
        id: uuid::Uuid::new_v4().to_string(),
        routing_key: routing_key.to_string(),
        payload,
        headers: vec![],
        correlation_id: None,
        reply_to: None,
        priority: 5,
        persistent: true,
        expiration_ms: None,
        published_at_ms: techub_host::capability::messaging::now_ms(),
        attempt: 1,
        parked: None,
    }
}
