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
fn check_prints_the_merged_config_as_toml_without_secrets() {
    let dir = PluginDir::with(&[("lonely", "fixture_noop")]);
    let config = dir.path().join("host.toml");
    std::fs::write(
        &config,
        format!(
            "[host]\nplugins_dir = {:?}\n[redis]\nurl = \"redis://:hunter2@127.0.0.1:6379\"\n[cache.domains]\nusers = 60\n[plugins.ghost]\n",
            dir.path()
        ),
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
        printed.contains("\nusers = 60\n") && printed.contains("\ncart = 604800\n"),
        "the seed's domains stay beside the overridden one: {printed}"
    );
    let reread: toml::Table = printed.parse().expect("what check prints is TOML");
    assert!(reread.contains_key("queues"), "{printed}");
    assert!(
        warned.contains("plugin file lonely.wasm has no [plugins.lonely] section"),
        "{warned}"
    );
    assert!(
        warned.contains("[plugins.ghost] names no plugin file ghost.wasm"),
        "{warned}"
    );
}

/// A running `techub-host run`, stopped with SIGTERM on drop if still running.
pub(crate) struct Host {
    child: std::process::Child,
}

impl Host {
    pub(crate) fn start(config: &std::path::Path) -> Self {
        Self::start_with_env(config, &[], None)
    }

    /// Starts the host with extra environment variables, its log (stderr) into `log`.
    pub(crate) fn start_with_env(
        config: &std::path::Path,
        env: &[(&str, &str)],
        log: Option<&std::path::Path>,
    ) -> Self {
        let stderr = match log {
            Some(path) => std::process::Stdio::from(std::fs::File::create(path).unwrap()),
            None => std::process::Stdio::null(),
        };
        let child = Command::new(host_binary())
            .args(["run", "--config"])
            .arg(config)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap();
        Self { child }
    }

    pub(crate) fn terminate(&self) {
        self.signal("TERM");
    }

    /// Sends `signal` (`TERM`, `INT`, `HUP`) to our own child, by its PID.
    pub(crate) fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Sends `signal` and waits (at most 30 s, off the async workers) for the exit;
    /// its status and stdout.
    pub(crate) async fn stop_with(self, signal: &str) -> (std::process::ExitStatus, String) {
        self.signal(signal);
        tokio::task::spawn_blocking(move || self.wait(std::time::Duration::from_secs(30)))
            .await
            .unwrap()
    }

