//! `bench keyvalue`: `wasi:keyvalue` get/set pairs through a plugin against the same
//! pairs through techub's `store` import, from one component (`fixture_kv_bench`), on
//! the embedded store and on Redis, in alternating rounds. The goal is ≥ 0.95: one
//! implementation behind two interfaces.
//!
//! `bench languages`: instantiate + call of the welcome flow (`user.created`: cache,
//! store, publish) in Rust (`user-notifications`), Python (`welcome-py`) and
//! JavaScript (`welcome-js`), one at a time on the embedded backends, alternating
//! rounds with p50/p99; each language's peak linear memory per message; and the RSS of
//! a host with one idle plugin of each, each in a child process of its own
//! (`languages-child`), over a host with none.

use super::harness::{self, Count, Latencies, Rounds};
use super::start::{child_line, rss_kib};
use std::sync::Arc;
use std::time::Instant;
use techub_host::Platform;
use techub_host::bindings::Outcome;
use techub_host::config::{HostConfig, KvBackend};
use techub_host::plugins::{LoadedPlugin, load_plugin};
use techub_host::registry::Lifecycle;
use techub_host::runtime::Runtime;
use techub_host::services;
use techub_tests::{PluginDir, config, grant, unique};

static ROUNDS: Count<usize> = Count::new(5, 1);

/// A runtime and one plugin of `dir` loaded on it, under `config`.
async fn loaded(
    dir: &PluginDir,
    name: &str,
    config: HostConfig,
) -> anyhow::Result<(Arc<Runtime>, LoadedPlugin)> {
    let config = Arc::new(config);
    let services = Arc::new(services::connect(&config).await?);
    let runtime = Arc::new(Runtime::new(&config)?);
    let plugin = load_plugin(
        &runtime,
        &dir.path().join(format!("{name}.wasm")),
        config.clone(),
        services,
    )
    .await?;
    Ok((runtime, plugin))
}

pub async fn keyvalue() -> anyhow::Result<()> {
    static MESSAGES: Count<usize> = Count::new(200, 4);
    const PAIRS: u32 = 50;
    let dir = PluginDir::with(&[("kv-bench", "fixture_kv_bench")]);
    let mut platforms = Vec::new();
    for backend in [KvBackend::Memory, KvBackend::Redis] {
        let mut config = config(&dir);
        let plugin = config.plugins.entry("kv-bench".into()).or_default();
        plugin.queue = Some("analytics".into());
        plugin.subscribe = vec!["fixture.kv-bench.#".into()];
        config.backends.store = backend;
        config.host.key_prefix = format!("{}:", unique("kv-bench"));
        platforms.push(loaded(&dir, "kv-bench", config).await?);
    }
    let payload = PAIRS.to_string();
    let run = async |side: usize| {
        let (runtime, plugin) = &platforms[side / 2];
        let face = if side.is_multiple_of(2) {
            "keyvalue"
        } else {
            "store"
        };
        let message = techub_tests::delivery(
            "analytics",
            &format!("fixture.kv-bench.{face}"),
            payload.as_bytes(),
        );
        harness::sample(async {
            for _ in 0..*MESSAGES {
                let report = runtime
                    .invoke(&plugin.pre, plugin.context.clone(), &message, 5)
                    .await;
                anyhow::ensure!(
                    matches!(report.result, Ok(Outcome::Ok)),
                    "kv-bench {face} failed: {:?}",
                    report.result
                );
            }
            Ok(*MESSAGES as u64 * u64::from(PAIRS) * 2)
        })
        .await
    };
    let sides = [
        "wasi:keyvalue, embedded",
        "store, embedded",
        "wasi:keyvalue, Redis",
        "store, Redis",
    ];
    for side in 0..sides.len() {
        run(side).await?; // warm-up
    }
    let rounds = Rounds::alternate(&sides, *ROUNDS, async |side| run(side).await).await?;
    rounds.report(
        &format!(
            "get + set through a plugin, {MESSAGES} messages of {PAIRS} pairs per round (goal wasi:keyvalue/store >= 0.95)"
        ),
        "op",
        &[(0, 1), (2, 3)],
    );
    Ok(())
}

/// The welcome flow in each language: plugin name and component.
const LANGUAGES: [(&str, &str, &str); 3] = [
    ("Rust", "user-notifications", "user_notifications"),
    ("Python", "welcome-py", "welcome_py"),
    ("JavaScript", "welcome-js", "welcome_js"),
];

/// A configuration granting the plugins of `dir` what the welcome flow uses.
fn welcome_config(dir: &PluginDir) -> HostConfig {
    let mut config = config(dir);
    for (_, name, _) in LANGUAGES {
        let plugin = grant(&mut config, name, &["users"], &["notification.email"]);
        plugin.subscribe = vec!["user.created".into()];
    }
    config
}

