//! The live platform: plugins dropped, replaced and removed while the host runs and
//! messages flow; host.toml reloaded; the compiled-component cache.

use crate::e2e_embedded::dead_letter_of;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use techub_host::Platform;
use techub_host::capability::messaging::MessageStatus;
use techub_host::config::{BrokerBackend, HostConfig};
use techub_host::registry::Lifecycle;
use techub_tests::{PluginDir, config, fixture, init_tracing, services, wait_for};

const LIMIT: Duration = Duration::from_secs(30);
const PLUGIN: &str = "live";

/// Copies a built plugin into `dir` as `<name>.wasm` the atomic way: to a temporary
/// name first, then renamed into place.
fn deploy(dir: &Path, name: &str, crate_name: &str) {
    let temp = dir.join(format!(".{name}.wasm.part"));
    std::fs::copy(fixture(crate_name), &temp).unwrap();
    std::fs::rename(&temp, dir.join(format!("{name}.wasm"))).unwrap();
}

/// The short version (hash) of a built plugin.
fn version_of(crate_name: &str) -> String {
    let hash = techub_host::runtime::content_hash(&std::fs::read(fixture(crate_name)).unwrap());
    hash[..12].to_string()
}

/// Waits until plugin `name` serves the build of `crate_name`.
async fn serving(platform: &Platform, name: &str, crate_name: &str) {
    let version = version_of(crate_name);
    wait_for(LIMIT, &format!("{name} to serve {crate_name}"), || async {
        platform
            .plugins()
            .await
            .into_iter()
            .find(|p| p.name == name && p.state == Lifecycle::Serving && p.version == version)
            .map(drop)
    })
    .await;
}

/// Waits until plugin `name` no longer serves (it drains, or is gone).
async fn stopped(platform: &Platform, name: &str) {
    wait_for(LIMIT, &format!("{name} to stop serving"), || async {
        platform
            .plugins()
            .await
            .iter()
            .all(|p| p.name != name || p.state == Lifecycle::Draining)
            .then_some(())
    })
    .await;
}

/// Message id → the versions that handled it, from the plugin's `handled` list.
async fn handled(platform: &Platform, name: &str) -> BTreeMap<String, Vec<String>> {
    let entries = platform
        .services
        .store
        .list_range(&format!("techub:store:{name}:handled"), 0, -1)
        .await
        .unwrap();
    let mut by_id: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for entry in entries {
        let entry = String::from_utf8(entry).unwrap();
        let (id, version) = entry.rsplit_once(':').unwrap();
        by_id
            .entry(id.to_string())
            .or_default()
            .push(version.to_string());
    }
    by_id
}

async fn publish(platform: &Platform, key: &str, payload: &str) -> String {
    platform
        .publish(key, payload.as_bytes().to_vec(), None)
        .await
        .unwrap()
}

/// A host on an empty plugins directory that grants `live` the versioned fixture's
/// keys; on RabbitMQ when `amqp`.
async fn live_host(amqp: bool) -> (Platform, PluginDir) {
    init_tracing();
    let dir = PluginDir::with(&[]);
    let mut config = config(&dir);
    config.plugins.entry(PLUGIN.into()).or_default().subscribe = vec!["fixture.versioned.#".into()];
    if amqp {
        config.backends.messaging = BrokerBackend::Amqp;
        config.amqp = services::amqp_config();
    }
    let platform = Platform::start(config)
        .await
        .unwrap_or_else(|e| panic!("{}", services::rabbitmq_hint(&e)));
    (platform, dir)
}

