//! `bench start [--plugins N]`: a host starting with N distinct plugins (the no-op
//! fixture, each with another file hash), cold and then from the compiled cache:
//! seconds to "all serving", and the host's resident memory read from its own
//! `/proc/self/status`. Each start runs in a child process of its own (this binary,
//! `start-child`), so that one start's memory is not counted in the next. Goal for
//! 1 000 plugins: cached start ≤ 5 s, RSS ≤ 1 GiB.

use super::harness::Count;
use super::harness::median;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;
use techub_host::Platform;
use techub_host::config::HostConfig;
use techub_host::registry::Lifecycle;

/// Cached starts per N (the median is reported).
static CACHED_RUNS: Count<usize> = Count::new(3, 1);

/// This process's resident memory in KiB.
pub fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// What one child reported.
struct Started {
    seconds: f64,
    rss_before_kib: u64,
    rss_after_kib: u64,
    compiled: u64,
    cached: u64,
}

pub async fn start(counts: &[u64]) -> anyhow::Result<()> {
    for &plugins in counts {
        let dir = tempfile::tempdir()?;
        let cache = tempfile::tempdir()?;
        let noop = std::fs::read(techub_tests::fixture("fixture_noop"))?;
        for i in 0..plugins {
            std::fs::write(
                dir.path().join(format!("noop-{i}.wasm")),
                super::live::distinct(&noop, i),
            )?;
        }
        let cold = start_child(dir.path(), cache.path(), plugins)?;
        let cached: Vec<Started> = (0..*CACHED_RUNS)
            .map(|_| start_child(dir.path(), cache.path(), plugins))
            .collect::<anyhow::Result<_>>()?;
        anyhow::ensure!(
            cold.compiled == plugins && cached.iter().all(|c| c.cached == plugins),
            "{plugins} plugins: cold compiled {}, cached runs took {:?} from the cache",
            cold.compiled,
            cached.iter().map(|c| c.cached).collect::<Vec<_>>()
        );
        let seconds = median(cached.iter().map(|c| c.seconds).collect());
        let rss_after = median(cached.iter().map(|c| c.rss_after_kib as f64).collect());
        let rss_before = median(cached.iter().map(|c| c.rss_before_kib as f64).collect());
        let per_plugin_kib = (rss_after - rss_before) / plugins as f64;
        println!(
            "start with {plugins} plugins: cold {:.2} s (RSS {} MiB); from the compiled cache {seconds:.2} s (median of {CACHED_RUNS}), RSS {:.0} MiB ({:.0} MiB before the host started; {per_plugin_kib:.0} KiB per idle plugin)",
            cold.seconds,
            cold.rss_after_kib / 1024,
            rss_after / 1024.0,
            rss_before / 1024.0,
        );
        if plugins >= 1_000 {
            println!(
                "  goal for 1 000: cached start <= 5 s ({}), RSS <= 1 GiB ({})",
                if seconds <= 5.0 { "met" } else { "NOT met" },
                if rss_after <= 1024.0 * 1024.0 {
                    "met"
                } else {
                    "NOT met"
                },
            );
        }
    }
    Ok(())
}

/// Runs this binary as `<subcommand> <args>` (a bench's child process) and answers
/// the rest of the line of its output that starts with `prefix`.
pub fn child_line(
    subcommand: &str,
    args: &[&std::ffi::OsStr],
    prefix: &str,
) -> anyhow::Result<String> {
    let output = Command::new(std::env::current_exe()?)
        .arg(subcommand)
        .args(args)
        .output()?;
    let printed = String::from_utf8_lossy(&output.stdout);
    anyhow::ensure!(
        output.status.success(),
        "{subcommand} failed: {printed}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    printed
        .lines()
        .find_map(|l| l.strip_prefix(prefix))
        .map(str::to_string)
        .ok_or_else(|| anyhow::anyhow!("{subcommand} said: {printed}"))
}

/// Runs `bench start-child` on the plugins of `dir`; what it reported.
fn start_child(dir: &Path, cache: &Path, plugins: u64) -> anyhow::Result<Started> {
    let plugins = plugins.to_string();
    let line = child_line(
        "start-child",
        &[dir.as_os_str(), cache.as_os_str(), plugins.as_ref()],
        "started ",
    )?;
    let numbers: Vec<f64> = line.split(' ').map(str::parse).collect::<Result<_, _>>()?;
    let [seconds, before, after, compiled, cached] = numbers[..] else {
        anyhow::bail!("start-child said: {line}");
    };
    Ok(Started {
        seconds,
        rss_before_kib: before as u64,
        rss_after_kib: after as u64,
        compiled: compiled as u64,
        cached: cached as u64,
    })
}

/// In the child: starts a host on the plugins of `dir` (the compiled cache in
/// `cache`), waits until all `plugins` serve, and prints `started <seconds>
/// <rss before KiB> <rss after KiB> <compiled> <from the cache>`.
pub async fn child(dir: PathBuf, cache: PathBuf, plugins: u64) -> anyhow::Result<()> {
    let mut config = HostConfig::default();
    config.host.plugins_dir = dir;
    config.host.cache_dir = cache;
    for i in 0..plugins {
        config
            .plugins
            .entry(format!("noop-{i}"))
            .or_default()
            .subscribe = vec!["#".into()];
    }
    let rss_before = rss_kib();
    let started = Instant::now();
    let platform = Platform::start(config).await?;
    let seconds = started.elapsed().as_secs_f64();
    let serving = platform
        .plugins()
        .await
        .iter()
        .filter(|p| p.state == Lifecycle::Serving)
        .count();
    anyhow::ensure!(serving as u64 == plugins, "{serving} of {plugins} serving");
    println!(
        "started {seconds} {rss_before} {} {} {}",
        rss_kib(),
        platform.runtime.cache.compiled(),
        platform.runtime.cache.hits()
    );
    platform.shutdown().await;
    Ok(())
}
