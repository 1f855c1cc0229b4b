//! Components written for other hosts, against the standard interfaces only (no
//! techub interface, no SDK): `wasi:keyvalue` at both versions, `wasi:config`,
//! `wasi:logging`, and the `wasmcloud:messaging/handler` export, on the embedded
//! backends and on Redis + RabbitMQ. The fixtures answer `Err(report)`, which the host
//! retries and then dead-letters with the report as the reason.

use crate::e2e_embedded::dead_letter_of;
use techub_host::Platform;
use techub_host::bindings::techub::platform::messaging::Priority;
use techub_host::capability::redis_client::Retry;
use techub_host::config::{BrokerBackend, HostConfig, KvBackend};
use techub_tests::{PluginDir, config, init_tracing, services, unique, wait_for};

const LIMIT: std::time::Duration = std::time::Duration::from_secs(30);

/// The two fixtures, one per `wasi:keyvalue` version.
const DRAFT: (&str, &str) = ("std-draft", "fixture_std_kv_draft");
const DRAFT2: (&str, &str) = ("std-draft2", "fixture_std_kv_draft2");

/// Where the platform keeps its state.
#[derive(Clone, Copy, Debug)]
enum Backends {
    Embedded,
    /// The store on Redis and the broker on RabbitMQ, under `prefix`.
    Services,
}

/// A platform running `plugins` as standard consumers of the `webhook` queue type,
/// bound to `fixture.<plugin>.#`, granted the buckets `orders` and `listing`, with two
/// settings and a secret, a 1 KiB value limit and one retry.
async fn standard_platform(
    plugins: &[(&str, &str)],
    backends: Backends,
    prefix: &str,
) -> (Platform, PluginDir) {
    init_tracing();
    let dir = PluginDir::with(plugins);
    let mut config = config(&dir);
    configure(&mut config, plugins, backends, prefix);
    let platform = Platform::start(config).await.unwrap();
    assert_eq!(
        platform.plugins().await.len(),
        plugins.len(),
        "load errors: {:?}",
        platform.load_errors().await
    );
    (platform, dir)
}

fn configure(config: &mut HostConfig, plugins: &[(&str, &str)], backends: Backends, prefix: &str) {
    config.store.max_value_bytes = 1024;
    config.host.key_prefix = prefix.to_string();
    config.queues.get_mut("webhook").unwrap().max_retries = 1;
    for (name, _) in plugins {
        let plugin = config.plugins.entry(name.to_string()).or_default();
        plugin.queue = Some("webhook".into());
        plugin.subscribe = vec![format!("fixture.{name}.#")];
        plugin.buckets = vec!["orders".into(), "listing".into()];
        plugin.publish = vec!["fixture.forwarded".into(), "rpc.*".into()];
        plugin.settings.insert("greeting".into(), "hi".into());
        plugin.settings.insert("region".into(), "eu".into());
        plugin.secrets.insert(
            "api_key".into(),
            techub_host::config::SecretRef::literal("kv-secret-1"),
        );
    }
    if let Backends::Services = backends {
        config.backends.store = KvBackend::Redis;
        config.backends.messaging = BrokerBackend::Amqp;
        config.amqp = services::amqp_config();
    }
}

/// Sends `plugin` the action `action` with `body`; the message's id.
async fn send(platform: &Platform, plugin: &str, action: &str, body: &str) -> String {
    platform
        .publish(
            &format!("fixture.{plugin}.{action}"),
            body.as_bytes().to_vec(),
            Some(Priority::Normal),
        )
        .await
        .unwrap()
}

/// The report `plugin` answered `action` with (the reason of its dead letter).
async fn report(platform: &Platform, plugin: &str, action: &str, body: &str) -> String {
    let id = send(platform, plugin, action, body).await;
    let reason = dead_letter_of(platform, &id).await.reason;
    let report = reason
        .strip_prefix("retries exhausted after 2 attempts: ")
        .unwrap_or_else(|| panic!("not the handler's error after one retry: {reason}"));
    report.to_string()
}

