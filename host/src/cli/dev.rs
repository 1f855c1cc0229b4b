//! `techub-host dev`: the plugin author's loop. Builds plugin crates for
//! `wasm32-wasip2`, deploys them into a plugins directory (copy, then rename: the
//! host never sees half a file), runs a host on them, and on every edit of a crate's
//! sources builds and deploys it again, which the host's directory watch hot-reloads:
//! the running version serves until the new one is ready, and a build that fails
//! changes nothing. The host's log prints each reload and each handled message as
//! one line.

use anyhow::Context as _;
use notify::{RecursiveMode, Watcher as _};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use techub_host::Platform;
use techub_host::config::HostConfig;
use techub_host::plugins::build::{PluginCrate, deploy};
use tokio::sync::mpsc;

/// What `techub-host dev` was asked.
#[derive(Debug, Clone)]
pub struct DevRequest {
    /// Plugin crate directories.
    pub crates: Vec<PathBuf>,
    /// The configuration; default: `host.toml` of the first crate if there is one
    /// (`techub-host new` writes it), else the embedded defaults, with each other
    /// crate's `[plugins.<name>]` taken from its own `host.toml`.
    pub config: Option<PathBuf>,
    /// Where the built plugins go; default: `target/techub-dev/plugins` of the first
    /// crate.
    pub plugins_dir: Option<PathBuf>,
    /// The admin endpoint (for `techub-host publish`); default: the configuration's.
    pub admin_addr: Option<String>,
}

/// Quiet time after the last source event before a rebuild: an editor's save (or a
/// formatter after it) writes several times.
const SETTLE: Duration = Duration::from_millis(300);

/// Builds, deploys and serves until `stop` completes.
pub async fn run(
    request: DevRequest,
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let crates = if request.crates.is_empty() {
        vec![PathBuf::from(".")]
    } else {
        request.crates.clone()
    };
    let crates: Vec<PluginCrate> = crates
        .iter()
        .map(|dir| PluginCrate::inspect(dir))
        .collect::<anyhow::Result<_>>()?;
    let first = &crates[0].dir;
    let config_path = request
        .config
        .clone()
        .or_else(|| Some(first.join("host.toml")).filter(|p| p.is_file()));
    let mut config = match &config_path {
        Some(path) => HostConfig::load(path)?,
        None => HostConfig::default(),
    };
    let plugins_dir = request
        .plugins_dir
        .clone()
        .unwrap_or_else(|| first.join("target/techub-dev/plugins"));
    std::fs::create_dir_all(&plugins_dir)
        .with_context(|| format!("could not create {}", plugins_dir.display()))?;
    let plugins_dir_of_run = plugins_dir.clone();
    // Each crate's grants come from its own host.toml unless --config names one file.
    let other_grants = match request.config {
        Some(_) => Vec::new(),
        None => grants_of_other_crates(&crates[1..])?,
    };
    let admin_addr = request.admin_addr.clone();
    let overrides = move |config: &mut HostConfig| {
        config.host.plugins_dir = plugins_dir_of_run.clone();
        if let Some(addr) = &admin_addr {
            config.host.admin_addr = addr.clone();
        }
        for (name, grant) in &other_grants {
            config
                .plugins
                .entry(name.clone())
                .or_insert_with(|| grant.clone());
        }
    };
    overrides(&mut config);

    for krate in &crates {
        println!(
            "dev: building {} ({}; the first build compiles the SDK and its dependencies, a minute or more)",
            krate.name,
            krate.dir.display()
        );
        build_and_deploy(krate, &plugins_dir).await?;
    }

    let token = config.admin_token()?;
    let admin_addr = config.host.admin_addr.clone();
    let listener = tokio::net::TcpListener::bind(&admin_addr)
        .await
        .with_context(|| format!("could not listen on {admin_addr} (--admin-addr)"))?;
    let platform = Arc::new(Platform::start(config).await?);
    // A reload of the file keeps what this command set over it (no false "changes
    // only with a restart: host.plugins_dir" on every save).
    platform.watch_overridden(config_path.clone(), overrides)?;
    let serving = platform.plugins().await;
    println!(
        "dev: {} plugin(s) serving from {}, {} failed; admin on http://{admin_addr}",
        serving.len(),
        plugins_dir.display(),
        platform.load_errors().await.len()
    );
    for error in platform.load_errors().await {
        println!("dev: {error:?}");
    }
    println!(
        "dev: publish with `techub-host publish <routing-key> '<json>' --admin {admin_addr}`; edit a source file to rebuild and reload; Ctrl-C stops"
    );
    let app = techub_host::admin::router(platform.clone(), token);
    let admin = tokio::spawn(async move { axum::serve(listener, app).await });

    let (_watcher, mut changed) = watch_sources(&crates)?;
    tokio::pin!(stop);
    loop {
        let first = tokio::select! {
            _ = &mut stop => break,
            first = changed.recv() => match first {
                Some(index) => index,
                None => break,
            },
        };
        let mut batch = BTreeSet::from([first]);
        while let Ok(Some(next)) = tokio::time::timeout(SETTLE, changed.recv()).await {
            batch.insert(next);
        }
        for index in batch {
            let krate = &crates[index];
            println!("dev: {} changed; rebuilding", krate.name);
            if let Err(error) = build_and_deploy(krate, &plugins_dir).await {
                println!("dev: {error:#}; the running version stays");
            }
        }
    }
    admin.abort();
    println!("dev: stopping; draining deliveries in flight");
    let report = platform.shutdown().await;
    println!(
        "dev: stopped {} plugin(s); {} deliveries were in flight, {} left unsettled for the broker to redeliver",
        report.plugins, report.in_flight, report.left_unsettled
    );
    Ok(())
}

