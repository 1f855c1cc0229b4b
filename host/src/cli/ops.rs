//! The operations subcommands: `publish`, `cache-stats`, `cache-warm`, `dlq ...`, `status`,
//! `tail` and the raw answers (`plugins --json`, `dead-letters`), each a
//! call to a running host's admin endpoint, printed for people.

use super::Admin;
use anyhow::Context;
use serde_json::Value;
use techub_host::admin::client;

/// The dead-letter subcommands.
#[derive(clap::Subcommand)]
pub enum Dlq {
    /// Lists dead letters, oldest first, with a preview of each payload.
    List {
        /// Letters to show.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Letters to skip.
        #[arg(long, default_value_t = 0)]
        offset: usize,
    },
    /// Shows one dead letter: payload (up to 64 KiB), headers, reason, original
    /// routing key and queue, attempts.
    Show {
        /// The message id.
        id: String,
    },
    /// Publishes dead letters again as first attempts, each removed from the
    /// dead-letter queue only after the broker confirmed its republish. By default
    /// each goes back into the queue it died in (only the plugin that failed it).
    Replay {
        /// Message ids.
        ids: Vec<String>,
        /// Every dead letter.
        #[arg(long, conflicts_with = "ids")]
        all: bool,
        /// Publish through the main exchange with this routing key instead (every
        /// plugin bound to it receives them).
        #[arg(long)]
        routing_key: Option<String>,
    },
    /// Removes dead letters.
    Purge {
        /// Message ids.
        ids: Vec<String>,
        /// Every dead letter.
        #[arg(long)]
        all: bool,
        /// Only letters dead for longer than this (e.g. 10m, 2h, 1d).
        #[arg(long)]
        older_than: Option<String>,
    },
}

pub(super) async fn get(admin: &Admin, path: &str) -> anyhow::Result<Value> {
    let (status, body) = client::get(&admin.admin, admin.token.as_deref(), path)
        .await
        .with_context(|| unreachable(admin))?;
    answer(status, &body)
}

async fn post(admin: &Admin, path: &str, body: Value) -> anyhow::Result<Value> {
    let (status, body) = client::post_json(&admin.admin, admin.token.as_deref(), path, &body)
        .await
        .with_context(|| unreachable(admin))?;
    answer(status, &body)
}

fn unreachable(admin: &Admin) -> String {
    format!(
        "could not reach the admin endpoint at {}; is the host running?",
        admin.admin
    )
}

fn answer(status: u16, body: &str) -> anyhow::Result<Value> {
    let value: Value = serde_json::from_str(body).unwrap_or(Value::String(body.to_string()));
    if status != 200 {
        let error = value["error"].as_str().unwrap_or(body);
        anyhow::bail!("the admin endpoint answered {status}: {error}");
    }
    Ok(value)
}

/// `techub-host cache-stats`.
pub async fn cache_stats(
    admin: &Admin,
    domain: Option<&str>,
    since: Option<&str>,
) -> anyhow::Result<()> {
    let mut query = Vec::new();
    if let Some(domain) = domain {
        query.push(("domain", domain));
    }
    if let Some(since) = since {
        // Checked here too, for a message that names the flag.
        techub_host::admin::parse_duration_ms(since).map_err(|e| anyhow::anyhow!("--since {e}"))?;
        query.push(("since", since));
    }
    let query = serde_urlencoded::to_string(&query)?;
    let stats = get(admin, &format!("/cache/stats?{query}")).await?;
    println!(
        "{:<16} {:>10} {:>10} {:>9} {:>10} {:>10}",
        "domain", "hits", "misses", "hit rate", "writes", "deletes"
    );
    for row in stats["domains"].as_array().into_iter().flatten() {
        let rate = row["hit_rate"]
            .as_f64()
            .map_or("-".to_string(), |r| format!("{:.1} %", r * 100.0));
        // Numbers as numbers: a JSON value's Display ignores the column width.
        println!(
            "{:<16} {:>10} {:>10} {:>9} {:>10} {:>10}",
            row["domain"].as_str().unwrap_or("?"),
            row["hits"].as_u64().unwrap_or(0),
            row["misses"].as_u64().unwrap_or(0),
            rate,
            row["sets"].as_u64().unwrap_or(0),
            row["deletes"].as_u64().unwrap_or(0),
        );
    }
    Ok(())
}

