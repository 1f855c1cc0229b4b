//! `bench email`: emails per second through the `email-sender` example to the mail
//! provider stand-in on loopback, against the provider's own limit on this machine: a
//! native pooled hyper client posting the same emails (same headers, body and
//! concurrency) straight to it. Alternating rounds ([`harness::Rounds`]).

use super::harness::{self, Count, Rounds};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::sync::Arc;
use std::time::Instant;
use techub_host::bindings::Outcome;
use techub_host::config::SecretRef;
use techub_host::plugins::LoadedPlugin;
use techub_host::runtime::Runtime;
use techub_host::stand_ins::MailProvider;
use techub_tests::{PluginDir, config};

static EMAILS: Count<usize> = Count::new(2_000, 48);
static ROUNDS: Count<usize> = Count::new(5, 1);
const CONCURRENCY: usize = 16;
const KEY: &str = "bench-mail-key";

fn email() -> serde_json::Value {
    serde_json::json!({ "template": "welcome", "to": "ada@example.com", "from": "hello@techub.test", "name": "Ada", "user_id": "ada" })
}

/// Emails/s through the plugin: one invocation per `notification.email`.
async fn plugin_round(runtime: &Arc<Runtime>, plugin: &Arc<LoadedPlugin>) -> anyhow::Result<f64> {
    let payload = email().to_string();
    let started = Instant::now();
    let tasks: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            let (runtime, plugin, payload) = (runtime.clone(), plugin.clone(), payload.clone());
            tokio::spawn(async move {
                for _ in 0..*EMAILS / CONCURRENCY {
                    let delivery =
                        techub_tests::delivery("email", "notification.email", payload.as_bytes());
                    let report = runtime
                        .invoke(&plugin.pre, plugin.context.clone(), &delivery, 5)
                        .await;
                    anyhow::ensure!(
                        matches!(report.result, Ok(Outcome::Ok)),
                        "not sent: {:?}",
                        report.result
                    );
                }
                Ok(())
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    Ok(*EMAILS as f64 / started.elapsed().as_secs_f64())
}

/// Emails/s posted natively to the provider: its limit here.
async fn native_round(
    client: &Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    url: &str,
) -> anyhow::Result<f64> {
    let body = Bytes::from(email().to_string());
    let started = Instant::now();
    let tasks: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            let (client, url, body) = (client.clone(), url.to_string(), body.clone());
            tokio::spawn(async move {
                for _ in 0..*EMAILS / CONCURRENCY {
                    let request = hyper::Request::post(&url)
                        .header("authorization", format!("Bearer {KEY}"))
                        .header("idempotency-key", uuid::Uuid::new_v4().to_string())
                        .header("content-type", "application/json")
                        .body(Full::new(body.clone()))?;
                    let response = client.request(request).await?;
                    anyhow::ensure!(response.status() == 200, "status {}", response.status());
                    response.into_body().collect().await?;
                }
                Ok(())
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    Ok(*EMAILS as f64 / started.elapsed().as_secs_f64())
}

pub async fn email_throughput() -> anyhow::Result<()> {
    let provider = MailProvider::start(KEY).await;
    let dir = PluginDir::with(&[("email-sender", "email_sender")]);
    let mut config = config(&dir);
    config.host.max_instances = (CONCURRENCY + 8) as u32;
    let section = config.plugins.entry("email-sender".into()).or_default();
    section.outbound = vec![provider.origin()];
    section
        .settings
        .insert("provider_url".into(), provider.origin());
    section
        .secrets
        .insert("api_key".into(), SecretRef::literal(KEY));
    let config = Arc::new(config);
    let (_services, runtime, plugin) = crate::load_alone(&dir, "email-sender", &config).await?;
    let native = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let url = format!("{}/emails", provider.origin());
    println!(
        "bench email: {EMAILS} emails per round at concurrency {CONCURRENCY} to the mail provider stand-in, {ROUNDS} alternating rounds per side"
    );
    plugin_round(&runtime, &plugin).await?;
    native_round(&native, &url).await?;
    let sides = ["email-sender", "native client (the provider's own limit)"];
    let rounds = Rounds::alternate(&sides, *ROUNDS, async |side| {
        harness::sample(async {
            match side {
                0 => plugin_round(&runtime, &plugin).await?,
                _ => native_round(&native, &url).await?,
            };
            Ok(*EMAILS as u64)
        })
        .await
    })
    .await?;
    rounds.report(
        &format!(
            "email: {EMAILS} emails at concurrency {CONCURRENCY} to the mail provider stand-in"
        ),
        "email",
        &[(0, 1)],
    );
    anyhow::ensure!(
        provider.emails().len() == *EMAILS * (*ROUNDS + 1) * 2,
        "every email accepted once: {} of {}",
        provider.emails().len(),
        *EMAILS * (*ROUNDS + 1) * 2
    );
    Ok(())
}
