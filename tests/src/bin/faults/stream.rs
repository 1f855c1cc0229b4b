//! The ledger scenarios: a confirmed stream into the `ledger` fixture, one fault
//! injected when half of it is confirmed, every confirmed id looked for in Redis.

use crate::Row;
use crate::host::{HostProcess, LEDGER};
use crate::ledger::{Ledger, Publisher};
use crate::tally;
use std::time::{Duration, Instant};
use techub_host::capability::messaging::amqp::{connection_name, policies::Management};
use techub_host::config::{RedisConfig, RedisMode};
use techub_tests::redis_nodes::{MASTER_NAME, RedisCluster, RedisSentinels};
use techub_tests::{OwnRedis, RabbitCluster, TcpProxy};

/// The Redis settings of the failover scenarios: commands time out in 1 s so that a
/// guest hears `unavailable` (and retries) well within its own limits.
fn durable_redis() -> RedisConfig {
    RedisConfig {
        command_timeout_ms: 1_000,
        connection_timeout_ms: 1_000,
        ..RedisConfig::default()
    }
}

/// One scenario's fault.
#[derive(Debug, Clone, Copy)]
pub enum Fault {
    /// `kill -9` of the host, then a restart.
    Kill,
    /// SIGTERM (the host drains what it holds), then a restart.
    Term,
    /// Two hosts compete for the queue; one is killed for good.
    KillOneOfTwo,
    /// The host's own Redis (where its store, and the ledger, live) killed for 5 s,
    /// then restarted with its data (append-only file).
    RedisOutage,
    /// RabbitMQ force-closes the host's connection, twice (through the management
    /// API, as `rabbitmqctl close_connection` does; only this host's connection, the
    /// broker being shared).
    ConnectionsClosed,
    /// The network between the host and RabbitMQ (a TCP proxy) holds every byte for
    /// 5 s, connections left open, then delivers again.
    NetworkStall,
    /// The network drops every connection and refuses new ones for 5 s, then comes
    /// back: the broker is gone from the host's view, and returns.
    NetworkDrop,
    /// A three-node RabbitMQ cluster with quorum queues: `kill -9` of the node that
    /// leads the plugin's queue (started again after the scenario).
    ClusterLeaderKilled,
    /// The cluster: `kill -9` of the node the host is connected to.
    ClusterHostNodeKilled,
    /// The cluster: the host's node stopped gracefully, started again 3 s later.
    ClusterNodeRestarted,
    /// The cluster, two hosts: `kill -9` of the node the first is connected to.
    ClusterTwoHosts,
    /// The store on a six-node Redis Cluster (`[redis] mode = "cluster"`): `kill -9`
    /// of the primary that holds the ledger's claims and effects (its `{ledger}` slot).
    RedisClusterPrimaryKilled,
    /// The same on a cluster of nine nodes (two replicas per primary) with
    /// `wait_replicas = 1`.
    RedisClusterPrimaryKilledWaiting,
    /// The store on a primary behind three sentinels (`mode = "sentinel"`): `kill -9`
    /// of the primary.
    RedisSentinelPrimaryKilled,
    /// The same with two replicas and `wait_replicas = 1`: claims, fencing and atomic
    /// batches wait for a replica, so the failover cannot lose them.
    RedisSentinelPrimaryKilledWaiting,
}

impl Fault {
    pub const ALL: [Fault; 15] = [
        Fault::Kill,
        Fault::Term,
        Fault::KillOneOfTwo,
        Fault::RedisOutage,
        Fault::ConnectionsClosed,
        Fault::NetworkStall,
        Fault::NetworkDrop,
        Fault::ClusterLeaderKilled,
        Fault::ClusterHostNodeKilled,
        Fault::ClusterNodeRestarted,
        Fault::ClusterTwoHosts,
        Fault::RedisClusterPrimaryKilled,
        Fault::RedisClusterPrimaryKilledWaiting,
        Fault::RedisSentinelPrimaryKilled,
        Fault::RedisSentinelPrimaryKilledWaiting,
    ];

