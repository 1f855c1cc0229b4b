//! Redis and RabbitMQ for the tests: found running, or installed and started.

use crate::run;
use anyhow::{Result, bail};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

const REDIS: &str = "127.0.0.1:6379";
const RABBITMQ: &str = "127.0.0.1:5672";

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

fn installed(binary: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {binary}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn apt_install(package: &str) -> Result<()> {
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
    for (binary, package) in [("promtool", "prometheus"), ("chromium", "chromium")] {
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

/// Makes sure RabbitMQ answers on 127.0.0.1:5672, and that queues the tests leave
/// behind expire.
pub fn ensure_rabbitmq() -> Result<()> {
    if !reachable(RABBITMQ) {
        start_rabbitmq()?;
    }
    expire_test_queues();
    Ok(())
}

/// Tests name their queues with a unique 32-hex suffix so that they can run in
/// parallel and re-run without cleanup; this policy has the broker delete such queues
/// after 10 idle minutes, so that re-runs do not pile them up.
fn expire_test_queues() {
    let status = Command::new("rabbitmqctl")
        .args([
            "set_policy",
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
