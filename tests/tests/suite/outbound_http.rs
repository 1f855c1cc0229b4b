//! Outbound HTTP (`wasi:http`): grants, address checks, quotas, TLS and secrets, each
//! driven through the `caller` fixture against real HTTP and HTTPS servers on
//! loopback. The fixture rejects each message with a report of what its requests got
//! (`#<i> <status> ...` or `#<i> error <what>`), which the tests read from the dead
//! letter.

use crate::e2e_embedded::dead_letter_of;
use serde_json::json;
use techub_host::Platform;
use techub_host::config::{HostConfig, SecretRef};
use techub_tests::http_server::{Behaviour, TestCa, TestServer};
use techub_tests::{PluginDir, config, init_tracing, unique};

/// A platform running the `caller` fixture, with `outbound` granted and `adjust`
/// applied to the configuration.
async fn caller_platform(
    outbound: &[String],
    adjust: impl FnOnce(&mut HostConfig),
) -> (Platform, PluginDir) {
    init_tracing();
    let dir = PluginDir::with(&[("caller", "fixture_caller")]);
    let mut config = config(&dir);
    config
        .plugins
        .get_mut("caller")
        .expect("its section")
        .outbound = outbound.to_vec();
    adjust(&mut config);
    let platform = Platform::start(config).await.expect("the platform starts");
    assert_eq!(
        platform.plugins().await.len(),
        1,
        "load errors: {:?}",
        platform.load_errors().await
    );
    (platform, dir)
}

/// Publishes a plan to the caller and returns its report (the dead letter's reason).
async fn call(platform: &Platform, plan: serde_json::Value) -> String {
    let id = platform
        .publish(
            &format!("fixture.caller.{}", unique("plan")),
            plan.to_string().into_bytes(),
            None,
        )
        .await
        .expect("publish");
    dead_letter_of(platform, &id).await.reason
}

fn get(url: String) -> serde_json::Value {
    json!({ "requests": [{ "url": url }] })
}

