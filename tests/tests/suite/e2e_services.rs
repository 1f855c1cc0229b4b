//! End to end on the real services (the scenarios that run on both deployments are in
//! `e2e_scenarios.rs`): a host configured for Redis and RabbitMQ, and what happens
//! when a service is missing or goes away.

use crate::e2e_embedded::dead_letter_of;
use serde_json::{Value, json};
use std::time::Duration;
use techub_host::Platform;
use techub_host::bindings::techub::platform::messaging::Priority;
use techub_host::capability::messaging::MessageStatus;
use techub_host::config::{BrokerBackend, HostConfig, KvBackend};
use techub_tests::{
    OwnRedis, PluginDir, config, grant, init_tracing, publish_user, services, unique, wait_for,
};

const LIMIT: Duration = Duration::from_secs(20);

/// A configuration on the shared Redis and RabbitMQ, isolated by a unique key prefix
/// and unique exchange names.
pub(crate) fn on_services(dir: &PluginDir) -> HostConfig {
    let mut config = config(dir);
    config.backends.cache = KvBackend::Redis;
    config.backends.store = KvBackend::Redis;
    config.backends.lock = KvBackend::Redis;
    config.backends.messaging = BrokerBackend::Amqp;
    config.host.key_prefix = format!("{}:", unique("techub-test"));
    config.amqp = services::amqp_config();
    config
}

/// user-notifications on the embedded cache, with RabbitMQ reached through a proxy
/// the test can cut: the proxy, the plugin's (unique) name, its directory, the config.
async fn behind_a_proxy() -> (techub_tests::TcpProxy, String, PluginDir, HostConfig) {
    let proxy = techub_tests::TcpProxy::start("127.0.0.1:5672").await;
    let plugin = unique("user-notifications");
    let dir = PluginDir::with(&[(&plugin, "user_notifications")]);
    let mut config = config(&dir);
    grant(&mut config, &plugin, &["users"], &["notification.*"]);
    config.backends.messaging = BrokerBackend::Amqp;
    config.amqp = services::amqp_config();
    config.amqp.url = format!("amqp://guest:guest@127.0.0.1:{}/%2f", proxy.port);
    (proxy, plugin, dir, config)
}

async fn start(config: HostConfig) -> Platform {
    Platform::start(config)
        .await
        .unwrap_or_else(|e| panic!("{}", services::rabbitmq_hint(&e)))
}

