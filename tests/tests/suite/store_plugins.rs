//! The store's sorted sets and compare-and-swap, used by real plugins: typed errors at
//! the guest boundary, and lock-free increments that add up exactly across two hosts.

use crate::e2e_embedded::dead_letter_of;
use crate::hostile::{hostile_platform, provoke};
use techub_host::bindings::techub::platform::messaging::Priority;
use techub_host::capability::store::SetCondition;
use techub_host::config::KvBackend;

const LIMIT: std::time::Duration = std::time::Duration::from_secs(20);
use techub_tests::{services, unique};

#[tokio::test(flavor = "multi_thread")]
async fn plugins_get_typed_errors_and_ordered_members_from_sorted_sets() {
    let (platform, _dir) = hostile_platform(|_| {}).await;
    let reason = provoke(&platform, "sorted").await;
    assert!(
        reason.contains("nan=Err(InvalidArgument(\"a score must not be NaN\"))"),
        "{reason}"
    );
    assert!(
        reason.contains("count=Err(InvalidArgument(\"count must be 1 to 1000\"))"),
        "{reason}"
    );
    assert!(reason.contains("top=[\"ada\", \"cy\"]"), "{reason}");
}

#[tokio::test(flavor = "multi_thread")]
async fn compare_and_swap_increments_add_up_exactly_across_two_hosts() {
    const PER_HOST: usize = 10;
    let prefix = format!("{}:", unique("cas"));
    let on_redis = |prefix: String| {
        move |c: &mut techub_host::HostConfig| {
            c.backends.store = KvBackend::Redis;
            c.host.key_prefix = prefix;
            c.plugins.get_mut("hostile").unwrap().limits.prefetch = Some(PER_HOST as u16);
        }
    };
    let (host_a, _dir_a) = hostile_platform(on_redis(prefix.clone())).await;
    let (host_b, _dir_b) = hostile_platform(on_redis(prefix.clone())).await;
    let mut sent = Vec::new();
    for _ in 0..PER_HOST {
        for host in [&host_a, &host_b] {
            let id = host
                .publish(
                    "fixture.hostile.cas-incr",
                    b"{}".to_vec(),
                    Some(Priority::Normal),
                )
                .await
                .unwrap();
            sent.push((host, id));
        }
    }
    let mut lost = 0;
    for (host, id) in &sent {
        let reason = dead_letter_of(host, id).await.reason;
        let n: u32 = reason
            .strip_prefix("rejected: lost ")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("an increment failed: {reason}"));
        lost += n;
    }
    let redis = services::redis().await;
    let key = format!("{prefix}store:hostile:counter");
    let value: Option<String> = redis
        .run(
            "GET",
            techub_host::capability::redis_client::Retry::Idempotent,
            |mut c| {
                let key = key.clone();
                async move { redis::cmd("GET").arg(&key).query_async(&mut c).await }
            },
        )
        .await
        .unwrap();
    assert_eq!(
        value.as_deref(),
        Some("20"),
        "twenty increments, none lost ({lost} swaps lost a race and were retried)"
    );
    eprintln!("compare-and-swap: {lost} swaps lost a race and were retried");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plugin_batches_a_hundred_operations_and_oversized_batches_are_refused_whole() {
    let (platform, _dir) = hostile_platform(|_| {}).await;
    let id = platform
        .publish("fixture.hostile.store-batch", b"atomic".to_vec(), None)
        .await
        .unwrap();
    let reason = dead_letter_of(&platform, &id).await.reason;
    assert!(reason.contains("done=Ok(100)"), "{reason}");
    assert!(
        reason.contains("too_many=Err(InvalidArgument(\"more than 100 operations in one batch\"))"),
        "{reason}"
    );
    assert!(
        reason.contains("nan=Err(InvalidArgument(\"a score must not be NaN\"))"),
        "{reason}"
    );
    let counted = platform
        .services
        .store
        .get("techub:store:hostile:batch:99")
        .await
        .unwrap();
    assert_eq!(counted, Some(b"1".to_vec()));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plugin_invalidates_keys_a_tag_and_a_pattern_in_one_call() {
    let (platform, _dir) = hostile_platform(|_| {}).await;
    let id = platform
        .publish("fixture.hostile.cache-invalidate", b"{}".to_vec(), None)
        .await
        .unwrap();
    let reason = dead_letter_of(&platform, &id).await.reason;
    assert!(reason.contains("removed=3 "), "{reason}");
    assert!(
        reason.contains("too_many=Err(TooManyKeys(1000))"),
        "{reason}"
    );
    assert!(reason.contains("bad=Err(InvalidArgument("), "{reason}");
    assert!(reason.contains("kept=true"), "{reason}");
}

/// The fenced fixture's store key `key` (its namespace on the embedded store).
fn fenced_key(prefix: &str, key: &str) -> String {
    format!("{prefix}store:fenced:{key}")
}

async fn text_of(store: &dyn techub_host::capability::store::StoreBackend, key: &str) -> String {
    let value = store.get(key).await.unwrap().unwrap_or_default();
    String::from_utf8(value).unwrap()
}

/// `store::update_fenced` (the SDK, in a real plugin): a write under a token smaller
/// than the stored one is refused and changes nothing; a write that lands between the
/// update's read and its swap is not lost (the swap fails, the update reads again).
#[tokio::test(flavor = "multi_thread")]
async fn a_fenced_update_refuses_a_stale_token_and_loses_no_write_landing_mid_update() {
    techub_tests::init_tracing();
    let dir = techub_tests::PluginDir::with(&[("fenced", "fixture_fenced")]);
    let mut config = techub_tests::config(&dir);
    // Between its read and its write the fixture passes the lock `gate`.
    let entry = config.plugins.entry("fenced".into()).or_default();
    entry.settings.insert("gate".into(), "on".into());
    let prefix = config.host.key_prefix.clone();
    let platform = techub_host::Platform::start(config).await.unwrap();
    let store = platform.services.store.clone();
    let counter = fenced_key(&prefix, "counter");

    // A newer holder (token 1 000 000) wrote 5: this holder's smaller token is refused.
    store
        .set(&counter, b"1000000\n5", None, SetCondition::Always)
        .await
        .unwrap();
    let stale = platform
        .publish("fixture.fenced.stale", b"x".to_vec(), None)
        .await
        .unwrap();
    // Refused on its first attempt and both retries, then dead-lettered.
    dead_letter_of(&platform, &stale).await;
    assert_eq!(
        text_of(store.as_ref(), &fenced_key(&prefix, "refused")).await,
        "3"
    );
    assert_eq!(text_of(store.as_ref(), &counter).await, "1000000\n5");

    // An older holder's value (token 0): a write lands while the update waits at the
    // gate, after its read; the update must count on top of it.
    store
        .set(&counter, b"0\n10", None, SetCondition::Always)
        .await
        .unwrap();
    let locks = platform.services.locks.clone();
    let gate = format!("{prefix}lock:fenced:gate");
    let fence = format!("{prefix}lock-fence:fenced");
    locks
        .try_acquire(&gate, &fence, "test", std::time::Duration::from_secs(30))
        .await
        .unwrap()
        .expect("the gate is free");
    let id = platform
        .publish("fixture.fenced.mid", b"x".to_vec(), None)
        .await
        .unwrap();
    techub_tests::wait_for(
        LIMIT,
        "the update to enter its critical section",
        || async {
            (text_of(store.as_ref(), &fenced_key(&prefix, "inside")).await == "1").then_some(())
        },
    )
    .await;
    // It reads the counter right after (microseconds); then it waits at the gate.
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    store
        .set(&counter, b"0\n100", None, SetCondition::Always)
        .await
        .unwrap();
    assert!(locks.release(&gate, "test").await.unwrap());
    techub_tests::wait_for(LIMIT, "the update to land", || async {
        let counted = store
            .set_members(&fenced_key(&prefix, "counted"))
            .await
            .unwrap();
        counted.contains(&id.as_bytes().to_vec()).then_some(())
    })
    .await;
    let written = text_of(store.as_ref(), &counter).await;
    assert!(
        written.ends_with("\n101"),
        "the update counted on top of the write that landed mid-update: {written}"
    );
    assert_eq!(
        text_of(store.as_ref(), &fenced_key(&prefix, "refused")).await,
        "3",
        "a smaller stored token does not refuse"
    );
}

/// `store::once_atomic` whose transaction ran on Redis but whose answer never came back
/// (the connection dropped once `EXEC` had gone out: what a primary killed mid-write
/// or a failover does): the delivery fails and is retried, and the retry finds the
/// claim done and skips. The effect happens once. (The SDK used to delete the claim
/// after any failed transaction, so the retry applied the effect a second time: the
/// fault suite's one duplicate under a Redis Cluster failover.)
#[tokio::test(flavor = "multi_thread")]
async fn once_atomic_whose_answer_was_lost_is_not_applied_twice() {
    techub_tests::init_tracing();
    let proxy = techub_tests::TcpProxy::start("127.0.0.1:6379").await;
    let dir = techub_tests::PluginDir::with(&[("ledger", "fixture_ledger")]);
    let mut config = techub_tests::config(&dir);
    config.backends.store = KvBackend::Redis;
    config.redis.url = format!("redis://127.0.0.1:{}", proxy.port);
    let prefix = format!("{}:", unique("once-lost"));
    config.host.key_prefix = prefix.clone();
    let platform = techub_host::Platform::start(config)
        .await
        .unwrap_or_else(|e| panic!("{}", services::rabbitmq_hint(&e)));

    proxy.lose_the_answer_to(b"\r\n$4\r\nEXEC\r\n");
    let id = platform
        .publish("fixture.ledger.m", b"x".to_vec(), None)
        .await
        .unwrap();
    let redis = services::redis().await;
    let read = |command: &'static str, key: String, arg: Option<String>| {
        let redis = redis.clone();
        async move {
            redis
                .run(
                    command,
                    techub_host::capability::redis_client::Retry::Idempotent,
                    |mut c| {
                        let mut cmd = redis::cmd(command);
                        cmd.arg(&key);
                        if let Some(arg) = &arg {
                            cmd.arg(arg);
                        }
                        async move { cmd.query_async::<Option<String>>(&mut c).await }
                    },
                )
                .await
                .unwrap()
        }
    };
    let store = |key: &str| format!("{prefix}store:ledger:{key}");
    techub_tests::wait_for(LIMIT, "the message to be handled", || async {
        let handled = read("SISMEMBER", store("handled"), Some(id.clone())).await;
        (handled.as_deref() == Some("1")).then_some(())
    })
    .await;
    assert!(proxy.answer_lost(), "the transaction's answer was not cut");
    let attempts = read("HGET", store("attempts"), Some(id.clone())).await;
    assert_eq!(
        attempts.as_deref(),
        Some("2"),
        "one failed attempt, one retry"
    );
    let effects = read("GET", store("{ledger}effects"), None).await;
    assert_eq!(effects.as_deref(), Some("1"), "the effect happened once");
    platform.shutdown().await;
}
