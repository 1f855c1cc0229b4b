//! The store conformance suite: Redis semantics, whichever backend.

use std::time::Duration;
use techub_host::capability::BackendError;
use techub_host::capability::store::memory::MemoryStore;
use techub_host::capability::store::redis::RedisStore;
use techub_host::capability::store::{KeyTtl, ListEnd, SetCondition, StoreBackend};
use techub_tests::{services, unique};

async fn store_conforms(store: &dyn StoreBackend, ns: &str) {
    let k = |name: &str| format!("{ns}{name}");

    // Strings with NX / XX / TTL.
    assert_eq!(store.get(&k("s")).await.unwrap(), None);
    assert!(
        !store
            .set(&k("s"), b"v0", None, SetCondition::IfPresent)
            .await
            .unwrap()
    );
    assert!(
        store
            .set(&k("s"), b"v1", None, SetCondition::IfAbsent)
            .await
            .unwrap()
    );
    assert!(
        !store
            .set(&k("s"), b"v2", None, SetCondition::IfAbsent)
            .await
            .unwrap()
    );
    assert!(
        store
            .set(&k("s"), b"v3", None, SetCondition::IfPresent)
            .await
            .unwrap()
    );
    assert_eq!(store.get(&k("s")).await.unwrap(), Some(b"v3".to_vec()));
    assert!(matches!(
        store.ttl(&k("s")).await.unwrap(),
        KeyTtl::Persistent
    ));
    assert!(matches!(
        store.ttl(&k("none")).await.unwrap(),
        KeyTtl::Missing
    ));
    assert!(
        store
            .expire(&k("s"), Duration::from_secs(100))
            .await
            .unwrap()
    );
    assert!(
        matches!(store.ttl(&k("s")).await.unwrap(), KeyTtl::ExpiresInMs(ms) if ms > 90_000 && ms <= 100_000)
    );
    assert!(store.persist(&k("s")).await.unwrap());
    assert!(!store.persist(&k("s")).await.unwrap());
    assert!(
        !store
            .expire(&k("none"), Duration::from_secs(1))
            .await
            .unwrap()
    );
    store
        .set(
            &k("brief"),
            b"x",
            Some(Duration::from_millis(100)),
            SetCondition::Always,
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!store.exists(&k("brief")).await.unwrap());

    // Counters, their type errors and overflow.
    assert_eq!(store.incr_by(&k("n"), 5).await.unwrap(), 5);
    assert_eq!(store.incr_by(&k("n"), -7).await.unwrap(), -2);
    assert_eq!(
        store.incr_by(&k("s"), 1).await,
        Err(BackendError::WrongType)
    );
    store
        .set(
            &k("max"),
            i64::MAX.to_string().as_bytes(),
            None,
            SetCondition::Always,
        )
        .await
        .unwrap();
    assert_eq!(
        store.incr_by(&k("max"), 1).await,
        Err(BackendError::Overflow)
    );

    // Hashes.
    let fields = vec![
        ("a".to_string(), b"1".to_vec()),
        ("b".to_string(), b"2".to_vec()),
    ];
    assert_eq!(store.hash_set(&k("h"), &fields).await.unwrap(), 2);
    assert_eq!(
        store
            .hash_set(&k("h"), &[("a".to_string(), b"9".to_vec())])
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        store.hash_get(&k("h"), "a").await.unwrap(),
        Some(b"9".to_vec())
    );
    assert_eq!(store.hash_get(&k("h"), "zz").await.unwrap(), None);
    assert_eq!(
        store.hash_get_all(&k("h")).await.unwrap(),
        vec![
            ("a".to_string(), b"9".to_vec()),
            ("b".to_string(), b"2".to_vec())
        ]
    );
    assert_eq!(store.hash_incr_by(&k("h"), "c", 3).await.unwrap(), 3);
    assert_eq!(store.hash_incr_by(&k("h"), "b", 1).await.unwrap(), 3);
    assert_eq!(
        store
            .hash_delete(&k("h"), &["a".to_string(), "nope".to_string()])
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store.get(&k("h")).await,
        Err(BackendError::WrongType),
        "GET on a hash is WRONGTYPE"
    );
    assert_eq!(
        store
            .hash_delete(&k("h"), &["b".to_string(), "c".to_string()])
            .await
            .unwrap(),
        2
    );
    assert!(
        !store.exists(&k("h")).await.unwrap(),
        "an emptied hash vanishes"
    );

    // Lists.
    assert_eq!(
        store
            .list_push(&k("l"), ListEnd::Back, &[b"b".to_vec(), b"c".to_vec()])
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        store
            .list_push(&k("l"), ListEnd::Front, &[b"a".to_vec()])
            .await
            .unwrap(),
        3
    );
    assert_eq!(
        store.list_range(&k("l"), 0, -1).await.unwrap(),
        vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]
    );
    assert_eq!(
        store.list_range(&k("l"), -2, 10).await.unwrap(),
        vec![b"b".to_vec(), b"c".to_vec()]
    );
    assert_eq!(
        store.list_range(&k("l"), 5, 10).await.unwrap(),
        Vec::<Vec<u8>>::new()
    );
    assert_eq!(store.list_len(&k("l")).await.unwrap(), 3);
    assert_eq!(
        store.list_pop(&k("l"), ListEnd::Back, 2).await.unwrap(),
        vec![b"c".to_vec(), b"b".to_vec()]
    );
    assert_eq!(
        store.list_pop(&k("l"), ListEnd::Front, 5).await.unwrap(),
        vec![b"a".to_vec()]
    );
    assert_eq!(
        store.list_pop(&k("l"), ListEnd::Front, 1).await.unwrap(),
        Vec::<Vec<u8>>::new()
    );
    assert!(!store.exists(&k("l")).await.unwrap());
    assert_eq!(
        store
            .list_push(&k("s"), ListEnd::Back, &[b"x".to_vec()])
            .await,
        Err(BackendError::WrongType)
    );

    // Sets.
    assert_eq!(
        store
            .set_add(&k("set"), &[b"x".to_vec(), b"y".to_vec(), b"x".to_vec()])
            .await
            .unwrap(),
        2
    );
    assert!(store.set_contains(&k("set"), b"x").await.unwrap());
    assert!(!store.set_contains(&k("set"), b"q").await.unwrap());
    assert_eq!(
        store.set_members(&k("set")).await.unwrap(),
        vec![b"x".to_vec(), b"y".to_vec()]
    );
    assert_eq!(
        store
            .set_remove(&k("set"), &[b"x".to_vec(), b"q".to_vec()])
            .await
            .unwrap(),
        1
    );

    // Delete counts existing keys of any type.
    assert_eq!(
        store.delete(&[k("s"), k("set"), k("none")]).await.unwrap(),
        2
    );

    // Scan: every matching key exactly as present, over as many pages as it takes.
    for i in 0..25 {
        store
            .set(
                &k(&format!("scan:{i:02}")),
                b"1",
                None,
                SetCondition::Always,
            )
            .await
            .unwrap();
    }
    store
        .set(&k("other:1"), b"1", None, SetCondition::Always)
        .await
        .unwrap();
    let pattern = format!("{}scan:*", techub_host::capability::glob::escape(ns));
    // SCAN walks the whole keyspace whatever the pattern, so allow for a busy server.
    let mut found = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let (keys, next) = store.scan(&pattern, cursor.as_deref(), 200).await.unwrap();
        found.extend(keys);
        pages += 1;
        assert!(pages < 100_000, "scan terminates");
        match next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    found.sort();
    found.dedup();
    let expected: Vec<String> = (0..25).map(|i| k(&format!("scan:{i:02}"))).collect();
    assert_eq!(found, expected);

    // Leave nothing behind on a shared server.
    let all = format!("{}*", techub_host::capability::glob::escape(ns));
    let mut cursor: Option<String> = None;
    loop {
        let (keys, next) = store.scan(&all, cursor.as_deref(), 1000).await.unwrap();
        store.delete(&keys).await.unwrap();
        match next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert!(!store.exists(&k("n")).await.unwrap());
}

