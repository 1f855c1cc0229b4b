//! Benchmarks of the live platform: deploying a plugin (cold and from the compiled
//! cache) and throughput while a plugin is replaced over and over, each beside its
//! baseline in alternating rounds ([`harness::Rounds`]). (Starting with many
//! plugins: `start.rs`.)

use super::harness::{self, Count, Latencies, Rounds, Sample};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use techub_host::Platform;
use techub_host::capability::messaging::MessageStatus;
use techub_host::config::HostConfig;
use techub_tests::{PluginDir, config, fixture};

/// `bytes` of a component with a custom section appended that holds `tag`: the same
/// code, another file hash (so another compiled-cache entry).
pub fn distinct(bytes: &[u8], tag: u64) -> Vec<u8> {
    let mut out = bytes.to_vec();
    let name = b"bench";
    let mut payload = vec![name.len() as u8];
    payload.extend_from_slice(name);
    payload.extend_from_slice(&tag.to_le_bytes());
    out.push(0); // custom section
    out.push(payload.len() as u8);
    out.extend_from_slice(&payload);
    out
}

fn deploy(dir: &Path, name: &str, bytes: &[u8]) {
    let temp = dir.join(format!(".{name}.part"));
    std::fs::write(&temp, bytes).expect("write");
    std::fs::rename(&temp, dir.join(format!("{name}.wasm"))).expect("rename");
}

fn host_config(dir: &PluginDir, cache: &Path) -> HostConfig {
    let mut config = config(dir);
    config.host.cache_dir = cache.to_path_buf();
    config
}

fn grant_all(config: &mut HostConfig, names: impl IntoIterator<Item = String>) {
    for name in names {
        config.plugins.entry(name).or_default().subscribe = vec!["#".into()];
    }
}