/// The report of one GET to a fresh `behaviour` server, from the caller granted that
/// server and given the limits `limits` sets.
async fn one_get(
    behaviour: Behaviour,
    limits: impl FnOnce(&mut techub_host::config::LimitOverrides),
) -> String {
    let server = TestServer::http(behaviour).await;
    let (platform, _dir) = caller_platform(&[server.origin(false)], |c| {
        limits(&mut c.plugins.get_mut("caller").expect("caller").limits)
    })
    .await;
    call(&platform, get(format!("{}/", server.origin(false)))).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_granted_request_reaches_the_server_and_an_ungranted_one_is_denied() {
    let granted = TestServer::http(Behaviour::Echo).await;
    let other = TestServer::http(Behaviour::Echo).await;
    let (platform, _dir) = caller_platform(&[granted.origin(false)], |_| {}).await;
    let report = call(
        &platform,
        json!({ "requests": [
            { "method": "POST", "url": format!("{}/v1/send?to=ada", granted.origin(false)),
              "headers": { "x-test": "yes", "content-type": "text/plain" }, "body": "hello" },
            { "url": format!("{}/", other.origin(false)) },
            { "url": format!("{}/", granted.origin(false)), "headers": { "host": "evil.example" } },
        ]}),
    )
    .await;
    // The Host header is the host's: a guest cannot point a granted connection elsewhere.
    assert!(
        report.contains("#2 error invalid HTTP request: header host:")
            && report.contains("Forbidden"),
        "{report}"
    );
    assert!(
        report.contains("#0 200 25 bytes ok POST /v1/send?to=ada 5"),
        "{report}"
    );
    assert!(
        report.contains("#1 error HTTP request denied by the host: HttpRequestDenied"),
        "{report}"
    );
    let seen = granted.received();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].body, b"hello");
    assert_eq!(seen[0].header("x-test"), Some("yes"));
    assert_eq!(
        seen[0].header("host"),
        Some(granted.addr.to_string().as_str())
    );
    assert!(
        other.received().is_empty(),
        "an ungranted server saw a request"
    );
    assert_eq!(
        other.connections(),
        0,
        "an ungranted server saw a connection"
    );
    let metrics = platform.services.metrics.encode();
    let line = format!(
        "techub_http_requests_total{{plugin=\"caller\",origin=\"{}\",outcome=\"ok\"}} 1",
        granted.origin(false)
    );
    assert!(metrics.contains(&line), "{line} missing from:\n{metrics}");
    assert!(
        metrics.contains(
            "techub_http_requests_total{plugin=\"caller\",origin=\"(none)\",outcome=\"denied\"} 1"
        ),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_grant_added_by_a_reload_is_honoured_and_a_removed_one_refused() {
    let server = TestServer::http(Behaviour::Echo).await;
    let (platform, _dir) = caller_platform(&[], |_| {}).await;
    let url = format!("{}/", server.origin(false));
    let report = call(&platform, get(url.clone())).await;
    assert!(report.contains("HttpRequestDenied"), "{report}");

    let mut granted = platform.config().as_ref().clone();
    granted.plugins.get_mut("caller").expect("caller").outbound = vec![server.origin(false)];
    platform
        .reload_config(granted.clone())
        .await
        .expect("reload");
    let report = call(&platform, get(url.clone())).await;
    assert!(report.contains("#0 200"), "{report}");

    granted.plugins.get_mut("caller").expect("caller").outbound = vec![];
    platform.reload_config(granted).await.expect("reload");
    let report = call(&platform, get(url)).await;
    assert!(report.contains("HttpRequestDenied"), "{report}");
    assert_eq!(server.received().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn non_public_addresses_are_refused_in_every_form_unless_a_grant_names_them() {
    let server = TestServer::http(Behaviour::Echo).await;
    let port = server.addr.port();
    // Any host on any port, and a name: neither names an address.
    let (platform, _dir) = caller_platform(
        &["http://*:*".to_string(), format!("http://localhost:{port}")],
        |c| c.limits.max_http_requests = 100,
    )
    .await;
    let forms = [
        format!("http://localhost:{port}/"),
        format!("http://127.0.0.1:{port}/"),
        format!("http://2130706433:{port}/"),
        format!("http://0x7f000001:{port}/"),
        format!("http://0177.0.0.1:{port}/"),
        format!("http://127.1:{port}/"),
        format!("http://[::ffff:127.0.0.1]:{port}/"),
        format!("http://[::1]:{port}/"),
        format!("http://0.0.0.0:{port}/"),
        "http://169.254.169.254/latest/meta-data/".to_string(),
        "http://[::ffff:169.254.169.254]/".to_string(),
        "http://10.0.0.1/".to_string(),
        "http://192.168.1.1/".to_string(),
        "http://172.16.0.1/".to_string(),
        "http://[fd00::1]/".to_string(),
    ];
    let plan = json!({
        "requests": forms.iter().map(|url| json!({ "url": url })).collect::<Vec<_>>()
    });
    let report = call(&platform, plan).await;
    for (i, url) in forms.iter().enumerate() {
        let line = report
            .trim_start_matches("rejected: ")
            .lines()
            .find(|l| l.starts_with(&format!("#{i} ")))
            .unwrap_or_else(|| panic!("no report for {url}: {report}"));
        assert!(
            line.contains("DestinationIpProhibited"),
            "{url} was not refused: {line}"
        );
    }
    assert!(server.received().is_empty(), "{:?}", server.received());

    // A grant that names the address, or a range holding it, lets it through.
    let mut named = platform.config().as_ref().clone();
    named.plugins.get_mut("caller").expect("caller").outbound = vec![
        format!("http://127.0.0.1:{port}"),
        "http://127.0.0.0/8:*".to_string(),
        "http://[::ffff:127.0.0.1]:*".to_string(),
    ];
    platform.reload_config(named).await.expect("reload");
    let report = call(
        &platform,
        json!({ "requests": [
            { "url": format!("http://127.0.0.1:{port}/a") },
            { "url": format!("http://127.9.9.9:{port}/b") },
            { "url": format!("http://[::ffff:127.0.0.1]:{port}/c") },
        ]}),
    )
    .await;
    assert!(report.contains("#0 200"), "{report}");
    // 127.9.9.9 is granted but nothing listens there.
    assert!(
        report.contains("#1 error HTTP connection failed"),
        "{report}"
    );
    assert!(report.contains("#2 200"), "{report}");
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_past_the_per_message_quota_are_denied_and_counted() {
    let server = TestServer::http(Behaviour::Echo).await;
    let (platform, _dir) = caller_platform(&[server.origin(false)], |c| {
        c.plugins
            .get_mut("caller")
            .expect("caller")
            .limits
            .max_http_requests = Some(2);
    })
    .await;
    let url = format!("{}/", server.origin(false));
    let report = call(
        &platform,
        json!({ "requests": [{ "url": url }, { "url": url }, { "url": url }] }),
    )
    .await;
    assert!(report.contains("#1 200"), "{report}");
    assert!(report.contains("#2 error HTTP request denied"), "{report}");
    assert_eq!(server.received().len(), 2);
    let metrics = platform.services.metrics.encode();
    assert!(
        metrics
            .contains("techub_quota_violations_total{plugin=\"caller\",kind=\"http_requests\"} 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_endless_body_stops_at_the_response_limit() {
    let report = one_get(Behaviour::Endless, |l| {
        l.max_http_response_bytes = Some(1024 * 1024)
    })
    .await;
    assert!(
        report.contains(
            "#0 error HTTP body too large: HTTP response body size exceeds limit: 1048576 bytes"
        ),
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_that_never_answers_hits_the_first_byte_timeout() {
    let report = one_get(Behaviour::Silent, |l| {
        l.http_first_byte_timeout_ms = Some(300)
    })
    .await;
    assert!(
        report.contains("#0 error HTTP request timed out: HttpResponseTimeout"),
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_body_hits_the_between_bytes_timeout() {
    let report = one_get(Behaviour::StallBody, |l| {
        l.http_between_bytes_timeout_ms = Some(300)
    })
    .await;
    assert!(
        report.contains("#0 error HTTP request timed out: connection read timeout"),
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dribbling_server_cannot_hold_an_instance_past_its_timeout() {
    let report = one_get(Behaviour::Dribble, |l| {
        l.timeout_ms = Some(800);
        // Waiting on the network is not guest CPU.
        l.cpu_ms = Some(50);
    })
    .await;
    assert!(report.contains("timeout of 800 ms exceeded"), "{report}");
}

#[tokio::test(flavor = "multi_thread")]
async fn waiting_on_the_network_counts_against_the_timeout_not_the_cpu_limit() {
    let server = TestServer::http(Behaviour::Slow).await;
    let (platform, _dir) = caller_platform(&[server.origin(false)], |c| {
        let limits = &mut c.plugins.get_mut("caller").expect("caller").limits;
        limits.cpu_ms = Some(20);
        limits.timeout_ms = Some(5_000);
    })
    .await;
    // Two answers a second late each: 2 s of waiting, a hundred times the CPU limit.
    let url = format!("{}/", server.origin(false));
    let report = call(
        &platform,
        json!({ "requests": [{ "url": url }, { "url": url }] }),
    )
    .await;
    assert!(
        report.contains("#0 200") && report.contains("#1 200"),
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_body_over_the_limit_is_refused() {
    let server = TestServer::http(Behaviour::Echo).await;
    let (platform, _dir) = caller_platform(&[server.origin(false)], |c| {
        c.plugins
            .get_mut("caller")
            .expect("caller")
            .limits
            .max_http_request_bytes = Some(1000);
    })
    .await;
    let report = call(
        &platform,
        json!({ "requests": [{ "method": "POST", "url": format!("{}/", server.origin(false)),
                               "body": "x", "body_repeat": 5000 }] }),
    )
    .await;
    assert!(
        report.contains("HttpRequestBodySize(Some(1000))"),
        "{report}"
    );
    assert!(
        server.received().iter().all(|r| r.body.len() <= 1000),
        "the server received more than the limit"
    );
}

/// The SDK frames what it sends by length: a request without a body has none (not an
/// empty chunked stream the host's client must wait on), a body goes with its
/// `Content-Length`, and one larger than the host buffers before `handle` still
/// arrives whole (or, refused, fails with the refusal).
#[tokio::test(flavor = "multi_thread")]
async fn requests_are_framed_by_their_length_not_chunked() {
    const LARGE: usize = 3 * 1024 * 1024;
    let server = TestServer::http(Behaviour::Echo).await;
    let (platform, _dir) = caller_platform(&[server.origin(false)], |c| {
        c.plugins
            .get_mut("caller")
            .expect("caller")
            .limits
            .max_http_request_bytes = Some(4 * 1024 * 1024);
    })
    .await;
    let url = format!("{}/", server.origin(false));
    let report = call(
        &platform,
        json!({ "requests": [
            { "url": url },
            { "method": "POST", "url": url, "body": "hello" },
            { "method": "PUT", "url": url, "body": "x", "body_repeat": LARGE },
            // Refused while the SDK still writes its body: the refusal is the error.
            { "method": "PUT", "url": "http://127.0.0.1:9/", "body": "x", "body_repeat": LARGE },
        ]}),
    )
    .await;
    assert!(
        report.contains("#0 200") && report.contains("#1 200") && report.contains("#2 200"),
        "{report}"
    );
    assert!(
        report.contains("#3 error HTTP request denied by the host"),
        "{report}"
    );
    let seen = server.received();
    assert_eq!(seen.len(), 3, "{report}");
    let framing = |i: usize| {
        (
            seen[i].header("content-length").map(str::to_string),
            seen[i].header("transfer-encoding").map(str::to_string),
            seen[i].body.len(),
        )
    };
    assert_eq!(framing(0), (None, None, 0), "a GET without a body");
    assert_eq!(framing(1), (Some("5".into()), None, 5), "a small body");
    assert_eq!(
        framing(2),
        (Some(LARGE.to_string()), None, LARGE),
        "a body larger than the host's buffer"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_huge_response_header_is_refused() {
    let report = one_get(Behaviour::HugeHeader, |_| {}).await;
    assert!(
        report.contains("#0 error HTTP body too large: HttpResponseHeaderSectionSize"),
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_past_the_in_flight_limit_wait_then_fail_with_the_connection_limit() {
    let server = TestServer::http(Behaviour::Silent).await;
    let (platform, _dir) = caller_platform(&[server.origin(false)], |c| {
        let limits = &mut c.plugins.get_mut("caller").expect("caller").limits;
        limits.max_http_in_flight = Some(1);
        limits.http_connect_timeout_ms = Some(200);
        limits.http_first_byte_timeout_ms = Some(1_500);
    })
    .await;
    let url = format!("{}/", server.origin(false));
    let (first, second) =
        tokio::join!(call(&platform, get(url.clone())), call(&platform, get(url)));
    let both = format!("{first}\n{second}");
    assert!(both.contains("ConnectionLimitReached"), "{both}");
    assert!(both.contains("HttpResponseTimeout"), "{both}");
}

#[tokio::test(flavor = "multi_thread")]
async fn https_works_with_the_ca_file_and_a_self_signed_server_is_refused() {
    let ca = TestCa::new();
    let trusted = TestServer::https(Behaviour::Echo, &ca).await;
    let untrusted = TestServer::https_self_signed(Behaviour::Echo).await;
    let (platform, _dir) = caller_platform(&[trusted.origin(true), untrusted.origin(true)], |c| {
        c.http.ca_file = Some(ca.ca_file())
    })
    .await;
    let report = call(
        &platform,
        json!({ "requests": [
            { "url": format!("{}/secure", trusted.origin(true)) },
            { "url": format!("{}/secure", untrusted.origin(true)) },
        ]}),
    )
    .await;
    assert!(
        report.contains("#0 200 16 bytes ok GET /secure 0"),
        "{report}"
    );
    assert!(
        report.contains("#1 error TLS failed: TlsCertificateError"),
        "{report}"
    );
    assert!(untrusted.received().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn without_the_ca_file_the_test_ca_is_not_trusted() {
    let ca = TestCa::new();
    let server = TestServer::https(Behaviour::Echo, &ca).await;
    let (platform, _dir) = caller_platform(&[server.origin(true)], |_| {}).await;
    let report = call(&platform, get(format!("{}/", server.origin(true)))).await;
    assert!(
        report.contains("#0 error TLS failed: TlsCertificateError"),
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_are_pooled_across_messages() {
    let server = TestServer::http(Behaviour::Echo).await;
    let (platform, _dir) = caller_platform(&[server.origin(false)], |_| {}).await;
    let url = format!("{}/", server.origin(false));
    for _ in 0..5 {
        let report = call(
            &platform,
            json!({ "requests": [{ "url": url }, { "url": url }] }),
        )
        .await;
        assert!(report.contains("#1 200"), "{report}");
    }
    assert_eq!(server.received().len(), 10);
    assert_eq!(
        server.connections(),
        1,
        "a keep-alive server got a connection per request"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_secret_reaches_its_plugin_and_a_missing_one_names_its_field() {
    let server = TestServer::http(Behaviour::Echo).await;
    let variable = format!(
        "TECHUB_TEST_SECRET_{}",
        unique("v").replace('-', "_").to_uppercase()
    );
    let value = unique("s3cret");
    // SAFETY-free: the variable is this test's own; nothing else reads it.
    unsafe_set_env(&variable, &value);
    let (platform, _dir) = caller_platform(&[server.origin(false)], |c| {
        c.plugins.get_mut("caller").expect("caller").secrets.insert(
            "api_key".to_string(),
            SecretRef {
                env: Some(variable.clone()),
                ..Default::default()
            },
        );
        c.read_secrets().expect("the secret is set");
    })
    .await;
    let report = call(
        &platform,
        json!({ "requests": [{ "url": format!("{}/", server.origin(false)),
                               "headers": { "authorization": "{secret:api_key}" } }] }),
    )
    .await;
    assert!(report.contains("#0 200"), "{report}");
    assert_eq!(
        server.received()[0].header("authorization"),
        Some(value.as_str())
    );
    let printed =
        toml::to_string(&techub_host::config::redacted(&platform.config())).expect("toml");
    assert!(!printed.contains(&value), "{printed}");
    assert!(printed.contains(&variable), "{printed}");
    assert!(!format!("{:?}", platform.config()).contains(&value));
    assert!(!platform.services.metrics.encode().contains(&value));

    // A plugin that logs, prints and fails with its own secret: the host masks it.
    let report = call(&platform, json!({ "requests": [], "leak": "api_key" })).await;
    assert_eq!(report, "rejected: leaked [secret api_key]");

    let missing = HostConfig::parse(&format!(
        "[plugins.caller.secrets]\napi_key = {{ env = \"{variable}_MISSING\" }}\n"
    ))
    .unwrap_err()
    .to_string();
    assert!(
        missing.contains("plugins.caller.secrets.api_key"),
        "{missing}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_secret_appears_in_no_log_page_metric_check_or_dead_letter_of_the_real_host() {
    use crate::binary::{Host, free_admin_addr, ready};
    use techub_host::admin::client;
    let server = TestServer::http(Behaviour::Echo).await;
    let dir = PluginDir::with(&[("caller", "fixture_caller")]);
    let admin = free_admin_addr();
    let variable = "TECHUB_TEST_MAIL_KEY";
    let value = unique("k3y");
    let config = dir.path().join("host.toml");
    std::fs::write(
        &config,
        format!(
            "[host]\nplugins_dir = {:?}\nadmin_addr = \"{admin}\"\n\
             [plugins.caller]\nsubscribe = [\"#\"]\noutbound = [\"{}\"]\n\
             [plugins.caller.secrets]\napi_key = {{ env = \"{variable}\" }}\n",
            dir.path(),
            server.origin(false)
        ),
    )
    .expect("write host.toml");
    let log_file = dir.path().join("host.log");
    let host = Host::start_with_env(
        &config,
        &[(variable, &value), ("RUST_LOG", "info,techub_host=debug")],
        Some(&log_file),
    );
    ready(&admin).await;
    let publish = |plan: serde_json::Value| {
        let admin = admin.clone();
        async move {
            let (status, body) = client::publish(
                &admin,
                None,
                "fixture.caller.secret",
                plan.to_string().into_bytes(),
                "default",
            )
            .await
            .expect("publish");
            assert!((200..300).contains(&status), "{status} {body}");
        }
    };
    // Used as it should be (a header to the provider), and leaked by the plugin's own
    // log line, output and failure reason.
    publish(
        json!({ "requests": [{ "url": format!("{}/", server.origin(false)),
                                   "headers": { "authorization": "{secret:api_key}" } }] }),
    )
    .await;
    publish(json!({ "requests": [], "leak": "api_key" })).await;
    let letters = techub_tests::wait_for(
        std::time::Duration::from_secs(30),
        "two dead letters",
        || async {
            let (_, body) = client::get(&admin, None, "/dead-letters").await.ok()?;
            (body.matches("\"id\"").count() >= 2).then_some(body)
        },
    )
    .await;
    assert_eq!(
        server.received()[0].header("authorization"),
        Some(value.as_str())
    );
    let mut seen = vec![("dead letters", letters)];
    for path in ["/plugins", "/", "/metrics", "/messages/x"] {
        let (_, body) = client::get(&admin, None, path).await.expect(path);
        seen.push((path, body));
    }
    let check = std::process::Command::new(techub_tests::host_binary())
        .args(["check", "--config"])
        .arg(&config)
        .env(variable, &value)
        .output()
        .expect("check runs");
    seen.push(("check", String::from_utf8_lossy(&check.stdout).into_owned()));
    seen.push((
        "check stderr",
        String::from_utf8_lossy(&check.stderr).into_owned(),
    ));
    host.terminate();
    let (status, stdout) = host.wait(std::time::Duration::from_secs(30));
    assert!(status.success());
    let log = std::fs::read_to_string(&log_file).expect("the host's log") + &stdout;
    assert!(
        log.contains("[secret api_key]"),
        "the leak was not logged masked: {log}"
    );
    seen.push(("log", log));
    for (place, text) in &seen {
        assert!(
            !text.contains(&value),
            "the secret's value is in {place}: {text}"
        );
    }
}

/// Sets an environment variable for this process (`std::env::set_var` is `unsafe` in
/// edition 2024 because other threads may read the environment; the variables set here
/// are unique to their test).
fn unsafe_set_env(name: &str, value: &str) {
    // SAFETY: a unique variable no other thread reads or writes.
    #[expect(unsafe_code, reason = "setting a test-unique environment variable")]
    unsafe {
        std::env::set_var(name, value)
    };
}

/// Four hostile servers at once (an endless body, one that never answers, a body that
/// stalls, one that dribbles a byte per 100 ms): each request ends with its typed
/// error within the plugin's limits, and the host stops reading the endless body at
/// the limit (what it could hold is at most what it read).
#[tokio::test(flavor = "multi_thread")]
async fn hostile_servers_each_end_with_their_typed_error_and_are_not_read_past_the_limit() {
    const RESPONSE_LIMIT: u64 = 1024 * 1024;
    let endless = TestServer::http(Behaviour::Endless).await;
    let silent = TestServer::http(Behaviour::Silent).await;
    let stalled = TestServer::http(Behaviour::StallBody).await;
    let dribble = TestServer::http(Behaviour::Dribble).await;
    let servers = [&endless, &silent, &stalled, &dribble];
    let origins: Vec<String> = servers.iter().map(|s| s.origin(false)).collect();
    let (platform, _dir) = caller_platform(&origins, |c| {
        let limits = &mut c.plugins.get_mut("caller").expect("caller").limits;
        limits.max_http_response_bytes = Some(RESPONSE_LIMIT);
        // The first-byte wait runs from the request's start, after at most the
        // connect timeout.
        limits.http_connect_timeout_ms = Some(300);
        limits.http_first_byte_timeout_ms = Some(400);
        limits.http_between_bytes_timeout_ms = Some(400);
        limits.timeout_ms = Some(1500);
    })
    .await;
    let reports = futures::future::join_all(
        origins
            .iter()
            .map(|origin| call(&platform, get(format!("{origin}/")))),
    )
    .await;
    let expected = [
        "#0 error HTTP body too large",
        "#0 error HTTP request timed out: HttpResponseTimeout",
        "#0 error HTTP request timed out: connection read timeout",
        // A server that keeps every other limit is held to the message's timeout.
        "timeout of 1500 ms exceeded",
    ];
    for (report, expected) in reports.iter().zip(expected) {
        assert!(
            report.contains(expected),
            "expected {expected:?} in {report}"
        );
    }
    // The endless server stops being read: what it pushed is the limit plus what
    // loopback socket buffers hold, not the 2 GiB it would send, and no more later.
    let streamed = endless.bytes_streamed();
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(
        endless.bytes_streamed(),
        streamed,
        "the host kept reading the endless body after the request ended"
    );
    assert!(
        streamed <= RESPONSE_LIMIT + 16 * 1024 * 1024,
        "the endless server pushed {streamed} bytes for a {RESPONSE_LIMIT}-byte limit"
    );
}

/// A plugin whose requests wait on a server that never answers holds instances, not
/// the host: while four such requests are in flight, another plugin's messages are
/// handled.
#[tokio::test(flavor = "multi_thread")]
async fn other_plugins_keep_serving_while_a_plugin_waits_on_silent_servers() {
    use techub_host::capability::messaging::MessageStatus;
    init_tracing();
    let silent = TestServer::http(Behaviour::Silent).await;
    let dir = PluginDir::with(&[("caller", "fixture_caller"), ("quiet", "fixture_noop")]);
    let mut config = config(&dir);
    let caller = config.plugins.get_mut("caller").expect("its section");
    caller.outbound = vec![silent.origin(false)];
    caller.limits.http_first_byte_timeout_ms = Some(20_000);
    caller.limits.timeout_ms = Some(25_000);
    let platform = Platform::start(config).await.expect("the platform starts");
    assert_eq!(
        platform.plugins().await.len(),
        2,
        "{:?}",
        platform.load_errors().await
    );
    for _ in 0..4 {
        platform
            .publish(
                &format!("fixture.caller.{}", unique("held")),
                get(format!("{}/", silent.origin(false)))
                    .to_string()
                    .into_bytes(),
                None,
            )
            .await
            .expect("publish");
    }
    techub_tests::wait_for(
        std::time::Duration::from_secs(10),
        "the four requests to reach the silent server",
        || async { (silent.received().len() == 4).then_some(()) },
    )
    .await;
    let mut quiet = Vec::new();
    for i in 0..20 {
        let id = platform
            .publish(&format!("fixture.noop.{i}"), b"{}".to_vec(), None)
            .await
            .expect("publish");
        quiet.push(id);
    }
    techub_tests::wait_for(
        std::time::Duration::from_secs(15),
        "the other plugin's 20 messages to complete while the four requests are held",
        || async {
            quiet
                .iter()
                .all(|id| {
                    platform.services.messaging.tracker.get(id) == Some(MessageStatus::Completed)
                })
                .then_some(())
        },
    )
    .await;
    let letters = platform
        .services
        .messaging
        .broker
        .dead_letters(0, 10_000)
        .await
        .expect("dead letters");
    assert!(
        letters.is_empty() && silent.received().len() == 4,
        "the held requests ended before the other plugin was served: the test shows nothing"
    );
}
