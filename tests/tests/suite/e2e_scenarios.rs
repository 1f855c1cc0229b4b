//! End-to-end scenarios written once and run on both deployments, the way the
//! conformance suites run one body per backend: the embedded backends, and Redis with
//! RabbitMQ (where each also checks what only a real server shows).

use crate::e2e_embedded::dead_letter_of;
use crate::e2e_services::on_services;
use redis::AsyncCommands;
use serde_json::{Value, json};
use std::time::Duration;
use techub_host::Platform;
use techub_host::bindings::techub::platform::messaging::Priority;
use techub_host::capability::messaging::MessageStatus;
use techub_host::config::HostConfig;
use techub_tests::{
    PluginDir, cached, config, grant, init_tracing, publish_user, services, sink, unique, wait_for,
};

const LIMIT: Duration = Duration::from_secs(30);

/// Where a scenario runs.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum On {
    Embedded,
    Services,
}

impl On {
    /// The configuration of a host on this deployment over `dir`.
    fn config(self, dir: &PluginDir) -> HostConfig {
        match self {
            On::Embedded => config(dir),
            On::Services => on_services(dir),
        }
    }

    async fn start(self, config: HostConfig) -> Platform {
        Platform::start(config)
            .await
            .unwrap_or_else(|e| panic!("{}", services::rabbitmq_hint(&e)))
    }
}

/// A `user.created` event: the user is cached (on Redis: under the prefix, the domain
/// and the key, with the domain's TTL, filed under its tag), and an email request
/// follows, correlated with the event, its sender from the plugin's settings; the
/// message completes.
async fn user_created_is_cached_and_followed_by_an_email_request(on: On) {
    init_tracing();
    let plugin = unique("user-notifications");
    let dir = PluginDir::with(&[(&plugin, "user_notifications")]);
    let mut config = on.config(&dir);
    grant(&mut config, &plugin, &["users"], &["notification.*"])
        .settings
        .insert("sender".into(), "hello@techub.test".into());
    let prefix = config.host.key_prefix.clone();
    let platform = on.start(config).await;
    assert_eq!(
        platform.plugins().await.len(),
        1,
        "load errors: {:?}",
        platform.load_errors().await
    );
    let mut emails = sink(&platform, &["notification.email"]).await;

    let user = json!({ "id": "u-42", "email": "ada@example.com", "name": "Ada" });
    let id = platform
        .publish(
            "user.created",
            user.to_string().into_bytes(),
            Some(Priority::High),
        )
        .await
        .unwrap();

    let entry = cached(&platform, "users", "u-42").await;
    assert_eq!(serde_json::from_slice::<Value>(&entry).unwrap(), user);
    if on == On::Services {
        let mut redis = redis::Client::open("redis://127.0.0.1:6379")
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let key = format!("{prefix}cache:users:u-42");
        let stored: Option<Vec<u8>> = redis.get(&key).await.unwrap();
        assert_eq!(
            stored.as_deref(),
            Some(entry.as_slice()),
            "in Redis at {key}"
        );
        let ttl: i64 = redis.ttl(&key).await.unwrap();
        assert!(
            ttl > 1_700 && ttl <= 1_800,
            "the users domain's TTL (30 min) applies: {ttl}"
        );
        let tagged: Vec<String> = redis
            .smembers(format!("{prefix}cache-tag:users:user:u-42"))
            .await
            .unwrap();
        assert_eq!(tagged, vec![key], "the entry is filed under its tag");
    }

    let email = tokio::time::timeout(LIMIT, emails.next())
        .await
        .expect("an email request")
        .expect("consumer open");
    let request: Value = serde_json::from_slice(&email.envelope().payload).unwrap();
    assert_eq!(request["to"], "ada@example.com");
    assert_eq!(
        request["from"], "hello@techub.test",
        "the sender comes from the plugin's settings"
    );
    assert_eq!(
        email.envelope().correlation_id.as_deref(),
        Some(id.as_str()),
        "the follow-up is correlated with the event"
    );
    email.ack().await.unwrap();

    let status = wait_for(LIMIT, "the message to complete", || async {
        platform
            .services
            .messaging
            .tracker
            .get(&id)
            .filter(|s| *s == MessageStatus::Completed)
    })
    .await;
    assert_eq!(status, MessageStatus::Completed);
}

#[tokio::test(flavor = "multi_thread")]
async fn user_created_is_cached_and_emailed_on_the_embedded_backends() {
    user_created_is_cached_and_followed_by_an_email_request(On::Embedded).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn user_created_is_cached_in_redis_and_emailed_through_rabbitmq() {
    user_created_is_cached_and_followed_by_an_email_request(On::Services).await;
}

/// A plugin that traps is retried `max_retries` times, then dead-lettered from its
/// queue with the panic message kept, while another plugin keeps serving.
async fn trapping_plugin_is_retried_then_dead_lettered_while_others_keep_serving(on: On) {
    init_tracing();
    let (trap, users) = (unique("trap"), unique("user-notifications"));
    let dir = PluginDir::with(&[(&trap, "fixture_trap"), (&users, "user_notifications")]);
    let mut config = on.config(&dir);
    grant(&mut config, &users, &["users"], &["notification.*"]);
    let queue_prefix = config.amqp.queue_prefix.clone();
    let platform = on.start(config).await;
    assert_eq!(
        platform.plugins().await.len(),
        2,
        "load errors: {:?}",
        platform.load_errors().await
    );

    let id = platform
        .publish("fixture.trap.now", b"{}".to_vec(), Some(Priority::Normal))
        .await
        .unwrap();
    let letter = dead_letter_of(&platform, &id).await;
    assert_eq!(
        letter.envelope.attempt, 3,
        "first attempt plus max_retries = 2"
    );
    assert_eq!(letter.queue, format!("{queue_prefix}email.{trap}"));
    assert!(
        letter.reason.contains("retries exhausted") && letter.reason.contains("trapped"),
        "{}",
        letter.reason
    );
    assert!(
        letter.reason.contains("fixture trap on attempt 3"),
        "the panic message is kept: {}",
        letter.reason
    );

    publish_user(&platform, "after-trap").await;
    cached(&platform, "users", "after-trap").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_trapping_plugin_is_retried_then_dead_lettered_on_the_embedded_backends() {
    trapping_plugin_is_retried_then_dead_lettered_while_others_keep_serving(On::Embedded).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_trapping_plugin_is_retried_then_dead_lettered_on_rabbitmq() {
    trapping_plugin_is_retried_then_dead_lettered_while_others_keep_serving(On::Services).await;
}