/// From the rename of a `.wasm` into the watched directory to the first message it
/// handled: publishing a probe every millisecond until one completes.
async fn deploy_to_first_message(
    platform: &Platform,
    dir: &Path,
    name: &str,
    bytes: &[u8],
) -> Duration {
    let started = Instant::now();
    deploy(dir, name, bytes);
    let mut probes = Vec::new();
    loop {
        let id = platform
            .publish("fixture.noop.probe", b"{}".to_vec(), None)
            .await
            .expect("publish");
        probes.push(id);
        if probes
            .iter()
            .any(|id| platform.services.messaging.tracker.get(id) == Some(MessageStatus::Completed))
        {
            return started.elapsed();
        }
        assert!(started.elapsed() < Duration::from_secs(60), "never served");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// From the rename of a `.wasm` into the watched directory to its first handled
/// message, on a fresh host each time: a file never compiled (cold) against one whose
/// compiled form is in the cache already (deployed under another name and removed
/// first, untimed), in alternating rounds.
pub async fn swap() -> anyhow::Result<()> {
    static ROUNDS: Count<usize> = Count::new(5, 1);
    let noop = std::fs::read(fixture("fixture_noop"))?;
    let mut tag = 0;
    let sides = ["cold", "from the compiled cache"];
    let mut latencies = Latencies::new(sides.len());
    let rounds = Rounds::alternate(&sides, *ROUNDS, async |side| {
        tag += 1;
        let dir = PluginDir::with(&[]);
        let cache = tempfile::tempdir()?;
        let mut config = host_config(&dir, cache.path());
        grant_all(&mut config, ["first".to_string(), "measured".to_string()]);
        let platform = Platform::start(config).await?;
        let bytes = distinct(&noop, tag);
        if side == 1 {
            deploy_to_first_message(&platform, dir.path(), "first", &bytes).await;
            std::fs::remove_file(dir.path().join("first.wasm"))?;
            while !platform.plugins().await.is_empty() {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        let hits = platform.runtime.cache.hits();
        let sample = latencies
            .timed(side, async {
                Ok(vec![
                    deploy_to_first_message(&platform, dir.path(), "measured", &bytes).await,
                ])
            })
            .await?;
        let hit = platform.runtime.cache.hits() > hits;
        anyhow::ensure!(
            hit == (side == 1),
            "{}: the deploy {} the compiled cache",
            sides[side],
            if hit { "hit" } else { "missed" }
        );
        platform.shutdown().await;
        Ok(sample)
    })
    .await?;
    rounds.report(
        "deploy (rename -> first handled message) on a fresh host",
        "deploy",
        &[(1, 0)],
    );
    latencies.report(&sides);
    Ok(())
}

/// A host serving the versioned plugin as `live`, every version compiled once (so
/// that swaps measure swapping).
struct Live {
    dir: PluginDir,
    _cache: tempfile::TempDir,
    platform: Platform,
}

impl Live {
    async fn start(versions: &[Vec<u8>]) -> anyhow::Result<Self> {
        let dir = PluginDir::with(&[]);
        let cache = tempfile::tempdir()?;
        let mut config = host_config(&dir, cache.path());
        grant_all(&mut config, ["live".to_string()]);
        let platform = Platform::start(config).await?;
        deploy(dir.path(), "live", &versions[0]);
        while platform.plugins().await.is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        for (i, bytes) in versions.iter().enumerate() {
            deploy(dir.path(), &format!("warm-{i}"), bytes);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        for i in 0..versions.len() {
            std::fs::remove_file(dir.path().join(format!("warm-{i}.wasm")))?;
        }
        while platform.plugins().await.len() > 1 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(Self {
            dir,
            _cache: cache,
            platform,
        })
    }

    /// Publishes `count` no-op messages and waits for them all; while `swapping`,
    /// `live` is replaced every 100 ms (v1, v2, v3 in turn). How many swaps happened.
    async fn round(
        &self,
        count: usize,
        versions: &[Vec<u8>],
        swapping: bool,
    ) -> anyhow::Result<(Sample, usize)> {
        let stop = Arc::new(AtomicBool::new(false));
        let swapper = {
            let (path, versions, stop) = (
                self.dir.path().to_path_buf(),
                versions.to_vec(),
                stop.clone(),
            );
            tokio::spawn(async move {
                let mut swaps = 0;
                while swapping && !stop.load(Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    swaps += 1;
                    deploy(&path, "live", &versions[swaps % versions.len()]);
                }
                swaps
            })
        };
        let sample = harness::sample(async {
            let started = Instant::now();
            let mut ids = Vec::with_capacity(count);
            for _ in 0..count {
                ids.push(
                    self.platform
                        .publish("fixture.versioned.main", b"noop".to_vec(), None)
                        .await?,
                );
            }
            super::all_completed(&self.platform, &ids, started).await?;
            Ok(count as u64)
        })
        .await;
        stop.store(true, Ordering::Relaxed);
        let swaps = swapper.await?;
        Ok((sample?, swaps))
    }
}

/// Messages/s of the versioned plugin doing nothing (payload `noop`) while it is
/// replaced every 100 ms, against the same plugin left alone on a host of its own, in
/// alternating rounds.
pub async fn swap_throughput() -> anyhow::Result<()> {
    // Well under the tracker's memory, so that no status is forgotten before it is read.
    static MESSAGES: Count<usize> = Count::new(20_000, 1008);
    static ROUNDS: Count<usize> = Count::new(5, 1);
    let versions: Vec<Vec<u8>> = [
        "fixture_versioned_v1",
        "fixture_versioned_v2",
        "fixture_versioned_v3",
    ]
    .iter()
    .map(|c| std::fs::read(fixture(c)))
    .collect::<Result<_, _>>()?;
    let hosts = [Live::start(&versions).await?, Live::start(&versions).await?];
    let mut swaps = 0;
    let sides = ["steady", "replaced every 100 ms"];
    let rounds = Rounds::alternate(&sides, *ROUNDS, async |side| {
        let (sample, swapped) = hosts[side].round(*MESSAGES, &versions, side == 1).await?;
        swaps += swapped;
        Ok(sample)
    })
    .await?;
    rounds.report(
        &format!("no-op (versioned) plugin x{MESSAGES} per round ({swaps} swaps in all)"),
        "msg",
        &[(1, 0)],
    );
    for host in hosts {
        host.platform.shutdown().await;
    }
    Ok(())
}
