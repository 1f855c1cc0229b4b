//! The Grafana dashboard and the Prometheus rules name only metrics that `/metrics`
//! exports, and `promtool` accepts the rules, the scrape config and the exposition.

use crate::e2e_services::on_services;
use crate::operations::sample;
use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::Duration;
use techub_host::Platform;
use techub_tests::http_server::{Behaviour, TestServer};
use techub_tests::{
    artifact, init_tracing, publish_user, repo_root, tool, user_notifications, wait_for,
};

/// Every `techub_*` metric name in `text`, histogram series mapped to their family.
fn names_in(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("techub_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        names.insert(family.to_string());
        rest = &tail[end..];
    }
    names
}

/// The families an exposition declares (`# TYPE` lines).
fn exported(exposition: &str) -> BTreeSet<String> {
    exposition
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .map(str::to_string)
        .collect()
}

/// Runs `promtool check metrics` on `exposition`.
fn promtool_accepts_metrics(exposition: &str) {
    let mut child = Command::new(tool("promtool", "prometheus"))
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs");
    use std::io::Write;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(exposition.as_bytes())
        .expect("promtool reads the exposition");
    let out = child.wait_with_output().expect("promtool finishes");
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The exposition of a platform on `config` once a user message (and `extra`, a
/// routing key and payload, if any) went through and the poller ran.
async fn exposition_after_traffic(
    config: techub_host::HostConfig,
    also: &[&str],
    extra: Option<(&str, String)>,
) -> String {
    let platform = Platform::start(config).await.unwrap();
    publish_user(&platform, "dashboard").await;
    if let Some((routing_key, payload)) = extra {
        platform
            .publish(routing_key, payload.into_bytes(), None)
            .await
            .unwrap();
    }
    let mut wanted = vec!["techub_queue_acked_total", "techub_queue_depth"];
    wanted.extend_from_slice(also);
    let text = wait_for(Duration::from_secs(30), &format!("{wanted:?}"), || async {
        let text = platform.services.metrics.encode();
        wanted
            .iter()
            .all(|name| sample(&text, name, &[]).is_some())
            .then_some(text)
    })
    .await;
    platform.shutdown().await;
    text
}

#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_and_alert_rules_name_only_exported_metrics() {
    init_tracing();
    // On the embedded backends (the embedded cache's bytes and evictions), with a
    // plugin making an outbound HTTP request...
    let (embedded_dir, mut embedded) = user_notifications();
    embedded.host.metrics_poll_ms = 100;
    let provider = TestServer::http(Behaviour::Echo).await;
    std::fs::copy(
        techub_tests::fixture("fixture_caller"),
        embedded_dir.path().join("caller.wasm"),
    )
    .unwrap();
    let caller = embedded.plugins.entry("caller".into()).or_default();
    caller.subscribe = vec!["#".into()];
    caller.outbound = vec![provider.origin(false)];
    let call = format!(
        r#"{{"requests": [{{"url": "{}/"}}]}}"#,
        provider.origin(false)
    );
    let on_embedded = exposition_after_traffic(
        embedded,
        &[
            "techub_cache_bytes",
            "techub_http_requests_total",
            "techub_http_request_seconds_count",
        ],
        Some(("fixture.caller.dashboard", call)),
    )
    .await;
    // ...and on Redis and RabbitMQ (their commands, publishes and health).
    let (dir, granted) = user_notifications();
    let mut remote = on_services(&dir);
    remote.plugins = granted.plugins;
    remote.host.metrics_poll_ms = 100;
    let on_services = exposition_after_traffic(
        remote,
        &["techub_redis_command_seconds_count", "techub_backend_up"],
        None,
    )
    .await;
    std::fs::write(artifact("metrics-embedded.txt"), &on_embedded).unwrap();
    std::fs::write(artifact("metrics-services.txt"), &on_services).unwrap();
    promtool_accepts_metrics(&on_embedded);
    promtool_accepts_metrics(&on_services);

    let exported: BTreeSet<String> = exported(&on_embedded)
        .union(&exported(&on_services))
        .cloned()
        .collect();
    let ops = repo_root().join("ops");
    let dashboard = std::fs::read_to_string(ops.join("grafana/techub.json")).unwrap();
    let parsed: serde_json::Value = serde_json::from_str(&dashboard).expect("valid JSON");
    assert!(parsed["panels"].as_array().is_some_and(|p| p.len() >= 10));
    let rules = std::fs::read_to_string(ops.join("prometheus/alerts.yml")).unwrap();
    for (file, text) in [
        ("grafana/techub.json", &dashboard),
        ("prometheus/alerts.yml", &rules),
    ] {
        let used = names_in(text);
        assert!(used.len() >= 8, "{file} names few metrics: {used:?}");
        let missing: Vec<&String> = used.difference(&exported).collect();
        assert!(
            missing.is_empty(),
            "{file} names metrics /metrics does not export: {missing:?}\nexported: {exported:?}"
        );
    }

    let check = |args: &[&str]| {
        let out = Command::new(tool("promtool", "prometheus"))
            .args(args)
            .current_dir(ops.join("prometheus"))
            .output()
            .expect("promtool runs");
        assert!(
            out.status.success(),
            "promtool {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    check(&["check", "rules", "alerts.yml"]);
    check(&["check", "config", "prometheus.yml"]);
}

#[test]
fn metric_names_are_read_from_expressions() {
    let names = names_in(
        r#"histogram_quantile(0.9, rate(techub_invocation_seconds_bucket{a="b"}[5m])) / techub_x_total"#,
    );
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        ["techub_invocation_seconds", "techub_x_total"]
    );
}
