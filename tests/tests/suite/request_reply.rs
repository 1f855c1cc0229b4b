//! Request-reply between two real plugins (`fixture_asker` asks, `fixture_answerer`
//! answers), on the embedded broker and on RabbitMQ, and across two hosts: replies
//! reach their caller only, a timeout is a typed error, a late reply is dropped and
//! counted, and the wait is wall-clock time, not CPU.

use crate::e2e_embedded::dead_letter_of;
use crate::e2e_services::on_services;
use serde_json::{Value, json};
use std::time::Duration;
use techub_host::Platform;
use techub_host::config::HostConfig;
use techub_tests::{PluginDir, config, grant, init_tracing, services, sink, unique, wait_for};

const LIMIT: Duration = Duration::from_secs(20);

/// The asker and the answerer (as `answerer_name`, its `name` setting) in `config`.
fn pair(config: &mut HostConfig, asker: &str, answerer: &str) {
    grant(config, asker, &[], &["rpc.*", "answers.*"]);
    grant(config, answerer, &[], &[])
        .settings
        .insert("name".into(), answerer.to_string());
}

async fn start(config: HostConfig) -> Platform {
    Platform::start(config)
        .await
        .unwrap_or_else(|e| panic!("{}", services::rabbitmq_hint(&e)))
}

/// Has the asker on `platform` request `key` with `body`; what it reported.
async fn ask(platform: &Platform, key: &str, body: &str, timeout_ms: u32) -> Value {
    let mut answers = sink(platform, &["answers.*"]).await;
    let ask = json!({"key": key, "body": body, "timeout_ms": timeout_ms});
    let id = platform
        .publish("ask.now", ask.to_string().into_bytes(), None)
        .await
        .unwrap();
    loop {
        let delivery = tokio::time::timeout(LIMIT, answers.next())
            .await
            .expect("the asker reports in time")
            .expect("sink open");
        let for_this = delivery.envelope().routing_key == format!("answers.{id}");
        let mut report: Value = serde_json::from_slice(&delivery.envelope().payload).unwrap();
        delivery.ack().await.unwrap();
        if for_this {
            // The round trip the asker measured varies; the tests compare the rest.
            report.as_object_mut().unwrap().remove("rtt_us");
            return report;
        }
    }
}

/// A reply reaches its caller; a timeout is typed; a reply after the timeout is
/// dropped and counted, and never reaches the next caller.
async fn request_reply_works(platform: &Platform, answerer: &str) {
    let answer = ask(platform, "rpc.echo", "hello", 5_000).await;
    assert_eq!(answer, json!({"ok": "hello", "answered_by": answerer}));

    let late_before = platform.services.messaging.replies.late();
    let (slow, patient) = tokio::join!(
        ask(platform, "rpc.slow", "slow body", 200),
        // Still waiting when the first one's late reply comes: it must get its own.
        async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            ask(platform, "rpc.slow", "patient body", 5_000).await
        }
    );
    assert!(
        slow["error"].as_str().unwrap().starts_with("Timeout("),
        "{slow}"
    );
    assert_eq!(patient["ok"], "patient body");
    wait_for(LIMIT, "the late reply to be counted", || async {
        (platform.services.messaging.replies.late() == late_before + 1).then_some(())
    })
    .await;
    // Nothing else got the late reply.
    let again = ask(platform, "rpc.echo", "after", 5_000).await;
    assert_eq!(again["ok"], "after");
}

