//! End to end on the real services: the example plugin run by a host configured for
//! Redis and RabbitMQ, and what happens when a service is missing or goes away.

use crate::e2e_embedded::dead_letter_of;
use redis::AsyncCommands;
use serde_json::{Value, json};
use std::time::Duration;
use techub_host::Platform;
use techub_host::bindings::techub::platform::messaging::Priority;
use techub_host::config::{BrokerBackend, HostConfig, KvBackend};
use techub_tests::{
    OwnRedis, PluginDir, config, grant, init_tracing, publish_user, services, sink, unique,
    wait_for,
};

const LIMIT: Duration = Duration::from_secs(20);

/// A configuration on the shared Redis and RabbitMQ, isolated by a unique key prefix
/// and unique exchange names.
fn on_services(dir: &PluginDir) -> HostConfig {
    let mut config = config(dir);
    config.backends.cache = KvBackend::Redis;
    config.backends.store = KvBackend::Redis;
    config.backends.lock = KvBackend::Redis;
    config.backends.messaging = BrokerBackend::Amqp;
    config.host.key_prefix = format!("{}:", unique("techub-test"));
    config.amqp = services::amqp_config();
    config
}

async fn start(config: HostConfig) -> Platform {
    Platform::start(config)
        .await
        .unwrap_or_else(|e| panic!("{}", services::rabbitmq_hint(&e)))
}

