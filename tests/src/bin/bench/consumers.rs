//! The message path against a native consumer: a no-op plugin and a native lapin
//! consumer (same broker setup, same prefetch, manual acks, a task per delivery)
//! drain the same pre-filled queue, at several prefetch windows; the plugin once with
//! a fresh instance per message (the default) and once reusing its instances
//! (`limits.reuse_instance = 1000`). Besides messages/s,
//! each run reports this process's CPU time per message (the broker's is not in it):
//! what the path itself costs, which the machine's neighbours do not move.

use super::harness::Count;
use super::harness::{self, Rounds, Sample, process_cpu};
use std::time::{Duration, Instant};
use techub_host::Platform;
use techub_host::capability::messaging::amqp::AmqpBroker;
use techub_host::capability::messaging::{Broker, MessageStatus, QueueSpec};
use techub_host::config::{BrokerBackend, HostConfig};
use techub_host::names::topology::queue_name;
use techub_tests::{PluginDir, config, services, unique};

static MESSAGES: Count<usize> = Count::new(5_000, 112);

/// One drain of the queue, from its first completion to its last.
fn since(started: Instant, cpu: Duration) -> Sample {
    harness::sample_of(*MESSAGES as u64, started.elapsed(), process_cpu() - cpu)
}

/// Publishes `count` messages with `routing_key`, from 8 tasks; their ids.
async fn fill(broker: &AmqpBroker, routing_key: &str, count: usize) -> anyhow::Result<Vec<String>> {
    let ids: Vec<String> = (0..count).map(|i| format!("{i}-{}", unique("m"))).collect();
    let mut tasks = Vec::new();
    for chunk in ids.chunks(count.div_ceil(8)) {
        let (broker, chunk, key) = (broker.clone(), chunk.to_vec(), routing_key.to_string());
        tasks.push(tokio::spawn(async move {
            for id in chunk {
                let mut envelope = super::envelope(&key, b"{}".to_vec());
                envelope.id = id;
                broker
                    .publish(envelope, None)
                    .await
                    .map_err(anyhow::Error::msg)?;
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(ids)
}

fn queue_spec(name: String, binding: &str) -> QueueSpec {
    QueueSpec {
        name,
        bindings: vec![binding.to_string()],
        durable: true,
        limits: Default::default(),
    }
}

/// From the first completion to the last, for the pre-filled queue.
async fn through_platform(
    config: &HostConfig,
    plugin: &str,
    prefetch: u16,
    reuse_instance: u32,
) -> anyhow::Result<Sample> {
    let broker = super::amqp_broker(config).await?;
    let queue = queue_name(&config.amqp.queue_prefix, "analytics", plugin);
    broker
        .declare_queue(&queue_spec(queue, "fixture.noop.#"))
        .await
        .map_err(anyhow::Error::msg)?;
    let ids = fill(&broker, "fixture.noop.x", *MESSAGES).await?;
    let mut config = config.clone();
    let limits = &mut config.plugins.get_mut(plugin).expect("granted").limits;
    limits.prefetch = Some(prefetch);
    limits.reuse_instance = Some(reuse_instance);
    let platform = Platform::start(config).await?;
    let deadline = Instant::now() + Duration::from_secs(300);
    let completed =
        |id: &String| platform.services.messaging.tracker.get(id) == Some(MessageStatus::Completed);
    while !ids.iter().take(prefetch.into()).any(completed) {
        anyhow::ensure!(Instant::now() < deadline, "the platform never started");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let (started, cpu) = (Instant::now(), process_cpu());
    let mut finished = 0;
    while finished < ids.len() {
        if completed(&ids[finished]) {
            finished += 1;
            continue;
        }
        anyhow::ensure!(Instant::now() < deadline, "the platform did not finish");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(since(started, cpu))
}

async fn native(config: &HostConfig, prefetch: u16) -> anyhow::Result<Sample> {
    let broker = super::amqp_broker(config).await?;
    let queue = unique("native");
    broker
        .declare_queue(&queue_spec(queue.clone(), "native.noop"))
        .await
        .map_err(anyhow::Error::msg)?;
    fill(&broker, "native.noop", *MESSAGES).await?;
    let mut consumer = broker
        .consume(&queue, prefetch)
        .await
        .map_err(anyhow::Error::msg)?;
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut started = None;
    for _ in 0..*MESSAGES {
        let Some(delivery) = consumer.next().await else {
            anyhow::bail!("consumer closed")
        };
        started.get_or_insert_with(|| (Instant::now(), process_cpu()));
        let done = done_tx.clone();
        tokio::spawn(async move {
            delivery.ack().await.expect("ack");
            let _ = done.send(());
        });
    }
    for _ in 0..*MESSAGES {
        done_rx.recv().await;
    }
    let (started, cpu) = started.expect("at least one delivery");
    Ok(since(started, cpu))
}

/// Messages one instance handles in the sweep's reusing runs.
const REUSE: u32 = 1_000;

pub async fn prefetch_sweep() -> anyhow::Result<()> {
    // One run of each is noise on a shared machine (ratios from 0.5 to 1.4 were seen).
    static ROUNDS: Count<usize> = Count::new(7, 1);
    for prefetch in [1u16, 10, 50] {
        // Each run its own plugin (its own queue), on RabbitMQ.
        let run = async |reuse_instance: Option<u32>| {
            let plugin = unique("noop");
            let dir = PluginDir::with(&[(&plugin, "fixture_noop")]);
            let mut config = config(&dir);
            config.backends.messaging = BrokerBackend::Amqp;
            config.amqp = services::amqp_config();
            match reuse_instance {
                Some(reuse) => through_platform(&config, &plugin, prefetch, reuse).await,
                None => native(&config, prefetch).await,
            }
        };
        let sides = [
            "plugin, a fresh instance per message",
            "plugin, reuse_instance = 1000",
            "native consumer",
        ];
        let rounds = Rounds::alternate(&sides, *ROUNDS, async |side| match side {
            0 => run(Some(1)).await,
            1 => run(Some(REUSE)).await,
            _ => run(None).await,
        })
        .await?;
        rounds.report(
            &format!("no-op x{MESSAGES}, prefetch {prefetch}, RabbitMQ"),
            "msg",
            &[(0, 2), (1, 2)],
        );
    }
    Ok(())
}

/// `bench quorum`: the no-op plugin (a fresh instance per message) and the native
/// consumer on a quorum queue against a classic one, on a three-node cluster of the
/// bench's own (the classic queue on one of its nodes), at prefetch 10 and 50.
/// Alternating rounds, medians.
pub async fn quorum_vs_classic() -> anyhow::Result<()> {
    use techub_host::config::QueueKind;
    static ROUNDS: Count<usize> = Count::new(5, 1);
    let cluster = tokio::task::spawn_blocking(|| techub_tests::RabbitCluster::start(3)).await?;
    for prefetch in [10u16, 50] {
        let run = async |kind: QueueKind, through_plugin: bool| {
            let plugin = unique("noop");
            let dir = PluginDir::with(&[(&plugin, "fixture_noop")]);
            let mut config = config(&dir);
            config.backends.messaging = BrokerBackend::Amqp;
            config.amqp = services::amqp_config();
            config.amqp.urls = cluster.urls();
            config.amqp.queue_kind = kind;
            match through_plugin {
                true => through_platform(&config, &plugin, prefetch, 1).await,
                false => native(&config, prefetch).await,
            }
        };
        let sides = [
            "plugin, classic queue",
            "plugin, quorum queue",
            "native, classic queue",
            "native, quorum queue",
        ];
        let rounds = Rounds::alternate(&sides, *ROUNDS, async |side| {
            let kind = [QueueKind::Classic, QueueKind::Quorum][side % 2];
            run(kind, side < 2).await
        })
        .await?;
        rounds.report(
            &format!("no-op x{MESSAGES}, prefetch {prefetch}, three-node cluster"),
            "msg",
            &[(1, 0), (3, 2), (0, 2), (1, 3)],
        );
    }
    Ok(())
}