    /// Whether it runs on the three-node cluster.
    pub fn on_cluster(self) -> bool {
        matches!(
            self,
            Fault::ClusterLeaderKilled
                | Fault::ClusterHostNodeKilled
                | Fault::ClusterNodeRestarted
                | Fault::ClusterTwoHosts
        )
    }

    /// Whether it takes a Redis primary away: the ledger then also keeps its fenced
    /// counter (`tally.rs`).
    pub fn fails_redis_over(self) -> bool {
        matches!(
            self,
            Fault::RedisClusterPrimaryKilled
                | Fault::RedisClusterPrimaryKilledWaiting
                | Fault::RedisSentinelPrimaryKilled
                | Fault::RedisSentinelPrimaryKilledWaiting
        )
    }

    /// Whether claims and fencing wait for a replica in it (`wait_replicas = 1`).
    pub fn waits_for_replicas(self) -> bool {
        matches!(
            self,
            Fault::RedisClusterPrimaryKilledWaiting | Fault::RedisSentinelPrimaryKilledWaiting
        )
    }

    pub fn name(self) -> &'static str {
        match self {
            Fault::Kill => "kill -9 mid-stream, restart",
            Fault::Term => "SIGTERM mid-stream (drain), restart",
            Fault::KillOneOfTwo => "two hosts, one killed for good",
            Fault::RedisOutage => "the host's Redis down 5 s",
            Fault::ConnectionsClosed => "RabbitMQ closes the connection twice",
            Fault::NetworkStall => "network to RabbitMQ stalls 5 s",
            Fault::NetworkDrop => "network to RabbitMQ drops 5 s",
            Fault::ClusterLeaderKilled => "cluster: the queue's leader node killed",
            Fault::ClusterHostNodeKilled => "cluster: the host's node killed",
            Fault::ClusterNodeRestarted => "cluster: the host's node stopped, restarted",
            Fault::ClusterTwoHosts => "cluster: two hosts, one's node killed",
            Fault::RedisClusterPrimaryKilled => "Redis Cluster: the claims' primary killed",
            Fault::RedisClusterPrimaryKilledWaiting => {
                "Redis Cluster, wait_replicas 1: claims' primary killed"
            }
            Fault::RedisSentinelPrimaryKilled => "Redis Sentinel: the primary killed",
            Fault::RedisSentinelPrimaryKilledWaiting => {
                "Redis Sentinel, wait_replicas 1: primary killed"
            }
        }
    }
}

/// What a scenario needs beside the host: a Redis of its own, a second host, a proxy.
#[derive(Default)]
struct Rig {
    own_redis: Option<OwnRedis>,
    sibling: Option<HostProcess>,
    proxy: Option<TcpProxy>,
    /// The cluster's node this scenario killed or stopped, to start again after it.
    downed: Option<usize>,
    redis_cluster: Option<RedisCluster>,
    sentinels: Option<RedisSentinels>,
}

