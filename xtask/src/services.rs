//! Redis and RabbitMQ for the tests: found running, or installed and started.

use crate::run;
use anyhow::{Result, bail};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

const REDIS: &str = "127.0.0.1:6379";
const RABBITMQ: &str = "127.0.0.1:5672";
const RABBITMQ_MANAGEMENT: &str = "127.0.0.1:15672";

fn reachable(addr: &str) -> bool {
    let addr: SocketAddr = addr.parse().expect("a literal socket address");
    TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok()
}

fn wait_for(addr: &str, what: &str, limit: Duration) -> Result<()> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if reachable(addr) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    bail!(
        "{what} did not come up on {addr} within {} s",
        limit.as_secs()
    )
}

/// Whether `binary` is on the PATH.
pub fn installed(binary: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {binary}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Installs a Debian package with apt-get.
pub fn apt_install(package: &str) -> Result<()> {
    eprintln!("xtask: installing {package} with apt-get");
    run(Command::new("apt-get").arg("update").arg("-qq"))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-qq", package])
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

/// Makes sure the tools the suite drives are installed: `promtool` (Debian's
/// `prometheus` package) checks the alert rules and the metrics exposition, and
/// `chromium` loads the status page.
pub fn ensure_test_tools() -> Result<()> {
    // redis-server and redis-cli start the Redis Cluster and Sentinel tests' own nodes,
    // also where the shared Redis runs elsewhere (a container).
    for (binary, package) in [
        ("promtool", "prometheus"),
        ("chromium", "chromium"),
        ("redis-server", "redis-server"),
        ("redis-cli", "redis-tools"),
    ] {
        if !installed(binary) {
            // --no-install-recommends: only the tool, not the exporters and fonts the
            // packages recommend.
            eprintln!("xtask: installing {package} with apt-get");
            run(Command::new("apt-get").arg("update").arg("-qq"))?;
            run(Command::new("apt-get")
                .args(["install", "-y", "-qq", "--no-install-recommends", package])
                .env("DEBIAN_FRONTEND", "noninteractive"))?;
        }
    }
    Ok(())
}

/// Makes sure Redis answers on 127.0.0.1:6379.
pub fn ensure_redis() -> Result<()> {
    if reachable(REDIS) {
        return Ok(());
    }
    if !installed("redis-server") {
        apt_install("redis-server")?;
    }
    eprintln!("xtask: starting redis-server on {REDIS}");
    run(Command::new("redis-server").args([
        "--daemonize",
        "yes",
        "--bind",
        "127.0.0.1",
        "--port",
        "6379",
        "--save",
        "",
        "--appendonly",
        "no",
    ]))?;
    wait_for(REDIS, "Redis", Duration::from_secs(30))
}

/// Makes sure RabbitMQ answers on 127.0.0.1:5672 with its management API on
/// 127.0.0.1:15672 (the host keeps queue limits as policies through it), and that
/// queues the tests leave behind expire.
pub fn ensure_rabbitmq() -> Result<()> {
    if !reachable(RABBITMQ) {
        start_rabbitmq()?;
    }
    if !reachable(RABBITMQ_MANAGEMENT) {
        eprintln!("xtask: enabling RabbitMQ's management plugin");
        run(Command::new("rabbitmq-plugins").args(["enable", "rabbitmq_management"]))?;
        wait_for(
            RABBITMQ_MANAGEMENT,
            "RabbitMQ's management API",
            Duration::from_secs(60),
        )?;
    }
    expire_test_queues();
    forget_orphan_test_policies();
    Ok(())
}

/// The host keeps each queue's limits in a policy `techub-limits.<queue>`; a policy
/// outlives its queue, so this removes those of test queues (named with a 32-hex tag)
/// that have expired, lest re-runs pile them up.
fn forget_orphan_test_policies() {
    let api = |method: &str, path: &str| -> Option<serde_json::Value> {
        let output = Command::new("curl")
            .args(["-sf", "-u", "guest:guest", "-X", method])
            .arg(format!("http://{RABBITMQ_MANAGEMENT}/api/{path}"))
            .output()
            .ok()?;
        match output.status.success() {
            true => serde_json::from_slice(&output.stdout)
                .ok()
                .or(Some(serde_json::Value::Null)),
            false => None,
        }
    };
    let names = |value: Option<serde_json::Value>| -> Vec<String> {
        value
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|item| item["name"].as_str().map(str::to_string))
            .collect()
    };
    let queues = names(api("GET", "queues/%2F?columns=name"));
    let test_tagged = |name: &str| {
        name.split(['-', '.'])
            .any(|part| part.len() == 32 && part.bytes().all(|b| b.is_ascii_hexdigit()))
    };
    let mut forgotten = 0;
    for policy in names(api("GET", "policies/%2F")) {
        let Some(queue) = policy.strip_prefix("techub-limits.") else {
            continue;
        };
        if test_tagged(queue) && !queues.iter().any(|q| q == queue) {
            let encoded: String = policy
                .bytes()
                .map(|b| match b.is_ascii_alphanumeric() || b"-._".contains(&b) {
                    true => (b as char).to_string(),
                    false => format!("%{b:02X}"),
                })
                .collect();
            if api("DELETE", &format!("policies/%2F/{encoded}")).is_some() {
                forgotten += 1;
            }
        }
    }
    if forgotten > 0 {
        eprintln!("xtask: removed {forgotten} policies of expired test queues");
    }
}

/// Tests name their queues with a unique 32-hex suffix so that they can run in
/// parallel and re-run without cleanup; this policy has the broker delete such queues
/// after 10 idle minutes, so that re-runs do not pile them up. An operator policy, as
/// it must add to the host's own (user) policies on queue limits, not replace them.
fn expire_test_queues() {
    // The user policy earlier runs set would hide the host's policies on test queues.
    let _ = Command::new("rabbitmqctl")
        .args(["clear_policy", "techub-test-queues"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
    let status = Command::new("rabbitmqctl")
        .args([
            "set_operator_policy",
            "--apply-to",
            "queues",
            "techub-test-queues",
            "[-][0-9a-f]{32}",
            r#"{"expires":600000}"#,
        ])
        .stdout(std::process::Stdio::null())
        .status();
    if !status.is_ok_and(|s| s.success()) {
        eprintln!(
            "xtask: could not set the expiry policy for test queues; leftover test queues will stay"
        );
    }
}

fn start_rabbitmq() -> Result<()> {
    if !installed("rabbitmq-server") {
        apt_install("rabbitmq-server")?;
    }
    eprintln!("xtask: starting rabbitmq-server on {RABBITMQ}");
    run(Command::new("rabbitmq-server").arg("-detached"))?;
    // `await_startup` waits for the node; the port check confirms the listener.
    let _ = Command::new("rabbitmqctl")
        .args(["--timeout", "120", "await_startup"])
        .status();
    wait_for(RABBITMQ, "RabbitMQ", Duration::from_secs(120))
}
