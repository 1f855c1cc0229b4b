//! A Redis primary killed (`kill -9`) under a stream of writes, on a cluster and
//! behind sentinels: while the replica is promoted every failed write is a typed
//! `unavailable` (what the guest sees, and retries), never a hang past the command
//! timeout; then writes succeed again, on the promoted replica. The time from the kill
//! to the first write that succeeds again is printed (the fault suite reports it too).

use std::time::{Duration, Instant};
use techub_host::capability::BackendError;
use techub_host::capability::redis_client::RedisClient;
use techub_host::capability::store::redis::RedisStore;
use techub_host::capability::store::{AtomicOp, SetCondition, StoreBackend};
use techub_host::config::{RedisConfig, RedisMode};
use techub_tests::redis_nodes::{MASTER_NAME, RedisCluster, RedisSentinels};
use techub_tests::unique;

/// What a stream of writes to `key` saw after the kill.
struct AfterKill {
    /// From the kill to the first write that succeeded.
    recovered_after: Duration,
    /// Writes that failed in between, each with a typed `unavailable`.
    unavailable: usize,
}

/// Writes `key` every 20 ms from the kill on, until one succeeds (at most 30 s).
async fn writes_until_one_succeeds(
    store: &RedisStore,
    key: &str,
    command_timeout: Duration,
) -> AfterKill {
    let killed = Instant::now();
    let mut unavailable = 0;
    loop {
        let started = Instant::now();
        let written = store.set(key, b"after", None, SetCondition::Always).await;
        // The client's own bound: a write that hangs past it would stall a guest.
        assert!(
            started.elapsed() < command_timeout + Duration::from_secs(1),
            "a write took {:?}, past the command timeout {command_timeout:?}",
            started.elapsed()
        );
        match written {
            Ok(_) => {
                return AfterKill {
                    recovered_after: killed.elapsed(),
                    unavailable,
                };
            }
            Err(BackendError::Unavailable(reason)) => {
                if unavailable % 20 == 0 {
                    eprintln!("{:?} after the kill: {reason}", killed.elapsed());
                }
                unavailable += 1
            }
            Err(other) => {
                panic!("a write during the failover failed with {other:?}, not `unavailable`")
            }
        }
        assert!(
            killed.elapsed() < Duration::from_secs(30),
            "no recovery within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn config(mode: RedisMode) -> RedisConfig {
    RedisConfig {
        mode,
        // Short, so that the test sees several attempts during the failover.
        command_timeout_ms: 1_000,
        connection_timeout_ms: 1_000,
        max_retries: 2,
        retry_delay_ms: 100,
        ..RedisConfig::default()
    }
}

#[tokio::test]
async fn a_killed_cluster_primary_gives_unavailable_then_its_promoted_replica_serves() {
    let mut cluster = RedisCluster::start().await;
    let mut redis_config = config(RedisMode::Cluster);
    redis_config.urls = cluster.urls();
    let redis = RedisClient::connect(&redis_config, Default::default())
        .await
        .unwrap();
    let store = RedisStore::new(redis.clone());
    let key = format!("{}:store:p:failover", unique("techub-test"));
    store
        .set(&key, b"before", None, SetCondition::Always)
        .await
        .unwrap();
    let primary = cluster.primary_of(&key);
    let old_port = cluster.nodes[primary].port;
    // Load beside the watched key, as a host has: writers on keys of every slot.
    let store = std::sync::Arc::new(store);
    let load: Vec<_> = (0..32)
        .map(|w| {
            let store = store.clone();
            let key = key.clone();
            let redis = redis.clone();
            tokio::spawn(async move {
                for i in 0.. {
                    let k = format!("{key}:load:{{{w}}}:{}", i % 50);
                    match w % 4 {
                        0 => drop(store.incr_by(&k, 1).await),
                        3 => {
                            let commands: Vec<redis::Cmd> = (0..10)
                                .map(|j| {
                                    redis::cmd("HSETNX")
                                        .arg(format!("{k}:{j}"))
                                        .arg("f")
                                        .arg("v")
                                        .clone()
                                })
                                .collect();
                            drop(
                                redis
                                    .pipeline(
                                        "p",
                                        techub_host::capability::redis_client::Retry::Idempotent,
                                        &commands,
                                    )
                                    .await,
                            )
                        }
                        1 => drop(
                            store
                                .atomic(&[AtomicOp::IncrBy(k.clone(), 1), AtomicOp::Get(k)])
                                .await,
                        ),
                        _ => drop(store.compare_and_swap(&k, None, Some(b"1"), None).await),
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    cluster.nodes[primary].kill();
    let seen = writes_until_one_succeeds(&store, &key, Duration::from_millis(1_000)).await;
    eprintln!(
        "cluster: writes back {:?} after kill -9 of the primary, {} typed `unavailable` before",
        seen.recovered_after, seen.unavailable
    );
    // The nodes' own view of the slots may lag the client's for a moment.
    techub_tests::wait_for(
        Duration::from_secs(10),
        "the nodes to show the promoted replica",
        || async { (cluster.nodes[cluster.primary_of(&key)].port != old_port).then_some(()) },
    )
    .await;
    assert_eq!(
        store.get(&key).await.unwrap().as_deref(),
        Some(&b"after"[..])
    );
    load.iter().for_each(|task| task.abort());
}

/// A store on `cluster`, with [`config`]'s short timeouts.
async fn store_on(cluster: &RedisCluster) -> RedisStore {
    let mut redis_config = config(RedisMode::Cluster);
    redis_config.urls = cluster.urls();
    RedisStore::new(
        RedisClient::connect(&redis_config, Default::default())
            .await
            .unwrap(),
    )
}

#[tokio::test]
async fn a_killed_sentinel_primary_gives_unavailable_then_the_client_follows_the_new_one() {
    let mut set = RedisSentinels::start().await;
    let mut redis_config = config(RedisMode::Sentinel);
    redis_config.sentinels = set.urls();
    redis_config.master_name = MASTER_NAME.into();
    let redis = RedisClient::connect(&redis_config, Default::default())
        .await
        .unwrap();
    let store = RedisStore::new(redis);
    let key = format!("{}:store:p:failover", unique("techub-test"));
    store
        .set(&key, b"before", None, SetCondition::Always)
        .await
        .unwrap();
    let old_port = set.data[0].port;
    set.data[0].kill();
    let seen = writes_until_one_succeeds(&store, &key, Duration::from_millis(1_000)).await;
    eprintln!(
        "sentinel: writes back {:?} after kill -9 of the primary, {} typed `unavailable` before",
        seen.recovered_after, seen.unavailable
    );
    assert_eq!(
        set.primary_port(),
        Some(set.data[1].port),
        "the sentinels promoted the replica"
    );
    assert_ne!(set.primary_port(), Some(old_port));
    assert_eq!(
        store.get(&key).await.unwrap().as_deref(),
        Some(&b"after"[..])
    );

    // The old primary comes back as a replica of the new one; the client stays on the
    // primary (a write sent to the demoted node would fail with READONLY).
    set.data[0].restart().await;
    for i in 0..50 {
        store
            .set(&key, format!("{i}").as_bytes(), None, SetCondition::Always)
            .await
            .unwrap_or_else(|e| panic!("write {i} after the old primary returned: {e:?}"));
    }
}

/// `[redis] wait_replicas = 1` behind sentinels: a claim returns once the replica
/// has it; with the replica gone it is a typed `unavailable` naming the shortfall, not
/// a silent claim that a failover could lose. Prints the cost per claim against no
/// waiting.
#[tokio::test]
async fn with_wait_replicas_a_claim_needs_the_replica_and_says_so_without_it() {
    let mut set = RedisSentinels::start().await;
    let mut waiting = config(RedisMode::Sentinel);
    waiting.sentinels = set.urls();
    waiting.master_name = MASTER_NAME.into();
    claims_wait_for_a_replica(waiting, |_| set.data[1].kill()).await;
}

/// The same on a Redis Cluster: the host waits for the replicas of the primary that
/// holds the claim's slot.
#[tokio::test]
async fn with_wait_replicas_a_claim_on_a_cluster_needs_its_primary_s_replica() {
    let mut cluster = RedisCluster::start().await;
    let mut waiting = config(RedisMode::Cluster);
    waiting.urls = cluster.urls();
    claims_wait_for_a_replica(waiting, |key| {
        let primary = cluster.primary_of(key);
        let replicas = cluster.replicas_of(primary);
        assert_eq!(replicas.len(), 1, "one replica per primary");
        cluster.nodes[replicas[0]].kill();
    })
    .await;
}

/// Claims through `waiting` with `wait_replicas = 1` and through the same deployment
/// without waiting, alternating (the medians printed); then `kill_replica(key)`
/// takes away the only replica of the primary that holds `key`, and a claim of `key`
/// must be `unavailable` saying "0 of 1 replicas", while one without waiting succeeds.
async fn claims_wait_for_a_replica(mut waiting: RedisConfig, kill_replica: impl FnOnce(&str)) {
    waiting.wait_replicas = 1;
    waiting.wait_timeout_ms = 200;
    let plain = RedisConfig {
        wait_replicas: 0,
        ..waiting.clone()
    };
    let durable = RedisStore::new(
        RedisClient::connect(&waiting, Default::default())
            .await
            .unwrap(),
    );
    let fast = RedisStore::new(
        RedisClient::connect(&plain, Default::default())
            .await
            .unwrap(),
    );
    let ns = unique("techub-test");
    // Cost: claims (SET NX) alternating between the two clients, medians.
    let mut times = [Vec::new(), Vec::new()];
    for i in 0..200 {
        for (side, store) in [&fast, &durable].into_iter().enumerate() {
            let started = Instant::now();
            let claimed = store
                .set(
                    &format!("{ns}:claim:{side}:{i}"),
                    b"pending",
                    None,
                    SetCondition::IfAbsent,
                )
                .await
                .unwrap();
            times[side].push(started.elapsed());
            assert!(claimed);
        }
    }
    for t in &mut times {
        t.sort();
    }
    eprintln!(
        "claim median: {:?} without WAIT, {:?} with WAIT 1 (one local replica)",
        times[0][100], times[1][100]
    );
    // One hash tag for both claims below: on a cluster they share a primary.
    let key = format!("{ns}:{{after}}:claim");
    kill_replica(&key);
    let refused = durable
        .set(&key, b"pending", None, SetCondition::IfAbsent)
        .await;
    match refused {
        Err(BackendError::Unavailable(reason)) => {
            assert!(reason.contains("0 of 1 replicas"), "{reason}")
        }
        other => panic!("a claim no replica confirmed must be `unavailable`, got {other:?}"),
    }
    // Without waiting, a claim on the same primary succeeds on the primary alone.
    assert!(
        fast.set(
            &format!("{ns}:{{after}}:plain"),
            b"pending",
            None,
            SetCondition::IfAbsent
        )
        .await
        .unwrap()
    );
}

/// On a Redis Cluster, a write that may not run twice (a transaction, an `INCRBY`)
/// whose connection dropped once it had gone out is not sent again: it may have run,
/// so the caller hears `unavailable` and the counter moved once. (redis-rs's cluster
/// connection sends a request again after its connection dropped, whatever it is; a
/// failover under load did that to a transaction that had already run.)
#[tokio::test(flavor = "multi_thread")]
async fn on_a_cluster_a_write_whose_answer_was_lost_is_not_sent_again() {
    let cluster = RedisCluster::start_with_replicas(0).await;
    let key = format!("{}:{{lost}}:n", unique("techub-test"));
    // The key's primary behind a proxy: it tells the cluster (and so the client) that
    // it is at the proxy's port.
    let primary = &cluster.nodes[cluster.primary_of(&key)];
    let proxy = techub_tests::TcpProxy::start(Box::leak(primary.address().into_boxed_str())).await;
    let proxied = proxy.port.to_string();
    primary.cli(&["CONFIG", "SET", "cluster-announce-port", &proxied]);
    techub_tests::wait_for(
        Duration::from_secs(10),
        "every node to name the proxy's port for the key's primary",
        || async {
            cluster
                .nodes
                .iter()
                .all(|n| {
                    n.cli(&["CLUSTER", "SLOTS"])
                        .lines()
                        .any(|l| l.trim() == proxied)
                })
                .then_some(())
        },
    )
    .await;
    let store = store_on(&cluster).await;
    store.incr_by(&key, 1).await.unwrap();

    for (request, write) in [
        (&b"\r\n$4\r\nEXEC\r\n"[..], "a transaction"),
        (&b"\r\n$6\r\nINCRBY\r\n"[..], "an INCRBY"),
    ] {
        proxy.lose_the_answer_to(request);
        let before: i64 = primary.cli(&["GET", &key]).trim().parse().unwrap();
        let result = match write {
            "a transaction" => store
                .atomic(&[AtomicOp::IncrBy(key.clone(), 1)])
                .await
                .map(drop),
            _ => store.incr_by(&key, 1).await.map(drop),
        };
        assert!(proxy.answer_lost(), "{write}: its answer was not cut");
        assert!(
            matches!(result, Err(BackendError::Unavailable(_))),
            "{write} whose answer was lost: {result:?}"
        );
        let after: i64 = primary.cli(&["GET", &key]).trim().parse().unwrap();
        assert_eq!(after, before + 1, "{write} ran once");
    }
    // The connection serves the next command.
    assert!(store.incr_by(&key, 1).await.is_ok());
}

/// A live resharding: while a slot migrates, a key already moved answers `ASK` from
/// its old node. Writes that may not run twice (`INCRBY`, a transaction, a script),
/// which go through the cluster connection without redis-rs's own retries, follow
/// the `ASK` to the importing node after `ASKING` and run there, once each, as a read
/// (which redis-rs redirects itself) does.
#[tokio::test(flavor = "multi_thread")]
async fn on_a_cluster_writes_to_a_slot_being_migrated_follow_ask() {
    let cluster = RedisCluster::start_with_replicas(0).await;
    let key = format!("{}:{{ask}}:n", unique("techub-test"));
    let store = store_on(&cluster).await;
    assert_eq!(store.incr_by(&key, 1).await, Ok(1));

    // Migrate the key's slot from its primary to another, and move the key first (as
    // `redis-cli --cluster reshard` does, key by key), then stop there.
    let source = &cluster.nodes[cluster.primary_of(&key)];
    let primaries = cluster.primaries();
    let target = *primaries.iter().find(|n| n.port != source.port).unwrap();
    let slot = source.cli(&["CLUSTER", "KEYSLOT", &key]).trim().to_string();
    let id = |node: &techub_tests::redis_nodes::RedisNode| {
        node.cli(&["CLUSTER", "MYID"]).trim().to_string()
    };
    target.cli(&["CLUSTER", "SETSLOT", &slot, "IMPORTING", &id(source)]);
    source.cli(&["CLUSTER", "SETSLOT", &slot, "MIGRATING", &id(target)]);
    let port = target.port.to_string();
    let migrated = source.cli(&["MIGRATE", "127.0.0.1", &port, &key, "0", "5000"]);
    assert_eq!(migrated.trim(), "OK", "MIGRATE");
    assert!(
        source.cli(&["INCRBY", &key, "1"]).contains("ASK"),
        "the old node answers ASK for the moved key"
    );

    assert_eq!(store.incr_by(&key, 1).await, Ok(2), "an INCRBY");
    let batch = store.atomic(&[AtomicOp::IncrBy(key.clone(), 1)]).await;
    assert!(batch.is_ok(), "a transaction: {batch:?}");
    let swapped = store
        .compare_and_swap(&key, Some(b"3"), Some(b"10"), None)
        .await;
    assert_eq!(swapped, Ok(true), "a script");
    let read = store.get(&key).await;
    assert_eq!(read, Ok(Some(b"10".to_vec())), "a read");

    // The migration ends; every write ran on the importing node, once.
    for node in &primaries {
        node.cli(&["CLUSTER", "SETSLOT", &slot, "NODE", &id(target)]);
    }
    assert_eq!(target.cli(&["GET", &key]).trim(), "10");
}

/// A command to a cluster primary that does not answer (`CLIENT PAUSE ... ALL`) fails
/// within the command timeout with `unavailable` saying so, and is counted as a
/// timeout: the first attempt is bounded by the cluster connection's own response
/// timeout (the host sets no timer of its own there), the retries by what is left of
/// the command timeout, not by the 5 s pause.
#[tokio::test]
async fn on_a_cluster_a_command_to_a_silent_primary_times_out_within_the_command_timeout() {
    let cluster = RedisCluster::start().await;
    let mut redis_config = config(RedisMode::Cluster);
    redis_config.urls = cluster.urls();
    let metrics = std::sync::Arc::new(techub_host::metrics::Metrics::new(true));
    let redis = RedisClient::connect(&redis_config, metrics.clone())
        .await
        .unwrap();
    let store = RedisStore::new(redis);
    let key = format!("{}:store:p:silent", unique("techub-test"));
    store
        .set(&key, b"v", None, SetCondition::Always)
        .await
        .unwrap();
    let primary = &cluster.nodes[cluster.primary_of(&key)];
    assert_eq!(
        primary.cli(&["CLIENT", "PAUSE", "5000", "ALL"]).trim(),
        "OK"
    );
    let asked = Instant::now();
    let error = store.get(&key).await.unwrap_err();
    let waited = asked.elapsed();
    assert!(
        matches!(&error, BackendError::Unavailable(text)
            if text.contains("did not answer GET within 1000 ms")),
        "{error:?}"
    );
    assert!(
        waited < Duration::from_millis(2_500),
        "the command waited {waited:?}, past its 1 s timeout"
    );
    let timeouts = metrics
        .encode()
        .lines()
        .find(|l| l.starts_with("techub_redis_timeouts_total{command=\"GET\"}"))
        .map(|l| l.rsplit(' ').next().unwrap_or_default().to_string());
    assert_eq!(timeouts.as_deref(), Some("1"), "{}", metrics.encode());
}