/// `techub-host cache-warm <domain>`.
pub async fn cache_warm(
    admin: &Admin,
    domain: &str,
    keys: Vec<String>,
    ttl: Option<u32>,
) -> anyhow::Result<()> {
    let mut body = serde_json::json!({ "domain": domain, "ttl": ttl });
    if !keys.is_empty() {
        body["keys"] = serde_json::json!(keys);
    }
    let report = post(admin, "/cache/warm", body).await?;
    println!(
        "{domain}: {} loaded, {} without a value, {} failed",
        report["loaded"].as_u64().unwrap_or(0),
        report["missing"].as_u64().unwrap_or(0),
        report["failed"].as_u64().unwrap_or(0)
    );
    if let Some(error) = report["error"].as_str() {
        println!("  first failure: {error}");
    }
    Ok(())
}

/// `techub-host status <id>`.
pub async fn status(admin: &Admin, id: &str) -> anyhow::Result<()> {
    let status = get(admin, &format!("/messages/{}", client::segment(id))).await?;
    println!("{id}: {}", status["status"].as_str().unwrap_or("?"));
    for queue in status["queues"].as_array().into_iter().flatten() {
        println!(
            "  {:<40} {:<20} {}",
            queue["queue"].as_str().unwrap_or("?"),
            queue["plugin"].as_str().unwrap_or("?"),
            queue["status"].as_str().unwrap_or("?")
        );
    }
    Ok(())
}

/// Prints each message matching `pattern` as it passes the main exchange, one line
/// each (`--json`: the host's JSON lines as they are), until interrupted.
pub async fn tail(admin: &Admin, pattern: &str, json: bool) -> anyhow::Result<()> {
    client::tail(&admin.admin, admin.token.as_deref(), pattern, |line| {
        if json {
            println!("{line}");
            return true;
        }
        let Ok(message) = serde_json::from_str::<Value>(line) else {
            return true;
        };
        if let Some(pattern) = message["tailing"].as_str() {
            eprintln!("tailing {pattern} (Ctrl-C to stop)");
        } else if let Some(why) = message["ended"].as_str() {
            eprintln!("tail ended: {why}");
        } else if let Some(skipped) = message["skipped"].as_u64() {
            eprintln!("... {skipped} messages skipped (printing too slowly)");
        } else {
            let correlation = message["correlation_id"]
                .as_str()
                .map(|c| format!(" correlation={c}"))
                .unwrap_or_default();
            println!(
                "{} id={}{correlation} {}",
                message["routing_key"].as_str().unwrap_or("?"),
                message["id"].as_str().unwrap_or("?"),
                preview(&message["payload"])
            );
        }
        true
    })
    .await
    .with_context(|| {
        format!(
            "could not tail through the admin endpoint at {}",
            admin.admin
        )
    })
}

fn preview(payload: &Value) -> String {
    let body = match (payload["text"].as_str(), payload["base64"].as_str()) {
        (Some(text), _) => text.to_string(),
        (None, Some(b64)) => format!("base64:{b64}"),
        _ => String::new(),
    };
    let more = if payload["truncated"] == true {
        "…"
    } else {
        ""
    };
    format!("{body}{more} ({} bytes)", payload["size"])
}

/// `techub-host plugins`: a line per plugin (state, version, deliveries in flight,
/// subscriptions, the last error) and per file that failed, with its reason.
pub async fn plugins(admin: &Admin) -> anyhow::Result<()> {
    let shown = get(admin, "/plugins").await?;
    println!(
        "{:<24} {:<9} {:<12} {:>9}  subscriptions",
        "plugin", "state", "version", "in flight"
    );
    for plugin in shown["plugins"].as_array().into_iter().flatten() {
        let subscriptions: Vec<String> = plugin["subscriptions"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| {
                let keys: Vec<&str> = s[1]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect();
                format!("{}: {}", s[0].as_str().unwrap_or("?"), keys.join(", "))
            })
            .collect();
        println!(
            "{:<24} {:<9} {:<12} {:>9}  {}",
            plugin["name"].as_str().unwrap_or("?"),
            plugin["state"].as_str().unwrap_or("?"),
            plugin["version"].as_str().unwrap_or("?"),
            plugin["in_flight"].as_u64().unwrap_or(0),
            subscriptions.join("; ")
        );
        if let Some(error) = plugin["last_error"].as_str() {
            println!("    last error: {error}");
        }
    }
    for failed in shown["failed"].as_array().into_iter().flatten() {
        println!(
            "{:<24} failed: {}",
            failed["file"].as_str().unwrap_or("?"),
            failed["reason"].as_str().unwrap_or("?")
        );
    }
    Ok(())
}

