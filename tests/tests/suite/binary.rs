//! The real `techub-host` binary, as an operator runs it.

use std::process::Command;
use techub_tests::{PluginDir, host_binary};

#[test]
fn a_taken_admin_port_stops_the_host_before_it_consumes_anything() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let dir = PluginDir::with(&[("user-notifications", "user_notifications")]);
    let config = dir.path().join("host.toml");
    std::fs::write(
        &config,
        format!(
            "[host]\nplugins_dir = \".\"\nadmin_addr = \"{addr}\"\n\n[plugins.user-notifications]\nsubscribe = [\"user.created\"]\ncache_domains = [\"users\"]\npublish = [\"notification.*\"]\n"
        ),
    )
    .unwrap();
    let output = Command::new(host_binary())
        .args(["run", "--config"])
        .arg(&config)
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        log.contains(&format!("could not listen on host.admin_addr {addr}")),
        "{log}"
    );
    assert!(
        !log.contains("consuming") && !log.contains("plugin loaded"),
        "the port is bound before any plugin starts: {log}"
    );
}

#[test]
fn check_prints_the_merged_config_without_secrets() {
    let dir = PluginDir::with(&[]);
    let config = dir.path().join("host.toml");
    std::fs::write(
        &config,
        "[redis]\nurl = \"redis://:hunter2@127.0.0.1:6379\"\n[cache.domains]\nusers = 60\n[plugins.ghost]\n",
    )
    .unwrap();
    let output = Command::new(host_binary())
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&output.stdout);
    let warned = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{warned}");
    assert!(!printed.contains("hunter2"), "{printed}");
    assert!(printed.contains("redis://:***@127.0.0.1:6379"), "{printed}");
    assert!(
        printed.contains("\"users\": 60") && printed.contains("\"cart\": 604800"),
        "the seed's domains stay beside the overridden one: {printed}"
    );
    assert!(
        warned.contains("[plugins.ghost] names no plugin file ghost.wasm"),
        "{warned}"
    );
}

/// A running `techub-host run`, stopped with SIGTERM on drop if still running.
struct Host {
    child: std::process::Child,
}

impl Host {
    fn start(config: &std::path::Path) -> Self {
        let child = Command::new(host_binary())
            .args(["run", "--config"])
            .arg(config)
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        Self { child }
    }