    /// Waits (at most `limit`) for the process to exit; its status and stdout.
    pub(crate) fn wait(mut self, limit: std::time::Duration) -> (std::process::ExitStatus, String) {
        let started = std::time::Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let mut out = String::new();
                use std::io::Read;
                if let Some(mut stdout) = self.child.stdout.take() {
                    stdout.read_to_string(&mut out).unwrap();
                }
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

pub(crate) async fn ready(admin: &str) {
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

pub(crate) async fn handled_ids(
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

/// How a stop went: what the host said it drained.
struct Stopped {
    in_flight: usize,
    left_unsettled: usize,
    /// Handled by the first host, before and during the stop.
    first_run: usize,
}

/// Thirty `sleep:<sleep_ms>` messages on RabbitMQ, five at a time; the host is stopped
/// with `signal` while some are in flight (with `drain_timeout_ms` to finish them),
/// then a second host takes the rest. Every message is handled exactly once: a
/// delivery that finished was acked, one stopped at the drain deadline was left
/// unsettled and redelivered, none was acked unhandled.
async fn a_stop_loses_nothing(signal: &str, drain_timeout_ms: u64, sleep_ms: u64) -> Stopped {
    techub_tests::init_tracing();
    const MESSAGES: usize = 30;
    let dir = PluginDir::with(&[("live", "fixture_versioned_v1")]);
    let amqp = techub_tests::services::amqp_config();
    let key_prefix = format!("{}:", techub_tests::unique("stop"));
    let admin = free_admin_addr();
    let config = dir.path().join("host.toml");
    std::fs::write(
        &config,
        format!(
            "[host]\nplugins_dir = \".\"\nadmin_addr = \"{admin}\"\nkey_prefix = \"{key_prefix}\"\ndrain_timeout_ms = {drain_timeout_ms}\n\n\
             [backends]\nstore = \"redis\"\nmessaging = \"amqp\"\n\n\
             {}\
             [plugins.live]\nsubscribe = [\"fixture.versioned.#\"]\n[plugins.live.limits]\nprefetch = 5\ntimeout_ms = 30000\n",
            amqp_section(&amqp)
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
            format!("sleep:{sleep_ms}").into_bytes(),
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
    // Not at once: the first handled message's batch-mates finish with it, and a signal
    // then would find them all but done. A quarter of a handler later, the next batch
    // is mid-way.
    tokio::time::sleep(std::time::Duration::from_millis(sleep_ms / 4)).await;
    let (status, out) = host.stop_with(signal).await;
    assert!(status.success(), "exit 0 after draining: {status:?}\n{out}");
    // "stopped 1 plugin(s); N deliveries were in flight, M left unsettled ..."
    let number_before = |marker: &str| -> usize {
        out.split(marker)
            .next()
            .and_then(|head| head.rsplit(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("it says what it drained: {out}"))
    };
    let in_flight = number_before(" deliveries were in flight");
    let left_unsettled = number_before(" left unsettled");
    assert!(
        in_flight >= 1,
        "something was in flight at the signal: {out}"
    );
    let first_run = handled_ids(&redis, &list).await.len();
    assert!(first_run >= before, "{first_run} < {before}");
    assert!(first_run < MESSAGES, "some were left queued");

    // A new host takes the rest: every message handled, each exactly once.
    let host = Host::start(&config);
    let all = techub_tests::wait_for(
        std::time::Duration::from_secs(90),
        "every message",
        || async {
            let ids = handled_ids(&redis, &list).await;
            (ids.len() >= MESSAGES).then_some(ids)
        },
    )
    .await;
    let (status, _) = host.stop_with("TERM").await;
    assert!(status.success());
    let mut sorted = all.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), all.len(), "a message was handled twice");
    let mut expected = published.clone();
    expected.sort();
    assert_eq!(sorted, expected, "every published message was handled");
    Stopped {
        in_flight,
        left_unsettled,
        first_run,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_drains_deliveries_in_flight_and_loses_nothing_on_rabbitmq() {
    let stopped = a_stop_loses_nothing("TERM", 20_000, 800).await;
    assert_eq!(
        stopped.left_unsettled, 0,
        "all finished within the drain timeout"
    );
    // Each delivery in flight at the signal finished and was acked (the exactly-once
    // check shows none was redelivered).
    assert!(stopped.first_run >= stopped.in_flight);
}

#[tokio::test(flavor = "multi_thread")]
async fn sigint_drains_like_sigterm() {
    let stopped = a_stop_loses_nothing("INT", 20_000, 800).await;
    assert_eq!(stopped.left_unsettled, 0);
    assert!(stopped.first_run >= stopped.in_flight);
}

/// Deliveries still running at the drain deadline are left unsettled (the broker
/// redelivers them to the next host), never acked unhandled.
#[tokio::test(flavor = "multi_thread")]
async fn deliveries_running_at_the_drain_deadline_are_redelivered_not_lost() {
    let stopped = a_stop_loses_nothing("TERM", 300, 5_000).await;
    assert!(
        stopped.left_unsettled >= 1,
        "a 5 s handler cannot finish within a 300 ms drain: {} of {} left",
        stopped.left_unsettled,
        stopped.in_flight
    );
}

/// SIGHUP reloads host.toml and what it points to: a secret read from a file (which
/// the watcher, watching host.toml alone, does not see change) takes its new value.
#[tokio::test(flavor = "multi_thread")]
async fn sighup_reloads_the_configuration_and_its_secrets() {
    use techub_tests::http_server::{Behaviour, TestServer};
    techub_tests::init_tracing();
    let server = TestServer::http(Behaviour::Echo).await;
    let dir = PluginDir::with(&[("caller", "fixture_caller")]);
    let admin = free_admin_addr();
    let token = dir.path().join("token");
    std::fs::write(&token, "first").unwrap();
    let config = dir.path().join("host.toml");
    std::fs::write(
        &config,
        format!(
            "[host]\nplugins_dir = \".\"\nadmin_addr = \"{admin}\"\n\n\
             [plugins.caller]\nsubscribe = [\"fixture.caller.#\"]\noutbound = [\"{}\"]\n\
             [plugins.caller.secrets]\ntoken = {{ file = \"token\" }}\n",
            server.origin(false)
        ),
    )
    .unwrap();
    let host = Host::start(&config);
    ready(&admin).await;
    let plan = serde_json::json!({ "requests": [{
        "url": format!("{}/hup", server.origin(false)),
        "headers": { "x-token": "{secret:token}" },
    }]});
    let call = async || {
        let (status, body) = techub_host::admin::client::publish(
            &admin,
            None,
            "fixture.caller.hup",
            plan.to_string().into_bytes(),
            "",
        )
        .await
        .unwrap();
        assert_eq!(status, 202, "{body}");
    };
    let tokens = || -> Vec<String> {
        server
            .received()
            .iter()
            .filter_map(|r| r.header("x-token").map(str::to_string))
            .collect()
    };
    call().await;
    techub_tests::wait_for(
        std::time::Duration::from_secs(20),
        "the first call",
        || async { (tokens() == ["first"]).then_some(()) },
    )
    .await;
    std::fs::write(&token, "second").unwrap();
    host.signal("HUP");
    techub_tests::wait_for(
        std::time::Duration::from_secs(20),
        "a call with the reloaded secret",
        || async {
            if tokens().last().map(String::as_str) == Some("second") {
                return Some(());
            }
            call().await;
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            None
        },
    )
    .await;
    let (status, _) = host.stop_with("TERM").await;
    assert!(status.success());
}

#[test]
fn check_says_whether_the_host_would_take_a_plugin() {
    let dir = PluginDir::with(&[
        ("good", "fixture_versioned_v1"),
        ("other-world", "fixture_wrong_world"),
        ("ungranted", "fixture_versioned_v1"),
        ("catalog", "fixture_catalog"),
        ("not-a-loader", "fixture_noop"),
        ("standard", "fixture_std_kv_draft2"),
        ("unserved", "fixture_std_unserved"),
    ]);
    let config = dir.path().join("host.toml");
    std::fs::write(
        &config,
        "[plugins.good]\nsubscribe = [\"fixture.versioned.*\"]\n[plugins.not-a-loader]\nsubscribe = [\"#\"]\n[plugins.standard]\nqueue = \"webhook\"\nsubscribe = [\"fixture.standard.#\"]\nbuckets = [\"orders\"]\n[plugins.unserved]\nqueue = \"webhook\"\nsubscribe = [\"fixture.unserved.#\"]\n[cache.loaders]\nproducts = \"catalog\"\nusers = \"not-a-loader\"\n",
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
    let (ok, out) = check("catalog.wasm");
    assert!(ok, "{out}");
    assert!(out.contains("loads cache domains: [\"products\"]"), "{out}");
    let (ok, out) = check("not-a-loader.wasm");
    assert!(!ok, "{out}");
    assert!(out.contains("exports no loader"), "{out}");
    let (ok, out) = check("standard.wasm");
    assert!(ok, "{out}");
    assert!(
        out.contains("a standard consumer")
            && out.contains("consumes queue type webhook via [\"fixture.standard.#\""),
        "{out}"
    );
    let (ok, out) = check("unserved.wasm");
    assert!(!ok);
    assert!(out.contains("example:sms/sender@1.0.0"), "{out}");
}

/// `127.0.0.1:<a port free right now>`, for a host's admin endpoint.
pub(crate) fn free_admin_addr() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("127.0.0.1:{port}")
}

/// The `[amqp]` table of a host.toml on `amqp`'s (test-unique) names.
fn amqp_section(amqp: &techub_host::config::AmqpConfig) -> String {
    format!(
        "[amqp]\nmain_exchange = \"{}\"\ndead_letter_exchange = \"{}\"\ndead_letter_queue = \"{}\"\ndelayed_exchange = \"{}\"\nqueue_prefix = \"{}\"\n\n",
        amqp.main_exchange,
        amqp.dead_letter_exchange,
        amqp.dead_letter_queue,
        amqp.delayed_exchange,
        amqp.queue_prefix
    )
}

/// `techub-host <args> --admin <admin>`: its stdout, or a panic with its stderr.
fn cli(admin: &str, args: &[&str]) -> String {
    let output = Command::new(host_binary())
        .args(args)
        .args(["--admin", admin])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "techub-host {args:?}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

async fn cli_until(admin: &str, args: &[&str], wanted: &str) -> String {
    let (admin, args_owned): (String, Vec<String>) = (
        admin.to_string(),
        args.iter().map(|a| a.to_string()).collect(),
    );
    techub_tests::wait_for(
        std::time::Duration::from_secs(30),
        &format!("`techub-host {args:?}` to print {wanted:?}"),
        || {
            let (admin, args) = (admin.clone(), args_owned.clone());
            async move {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                let out = cli(&admin, &args);
                out.contains(wanted).then_some(out)
            }
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn operators_inspect_replay_and_purge_dead_letters_through_the_cli_on_rabbitmq() {
    techub_tests::init_tracing();
    let dir = PluginDir::with(&[
        ("user-notifications", "user_notifications"),
        ("broken", "fixture_trap"),
    ]);
    let amqp = techub_tests::services::amqp_config();
    let key_prefix = format!("{}:", techub_tests::unique("cli"));
    let admin = free_admin_addr();
    let config = dir.path().join("host.toml");
    std::fs::write(
        &config,
        format!(
            "[host]\nplugins_dir = \".\"\nadmin_addr = \"{admin}\"\nkey_prefix = \"{key_prefix}\"\nmetrics_poll_ms = 200\n\n\
             [backends]\ncache = \"redis\"\nmessaging = \"amqp\"\n\n\
             {}\
             [queues.email]\nmax_retries = 1\nretry_delay_ms = 100\n\n\
             [plugins.user-notifications]\nsubscribe = [\"#\"]\ncache_domains = [\"users\"]\npublish = [\"notification.*\"]\n\
             [plugins.broken]\nsubscribe = [\"#\"]\n",
            amqp_section(&amqp)
        ),
    )
    .unwrap();
    let log_path = dir.path().join("host.log");
    let mut child = Command::new(host_binary())
        .args(["--log-format", "json", "run", "--config"])
        .arg(&config)
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let pid = child.id().to_string();
    ready(&admin).await;
    let publish = |key: &'static str, body: &'static str| {
        let admin = admin.clone();
        async move {
            let (status, answer) = techub_host::admin::client::publish(
                &admin,
                None,
                key,
                body.as_bytes().to_vec(),
                "",
            )
            .await
            .unwrap();
            assert_eq!(status, 202, "{answer}");
            let answer: serde_json::Value = serde_json::from_str(&answer).unwrap();
            answer["id"].as_str().unwrap().to_string()
        }
    };

    let welcomed = publish(
        "user.created",
        r#"{"id":"cli-1","email":"a@b.c","name":"A"}"#,
    )
    .await;
    let status = cli_until(&admin, &["status", &welcomed], "completed").await;
    assert!(
        status.contains(&format!(
            "{}notification.user-notifications",
            amqp.queue_prefix
        )),
        "{status}"
    );

    let broken = publish("fixture.trap.cli", "payload of the broken one").await;
    let listed = cli_until(&admin, &["dlq", "list"], &broken).await;
    assert!(listed.contains("1 dead letter(s)"), "{listed}");
    assert!(listed.contains("payload of the broken one"), "{listed}");
    let shown = cli(&admin, &["dlq", "show", &broken]);
    let shown: serde_json::Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(shown["routing_key"], "fixture.trap.cli");
    assert_eq!(shown["queue"], format!("{}email.broken", amqp.queue_prefix));
    assert_eq!(shown["attempts"], 2);
    assert_eq!(shown["payload"]["text"], "payload of the broken one");
    assert!(
        shown["reason"]
            .as_str()
            .unwrap()
            .contains("fixture trap on attempt 2"),
        "{shown}"
    );

    // Replayed, it is delivered again (as attempt 1) and, trapping twice more, comes back.
    let replayed = cli(&admin, &["dlq", "replay", &broken]);
    assert!(replayed.contains("replayed 1"), "{replayed}");
    let first_death = shown["died_at_ms"].as_u64().unwrap();
    techub_tests::wait_for(
        std::time::Duration::from_secs(30),
        "the replayed letter to die again",
        || async {
            let died = shown_died(&cli_or_empty(&admin, &["dlq", "show", &broken]));
            died.filter(|at| *at > first_death).map(|_| ())
        },
    )
    .await;

    // `plugins`: a table for people, the endpoint's JSON with --json.
    let table = cli(&admin, &["plugins"]);
    let row: Vec<&str> = table
        .lines()
        .find(|l| l.starts_with("user-notifications "))
        .unwrap_or_else(|| panic!("{table}"))
        .split_whitespace()
        .collect();
    assert_eq!(row[1], "serving", "{table}");
    assert!(table.contains("notification: user.created"), "{table}");
    let json: serde_json::Value = serde_json::from_str(&cli(&admin, &["plugins", "--json"]))
        .expect("--json prints the endpoint's JSON");
    assert!(json["plugins"].is_array(), "{json}");

    let stats = cli(
        &admin,
        &["cache-stats", "--domain", "users", "--since", "10m"],
    );
    // The welcome flow wrote the user to the users domain: the writes column shows it
    // (hits and misses count reads only, and there were none).
    let header: Vec<&str> = stats
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        [
            "domain", "hits", "misses", "hit", "rate", "writes", "deletes"
        ],
        "{stats}"
    );
    let users: Vec<&str> = stats
        .lines()
        .find(|l| l.starts_with("users"))
        .unwrap_or_else(|| panic!("{stats}"))
        .split_whitespace()
        .collect();
    assert!(
        users
            .get(4)
            .and_then(|w| w.parse::<u64>().ok())
            .is_some_and(|w| w >= 1),
        "a write counted: {stats}"
    );
    let (code, metrics) = techub_host::admin::client::get(&admin, None, "/metrics")
        .await
        .unwrap();
    assert_eq!(code, 200);
    assert!(
        crate::operations::sample(&metrics, "techub_amqp_confirms_total", &[])
            .is_some_and(|n| n >= 3.0),
        "{metrics}"
    );

    let purged = cli(&admin, &["dlq", "purge", "--all"]);
    assert!(purged.contains("purged 1"), "{purged}");
    let listed = cli(&admin, &["dlq", "list"]);
    assert!(listed.contains("0 dead letter(s)"), "{listed}");

    // Stop, then read the JSON log: the trap's records carry the invocation's span.
    let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(status.success());
    assert!(child.wait().unwrap().success());
    let log = std::fs::read_to_string(&log_path).unwrap();
    let records: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let in_span = records
        .iter()
        .find(|r| r["span"]["message_id"] == broken.as_str() && r["fields"]["stream"] == "stderr")
        .unwrap_or_else(|| panic!("no guest stderr record inside the invocation's span:\n{log}"));
    assert_eq!(in_span["span"]["plugin"], "broken");
    assert_eq!(in_span["span"]["routing_key"], "fixture.trap.cli");
    assert_eq!(in_span["span"]["version"].as_str().map(str::len), Some(12));
}

/// `techub-host <args>`'s stdout, empty when it failed (e.g. the letter is in flight).
fn cli_or_empty(admin: &str, args: &[&str]) -> String {
    let output = Command::new(host_binary())
        .args(args)
        .args(["--admin", admin])
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The `died_at_ms` of a `dlq show` answer.
fn shown_died(shown: &str) -> Option<u64> {
    serde_json::from_str::<serde_json::Value>(shown).ok()?["died_at_ms"].as_u64()
}

#[test]
fn a_scaffolded_plugin_builds_outside_the_repository_passes_its_test_and_checks() {
    let outside = tempfile::tempdir().unwrap();
    let output = Command::new(host_binary())
        .args([
            "new",
            "hello-plugin",
            "--queue",
            "email",
            "--routing-key",
            "user.*",
        ])
        .arg("--dir")
        .arg(outside.path())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let root = outside.path().join("hello-plugin");
    // Its handler shows the first thing a consumer needs: its side effect once per
    // message, whatever the redeliveries.
    let lib = std::fs::read_to_string(root.join("src/lib.rs")).unwrap();
    assert!(lib.contains("store::once(message.id(),"), "{lib}");
    // A target directory of its own (the suite's is locked by `cargo test`), kept
    // across runs so that only the first builds the dependencies.
    let target = techub_tests::repo_root().join("target/scaffold-test");
    let cargo = |args: &[&str]| {
        let output = Command::new(env!("CARGO"))
            .args(args)
            .current_dir(&root)
            .env("CARGO_TARGET_DIR", &target)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "cargo {args:?} in the scaffold failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let wasm = target.join("wasm32-wasip2/release/hello_plugin.wasm");
    let _ = std::fs::remove_file(&wasm); // a run before this one's
    cargo(&["build", "--release", "--quiet"]);
    let host_target = Command::new("rustc").arg("-vV").output().unwrap();
    let host_target = String::from_utf8_lossy(&host_target.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_string))
        .unwrap();
    // A plain `cargo test` runs the tests in a techub host (the runner the scaffold's
    // .cargo/config.toml names), where the one that calls the handler and the store
    // passes.
    let tested = cargo(&["test", "--quiet"]);
    assert!(tested.contains("test result: ok. 2 passed"), "{tested}");
    // Natively, the logic test runs and the SDK one is ignored, saying why.
    let tested = cargo(&["test", "--quiet", "--target", &host_target]);
    assert!(tested.contains("1 passed; 0 failed; 1 ignored"), "{tested}");
    // A native build that is not a test stops, naming the command that builds it.
    let native = Command::new(env!("CARGO"))
        .args(["build", "--quiet", "--target", &host_target])
        .current_dir(&root)
        .env("CARGO_TARGET_DIR", &target)
        .output()
        .unwrap();
    let refused = String::from_utf8_lossy(&native.stderr);
    assert!(!native.status.success(), "{refused}");
    assert!(
        refused.contains("a techub plugin builds for wasm32-wasip2: `cargo build --release --target wasm32-wasip2`"),
        "{refused}"
    );

    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    assert!(
        readme.contains("[plugins.hello-plugin]\nsubscribe = [\"user.*\"]"),
        "{readme}"
    );
    // The crate's own host.toml (what `techub-host dev` runs it with) grants it.
    let config = root.join("host.toml");
    let check = Command::new(host_binary())
        .arg("check")
        .arg(&wasm)
        .args(["--name", "hello-plugin", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success(), "{printed}");
    assert!(printed.contains("consumes queue type email"), "{printed}");
}

/// `cargo test` in a plugin crate runs as the plugin: with the grants of the crate's
/// host.toml (a granted publish goes out, another is refused), and a failed assertion
/// fails the run with its message and libtest's exit code, saying why the rest did
/// not run.
#[test]
fn cargo_test_in_a_plugin_crate_runs_as_the_plugin_and_fails_on_a_failed_assertion() {
    let outside = tempfile::tempdir().unwrap();
    let created = Command::new(host_binary())
        .args(["new", "runner-probe", "--dir"])
        .arg(outside.path())
        .status()
        .unwrap();
    assert!(created.success());
    let root = outside.path().join("runner-probe");
    let config = root.join("host.toml");
    let granted = std::fs::read_to_string(&config).unwrap() + "publish = [\"order.*\"]\n";
    std::fs::write(&config, granted).unwrap();
    let lib = root.join("src/lib.rs");
    let tests = r#"
#[cfg(test)]
mod probes {
    use super::*;

    #[test]
    fn publishes_what_host_toml_grants_only() {
        let options = PublishOptions::default();
        messaging::publish("order.created", b"{}", &options).expect("granted");
        let refused = messaging::publish("payment.created", b"{}", &options);
        assert!(refused.is_err(), "{refused:?}");
    }

    #[test]
    fn fails_on_purpose() {
        assert_eq!(store::incr("probe").unwrap(), 2, "deliberately wrong");
    }
}
"#;
    let text = std::fs::read_to_string(&lib).unwrap() + tests;
    std::fs::write(&lib, text).unwrap();
    let cargo_test = |filter: &str| {
        Command::new(env!("CARGO"))
            .args(["test", "--quiet", filter])
            .current_dir(&root)
            // Shared with the scaffold test, so the dependencies build once.
            .env(
                "CARGO_TARGET_DIR",
                techub_tests::repo_root().join("target/scaffold-test"),
            )
            .output()
            .unwrap()
    };
    let passed = cargo_test("publishes_what_host_toml_grants_only");
    let shown = format!(
        "{}{}",
        String::from_utf8_lossy(&passed.stdout),
        String::from_utf8_lossy(&passed.stderr)
    );
    assert!(passed.status.success(), "{shown}");
    assert!(shown.contains("test result: ok. 1 passed"), "{shown}");

    let failed = cargo_test("fails_on_purpose");
    let shown = format!(
        "{}{}",
        String::from_utf8_lossy(&failed.stdout),
        String::from_utf8_lossy(&failed.stderr)
    );
    assert_eq!(failed.status.code(), Some(101), "{shown}");
    assert!(shown.contains("deliberately wrong"), "{shown}");
    assert!(
        shown.contains("On wasm32 a panic aborts, so a failed assertion ends the whole run"),
        "{shown}"
    );
}

/// Lines a child process writes to stdout and stderr, gathered by two threads.
struct Lines {
    seen: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Lines {
    fn of(child: &mut std::process::Child) -> Self {
        use std::io::BufRead;
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let out: Box<dyn std::io::Read + Send> = Box::new(child.stdout.take().unwrap());
        let err: Box<dyn std::io::Read + Send> = Box::new(child.stderr.take().unwrap());
        for stream in [out, err] {
            let seen = seen.clone();
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(stream)
                    .lines()
                    .map_while(Result::ok)
                {
                    seen.lock().unwrap().push(line);
                }
            });
        }
        Self { seen }
    }

    /// Whether a line so far contains `text`.
    fn any(&self, text: &str) -> bool {
        self.seen.lock().unwrap().iter().any(|l| l.contains(text))
    }

    /// Every line so far.
    fn all(&self) -> String {
        self.seen.lock().unwrap().join("\n")
    }

    /// Waits (at most `limit`) for a line containing `text`.
    fn wait_for(&self, text: &str, limit: std::time::Duration) {
        let started = std::time::Instant::now();
        while !self.seen.lock().unwrap().iter().any(|l| l.contains(text)) {
            assert!(
                started.elapsed() < limit,
                "no line with {text:?} within {limit:?}; the output:\n{}",
                self.seen.lock().unwrap().join("\n")
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

/// `techub-host dev` in a scaffolded crate: builds it, serves it with the crate's
/// host.toml grants (and a second crate with its own's), and after a real edit of its
/// source rebuilds it and hot-reloads it (the same process handles the next message
/// with the new code); an edit of host.toml reloads without a false restart warning.
#[test]
fn dev_rebuilds_and_hot_reloads_a_plugin_when_its_source_changes() {
    use std::time::Duration;
    let outside = tempfile::tempdir().unwrap();
    let created = Command::new(host_binary())
        .args([
            "new",
            "dev-probe",
            "--queue",
            "email",
            "--routing-key",
            "user.*",
            "--dir",
        ])
        .arg(outside.path())
        .status()
        .unwrap();
    assert!(created.success());
    let root = outside.path().join("dev-probe");
    // A second crate, served beside it with the grants of its own host.toml.
    let created = Command::new(host_binary())
        .args([
            "new",
            "dev-second",
            "--queue",
            "order",
            "--routing-key",
            "order.placed",
            "--dir",
        ])
        .arg(outside.path())
        .status()
        .unwrap();
    assert!(created.success());
    let admin = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let mut dev = Host {
        child: Command::new(host_binary())
            .args(["dev", ".", "../dev-second", "--admin-addr", &admin])
            .current_dir(&root)
            // Shared with the scaffold test, so the dependencies build once.
            .env(
                "CARGO_TARGET_DIR",
                techub_tests::repo_root().join("target/scaffold-test"),
            )
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    };
    let lines = Lines::of(&mut dev.child);
    lines.wait_for("plugin(s) serving", Duration::from_secs(600));
    assert!(
        lines.any("dev: 2 plugin(s) serving") && lines.any(", 0 failed;"),
        "{}",
        lines.all()
    );
    let publish_to = |routing_key: &str, id: &str| {
        let status = Command::new(host_binary())
            .args([
                "publish",
                routing_key,
                &format!("{{\"id\":\"{id}\"}}"),
                "--admin",
                &admin,
            ])
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(status.success());
    };
    let publish = |id: &str| publish_to("user.created", id);
    publish("1");
    lines.wait_for("handled 1", Duration::from_secs(30));
    publish_to("order.placed", "second-1");
    lines.wait_for("handled second-1", Duration::from_secs(30));

    let source = root.join("src/lib.rs");
    let text = std::fs::read_to_string(&source).unwrap();
    std::fs::write(&source, text.replace("handled {id}", "edited {id}")).unwrap();
    lines.wait_for(
        "dev: dev-probe changed; rebuilding",
        Duration::from_secs(30),
    );
    lines.wait_for("new version serving", Duration::from_secs(300));
    publish("2");
    lines.wait_for("edited 2", Duration::from_secs(30));
    // A reload of the crate's host.toml does not take dev's own plugins directory and
    // admin address for changes that need a restart.
    let config = root.join("host.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text + "\n[limits]\ncpu_ms = 900\n").unwrap();
    lines.wait_for("host.toml reloaded", Duration::from_secs(30));
    assert!(
        !lines.any("changes only with a restart"),
        "a false restart warning:\n{}",
        lines.all()
    );
    dev.terminate();
    let (status, _) = dev.wait(Duration::from_secs(30));
    assert!(status.success(), "dev stops cleanly on SIGTERM");
    // And says what it drained, as `run` does.
    lines.wait_for("dev: stopped 2 plugin(s);", Duration::from_secs(10));
}

/// `techub-host demo` with this repository's host.toml: the example plugins take the
/// specification's flow from sign-up to payment, calling the local stand-ins of the
/// mail provider, the gateway and a webhook endpoint, and the demo prints each step.
#[test]
fn the_demo_runs_the_business_flow_through_the_example_plugins() {
    let output = Command::new(host_binary())
        .args(["demo", "--config", "host.toml"])
        .current_dir(techub_tests::repo_root())
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{printed}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(printed.contains("demo: 7 plugin(s) serving"), "{printed}");
    for step in [
        "passed  notification.email",
        "passed  inventory.updated",
        "passed  inventory.low",
        "passed  payment.processed",
        "passed  webhook.event",
        // The stand-ins on loopback: the email sent, the card charged, the webhook
        // verified and accepted.
        "mail     POST /emails",
        "gateway  POST /charges",
        "gateway  answered 200",
        "webhooks POST /webhooks",
        "webhooks answered 200",
        "payment:order-1  amount=12900 charge=ch_1 status=processed",
        "stock:keyboard   4",
    ] {
        assert!(printed.contains(step), "no {step:?} in:\n{printed}");
    }
}

/// Starts a host on an empty directory and follows `tail` on it: the host, its admin
/// address, and the follower (which sends each line it gets).
async fn host_with_a_tail() -> (
    Host,
    PluginDir,
    tokio::task::JoinHandle<anyhow::Result<()>>,
    tokio::sync::mpsc::UnboundedReceiver<String>,
) {
    techub_tests::init_tracing();
    let dir = PluginDir::with(&[]);
    let admin = free_admin_addr();
    let config = dir.path().join("host.toml");
    std::fs::write(
        &config,
        format!("[host]\nplugins_dir = \".\"\nadmin_addr = \"{admin}\"\n"),
    )
    .unwrap();
    let host = Host::start(&config);
    ready(&admin).await;
    let (lines, mut seen) = tokio::sync::mpsc::unbounded_channel();
    let follower = tokio::spawn(async move {
        techub_host::admin::client::tail(&admin, None, "nothing.*", |line| {
            lines.send(line.to_string()).is_ok()
        })
        .await
    });
    let first = seen.recv().await.expect("the tail started");
    assert!(first.contains("\"tailing\""), "{first}");
    (host, dir, follower, seen)
}

/// An open `tail` does not hold up SIGTERM: the host says it is stopping on the stream,
/// ends it, and exits 0.
#[tokio::test(flavor = "multi_thread")]
async fn an_open_tail_ends_when_the_host_stops() {
    let (host, _dir, follower, mut seen) = host_with_a_tail().await;
    let (status, _) = host.stop_with("TERM").await;
    assert!(status.success(), "{status:?}");
    let ended = tokio::time::timeout(std::time::Duration::from_secs(30), follower)
        .await
        .expect("the tail ends with the host")
        .unwrap();
    assert!(ended.is_ok(), "{ended:?}");
    let last = seen.recv().await.expect("a last line");
    assert!(last.contains("the host is stopping"), "{last}");
}

/// A host killed outright cuts the stream: `tail` says the host went away, not a
/// chunked-encoding error.
#[tokio::test(flavor = "multi_thread")]
async fn tail_says_so_when_the_host_is_killed() {
    let (host, _dir, follower, _seen) = host_with_a_tail().await;
    drop(host); // SIGKILL, by its PID
    let ended = tokio::time::timeout(std::time::Duration::from_secs(30), follower)
        .await
        .expect("the tail ends with the host")
        .unwrap();
    let error = format!("{:#}", ended.expect_err("a stream cut short is an error"));
    assert!(
        error.contains("closed the stream: it stopped or restarted"),
        "{error}"
    );
}
