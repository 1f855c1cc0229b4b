//! `techub-host`: run the platform, or publish a message to a running one.

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::sync::Arc;
use techub_host::{HostConfig, Platform};

#[derive(Parser)]
#[command(
    name = "techub-host",
    version,
    about = "Runs TecHub plugins (WebAssembly components)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the host with a config file.
    Run {
        /// The configuration.
        #[arg(long, default_value = "host.toml")]
        config: PathBuf,
    },
    /// Publishes a message through a running host's admin endpoint.
    Publish {
        /// Routing key, e.g. `user.created`.
        routing_key: String,
        /// Body, e.g. a JSON document.
        payload: String,
        #[command(flatten)]
        admin: Admin,
        /// low, normal, high or urgent; by default the priority of the queue types
        /// that consume the routing key.
        #[arg(long, default_value = "")]
        priority: String,
    },
    /// Prints what a running host loaded, and why the other plugin files failed.
    Plugins {
        #[command(flatten)]
        admin: Admin,
    },
    /// Prints the dead-letter queue of a running host.
    DeadLetters {
        #[command(flatten)]
        admin: Admin,
    },
    /// Checks a config file and prints the effective configuration.
    Check {
        /// The configuration.
        #[arg(long, default_value = "host.toml")]
        config: PathBuf,
    },
}

/// Where a running host's admin endpoint is, and its token.
#[derive(clap::Args)]
struct Admin {
    /// The admin endpoint of the running host.
    #[arg(long, default_value = "127.0.0.1:8080")]
    admin: String,
    /// Its bearer token, if it requires one.
    #[arg(long, env = "TECHUB_ADMIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    match Cli::parse().command {
        Command::Run { config } => run(config).await,
        Command::Publish {
            routing_key,
            payload,
            admin,
            priority,
        } => publish(&admin, &routing_key, payload, &priority).await,
        Command::Plugins { admin } => show(&admin, "/plugins").await,
        Command::DeadLetters { admin } => show(&admin, "/dead-letters").await,
        Command::Check { config } => {
            let config = HostConfig::load(&config)?;
            // The effective configuration (the seed's defaults merged in), secrets hidden.
            println!("{:#?}", techub_host::config::redacted(&config));
            let files = techub_host::plugins::plugin_files(&config.host.plugins_dir);
            for warning in config.unknown_plugin_sections(&files) {
                eprintln!("warning: {warning}");
            }
            Ok(())
        }
    }
}

async fn run(path: PathBuf) -> anyhow::Result<()> {
    let config = HostConfig::load(&path)?;
    let token = config.admin_token()?;
    let admin_addr = config.host.admin_addr.clone();
    // Bind first: a port conflict must stop the host before it consumes any message.
    let listener = tokio::net::TcpListener::bind(&admin_addr)
        .await
        .with_context(|| format!("could not listen on host.admin_addr {admin_addr}"))?;
    let platform = Arc::new(Platform::start(config).await?);
    println!(
        "techub-host: {} plugin(s) loaded, {} failed; admin on http://{admin_addr}",
        platform.plugins.len(),
        platform.load_errors.len()
    );
    for plugin in &platform.plugins {
        for s in &plugin.subscriptions {
            println!(
                "  {} consumes {} via {:?}",
                plugin.name, s.queue, s.routing_keys
            );
        }
    }
    println!(
        "publish a message:  cargo run -p techub-host -- publish user.created '{{\"id\":\"42\",\"email\":\"ada@example.com\",\"name\":\"Ada\"}}'"
    );
    println!(
        "            or:     curl -X POST http://{admin_addr}/publish/user.created -d '{{\"id\":\"42\",\"email\":\"ada@example.com\",\"name\":\"Ada\"}}'"
    );
    let app = techub_host::admin::router(platform.clone(), token);
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .context("admin endpoint failed")?;
    Ok(())
}

async fn publish(
    admin: &Admin,
    routing_key: &str,
    payload: String,
    priority: &str,
) -> anyhow::Result<()> {
    let (status, body) = techub_host::admin::client::publish(
        &admin.admin,
        admin.token.as_deref(),
        routing_key,
        payload.into_bytes(),
        priority,
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

async fn show(admin: &Admin, path: &str) -> anyhow::Result<()> {
    let (status, body) =
        techub_host::admin::client::get(&admin.admin, admin.token.as_deref(), path)
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
