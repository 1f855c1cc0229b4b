//! A three-node RabbitMQ cluster of the test's own (see `techub_tests::RabbitCluster`)
//! with quorum queues: a node killed under a confirmed stream loses nothing.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use techub_host::capability::messaging::amqp::AmqpBroker;
use techub_host::capability::messaging::{Broker, QueueSpec};
use techub_host::config::{MessagingConfig, QueueKind};
use techub_tests::{RabbitCluster, envelope, init_tracing, services, unique};

/// Messages in the stream; the node dies when half of them are confirmed.
const MESSAGES: usize = 600;

/// Publishes `MESSAGES` messages one by one, each retried until the broker confirms
/// it (as a plugin's publish is retried on `unavailable`), and kills the node the
/// host is connected to when half are confirmed. Every confirmed message is then
/// consumed (lost: 0), the host having moved to another node; the time from the kill
/// to the next confirmed publish is printed.
#[tokio::test(flavor = "multi_thread")]
async fn a_node_killed_under_a_confirmed_stream_loses_nothing_on_quorum_queues() {
    init_tracing();
    let cluster = tokio::task::spawn_blocking(|| RabbitCluster::start(3))
        .await
        .unwrap();
    let mut config = services::amqp_config();
    config.urls = cluster.urls();
    config.queue_kind = QueueKind::Quorum;
    config.connection_timeout_ms = 2_000;
    let messaging = MessagingConfig {
        confirm_timeout_ms: 2_000,
        ..MessagingConfig::default()
    };
    let broker = AmqpBroker::connect(
        &config,
        Default::default(),
        messaging,
        Default::default(),
        techub_host::capability::messaging::amqp::seal::DeathSeal::with_key(b"test key"),
    )
    .await
    .unwrap();
    let topic = unique("cluster");
    let spec = QueueSpec {
        name: format!("{topic}.q"),
        bindings: vec![format!("{topic}.#")],
        durable: true,
        limits: Default::default(),
    };
    broker.declare_queue(&spec).await.unwrap();
    let received = Arc::new(Mutex::new(HashSet::new()));
    let mut consumer = broker.consume(&spec.name, 50).await.unwrap();
    let seen = received.clone();
    let consuming = tokio::spawn(async move {
        while let Some(delivery) = consumer.next().await {
            seen.lock().unwrap().insert(delivery.envelope().id.clone());
            let _ = delivery.ack().await;
        }
    });

    let mut confirmed = Vec::new();
    let (mut killed_at, mut recovered_after, mut killed_node) = (None, None, String::new());
    for i in 0..MESSAGES {
        let message = envelope(&format!("{topic}.m"), format!("{i}").into_bytes());
        let giving_up = Instant::now() + Duration::from_secs(60);
        loop {
            match broker.publish(message.clone(), None).await {
                Ok(()) => break,
                Err(error) => {
                    let alive = cluster.nodes.iter().position(|n| n.name != killed_node);
                    assert!(
                        Instant::now() < giving_up,
                        "message {i} not confirmed within 60 s: {error}\n{}",
                        cluster.queues_report(alive.unwrap_or(0))
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        confirmed.push(message.id.clone());
        if let (Some(at), None) = (killed_at, recovered_after) {
            recovered_after = Some(Instant::now().duration_since(at));
        }
        if i == MESSAGES / 2 {
            let on = broker.connected_node().expect("a cluster node");
            let port: u16 = on
                .rsplit(':')
                .next()
                .and_then(|p| p.split('/').next())
                .and_then(|p| p.parse().ok())
                .unwrap_or_else(|| panic!("a port in {on}"));
            let node = cluster.node_on(port);
            killed_node = node.name.clone();
            node.kill();
            killed_at = Some(Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let moved_to = broker.connected_node().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let lost = loop {
        let lost: Vec<String> = {
            let seen = received.lock().unwrap();
            confirmed
                .iter()
                .filter(|id| !seen.contains(*id))
                .cloned()
                .collect()
        };
        if lost.is_empty() || Instant::now() > deadline {
            break lost;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!(
        "cluster: {} confirmed, {} lost; killed {killed_node} (the host's node), publishing again {:.2} s later, on {moved_to}",
        confirmed.len(),
        lost.len(),
        recovered_after.unwrap_or_default().as_secs_f64()
    );
    assert!(
        lost.is_empty(),
        "{} confirmed messages lost: {lost:?}",
        lost.len()
    );
    assert!(
        !moved_to.contains(&format!(
            ":{}/",
            cluster
                .nodes
                .iter()
                .find(|n| n.name == killed_node)
                .unwrap()
                .port
        )),
        "the host moved off the killed node: {moved_to}"
    );
    consuming.abort();
    broker.close().await;
}
