//! `bench embedded`: the README's first command, `cargo xtask run`, runs on the
//! embedded broker and backends. The no-op plugin and user-notifications there,
//! against a native consumer in the same process doing the same work through the same
//! `Broker` trait object (the same embedded broker, the same prefetch, a task per
//! delivery, acks): for the no-op, ack; for user-notifications, parse the JSON, write
//! the user to the embedded cache with its tag, publish the follow-up. Alternating
//! rounds ([`super::harness::Rounds`]), with this process's CPU per message. Goal for
//! the no-op plugin: ≥ 0.5× (it is instantiation-bound: a fresh instance per message).

use super::harness::Count;
use super::harness::{self, Rounds, Sample};
use super::messages::native_consumer;
use super::{all_completed, envelope};
use std::sync::Arc;
use std::time::Instant;
use techub_host::Platform;
use techub_host::capability::messaging::Broker;
use techub_tests::{PluginDir, config, grant, unique};

static MESSAGES: Count<usize> = Count::new(5_000, 112);
static ROUNDS: Count<usize> = Count::new(5, 1);
/// Messages an instance serves when it is reused.
const REUSE: u32 = 1000;

/// What the messages carry and what the native side does with each.
#[derive(Clone, Copy)]
enum Work {
    Noop,
    UserNotifications,
}

impl Work {
    fn routing_key(self) -> &'static str {
        match self {
            Work::Noop => "fixture.noop.bench",
            Work::UserNotifications => "user.created",
        }
    }

    fn body(self, i: usize) -> Vec<u8> {
        match self {
            Work::Noop => b"{}".to_vec(),
            Work::UserNotifications => {
                serde_json::json!({ "id": format!("u{i}"), "email": "a@b.c", "name": "A" })
                    .to_string()
                    .into_bytes()
            }
        }
    }
}

/// Publishes the messages of `ids` from a task of its own.
fn publish_all(
    broker: Arc<dyn Broker>,
    work: Work,
    routing_key: String,
    ids: Vec<String>,
) -> tokio::task::JoinHandle<anyhow::Result<()>> {
    tokio::spawn(async move {
        for (i, id) in ids.into_iter().enumerate() {
            let mut e = envelope(&routing_key, work.body(i));
            e.id = id;
            broker.publish(e, None).await.map_err(anyhow::Error::msg)?;
        }
        anyhow::Ok(())
    })
}

/// One round through the plugin: published while it consumes, until the last
/// completed.
async fn through_plugin(platform: &Platform, work: Work) -> anyhow::Result<Sample> {
    let ids: Vec<String> = (0..*MESSAGES).map(|_| unique("m")).collect();
    harness::sample(async {
        let started = Instant::now();
        let broker = platform.services.messaging.broker.clone();
        let publishing = publish_all(broker, work, work.routing_key().into(), ids.clone());
        all_completed(platform, &ids, started).await?;
        publishing.await??;
        Ok(*MESSAGES as u64)
    })
    .await
}

/// One round of the native consumer, on a queue of its own on the same broker.
async fn native(platform: &Platform, work: Work, prefetch: u16) -> anyhow::Result<Sample> {
    let broker = platform.services.messaging.broker.clone();
    let publisher = broker.clone();
    let user_notifications = matches!(work, Work::UserNotifications);
    native_consumer(
        broker,
        platform.services.cache.backend.clone(),
        prefetch,
        *MESSAGES,
        user_notifications,
        move |routing_key| {
            let ids = (0..*MESSAGES).map(|i| format!("n{i}")).collect();
            publish_all(publisher, work, routing_key, ids)
        },
    )
    .await
}

pub async fn embedded() -> anyhow::Result<()> {
    let dir = PluginDir::with(&[
        ("noop", "fixture_noop"),
        ("user-notifications", "user_notifications"),
    ]);
    let mut config = config(&dir);
    config.host.key_prefix = format!("{}:", unique("techub-bench"));
    grant(
        &mut config,
        "user-notifications",
        &["users"],
        &["notification.*"],
    );
    let platform = Platform::start(config.clone()).await?;
    // The no-op plugin reusing its instance, on a host of its own: what the fresh
    // instance per message (the default) costs on this path.
    let reused_dir = PluginDir::with(&[("noop", "fixture_noop")]);
    let mut reused_config = techub_tests::config(&reused_dir);
    reused_config
        .plugins
        .entry("noop".into())
        .or_default()
        .limits
        .reuse_instance = Some(REUSE);
    let reused = Platform::start(reused_config).await?;
    for (name, work) in [
        ("noop", Work::Noop),
        ("user-notifications", Work::UserNotifications),
    ] {
        let prefetch = config.limits_of(name).prefetch;
        // Warm-up, not counted.
        through_plugin(&platform, work).await?;
        native(&platform, work, prefetch).await?;
        let reusing = format!("{name}, reuse_instance = {REUSE}");
        let sides: Vec<&str> = match work {
            Work::Noop => vec![name, "native consumer", &reusing],
            Work::UserNotifications => vec![name, "native consumer"],
        };
        if let Work::Noop = work {
            through_plugin(&reused, work).await?;
        }
        let rounds = Rounds::alternate(&sides, *ROUNDS, async |side| match side {
            0 => through_plugin(&platform, work).await,
            1 => native(&platform, work, prefetch).await,
            _ => through_plugin(&reused, work).await,
        })
        .await?;
        let ratios: &[(usize, usize)] = match work {
            Work::Noop => &[(0, 1), (2, 1)],
            Work::UserNotifications => &[(0, 1)],
        };
        rounds.report(
            &format!("embedded backends: {name} x{MESSAGES}, prefetch {prefetch}"),
            "msg",
            ratios,
        );
        if let (Work::Noop, false) = (work, harness::quick()) {
            let ratio = rounds.ratio(0, 1);
            println!(
                "  goal for the no-op plugin with a fresh instance per message: >= 0.5x ({})",
                if ratio >= 0.5 { "met" } else { "NOT met" }
            );
        }
    }
    platform.shutdown().await;
    reused.shutdown().await;
    Ok(())
}