/// `techub-host dlq ...`.
pub async fn dlq(admin: &Admin, command: Dlq) -> anyhow::Result<()> {
    match command {
        Dlq::List { limit, offset } => {
            let page = get(
                admin,
                &format!("/dead-letters?offset={offset}&limit={limit}&preview=80"),
            )
            .await?;
            println!("{} dead letter(s)", page["total"]);
            for letter in page["dead_letters"].as_array().into_iter().flatten() {
                let untrusted = match letter["trusted"].as_bool() {
                    Some(false) => "  UNTRUSTED (not sealed by this deployment; not replayed)",
                    _ => "",
                };
                println!(
                    "{}  {}  {}  attempts {}  {}{untrusted}\n    {}",
                    letter["id"].as_str().unwrap_or("?"),
                    letter["queue"].as_str().unwrap_or("?"),
                    letter["routing_key"].as_str().unwrap_or("?"),
                    letter["attempts"],
                    letter["reason"].as_str().unwrap_or(""),
                    preview(&letter["payload"])
                );
            }
            if let Some(next) = page["next_offset"].as_u64() {
                println!("more: --offset {next}");
            }
        }
        Dlq::Show { id } => {
            let letter = get(admin, &format!("/dead-letters/{}", client::segment(&id))).await?;
            println!("{}", serde_json::to_string_pretty(&letter)?);
        }
        Dlq::Replay {
            ids,
            all,
            routing_key,
        } => {
            anyhow::ensure!(all || !ids.is_empty(), "name the ids to replay, or --all");
            let body = serde_json::json!({ "ids": ids, "all": all, "routing_key": routing_key });
            let done = post(admin, "/dead-letters/replay", body).await?;
            let replayed = done["replayed"].as_array().map_or(0, Vec::len);
            println!("replayed {replayed}");
            for error in done["errors"].as_array().into_iter().flatten() {
                println!("  not replayed: {}", error.as_str().unwrap_or("?"));
            }
            for id in done["untrusted"].as_array().into_iter().flatten() {
                println!(
                    "  not replayed: {} is untrusted (this deployment did not seal it); kept: inspect it with `dlq show`",
                    id.as_str().unwrap_or("?")
                );
            }
        }
        Dlq::Purge {
            ids,
            all,
            older_than,
        } => {
            let older_than_ms = older_than
                .as_deref()
                .map(techub_host::admin::parse_duration_ms)
                .transpose()
                .map_err(|e| anyhow::anyhow!("--older-than {e}"))?;
            anyhow::ensure!(
                all || !ids.is_empty() || older_than_ms.is_some(),
                "name the ids to purge, --older-than, or --all"
            );
            let body =
                serde_json::json!({ "ids": ids, "all": all, "older_than_ms": older_than_ms });
            let done = post(admin, "/dead-letters/purge", body).await?;
            println!("purged {}", done["purged"]);
        }
    }
    Ok(())
}

/// `techub-host publish`: a message published through the admin endpoint.
pub async fn publish(
    admin: &Admin,
    routing_key: &str,
    payload: String,
    message: &client::Publish,
) -> anyhow::Result<()> {
    let (status, body) = client::publish_message(
        &admin.admin,
        admin.token.as_deref(),
        routing_key,
        payload.into_bytes(),
        message,
    )
    .await
    .with_context(|| {
        format!(
            "could not publish through the admin endpoint at {}; is `cargo xtask run` running?",
            admin.admin
        )
    })?;
    println!("{status}\n{body}");
    anyhow::ensure!(status == 202, "publish failed");
    Ok(())
}

/// The admin endpoint's answer at `path`, printed as it is (`plugins --json`,
/// `dead-letters`).
pub async fn show(admin: &Admin, path: &str) -> anyhow::Result<()> {
    let (status, body) = client::get(&admin.admin, admin.token.as_deref(), path)
        .await
        .with_context(|| {
            format!(
                "could not reach the admin endpoint at {}; is the host running?",
                admin.admin
            )
        })?;
    println!("{body}");
    anyhow::ensure!(status == 200, "the admin endpoint answered {status}");
    Ok(())
}
