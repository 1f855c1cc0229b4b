//! A local RabbitMQ cluster from the machine's `rabbitmq-server`, for the tests that
//! need several broker nodes. Each node has its own name (`techub-<pid>-<n>@localhost`),
//! AMQP and distribution ports (free ones), and directories under a temporary one,
//! owned by the `rabbitmq` user that Debian's `rabbitmq-server` runs as; the machine's
//! epmd and Erlang cookie serve them as they serve the shared node. Nodes 2.. join node
//! 1 with `rabbitmqctl join_cluster`. Dropping the cluster kills its nodes by their own
//! PIDs (never by name) and removes the directories. The shared broker on 5672 is
//! never touched.
//!
//! By hand, for an operator: the same environment variables per node
//! (`RABBITMQ_NODENAME`, `RABBITMQ_NODE_PORT`, `RABBITMQ_DIST_PORT`,
//! `RABBITMQ_MNESIA_BASE`, `RABBITMQ_LOG_BASE`, `RABBITMQ_CONFIG_FILE`,
//! `RABBITMQ_ENABLED_PLUGINS_FILE`, `RABBITMQ_PID_FILE`), `rabbitmq-server -detached`,
//! then `rabbitmqctl -n <node> stop_app; rabbitmqctl -n <node> join_cluster <first>;
//! rabbitmqctl -n <node> start_app` on each other node.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// How to get a broker when `rabbitmq-server` is missing.
const INSTALL_HINT: &str =
    "the cluster tests start their own RabbitMQ nodes: apt-get install rabbitmq-server";

/// One node of a [`RabbitCluster`].
pub struct RabbitNode {
    /// `techub-<pid>-<n>@localhost`.
    pub name: String,
    /// Its AMQP port.
    pub port: u16,
    dist_port: u16,
    dir: PathBuf,
}

