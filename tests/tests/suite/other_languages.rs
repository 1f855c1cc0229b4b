//! The welcome flow in Python (`plugins/python/welcome-py`, componentize-py) and in
//! JavaScript (`plugins/js/welcome-js`, componentize-js), against the same
//! `techub:platform/plugin` world as the Rust examples: `user.created` is cached,
//! counted in the store and answered with a `notification.email`; a malformed payload
//! is rejected; on the embedded backends and on Redis + RabbitMQ.

use crate::e2e_embedded::dead_letter_of;
use techub_host::Platform;
use techub_host::bindings::techub::platform::messaging::Priority;
use techub_host::config::{BrokerBackend, KvBackend};
use techub_tests::{
    PluginDir, cached, config, grant, init_tracing, publish_user, services, sink, unique,
};

const LIMIT: std::time::Duration = std::time::Duration::from_secs(30);

/// The plugins, by name and component (built by `cargo xtask build-plugins`).
const PYTHON: (&str, &str) = ("welcome-py", "welcome_py");
const JAVASCRIPT: (&str, &str) = ("welcome-js", "welcome_js");

async fn platform_with(plugin: (&str, &str), on_services: bool) -> (Platform, PluginDir) {
    init_tracing();
    let dir = PluginDir::with(&[plugin]);
    let mut config = config(&dir);
    let granted = grant(&mut config, plugin.0, &["users"], &["notification.email"]);
    granted.subscribe = vec!["user.created".into()];
    granted
        .settings
        .insert("sender".into(), "welcome@techub.example".into());
    if on_services {
        config.host.key_prefix = format!("{}:", unique("lang"));
        config.backends.cache = KvBackend::Redis;
        config.backends.store = KvBackend::Redis;
        config.backends.messaging = BrokerBackend::Amqp;
        config.amqp = services::amqp_config();
    }
    let platform = Platform::start(config).await.unwrap();
    assert_eq!(
        platform.plugins().await.len(),
        1,
        "load errors: {:?}",
        platform.load_errors().await
    );
    (platform, dir)
}

/// `user.created` through `plugin`: cached, counted, a welcome email requested with
/// the event's correlation; then a malformed payload rejected to the dead letters.
async fn welcomes_a_new_user(plugin: (&str, &str), on_services: bool) {
    let (platform, _dir) = platform_with(plugin, on_services).await;
    let mut emails = sink(&platform, &["notification.email"]).await;
    let user = unique("u");
    let id = publish_user(&platform, &user).await;

    let profile: serde_json::Value =
        serde_json::from_slice(&cached(&platform, "users", &user).await).unwrap();
    assert_eq!(profile["email"], format!("{user}@example.com"));

    let email = tokio::time::timeout(LIMIT, emails.next())
        .await
        .expect("notification.email within the limit")
        .expect("an event");
    let envelope = email.envelope();
    assert_eq!(envelope.correlation_id.as_deref(), Some(id.as_str()));
    let request: serde_json::Value = serde_json::from_slice(&envelope.payload).unwrap();
    assert_eq!(request["template"], "welcome");
    assert_eq!(request["to"], format!("{user}@example.com"));
    assert_eq!(request["from"], "welcome@techub.example");
    assert_eq!(request["user_id"], user.as_str());

    let counter = format!(
        "{}store:{}:welcomed",
        platform.config().host.key_prefix,
        plugin.0
    );
    let welcomed = platform.services.store.get(&counter).await.unwrap();
    assert_eq!(welcomed.as_deref(), Some(&b"1"[..]), "{counter}");

    let bad = platform
        .publish(
            "user.created",
            br#"{"id":"","email":"nobody"}"#.to_vec(),
            Some(Priority::Normal),
        )
        .await
        .unwrap();
    let letter = dead_letter_of(&platform, &bad).await;
    assert_eq!(
        letter.reason,
        "rejected: user '' has no usable id or email".replace(
            "''",
            if plugin.0 == JAVASCRIPT.0 {
                "\"\""
            } else {
                "''"
            },
        )
    );
    assert_eq!(letter.envelope.attempt, 1, "a rejection is not retried");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_python_plugin_welcomes_a_new_user_on_the_embedded_backends() {
    welcomes_a_new_user(PYTHON, false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_python_plugin_welcomes_a_new_user_on_redis_and_rabbitmq() {
    welcomes_a_new_user(PYTHON, true).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_javascript_plugin_welcomes_a_new_user_on_the_embedded_backends() {
    welcomes_a_new_user(JAVASCRIPT, false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_javascript_plugin_welcomes_a_new_user_on_redis_and_rabbitmq() {
    welcomes_a_new_user(JAVASCRIPT, true).await;
}
