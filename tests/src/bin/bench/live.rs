//! Benchmarks of the live platform: deploying a plugin (cold and from the compiled
//! cache) and throughput while a plugin is replaced over and over, each beside its
//! baseline measured in the same run. (Starting with many plugins: `start.rs`.)

use super::harness::Count;
use std::path::Path;
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
            .any(|id| platform.services.tracker.get(id) == Some(MessageStatus::Completed))
        {
            return started.elapsed();
        }
        assert!(started.elapsed() < Duration::from_secs(60), "never served");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

pub async fn swap() -> anyhow::Result<()> {
    static ROUNDS: Count<u64> = Count::new(5, 1);
    let noop = std::fs::read(fixture("fixture_noop"))?;
    let (mut cold, mut cached) = (Vec::new(), Vec::new());
    for round in 0..*ROUNDS {
        let dir = PluginDir::with(&[]);
        let cache = tempfile::tempdir()?;
        let mut config = host_config(&dir, cache.path());
        grant_all(&mut config, ["cold".to_string(), "warm".to_string()]);
        let platform = Platform::start(config).await?;
        let bytes = distinct(&noop, round);
        cold.push(deploy_to_first_message(&platform, dir.path(), "cold", &bytes).await);
        // The same file under another name: its compiled form is in the cache now.
        std::fs::remove_file(dir.path().join("cold.wasm"))?;
        while !platform.plugins().await.is_empty() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        cached.push(deploy_to_first_message(&platform, dir.path(), "warm", &bytes).await);
        anyhow::ensure!(
            platform.runtime.cache.hits() >= 1,
            "the second deploy missed the cache"
        );
    }
    cold.sort();
    cached.sort();
    let (cold, cached) = (cold[cold.len() / 2], cached[cached.len() / 2]);
    println!(
        "deploy (rename -> first handled message), median of {ROUNDS}: cold {cold:?}, from the compiled cache {cached:?}; cached/cold = {:.2}",
        cached.as_secs_f64() / cold.as_secs_f64()
    );
    Ok(())
}

/// Messages/s of the versioned plugin doing nothing (payload `noop`) while it is
/// replaced every 100 ms (v1, v2, v3 in turn), against the same plugin left alone.
pub async fn swap_throughput() -> anyhow::Result<()> {
    // Half the tracker's memory, so that no status is forgotten before it is read.
    static MESSAGES: Count<usize> = Count::new(50_000, 1008);
    let versions: Vec<Vec<u8>> = [
        "fixture_versioned_v1",
        "fixture_versioned_v2",
        "fixture_versioned_v3",
    ]
    .iter()
    .map(|c| std::fs::read(fixture(c)))
    .collect::<Result<_, _>>()?;
    let mut rates = Vec::new();
    for swapping in [false, true] {
        let dir = PluginDir::with(&[]);
        let cache = tempfile::tempdir()?;
        let mut config = host_config(&dir, cache.path());
        grant_all(&mut config, ["live".to_string()]);
        let platform = std::sync::Arc::new(Platform::start(config).await?);
        deploy(dir.path(), "live", &versions[0]);
        while platform.plugins().await.is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Compile every version once, so that the swaps measure swapping.
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
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let swapper = {
            let (path, versions, stop) = (dir.path().to_path_buf(), versions.clone(), stop.clone());
            tokio::spawn(async move {
                let mut swaps = 0;
                while swapping && !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    swaps += 1;
                    deploy(&path, "live", &versions[swaps % versions.len()]);
                }
                swaps
            })
        };
        let started = Instant::now();
        let mut ids = Vec::with_capacity(*MESSAGES);
        for _ in 0..*MESSAGES {
            ids.push(
                platform
                    .publish("fixture.versioned.main", b"noop".to_vec(), None)
                    .await?,
            );
        }
        super::all_completed(&platform, &ids, started).await?;
        let rate = *MESSAGES as f64 / started.elapsed().as_secs_f64();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let swaps = swapper.await?;
        println!(
            "no-op (versioned) plugin x{MESSAGES} ({}): {rate:.0} msg/s",
            if swapping {
                format!("replaced {swaps} times")
            } else {
                "steady".into()
            }
        );
        rates.push(rate);
    }
    println!(
        "throughput during continuous replacement / steady = {:.2}",
        rates[1] / rates[0]
    );
    Ok(())
}
