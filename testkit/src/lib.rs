//! `techub-testkit`: tests a plugin's `.wasm` in an embedded host, in process: the real
//! runtime (wasmtime, the same limits and grants) and the host's embedded backends
//! (cache, store, locks, broker), no fakes. A test delivers a message and asserts on
//! what happened: the outcome, what the plugin published, what it logged, and the
//! cache, store and locks after it.
//!
//! ```no_run
//! # async fn example() -> anyhow::Result<()> {
//! use techub_testkit::{Outcome, TestKit, TestMessage};
//! let kit = TestKit::crate_at(env!("CARGO_MANIFEST_DIR")) // builds it for wasm32-wasip2
//!     .cache_domains(&["users"])
//!     .publish(&["notification.*"])
//!     .start()
//!     .await?;
//! let handled = kit
//!     .deliver(TestMessage::json("user.created", &serde_json::json!({"id": "42"})))
//!     .await;
//! assert_eq!(handled.outcome, Outcome::Ok, "{handled:?}");
//! assert_eq!(handled.published[0].routing_key, "notification.email");
//! assert!(kit.cache_get("users", "user:42").await.is_some());
//! # Ok(()) }
//! ```
//!
//! # Layout
//! - `lib.rs`: [`TestKit`] and its [`Builder`]: the host, the plugin, the state.
//! - `message.rs`: [`TestMessage`] in, [`Handled`] (outcome, published, logs) out.
//! - `capture.rs`: the `tracing` subscriber each delivery runs with, which catches
//!   the plugin's log records.
//! - [`http_server`]: real HTTP and HTTPS servers on loopback (with a CA made at test
//!   time) that record what a plugin's outbound requests sent them and answer as told
//!   (including slow and hostile ways); grant one with [`Builder::outbound`].
//! - [`stand_ins`]: the host's stand-ins for the providers the example plugins call
//!   (mail provider, payment gateway, webhook endpoint), re-exported for tests.
//!
//! ```no_run
//! # async fn example() -> anyhow::Result<()> {
//! use techub_testkit::http_server::{Behaviour, TestServer};
//! use techub_testkit::{TestKit, TestMessage};
//! let provider = TestServer::http(Behaviour::Echo).await;
//! let kit = TestKit::crate_at(env!("CARGO_MANIFEST_DIR"))
//!     .outbound(&[&provider.origin(false)])
//!     .setting("provider_url", &provider.origin(false))
//!     .secret("api_key", "test-key")
//!     .start()
//!     .await?;
//! kit.deliver(TestMessage::new("user.created", "{}")).await;
//! let request = &provider.received()[0];
//! assert_eq!(request.header("authorization"), Some("Bearer test-key"));
//! # Ok(()) }
//! ```
//!
//! Time does not advance faster in tests: the embedded backends keep real time, so a
//! TTL is tested by a short TTL and a wait.

mod capture;
pub mod http_server;
mod message;
pub mod stand_ins;

pub use capture::LogRecord;
pub use message::{Handled, Outcome, Published, TestMessage};

use anyhow::Context as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use techub_host::Platform;
use techub_host::capability::cache::{CacheWrite, Priority};
use techub_host::capability::messaging::{Consumer, open_watch};
use techub_host::capability::store::SetCondition;
use techub_host::config::{HostConfig, LimitOverrides};
use techub_host::plugins::build::PluginCrate;

/// An embedded host running one plugin.
pub struct TestKit {
    platform: Platform,
    name: String,
    /// The plugin's first queue type: where deliveries come from unless a message
    /// names another.
    queue: String,
    published: tokio::sync::Mutex<Box<dyn Consumer>>,
    _plugins_dir: tempfile::TempDir,
}

enum Source {
    File(PathBuf),
    Crate(PathBuf),
}

/// What a [`TestKit`] starts with: the plugin, its name, its grants and settings.
pub struct Builder {
    source: Source,
    name: Option<String>,
    config: HostConfig,
    grants: techub_host::config::PluginConfig,
    target_dir: Option<PathBuf>,
}

impl TestKit {
    /// The plugin in `wasm` (its name: the file stem).
    pub fn file(wasm: impl AsRef<Path>) -> Builder {
        Builder::new(Source::File(wasm.as_ref().to_path_buf()))
    }

    /// The plugin crate in `dir` (e.g. `env!("CARGO_MANIFEST_DIR")`), built for
    /// `wasm32-wasip2` on start into `<its target dir>/testkit` (apart from the
    /// `cargo test` that is running, whose directory is locked); its name: the
    /// package name.
    pub fn crate_at(dir: impl AsRef<Path>) -> Builder {
        Builder::new(Source::Crate(dir.as_ref().to_path_buf()))
    }