#[tokio::test]
async fn memory_store_conforms() {
    store_conforms(&MemoryStore::new(256 << 20), "techub:store:conformance:").await;
}

#[tokio::test]
async fn redis_store_conforms() {
    let ns = format!("{}:store:", unique("techub-test"));
    store_conforms(&RedisStore::new(services::redis().await), &ns).await;
}

#[tokio::test]
async fn memory_store_refuses_writes_past_its_budget_and_frees_on_delete() {
    let store = MemoryStore::new(64 * 1024);
    let value = vec![7u8; 16 * 1024];
    let mut written = 0;
    let error = loop {
        match store
            .set(&format!("k{written}"), &value, None, SetCondition::Always)
            .await
        {
            Ok(_) => written += 1,
            Err(error) => break error,
        }
        assert!(written < 100, "the budget holds");
    };
    assert!(
        matches!(&error, BackendError::Unavailable(m) if m.contains("store.memory_budget_mib")),
        "{error:?}"
    );
    assert_eq!(
        written, 3,
        "three 16 KiB values (with their keys) fit in 64 KiB, a fourth does not"
    );
    // Reads still work, and deleting makes room again.
    assert_eq!(store.get("k0").await.unwrap(), Some(value.clone()));
    assert_eq!(store.delete(&["k0".to_string()]).await.unwrap(), 1);
    assert!(
        store
            .set("again", &value, None, SetCondition::Always)
            .await
            .is_ok()
    );
    // Expired keys are swept to make room.
    store.expire("k1", Duration::from_millis(50)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        store
            .set("after-expiry", &value, None, SetCondition::Always)
            .await
            .is_ok()
    );
}
