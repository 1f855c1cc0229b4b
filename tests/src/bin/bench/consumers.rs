//! The message path against a native consumer: a no-op plugin and a native lapin
//! consumer (same broker setup, same prefetch, manual acks, a task per delivery)
//! drain the same pre-filled queue, at several prefetch windows; the plugin once with
//! a fresh instance per message (the default) and once reusing its instances
//! (`limits.reuse_instance = 1000`). Besides messages/s,
//! each run reports this process's CPU time per message (the broker's is not in it):
//! what the path itself costs, which the machine's neighbours do not move.

use std::time::{Duration, Instant};
use techub_host::Platform;
use techub_host::capability::messaging::amqp::AmqpBroker;
use techub_host::capability::messaging::{Broker, MessageStatus, QueueSpec};
use techub_host::config::{BrokerBackend, HostConfig};
use techub_host::names::topology::queue_name;
use techub_tests::{PluginDir, config, services, unique};

const MESSAGES: usize = 5_000;

/// CPU time of this whole process (every thread) so far.
fn process_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// One drain of the queue: messages/s, and this process's CPU µs per message.
struct Run {
    rate: f64,
    cpu_us: f64,
}

impl Run {
    fn since(started: Instant, cpu: Duration) -> Self {
        Self {
            rate: MESSAGES as f64 / started.elapsed().as_secs_f64(),
            cpu_us: (process_cpu() - cpu).as_secs_f64() * 1e6 / MESSAGES as f64,
        }
    }
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
) -> anyhow::Result<Run> {
    let broker = AmqpBroker::connect(
        &config.amqp,
        config.dead_letter,
        config.messaging,
        Default::default(),
        techub_host::capability::messaging::amqp::seal::DeathSeal::with_key(b"test key"),
    )
    .await?;
    let queue = queue_name(&config.amqp.queue_prefix, "analytics", plugin);
    broker
        .declare_queue(&queue_spec(queue, "fixture.noop.#"))
        .await
        .map_err(anyhow::Error::msg)?;
    let ids = fill(&broker, "fixture.noop.x", MESSAGES).await?;
    let mut config = config.clone();
    let limits = &mut config.plugins.get_mut(plugin).expect("granted").limits;
    limits.prefetch = Some(prefetch);
    limits.reuse_instance = Some(reuse_instance);
    let platform = Platform::start(config).await?;
    let deadline = Instant::now() + Duration::from_secs(300);
    let completed =
        |id: &String| platform.services.tracker.get(id) == Some(MessageStatus::Completed);
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
    Ok(Run::since(started, cpu))
}