    /// The host's services (cache, store, locks, broker), for what the helpers
    /// below do not cover.
    pub fn services(&self) -> &Arc<techub_host::services::Services> {
        &self.platform.services
    }

    /// The plugin's name in the host.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Delivers `message` to the plugin, as the host would (first attempt unless it
    /// says otherwise), and reports what the plugin did.
    pub async fn deliver(&self, message: TestMessage) -> Handled {
        let Some(plugin) = self.platform.registry().version(&self.name).await else {
            panic!("{} is not serving", self.name);
        };
        let delivery = message.into_delivery(&self.queue);
        let records = capture::Records::default();
        let report = tracing::instrument::WithSubscriber::with_subscriber(
            self.platform
                .runtime
                .invoke(&plugin.pre, plugin.context.clone(), &delivery, 5),
            capture::subscriber(records.clone()),
        )
        .await;
        let logs = std::mem::take(&mut *records.lock().unwrap_or_else(|e| e.into_inner()));
        Handled {
            outcome: Outcome::of(&report.result),
            published: self.take_published().await,
            logs,
            host_calls: report.usage.host_calls,
        }
    }

    /// What the plugin published since the last delivery (the embedded broker routes
    /// a publish at once, so all of a delivery's are there when it returns).
    async fn take_published(&self) -> Vec<Published> {
        let mut consumer = self.published.lock().await;
        let mut published = Vec::new();
        while let Ok(Some(delivery)) =
            tokio::time::timeout(Duration::from_millis(5), consumer.next()).await
        {
            published.push(Published::of(delivery.envelope()));
            let _ = delivery.ack().await;
        }
        published
    }

    /// The entry `key` of cache `domain`.
    pub async fn cache_get(&self, domain: &str, key: &str) -> Option<Vec<u8>> {
        let keys = [key.to_string()];
        let found = self.services().cache.backend.get_many(domain, &keys).await;
        found.expect("the embedded cache answers").pop().flatten()
    }

    /// Writes the entry `key` of cache `domain` before a delivery, with `ttl`, filed
    /// under `tags`.
    pub async fn cache_set(
        &self,
        domain: &str,
        key: &str,
        value: impl Into<Vec<u8>>,
        ttl: Duration,
        tags: &[&str],
    ) {
        let write = CacheWrite {
            ttl,
            tags: tags.iter().map(|t| t.to_string()).collect(),
            priority: Priority::Medium,
        };
        let entries = [(key.to_string(), value.into())];
        let written = self
            .services()
            .cache
            .backend
            .set_many(domain, &entries, &write)
            .await;
        written.expect("the embedded cache answers");
    }

    /// The backend's name of the plugin's store key `key` (for the store calls of
    /// [`TestKit::services`] the helpers do not cover: hashes, sorted sets...).
    pub async fn store_key(&self, key: &str) -> String {
        let plugin = self.platform.registry().version(&self.name).await;
        let prefix = &plugin.expect("the plugin serves").context.store.prefix;
        format!("{prefix}{key}")
    }

    /// The plugin's store key `key` (in its own namespace, as it sees it).
    pub async fn store_get(&self, key: &str) -> Option<Vec<u8>> {
        let key = self.store_key(key).await;
        self.services()
            .store
            .get(&key)
            .await
            .expect("the embedded store answers")
    }

    /// Writes the plugin's store key `key` before a delivery.
    pub async fn store_set(&self, key: &str, value: impl Into<Vec<u8>>) {
        let key = self.store_key(key).await;
        let value: Vec<u8> = value.into();
        self.services()
            .store
            .set(&key, &value, None, SetCondition::Always)
            .await
            .expect("the embedded store answers");
    }

    /// Whether someone holds the plugin's lock `name` (found by trying to take it
    /// with a token of the kit's own, and giving it back at once).
    pub async fn lock_held(&self, name: &str) -> bool {
        let plugin = self.platform.registry().version(&self.name).await;
        let context = plugin.expect("the plugin serves").context.clone();
        let key = format!("{}{name}", context.lock.prefix);
        let token = uuid::Uuid::new_v4().to_string();
        let locks = &self.services().locks;
        let taken = locks
            .try_acquire(&key, &context.lock.fence, &token, Duration::from_secs(1))
            .await
            .expect("the embedded locks answer");
        if taken.is_some() {
            let _ = locks.release(&key, &token).await;
        }
        taken.is_none()
    }

    /// Stops the host, draining what is in flight.
    pub async fn stop(self) {
        self.platform.shutdown().await;
    }
}

impl Builder {
    fn new(source: Source) -> Self {
        let mut config = HostConfig::default();
        // Nothing scrapes them in a test.
        config.host.metrics = false;
        Self {
            source,
            name: None,
            config,
            grants: Default::default(),
            target_dir: None,
        }
    }

