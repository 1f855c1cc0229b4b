//! The host under test, as a process: its config file, start, `kill -9`, SIGTERM,
//! and readiness (`GET /readyz` on its admin endpoint).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use techub_host::config::{BrokerBackend, HostConfig, KvBackend};
use techub_tests::{PluginDir, grant, services, unique};

pub struct HostProcess {
    /// Its configuration (what the file says).
    pub config: HostConfig,
    file: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    fixture: Fixture,
    _plugins: PluginDir,
}

/// The fixture a scenario runs: its plugin name, the `.wasm` it is built as, and the
/// routing keys it subscribes to.
#[derive(Debug, Clone, Copy)]
pub struct Fixture {
    pub plugin: &'static str,
    pub wasm: &'static str,
    pub subscribe: &'static str,
}

/// The ledger fixture: every delivery recorded, its effect once.
pub const LEDGER: Fixture = Fixture {
    plugin: "ledger",
    wasm: "fixture_ledger",
    subscribe: "fixture.ledger.#",
};

impl HostProcess {
    /// A configuration of its own (key prefix, exchanges, queues, admin port) on the
    /// shared Redis and RabbitMQ, with `fixture`; written to a file.
    pub fn configure(scenario: &str, fixture: Fixture) -> anyhow::Result<Self> {
        let plugins = PluginDir::with(&[(fixture.plugin, fixture.wasm)]);
        let mut config = techub_tests::config(&plugins);
        // The specification's retry policies, not the suite's quick ones: a delivery
        // whose attempt died with its host waits for that attempt's claim to lapse
        // (the invocation timeout and a second), which every default policy outlasts.
        config.queues = HostConfig::default().queues;
        config.backends.cache = KvBackend::Redis;
        config.backends.store = KvBackend::Redis;
        config.backends.lock = KvBackend::Redis;
        config.backends.messaging = BrokerBackend::Amqp;
        config.host.key_prefix = format!("{}:", unique("techub-faults"));
        config.amqp = services::amqp_config();
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        config.host.admin_addr = format!("127.0.0.1:{port}");
        grant(&mut config, fixture.plugin, &[], &[]).subscribe = vec![fixture.subscribe.into()];
        let file = plugins.path().join("host.toml");
        std::fs::write(&file, toml::to_string(&config)?)?;
        let dir = techub_tests::repo_root().join("target/faults");
        std::fs::create_dir_all(&dir)?;
        let slug: String = scenario
            .chars()
            .map(|c| match c.is_ascii_alphanumeric() {
                true => c.to_ascii_lowercase(),
                false => '-',
            })
            .collect();
        let log = dir.join(format!("{slug}.log"));
        Ok(Self {
            config,
            file,
            log,
            child: None,
            fixture,
            _plugins: plugins,
        })
    }

    /// Changes what the file says (the host reads it on start, or on its next reload);
    /// `self.config` stays what the suite itself uses.
    pub fn rewrite(&self, change: impl FnOnce(&mut HostConfig)) -> anyhow::Result<()> {
        let mut config = self.config.clone();
        change(&mut config);
        std::fs::write(&self.file, toml::to_string(&config)?)?;
        Ok(())
    }

    /// The process id of the running host.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Another host of the same deployment (same names, same plugins directory) with
    /// an admin endpoint and a config file of its own.
    pub fn sibling(&self) -> anyhow::Result<Self> {
        let plugins = PluginDir::with(&[(self.fixture.plugin, self.fixture.wasm)]);
        let mut config = self.config.clone();
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        config.host.admin_addr = format!("127.0.0.1:{port}");
        config.host.plugins_dir = plugins.path().to_path_buf();
        let file = plugins.path().join("host.toml");
        std::fs::write(&file, toml::to_string(&config)?)?;
        let log = self.log.with_extension("sibling.log");
        Ok(Self {
            config,
            file,
            log,
            child: None,
            fixture: self.fixture,
            _plugins: plugins,
        })
    }

    /// Points the host (and the suite's publisher) at a cluster's nodes, with quorum
    /// queues (rewrites the file; takes effect on start).
    pub fn use_cluster(&mut self, urls: Vec<String>) -> anyhow::Result<()> {
        self.config.amqp.urls = urls;
        self.config.amqp.queue_kind = techub_host::config::QueueKind::Quorum;
        std::fs::write(&self.file, toml::to_string(&self.config)?)?;
        Ok(())
    }

    /// Points the host at another Redis (rewrites the file; takes effect on start).
    pub fn use_redis(&mut self, url: &str) -> anyhow::Result<()> {
        self.config.redis.url = url.to_string();
        std::fs::write(&self.file, toml::to_string(&self.config)?)?;
        Ok(())
    }

    /// Points the host (and the suite's ledger) at a Redis of another mode (rewrites
    /// the file; takes effect on start).
    pub fn use_redis_config(
        &mut self,
        redis: techub_host::config::RedisConfig,
    ) -> anyhow::Result<()> {
        self.config.redis = redis;
        std::fs::write(&self.file, toml::to_string(&self.config)?)?;
        Ok(())
    }

    /// Starts `techub-host run` on the file (its log appended to `target/faults/`).
    pub fn start(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = Command::new(techub_tests::host_binary())
            .args(["run", "--config"])
            .arg(&self.file)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        self.child = Some(child);
        Ok(())
    }

    /// Waits until `/readyz` answers 200 (at most 60 s).
    pub async fn ready(&self) -> anyhow::Result<()> {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(60) {
            if matches!(self.admin_get("/readyz").await, Ok((200, _))) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        anyhow::bail!(
            "the host was not ready within 60 s; see {}",
            self.log.display()
        )
    }

    /// How the running host's invocations of `plugin` ended so far, by outcome
    /// (`techub_invocations_total` on its `/metrics`).
    pub async fn invocation_outcomes(
        &self,
        plugin: &str,
    ) -> anyhow::Result<std::collections::BTreeMap<String, u64>> {
        let (status, body) = self.admin_get("/metrics").await?;
        anyhow::ensure!(status == 200, "the host's /metrics answered {status}");
        let series = format!("techub_invocations_total{{plugin=\"{plugin}\",outcome=\"");
        Ok(body
            .lines()
            .filter_map(|line| {
                let (outcome, count) = line.strip_prefix(&series)?.split_once("\"} ")?;
                Some((outcome.to_string(), count.trim().parse().ok()?))
            })
            .collect())
    }

    /// `GET path` on its admin endpoint (no token: the suite sets none), within 2 s.
    async fn admin_get(&self, path: &str) -> anyhow::Result<(u16, String)> {
        let admin = &self.config.host.admin_addr;
        tokio::time::timeout(
            Duration::from_secs(2),
            techub_host::admin::client::get(admin, None, path),
        )
        .await
        .map_err(|_| anyhow::anyhow!("{path} did not answer within 2 s"))?
    }

    /// `kill -9`: no drain, no acks, nothing flushed.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM (our own child, by its PID), then waits for it to exit.
    pub fn terminate(&mut self, limit: Duration) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()?;
        let started = Instant::now();
        while child.try_wait()?.is_none() {
            if started.elapsed() > limit {
                let _ = child.kill();
                anyhow::bail!("the host did not stop within {limit:?} of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }
}

impl Drop for HostProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
