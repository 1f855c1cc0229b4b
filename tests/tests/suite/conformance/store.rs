//! The store conformance suite: Redis semantics, whichever backend.

use std::time::Duration;
use techub_host::capability::BackendError;
use techub_host::capability::store::memory::MemoryStore;
use techub_host::capability::store::redis::RedisStore;
use techub_host::capability::store::{
    AtomicOp, AtomicResult, KeyTtl, ListEnd, ScoreRange, SetCondition, StoreBackend,
};
use techub_tests::{services, unique};

pub(super) async fn store_conforms(store: &dyn StoreBackend, ns: &str) {
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
    let pattern = format!("{}scan:*", techub_host::names::glob::escape(ns));
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
    let all = format!("{}*", techub_host::names::glob::escape(ns));
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

fn m(text: &str) -> Vec<u8> {
    text.as_bytes().to_vec()
}

fn members(scored: Vec<(Vec<u8>, f64)>) -> Vec<(String, f64)> {
    scored
        .into_iter()
        .map(|(m, s)| (String::from_utf8(m).unwrap(), s))
        .collect()
}

fn range(min: f64, max: f64) -> ScoreRange {
    ScoreRange {
        min,
        max,
        min_exclusive: false,
        max_exclusive: false,
    }
}

fn pairs(list: &[(&str, f64)]) -> Vec<(String, f64)> {
    list.iter().map(|(m, s)| (m.to_string(), *s)).collect()
}

/// Sorted sets with Redis's semantics: order by score then member, ranks with negative
/// indexes, score ranges with exclusive bounds, REV, LIMIT, infinities; and
/// compare-and-swap.
pub(super) async fn sorted_sets_and_cas_conform(store: &dyn StoreBackend, ns: &str) {
    let k = |name: &str| format!("{ns}{name}");
    let board = k("board");
    let scores = [
        (m("ada"), 30.0),
        (m("bob"), 10.0),
        (m("cy"), 20.0),
        (m("al"), 20.0),
    ];
    assert_eq!(store.sorted_add(&board, &scores).await.unwrap(), 4);
    let update = [(m("bob"), 15.0)];
    assert_eq!(
        store.sorted_add(&board, &update).await.unwrap(),
        0,
        "an update"
    );
    assert_eq!(store.sorted_len(&board).await.unwrap(), 4);
    assert_eq!(
        store.sorted_score(&board, b"bob").await.unwrap(),
        Some(15.0)
    );
    assert_eq!(store.sorted_score(&board, b"zed").await.unwrap(), None);
    assert_eq!(
        store.sorted_incr_by(&board, b"bob", 2.5).await.unwrap(),
        17.5
    );
    assert_eq!(
        store.sorted_incr_by(&board, b"new", -1.0).await.unwrap(),
        -1.0
    );
    let all = members(store.sorted_range(&board, 0, -1, false).await.unwrap());
    let expected = [
        ("new", -1.0),
        ("bob", 17.5),
        ("al", 20.0),
        ("cy", 20.0),
        ("ada", 30.0),
    ];
    assert_eq!(all, pairs(&expected), "by score, ties by member");
    let top2 = members(store.sorted_range(&board, 0, 1, true).await.unwrap());
    assert_eq!(top2, pairs(&[("ada", 30.0), ("cy", 20.0)]));
    let last = members(store.sorted_range(&board, -1, -1, false).await.unwrap());
    assert_eq!(last, pairs(&[("ada", 30.0)]));
    assert!(
        store
            .sorted_range(&board, 7, 9, false)
            .await
            .unwrap()
            .is_empty()
    );

    let closed = range(17.5, 20.0);
    let mid = store.sorted_range_by_score(&board, &closed, false, 0, 10);
    let mid = members(mid.await.unwrap());
    assert_eq!(mid, pairs(&[("bob", 17.5), ("al", 20.0), ("cy", 20.0)]));
    let exclusive = ScoreRange {
        min_exclusive: true,
        max_exclusive: true,
        ..range(17.5, 30.0)
    };
    let inside = store.sorted_range_by_score(&board, &exclusive, false, 0, 10);
    assert_eq!(
        members(inside.await.unwrap()),
        pairs(&[("al", 20.0), ("cy", 20.0)])
    );
    let open = range(f64::NEG_INFINITY, f64::INFINITY);
    let page = store.sorted_range_by_score(&board, &open, true, 1, 2);
    assert_eq!(
        members(page.await.unwrap()),
        pairs(&[("cy", 20.0), ("al", 20.0)]),
        "REV with LIMIT 1 2"
    );

    let gone = [m("new"), m("zed")];
    assert_eq!(store.sorted_remove(&board, &gone).await.unwrap(), 1);
    let infinite = store.sorted_incr_by(&board, b"inf", f64::INFINITY).await;
    assert_eq!(infinite.unwrap(), f64::INFINITY);
    let nan = store
        .sorted_incr_by(&board, b"inf", f64::NEG_INFINITY)
        .await;
    assert!(
        matches!(nan, Err(BackendError::InvalidArgument(_))),
        "inf + -inf is NaN: refused, {nan:?}"
    );
    let still = store.sorted_score(&board, b"inf").await.unwrap();
    assert_eq!(still, Some(f64::INFINITY));
    // Type errors both ways; an emptied set vanishes.
    store
        .set(&k("str"), b"x", None, SetCondition::Always)
        .await
        .unwrap();
    assert_eq!(
        store.sorted_len(&k("str")).await,
        Err(BackendError::WrongType)
    );
    assert_eq!(store.get(&board).await, Err(BackendError::WrongType));
    let everyone: Vec<Vec<u8>> = store
        .sorted_range(&board, 0, -1, false)
        .await
        .unwrap()
        .into_iter()
        .map(|(member, _)| member)
        .collect();
    store.sorted_remove(&board, &everyone).await.unwrap();
    assert!(!store.exists(&board).await.unwrap());

    // Compare-and-swap.
    let cas = k("cas");
    let swap = |expected: Option<&'static [u8]>, new: Option<&'static [u8]>, ttl| {
        let cas = cas.clone();
        async move { store.compare_and_swap(&cas, expected, new, ttl).await }
    };
    assert!(
        swap(None, Some(b"1"), None).await.unwrap(),
        "absent, so set"
    );
    assert!(
        !swap(None, Some(b"2"), None).await.unwrap(),
        "not absent any more"
    );
    assert!(!swap(Some(b"0"), Some(b"2"), None).await.unwrap(), "not 0");
    assert_eq!(store.get(&cas).await.unwrap(), Some(m("1")));
    let minute = Some(Duration::from_secs(60));
    assert!(swap(Some(b"1"), Some(b"2"), minute).await.unwrap());
    let ttl = store.ttl(&cas).await.unwrap();
    assert!(
        matches!(ttl, KeyTtl::ExpiresInMs(ms) if ms > 50_000),
        "{ttl:?}"
    );
    assert!(
        swap(Some(b"2"), None, None).await.unwrap(),
        "a swap to nothing deletes"
    );
    assert!(!store.exists(&cas).await.unwrap());
    let list = k("list");
    store
        .list_push(&list, ListEnd::Back, &[m("x")])
        .await
        .unwrap();
    let wrong = store.compare_and_swap(&list, None, Some(b"1"), None).await;
    assert_eq!(wrong, Err(BackendError::WrongType));
}

/// A transaction: every op answers on its own, a failing op (WRONGTYPE) leaves the
/// others done.
pub(super) async fn atomic_batches_conform(store: &dyn StoreBackend, ns: &str) {
    let k = |name: &str| format!("{ns}atomic:{name}");
    let ops = vec![
        AtomicOp::Set(k("a"), m("1"), None),
        AtomicOp::IncrBy(k("a"), 4),
        AtomicOp::HashSet(k("h"), vec![("f".into(), m("v")), ("g".into(), m("w"))]),
        AtomicOp::HashIncrBy(k("h"), "n".into(), 2),
        AtomicOp::IncrBy(k("h"), 1),
        AtomicOp::ListPush(k("l"), ListEnd::Back, vec![m("x"), m("y")]),
        AtomicOp::SetAdd(k("s"), vec![m("p"), m("p"), m("q")]),
        AtomicOp::SortedAdd(k("z"), vec![(m("top"), 9.5)]),
        AtomicOp::Get(k("a")),
        AtomicOp::Get(k("missing")),
        AtomicOp::Expire(k("a"), Duration::from_secs(60)),
        AtomicOp::Expire(k("missing"), Duration::from_secs(60)),
        AtomicOp::Delete(k("l")),
        AtomicOp::Delete(k("missing")),
    ];
    let results = store.atomic(&ops).await.unwrap();
    assert_eq!(
        results,
        [
            AtomicResult::Done(true),
            AtomicResult::Integer(5),
            AtomicResult::Count(2),
            AtomicResult::Integer(2),
            AtomicResult::Failed(BackendError::WrongType),
            AtomicResult::Count(2),
            AtomicResult::Count(2),
            AtomicResult::Count(1),
            AtomicResult::Value(Some(m("5"))),
            AtomicResult::Value(None),
            AtomicResult::Done(true),
            AtomicResult::Done(false),
            AtomicResult::Done(true),
            AtomicResult::Done(false),
        ]
    );
    assert_eq!(store.hash_get(&k("h"), "n").await.unwrap(), Some(m("2")));
    assert_eq!(
        store.sorted_score(&k("z"), b"top").await.unwrap(),
        Some(9.5)
    );
    assert!(!store.exists(&k("l")).await.unwrap());
    assert!(matches!(
        store.ttl(&k("a")).await.unwrap(),
        KeyTtl::ExpiresInMs(_)
    ));
}

#[tokio::test]
async fn memory_store_conforms() {
    store_conforms(&MemoryStore::new(256 << 20), "techub:store:conformance:").await;
    sorted_sets_and_cas_conform(&MemoryStore::new(256 << 20), "techub:store:sorted:").await;
    atomic_batches_conform(&MemoryStore::new(256 << 20), "techub:store:batch:").await;
}

#[tokio::test]
async fn redis_store_conforms() {
    let ns = format!("{}:store:", unique("techub-test"));
    let store = RedisStore::new(services::redis().await);
    store_conforms(&store, &ns).await;
    sorted_sets_and_cas_conform(&store, &ns).await;
    atomic_batches_conform(&store, &ns).await;
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
