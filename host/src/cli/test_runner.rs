//! `techub-host test-runner <test.wasm> [args]`: cargo's runner for plugin crates.
//!
//! A plugin crate pins `wasm32-wasip2`, so `cargo test` builds its tests as a
//! WebAssembly command and hands it to the `runner` of `.cargo/config.toml`, which
//! `techub-host new` sets to this. The tests run in the real runtime, as the plugin
//! the crate is (its `[plugins.<name>]` grants from the crate's `host.toml`), on the
//! embedded backends: an SDK call in a test does what it does in production, on a
//! store, cache and broker of the run's own. No native build of the host (wasmtime)
//! is needed in the plugin crate.

use anyhow::Context;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use techub_host::HostConfig;
use techub_host::config::Backends;
use techub_host::runtime::{CommandExit, Runtime};

/// The exit code of a failed run, as libtest's own.
const FAILED: i32 = 101;

/// Runs the test binary `binary` with libtest's `args`; the exit code for cargo.
pub async fn run(binary: &Path, args: Vec<String>) -> anyhow::Result<i32> {
    // Cargo runs test binaries in the package's directory, with its name and
    // manifest directory in the environment.
    let crate_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    let name = match std::env::var("CARGO_PKG_NAME") {
        Ok(name) => name,
        Err(_) => name_from_binary(binary),
    };
    let config = test_config(&crate_dir, &name)?;
    let services = techub_host::services::connect(&config).await?;
    let plugin = Arc::new(services.context(&name, &config));
    let runtime = Arc::new(Runtime::new(&config)?);
    let mut argv = vec![binary.display().to_string()];
    // libtest keeps a test's output (its panic message too) to print once the test
    // has failed; on wasm32 the panic aborts the run first and the message would be
    // lost. Uncaptured, it is printed as it happens.
    if !args
        .iter()
        .any(|arg| arg == "--nocapture" || arg == "--no-capture")
    {
        argv.push("--nocapture".into());
    }
    argv.extend(args);
    let exit = runtime.run_command(binary, plugin, &argv).await?;
    Ok(match exit {
        CommandExit::Code(code) => code,
        CommandExit::Trapped(reason) => {
            eprintln!(
                "\nerror: the test binary stopped: {reason}\n\
                 On wasm32 a panic aborts, so a failed assertion ends the whole run: its message is above, \
                 and the tests after it did not run (`cargo test <name>` runs one)."
            );
            FAILED
        }
        CommandExit::OutOfMemory(mib) => {
            eprintln!(
                "\nerror: the test binary reached the plugin's memory limit ({mib} MiB, [limits] memory_mib in {})",
                crate_dir.join("host.toml").display()
            );
            FAILED
        }
    })
}

/// The crate's `host.toml` (else the defaults), with the run's own changes: the
/// embedded backends whatever it names (tests must not reach shared servers), no
/// instance pool (one instance runs), no compiled cache (every build is new), and no
/// per-message budgets for the plugin (a test run is many calls, not one message).
fn test_config(crate_dir: &Path, name: &str) -> anyhow::Result<HostConfig> {
    let file = crate_dir.join("host.toml");
    let mut config = match file.exists() {
        true => HostConfig::load(&file).with_context(|| {
            format!(
                "the tests run with the grants of {}, which is not a valid configuration",
                file.display()
            )
        })?,
        false => HostConfig::default(),
    };
    config.backends = Backends::default();
    config.host.pooling = false;
    config.host.compile_cache = false;
    let limits = &mut config.plugins.entry(name.to_string()).or_default().limits;
    limits.cpu_ms = Some(u32::MAX);
    limits.timeout_ms = Some(u32::MAX);
    limits.max_host_calls = Some(u32::MAX);
    limits.max_publishes = Some(u32::MAX);
    limits.max_http_requests = Some(u32::MAX);
    Ok(config)
}

/// `hello_plugin-0123abcd.wasm` → `hello-plugin`: cargo's test binary name without
/// its hash, as the package would be named (for a runner started without cargo).
fn name_from_binary(binary: &Path) -> String {
    let stem = binary
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = stem
        .rsplit_once('-')
        .map_or(stem.as_str(), |(name, _)| name);
    name.replace('_', "-")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_test_binary_is_named_after_its_package() {
        let binary = Path::new("/t/wasm32-wasip2/debug/deps/hello_plugin-0123abcd.wasm");
        assert_eq!(name_from_binary(binary), "hello-plugin");
    }
}
