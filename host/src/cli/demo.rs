//! `techub-host demo`: the specification's business flow, live. Starts a host with
//! the example plugins (the config's plugins directory, `plugins/dist` in this
//! repository's `host.toml`), publishes a realistic sequence (stock restocked, a user
//! created, an order created) and prints every message that passes the exchange as
//! the plugins react (welcome email, stock reserved, payment processed, stock low,
//! analytics), then what the plugins keep in their stores. With `[stand_ins]` (as in
//! this repository's `host.toml`) the mail provider, the payment gateway and the
//! customer's webhook endpoint are local servers that print what they receive: the
//! welcome email sent, the card charged, the webhook verified.

use std::path::Path;
use std::time::Duration;
use techub_host::Platform;
use techub_host::capability::messaging::open_watch;
use techub_host::config::HostConfig;

/// How long the flow may take before the demo reports what it saw.
const SETTLE: Duration = Duration::from_secs(3);

/// The flow: (routing key, payload, what it stands for).
fn flow() -> Vec<(&'static str, serde_json::Value, &'static str)> {
    use serde_json::json;
    vec![
        (
            "inventory.restocked",
            json!({ "product": "keyboard", "quantity": 7 }),
            "the warehouse restocks keyboards",
        ),
        (
            "inventory.restocked",
            json!({ "product": "mouse", "quantity": 20 }),
            "and mice",
        ),
        (
            "user.created",
            json!({ "id": "ada", "email": "ada@example.com", "name": "Ada" }),
            "Ada signs up",
        ),
        (
            "order.created",
            json!({
                "id": "order-1",
                "items": [{ "product": "keyboard", "quantity": 3 }, { "product": "mouse", "quantity": 1 }],
                "total": 12_900,
                "card": "4242"
            }),
            "Ada orders 3 keyboards and a mouse",
        ),
        (
            "webhook.event",
            json!({
                "customer": "acme",
                "type": "order.shipped",
                "data": { "order": "order-1", "carrier": "post" }
            }),
            "the shop tells its customer Acme, by webhook, that the order shipped",
        ),
    ]
}

/// Runs the demo with the configuration at `path`.
pub async fn run(path: &Path) -> anyhow::Result<()> {
    let config = HostConfig::load(path)?;
    let platform = Platform::start(config).await?;
    let plugins = platform.plugins().await;
    println!("demo: {} plugin(s) serving:", plugins.len());
    for plugin in &plugins {
        println!("  {}", plugin.name);
    }
    for error in platform.load_errors().await {
        println!("demo: not loaded: {error}");
    }
    let name = format!("demo.watch.{}", uuid::Uuid::new_v4().simple());
    let mut watch = open_watch(
        platform.services.messaging.broker.as_ref(),
        &name,
        vec!["#".into()],
        100,
    )
    .await
    .map_err(anyhow::Error::msg)?;
    // Every message on the exchange, as it passes: the plugins' reactions.
    let printer = tokio::spawn(async move {
        while let Some(delivery) = watch.next().await {
            let envelope = delivery.envelope();
            // Whole: the payloads are the flow's event formats (the README's table).
            let body = String::from_utf8_lossy(&envelope.payload);
            println!("  passed  {:<20} {body}", envelope.routing_key);
            let _ = delivery.ack().await;
        }
    });
    for (routing_key, payload, story) in flow() {
        println!("\ndemo: {story}: publishing {routing_key}");
        platform
            .publish(routing_key, payload.to_string().into_bytes(), None)
            .await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tokio::time::sleep(SETTLE).await;
    printer.abort();
    println!("\ndemo: what the plugins keep:");
    let prefix = &platform.config().host.key_prefix;
    for (plugin, key) in [
        ("order-processor", "stock:keyboard"),
        ("inventory-keeper", "level:keyboard"),
        ("payment-processor", "payment:order-1"),
    ] {
        let full = format!("{prefix}store:{plugin}:{key}");
        let store = &platform.services.store;
        let value = match store.get(&full).await {
            Ok(Some(value)) => String::from_utf8_lossy(&value).into_owned(),
            _ => match store.hash_get_all(&full).await {
                Ok(fields) if !fields.is_empty() => fields
                    .iter()
                    .map(|(k, v)| format!("{k}={}", String::from_utf8_lossy(v)))
                    .collect::<Vec<_>>()
                    .join(" "),
                _ => "(nothing)".into(),
            },
        };
        println!("  {plugin:<18} {key:<16} {value}");
    }
    platform.shutdown().await;
    Ok(())
}
