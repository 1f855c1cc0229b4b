//! Property tests of the plugin boundary: the capability views (what a guest's
//! `cache`, `store`, `lock` and `messaging` calls reach) fed arbitrary keys, patterns,
//! tags, lock names, routing keys, headers and byte values — glob metacharacters,
//! separators, control characters, empty and past-the-limit lengths — on the embedded
//! backends and on Redis. Every case asserts: no panic; every refusal a typed error
//! (never a trap); what a call accepted reads back; and nothing lands outside the
//! plugin's namespace, checked against the backend's actual key space (and a
//! neighbour's key that no scan or pattern may reach).

use proptest::prelude::*;
use std::collections::HashMap;
use std::sync::Arc;
use techub_host::bindings::techub::platform::cache::{
    EntryOptions, Host as CacheHost, Invalidation, Priority,
};
use techub_host::bindings::techub::platform::lock::{Host as LockHost, LockOptions};
use techub_host::bindings::techub::platform::messaging::{Host as MessagingHost, PublishOptions};
use techub_host::bindings::techub::platform::store::{
    Host as StoreHost, SetCondition as WitSetCondition, SetOptions,
};
use techub_host::capability::cache::CacheView;
use techub_host::capability::lock::LockView;
use techub_host::capability::messaging::MessagingView;
use techub_host::capability::store::{SetCondition, StoreView};
use techub_host::capability::{PluginContext, Usage};
use techub_host::config::{HostConfig, KvBackend, RedisMode};
use techub_host::names::routing::TopicPattern;
use techub_host::services::{self, Services};
use techub_tests::redis_nodes::RedisCluster;
use techub_tests::{PluginDir, config, grant, unique};
use wasmtime::component::ResourceTable;

const PLUGIN: &str = "prop";
const GRANTED_DOMAIN: &str = "users";
const GRANTED_PUBLISH: &str = "order.*";
/// A neighbour plugin's store key: no scan or pattern of `prop` may reach it.
const NEIGHBOUR_KEY: &str = "store:neighbour:secret";

/// What a case feeds the views.
#[derive(Debug, Clone)]
struct Input {
    domain: String,
    keys: Vec<String>,
    tags: Vec<String>,
    pattern: String,
    lock_name: String,
    routing_key: String,
    headers: Vec<(String, String)>,
    value: Vec<u8>,
}

/// Strings a hostile or careless plugin sends: empty, ordinary, glob metacharacters
/// and separators, any printable text, anything at all (control characters), and
/// lengths around the 512-byte key limit.
fn hostile() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        "[a-z0-9:_./-]{1,16}",
        "[*?\\[\\]\\\\^:{}#.a-z-]{1,12}",
        "\\PC{0,24}",
        any::<String>(),
        "[a-z]{505,520}",
    ]
}

fn input() -> impl Strategy<Value = Input> {
    let domain = prop_oneof![
        3 => Just(GRANTED_DOMAIN.to_string()),
        1 => Just("orders".to_string()), // declared, not granted
        1 => hostile(),
    ];
    let routing_key = prop_oneof![
        2 => "order\\.[a-z*#]{0,8}",
        1 => hostile(),
    ];
    (
        domain,
        prop::collection::vec(hostile(), 1..4),
        prop::collection::vec(hostile(), 0..3),
        hostile(),
        hostile(),
        routing_key,
        prop::collection::vec((hostile(), hostile()), 0..3),
        prop::collection::vec(any::<u8>(), 0..64),
    )
        .prop_map(
            |(domain, keys, tags, pattern, lock_name, routing_key, headers, value)| Input {
                domain,
                keys,
                tags,
                pattern,
                lock_name,
                routing_key,
                headers,
                value,
            },
        )
}

/// A host's services for `prop` (granted `users` and `order.*`), under a fresh
/// prefix, on the embedded backends or on the shared Redis.
struct Boundary {
    runtime: tokio::runtime::Runtime,
    context: Arc<PluginContext>,
    config: Arc<techub_host::HostConfig>,
    services: Arc<Services>,
    prefix: String,
    /// Keys are grouped by hash tag (a Redis Cluster).
    grouped: bool,
    _cluster: Option<RedisCluster>,
    _dir: PluginDir,
}

