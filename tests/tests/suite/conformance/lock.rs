//! The lock conformance suite.

use std::time::Duration;
use techub_host::capability::lock::LockBackend;
use techub_host::capability::lock::memory::MemoryLocks;
use techub_host::capability::lock::redis::RedisLocks;
use techub_tests::{services, unique};

pub(super) async fn locks_conform(locks: &dyn LockBackend, key: &str) {
    let fence = format!("{key}-fence");
    let other = format!("{key}-other");
    let ttl = Duration::from_secs(30);
    let first = locks
        .try_acquire(key, &fence, "a", ttl)
        .await
        .unwrap()
        .expect("a free lock is granted");
    assert_eq!(
        locks.try_acquire(key, &fence, "b", ttl).await.unwrap(),
        None,
        "a held lock is not granted"
    );
    assert!(
        !locks.release(key, "b").await.unwrap(),
        "only the holder releases"
    );
    assert!(
        !locks.extend(key, "b", ttl).await.unwrap(),
        "only the holder extends"
    );
    assert!(locks.extend(key, "a", ttl).await.unwrap());
    assert!(locks.release(key, "a").await.unwrap());
    assert!(!locks.release(key, "a").await.unwrap(), "released once");

    let second = locks
        .try_acquire(key, &fence, "b", Duration::from_millis(150))
        .await
        .unwrap()
        .expect("free again");
    assert!(second > first, "fencing tokens grow: {first} then {second}");
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        !locks.extend(key, "b", ttl).await.unwrap(),
        "an expired lease cannot be extended"
    );
    let third = locks
        .try_acquire(key, &fence, "c", ttl)
        .await
        .unwrap()
        .expect("an expired lease frees the lock");
    assert!(third > second);
    assert!(
        !locks.release(key, "b").await.unwrap(),
        "the expired holder cannot release the new one"
    );
    assert!(locks.release(key, "c").await.unwrap());

    // Another lock of the same plugin draws from the same counter: held independently,
    // and its tokens are larger still.
    let fourth = locks
        .try_acquire(&other, &fence, "d", ttl)
        .await
        .unwrap()
        .expect("another name is free");
    assert!(fourth > third);
    let fifth = locks
        .try_acquire(key, &fence, "e", ttl)
        .await
        .unwrap()
        .expect("both held at once");
    assert!(fifth > fourth);
    assert!(locks.release(&other, "d").await.unwrap() && locks.release(key, "e").await.unwrap());
}

#[tokio::test]
async fn memory_locks_conform() {
    locks_conform(&MemoryLocks::new(), "techub:lock:conformance:x").await;
}

#[tokio::test]
async fn redis_locks_conform() {
    let key = format!("{}:lock:x", unique("techub-test"));
    locks_conform(&RedisLocks::new(services::redis().await), &key).await;
}

#[tokio::test]
async fn redis_lock_is_exclusive_under_contention() {
    let locks = std::sync::Arc::new(RedisLocks::new(services::redis().await));
    let key = format!("{}:lock:contended", unique("techub-test"));
    let fence = format!("{key}-fence");
    let attempts: Vec<_> = (0..20)
        .map(|i| {
            let (locks, key, fence) = (locks.clone(), key.clone(), fence.clone());
            tokio::spawn(async move {
                locks
                    .try_acquire(&key, &fence, &format!("t{i}"), Duration::from_secs(30))
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut granted = 0;
    for attempt in attempts {
        granted += usize::from(attempt.await.unwrap().is_some());
    }
    assert_eq!(granted, 1, "exactly one of 20 concurrent acquirers wins");
}