/// Every `store` and `batch` function, the errors, and `wasi:config`, on one version.
async fn serves_every_function(plugin: (&str, &str), backends: Backends) {
    let prefix = format!("{}:", unique("std"));
    let (platform, _dir) = standard_platform(&[plugin], backends, &prefix).await;
    let name = plugin.0;

    let roundtrip = report(&platform, name, "roundtrip", "").await;
    assert_eq!(
        roundtrip,
        "set=Ok(()) get=Ok(Some(Ok(\"hello\"))) exists=Ok(true) delete=Ok(()) gone=Ok(false) missing=Ok(None) delete_missing=Ok(())"
    );

    let errors = report(&platform, name, "errors", "2000").await;
    assert!(
        errors.contains("ungranted=Some(Error::NoSuchStore)"),
        "{errors}"
    );
    assert!(
        errors.contains("bad_key=Some(Error::Other(\"invalid-key: key must not be empty\"))"),
        "{errors}"
    );
    assert!(
        errors.contains(
            "too_large=Some(Error::Other(\"value-too-large: values are at most 1024 bytes\"))"
        ),
        "{errors}"
    );
    if name == DRAFT.0 {
        assert!(
            errors.contains("negative=Some(Error::Other(\"wrong-type: the value -4 is negative"),
            "{errors}"
        );
        assert!(
            errors.contains(
                "cursor=Some(Error::Other(\"invalid-argument: cursor 999 was not given out"
            ),
            "{errors}"
        );
    } else {
        assert!(
            errors.contains(
                "overflow=Some(Error::Other(\"overflow: the increment would overflow\"))"
            ),
            "{errors}"
        );
    }

    let batch = report(&platform, name, "batch", "").await;
    let got = if name == DRAFT.0 {
        "got=Ok([Some((\"b1\", [111, 110, 101])), Some((\"b2\", [116, 119, 111])), None])"
    } else {
        "got=Ok([(\"b1\", Some([111, 110, 101])), (\"b2\", Some([116, 119, 111])), (\"b3\", None)])"
    };
    assert!(batch.starts_with("set=Ok(())"), "{batch}");
    assert!(batch.contains(got), "{batch}");
    assert!(batch.contains("deleted=Ok(())"), "{batch}");
    let after = if name == DRAFT.0 {
        "after=Ok([None, None, None])"
    } else {
        "after=Ok([(\"b1\", None), (\"b2\", None), (\"b3\", None)])"
    };
    assert!(batch.contains(after), "{batch}");

    let config = report(&platform, name, "config", "").await;
    assert_eq!(
        config,
        "greeting=Ok(Some(\"hi\")) missing=Ok(None) all=Ok([(\"api_key\", \"[secret api_key]\"), (\"greeting\", \"hi\"), (\"region\", \"eu\")])",
        "the secret is served with the settings, and masked in the dead letter"
    );

    // wasi:logging went through techub's log: counted as its host calls.
    let metrics = platform.services.metrics.encode();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("techub_host_calls_total")
                && l.contains(&format!("plugin=\"{name}\""))
                && l.contains("interface=\"log\"")),
        "no log host calls of {name} in the metrics"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn keyvalue_draft_serves_every_function_on_the_embedded_store() {
    serves_every_function(DRAFT, Backends::Embedded).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn keyvalue_draft2_serves_every_function_on_the_embedded_store() {
    serves_every_function(DRAFT2, Backends::Embedded).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn keyvalue_draft_serves_every_function_on_redis_and_rabbitmq() {
    serves_every_function(DRAFT, Backends::Services).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn keyvalue_draft2_serves_every_function_on_redis_and_rabbitmq() {
    serves_every_function(DRAFT2, Backends::Services).await;
}

/// `list-keys` pages through 250 keys, more than one page holds.
async fn lists_every_key(backends: Backends) {
    let prefix = format!("{}:", unique("std-list"));
    let (platform, _dir) = standard_platform(&[DRAFT, DRAFT2], backends, &prefix).await;
    for (name, _) in [DRAFT, DRAFT2] {
        let listed = report(&platform, name, "list", "250").await;
        let pages: u32 = listed
            .strip_prefix("pages=")
            .and_then(|r| r.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{listed}"));
        assert!(pages >= 3, "250 keys in {pages} page(s): {listed}");
        assert!(listed.ends_with(" keys=250"), "{name}: {listed}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn list_keys_pages_through_more_keys_than_a_page_on_the_embedded_store() {
    lists_every_key(Backends::Embedded).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn list_keys_pages_through_more_keys_than_a_page_on_redis() {
    lists_every_key(Backends::Services).await;
}

/// A store value of the shared Redis, under the test's prefix.
async fn redis_get(key: &str) -> Option<String> {
    let redis = services::redis().await;
    let key = key.to_string();
    redis
        .run("GET", Retry::Idempotent, |mut c| {
            let key = key.clone();
            async move { redis::cmd("GET").arg(&key).query_async(&mut c).await }
        })
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn increment_and_cas_add_up_exactly_across_two_hosts() {
    const PER_HOST: usize = 10;
    let prefix = format!("{}:", unique("std-incr"));
    let (host_a, _dir_a) = standard_platform(&[DRAFT, DRAFT2], Backends::Services, &prefix).await;
    let (host_b, _dir_b) = standard_platform(&[DRAFT, DRAFT2], Backends::Services, &prefix).await;
    for _ in 0..PER_HOST {
        for host in [&host_a, &host_b] {
            for (name, _) in [DRAFT, DRAFT2] {
                send(host, name, "increment", "").await;
            }
        }
    }
    let expected = (2 * PER_HOST).to_string();
    for key in [
        format!("{prefix}store:{}:counter", DRAFT.0),
        format!("{prefix}store:{}:counter", DRAFT2.0),
        format!("{prefix}store:{}:cas-counter", DRAFT2.0),
    ] {
        wait_for(LIMIT, &format!("{key} to reach {expected}"), || async {
            (redis_get(&key).await.as_deref() == Some(expected.as_str())).then_some(())
        })
        .await;
    }
    // Nothing was lost on the way: no increment failed into a dead letter.
    for host in [&host_a, &host_b] {
        let letters = host
            .services
            .messaging
            .broker
            .dead_letters(0, 100)
            .await
            .unwrap();
        assert!(letters.is_empty(), "{:?}", letters[0].reason);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_shared_bucket_is_one_key_space_and_nothing_leaves_the_granted_namespaces() {
    let prefix = format!("{}:", unique("std-shared"));
    let (platform, _dir) = standard_platform(&[DRAFT, DRAFT2], Backends::Services, &prefix).await;
    send(&platform, DRAFT.0, "shared-write", "42").await;
    let key = format!("{prefix}bucket:orders:total");
    wait_for(LIMIT, "the shared write", || async {
        redis_get(&key).await.map(|_| ())
    })
    .await;
    let read = report(&platform, DRAFT2.0, "shared-read", "").await;
    assert_eq!(read, "total=Ok(Some(Ok(\"42\")))");
    report(&platform, DRAFT.0, "roundtrip", "").await;
    report(&platform, DRAFT2.0, "list", "20").await;

    // Every key the two plugins wrote is in one of their namespaces.
    let redis = services::redis().await;
    let pattern = format!("{prefix}*");
    let keys: Vec<String> = redis
        .run("KEYS", Retry::Idempotent, |mut c| {
            let pattern = pattern.clone();
            async move { redis::cmd("KEYS").arg(&pattern).query_async(&mut c).await }
        })
        .await
        .unwrap();
    let allowed = [
        format!("{prefix}store:{}:", DRAFT.0),
        format!("{prefix}store:{}:", DRAFT2.0),
        format!("{prefix}bucket:orders:"),
        format!("{prefix}bucket:listing:"),
    ];
    let plugin_keys: Vec<&String> = keys
        .iter()
        .filter(|k| {
            k[prefix.len()..].starts_with("store:") || k[prefix.len()..].starts_with("bucket:")
        })
        .collect();
    assert!(plugin_keys.len() >= 21, "{keys:?}");
    for key in plugin_keys {
        assert!(
            allowed.iter().any(|a| key.starts_with(a.as_str())),
            "{key} is outside the plugins' namespaces"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_standard_consumer_failing_is_retried_then_dead_lettered_on_rabbitmq() {
    let prefix = format!("{}:", unique("std-fail"));
    let (platform, _dir) = standard_platform(&[DRAFT], Backends::Services, &prefix).await;
    let id = send(&platform, DRAFT.0, "no-such-action", "").await;
    let letter = dead_letter_of(&platform, &id).await;
    assert_eq!(
        letter.reason,
        "retries exhausted after 2 attempts: unknown action no-such-action"
    );
    assert_eq!(letter.envelope.attempt, 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_standard_consumer_without_a_queue_in_host_toml_is_refused_saying_so() {
    init_tracing();
    let dir = PluginDir::with(&[DRAFT]);
    let config = config(&dir);
    let platform = Platform::start(config).await.unwrap();
    assert!(platform.plugins().await.is_empty());
    let errors = platform.load_errors().await;
    assert!(
        errors
            .iter()
            .any(|e| e.contains("exports wasmcloud:messaging/handler")
                && e.contains("[plugins.std-draft] has no `queue`")),
        "{errors:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_component_importing_an_interface_techub_does_not_serve_is_refused_by_name() {
    init_tracing();
    let dir = PluginDir::with(&[("unserved", "fixture_std_unserved")]);
    let mut config = config(&dir);
    let plugin = config.plugins.entry("unserved".into()).or_default();
    plugin.queue = Some("webhook".into());
    plugin.subscribe = vec!["fixture.unserved.#".into()];
    let platform = Platform::start(config).await.unwrap();
    assert!(platform.plugins().await.is_empty());
    let errors = platform.load_errors().await;
    assert!(
        errors
            .iter()
            .any(|e| e.contains("unserved.wasm") && e.contains("`example:sms/sender@1.0.0`")),
        "{errors:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wasmcloud_consumer_publishes_and_asks_under_the_plugins_grants() {
    init_tracing();
    let dir = PluginDir::with(&[DRAFT, ("answerer", "fixture_answerer")]);
    let mut config = config(&dir);
    configure(&mut config, &[DRAFT], Backends::Embedded, "techub:");
    let platform = Platform::start(config).await.unwrap();
    assert_eq!(
        platform.plugins().await.len(),
        2,
        "{:?}",
        platform.load_errors().await
    );
    let mut forwarded = techub_tests::sink(&platform, &["fixture.forwarded"]).await;

    send(&platform, DRAFT.0, "forward", "hello").await;
    let message = tokio::time::timeout(LIMIT, forwarded.next())
        .await
        .expect("the forwarded message within the limit")
        .expect("a message");
    assert_eq!(message.envelope().payload, b"hello");

    let ungranted = report(&platform, DRAFT.0, "ungranted", "x").await;
    assert!(
        ungranted.starts_with("ungranted=Err(\"not-permitted: "),
        "{ungranted}"
    );
    let asked = report(&platform, DRAFT.0, "ask", "ping").await;
    assert_eq!(asked, "reply=Ok((\"rpc.echo\", \"ping\"))");
}
