//! Local Redis deployments from the machine's `redis-server`, for the tests of
//! `[redis] mode = "cluster"` and `"sentinel"`:
//! - [`RedisCluster`]: six nodes, three primaries with a replica each, made with
//!   `redis-cli --cluster create --cluster-replicas 1`;
//! - [`RedisSentinels`]: one primary, one replica and three sentinels (quorum 2) that
//!   monitor it as `mymaster`, failing over after 0.5 s of silence.
//!
//! Every node runs on a free port (a cluster node also on its bus port, port + 10000)
//! with its files in a temporary directory; dropping the deployment kills its nodes by
//! their own PIDs (never by name). The shared Redis on 6379 is never touched.
//!
//! By hand, for an operator: the same `redis-server` arguments as [`spawn`] below,
//! then `redis-cli --cluster create <addresses> --cluster-replicas 1`; for sentinels,
//! `redis-server <file> --sentinel` with `sentinel monitor mymaster <ip> <port> 2`.

use crate::wait_for;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// How to get `redis-server` when it is missing.
const INSTALL_HINT: &str = "the cluster and sentinel tests start their own Redis nodes: apt-get install redis-server (or run `cargo xtask test`)";

/// A free port whose cluster bus port (port + 10000) is free too.
fn free_port() -> u16 {
    loop {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        let port = listener.local_addr().expect("an address").port();
        if port < 55_000 && std::net::TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
}

/// One `redis-server` of a deployment.
pub struct RedisNode {
    /// Its port.
    pub port: u16,
    child: Option<Child>,
    args: Vec<String>,
}

impl RedisNode {
    /// Its URL.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// `host:port`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Kills it at once (SIGKILL), as a machine that goes away.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again with the same arguments, after [`Self::kill`].
    pub async fn restart(&mut self) {
        self.kill();
        self.child = Some(spawn_args(&self.args));
        answers(self.port).await;
    }

    /// A command's answer from this node, as text (`redis-cli`).
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect(INSTALL_HINT);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for RedisNode {
    fn drop(&mut self) {
        self.kill();
    }
}

fn spawn_args(args: &[String]) -> Child {
    Command::new("redis-server")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect(INSTALL_HINT)
}

/// Starts `redis-server` on `port` with its files in `dir`, plus `extra`.
fn spawn(port: u16, dir: &Path, extra: &[String]) -> RedisNode {
    let mut args: Vec<String> = [
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        &dir.to_string_lossy(),
        "--logfile",
        &dir.join(format!("{port}.log")).to_string_lossy(),
        // A new replica syncs at once (the default waits 5 s for more replicas).
        "--repl-diskless-sync-delay",
        "0",
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    args.extend(extra.iter().cloned());
    RedisNode {
        port,
        child: Some(spawn_args(&args)),
        args,
    }
}

/// Waits until `port` answers PING.
async fn answers(port: u16) {
    wait_for(
        Duration::from_secs(15),
        &format!("the test's own redis-server on {port} to answer"),
        || async move {
            let out = Command::new("redis-cli")
                .args(["-p", &port.to_string(), "PING"])
                .output()
                .ok()?;
            String::from_utf8_lossy(&out.stdout)
                .contains("PONG")
                .then_some(())
        },
    )
    .await;
}

/// A node that `start` started on a free port, once it answers PING. The port was
/// free when chosen, but another process may bind it (or its cluster bus port) before
/// the node does (a RabbitMQ cluster's Erlang distribution takes random ports): a
/// node that exits before it answers is started again on another port.
async fn started(start: impl Fn(u16) -> RedisNode) -> RedisNode {
    for _ in 0..5 {
        let mut node = start(free_port());
        if answers_unless_it_exits(&mut node).await {
            return node;
        }
    }
    panic!("no redis-server of the test's own started, on five free ports in turn");
}

/// Whether `node` answers PING (within 15 s; panics past them), rather than exits.
async fn answers_unless_it_exits(node: &mut RedisNode) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let pong = Command::new("redis-cli")
            .args(["-p", &node.port.to_string(), "PING"])
            .output()
            .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).contains("PONG"));
        if pong {
            return true;
        }
        if let Some(child) = node.child.as_mut()
            && child.try_wait().ok().flatten().is_some()
        {
            return false;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after 15s waiting for the test's own redis-server on {} to answer",
            node.port
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A Redis Cluster of three primaries with a replica each (six nodes), or more
/// replicas each ([`RedisCluster::start_with_replicas`]).
pub struct RedisCluster {
    /// Its nodes, primaries first as `redis-cli` assigned them.
    pub nodes: Vec<RedisNode>,
    _dir: tempfile::TempDir,
}

impl RedisCluster {
    /// Starts the nodes, creates the cluster and waits until every node says
    /// `cluster_state:ok`; panics saying how to install Redis when it cannot.
    pub async fn start() -> Self {
        Self::start_with_replicas(1).await
    }

    /// The same with `replicas` replicas per primary (`3 × (1 + replicas)` nodes).
    pub async fn start_with_replicas(replicas: usize) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut nodes = Vec::new();
        for _ in 0..3 * (1 + replicas) {
            let node = started(|port| {
                let own = dir.path().join(port.to_string());
                std::fs::create_dir_all(&own).unwrap();
                let extra = [
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "1000",
                ]
                .map(String::from);
                spawn(port, &own, &extra)
            })
            .await;
            nodes.push(node);
        }
        let addresses: Vec<String> = nodes.iter().map(RedisNode::address).collect();
        let created = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect(INSTALL_HINT);
        assert!(created.success(), "redis-cli --cluster create failed");
        let cluster = Self { nodes, _dir: dir };
        for node in &cluster.nodes {
            wait_for(
                Duration::from_secs(30),
                &format!(
                    "node {} to report cluster_state:ok and, if a replica, to be in sync",
                    node.port
                ),
                || async {
                    let ok = node.cli(&["CLUSTER", "INFO"]).contains("cluster_state:ok");
                    // A replica that has not synced yet refuses to take over (its data
                    // is too old), so a failover test must not start before.
                    let replication = node.cli(&["INFO", "replication"]);
                    let synced = replication.contains("role:master")
                        || replication.contains("master_link_status:up");
                    (ok && synced).then_some(())
                },
            )
            .await;
        }
        cluster
    }

    /// The seed URLs for `[redis] urls`.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisNode::url).collect()
    }

    /// The nodes that are primaries now.
    pub fn primaries(&self) -> Vec<&RedisNode> {
        self.nodes
            .iter()
            .filter(|n| n.child.is_some() && n.cli(&["ROLE"]).starts_with("master"))
            .collect()
    }

    /// Indices of the running replicas of the node at `primary`.
    pub fn replicas_of(&self, primary: usize) -> Vec<usize> {
        let port = format!("master_port:{}", self.nodes[primary].port);
        (0..self.nodes.len())
            .filter(|&i| {
                let node = &self.nodes[i];
                node.child.is_some()
                    && node
                        .cli(&["INFO", "replication"])
                        .lines()
                        .any(|l| l.trim() == port)
            })
            .collect()
    }

    /// Index of the primary that holds `key` now.
    pub fn primary_of(&self, key: &str) -> usize {
        let alive = self
            .nodes
            .iter()
            .find(|n| n.child.is_some())
            .expect("a node runs");
        let slot: u16 = alive
            .cli(&["CLUSTER", "KEYSLOT", key])
            .trim()
            .parse()
            .expect("CLUSTER KEYSLOT answers a number");
        let port = slot_owner_port(alive, slot).expect("a primary serves every slot");
        self.nodes
            .iter()
            .position(|n| n.port == port)
            .expect("the owner is one of the nodes")
    }
}