/// Where the backends of a [`Boundary`] live.
#[derive(PartialEq)]
enum On {
    Embedded,
    Redis,
    RedisCluster,
}

fn boundary(on: On) -> Boundary {
    let dir = PluginDir::with(&[]);
    let mut config: HostConfig = config(&dir);
    if on != On::Embedded {
        config.backends.cache = KvBackend::Redis;
        config.backends.store = KvBackend::Redis;
        config.backends.lock = KvBackend::Redis;
    }
    config.host.key_prefix = format!("{}:", unique("techub-prop"));
    grant(&mut config, PLUGIN, &[GRANTED_DOMAIN], &[GRANTED_PUBLISH]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let cluster = match on {
        On::RedisCluster => {
            let cluster = runtime.block_on(RedisCluster::start());
            config.redis.mode = RedisMode::Cluster;
            config.redis.urls = cluster.urls();
            Some(cluster)
        }
        _ => None,
    };
    let config = Arc::new(config);
    let services = runtime.block_on(async {
        let services = Arc::new(services::connect(&config).await.expect("services connect"));
        let neighbour = format!("{}{NEIGHBOUR_KEY}", config.host.key_prefix);
        services
            .store
            .set(&neighbour, b"theirs", None, SetCondition::Always)
            .await
            .unwrap();
        services
    });
    Boundary {
        context: Arc::new(services.context(PLUGIN, &config)),
        config: config.clone(),
        prefix: config.host.key_prefix.clone(),
        grouped: cluster.is_some(),
        services,
        runtime,
        _cluster: cluster,
        _dir: dir,
    }
}

/// `Ok`, or the typed error the guest would see; a trap (which would kill the
/// guest's instance over a bad argument) fails the case.
fn typed<T, E>(
    _violations: &mut Vec<String>,
    what: &str,
    result: Result<T, wasmtime_wasi::TrappableError<E>>,
) -> Result<T, E>
where
    E: std::error::Error + Send + Sync + 'static,
{
    result.map_err(|failure| match failure.downcast() {
        Ok(error) => error,
        Err(trap) => panic!("{what} trapped instead of answering a typed error: {trap:#}"),
    })
}

impl Boundary {
    /// Runs every call of `input`; what went wrong.
    fn exercise(&self, input: &Input) -> Vec<String> {
        self.runtime.block_on(self.calls(input))
    }

    async fn calls(&self, input: &Input) -> Vec<String> {
        let mut v = Vec::new();
        let mut usage = Usage::within(u32::MAX);
        let plugin = &*self.context;

        // cache: what a set accepted, a get reads back; only a granted domain accepts.
        {
            let mut cache = CacheView::new(&plugin.cache, &mut usage, false);
            let options = EntryOptions {
                ttl_seconds: Some(60),
                tags: input.tags.clone(),
                priority: Priority::High,
            };
            for key in &input.keys {
                let set = cache
                    .set(
                        input.domain.clone(),
                        key.clone(),
                        input.value.clone(),
                        options.clone(),
                    )
                    .await;
                let set = typed(&mut v, "cache.set", set);
                if set.is_ok() && input.domain != GRANTED_DOMAIN {
                    v.push(format!(
                        "cache.set accepted ungranted domain {:?}",
                        input.domain
                    ));
                }
                if set.is_ok() {
                    let got = cache.get(input.domain.clone(), key.clone()).await;
                    match typed(&mut v, "cache.get", got) {
                        Ok(Some(value)) if value == input.value => {}
                        other => v.push(format!("cache.get of {key:?} after set: {other:?}")),
                    }
                }
            }
            let pattern = cache
                .invalidate_pattern(input.domain.clone(), input.pattern.clone())
                .await;
            let _ = typed(&mut v, "cache.invalidate_pattern", pattern);
            let what = Invalidation {
                keys: input.keys.clone(),
                tags: input.tags.clone(),
                pattern: Some(input.pattern.clone()),
            };
            let invalidated = cache.invalidate(input.domain.clone(), what).await;
            let _ = typed(&mut v, "cache.invalidate", invalidated);
            for tag in &input.tags {
                let by_tag = cache.invalidate_tag(None, tag.clone()).await;
                let _ = typed(&mut v, "cache.invalidate_tag", by_tag);
            }
        }

        // store: set/get round trip; a scan sees only the plugin's own keys.
        {
            let mut claims = Vec::new();
            let mut store = StoreView::new(&plugin.store, &mut usage, &mut claims);
            for key in &input.keys {
                let options = SetOptions {
                    ttl_ms: Some(60_000),
                    condition: WitSetCondition::Always,
                };
                let set = store.set(key.clone(), input.value.clone(), options).await;
                if typed(&mut v, "store.set", set).is_ok() {
                    match typed(&mut v, "store.get", store.get(key.clone()).await) {
                        Ok(Some(value)) if value == input.value => {}
                        other => v.push(format!("store.get of {key:?} after set: {other:?}")),
                    }
                }
                let fields = vec![(input.pattern.clone(), input.value.clone())];
                let _ = typed(
                    &mut v,
                    "store.hash_set",
                    store.hash_set(key.clone(), fields).await,
                );
            }
            for pattern in [input.pattern.clone(), "*".into(), "../*".into()] {
                let page = store.scan(pattern.clone(), None, 1000).await;
                if let Ok(page) = typed(&mut v, "store.scan", page)
                    && page
                        .keys
                        .iter()
                        .any(|k| k.contains("neighbour") || k.contains("secret"))
                {
                    v.push(format!(
                        "store.scan({pattern:?}) reached a neighbour: {:?}",
                        page.keys
                    ));
                }
            }
            let _ = typed(
                &mut v,
                "store.delete",
                store.delete(input.keys.clone()).await,
            );
        }

        // lock: a name is a key of the plugin's, or refused.
        {
            let mut table = ResourceTable::new();
            let mut held = HashMap::new();
            let mut locks = LockView::new(&plugin.lock, &mut usage, &mut table, &mut held);
            let options = LockOptions {
                ttl_ms: 1_000,
                max_retries: 0,
                retry_delay_ms: 0,
            };
            let acquired = locks.acquire(input.lock_name.clone(), options).await;
            let _ = typed(&mut v, "lock.acquire", acquired);
        }

        // messaging: a publish goes out only when the grant matches its routing key.
        {
            let mut answering = None;
            let mut messaging = MessagingView::new(&plugin.messaging, &mut usage, &mut answering);
            let options = PublishOptions {
                priority: None,
                persistent: false,
                expiration_ms: None,
                delay_ms: None,
                correlation_id: None,
                reply_to: None,
                headers: input.headers.clone(),
                message_id: None,
            };
            let published = messaging
                .publish(input.routing_key.clone(), input.value.clone(), options)
                .await;
            let granted = TopicPattern::parse(GRANTED_PUBLISH).unwrap();
            if typed(&mut v, "messaging.publish", published).is_ok()
                && !granted.matches(&input.routing_key)
            {
                v.push(format!("published to ungranted {:?}", input.routing_key));
            }
        }

        v.extend(self.outside_the_namespace().await);
        v
    }

    /// Keys in the backend's key space under this test's prefix that belong to
    /// neither the plugin, its granted domain, nor the seeded neighbour.
    async fn outside_the_namespace(&self) -> Vec<String> {
        // On a cluster the host's groups are hash tags: `{prop}`, `{users}`.
        let group = |name: &str| match self.grouped {
            true => format!("{{{name}}}"),
            false => name.to_string(),
        };
        let (plugin, domain) = (group(PLUGIN), group(GRANTED_DOMAIN));
        let allowed: Vec<String> = [
            format!("store:{PLUGIN}:"),
            format!("lock:{plugin}:"),
            format!("lock-fence:{plugin}"),
            format!("cache:{domain}:"),
            format!("cache-meta:{domain}:"),
            format!("cache-tag:{domain}:"),
            format!("cache-prio:{domain}:"),
            NEIGHBOUR_KEY.to_string(),
        ]
        .iter()
        .map(|p| format!("{}{p}", self.prefix))
        .collect();
        let mut keys = Vec::new();
        let mut cursor: Option<String> = None;
        // On Redis the store's SCAN walks the server's key space (every backend's keys
        // share it; on a cluster, every primary's); the embedded store walks its own.
        let pattern = format!("{}*", techub_host::names::glob::escape(&self.prefix));
        loop {
            let (page, next) = self
                .services
                .store
                .scan(&pattern, cursor.as_deref(), 1000)
                .await
                .expect("the store scans");
            keys.extend(page);
            match next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        let mut outside: Vec<String> = keys
            .into_iter()
            .filter(|k| !allowed.iter().any(|a| k.starts_with(a.as_str())))
            .map(|k| format!("key outside the namespace: {k:?}"))
            .collect();
        for usage in self.services.cache.backend.usage() {
            if usage.domain != GRANTED_DOMAIN {
                outside.push(format!(
                    "cache domain outside the grant: {:?}",
                    usage.domain
                ));
            }
        }
        outside
    }
}

/// Cases per property: 256 locally, 64 in CI (set `PROPTEST_CASES` for more).
fn cases() -> ProptestConfig {
    let default = if std::env::var_os("CI").is_some() {
        64
    } else {
        256
    };
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(default);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

#[test]
fn the_capability_views_hold_on_the_embedded_backends() {
    let boundary = boundary(On::Embedded);
    proptest!(cases(), |(input in input())| {
        let violations = boundary.exercise(&input);
        prop_assert!(violations.is_empty(), "{violations:#?}");
    });
}

#[test]
fn the_capability_views_hold_on_redis() {
    let boundary = boundary(On::Redis);
    proptest!(cases(), |(input in input())| {
        let violations = boundary.exercise(&input);
        prop_assert!(violations.is_empty(), "{violations:#?}");
    });
}

#[test]
fn the_capability_views_hold_on_a_redis_cluster() {
    let boundary = boundary(On::RedisCluster);
    proptest!(cases(), |(input in input())| {
        let violations = boundary.exercise(&input);
        prop_assert!(violations.is_empty(), "{violations:#?}");
    });
}

/// A plugin file's bytes: anything, or a real component with bytes flipped, a piece
/// cut out or the end cut off (past the magic number, so it reaches the compiler).
fn plugin_bytes(real: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let len = real.len();
    let flipped = {
        let real = real.clone();
        prop::collection::vec((8..len, any::<u8>()), 1..16).prop_map(move |flips| {
            let mut bytes = real.clone();
            for (at, value) in flips {
                bytes[at] = value;
            }
            bytes
        })
    };
    let cut = {
        let real = real.clone();
        (8..len, 1..256usize).prop_map(move |(at, n)| {
            let mut bytes = real.clone();
            bytes.drain(at..(at + n).min(len));
            bytes
        })
    };
    let truncated = (8..len).prop_map(move |at| real[..at].to_vec());
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..2048),
        prop::collection::vec(any::<u8>(), 0..2048).prop_map(|mut b| {
            b.splice(0..0, *b"\0asm\x0d\0\x01\0");
            b
        }),
        flipped,
        cut,
        truncated,
    ]
}

/// Any bytes as a plugin file: loaded or refused with a typed error, never a panic
/// (not even one the host catches on its compile thread).
#[test]
fn a_plugin_file_of_any_bytes_is_refused_with_a_typed_error_or_loads() {
    let boundary = boundary(On::Embedded);
    let config = boundary.config.clone();
    let runtime = Arc::new(techub_host::runtime::Runtime::new(&config).unwrap());
    let real = std::fs::read(techub_tests::fixture("fixture_noop")).unwrap();
    let path = std::path::Path::new("prop.wasm");
    let loaded = std::sync::atomic::AtomicU32::new(0);
    let mut config_cases = cases();
    config_cases.cases = config_cases.cases.min(128);
    proptest!(config_cases, |(bytes in plugin_bytes(real.clone()))| {
        let hash = techub_host::runtime::content_hash(&bytes);
        let result = boundary.runtime.block_on(techub_host::plugins::load_bytes(
            &runtime,
            path,
            bytes,
            hash,
            config.clone(),
            boundary.services.clone(),
        ));
        match result {
            Ok(_) => {
                loaded.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            Err(error) => {
                let text = error.to_string();
                prop_assert!(!text.contains("compilation task failed"), "the compiler panicked: {text}");
                prop_assert!(!text.is_empty());
            }
        }
    });
    println!("{} mutated files still loaded", loaded.into_inner());
}
