//! The admin endpoint, through the same client `techub-host publish` uses.

use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use techub_host::Platform;
use techub_host::admin::client;
use techub_tests::{PluginDir, config, grant, init_tracing, wait_for};

/// Serves `platform`'s admin endpoint, without a token, on a free port; its address.
pub(crate) async fn serve(platform: &Arc<Platform>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = listener.local_addr().unwrap().to_string();
    tokio::spawn(
        axum::serve(listener, techub_host::admin::router(platform.clone(), None)).into_future(),
    );
    admin
}

#[tokio::test(flavor = "multi_thread")]
async fn operators_publish_and_inspect_through_the_admin_endpoint() {
    init_tracing();
    let dir = PluginDir::with(&[("user-notifications", "user_notifications")]);
    dir.write("broken.wasm", b"nope");
    let mut config = config(&dir);
    grant(
        &mut config,
        "user-notifications",
        &["users"],
        &["notification.*"],
    );
    let platform = Arc::new(Platform::start(config).await.unwrap());
    let admin = serve(&platform).await;

    assert_eq!(
        client::get(&admin, None, "/healthz").await.unwrap(),
        (200, "ok".to_string())
    );

    let (status, body) = client::get(&admin, None, "/plugins").await.unwrap();
    let plugins: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status, 200);
    let plugin = &plugins["plugins"][0];
    assert_eq!(plugin["name"], "user-notifications");
    assert_eq!(plugin["state"], "serving");
    assert_eq!(plugin["subscriptions"][0][0], "notification");
    assert_eq!(plugin["subscriptions"][0][1][0], "user.created");
    assert_eq!(plugin["version"].as_str().unwrap().len(), 12);
    assert_eq!(plugin["in_flight"], 0);
    assert!(plugin["loaded_at_ms"].as_u64().unwrap() > 0);
    assert_eq!(plugins["failed"][0]["file"], "broken.wasm");
    assert!(
        plugins["failed"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("not a valid WebAssembly component"),
        "{plugins}"
    );

    let user = json!({ "id": "via-admin", "email": "a@b.c", "name": "A" });
    let (status, body) = client::publish(
        &admin,
        None,
        "user.created",
        user.to_string().into_bytes(),
        "urgent",
    )
    .await
    .unwrap();
    assert_eq!(status, 202, "{body}");
    wait_for(
        Duration::from_secs(20),
        "the published message to be handled",
        || async {
            platform
                .services
                .cache
                .backend
                .get_many("users", &["via-admin".into()])
                .await
                .unwrap()
                .pop()
                .flatten()
        },
    )
    .await;

    let (status, body) = client::publish(&admin, None, "user..created", b"{}".to_vec(), "normal")
        .await
        .unwrap();
    assert_eq!(status, 400);
    assert!(body.contains("empty word"), "{body}");
    let (status, body) = client::publish(&admin, None, "user.created", b"{}".to_vec(), "whenever")
        .await
        .unwrap();
    assert_eq!(status, 400);
    assert!(body.contains("unknown priority"), "{body}");

    let (_, body) = client::publish(&admin, None, "user.created", b"not json".to_vec(), "normal")
        .await
        .unwrap();
    let id = serde_json::from_str::<Value>(&body).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let letter = wait_for(
        Duration::from_secs(20),
        "the dead letter to show",
        || async {
            let (_, body) = client::get(&admin, None, "/dead-letters").await.unwrap();
            let letters: Value = serde_json::from_str(&body).unwrap();
            letters["dead_letters"]
                .as_array()
                .unwrap()
                .iter()
                .find(|l| l["id"] == id.as_str())
                .cloned()
        },
    )
    .await;
    assert_eq!(letter["payload"]["text"], "not json");
    assert!(letter["reason"].as_str().unwrap().starts_with("rejected:"));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_admin_endpoint_requires_its_token_and_bounds_bodies() {
    init_tracing();
    let dir = PluginDir::with(&[]);
    let mut config = config(&dir);
    config.host.max_message_bytes = 1024;
    let platform = Arc::new(Platform::start(config).await.unwrap());
    let token = "a-token-of-at-least-16-chars";
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = listener.local_addr().unwrap().to_string();
    tokio::spawn(
        axum::serve(
            listener,
            techub_host::admin::router(platform.clone(), Some(token.to_string())),
        )
        .into_future(),
    );

    assert_eq!(
        client::get(&admin, None, "/healthz").await.unwrap(),
        (200, "ok".to_string()),
        "health stays open for probes"
    );
    for path in ["/plugins", "/readyz", "/dead-letters"] {
        let (status, _) = client::get(&admin, None, path).await.unwrap();
        assert_eq!(status, 401, "{path} without a token");
        let (status, _) = client::get(&admin, Some("wrong-token-wrong-token"), path)
            .await
            .unwrap();
        assert_eq!(status, 401, "{path} with a wrong token");
        let (status, body) = client::get(&admin, Some(token), path).await.unwrap();
        assert_eq!(status, 200, "{path}: {body}");
    }
    let (status, _) = client::publish(&admin, None, "user.created", b"{}".to_vec(), "")
        .await
        .unwrap();
    assert_eq!(
        status, 401,
        "no publishing as the operator without the token"
    );
    let (status, body) = client::publish(&admin, Some(token), "user.created", b"{}".to_vec(), "")
        .await
        .unwrap();
    assert_eq!(status, 202, "{body}");
    let (status, _) = client::publish(&admin, Some(token), "user.created", vec![b'x'; 2048], "")
        .await
        .unwrap();
    assert_eq!(status, 413, "a body over host.max_message_bytes");
}

#[tokio::test(flavor = "multi_thread")]
async fn dead_letters_are_paginated_with_bounded_previews_and_binary_shown_as_base64() {
    init_tracing();
    let dir = PluginDir::with(&[("broken", "fixture_trap")]);
    let mut config = config(&dir);
    config.host.max_message_bytes = 6 * 1024 * 1024;
    // Eleven traps and their retries, dead-lettered as fast as they fail: not backed off.
    let broken = config.plugins.entry("broken".into()).or_default();
    broken.limits.backoff_after_violations = Some(0);
    let platform = Arc::new(Platform::start(config).await.unwrap());
    let admin = serve(&platform).await;
    let big = "x".repeat(5 * 1024 * 1024);
    for _ in 0..10 {
        platform
            .publish("fixture.trap.big", big.clone().into_bytes(), None)
            .await
            .unwrap();
    }
    let binary = platform
        .publish("fixture.trap.binary", vec![0xff, 0x00, 0xfe, 0x80], None)
        .await
        .unwrap();
    let page = wait_for(Duration::from_secs(60), "eleven dead letters", || async {
        let (status, body) = client::get(&admin, None, "/dead-letters?limit=20")
            .await
            .unwrap();
        assert_eq!(status, 200, "{body}");
        let page: Value = serde_json::from_str(&body).unwrap();
        (page["total"] == 11).then_some((page, body.len()))
    })
    .await;
    let (page, bytes) = page;
    assert!(
        bytes < 64 * 1024,
        "ten 5 MB letters listed in {bytes} bytes, not their bodies"
    );
    // (The small binary letter may die before the big ones: find them by id.)
    let first = &page["dead_letters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["id"] != binary.as_str())
        .unwrap()["payload"];
    assert_eq!(first["size"], 5 * 1024 * 1024);
    assert_eq!(first["truncated"], true);
    assert_eq!(first["text"].as_str().unwrap().len(), 256);
    let last = page["dead_letters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["id"] == binary.as_str())
        .expect("the binary letter");
    assert_eq!(
        last["payload"]["base64"], "/wD+gA==",
        "binary is base64, not lossy"
    );

    let (_, body) = client::get(&admin, None, "/dead-letters?offset=3&limit=3&preview=8")
        .await
        .unwrap();
    let page: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(page["dead_letters"].as_array().unwrap().len(), 3);
    assert_eq!(page["next_offset"], 6);
    for letter in page["dead_letters"].as_array().unwrap() {
        let payload = &letter["payload"];
        let shown = payload["text"].as_str().map_or(0, str::len);
        assert!(shown <= 8, "a preview of at most 8 bytes: {payload}");
    }

    let (status, body) = client::get(&admin, None, &format!("/dead-letters/{binary}"))
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let letter: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(letter["routing_key"], "fixture.trap.binary");
    assert!(
        letter["reason"]
            .as_str()
            .unwrap()
            .contains("retries exhausted")
    );
    let (status, _) = client::get(&admin, None, "/dead-letters/no-such-id")
        .await
        .unwrap();
    assert_eq!(status, 404);
}

/// Two letters with one message id (the same message published twice, rejected twice):
/// `/dead-letters/{id}` shows the oldest and the other beside it, not one of them.
#[tokio::test(flavor = "multi_thread")]
async fn a_dead_letter_id_shared_by_two_letters_shows_both() {
    init_tracing();
    let (_dir, config) = techub_tests::user_notifications();
    let platform = Arc::new(Platform::start(config).await.unwrap());
    let admin = serve(&platform).await;
    let id = techub_tests::unique("twice");
    for payload in ["not json 1", "not json 2"] {
        let message = techub_host::platform::OperatorMessage {
            message_id: Some(id.clone()),
            ..Default::default()
        };
        platform
            .publish_message("user.created", payload.as_bytes().to_vec(), message)
            .await
            .unwrap();
    }
    let letter = wait_for(Duration::from_secs(30), "both letters", || async {
        let (status, body) = client::get(&admin, None, &format!("/dead-letters/{id}"))
            .await
            .unwrap();
        let letter: Value = serde_json::from_str(&body).unwrap();
        (status == 200 && letter["more_with_this_id"].is_array()).then_some(letter)
    })
    .await;
    let others = letter["more_with_this_id"].as_array().unwrap();
    assert_eq!(others.len(), 1, "{letter}");
    // (The two may be handled side by side: either may die first.)
    let mut payloads = [&letter["payload"]["text"], &others[0]["payload"]["text"]]
        .map(|text| text.as_str().unwrap_or_default().to_string());
    payloads.sort();
    assert_eq!(payloads, ["not json 1", "not json 2"], "{letter}");
}

/// `techub-host publish --message-id --correlation-id --header`: the message carries
/// them (so an operator can test a plugin's idempotency without a second plugin), and
/// they are checked as a plugin's would be.
#[tokio::test(flavor = "multi_thread")]
async fn operators_publish_with_an_id_a_correlation_and_headers() {
    init_tracing();
    let dir = PluginDir::with(&[]);
    let platform = Arc::new(Platform::start(config(&dir)).await.unwrap());
    let admin = serve(&platform).await;
    let mut seen = techub_tests::sink(&platform, &["ops.#"]).await;
    let message = client::Publish {
        message_id: Some("order-7 & more".into()),
        correlation_id: Some("corr-1".into()),
        headers: vec![
            ("tenant".into(), "t 1".into()),
            ("trace".into(), "a=b".into()),
        ],
        ..client::Publish::default()
    };
    let (status, body) =
        client::publish_message(&admin, None, "ops.test", b"{}".to_vec(), &message)
            .await
            .unwrap();
    assert_eq!(status, 202, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["id"],
        "order-7 & more"
    );
    let got = tokio::time::timeout(Duration::from_secs(10), seen.next())
        .await
        .unwrap()
        .unwrap();
    let envelope = got.envelope();
    assert_eq!(envelope.id, "order-7 & more");
    assert_eq!(envelope.correlation_id.as_deref(), Some("corr-1"));
    assert_eq!(
        envelope.headers,
        [
            ("tenant".to_string(), "t 1".to_string()),
            ("trace".to_string(), "a=b".to_string())
        ]
    );

    let reserved = client::Publish {
        headers: vec![("x-techub-attempt".into(), "9".into())],
        ..client::Publish::default()
    };
    let (status, body) =
        client::publish_message(&admin, None, "ops.test", b"{}".to_vec(), &reserved)
            .await
            .unwrap();
    assert_eq!(status, 400);
    assert!(
        body.contains("x- are the broker's and the host's"),
        "{body}"
    );
}

/// `techub-host tail`: what passes the exchange with a matching key arrives as a JSON
/// line; the temporary queue goes when the client does.
#[tokio::test(flavor = "multi_thread")]
async fn tail_shows_matching_messages_as_they_pass_and_cleans_up() {
    init_tracing();
    let dir = PluginDir::with(&[]);
    let platform = Arc::new(Platform::start(config(&dir)).await.unwrap());
    let admin = serve(&platform).await;
    let (lines, mut seen) = tokio::sync::mpsc::unbounded_channel::<Value>();
    let follower = {
        let admin = admin.clone();
        tokio::spawn(async move {
            client::tail(&admin, None, "tail.test.*", |line| {
                let value: Value = serde_json::from_str(line).unwrap();
                let more = value.get("routing_key").is_none();
                lines.send(value).is_ok() && more
            })
            .await
        })
    };
    let first = tokio::time::timeout(Duration::from_secs(10), seen.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first["tailing"], "tail.test.*");
    let queue = first["queue"].as_str().unwrap().to_string();
    platform
        .publish("other.key", b"not shown".to_vec(), None)
        .await
        .unwrap();
    let message = client::Publish {
        correlation_id: Some("c-9".into()),
        ..client::Publish::default()
    };
    let (status, _) = client::publish_message(
        &admin,
        None,
        "tail.test.a",
        br#"{"x":1}"#.to_vec(),
        &message,
    )
    .await
    .unwrap();
    assert_eq!(status, 202);
    let shown = tokio::time::timeout(Duration::from_secs(10), seen.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(shown["routing_key"], "tail.test.a", "{shown}");
    assert_eq!(shown["correlation_id"], "c-9");
    assert_eq!(shown["payload"]["text"], "{\"x\":1}");
    // The client stopped after that line: its queue goes.
    follower.await.unwrap().unwrap();
    wait_for(
        Duration::from_secs(10),
        "the tail queue to be deleted",
        || async {
            platform
                .services
                .messaging
                .broker
                .queue_depth(&queue)
                .await
                .unwrap()
                .is_none()
                .then_some(())
        },
    )
    .await;

    let (status, body) = client::get(&admin, None, "/tail/bad..pattern")
        .await
        .unwrap();
    assert_eq!(status, 400, "{body}");
}

/// With plugins that all failed to load, nothing serves: `/readyz` says so (an empty
/// directory, by contrast, is a valid deployment and ready).
#[tokio::test(flavor = "multi_thread")]
async fn readiness_fails_when_no_plugin_serves() {
    init_tracing();
    let dir = PluginDir::with(&[]);
    dir.write("broken.wasm", b"nope");
    let platform = Arc::new(Platform::start(config(&dir)).await.unwrap());
    let admin = serve(&platform).await;
    let (status, body) = client::get(&admin, None, "/readyz").await.unwrap();
    assert_eq!(status, 503, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        body["down"],
        json!(["no plugin is serving: 1 failed to load"]),
        "{body}"
    );

    let empty = PluginDir::with(&[]);
    let platform = Arc::new(Platform::start(config(&empty)).await.unwrap());
    let admin = serve(&platform).await;
    let (status, body) = client::get(&admin, None, "/readyz").await.unwrap();
    assert_eq!(status, 200, "{body}");
}

/// Patterns and ids go into the admin URL encoded: `tail '#'` (the README's own
/// example) follows everything instead of answering 404, and a message id with `#`
/// or `/` in it is found.
#[tokio::test(flavor = "multi_thread")]
async fn cli_arguments_in_urls_are_encoded() {
    init_tracing();
    let dir = PluginDir::with(&[]);
    let platform = Arc::new(Platform::start(config(&dir)).await.unwrap());
    let admin = serve(&platform).await;
    let mut first = None;
    client::tail(&admin, None, "#", |line| {
        first = Some(line.to_string());
        false
    })
    .await
    .expect("tail '#' is accepted");
    let first: Value = serde_json::from_str(&first.unwrap()).unwrap();
    assert_eq!(first["tailing"], "#");

    let id = "order#7/a b?c";
    let message = client::Publish {
        message_id: Some(id.into()),
        ..client::Publish::default()
    };
    let (status, body) = client::publish_message(&admin, None, "odd.ids", b"{}".to_vec(), &message)
        .await
        .unwrap();
    assert_eq!(status, 202, "{body}");
    let path = format!("/messages/{}", client::segment(id));
    let (status, body) = client::get(&admin, None, &path).await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("order#7/a b?c"), "{body}");
}