/// The port of the primary that serves `slot`, as `node` sees it.
fn slot_owner_port(node: &RedisNode, slot: u16) -> Option<u16> {
    // `CLUSTER SLOTS` in redis-cli's raw output: start, end, ip, port, id, replicas...
    let out = node.cli(&["--raw", "CLUSTER", "SLOTS"]);
    let lines: Vec<&str> = out.lines().collect();
    let mut i = 0;
    while i + 3 < lines.len() {
        if let (Ok(start), Ok(end)) = (lines[i].parse::<u16>(), lines[i + 1].parse::<u16>())
            && (start..=end).contains(&slot)
        {
            return lines[i + 3].parse().ok();
        }
        i += 1;
    }
    None
}

/// One primary, its replicas (one unless asked), three sentinels.
pub struct RedisSentinels {
    /// The first primary (index 0) and its replicas (1..).
    pub data: Vec<RedisNode>,
    /// The sentinels.
    pub sentinels: Vec<RedisNode>,
    _dir: tempfile::TempDir,
}

/// The name the sentinels monitor the primary under.
pub const MASTER_NAME: &str = "mymaster";

impl RedisSentinels {
    /// Starts them and waits until every sentinel names the primary and sees its
    /// replica.
    pub async fn start() -> Self {
        Self::start_with_replicas(1).await
    }