pub async fn languages() -> anyhow::Result<()> {
    static CALLS: Count<usize> = Count::new(100, 4);
    let mut plugins = Vec::new();
    let mut dirs = Vec::new();
    for (_, name, component) in LANGUAGES {
        let dir = PluginDir::with(&[(name, component)]);
        plugins.push(loaded(&dir, name, welcome_config(&dir)).await?);
        dirs.push(dir);
    }
    let user = |i: usize| {
        serde_json::json!({ "id": format!("u{i}"), "email": "a@b.c", "name": "A" })
            .to_string()
            .into_bytes()
    };
    let mut peaks = vec![0usize; LANGUAGES.len()];
    let mut call = async |side: usize, i: usize| -> anyhow::Result<std::time::Duration> {
        let (runtime, plugin) = &plugins[side];
        let message = techub_tests::delivery("notification", "user.created", &user(i));
        let started = Instant::now();
        let report = runtime
            .invoke(&plugin.pre, plugin.context.clone(), &message, 5)
            .await;
        let took = started.elapsed();
        anyhow::ensure!(
            matches!(report.result, Ok(Outcome::Ok)),
            "{} failed: {:?}",
            LANGUAGES[side].0,
            report.result
        );
        peaks[side] = peaks[side].max(report.memory_peak);
        Ok(took)
    };
    for side in 0..LANGUAGES.len() {
        for i in 0..5 {
            call(side, i).await?; // warm-up
        }
    }
    let sides: Vec<&str> = LANGUAGES.iter().map(|(language, ..)| *language).collect();
    let mut latencies = Latencies::new(sides.len());
    let rounds = Rounds::alternate(&sides, *ROUNDS, async |side| {
        latencies
            .timed(side, async {
                let mut times = Vec::with_capacity(*CALLS);
                for i in 0..*CALLS {
                    times.push(call(side, i).await?);
                }
                Ok(times)
            })
            .await
    })
    .await?;
    rounds.report(
        &format!("the welcome flow, instantiate + call, x{CALLS} one at a time"),
        "message",
        &[(1, 0), (2, 0)],
    );
    latencies.report(&sides);
    if harness::quick() {
        return Ok(());
    }
    let peaks: Vec<String> = LANGUAGES
        .iter()
        .zip(&peaks)
        .map(|((language, ..), peak)| format!("{language} {:.1} MiB", *peak as f64 / 1048576.0))
        .collect();
    println!("  peak linear memory per message: {}", peaks.join(", "));
    let sizes: Vec<String> = LANGUAGES
        .iter()
        .map(|(language, _, component)| {
            let bytes = std::fs::metadata(techub_tests::fixture(component)).map_or(0, |m| m.len());
            format!("{language} {:.1} MiB", bytes as f64 / 1048576.0)
        })
        .collect();
    println!("  component size: {}", sizes.join(", "));
    let cache = tempfile::tempdir()?;
    let (baseline, _) = idle_rss_kib("none", cache.path())?;
    let (mut compiling, mut cached) = (Vec::new(), Vec::new());
    for (language, _, component) in LANGUAGES {
        let over = |rss: u64| (rss as f64 - baseline as f64) / 1024.0;
        // The first start compiles (and fills the compiled cache); the second loads
        // the compiled code from it, as every later start does.
        let (rss, seconds) = idle_rss_kib(component, cache.path())?;
        compiling.push(format!("{language} +{:.1} MiB, {seconds:.2} s", over(rss)));
        let (rss, seconds) = idle_rss_kib(component, cache.path())?;
        cached.push(format!("{language} +{:.1} MiB, {seconds:.2} s", over(rss)));
    }
    println!(
        "  a host with one idle plugin over a host with none ({:.0} MiB): RSS and start time compiling it: {}; from the compiled cache: {}",
        baseline as f64 / 1024.0,
        compiling.join("; "),
        cached.join("; ")
    );
    Ok(())
}

/// The RSS of a host in a child process serving `component` (`none`: nothing) after
/// one message, with its compiled cache in `cache`, in KiB, and how long it took to
/// start (loading and compiling, or loading from the cache), in seconds.
fn idle_rss_kib(component: &str, cache: &std::path::Path) -> anyhow::Result<(u64, f64)> {
    let line = child_line(
        "languages-child",
        &[component.as_ref(), cache.as_os_str()],
        "rss ",
    )?;
    let (rss, seconds) = line
        .split_once(' ')
        .ok_or_else(|| anyhow::anyhow!("languages-child said: {line}"))?;
    Ok((rss.parse()?, seconds.parse()?))
}

/// In the child: a host on the embedded backends serving `component` (`none`: no
/// plugin) with its compiled cache in `cache`, which has handled one `user.created`;
/// prints `rss <KiB> <seconds the start took>`.
pub async fn child(component: String, cache: std::path::PathBuf) -> anyhow::Result<()> {
    let plugins: Vec<(&str, &str)> = LANGUAGES
        .iter()
        .filter(|(.., c)| *c == component)
        .map(|(_, name, c)| (*name, *c))
        .collect();
    let dir = PluginDir::with(&plugins);
    let mut config = welcome_config(&dir);
    config.host.cache_dir = cache;
    let started = Instant::now();
    let platform = Platform::start(config).await?;
    let start_seconds = started.elapsed().as_secs_f64();
    let serving = platform
        .plugins()
        .await
        .iter()
        .filter(|p| p.state == Lifecycle::Serving)
        .count();
    anyhow::ensure!(
        serving == plugins.len(),
        "{serving} of {} serving",
        plugins.len()
    );
    if !plugins.is_empty() {
        let id = techub_tests::publish_user(&platform, "idle").await;
        super::all_completed(&platform, &[id], Instant::now()).await?;
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    println!("rss {} {start_seconds}", rss_kib());
    platform.shutdown().await;
    Ok(())
}