#[tokio::test(flavor = "multi_thread")]
async fn request_reply_on_the_embedded_broker() {
    init_tracing();
    let (asker, answerer) = (unique("asker"), unique("answerer"));
    let dir = PluginDir::with(&[(&asker, "fixture_asker"), (&answerer, "fixture_answerer")]);
    let mut config = config(&dir);
    pair(&mut config, &asker, &answerer);
    let platform = start(config).await;
    request_reply_works(&platform, &answerer).await;
    platform.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn request_reply_on_rabbitmq() {
    init_tracing();
    let (asker, answerer) = (unique("asker"), unique("answerer"));
    let dir = PluginDir::with(&[(&asker, "fixture_asker"), (&answerer, "fixture_answerer")]);
    let mut config = on_services(&dir);
    pair(&mut config, &asker, &answerer);
    let platform = start(config).await;
    request_reply_works(&platform, &answerer).await;
    platform.shutdown().await;
}

/// The answer comes from a plugin on another host: it goes to the asking host's
/// reply queue on RabbitMQ.
#[tokio::test(flavor = "multi_thread")]
async fn a_request_is_answered_by_a_plugin_on_another_host() {
    init_tracing();
    let (asker, answerer) = (unique("asker"), unique("answerer"));
    let asking_dir = PluginDir::with(&[(&asker, "fixture_asker")]);
    let answering_dir = PluginDir::with(&[(&answerer, "fixture_answerer")]);
    let mut asking = on_services(&asking_dir);
    pair(&mut asking, &asker, &answerer);
    let mut answering = asking.clone();
    answering.host.plugins_dir = answering_dir.path().to_path_buf();
    answering.host.cache_dir = answering_dir.path().join(".cache");
    let asking = start(asking).await;
    let answering = start(answering).await;
    let answer = ask(&asking, "rpc.echo", "across", 5_000).await;
    assert_eq!(answer, json!({"ok": "across", "answered_by": answerer}));
    assert_ne!(
        asking.services.messaging.replies.address(),
        answering.services.messaging.replies.address(),
        "each host has its own reply queue"
    );
    asking.shutdown().await;
    answering.shutdown().await;
}

/// `reply` answers only a request, only once; the wait for a reply is wall-clock
/// time (the invocation's `timeout_ms` ends it), never CPU (a `cpu_ms` far below the
/// wait does not).
#[tokio::test(flavor = "multi_thread")]
async fn replies_are_once_per_request_and_waiting_is_not_cpu() {
    init_tracing();
    let (asker, answerer) = (unique("asker"), unique("answerer"));
    let dir = PluginDir::with(&[(&asker, "fixture_asker"), (&answerer, "fixture_answerer")]);
    let mut config = config(&dir);
    pair(&mut config, &asker, &answerer);
    let asker_limits = &mut config.plugins.get_mut(&asker).unwrap().limits;
    asker_limits.cpu_ms = Some(50);
    asker_limits.timeout_ms = Some(3_000);
    // The request that times out is dead-lettered after one quick retry.
    let email = config.queues.get_mut("email").unwrap();
    email.max_retries = 1;
    email.retry_delay_ms = 100;
    let platform = start(config.clone()).await;

    // An 800 ms wait under a 50 ms CPU limit.
    let slow = ask(&platform, "rpc.slow", "patient", 2_000).await;
    assert_eq!(slow["ok"], "patient", "{slow}");

    // A second reply to one request is refused (else it would arrive late).
    let twice = ask(&platform, "rpc.twice", "", 2_000).await;
    assert_eq!(twice["ok"], "first");

    // A message that is not a request cannot be answered.
    let plain = platform
        .publish("rpc.echo", b"no one waits".to_vec(), None)
        .await
        .unwrap();
    let letter = dead_letter_of(&platform, &plain).await;
    assert!(
        letter.reason.contains("asks for no reply"),
        "{}",
        letter.reason
    );
    assert_eq!(
        platform.services.messaging.replies.late(),
        0,
        "no second reply went out"
    );
    assert_eq!(
        platform
            .services
            .messaging
            .broker
            .dead_letter_depth()
            .await
            .unwrap(),
        1,
        "only the plain message was rejected"
    );

    // The invocation's wall-clock limit ends a longer wait.
    config.plugins.get_mut(&asker).unwrap().limits.timeout_ms = Some(300);
    platform.reload_config(config).await.unwrap();
    let mut answers = sink(&platform, &["answers.*"]).await;
    let ask = json!({"key": "rpc.silent", "body": "", "timeout_ms": 60_000});
    let id = platform
        .publish("ask.now", ask.to_string().into_bytes(), None)
        .await
        .unwrap();
    let letter = dead_letter_of(&platform, &id).await;
    assert!(
        letter.reason.contains("timeout of 300 ms exceeded"),
        "{}",
        letter.reason
    );
    let reported = tokio::time::timeout(Duration::from_millis(300), answers.next()).await;
    assert!(reported.is_err(), "a cancelled request reports nothing");
    platform.shutdown().await;
}