async fn a_plugin_dropped_into_the_directory_goes_live(amqp: bool) {
    let (platform, dir) = live_host(amqp).await;
    assert!(platform.plugins().await.is_empty());
    deploy(dir.path(), PLUGIN, "fixture_versioned_v1");
    serving(&platform, PLUGIN, "fixture_versioned_v1").await;
    let id = publish(&platform, "fixture.versioned.main", "{}").await;
    wait_for(LIMIT, "the new plugin to handle a message", || async {
        handled(&platform, PLUGIN).await.get(&id).cloned()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plugin_dropped_into_the_directory_goes_live_on_the_embedded_broker() {
    a_plugin_dropped_into_the_directory_goes_live(false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plugin_dropped_into_the_directory_goes_live_on_rabbitmq() {
    a_plugin_dropped_into_the_directory_goes_live(true).await;
}

/// v1 → v2 → v3 while a stream of messages flows: every message handled exactly once,
/// and after v3 serves only v3 handles.
async fn replacing_a_plugin_under_load_loses_and_repeats_nothing(amqp: bool) {
    const MESSAGES: usize = 1_000;
    let (platform, dir) = live_host(amqp).await;
    let platform = Arc::new(platform);
    deploy(dir.path(), PLUGIN, "fixture_versioned_v1");
    serving(&platform, PLUGIN, "fixture_versioned_v1").await;

    let published = Arc::new(AtomicUsize::new(0));
    let publisher = {
        let (platform, published) = (platform.clone(), published.clone());
        tokio::spawn(async move {
            let mut ids = Vec::with_capacity(MESSAGES);
            for _ in 0..MESSAGES {
                ids.push(publish(&platform, "fixture.versioned.main", "{}").await);
                published.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            ids
        })
    };
    let reached = |n: usize| {
        let published = published.clone();
        async move {
            wait_for(LIMIT, &format!("{n} messages published"), || async {
                (published.load(Ordering::SeqCst) >= n).then_some(())
            })
            .await
        }
    };
    reached(100).await;
    deploy(dir.path(), PLUGIN, "fixture_versioned_v2");
    serving(&platform, PLUGIN, "fixture_versioned_v2").await;
    reached(300).await;
    deploy(dir.path(), PLUGIN, "fixture_versioned_v3");
    serving(&platform, PLUGIN, "fixture_versioned_v3").await;
    let v3_from = published.load(Ordering::SeqCst);
    let ids = publisher.await.unwrap();
    assert!(
        v3_from < MESSAGES - 50,
        "the stream went on after the last swap"
    );

    let all = wait_for(LIMIT, "every message to be handled", || async {
        let all = handled(&platform, PLUGIN).await;
        ids.iter().all(|id| all.contains_key(id)).then_some(all)
    })
    .await;
    for id in &ids {
        assert_eq!(all[id].len(), 1, "message {id} handled {:?}", all[id]);
    }
    for id in &ids[v3_from..] {
        assert_eq!(all[id], ["v3"], "published after v3 served: {id}");
    }
    let versions: std::collections::BTreeSet<&str> =
        all.values().flatten().map(String::as_str).collect();
    assert!(
        versions.contains("v1") && versions.contains("v3"),
        "{versions:?}"
    );

    // v3 binds `extra` and no longer `old` (which v2 bound).
    let extra = publish(&platform, "fixture.versioned.extra", "{}").await;
    let old = publish(&platform, "fixture.versioned.old", "{}").await;
    let after = publish(&platform, "fixture.versioned.main", "{}").await;
    let all = wait_for(LIMIT, "the added key to be handled", || async {
        let all = handled(&platform, PLUGIN).await;
        (all.contains_key(&extra) && all.contains_key(&after)).then_some(all)
    })
    .await;
    assert!(!all.contains_key(&old), "the removed key was unbound");
}

#[tokio::test(flavor = "multi_thread")]
async fn replacing_a_plugin_under_load_loses_and_repeats_nothing_on_the_embedded_broker() {
    replacing_a_plugin_under_load_loses_and_repeats_nothing(false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn replacing_a_plugin_under_load_loses_and_repeats_nothing_on_rabbitmq() {
    replacing_a_plugin_under_load_loses_and_repeats_nothing(true).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_replacement_is_refused_and_the_old_version_keeps_serving() {
    let (platform, dir) = live_host(false).await;
    deploy(dir.path(), PLUGIN, "fixture_versioned_v1");
    serving(&platform, PLUGIN, "fixture_versioned_v1").await;
    let v2 = std::fs::read(fixture("fixture_versioned_v2")).unwrap();
    let mut config = platform.config().as_ref().clone();
    config.queues.remove("payment");
    platform.reload_config(config).await.unwrap();
    let file = dir.path().join(format!("{PLUGIN}.wasm"));
    let cases: [(&str, Vec<u8>, &str); 4] = [
        (
            "garbage",
            b"not a component at all".to_vec(),
            "not a valid WebAssembly component",
        ),
        (
            "a truncated copy",
            v2[..v2.len() / 2].to_vec(),
            "not a valid WebAssembly component",
        ),
        (
            "the wrong world",
            std::fs::read(fixture("fixture_wrong_world")).unwrap(),
            "does not implement the techub:platform/plugin world",
        ),
        (
            "an undeclared queue type",
            std::fs::read(fixture("fixture_priority")).unwrap(),
            "which [queues] does not declare",
        ),
    ];
    for (what, bytes, reason) in cases {
        std::fs::write(&file, &bytes).unwrap();
        let failed = wait_for(LIMIT, &format!("{what} to be refused"), || async {
            let (_, failed) = platform.registry().plugins().await;
            failed
                .into_iter()
                .find(|f| f.file == "live.wasm" && f.reason.contains(reason))
        })
        .await;
        let plugins = platform.plugins().await;
        let live = plugins.iter().find(|p| p.name == PLUGIN).unwrap();
        assert_eq!(live.version, version_of("fixture_versioned_v1"), "{what}");
        assert_eq!(live.last_error.as_deref(), Some(failed.reason.as_str()));
        let id = publish(&platform, "fixture.versioned.main", "{}").await;
        let by = wait_for(LIMIT, &format!("v1 to handle after {what}"), || async {
            handled(&platform, PLUGIN).await.get(&id).cloned()
        })
        .await;
        assert_eq!(by, ["v1"], "after {what}");
    }
    // A good file again: swapped in, and the failure is gone.
    deploy(dir.path(), PLUGIN, "fixture_versioned_v2");
    serving(&platform, PLUGIN, "fixture_versioned_v2").await;
    assert!(platform.registry().plugins().await.1.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_removed_plugin_finishes_its_deliveries_and_takes_no_new_ones() {
    let (platform, dir) = live_host(false).await;
    deploy(dir.path(), PLUGIN, "fixture_versioned_v1");
    serving(&platform, PLUGIN, "fixture_versioned_v1").await;
    let mut slow = Vec::new();
    for _ in 0..4 {
        slow.push(publish(&platform, "fixture.versioned.main", "sleep:700").await);
    }
    wait_for(LIMIT, "deliveries in flight", || async {
        platform
            .plugins()
            .await
            .iter()
            .any(|p| p.name == PLUGIN && p.in_flight >= 4)
            .then_some(())
    })
    .await;
    std::fs::remove_file(dir.path().join(format!("{PLUGIN}.wasm"))).unwrap();
    stopped(&platform, PLUGIN).await;
    for id in &slow {
        wait_for(LIMIT, "a delivery in flight to complete", || async {
            (platform.services.messaging.tracker.get(id) == Some(MessageStatus::Completed))
                .then_some(())
        })
        .await;
    }
    let late = publish(&platform, "fixture.versioned.main", "{}").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let all = handled(&platform, PLUGIN).await;
    assert!(slow.iter().all(|id| all[id] == ["v1"]));
    assert!(
        !all.contains_key(&late),
        "nothing new is handled once removed"
    );
    assert_eq!(
        platform.services.messaging.tracker.get(&late),
        Some(MessageStatus::Pending),
        "it waits in the queue"
    );
    assert!(platform.plugins().await.is_empty(), "drained and gone");
}

#[tokio::test(flavor = "multi_thread")]
async fn host_toml_edits_apply_to_the_next_invocation_and_bad_ones_are_refused() {
    init_tracing();
    let dir = PluginDir::with(&[("spin", "fixture_spin"), ("hostile", "fixture_hostile")]);
    let path = dir.path().join("host.toml");
    let write = |cpu_ms: u32, publish: &str| {
        let text = format!(
            "[host]\nplugins_dir = \".\"\ncache_dir = \".cache\"\n\n[limits]\ncpu_ms = {cpu_ms}\n\n\
             [queues.email]\nmax_retries = 1\nretry_delay_ms = 100\n[queues.webhook]\nmax_retries = 1\nretry_delay_ms = 100\n\n\
             [plugins.spin]\nsubscribe = [\"#\"]\n[plugins.hostile]\nsubscribe = [\"#\"]\npublish = [{publish}]\n"
        );
        std::fs::write(&path, text).unwrap();
    };
    write(2_000, "\"fixture.sink.#\"");
    let platform = Platform::start(HostConfig::load(&path).unwrap())
        .await
        .unwrap();
    platform.watch(Some(path.clone())).unwrap();
    assert_eq!(
        platform.plugins().await.len(),
        2,
        "{:?}",
        platform.load_errors().await
    );

    let id = publish(&platform, "fixture.hostile.flood", "{}").await;
    let reason = dead_letter_of(&platform, &id).await.reason;
    assert!(
        reason.contains("published 100 then quota exceeded"),
        "granted, it publishes: {reason}"
    );

    // Edit the file: a lower CPU limit and no publish grant, for the next invocations.
    write(50, "");
    wait_for(LIMIT, "the edit to be applied", || async {
        (platform.config().limits.cpu_ms == 50).then_some(())
    })
    .await;
    let id = publish(&platform, "fixture.spin.now", "{}").await;
    let reason = dead_letter_of(&platform, &id).await.reason;
    assert!(reason.contains("CPU limit of 50 ms exceeded"), "{reason}");
    let id = publish(&platform, "fixture.hostile.flood", "{}").await;
    let reason = dead_letter_of(&platform, &id).await.reason;
    assert!(
        reason.contains("published 0 then")
            && reason.contains("to [plugins.hostile].publish in host.toml"),
        "{reason}"
    );

    // An invalid edit is refused, naming the field; the running config stays.
    std::fs::write(&path, "[limits]\ncpu_ms = 5\n").unwrap();
    let error = platform
        .reload_config_file(&path)
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("limits.cpu_ms"), "{error}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        platform.config().limits.cpu_ms,
        50,
        "the running config stays"
    );
    assert_eq!(platform.plugins().await.len(), 2);

    // A field fixed at start is named and ignored, the rest applies.
    let mut config = platform.config().as_ref().clone();
    config.host.max_instances += 1;
    config.limits.cpu_ms = 60;
    let ignored = platform.reload_config(config).await.unwrap();
    assert_eq!(ignored, ["host.max_instances"]);
    assert_eq!(platform.config().limits.cpu_ms, 60);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restart_loads_compiled_plugins_from_the_cache_and_recompiles_a_corrupt_entry() {
    init_tracing();
    let dir = PluginDir::with(&[("user-notifications", "user_notifications")]);
    let mut config = config(&dir);
    techub_tests::grant(
        &mut config,
        "user-notifications",
        &["users"],
        &["notification.*"],
    );
    let first = Platform::start(config.clone()).await.unwrap();
    assert_eq!(first.runtime.cache.compiled(), 1);
    assert_eq!(first.runtime.cache.hits(), 0);
    drop(first);

    let second = Platform::start(config.clone()).await.unwrap();
    assert_eq!(second.runtime.cache.hits(), 1, "loaded from the cache");
    assert_eq!(second.runtime.cache.compiled(), 0, "not compiled again");
    techub_tests::publish_user(&second, "cached").await;
    techub_tests::cached(&second, "users", "cached").await;
    drop(second);

    // Corrupt the entry: it is refused and recompiled, and the plugin still serves.
    let entry = std::fs::read_dir(&config.host.cache_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "cwasm"))
        .expect("a cache entry");
    let mut bytes = std::fs::read(&entry).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&entry, bytes).unwrap();
    let third = Platform::start(config).await.unwrap();
    assert_eq!(third.runtime.cache.hits(), 0);
    assert_eq!(third.runtime.cache.compiled(), 1, "recompiled");
    techub_tests::publish_user(&third, "recompiled").await;
    techub_tests::cached(&third, "users", "recompiled").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plugin_whose_grant_is_withdrawn_stops_and_comes_back_when_granted() {
    let (platform, dir) = live_host(false).await;
    deploy(dir.path(), PLUGIN, "fixture_versioned_v1");
    serving(&platform, PLUGIN, "fixture_versioned_v1").await;
    let mut config = platform.config().as_ref().clone();
    config.plugins.get_mut(PLUGIN).unwrap().subscribe = vec!["other.#".into()];
    platform.reload_config(config.clone()).await.unwrap();
    stopped(&platform, PLUGIN).await;
    let reasons = platform.load_errors().await;
    assert!(
        reasons.iter().any(|r| r.contains("subscribe")),
        "{reasons:?}"
    );
    config.plugins.get_mut(PLUGIN).unwrap().subscribe = vec!["fixture.versioned.#".into()];
    platform.reload_config(config).await.unwrap();
    serving(&platform, PLUGIN, "fixture_versioned_v1").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn reading_a_plugin_does_not_make_the_watcher_load_it_again() {
    let (platform, dir) = live_host(false).await;
    std::fs::write(dir.path().join("broken.wasm"), b"not a component").unwrap();
    let first = wait_for(LIMIT, "the broken file to be refused", || async {
        platform.registry().plugins().await.1.into_iter().next()
    })
    .await;
    // The host opened and read the file to load it; that is not a change to act on.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (_, failed) = platform.registry().plugins().await;
    assert_eq!(failed.len(), 1);
    assert_eq!(
        failed[0].at, first.at,
        "the file was loaded again without a change"
    );
}

/// A memory limit lowered by a reload can be raised again by the next one, up to the
/// size the pool's slots have had since start; past it, a restart is asked for. The
/// plugin runs under each.
#[tokio::test(flavor = "multi_thread")]
async fn a_lowered_memory_limit_is_raised_again_live() {
    init_tracing();
    let (_dir, config) = techub_tests::user_notifications();
    let started_with = config.limits.memory_mib;
    let platform = Platform::start(config.clone()).await.unwrap();
    let mut lowered = config.clone();
    lowered.limits.memory_mib = 16;
    platform.reload_config(lowered).await.expect("lowered live");
    let mut raised = config.clone();
    raised.limits.memory_mib = started_with;
    platform
        .reload_config(raised)
        .await
        .expect("raised back to the slot size live");
    assert_eq!(platform.config().limits.memory_mib, started_with);
    let mut beyond = config.clone();
    beyond.limits.memory_mib = started_with * 2;
    let refused = platform
        .reload_config(beyond)
        .await
        .unwrap_err()
        .to_string();
    assert!(refused.contains("restart"), "{refused}");
    techub_tests::publish_user(&platform, "after-raise").await;
    techub_tests::cached(&platform, "users", "after-raise").await;
}

/// A newer version refused for asking what its grant does not cover goes live when a
/// reload grants it (the older version serves meanwhile), as a plugin that never loaded
/// does.
#[tokio::test(flavor = "multi_thread")]
async fn a_refused_new_version_goes_live_when_a_reload_grants_what_it_asked_for() {
    let (platform, dir) = live_host(false).await;
    let mut narrow = platform.config().as_ref().clone();
    narrow.plugins.get_mut(PLUGIN).unwrap().subscribe = vec!["fixture.versioned.main".into()];
    platform.reload_config(narrow.clone()).await.unwrap();
    deploy(dir.path(), PLUGIN, "fixture_versioned_v1");
    serving(&platform, PLUGIN, "fixture_versioned_v1").await;
    // v3 also binds fixture.versioned.extra, which the grant does not cover.
    deploy(dir.path(), PLUGIN, "fixture_versioned_v3");
    wait_for(LIMIT, "v3 to be refused", || async {
        let (_, failed) = platform.registry().plugins().await;
        failed.into_iter().find(|f| f.file == "live.wasm")
    })
    .await;
    serving(&platform, PLUGIN, "fixture_versioned_v1").await;
    let mut wide = narrow;
    wide.plugins.get_mut(PLUGIN).unwrap().subscribe = vec!["fixture.versioned.#".into()];
    platform.reload_config(wide).await.unwrap();
    serving(&platform, PLUGIN, "fixture_versioned_v3").await;
    let (_, failed) = platform.registry().plugins().await;
    assert!(failed.is_empty(), "{failed:?}");
}
