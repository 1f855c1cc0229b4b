//! `techub-host`: run the platform, or publish a message to a running one.

mod cli;

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
    /// Log format on stderr: `text` for people, `json` (one object per line, with the
    /// invocation's span fields) for log shippers.
    #[arg(long, global = true, env = "TECHUB_LOG_FORMAT", default_value = "text")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Creates a plugin crate that builds as it is: a handler, a unit test, the
    /// wasm32-wasip2 target pinned, and the host.toml lines that grant it.
    New {
        /// The plugin's name (its `.wasm` file stem and `[plugins.<name>]`).
        name: String,
        /// The queue type it consumes.
        #[arg(long, default_value = "notification")]
        queue: String,
        /// The routing key it binds.
        #[arg(long, default_value = "user.created")]
        routing_key: String,
        /// The directory the crate's own directory, `<dir>/<name>`, is created in.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// The guest SDK (`guest-sdk/` of the techub repository); default: the one
        /// this host was built from.
        #[arg(long)]
        sdk: Option<PathBuf>,
    },
    /// The plugin author's loop: builds plugin crates for wasm32-wasip2, runs a host
    /// on them (embedded backends unless the config says otherwise), and on every
    /// edit of their sources rebuilds and hot-reloads the plugin.
    Dev {
        /// Plugin crate directories; default: the current directory.
        crates: Vec<PathBuf>,
        /// The configuration; default: the first crate's `host.toml` (which
        /// `techub-host new` writes), else the embedded defaults, with each other
        /// crate's `[plugins.<name>]` from its own `host.toml`.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Where the built plugins go; default: `target/techub-dev/plugins` of the
        /// first crate.
        #[arg(long)]
        plugins_dir: Option<PathBuf>,
        /// The admin endpoint to serve; default: the configuration's
        /// (`127.0.0.1:8080`).
        #[arg(long)]
        admin_addr: Option<String>,
    },
    /// Runs a plugin crate's test binary (a wasm32-wasip2 command) in the real runtime,
    /// as the plugin, on the embedded backends: cargo's runner for `cargo test` in a
    /// crate `techub-host new` made (its `.cargo/config.toml` names this).
    TestRunner {
        /// The test binary cargo built.
        binary: PathBuf,
        /// libtest's arguments (`--nocapture`, a test name), passed on.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Runs the specification's business flow through the example plugins and prints
    /// what passes the exchange and what the plugins keep.
    Demo {
        /// The configuration (this repository's names the example plugins).
        #[arg(long, default_value = "host.toml")]
        config: PathBuf,
    },
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
        /// The message id (send the same id twice to test a plugin's idempotency).
        #[arg(long)]
        message_id: Option<String>,
        /// The correlation id.
        #[arg(long)]
        correlation_id: Option<String>,
        /// An application header, `name=value`; repeat for more.
        #[arg(long = "header", value_parser = parse_header)]
        headers: Vec<(String, String)>,
    },
    /// Prints what a running host loaded, and why the other plugin files failed.
    Plugins {
        #[command(flatten)]
        admin: Admin,
        /// The admin endpoint's JSON, for machines.
        #[arg(long)]
        json: bool,
    },
    /// Prints the dead-letter queue of a running host (as JSON; `dlq list` for people).
    DeadLetters {
        #[command(flatten)]
        admin: Admin,
    },
    /// Lists, shows, replays or purges dead letters of a running host.
    Dlq {
        #[command(subcommand)]
        command: cli::ops::Dlq,
        #[command(flatten)]
        admin: Admin,
    },
    /// Shows what a plugin stored: `store get <plugin> <key>`, `store scan <plugin>
    /// [pattern]` (its namespace only; values as UTF-8 or hex).
    Store {
        #[command(subcommand)]
        command: cli::inspect::Store,
        #[command(flatten)]
        admin: Admin,
    },
    /// Shows what a cache domain holds: `cache get <domain> <key>`.
    Cache {
        #[command(subcommand)]
        command: cli::inspect::Cache,
        #[command(flatten)]
        admin: Admin,
    },
    /// Prints cache hits, misses and hit rate per domain (every host's, when the
    /// cache is on Redis).
    CacheStats {
        /// Only this domain.
        #[arg(long)]
        domain: Option<String>,
        /// Only the last part of the retention, e.g. 10m or 1h.
        #[arg(long)]
        since: Option<String>,
        #[command(flatten)]
        admin: Admin,
    },
    /// Warms a cache domain now through its loader (the specification's
    /// `CacheWarmingDto`): the keys given, or those of `[cache.warm.<domain>]`.
    CacheWarm {
        /// The domain.
        domain: String,
        /// A key to load (repeat it); default: the configured keys.
        #[arg(long = "key")]
        keys: Vec<String>,
        /// TTL of the warmed entries in seconds; default: the configured, else the
        /// loader's.
        #[arg(long)]
        ttl: Option<u32>,
        #[command(flatten)]
        admin: Admin,
    },
    /// Prints the messages passing the main exchange whose routing key matches
    /// `pattern` (`#` for all), one line each, as they pass.
    Tail {
        /// Routing-key pattern (`order.*`, `#`).
        pattern: String,
        /// Print the host's JSON lines as they are.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        admin: Admin,
    },
    /// Prints a message's status in each queue it reached.
    Status {
        /// The message id (as `publish` printed it).
        message_id: String,
        #[command(flatten)]
        admin: Admin,
    },
    /// Checks a config file and prints the effective configuration; with a plugin
    /// file, checks the plugin against it instead (world, exported handler,
    /// subscriptions, grants) and exits 1 when the host would refuse it.
    Check {
        /// A plugin to check, e.g. `target/wasm32-wasip2/release/my_plugin.wasm`. Its
        /// name in host.toml is its file stem; `--name` gives another.
        plugin: Option<PathBuf>,
        /// The configuration.
        #[arg(long, default_value = "host.toml")]
        config: PathBuf,
        /// The plugin's name, when the file is not named `<name>.wasm` yet.
        #[arg(long)]
        name: Option<String>,
    },
}