pub async fn scenario(
    fault: Fault,
    messages: usize,
    cluster: Option<&RabbitCluster>,
) -> anyhow::Result<Row> {
    let mut host = HostProcess::configure(fault.name(), LEDGER)?;
    if fault.on_cluster() {
        let cluster = cluster.ok_or_else(|| anyhow::anyhow!("no cluster started"))?;
        host.use_cluster(cluster.urls())?;
    }
    let data = tempfile::tempdir()?;
    let mut rig = Rig::default();
    match fault {
        Fault::RedisOutage => {
            // A Redis of its own, which keeps its data across the restart (an
            // append-only file in a directory of its own).
            let dir = data.path().display().to_string();
            let args = [
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--dir",
                &dir,
            ];
            let redis = OwnRedis::start_with(&args).await;
            host.use_redis(&redis.url())?;
            rig.own_redis = Some(redis);
        }
        Fault::KillOneOfTwo | Fault::ClusterTwoHosts => rig.sibling = Some(host.sibling()?),
        Fault::RedisClusterPrimaryKilled | Fault::RedisClusterPrimaryKilledWaiting => {
            let waiting = fault.waits_for_replicas();
            // Waiting for one replica needs one left after the failover: two each.
            let cluster = RedisCluster::start_with_replicas(1 + usize::from(waiting)).await;
            host.use_redis_config(RedisConfig {
                mode: RedisMode::Cluster,
                urls: cluster.urls(),
                wait_replicas: u32::from(waiting),
                wait_timeout_ms: 500,
                ..durable_redis()
            })?;
            rig.redis_cluster = Some(cluster);
        }
        Fault::RedisSentinelPrimaryKilled | Fault::RedisSentinelPrimaryKilledWaiting => {
            let waiting = fault.waits_for_replicas();
            // Waiting for one replica needs one left after the failover: two.
            let set = RedisSentinels::start_with_replicas(1 + usize::from(waiting)).await;
            host.use_redis_config(RedisConfig {
                mode: RedisMode::Sentinel,
                sentinels: set.urls(),
                master_name: MASTER_NAME.into(),
                wait_replicas: u32::from(waiting),
                wait_timeout_ms: 500,
                ..durable_redis()
            })?;
            rig.sentinels = Some(set);
        }
        Fault::NetworkStall | Fault::NetworkDrop => {
            // Only the host goes through the proxy; the publisher and the ledger
            // talk to the broker and Redis directly.
            let proxy = TcpProxy::start("127.0.0.1:5672").await;
            let url = host
                .config
                .amqp
                .url
                .replace(":5672", &format!(":{}", proxy.port));
            anyhow::ensure!(url != host.config.amqp.url, "amqp.url names port 5672");
            host.rewrite(|config| config.amqp.url = url)?;
            rig.proxy = Some(proxy);
        }
        _ => {}
    }
    if fault.fails_redis_over() {
        tally::turn_on(&mut host)?;
    }
    host.start()?;
    host.ready().await?;
    if let Some(sibling) = &mut rig.sibling {
        sibling.start()?;
        sibling.ready().await?;
    }
    let publisher = Publisher::connect(&host.config).await?;
    let ledger = Ledger::new(&host.config, LEDGER.plugin).await?;
    let reports = match fault.fails_redis_over() {
        true => Some(tally::Reports::collect(&publisher).await?),
        false => None,
    };
    let stream = publisher.stream("fixture.ledger.m", messages);
    while publisher.confirmed().len() < messages / 2 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Mid-message: once a delivery is being handled (for at most 2 s).
    let waiting = Instant::now();
    while ledger.unfinished().await? <= 0 && waiting.elapsed() < Duration::from_secs(2) {
        tokio::task::yield_now().await;
    }
    inject(fault, &mut host, &mut rig, cluster).await?;
    // The fault is over. Recovered: a delivery started after it (the fixture counts
    // each one as it starts, so deliveries that were in flight do not count), or (the
    // stream having ended) everything handled. When the fault took a Redis primary
    // away, deliveries start (and fail) during the failover: there, recovered is an
    // effect made after it (`{ledger}effects` lives on the primary killed).
    // The clock starts before the ledger is read: when the fault took the ledger's
    // own Redis primary, that read waits for the failover, which then counts.
    let ended = Instant::now();
    let progress = async || match fault.fails_redis_over() {
        true => ledger.effects().await,
        false => ledger.deliveries().await,
    };
    let before = progress().await?;
    let recovery = loop {
        let handled = ledger.handled().await?;
        let all =
            stream.is_finished() && publisher.confirmed().iter().all(|id| handled.contains(id));
        if progress().await? > before || all {
            break ended.elapsed();
        }
        anyhow::ensure!(
            ended.elapsed() < Duration::from_secs(60),
            "{}: nothing handled within 60 s of the fault's end",
            fault.name()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let published = stream.await??;
    let confirmed = publisher.confirmed();
    // Until every confirmed message is handled, or 60 s pass.
    let settled = Instant::now();
    let handled = loop {
        let handled = ledger.handled().await?;
        if confirmed.iter().all(|id| handled.contains(id))
            || settled.elapsed() > Duration::from_secs(60)
        {
            break handled;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let deliveries = ledger.deliveries().await?;
    let effects = ledger.effects().await?;
    let tally = match reports {
        Some(reports) => {
            reports.settle(&handled).await;
            let counter = match ledger.bytes("{ledger}tally").await? {
                None => 0,
                Some(bytes) => crate::fence::fenced_value(&bytes)?,
            };
            let outcomes = host.invocation_outcomes(LEDGER.plugin).await?;
            let waited = fault.waits_for_replicas();
            Some(reports.tally(&publisher, counter, &outcomes, waited).await)
        }
        None => None,
    };
    let dead_lettered = publisher.dead_letter_depth().await?;
    host.terminate(Duration::from_secs(30))?;
    if let Some(sibling) = &mut rig.sibling {
        sibling.terminate(Duration::from_secs(30))?;
    }
    if let (Some(node), Some(cluster)) = (rig.downed, cluster) {
        let node = &cluster.nodes[node];
        tokio::task::block_in_place(|| node.restart());
    }
    Ok(Row {
        scenario: fault.name(),
        published,
        confirmed: confirmed.len(),
        handled: handled.len(),
        // Every start beyond one per id (a host killed between two of the fixture's
        // records still counted the start).
        redeliveries: (deliveries - handled.len() as i64).max(0) as u64,
        duplicate_effects: effects - handled.len() as i64,
        lost: confirmed.iter().filter(|id| !handled.contains(*id)).count(),
        dead_lettered,
        recovery_s: recovery.as_secs_f64(),
        fencing: None,
        tally,
    })
}

/// Injects `fault`; returns when it is over (a node killed: at once).
async fn inject(
    fault: Fault,
    host: &mut HostProcess,
    rig: &mut Rig,
    cluster: Option<&RabbitCluster>,
) -> anyhow::Result<()> {
    if fault.on_cluster() {
        let cluster = cluster.ok_or_else(|| anyhow::anyhow!("no cluster started"))?;
        return inject_on_cluster(fault, host, rig, cluster).await;
    }
    match fault {
        Fault::Kill => {
            host.kill();
            tokio::time::sleep(Duration::from_secs(1)).await;
            host.start()?;
        }
        Fault::Term => {
            host.terminate(Duration::from_secs(30))?;
            tokio::time::sleep(Duration::from_secs(1)).await;
            host.start()?;
        }
        // The sibling carries on alone.
        Fault::KillOneOfTwo => host.kill(),
        Fault::RedisOutage => {
            let redis = rig.own_redis.as_mut().expect("started for this fault");
            redis.kill();
            tokio::time::sleep(Duration::from_secs(5)).await;
            redis.restart().await;
        }
        Fault::ConnectionsClosed => {
            let api = Management::new(&host.config.amqp).map_err(anyhow::Error::msg)?;
            let name = connection_name_of(host)?;
            let mut closed = Vec::new();
            for _ in 0..2 {
                // Wait for the connection (the second time: the one the host made
                // after the first close), then close it with deliveries in flight.
                let connection = wait_for_connection(&api, &name, &closed).await?;
                tokio::time::sleep(Duration::from_millis(500)).await;
                api.close_connection(&connection)
                    .await
                    .map_err(anyhow::Error::msg)?;
                closed.push(connection);
            }
        }
        Fault::NetworkStall => {
            let proxy = rig.proxy.as_ref().expect("started for this fault");
            proxy.stall();
            tokio::time::sleep(Duration::from_secs(5)).await;
            proxy.flow();
        }
        Fault::NetworkDrop => {
            let proxy = rig.proxy.as_ref().expect("started for this fault");
            proxy.cut();
            tokio::time::sleep(Duration::from_secs(5)).await;
            proxy.restore();
        }
        Fault::RedisClusterPrimaryKilled | Fault::RedisClusterPrimaryKilledWaiting => {
            let cluster = rig.redis_cluster.as_mut().expect("started for this fault");
            let claims = format!(
                "{}store:{}:{{ledger}}effects",
                host.config.host.key_prefix, LEDGER.plugin
            );
            let primary = cluster.primary_of(&claims);
            println!("  {}: node {}", fault.name(), cluster.nodes[primary].port);
            cluster.nodes[primary].kill();
        }
        Fault::RedisSentinelPrimaryKilled | Fault::RedisSentinelPrimaryKilledWaiting => {
            let set = rig.sentinels.as_mut().expect("started for this fault");
            println!("  {}: node {}", fault.name(), set.data[0].port);
            set.data[0].kill();
        }
        _ => anyhow::bail!("{} runs on the cluster", fault.name()),
    }
    Ok(())
}

/// The cluster's faults: which node goes, and how.
async fn inject_on_cluster(
    fault: Fault,
    host: &HostProcess,
    rig: &mut Rig,
    cluster: &RabbitCluster,
) -> anyhow::Result<()> {
    let host_node = || -> anyhow::Result<usize> {
        let name = connection_name_of(host)?;
        (0..cluster.nodes.len())
            .find_map(|via| cluster.node_of_connection(&name, via))
            .and_then(|node| cluster.nodes.iter().position(|n| n.name == node.name))
            .ok_or_else(|| anyhow::anyhow!("no node shows the host's connection {name:?}"))
    };
    let index = match fault {
        Fault::ClusterLeaderKilled => {
            let prefix = &host.config.amqp.queue_prefix;
            // The ledger subscribes as queue type `order` (see `fixtures/ledger`), whose
            // messages (priority `high`) are in the quorum queue's high lane on
            // RabbitMQ 3.x (`amqp/physical.rs`).
            let queue = format!("{prefix}order.{}.quorum.high", LEDGER.plugin);
            // `rabbitmqctl` sometimes answers without the queue: ask again (10 s).
            let find = || (0..cluster.nodes.len()).find_map(|via| cluster.leader_of(&queue, via));
            let mut leader = find();
            for _ in 0..20 {
                if leader.is_some() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
                leader = find();
            }
            let leader = leader.ok_or_else(|| {
                anyhow::anyhow!("no leader for {queue}: {}", cluster.queues_report(0))
            })?;
            cluster
                .nodes
                .iter()
                .position(|n| n.name == leader.name)
                .unwrap_or(0)
        }
        _ => host_node()?,
    };
    rig.downed = Some(index);
    let node = &cluster.nodes[index];
    println!("  {}: {}", fault.name(), node.name);
    match fault {
        Fault::ClusterNodeRestarted => {
            tokio::task::block_in_place(|| cluster.stop(index));
            tokio::time::sleep(Duration::from_secs(3)).await;
            tokio::task::block_in_place(|| node.restart());
            rig.downed = None;
        }
        _ => node.kill(),
    }
    Ok(())
}

/// The `connection_name` the running host gives RabbitMQ.
fn connection_name_of(host: &HostProcess) -> anyhow::Result<String> {
    let pid = host
        .pid()
        .ok_or_else(|| anyhow::anyhow!("the host is not running"))?;
    Ok(connection_name(pid))
}

/// The broker's name for an open connection called `name` other than the ones in
/// `closed` (at most 30 s).
async fn wait_for_connection(
    api: &Management,
    name: &str,
    closed: &[String],
) -> anyhow::Result<String> {
    let started = Instant::now();
    loop {
        let connections = api.connections().await.map_err(anyhow::Error::msg)?;
        if let Some((connection, _)) = connections
            .iter()
            .find(|(connection, n)| n == name && !closed.contains(connection))
        {
            return Ok(connection.clone());
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(30),
            "RabbitMQ shows no new connection named {name:?} within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