    fn terminate(&self) {
        // Our own child, by its PID.
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits (at most `limit`) for the process to exit; its status and stdout.
    fn wait(mut self, limit: std::time::Duration) -> (std::process::ExitStatus, String) {
        let started = std::time::Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let mut out = String::new();
                use std::io::Read;
                self.child
                    .stdout
                    .take()
                    .unwrap()
                    .read_to_string(&mut out)
                    .unwrap();
                return (status, out);
            }
            assert!(
                started.elapsed() < limit,
                "the host did not exit within {limit:?}"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

async fn ready(admin: &str) {
    techub_tests::wait_for(
        std::time::Duration::from_secs(60),
        "the host to be ready",
        || async {
            matches!(
                techub_host::admin::client::get(admin, None, "/readyz").await,
                Ok((200, _))
            )
            .then_some(())
        },
    )
    .await;
}

async fn handled_ids(
    redis: &techub_host::capability::redis_client::RedisClient,
    key: &str,
) -> Vec<String> {
    let key = key.to_string();
    redis
        .run(
            "LRANGE",
            techub_host::capability::redis_client::Retry::Idempotent,
            |mut c| {
                let key = key.clone();
                async move {
                    redis::cmd("LRANGE")
                        .arg(&key)
                        .arg(0)
                        .arg(-1)
                        .query_async::<Vec<String>>(&mut c)
                        .await
                }
            },
        )
        .await
        .unwrap()
        .into_iter()
        .map(|entry| entry.rsplit_once(':').unwrap().0.to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_drains_deliveries_in_flight_and_loses_nothing_on_rabbitmq() {
    techub_tests::init_tracing();
    const MESSAGES: usize = 30;
    let dir = PluginDir::with(&[("live", "fixture_versioned_v1")]);
    let amqp = techub_tests::services::amqp_config();
    let key_prefix = format!("{}:", techub_tests::unique("sigterm"));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let admin = format!("127.0.0.1:{port}");
    let config = dir.path().join("host.toml");
    std::fs::write(
        &config,
        format!(
            "[host]\nplugins_dir = \".\"\nadmin_addr = \"{admin}\"\nkey_prefix = \"{key_prefix}\"\ndrain_timeout_ms = 20000\n\n\
             [backends]\nstore = \"redis\"\nmessaging = \"amqp\"\n\n\
             [amqp]\nmain_exchange = \"{}\"\ndead_letter_exchange = \"{}\"\ndead_letter_queue = \"{}\"\ndelayed_exchange = \"{}\"\nqueue_prefix = \"{}\"\n\n\
             [plugins.live]\nsubscribe = [\"fixture.versioned.#\"]\n[plugins.live.limits]\nprefetch = 5\n",
            amqp.main_exchange, amqp.dead_letter_exchange, amqp.dead_letter_queue, amqp.delayed_exchange, amqp.queue_prefix
        ),
    )
    .unwrap();
    let redis = techub_tests::services::redis().await;
    let list = format!("{key_prefix}store:live:handled");

    let host = Host::start(&config);
    ready(&admin).await;
    let mut published = Vec::new();
    for _ in 0..MESSAGES {
        let (status, body) = techub_host::admin::client::publish(
            &admin,
            None,
            "fixture.versioned.main",
            b"sleep:800".to_vec(),
            "",
        )
        .await
        .unwrap();
        assert_eq!(status, 202, "{body}");
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        published.push(body["id"].as_str().unwrap().to_string());
    }
    let before = techub_tests::wait_for(
        std::time::Duration::from_secs(30),
        "the first deliveries",
        || async {
            let ids = handled_ids(&redis, &list).await;
            (!ids.is_empty()).then_some(ids.len())
        },
    )
    .await;
    host.terminate();
    let (status, out) =
        tokio::task::spawn_blocking(move || host.wait(std::time::Duration::from_secs(30)))
            .await
            .unwrap();
    assert!(status.success(), "exit 0 after draining: {status:?}\n{out}");
    // "stopped 1 plugin(s); N deliveries were in flight, 0 left unsettled ..."
    let in_flight: usize = out
        .split(" deliveries were in flight")
        .next()
        .and_then(|head| head.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("it says what it drained: {out}"));
    assert!(out.contains(", 0 left unsettled"), "{out}");
    assert!(
        in_flight >= 1,
        "something was in flight at the signal: {out}"
    );
    let first_run = handled_ids(&redis, &list).await;
    assert!(
        first_run.len() >= before + in_flight,
        "the {in_flight} deliveries in flight at the signal finished ({before} before, {} after)",
        first_run.len()
    );
    assert!(first_run.len() < MESSAGES, "some were left queued");

    // A new host takes the rest: every message handled, each exactly once (the ones
    // in flight at the stop were acked, not redelivered).
    let host = Host::start(&config);
    let all = techub_tests::wait_for(
        std::time::Duration::from_secs(60),
        "every message",
        || async {
            let ids = handled_ids(&redis, &list).await;
            (ids.len() >= MESSAGES).then_some(ids)
        },
    )
    .await;
    host.terminate();
    let (status, _) =
        tokio::task::spawn_blocking(move || host.wait(std::time::Duration::from_secs(30)))
            .await
            .unwrap();
    assert!(status.success());
    let mut sorted = all.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), all.len(), "a message was handled twice");
    let mut expected = published.clone();
    expected.sort();
    assert_eq!(sorted, expected, "every published message was handled");
}

#[test]
fn check_says_whether_the_host_would_take_a_plugin() {
    let dir = PluginDir::with(&[
        ("good", "fixture_versioned_v1"),
        ("other-world", "fixture_wrong_world"),
        ("ungranted", "fixture_versioned_v1"),
    ]);
    let config = dir.path().join("host.toml");
    std::fs::write(
        &config,
        "[plugins.good]\nsubscribe = [\"fixture.versioned.*\"]\n",
    )
    .unwrap();
    let check = |file: &str| {
        let output = Command::new(host_binary())
            .arg("check")
            .arg(dir.path().join(file))
            .arg("--config")
            .arg(&config)
            .output()
            .unwrap();
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
        )
    };
    let (ok, out) = check("good.wasm");
    assert!(ok, "{out}");
    assert!(
        out.contains("ok, plugin good") && out.contains("consumes queue type analytics"),
        "{out}"
    );
    let (ok, out) = check("other-world.wasm");
    assert!(!ok);
    assert!(
        out.contains("does not implement the techub:platform/plugin world"),
        "{out}"
    );
    let (ok, out) = check("ungranted.wasm");
    assert!(!ok);
    assert!(out.contains("[plugins.ungranted].subscribe"), "{out}");
}