impl RabbitNode {
    /// Its AMQP URL (guest/guest, the default vhost).
    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    fn pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.dir.join("pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    fn start(&self) {
        let run = |args: &[&str]| {
            let status = Command::new(args[0]).args(&args[1..]).status();
            assert!(
                status.is_ok_and(|s| s.success()),
                "{args:?} failed; {INSTALL_HINT}"
            );
        };
        for sub in ["mnesia", "log"] {
            std::fs::create_dir_all(self.dir.join(sub)).unwrap();
        }
        std::fs::write(self.dir.join("enabled_plugins"), "[].\n").unwrap();
        std::fs::write(self.dir.join("rabbitmq.conf"), "").unwrap();
        let _ = std::fs::remove_file(self.dir.join("pid"));
        run(&[
            "chown",
            "-R",
            "rabbitmq:rabbitmq",
            &self.dir.to_string_lossy(),
        ]);
        let status = Command::new("rabbitmq-server")
            .arg("-detached")
            .env("RABBITMQ_NODENAME", &self.name)
            .env("RABBITMQ_NODE_PORT", self.port.to_string())
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env("RABBITMQ_MNESIA_BASE", self.dir.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", self.dir.join("log"))
            .env("RABBITMQ_CONFIG_FILE", self.dir.join("rabbitmq"))
            .env(
                "RABBITMQ_ENABLED_PLUGINS_FILE",
                self.dir.join("enabled_plugins"),
            )
            .env("RABBITMQ_PID_FILE", self.dir.join("pid"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
        assert!(
            status.is_ok_and(|s| s.success()),
            "rabbitmq-server -detached for {} failed; {INSTALL_HINT}",
            self.name
        );
    }

    fn ctl(&self, args: &[&str]) -> std::process::Output {
        Command::new("rabbitmqctl")
            .args(["-q", "-n", &self.name])
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("rabbitmqctl: {e}; {INSTALL_HINT}"))
    }

    /// Waits until the node is up; once more after a second start if it is not
    /// within 45 s (a node was seen, rarely, never to come up here).
    fn await_startup(&self) {
        if let Err(first) = self.started_within(Duration::from_secs(45)) {
            eprintln!(
                "node {} did not start ({first}); starting it again",
                self.name
            );
            self.kill();
            self.start();
            if let Err(error) = self.started_within(Duration::from_secs(60)) {
                panic!(
                    "node {} did not start: {error}\nits log: {}",
                    self.name,
                    self.dir.join("log").display()
                );
            }
        }
    }

    fn started_within(&self, limit: Duration) -> Result<(), String> {
        // Until the node has registered with epmd, `await_startup` fails at once.
        let deadline = std::time::Instant::now() + limit;
        let seconds = limit.as_secs().to_string();
        loop {
            let out = self.ctl(&["await_startup", "--timeout", &seconds]);
            if out.status.success() {
                return Ok(());
            }
            if std::time::Instant::now() >= deadline {
                let text = String::from_utf8_lossy(&out.stderr).to_string();
                return Err(text.lines().next().unwrap_or_default().to_string());
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Kills the node with SIGKILL (its own PID, from its pid file).
    pub fn kill(&self) {
        if let Some(pid) = self.pid() {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
    }

    /// Starts it again after [`RabbitNode::kill`]; it rejoins its cluster.
    pub fn restart(&self) {
        self.start();
        self.await_startup();
    }
}

/// A cluster of nodes that are this process's alone.
pub struct RabbitCluster {
    /// The nodes, the first the one the others joined.
    pub nodes: Vec<RabbitNode>,
    dir: PathBuf,
}

/// A port nobody listens on now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl RabbitCluster {
    /// Starts `size` nodes and joins them (about 18 s for three here).
    pub fn start(size: usize) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "techub-rabbit-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        let tag = &uuid::Uuid::new_v4().simple().to_string()[..8];
        let nodes: Vec<RabbitNode> = (1..=size)
            .map(|n| RabbitNode {
                name: format!("techub-{tag}-{n}@localhost"),
                port: free_port(),
                dist_port: free_port(),
                dir: dir.join(format!("n{n}")),
            })
            .collect();
        let cluster = Self { nodes, dir };
        for node in &cluster.nodes {
            node.start();
        }
        for node in &cluster.nodes {
            node.await_startup();
        }
        let first = cluster.nodes[0].name.clone();
        for node in &cluster.nodes[1..] {
            for args in [
                vec!["stop_app"],
                vec!["join_cluster", first.as_str()],
                vec!["start_app"],
            ] {
                let out = node.ctl(&args);
                assert!(
                    out.status.success(),
                    "rabbitmqctl -n {} {args:?}: {}",
                    node.name,
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
        cluster
    }

    /// Every node's AMQP URL.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RabbitNode::url).collect()
    }

    /// The node whose AMQP port is `port`.
    pub fn node_on(&self, port: u16) -> &RabbitNode {
        self.nodes
            .iter()
            .find(|n| n.port == port)
            .expect("a node of this cluster")
    }

    /// The node that leads the quorum queue `queue`, asked of node `via`.
    pub fn leader_of(&self, queue: &str, via: usize) -> Option<&RabbitNode> {
        let out = self.nodes[via].ctl(&["list_queues", "name", "leader", "--no-table-headers"]);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let leader = text
            .lines()
            .filter_map(|l| l.split_once('\t'))
            .find(|(name, _)| *name == queue)
            .map(|(_, leader)| leader.trim().to_string())?;
        self.nodes.iter().find(|n| n.name == leader)
    }

    /// The node a client connection named `name` (its `connection_name`) is on,
    /// asked of node `via`.
    pub fn node_of_connection(&self, name: &str, via: usize) -> Option<&RabbitNode> {
        let out = self.nodes[via].ctl(&[
            "list_connections",
            "port",
            "client_properties",
            "--no-table-headers",
        ]);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let port: u16 = text
            .lines()
            .find(|l| l.contains(name))?
            .split('\t')
            .next()?
            .trim()
            .parse()
            .ok()?;
        self.nodes.iter().find(|n| n.port == port)
    }

    /// Stops node `index` gracefully (`rabbitmqctl stop`).
    pub fn stop(&self, index: usize) {
        let _ = self.nodes[index].ctl(&["stop"]);
    }

    /// `rabbitmqctl list_queues` of node `via`: name, type, leader, members, online.
    pub fn queues_report(&self, via: usize) -> String {
        let out = self.nodes[via].ctl(&[
            "list_queues",
            "name",
            "type",
            "leader",
            "members",
            "online",
            "messages",
        ]);
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }
}

impl Drop for RabbitCluster {
    fn drop(&mut self) {
        for node in &self.nodes {
            node.kill();
        }
        // A failed test keeps the nodes' logs to read.
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
