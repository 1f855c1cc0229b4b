//! `[queues.<type>]`'s `message_ttl_ms`, `max_length` and `overflow`, and
//! `[dead_letter]`, on a running RabbitMQ deployment: they reach the queues as the
//! host's policies and follow a reload of `host.toml`, without redeclaring a queue.

use crate::e2e_services::on_services;
use serde_json::{Value, json};
use std::time::Duration;
use techub_host::Platform;
use techub_host::capability::messaging::Overflow;
use techub_host::capability::messaging::amqp::policies::Management;
use techub_tests::{PluginDir, init_tracing, services, unique, wait_for};

const LIMIT: Duration = Duration::from_secs(20);

async fn policy_becomes(api: &Management, queue: &str, expected: Option<Value>) {
    wait_for(LIMIT, &format!("the policy of {queue} to be {expected:?}"), || async {
        let now = api.policy(queue).await.unwrap_or_else(|e| {
            panic!("RabbitMQ's management API must answer on 127.0.0.1:15672 ({e}); enable it with `rabbitmq-plugins enable rabbitmq_management` or run `cargo xtask test`")
        });
        (now == expected).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn queue_limits_from_host_toml_reach_rabbitmq_and_follow_a_reload() {
    init_tracing();
    let plugin = unique("limits");
    let dir = PluginDir::with(&[(&plugin, "fixture_trap")]);
    let mut config = on_services(&dir);
    let email = config.queues.get_mut("email").unwrap();
    email.message_ttl_ms = Some(60_000);
    email.max_length = Some(100);
    let queue = format!("{}email.{plugin}", config.amqp.queue_prefix);
    let dead_letters = config.amqp.dead_letter_queue.clone();
    let api = Management::new(&config.amqp).unwrap();
    let platform = Platform::start(config.clone())
        .await
        .unwrap_or_else(|e| panic!("{}", services::rabbitmq_hint(&e)));
    policy_becomes(
        &api,
        &queue,
        Some(json!({"message-ttl": 60_000, "max-length": 100, "overflow": "reject-publish-dlx"})),
    )
    .await;
    policy_becomes(
        &api,
        &dead_letters,
        Some(
            json!({"message-ttl": 86_400_000, "max-length": 10_000, "overflow": "reject-publish"}),
        ),
    )
    .await;

    // Changed: the same queues take the new limits.
    let email = config.queues.get_mut("email").unwrap();
    email.message_ttl_ms = None;
    email.max_length = Some(5);
    email.overflow = Overflow::DropHead;
    config.dead_letter.max_length = 50;
    config.dead_letter.ttl_ms = 3_600_000;
    let ignored = platform.reload_config(config.clone()).await.unwrap();
    assert!(ignored.is_empty(), "{ignored:?}");
    policy_becomes(
        &api,
        &queue,
        Some(json!({"max-length": 5, "overflow": "drop-head"})),
    )
    .await;
    policy_becomes(
        &api,
        &dead_letters,
        Some(json!({"message-ttl": 3_600_000, "max-length": 50, "overflow": "reject-publish"})),
    )
    .await;

    // Removed: no policy is left to bound the queue.
    config.queues.get_mut("email").unwrap().max_length = None;
    platform.reload_config(config).await.unwrap();
    policy_becomes(&api, &queue, None).await;
    platform.shutdown().await;
}

/// A dead-letter queue declared by an older host, with its limits as arguments: the
/// host starts (warning), and its policy takes over the limits from then on.
#[tokio::test(flavor = "multi_thread")]
async fn a_dead_letter_queue_with_limit_arguments_from_an_older_host_is_taken_over() {
    use lapin::types::{AMQPValue, FieldTable};
    init_tracing();
    let dir = PluginDir::with(&[]);
    let mut config = on_services(&dir);
    config.dead_letter.max_length = 20;
    let amqp = config.amqp.clone();
    let connection = lapin::Connection::connect(&amqp.url, lapin::ConnectionProperties::default())
        .await
        .unwrap_or_else(|e| panic!("{}", services::rabbitmq_hint(&e.into())));
    let channel = connection.create_channel().await.unwrap();
    let mut legacy = FieldTable::default();
    legacy.insert("x-message-ttl".into(), AMQPValue::LongLongInt(86_400_000));
    legacy.insert("x-max-length".into(), AMQPValue::LongLongInt(10_000));
    legacy.insert(
        "x-overflow".into(),
        AMQPValue::LongString("reject-publish".into()),
    );
    channel
        .queue_declare(
            amqp.dead_letter_queue.as_str().into(),
            lapin::options::QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            legacy,
        )
        .await
        .unwrap();
    let _ = connection.close(200, "done".into()).await;

    let platform = Platform::start(config)
        .await
        .expect("a legacy dead-letter queue does not stop the host");
    let api = Management::new(&amqp).unwrap();
    policy_becomes(
        &api,
        &amqp.dead_letter_queue,
        Some(json!({"message-ttl": 86_400_000, "max-length": 20, "overflow": "reject-publish"})),
    )
    .await;
    platform.shutdown().await;
}