/// Where a running host's admin endpoint is, and its token.
#[derive(clap::Args)]
pub struct Admin {
    /// The admin endpoint of the running host.
    #[arg(long, global = true, default_value = "127.0.0.1:8080")]
    pub admin: String,
    /// Its bearer token, if it requires one.
    #[arg(
        long,
        global = true,
        env = "TECHUB_ADMIN_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // The log goes to stderr; stdout carries what the commands answer.
    // Under `cargo test`, the host's own info lines would only interleave with
    // libtest's report: `RUST_LOG=info` shows them (and the plugin's log records).
    let default_level = match cli.command {
        Command::TestRunner { .. } => "warn",
        _ => "info",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| default_level.into());
    // Colours only for a terminal: a log file or a shipper gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let log = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .with_env_filter(filter);
    match cli.log_format {
        LogFormat::Text => log.init(),
        LogFormat::Json => log.json().with_current_span(true).init(),
    }
    match cli.command {
        Command::Run { config } => run(config).await,
        Command::Publish {
            routing_key,
            payload,
            admin,
            priority,
            message_id,
            correlation_id,
            headers,
        } => {
            let message = techub_host::admin::client::Publish {
                priority,
                message_id,
                correlation_id,
                headers,
            };
            cli::ops::publish(&admin, &routing_key, payload, &message).await
        }
        Command::Plugins { admin, json: true } => cli::ops::show(&admin, "/plugins").await,
        Command::Plugins { admin, json: false } => cli::ops::plugins(&admin).await,
        Command::DeadLetters { admin } => cli::ops::show(&admin, "/dead-letters").await,
        Command::Dlq { command, admin } => cli::ops::dlq(&admin, command).await,
        Command::Store { command, admin } => cli::inspect::store(&admin, command).await,
        Command::Cache { command, admin } => cli::inspect::cache(&admin, command).await,
        Command::CacheStats {
            domain,
            since,
            admin,
        } => cli::ops::cache_stats(&admin, domain.as_deref(), since.as_deref()).await,
        Command::CacheWarm {
            domain,
            keys,
            ttl,
            admin,
        } => cli::ops::cache_warm(&admin, &domain, keys, ttl).await,
        Command::Status { message_id, admin } => cli::ops::status(&admin, &message_id).await,
        Command::Tail {
            pattern,
            json,
            admin,
        } => cli::ops::tail(&admin, &pattern, json).await,
        Command::New {
            name,
            queue,
            routing_key,
            dir,
            sdk,
        } => {
            let request = cli::new::NewPlugin {
                name,
                queue,
                routing_key,
                dir,
                sdk,
            };
            let created = cli::new::create(&request)?;
            println!(
                "created {}: `cargo build --release` there makes the plugin; its README says how to test, check and deploy it",
                created.display()
            );
            Ok(())
        }
        Command::TestRunner { binary, args } => {
            let code = cli::test_runner::run(&binary, args).await?;
            std::process::exit(code)
        }
        Command::Demo { config } => cli::demo::run(&config).await,
        Command::Dev {
            crates,
            config,
            plugins_dir,
            admin_addr,
        } => {
            let request = cli::dev::DevRequest {
                crates,
                config,
                plugins_dir,
                admin_addr,
            };
            cli::dev::run(request, stop_signal()).await
        }
        Command::Check {
            plugin: None,
            config,
            ..
        } => {
            let config = HostConfig::load(&config)?;
            // The effective configuration (the seed's defaults merged in), secrets
            // hidden, as the TOML it can be written back as.
            let shown = techub_host::config::redacted(&config);
            print!(
                "{}",
                toml::to_string_pretty(&shown).context("could not print the configuration")?
            );
            let files = techub_host::plugins::plugin_files(&config.host.plugins_dir);
            let mut warnings = config.unknown_plugin_sections(&files);
            warnings.extend(config.plugins_without_section(&files));
            for warning in warnings {
                eprintln!("warning: {warning}");
            }
            Ok(())
        }
        Command::Check {
            plugin: Some(plugin),
            config,
            name,
        } => cli::check::check_plugin(&plugin, &config, name).await,
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
    platform.watch(Some(path.clone()))?;
    let plugins = platform.plugins().await;
    println!(
        "techub-host: {} plugin(s) serving, {} failed; admin on http://{admin_addr}",
        plugins.len(),
        platform.load_errors().await.len()
    );
    for plugin in &plugins {
        for (queue, keys) in &plugin.subscriptions {
            println!("  {} consumes {queue} via {keys:?}", plugin.name);
        }
    }
    if let Some(addr) = platform.webhooks_addr() {
        for (name, route) in &platform.config().webhooks.routes {
            println!(
                "  webhook {name}: POST http://{addr}{} ({}) publishes {}",
                route.path,
                route.verify.name(),
                route.routing_key
            );
        }
    }
    println!(
        "publish a message:  cargo run -p techub-host -- publish user.created '{{\"id\":\"42\",\"email\":\"ada@example.com\",\"name\":\"Ada\"}}'"
    );
    println!(
        "            or:     curl -X POST http://{admin_addr}/publish/user.created -d '{{\"id\":\"42\",\"email\":\"ada@example.com\",\"name\":\"Ada\"}}'"
    );
    println!(
        "plugins dropped into, replaced in or removed from the plugins directory apply live; so do edits of {} (or SIGHUP)",
        path.display()
    );
    let reloads = tokio::spawn(reload_on_sighup(platform.clone(), path));
    let app = techub_host::admin::router(platform.clone(), token);
    let stopping = platform.stopping().clone();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            stop_signal().await;
            // Ends the admin streams (`tail`) that graceful shutdown would wait for.
            stopping.cancel();
        })
        .await
        .context("admin endpoint failed")?;
    // A reload under way finishes (half applied, it would leave services and plugins
    // on different configurations); the task then sees `stopping` and ends.
    let _ = reloads.await;
    println!("techub-host: stopping; draining deliveries in flight");
    let report = platform.shutdown().await;
    println!(
        "techub-host: stopped {} plugin(s); {} deliveries were in flight, {} left unsettled for the broker to redeliver",
        report.plugins, report.in_flight, report.left_unsettled
    );
    Ok(())
}

/// Resolves on SIGTERM or SIGINT.
async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Reloads the configuration file on every SIGHUP.
async fn reload_on_sighup(platform: Arc<Platform>, path: PathBuf) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hangups) = signal(SignalKind::hangup()) else {
        return;
    };
    let stopping = platform.stopping().clone();
    loop {
        tokio::select! {
            _ = stopping.cancelled() => return,
            hangup = hangups.recv() => {
                if hangup.is_none() {
                    return;
                }
                tracing::info!(path = %path.display(), "SIGHUP: reloading the configuration");
                let _ = platform.reload_config_file(&path).await;
            }
        }
    }
}

/// `name=value`, for `--header`.
fn parse_header(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .ok_or_else(|| format!("{text:?} is not name=value"))
}
