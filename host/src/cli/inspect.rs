//! `techub-host store get|scan <plugin> ..` and `techub-host cache get <domain> <key>`:
//! what a plugin stored and what a cache domain holds, read through a running host's
//! admin endpoint (its token, its namespaces; values as UTF-8 or hex, bounded).

use super::Admin;
use super::ops::get;
use serde_json::Value;
use techub_host::admin::client::segment;

/// The store inspection subcommands.
#[derive(clap::Subcommand)]
pub enum Store {
    /// Shows the value under one of a plugin's keys (any type), with its TTL.
    Get {
        /// The plugin (its name; its keys' namespace).
        plugin: String,
        /// The key, as the plugin names it.
        key: String,
    },
    /// Lists a plugin's keys matching a glob pattern, a page at a time.
    Scan {
        /// The plugin.
        plugin: String,
        /// A Redis glob over the plugin's keys (`order:*`).
        #[arg(default_value = "*")]
        pattern: String,
        /// Where the previous page ended.
        #[arg(long)]
        cursor: Option<String>,
        /// Keys per page (at most 1000).
        #[arg(long, default_value_t = 100)]
        count: u32,
    },
}

/// The cache inspection subcommands.
#[derive(clap::Subcommand)]
pub enum Cache {
    /// Shows the entry of a key in a cache domain.
    Get {
        /// The domain.
        domain: String,
        /// The key.
        key: String,
    },
}

/// Runs a `store` subcommand.
pub async fn store(admin: &Admin, command: Store) -> anyhow::Result<()> {
    match command {
        Store::Get { plugin, key } => {
            let path = format!("/store/{}/keys/{}", segment(&plugin), segment(&key));
            print_value(&get(admin, &path).await?);
        }
        Store::Scan {
            plugin,
            pattern,
            cursor,
            count,
        } => {
            let mut query = vec![("count", count.to_string())];
            query.extend(cursor.map(|cursor| ("cursor", cursor)));
            let path = format!(
                "/store/{}/scan/{}?{}",
                segment(&plugin),
                segment(&pattern),
                serde_urlencoded::to_string(&query)?
            );
            let page = get(admin, &path).await?;
            for key in page["keys"].as_array().into_iter().flatten() {
                println!("{}", key.as_str().unwrap_or_default());
            }
            if let Some(next) = page["cursor"].as_str() {
                println!("more: --cursor {next}");
            }
        }
    }
    Ok(())
}

/// Runs a `cache` subcommand.
pub async fn cache(admin: &Admin, command: Cache) -> anyhow::Result<()> {
    match command {
        Cache::Get { domain, key } => {
            let path = format!("/cache/{}/keys/{}", segment(&domain), segment(&key));
            print_value(&get(admin, &path).await?);
        }
    }
    Ok(())
}

/// The answer as pretty JSON: the value's text or hex stands out on its own line.
fn print_value(answer: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(answer).unwrap_or_default()
    );
}