async fn native(config: &HostConfig, prefetch: u16) -> anyhow::Result<Run> {
    let broker = AmqpBroker::connect(
        &config.amqp,
        config.dead_letter,
        config.messaging,
        Default::default(),
        techub_host::capability::messaging::amqp::seal::DeathSeal::with_key(b"test key"),
    )
    .await?;
    let queue = unique("native");
    broker
        .declare_queue(&queue_spec(queue.clone(), "native.noop"))
        .await
        .map_err(anyhow::Error::msg)?;
    fill(&broker, "native.noop", MESSAGES).await?;
    let mut consumer = broker
        .consume(&queue, prefetch)
        .await
        .map_err(anyhow::Error::msg)?;
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut started = None;
    for _ in 0..MESSAGES {
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
    for _ in 0..MESSAGES {
        done_rx.recv().await;
    }
    let (started, cpu) = started.expect("at least one delivery");
    Ok(Run::since(started, cpu))
}

/// Messages one instance handles in the sweep's reusing runs.
const REUSE: u32 = 1_000;

/// The sweep's rounds of one way of running the plugin against the native consumer.
#[derive(Default)]
struct Rounds {
    ratios: Vec<f64>,
    rates: Vec<f64>,
    cpu_us: Vec<f64>,
}

impl Rounds {
    fn push(&mut self, plugin: &Run, native: &Run) {
        self.ratios.push(plugin.rate / native.rate);
        self.rates.push(plugin.rate);
        self.cpu_us.push(plugin.cpu_us);
    }

    fn report(&self, what: &str, prefetch: u16, native: &Rounds) {
        let shown: Vec<String> = self.ratios.iter().map(|r| format!("{r:.2}")).collect();
        let (rate, native_rate) = (median(self.rates.clone()), median(native.rates.clone()));
        let (cpu, native_cpu) = (median(self.cpu_us.clone()), median(native.cpu_us.clone()));
        println!(
            "no-op x{MESSAGES}, prefetch {prefetch}, {what}: plugin {rate:.0} msg/s, native consumer {native_rate:.0} msg/s (medians of {}); plugin/native = {:.2} (median of rounds {})",
            self.ratios.len(),
            median(self.ratios.clone()),
            shown.join(" ")
        );
        println!(
            "no-op, prefetch {prefetch}, {what}: this process's CPU per message: plugin {cpu:.1} us, native consumer {native_cpu:.1} us (medians); the path adds {:.1} us",
            cpu - native_cpu
        );
    }
}

pub async fn prefetch_sweep() -> anyhow::Result<()> {
    // One run of each is noise on a shared machine (ratios from 0.5 to 1.4 were seen):
    // alternate ROUNDS triples, each in turn order, and take the median ratio.
    const ROUNDS: usize = 7;
    for prefetch in [1u16, 10, 50] {
        let (mut fresh, mut reusing, mut native_runs) =
            (Rounds::default(), Rounds::default(), Rounds::default());
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
        for round in 0..ROUNDS {
            let (one, kept, native) = if round % 2 == 0 {
                let one = run(Some(1)).await?;
                let kept = run(Some(REUSE)).await?;
                (one, kept, run(None).await?)
            } else {
                let native = run(None).await?;
                let kept = run(Some(REUSE)).await?;
                (run(Some(1)).await?, kept, native)
            };
            fresh.push(&one, &native);
            reusing.push(&kept, &native);
            native_runs.push(&native, &native);
        }
        fresh.report("a fresh instance per message", prefetch, &native_runs);
        reusing.report(&format!("reuse_instance = {REUSE}"), prefetch, &native_runs);
    }
    Ok(())
}

/// The middle value (the upper one of an even count).
pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// `bench quorum`: the no-op plugin (a fresh instance per message) and the native
/// consumer on a quorum queue against a classic one, on a three-node cluster of the
/// bench's own (the classic queue on one of its nodes), at prefetch 10 and 50.
/// Alternating rounds, medians.
pub async fn quorum_vs_classic() -> anyhow::Result<()> {
    use techub_host::config::QueueKind;
    const ROUNDS: usize = 3;
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
        let kinds = [QueueKind::Classic, QueueKind::Quorum];
        // rates[kind][plugin = 0, native = 1]
        let mut rates = [[Vec::new(), Vec::new()], [Vec::new(), Vec::new()]];
        for round in 0..ROUNDS {
            let mut order: Vec<(usize, usize)> = vec![(0, 0), (1, 0), (0, 1), (1, 1)];
            if round % 2 == 1 {
                order.reverse();
            }
            for (kind, side) in order {
                let result = run(kinds[kind], side == 0).await?;
                rates[kind][side].push(result.rate);
            }
        }
        let m = |v: &Vec<f64>| median(v.clone());
        let (cp, cn, qp, qn) = (
            m(&rates[0][0]),
            m(&rates[0][1]),
            m(&rates[1][0]),
            m(&rates[1][1]),
        );
        println!(
            "no-op x{MESSAGES}, prefetch {prefetch}, three-node cluster: classic queue: plugin {cp:.0} msg/s, native {cn:.0} msg/s; quorum queue: plugin {qp:.0} msg/s, native {qn:.0} msg/s (medians of {ROUNDS}); quorum/classic: plugin {:.2}, native {:.2}; plugin/native: classic {:.2}, quorum {:.2}",
            qp / cp,
            qn / cn,
            cp / cn,
            qp / qn
        );
    }
    Ok(())
}