    /// The plugin's name in the host (default: the file stem or package name).
    pub fn name(mut self, name: &str) -> Self {
        self.name = Some(name.to_string());
        self
    }

    /// Grants cache domains (`[plugins.<name>].cache_domains`).
    pub fn cache_domains(mut self, domains: &[&str]) -> Self {
        self.grants.cache_domains = domains.iter().map(|d| d.to_string()).collect();
        self
    }

    /// Grants routing keys to publish to (`[plugins.<name>].publish`).
    pub fn publish(mut self, patterns: &[&str]) -> Self {
        self.grants.publish = patterns.iter().map(|p| p.to_string()).collect();
        self
    }

    /// Grants routing keys to subscribe to (default: `#`, whatever it declares).
    pub fn subscribe(mut self, patterns: &[&str]) -> Self {
        self.grants.subscribe = patterns.iter().map(|p| p.to_string()).collect();
        self
    }

    /// A setting the plugin reads with `config::get`.
    pub fn setting(mut self, key: &str, value: &str) -> Self {
        self.grants.settings.insert(key.into(), value.into());
        self
    }

    /// Origins it may send HTTP requests to (`outbound`), e.g. a
    /// [`http_server::TestServer`]'s `origin()`.
    pub fn outbound(mut self, origins: &[&str]) -> Self {
        self.grants.outbound = origins.iter().map(|o| o.to_string()).collect();
        self
    }

    /// A secret the plugin reads with `config::get` (in a host, from the environment
    /// or a file); the host masks its value in the plugin's logs and failure reasons.
    pub fn secret(mut self, key: &str, value: &str) -> Self {
        self.grants
            .secrets
            .insert(key.into(), techub_host::config::SecretRef::literal(value));
        self
    }

    /// Limits of its own (`[plugins.<name>.limits]`).
    pub fn limits(mut self, limits: impl FnOnce(&mut LimitOverrides)) -> Self {
        limits(&mut self.grants.limits);
        self
    }

    /// Where [`TestKit::crate_at`] builds (default: `<the crate's target>/testkit`).
    pub fn target_dir(mut self, dir: impl AsRef<Path>) -> Self {
        self.target_dir = Some(dir.as_ref().to_path_buf());
        self
    }

    /// Anything else of the host's configuration (domains, queue types...).
    pub fn configure(mut self, change: impl FnOnce(&mut HostConfig)) -> Self {
        change(&mut self.config);
        self
    }

    /// Builds the plugin if need be, starts the host on it, and waits until it
    /// serves; the reason the host gave when it refuses the plugin.
    pub async fn start(self) -> anyhow::Result<TestKit> {
        let (wasm, default_name) = match &self.source {
            Source::File(path) => {
                let stem = path
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .unwrap_or("plugin");
                (path.clone(), stem.to_string())
            }
            Source::Crate(dir) => {
                let krate = PluginCrate::inspect(dir)?;
                let target =
                    (self.target_dir.clone()).unwrap_or_else(|| krate.target_dir.join("testkit"));
                let building = krate.clone();
                let wasm =
                    tokio::task::spawn_blocking(move || building.build(Some(&target))).await??;
                (wasm, krate.name)
            }
        };
        let name = self.name.unwrap_or(default_name);
        let plugins_dir = tempfile::tempdir()?;
        std::fs::copy(&wasm, plugins_dir.path().join(format!("{name}.wasm")))
            .with_context(|| format!("could not read {}", wasm.display()))?;
        let mut config = self.config;
        config.host.plugins_dir = plugins_dir.path().to_path_buf();
        let mut grants = self.grants;
        if grants.subscribe.is_empty() {
            grants.subscribe = vec!["#".into()];
        }
        config.plugins.insert(name.clone(), grants);
        config.validate()?;
        let platform = Platform::start(config).await?;
        let Some(info) = platform
            .plugins()
            .await
            .into_iter()
            .find(|p| p.name == name)
        else {
            let errors = platform.load_errors().await;
            anyhow::bail!("the host refused {name}: {}", errors.join("; "));
        };
        let queue = info
            .subscriptions
            .first()
            .map(|(queue, _)| queue.clone())
            .unwrap_or_else(|| "notification".into());
        let published = open_sink(&platform).await?;
        Ok(TestKit {
            platform,
            name,
            queue,
            published: tokio::sync::Mutex::new(published),
            _plugins_dir: plugins_dir,
        })
    }
}

/// A queue of the kit's own bound to every routing key: what the plugin publishes.
async fn open_sink(platform: &Platform) -> anyhow::Result<Box<dyn Consumer>> {
    let name = format!("testkit.published.{}", uuid::Uuid::new_v4().simple());
    open_watch(
        platform.services.messaging.broker.as_ref(),
        &name,
        vec!["#".into()],
        100,
    )
    .await
    .map_err(anyhow::Error::msg)
}
