//! Inspecting state (`techub-host store get|scan`, `techub-host cache get`): what a
//! plugin stored, read inside its namespace only and behind the admin token; what a
//! cache domain holds. One body on the embedded backends and on Redis.

use crate::e2e_services::on_services;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use techub_host::Platform;
use techub_host::admin::client;
use techub_host::capability::cache::{CacheWrite, Priority};
use techub_host::capability::store::{ListEnd, SetCondition};
use techub_tests::{PluginDir, config, host_binary, init_tracing, unique};

const TOKEN: &str = "inspect-token-0123456789";

async fn json(admin: &str, path: &str) -> (u16, Value) {
    let (status, body) = client::get(admin, Some(TOKEN), path).await.unwrap();
    let value = serde_json::from_str(&body).unwrap_or_else(|_| panic!("{path}: {body}"));
    (status, value)
}

/// `techub-host <args>` with the token, run off the runtime's threads.
async fn cli(args: &[&str]) -> std::process::Output {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(host_binary())
            .args(args)
            .env("TECHUB_ADMIN_TOKEN", TOKEN)
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

async fn state_is_inspected_inside_its_namespace_only(mut config: techub_host::HostConfig) {
    init_tracing();
    let (plugin, other) = (unique("alpha"), unique("beta"));
    config.cache.domains.insert("users".into(), 600);
    let platform = Arc::new(Platform::start(config).await.unwrap());
    let prefix = platform.config().host.key_prefix.clone();
    let store = platform.services.store.clone();
    let key = |plugin: &str, key: &str| format!("{prefix}store:{plugin}:{key}");
    let set = |key: String, value: &'static [u8]| {
        let store = store.clone();
        async move {
            store
                .set(&key, value, None, SetCondition::Always)
                .await
                .unwrap()
        }
    };
    set(key(&plugin, "greeting"), "héllo".as_bytes()).await;
    set(key(&plugin, "blob"), &[0xff, 0x00, 0x7f]).await;
    set(key(&other, "secret"), b"beta-only").await;
    store
        .hash_set(
            &key(&plugin, "order:1"),
            &[("state".into(), b"paid".to_vec())],
        )
        .await
        .unwrap();
    store
        .list_push(
            &key(&plugin, "queue"),
            ListEnd::Back,
            &[b"a".to_vec(), b"b".to_vec()],
        )
        .await
        .unwrap();
    store
        .expire(&key(&plugin, "greeting"), Duration::from_secs(60))
        .await
        .unwrap();
    let write = CacheWrite {
        ttl: Duration::from_secs(60),
        tags: vec![],
        priority: Priority::Medium,
    };
    platform
        .services
        .cache
        .backend
        .set_many("users", &[("u-1".into(), b"{\"id\":1}".to_vec())], &write)
        .await
        .unwrap();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = listener.local_addr().unwrap().to_string();
    let router = techub_host::admin::router(platform.clone(), Some(TOKEN.to_string()));
    tokio::spawn(axum::serve(listener, router).into_future());

    // Behind the token.
    let path = format!("/store/{plugin}/keys/greeting");
    let (status, _) = client::get(&admin, None, &path).await.unwrap();
    assert_eq!(status, 401, "read without the token");

    let (status, value) = json(&admin, &path).await;
    assert_eq!(status, 200, "{value}");
    assert_eq!(value["type"], "string");
    assert_eq!(value["value"]["text"], "héllo");
    let ttl = value["ttl_ms"].as_u64().expect("a TTL");
    assert!(ttl > 50_000 && ttl <= 60_000, "{ttl}");
    let (_, value) = json(&admin, &format!("/store/{plugin}/keys/blob")).await;
    assert_eq!(value["value"]["hex"], "ff007f", "{value}");
    let (_, value) = json(&admin, &format!("/store/{plugin}/keys/order:1")).await;
    assert_eq!(value["type"], "hash", "{value}");
    assert_eq!(value["value"]["fields"]["state"]["text"], "paid");
    let (_, value) = json(&admin, &format!("/store/{plugin}/keys/queue")).await;
    assert_eq!(value["type"], "list", "{value}");
    assert_eq!(value["value"]["count"], 2);

    // Its namespace only: the other plugin's key is not there, a scan lists its own
    // keys without the prefix, and a name that would nest into it is refused.
    let (status, value) = json(&admin, &format!("/store/{plugin}/keys/secret")).await;
    assert_eq!(status, 404, "{value}");
    let mut keys: Vec<String> = Vec::new();
    let mut query = "count=1000".to_string();
    loop {
        let (status, value) = json(&admin, &format!("/store/{plugin}/scan/*?{query}")).await;
        assert_eq!(status, 200, "{value}");
        keys.extend(
            value["keys"]
                .as_array()
                .unwrap()
                .iter()
                .map(|k| k.as_str().unwrap().to_string()),
        );
        match value["cursor"].as_str() {
            Some(cursor) => query = format!("count=1000&cursor={}", client::segment(cursor)),
            None => break,
        }
    }
    keys.sort();
    keys.dedup();
    assert_eq!(keys, ["blob", "greeting", "order:1", "queue"]);
    let nested = client::segment(&format!("{plugin}:order"));
    let (status, value) = json(&admin, &format!("/store/{nested}/keys/1")).await;
    assert_eq!(status, 400, "{value}");

    // The cache: a declared domain's entry; an undeclared domain is not one.
    let (status, value) = json(&admin, "/cache/users/keys/u-1").await;
    assert_eq!(status, 200, "{value}");
    assert_eq!(value["value"]["text"], "{\"id\":1}");
    let (status, _) = json(&admin, "/cache/nope/keys/u-1").await;
    assert_eq!(status, 404);

    // The commands print what the endpoint answers.
    let output = cli(&["store", "scan", &plugin, "gr*", "--admin", &admin]).await;
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{printed}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // (On a Redis holding many keys the bounded walk may end with a cursor to go on.)
    assert_eq!(printed.lines().next(), Some("greeting"), "{printed}");
    let output = cli(&["cache", "get", "users", "u-1", "--admin", &admin]).await;
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(printed.contains(r#""text": "{\"id\":1}""#), "{printed}");
    platform.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn state_is_inspected_inside_its_namespace_only_on_the_embedded_backends() {
    let dir = PluginDir::with(&[]);
    state_is_inspected_inside_its_namespace_only(config(&dir)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn state_is_inspected_inside_its_namespace_only_on_redis() {
    let dir = PluginDir::with(&[]);
    state_is_inspected_inside_its_namespace_only(on_services(&dir)).await;
}