#[tokio::test(flavor = "multi_thread")]
async fn example_plugin_handles_rabbitmq_messages_and_writes_redis() {
    init_tracing();
    let plugin = unique("user-notifications");
    let dir = PluginDir::with(&[(&plugin, "user_notifications")]);
    let mut config = on_services(&dir);
    grant(&mut config, &plugin, &["users"], &["notification.*"]);
    let prefix = config.host.key_prefix.clone();
    let platform = start(config).await;
    assert_eq!(
        platform.plugins.len(),
        1,
        "load errors: {:?}",
        platform.load_errors
    );

    let mut emails = sink(&platform, &["notification.email"]).await;

    let user = json!({ "id": "u-7", "email": "grace@example.com", "name": "Grace" });
    let id = platform
        .publish(
            "user.created",
            user.to_string().into_bytes(),
            Priority::High,
        )
        .await
        .unwrap();

    // The cache write is in Redis, under the prefix, the domain and the key.
    let mut redis = redis::Client::open("redis://127.0.0.1:6379")
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let key = format!("{prefix}cache:users:u-7");
    let cached: Vec<u8> = wait_for(LIMIT, "the cache entry in Redis", || {
        let (mut redis, key) = (redis.clone(), key.clone());
        async move { redis.get::<_, Option<Vec<u8>>>(&key).await.unwrap() }
    })
    .await;
    assert_eq!(serde_json::from_slice::<Value>(&cached).unwrap(), user);
    let ttl: i64 = redis.ttl(&key).await.unwrap();
    assert!(
        ttl > 1_700 && ttl <= 1_800,
        "the users domain's TTL (30 min) applies: {ttl}"
    );
    let tagged: Vec<String> = redis
        .smembers(format!("{prefix}cache-tag:users:user:u-7"))
        .await
        .unwrap();
    assert_eq!(
        tagged,
        vec![key.clone()],
        "the entry is filed under its tag"
    );

    // The follow-up publish arrives on a bound RabbitMQ queue, correlated.
    let email = tokio::time::timeout(LIMIT, emails.next())
        .await
        .expect("an email request")
        .expect("consumer open");
    let request: Value = serde_json::from_slice(&email.envelope().payload).unwrap();
    assert_eq!(request["to"], "grace@example.com");
    assert_eq!(
        email.envelope().correlation_id.as_deref(),
        Some(id.as_str())
    );
    email.ack().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn trapping_plugin_on_rabbitmq_is_retried_then_dead_lettered() {
    init_tracing();
    let plugin = unique("trap");
    let dir = PluginDir::with(&[(&plugin, "fixture_trap")]);
    let platform = start(on_services(&dir)).await;
    let id = platform
        .publish("fixture.trap.now", b"{}".to_vec(), Priority::Normal)
        .await
        .unwrap();
    let letter = dead_letter_of(&platform, &id).await;
    assert_eq!(letter.envelope.attempt, 3);
    assert_eq!(letter.queue, format!("email.{plugin}"));
    assert!(
        letter.reason.contains("retries exhausted")
            && letter.reason.contains("fixture trap on attempt 3"),
        "{}",
        letter.reason
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn unreachable_services_at_start_are_named() {
    init_tracing();
    let dir = PluginDir::with(&[]);
    let mut config = config(&dir);
    config.backends.store = KvBackend::Redis;
    config.redis.url = "redis://127.0.0.1:1".into();
    config.redis.connection_timeout_ms = 2_000;
    let error = format!(
        "{:#}",
        Platform::start(config)
            .await
            .err()
            .expect("no Redis, no start")
    );
    assert!(
        error.contains("could not connect to Redis at redis://127.0.0.1:1"),
        "{error}"
    );

    let mut config = techub_tests::config(&dir);
    config.backends.messaging = BrokerBackend::Amqp;
    config.amqp.url = "amqp://guest:secret@127.0.0.1:1/%2f".into();
    config.amqp.connection_timeout_ms = 2_000;
    let error = format!(
        "{:#}",
        Platform::start(config)
            .await
            .err()
            .expect("no RabbitMQ, no start")
    );
    assert!(
        error.contains("could not connect to RabbitMQ at amqp://guest:***@127.0.0.1:1/%2f"),
        "{error}"
    );
    assert!(
        !error.contains("secret"),
        "the password is not printed: {error}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_dropping_at_run_time_is_a_typed_retry_not_a_hang() {
    init_tracing();
    let mut redis = OwnRedis::start().await;
    let plugin = unique("user-notifications");
    let dir = PluginDir::with(&[(&plugin, "user_notifications")]);
    let mut config = config(&dir);
    grant(&mut config, &plugin, &["users"], &["notification.*"]);
    config.backends.cache = KvBackend::Redis;
    config.redis.url = redis.url();
    config.redis.command_timeout_ms = 500;
    config.redis.connection_timeout_ms = 500;
    config.redis.max_retries = 1;
    config.queues.get_mut("notification").unwrap().max_retries = 1;
    let platform = Platform::start(config).await.unwrap();

    redis.kill();
    let user = json!({ "id": "u-9", "email": "a@b.c", "name": "A" });
    let id = platform
        .publish(
            "user.created",
            user.to_string().into_bytes(),
            Priority::Normal,
        )
        .await
        .unwrap();
    let letter = dead_letter_of(&platform, &id).await;
    assert_eq!(
        letter.envelope.attempt, 2,
        "unavailable is retried like any passing failure"
    );
    assert!(
        letter.reason.contains("cache unavailable"),
        "the guest saw a typed error: {}",
        letter.reason
    );

    // The host's own calls answer (within the command timeout) too.
    let result = tokio::time::timeout(
        Duration::from_secs(10),
        platform.services.cache.get_many("users", &["x".into()]),
    )
    .await;
    assert!(
        matches!(
            result,
            Ok(Err(techub_host::capability::BackendError::Unavailable(_)))
        ),
        "{result:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn rabbitmq_dropping_at_run_time_fails_publishes_fast_and_the_host_recovers() {
    init_tracing();
    let proxy = techub_tests::TcpProxy::start("127.0.0.1:5672").await;
    let plugin = unique("user-notifications");
    let dir = PluginDir::with(&[(&plugin, "user_notifications")]);
    let mut config = config(&dir);
    grant(&mut config, &plugin, &["users"], &["notification.*"]);
    config.backends.messaging = BrokerBackend::Amqp;
    config.amqp = services::amqp_config();
    config.amqp.url = format!("amqp://guest:guest@127.0.0.1:{}/%2f", proxy.port);
    config.amqp.confirm_timeout_ms = 1_000;
    let platform = start(config).await;
    let user = json!({ "id": "before", "email": "a@b.c", "name": "A" });
    platform
        .publish(
            "user.created",
            user.to_string().into_bytes(),
            Priority::Normal,
        )
        .await
        .expect("publishes while up");
    wait_for(
        LIMIT,
        "the message before the drop to be handled",
        || async {
            platform
                .services
                .cache
                .get_many("users", &["before".into()])
                .await
                .unwrap()
                .pop()
                .flatten()
        },
    )
    .await;

    proxy.cut();
    // Until the host notices the drop a publish may still get through; from then on
    // each one fails, and none hangs.
    let error = wait_for(
        LIMIT,
        "publishes to fail once the broker is gone",
        || async {
            let attempt = tokio::time::timeout(
                Duration::from_secs(10),
                platform.publish("user.created", b"{}".to_vec(), Priority::Normal),
            )
            .await
            .expect("a publish does not hang when the broker is gone");
            attempt.err().map(|e| format!("{e:#}"))
        },
    )
    .await;
    assert!(
        error.contains("RabbitMQ at amqp://guest:***@127.0.0.1"),
        "the error names the broker: {error}"
    );
    // The host and its embedded capabilities still serve.
    assert!(
        platform
            .services
            .cache
            .get_many("users", &["before".into()])
            .await
            .unwrap()[0]
            .is_some()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_queue_with_other_arguments_refuses_only_its_plugin() {
    init_tracing();
    let (trap, users) = (unique("trap"), unique("user-notifications"));
    let dir = PluginDir::with(&[(&trap, "fixture_trap"), (&users, "user_notifications")]);
    let mut config = on_services(&dir);
    grant(&mut config, &users, &["users"], &["notification.*"]);
    // Someone declared the trap plugin's queue differently (not durable, no arguments).
    let connection =
        lapin::Connection::connect(&config.amqp.url, lapin::ConnectionProperties::default())
            .await
            .unwrap();
    let channel = connection.create_channel().await.unwrap();
    let queue = format!("email.{trap}");
    channel
        .queue_declare(
            queue.as_str().into(),
            lapin::options::QueueDeclareOptions::default(),
            lapin::types::FieldTable::default(),
        )
        .await
        .unwrap();

    let platform = start(config).await;
    assert_eq!(
        platform
            .plugins
            .iter()
            .map(|p| p.name.clone())
            .collect::<Vec<_>>(),
        vec![users.clone()]
    );
    let error = platform.load_errors[0].to_string();
    assert!(
        error.contains(&trap) && error.contains(&queue) && error.contains("PRECONDITION_FAILED"),
        "{error}"
    );

    // Publishing was not taken down by the refused declaration.
    publish_user(&platform, "u-1").await;
    techub_tests::cached(&platform, "users", "u-1").await;
    let _ = channel
        .queue_delete(
            queue.as_str().into(),
            lapin::options::QueueDeleteOptions::default(),
        )
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_publish_options_never_reach_rabbitmq() {
    init_tracing();
    let plugin = unique("hostile");
    let dir = PluginDir::with(&[(&plugin, "fixture_hostile")]);
    let mut config = on_services(&dir);
    grant(&mut config, &plugin, &[], &["fixture.sink.#"]);
    config.queues.get_mut("webhook").unwrap().max_retries = 1;
    let platform = start(config).await;
    let id = platform
        .publish(
            "fixture.hostile.bad-options",
            b"{}".to_vec(),
            Priority::Normal,
        )
        .await
        .unwrap();
    let letter = dead_letter_of(&platform, &id).await;
    assert_eq!(
        letter.reason, "rejected: refused 7 of 7; then Ok(\"published\")",
        "and the publishing channel survived"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_huge_failure_reason_is_cut_before_it_reaches_rabbitmq() {
    init_tracing();
    let plugin = unique("hostile");
    let dir = PluginDir::with(&[(&plugin, "fixture_hostile")]);
    let mut config = on_services(&dir);
    grant(&mut config, &plugin, &[], &["fixture.sink.#"]);
    let platform = start(config).await;
    let id = platform
        .publish(
            "fixture.hostile.huge-reject",
            b"{}".to_vec(),
            Priority::Normal,
        )
        .await
        .unwrap();
    let letter = dead_letter_of(&platform, &id).await;
    assert!(
        letter.reason.starts_with("rejected: xxx"),
        "{}",
        &letter.reason[..40]
    );
    assert!(
        letter.reason.len() < 1_200 && letter.reason.ends_with("bytes cut)"),
        "{} bytes",
        letter.reason.len()
    );
    // The connection survived: the next message goes through as usual.
    let next = platform
        .publish(
            "fixture.hostile.ungranted",
            b"{}".to_vec(),
            Priority::Normal,
        )
        .await
        .unwrap();
    assert!(
        dead_letter_of(&platform, &next)
            .await
            .reason
            .contains("UnknownDomain")
    );
}