#[tokio::test(flavor = "multi_thread")]
async fn unreachable_services_at_start_are_named() {
    init_tracing();
    let dir = PluginDir::with(&[]);
    let mut config = config(&dir);
    config.backends.store = KvBackend::Redis;
    config.redis.url = "redis://:hunter2@127.0.0.1:1".into();
    config.redis.connection_timeout_ms = 2_000;
    let error = format!(
        "{:#}",
        Platform::start(config)
            .await
            .err()
            .expect("no Redis, no start")
    );
    assert!(
        error.contains("could not connect to Redis at redis://:***@127.0.0.1:1"),
        "{error}"
    );
    assert!(
        !error.contains("hunter2"),
        "the password is not printed: {error}"
    );

    let mut config = techub_tests::config(&dir);
    config.backends.messaging = BrokerBackend::Amqp;
    config.amqp.url = "amqp://guest:secret@127.0.0.1:1/%2f".into();
    // Refused at once: the timeout is not what ends the attempt.
    config.amqp.connection_timeout_ms = 600_000;
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
    assert!(
        error.to_lowercase().contains("connection refused") && !error.contains("panic"),
        "a refused port is reported as such: {error}"
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
            Some(Priority::Normal),
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
        platform
            .services
            .cache
            .backend
            .get_many("users", &["x".into()]),
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
    let (proxy, _plugin, _dir, mut config) = behind_a_proxy().await;
    config.messaging.confirm_timeout_ms = 1_000;
    let platform = start(config).await;
    let user = json!({ "id": "before", "email": "a@b.c", "name": "A" });
    platform
        .publish(
            "user.created",
            user.to_string().into_bytes(),
            Some(Priority::Normal),
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
                .backend
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
                platform.publish("user.created", b"{}".to_vec(), Some(Priority::Normal)),
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
            .backend
            .get_many("users", &["before".into()])
            .await
            .unwrap()[0]
            .is_some()
    );

    // Back: publishes go through again, the consumer resumes, and every message the
    // broker confirmed before the cut is handled.
    proxy.restore();
    let after = json!({ "id": "after", "email": "a@b.c", "name": "A" });
    // Reconnection backs off up to 5 s between attempts, and lapin's recovery has
    // been seen to need ~10 s after the broker is back (over 60 s once, on a machine
    // also running a full build): a generous bound, not a timing claim.
    wait_for(LIMIT * 9, "publishes to work again", || async {
        platform
            .publish(
                "user.created",
                after.to_string().into_bytes(),
                Some(Priority::Normal),
            )
            .await
            .ok()
    })
    .await;
    for id in ["before", "after"] {
        techub_tests::cached(&platform, "users", id).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn messages_confirmed_before_a_broker_drop_are_all_handled_after_it() {
    init_tracing();
    let (proxy, plugin, _dir, mut config) = behind_a_proxy().await;
    // One at a time and slowly enough that some are still queued at the cut.
    config.plugins.get_mut(&plugin).unwrap().limits.prefetch = Some(1);
    let platform = start(config).await;
    let mut confirmed = Vec::new();
    for n in 0..30 {
        let user = json!({ "id": format!("u-{n}"), "email": "a@b.c", "name": "A" });
        platform
            .publish(
                "user.created",
                user.to_string().into_bytes(),
                Some(Priority::Normal),
            )
            .await
            .expect("publishes while up");
        confirmed.push(format!("u-{n}"));
    }
    proxy.cut();
    tokio::time::sleep(Duration::from_millis(500)).await;
    proxy.restore();
    // See the drop test above for why the bound is generous.
    wait_for(
        LIMIT * 9,
        "every confirmed message to be handled",
        || async {
            let cached = platform
                .services
                .cache
                .backend
                .get_many("users", &confirmed)
                .await
                .unwrap();
            cached.iter().all(Option::is_some).then_some(())
        },
    )
    .await;
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
    let queue = format!("{}email.{trap}", config.amqp.queue_prefix);
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
            .plugins()
            .await
            .iter()
            .map(|p| p.name.clone())
            .collect::<Vec<_>>(),
        vec![users.clone()]
    );
    let error = platform.load_errors().await[0].to_string();
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
            Some(Priority::Normal),
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
            Some(Priority::Normal),
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
            Some(Priority::Normal),
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

/// A host whose cache is the test's own password-protected Redis, running the hostile
/// plugin; the Redis server and the password.
async fn hostile_on_own_redis() -> (Platform, PluginDir, OwnRedis, &'static str) {
    init_tracing();
    let password = "hunter2-not-for-guests";
    let redis = OwnRedis::start_with(&["--requirepass", password]).await;
    let dir = PluginDir::with(&[("hostile", "fixture_hostile")]);
    let mut config = config(&dir);
    grant(&mut config, "hostile", &["users"], &[]);
    config.backends.cache = KvBackend::Redis;
    config.redis.url = format!("redis://:{password}@127.0.0.1:{}", redis.port);
    config.redis.command_timeout_ms = 1_000;
    config.redis.connection_timeout_ms = 1_000;
    config.queues.get_mut("webhook").unwrap().max_retries = 1;
    config.plugins.get_mut("hostile").unwrap().limits.timeout_ms = Some(30_000);
    let platform = Platform::start(config).await.unwrap();
    (platform, dir, redis, password)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_guest_never_sees_the_redis_password_and_a_dead_redis_is_not_a_cpu_kill() {
    let (platform, _dir, mut redis, password) = hostile_on_own_redis().await;
    let id = platform
        .publish("fixture.hostile.cache-until-error", b"{}".to_vec(), None)
        .await
        .unwrap();
    // Let it write for a while, then take Redis away mid-call.
    tokio::time::sleep(Duration::from_millis(300)).await;
    redis.kill();
    let reason = dead_letter_of(&platform, &id).await.reason;
    assert!(
        reason.starts_with("rejected: Unavailable(\"cache backend unavailable"),
        "the guest got the typed error, not a CPU-limit or timeout kill: {reason}"
    );
    assert!(
        !reason.contains(password),
        "no password reaches the guest: {reason}"
    );
    assert!(
        !reason.contains("127.0.0.1"),
        "no server address either: {reason}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn readiness_names_a_dead_redis() {
    let (platform, _dir, mut redis, password) = hostile_on_own_redis().await;
    let platform = std::sync::Arc::new(platform);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = listener.local_addr().unwrap().to_string();
    tokio::spawn(
        axum::serve(listener, techub_host::admin::router(platform.clone(), None)).into_future(),
    );
    let (status, body) = techub_host::admin::client::get(&admin, None, "/readyz")
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    redis.kill();
    let (status, body) = techub_host::admin::client::get(&admin, None, "/readyz")
        .await
        .unwrap();
    assert_eq!(status, 503, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    let down = body["down"][0].as_str().unwrap();
    assert!(down.contains("Redis at redis://:***@127.0.0.1"), "{down}");
    assert!(!down.contains(password), "{down}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_publisher_cannot_set_the_attempt_counter() {
    init_tracing();
    let plugin = unique("trap");
    let dir = PluginDir::with(&[(&plugin, "fixture_trap")]);
    let config = on_services(&dir);
    let exchange = config.amqp.main_exchange.clone();
    let platform = start(config).await;
    // Another producer publishes straight to the exchange, claiming the message is on
    // its 1000th attempt (which would dead-letter it after one try).
    let connection = lapin::Connection::connect(
        &techub_host::config::AmqpConfig::default().url,
        lapin::ConnectionProperties::default(),
    )
    .await
    .unwrap();
    let channel = connection.create_channel().await.unwrap();
    let mut headers = lapin::types::FieldTable::default();
    headers.insert(
        "x-techub-attempt".into(),
        lapin::types::AMQPValue::LongLongInt(1000),
    );
    let id = unique("forged");
    channel
        .basic_publish(
            exchange.as_str().into(),
            "fixture.trap.now".into(),
            lapin::options::BasicPublishOptions::default(),
            b"{}",
            lapin::BasicProperties::default()
                .with_message_id(id.as_str().into())
                .with_headers(headers),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    let letter = dead_letter_of(&platform, &id).await;
    assert_eq!(
        letter.envelope.attempt, 3,
        "every retry was made: {}",
        letter.reason
    );
    let _ = connection.close(200, "done".into()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_deployments_on_one_broker_never_share_a_queue() {
    init_tracing();
    let plugin = unique("user-notifications");
    let dir = PluginDir::with(&[(&plugin, "user_notifications")]);
    let host = || {
        let mut config = config(&dir);
        grant(&mut config, &plugin, &["users"], &["notification.*"]);
        config.backends.messaging = BrokerBackend::Amqp;
        config.amqp = services::amqp_config();
        config
    };
    let (staging, production) = (start(host()).await, start(host()).await);
    for n in 0..10 {
        for (platform, name) in [(&staging, "staging"), (&production, "production")] {
            let user = json!({ "id": format!("{name}-{n}"), "email": "a@b.c", "name": "A" });
            platform
                .publish("user.created", user.to_string().into_bytes(), None)
                .await
                .unwrap();
        }
    }
    for n in 0..10 {
        techub_tests::cached(&staging, "users", &format!("staging-{n}")).await;
        techub_tests::cached(&production, "users", &format!("production-{n}")).await;
    }
    for (platform, other) in [(&staging, "production"), (&production, "staging")] {
        let keys: Vec<String> = (0..10).map(|n| format!("{other}-{n}")).collect();
        let stolen = platform
            .services
            .cache
            .backend
            .get_many("users", &keys)
            .await
            .unwrap();
        assert!(
            stolen.iter().all(Option::is_none),
            "a host handled the other deployment's messages"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_dead_letter_queue_is_bounded_and_refuses_rather_than_drops() {
    init_tracing();
    let plugin = unique("user-notifications");
    let dir = PluginDir::with(&[(&plugin, "user_notifications")]);
    let mut config = on_services(&dir);
    grant(&mut config, &plugin, &["users"], &["notification.*"]);
    config.dead_letter.max_length = 1;
    config.dead_letter.ttl_ms = 2_000;
    // The refused letter waits this long in its retry queue between tries.
    config.dead_letter.retry_when_full_ms = 300;
    let amqp = config.amqp.clone();
    let platform = start(config).await;

    // The bounds are the host's policy, not arguments: declaring the queue without
    // any passes, so a changed bound never needs the queue deleted.
    let api = techub_host::capability::messaging::amqp::policies::Management::new(&amqp).unwrap();
    assert_eq!(
        api.policy(&amqp.dead_letter_queue).await.unwrap(),
        Some(json!({"message-ttl": 2_000, "max-length": 1, "overflow": "reject-publish"}))
    );
    let connection = lapin::Connection::connect(&amqp.url, lapin::ConnectionProperties::default())
        .await
        .unwrap();
    let durable = lapin::options::QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    let channel = connection.create_channel().await.unwrap();
    channel
        .queue_declare(
            amqp.dead_letter_queue.as_str().into(),
            durable,
            lapin::types::FieldTable::default(),
        )
        .await
        .expect("no limit is an argument");
    let _ = connection.close(200, "done".into()).await;

    let first = platform
        .publish("user.created", b"not json 1".to_vec(), None)
        .await
        .unwrap();
    dead_letter_of(&platform, &first).await;
    let second = platform
        .publish("user.created", b"not json 2".to_vec(), None)
        .await
        .unwrap();
    wait_for(
        LIMIT,
        "the full queue to refuse the second letter",
        || async { (platform.services.messaging.broker.dead_letters_refused() > 0).then_some(()) },
    )
    .await;
    // The first expires; the second, waiting in its retry queue meanwhile, then lands.
    let letter = dead_letter_of(&platform, &second).await;
    assert!(letter.reason.starts_with("rejected:"), "{}", letter.reason);
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_retries_only_idempotent_commands_and_counts_slow_ones() {
    use techub_host::capability::redis_client::Retry;
    let redis = services::redis().await;
    let calls = std::sync::atomic::AtomicU32::new(0);
    let flaky = |_conn| {
        let n = calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        async move {
            match n {
                0 => Err(redis::RedisError::from(std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "dropped",
                ))),
                _ => Ok(n),
            }
        }
    };
    assert_eq!(redis.run("GET", Retry::Idempotent, flaky).await, Ok(1));
    assert_eq!(calls.swap(0, std::sync::atomic::Ordering::SeqCst), 2);
    let result = redis.run("INCR", Retry::Never, flaky).await;
    assert!(
        matches!(
            result,
            Err(techub_host::capability::BackendError::Unavailable(_))
        ),
        "{result:?}"
    );
    assert_eq!(
        calls.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "not replayed"
    );

    let before = redis.slow_commands();
    redis
        .run("PING", Retry::Idempotent, |mut conn| async move {
            tokio::time::sleep(Duration::from_millis(150)).await;
            redis::cmd("PING").query_async::<String>(&mut conn).await
        })
        .await
        .unwrap();
    assert_eq!(
        redis.slow_commands(),
        before + 1,
        "a 150 ms command is slow"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn two_hosts_share_each_plugin_queue_and_handle_every_message_once() {
    init_tracing();
    const MESSAGES: usize = 40;
    let dir_a = PluginDir::with(&[("live", "fixture_versioned_v1")]);
    let dir_b = PluginDir::with(&[("live", "fixture_versioned_v1")]);
    let mut config_a = on_services(&dir_a);
    config_a.backends.cache = KvBackend::Memory;
    config_a.backends.lock = KvBackend::Memory;
    config_a.plugins.get_mut("live").unwrap().limits.prefetch = Some(4);
    // The same deployment (key prefix, exchanges, queue prefix) from another directory.
    let mut config_b = config_a.clone();
    config_b.host.plugins_dir = dir_b.path().to_path_buf();
    config_b.host.cache_dir = dir_b.path().join(".cache");
    let host_a = start(config_a.clone()).await;
    let host_b = start(config_b).await;
    let mut published = Vec::new();
    for _ in 0..MESSAGES {
        let id = host_a
            .publish("fixture.versioned.main", b"sleep:20".to_vec(), None)
            .await
            .unwrap();
        published.push(id);
    }
    let redis = services::redis().await;
    let list = format!("{}store:live:handled", config_a.host.key_prefix);
    let handled = wait_for(LIMIT, "every message handled", || async {
        let ids = crate::binary::handled_ids(&redis, &list).await;
        (ids.len() >= MESSAGES).then_some(ids)
    })
    .await;
    // No failure was injected: each message is handled exactly once, by one host.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let handled_later = crate::binary::handled_ids(&redis, &list).await;
    assert_eq!(handled_later.len(), MESSAGES, "no message handled twice");
    let mut sorted = handled;
    sorted.sort();
    published.sort();
    assert_eq!(sorted, published);
    let acked = |platform: &Platform| {
        let text = platform.services.metrics.encode();
        crate::operations::sample(&text, "techub_queue_acked_total", &[("plugin", "live")])
            .unwrap_or(0.0)
    };
    let (a, b) = (acked(&host_a), acked(&host_b));
    assert_eq!(a + b, MESSAGES as f64, "host a acked {a}, host b {b}");
    assert!(a > 0.0 && b > 0.0, "both hosts took part: a {a}, b {b}");

    // Statuses are shared through Redis: each host reports every message completed,
    // the ones the other host handled included (and knows who consumed it where).
    for host in [&host_a, &host_b] {
        for id in &published {
            let snapshot = wait_for(LIMIT, "a shared status", || async {
                host.services
                    .messaging
                    .tracker
                    .lookup(id)
                    .await
                    .filter(|s| s.summary() == MessageStatus::Completed)
            })
            .await;
            assert_eq!(snapshot.queues.len(), 1, "{snapshot:?}");
            assert_eq!(snapshot.queues[0].1, "live");
        }
    }
}

/// `/readyz` names RabbitMQ while the connection to it is down, and is ready again
/// once the host reconnected.
#[tokio::test(flavor = "multi_thread")]
async fn readiness_names_rabbitmq_while_it_is_cut_off() {
    init_tracing();
    let (proxy, _plugin, _dir, config) = behind_a_proxy().await;
    let platform = std::sync::Arc::new(start(config).await);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = listener.local_addr().unwrap().to_string();
    tokio::spawn(
        axum::serve(listener, techub_host::admin::router(platform.clone(), None)).into_future(),
    );
    let readiness = async || {
        let (status, body) = techub_host::admin::client::get(&admin, None, "/readyz")
            .await
            .unwrap();
        (status, serde_json::from_str::<Value>(&body).unwrap())
    };
    assert_eq!(readiness().await.0, 200);
    proxy.cut();
    let down = wait_for(LIMIT, "/readyz to say RabbitMQ is down", || async {
        let (status, body) = readiness().await;
        (status == 503).then_some(body)
    })
    .await;
    let reason = down["down"][0].as_str().unwrap_or_default().to_string();
    assert!(reason.contains("RabbitMQ"), "{down}");
    assert!(!reason.contains("guest:guest"), "no password: {down}");
    proxy.restore();
    wait_for(LIMIT, "/readyz to be ready again", || async {
        (readiness().await.0 == 200).then_some(())
    })
    .await;
}

/// Cache statistics counted right up to a stop reach Redis: the flusher is told to
/// stop and flushes once more, never aborted while it holds a batch it took. (Aborted,
/// a stop landing mid-flush lost that batch: with a flush every 10 ms that happens in
/// a good share of these rounds.)
#[tokio::test(flavor = "multi_thread")]
async fn cache_statistics_counted_before_a_stop_reach_redis() {
    init_tracing();
    for round in 0..40 {
        let dir = PluginDir::with(&[]);
        let mut config = techub_tests::config(&dir);
        config.backends.cache = KvBackend::Redis;
        config.host.key_prefix = format!("{}:", unique("stats-stop"));
        config.cache.stats_flush_ms = 10;
        let platform = Platform::start(config).await.expect("the platform starts");
        let stats = platform.services.cache.stats.clone();
        let mut counted = 0u64;
        // Counting while the flusher runs, then the stop at once.
        let until = std::time::Instant::now() + Duration::from_millis(25 + round % 7);
        while std::time::Instant::now() < until {
            stats.record("users", techub_host::metrics::CacheEvent::Hit, 1);
            counted += 1;
            tokio::task::yield_now().await;
        }
        platform.shutdown().await;
        let total = stats.sum(&["users".to_string()], None).await;
        assert_eq!(
            total.hits, counted,
            "round {round}: counted before the stop"
        );
    }
}

/// The welcome flow to its end on Redis and RabbitMQ: `user.created` →
/// user-notifications → `notification.email` → email-sender → a mail provider on
/// loopback that is down for the first two attempts. The email goes out once, with the
/// user's address, after the `email` queue's retries.
#[tokio::test(flavor = "multi_thread")]
async fn the_welcome_email_is_sent_once_through_a_provider_that_fails_twice() {
    use techub_host::config::SecretRef;
    use techub_testkit::stand_ins::MailProvider;
    init_tracing();
    let provider = MailProvider::start("e2e-mail-key").await;
    provider.fail_next(&[503, 502]);
    let (welcomer, sender) = (unique("user-notifications"), unique("email-sender"));
    let dir = PluginDir::with(&[(&welcomer, "user_notifications"), (&sender, "email_sender")]);
    let mut config = on_services(&dir);
    grant(&mut config, &welcomer, &["users"], &["notification.*"]);
    let section = grant(&mut config, &sender, &[], &[]);
    section.outbound = vec![provider.origin()];
    section
        .settings
        .insert("provider_url".into(), provider.origin());
    section
        .secrets
        .insert("api_key".into(), SecretRef::literal("e2e-mail-key"));
    if let Some(email) = config.queues.get_mut("email") {
        email.max_retries = 3;
    }
    let platform = start(config).await;
    assert_eq!(
        platform.plugins().await.len(),
        2,
        "load errors: {:?}",
        platform.load_errors().await
    );
    let user = json!({ "id": unique("u"), "email": "grace@example.com", "name": "Grace" });
    platform
        .publish("user.created", user.to_string().into_bytes(), None)
        .await
        .unwrap();
    let emails = wait_for(LIMIT, "the welcome email at the provider", || async {
        let emails = provider.emails();
        (!emails.is_empty()).then_some(emails)
    })
    .await;
    assert_eq!(emails[0].message["to"], "grace@example.com");
    assert_eq!(emails[0].message["template"], "welcome");
    assert_eq!(
        provider.requests(),
        3,
        "two refused attempts, then the email"
    );
    // Nothing more arrives: the message is done, not redelivered.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(provider.emails().len(), 1, "{:?}", provider.emails());
    assert_eq!(provider.requests(), 3);
    let keys: std::collections::BTreeSet<_> = provider
        .received()
        .iter()
        .map(|r| r.header("idempotency-key").map(str::to_string))
        .collect();
    assert_eq!(
        keys.len(),
        1,
        "every attempt carries the message's id: {keys:?}"
    );
}

/// A webhook end to end on Redis and RabbitMQ: a `webhook.event` reaches the customer's
/// endpoint signed (the receiver verifies it per the Standard Webhooks specification),
/// after the `webhook` queue's retry of a 503, with one `webhook-id` across attempts.
#[tokio::test(flavor = "multi_thread")]
async fn a_webhook_is_delivered_signed_after_a_retry() {
    use techub_host::config::SecretRef;
    use techub_testkit::stand_ins::WebhookReceiver;
    init_tracing();
    let secret = WebhookReceiver::new_secret();
    let receiver = WebhookReceiver::start(&secret).await;
    receiver.answer_next(&[503]);
    let dispatcher = unique("webhook-dispatcher");
    let dir = PluginDir::with(&[(&dispatcher, "webhook_dispatcher")]);
    let mut config = on_services(&dir);
    let section = grant(&mut config, &dispatcher, &[], &[]);
    section.outbound = vec![receiver.origin()];
    section
        .settings
        .insert("endpoint_acme".into(), receiver.url());
    section
        .secrets
        .insert("secret_acme".into(), SecretRef::literal(&secret));
    let platform = start(config).await;
    assert_eq!(
        platform.plugins().await.len(),
        1,
        "load errors: {:?}",
        platform.load_errors().await
    );
    let event = json!({ "customer": "acme", "type": "order.shipped", "data": { "order": "o-9" } });
    let id = platform
        .publish("webhook.event", event.to_string().into_bytes(), None)
        .await
        .unwrap();
    let deliveries = wait_for(LIMIT, "the webhook's second, accepted delivery", || async {
        let deliveries = receiver.deliveries();
        (deliveries.len() == 2).then_some(deliveries)
    })
    .await;
    assert!(receiver.refused().is_empty(), "{:?}", receiver.refused());
    assert_eq!(
        deliveries.iter().map(|d| d.status).collect::<Vec<_>>(),
        [503, 200]
    );
    assert!(deliveries.iter().all(|d| d.id == id), "{deliveries:?}");
    assert_eq!(deliveries[1].body["data"]["order"], "o-9");
    wait_for(LIMIT, "the message to complete", || async {
        (platform.services.messaging.tracker.get(&id) == Some(MessageStatus::Completed))
            .then_some(())
    })
    .await;
}

/// A host whose Redis and RabbitMQ stop answering (connections open, nothing
/// delivered) still stops: each last call of the shutdown (the statistics and status
/// flushes, closing the broker connection) is bounded.
#[tokio::test(flavor = "multi_thread")]
async fn a_host_stops_even_when_its_services_stop_answering() {
    init_tracing();
    let redis_proxy = techub_tests::TcpProxy::start("127.0.0.1:6379").await;
    let amqp_proxy = techub_tests::TcpProxy::start("127.0.0.1:5672").await;
    let dir = PluginDir::with(&[]);
    let mut config = on_services(&dir);
    config.redis.url = format!("redis://127.0.0.1:{}", redis_proxy.port);
    config.amqp.url = format!("amqp://guest:guest@127.0.0.1:{}/%2f", amqp_proxy.port);
    let platform = start(config).await;
    platform
        .publish("nothing.bound", b"{}".to_vec(), None)
        .await
        .unwrap();
    redis_proxy.stall();
    amqp_proxy.stall();
    let started = std::time::Instant::now();
    let stopped = tokio::time::timeout(Duration::from_secs(60), platform.shutdown()).await;
    assert!(
        stopped.is_ok(),
        "the shutdown hung on services that stopped answering"
    );
    println!(
        "stopped in {:?} with both services stalled",
        started.elapsed()
    );
    redis_proxy.flow();
    amqp_proxy.flow();
}