/// The `[plugins.<name>]` section of each crate's own host.toml (a crate without one,
/// or without its section, is granted nothing).
fn grants_of_other_crates(
    crates: &[PluginCrate],
) -> anyhow::Result<Vec<(String, techub_host::config::PluginConfig)>> {
    let mut grants = Vec::new();
    for krate in crates {
        let file = krate.dir.join("host.toml");
        if !file.is_file() {
            continue;
        }
        let config = HostConfig::load(&file)?;
        if let Some(grant) = config.plugins.get(&krate.name) {
            grants.push((krate.name.clone(), grant.clone()));
        }
    }
    Ok(grants)
}

/// Builds `krate` (on a blocking thread: the host keeps serving while cargo builds),
/// then copies it beside the plugins directory and renames it into it.
async fn build_and_deploy(krate: &PluginCrate, plugins_dir: &Path) -> anyhow::Result<()> {
    let started = Instant::now();
    let building = krate.clone();
    let wasm = tokio::task::spawn_blocking(move || building.build(None)).await??;
    let deployed = deploy(&wasm, &krate.name, plugins_dir)?;
    println!(
        "dev: built {} in {:.1} s; deployed {}",
        krate.name,
        started.elapsed().as_secs_f64(),
        deployed.display()
    );
    Ok(())
}

/// Watches each crate's `src/` and `Cargo.toml`; sends the crate's index per change.
fn watch_sources(
    crates: &[PluginCrate],
) -> anyhow::Result<(notify::RecommendedWatcher, mpsc::UnboundedReceiver<usize>)> {
    let (sender, receiver) = mpsc::unbounded_channel();
    let roots: Vec<PathBuf> = crates
        .iter()
        .map(|c| c.dir.canonicalize().unwrap_or_else(|_| c.dir.clone()))
        .collect();
    let watched = roots.clone();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        if !techub_host::watch::changes_content(&event.kind) {
            return;
        }
        for path in &event.paths {
            let source = path.extension().is_some_and(|e| e == "rs")
                || path.file_name().is_some_and(|n| n == "Cargo.toml");
            if !source {
                continue;
            }
            if let Some(index) = watched.iter().position(|root| {
                path.strip_prefix(root)
                    .is_ok_and(|rel| !rel.starts_with("target"))
            }) {
                let _ = sender.send(index);
            }
        }
    })?;
    for root in &roots {
        watcher.watch(&root.join("src"), RecursiveMode::Recursive)?;
        watcher.watch(root, RecursiveMode::NonRecursive)?;
    }
    Ok((watcher, receiver))
}
