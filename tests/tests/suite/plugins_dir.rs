//! Odd files in the plugins directory of a running host (the real binary): a FIFO, a
//! sparse 1 GiB file, a dangling symlink and a directory, each named `*.wasm`, are
//! listed as failed with the reason, without wedging a worker: a good plugin dropped
//! after them goes live, and SIGTERM still drains and exits 0.

use crate::binary::{Host, free_admin_addr};
use std::time::Duration;
use techub_host::admin::client;
use techub_tests::{PluginDir, fixture, wait_for};

#[tokio::test(flavor = "multi_thread")]
async fn odd_files_in_the_plugins_directory_cannot_wedge_the_host() {
    let dir = PluginDir::with(&[]);
    let admin = free_admin_addr();
    let config = dir.path().join("host.toml");
    std::fs::write(
        &config,
        format!(
            "[host]\nplugins_dir = {:?}\nadmin_addr = \"{admin}\"\n[plugins.good]\nsubscribe = [\"#\"]\n",
            dir.path()
        ),
    )
    .expect("write host.toml");
    let host = Host::start(&config);
    ready_or_no_plugins(&admin).await;

    let fifo = dir.path().join("fifo.wasm");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo runs");
    assert!(made.success());
    let sparse = std::fs::File::create(dir.path().join("sparse.wasm")).expect("create");
    sparse.set_len(1 << 30).expect("a sparse 1 GiB file");
    std::os::unix::fs::symlink("/nonexistent/plugin.wasm", dir.path().join("dangling.wasm"))
        .expect("a dangling symlink");
    std::fs::create_dir(dir.path().join("folder.wasm")).expect("a directory");
    tokio::time::sleep(Duration::from_millis(500)).await;
    std::fs::copy(fixture("fixture_noop"), dir.path().join("good.wasm")).expect("copy");

    let plugins = wait_for(
        Duration::from_secs(60),
        "good to serve and 4 files to fail",
        || {
            let admin = admin.clone();
            async move {
                let (_, body) = client::get(&admin, None, "/plugins").await.ok()?;
                let shown: serde_json::Value = serde_json::from_str(&body).ok()?;
                let serving = shown["plugins"]
                    .as_array()?
                    .iter()
                    .any(|p| p["name"] == "good" && p["state"] == "serving");
                let failed = shown["failed"].as_array()?.len();
                (serving && failed == 4).then_some(shown)
            }
        },
    )
    .await;
    let reasons = plugins["failed"].to_string();
    for reason in [
        "fifo.wasm is a FIFO, not a regular file",
        "folder.wasm is a directory, not a regular file",
        "dangling.wasm is a symlink to nothing",
        "sparse.wasm is larger than host.max_plugin_bytes",
    ] {
        assert!(reasons.contains(reason), "{reason} missing from {reasons}");
    }
    host.terminate();
    let (status, _) = host.wait(Duration::from_secs(30));
    assert!(
        status.success(),
        "the host did not exit cleanly: {status:?}"
    );
}

/// Waits for the admin endpoint (`/readyz` is 503 with no plugin serving).
async fn ready_or_no_plugins(admin: &str) {
    wait_for(Duration::from_secs(60), "the admin endpoint", || async {
        client::get(admin, None, "/healthz").await.ok().map(|_| ())
    })
    .await;
}