    /// The same with `replicas` replicas (`data[1..]`).
    pub async fn start_with_replicas(replicas: usize) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let primary = started(|port| spawn(port, dir.path(), &[])).await;
        let primary_port = primary.port;
        let mut data = vec![primary];
        for _ in 0..replicas {
            let replicaof = [
                "--replicaof".to_string(),
                "127.0.0.1".to_string(),
                primary_port.to_string(),
            ];
            data.push(started(|port| spawn(port, dir.path(), &replicaof)).await);
        }
        let mut sentinels = Vec::new();
        for _ in 0..3 {
            let port = free_port();
            let file = dir.path().join(format!("sentinel-{port}.conf"));
            std::fs::write(
                &file,
                format!(
                    "port {port}\nbind 127.0.0.1\nsentinel monitor {MASTER_NAME} 127.0.0.1 {primary_port} 2\nsentinel down-after-milliseconds {MASTER_NAME} 500\nsentinel failover-timeout {MASTER_NAME} 5000\nsentinel parallel-syncs {MASTER_NAME} 1\n"
                ),
            )
            .unwrap();
            let args = vec![
                file.to_string_lossy().into_owned(),
                "--sentinel".to_string(),
                "--logfile".to_string(),
                dir.path()
                    .join(format!("sentinel-{port}.log"))
                    .to_string_lossy()
                    .into_owned(),
            ];
            sentinels.push(RedisNode {
                port,
                child: Some(spawn_args(&args)),
                args,
            });
        }
        for sentinel in &sentinels {
            answers(sentinel.port).await;
        }
        let set = Self {
            data,
            sentinels,
            _dir: dir,
        };
        wait_for(
            Duration::from_secs(30),
            "the replicas to be in sync and every sentinel to know them",
            || async {
                let replicas = &set.data[1..];
                let synced = replicas.iter().all(|r| {
                    r.cli(&["INFO", "replication"])
                        .contains("master_link_status:up")
                });
                let known = set.sentinels.iter().all(|s| {
                    let listed = s.cli(&["SENTINEL", "REPLICAS", MASTER_NAME]);
                    replicas
                        .iter()
                        .all(|r| listed.contains(&r.port.to_string()))
                        && s.cli(&["SENTINEL", "SENTINELS", MASTER_NAME])
                            .matches("name")
                            .count()
                            >= 2
                });
                (synced && known).then_some(())
            },
        )
        .await;
        set
    }

    /// The sentinel URLs for `[redis] sentinels`.
    pub fn urls(&self) -> Vec<String> {
        self.sentinels.iter().map(RedisNode::url).collect()
    }

    /// The port of the primary the sentinels name now.
    pub fn primary_port(&self) -> Option<u16> {
        let out = self.sentinels[0].cli(&["SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME]);
        out.lines().nth(1)?.trim().parse().ok()
    }
}
