//! # xtask: the project's commands
//!
//! `cargo xtask run | test | bench | build-plugins | lint | fuzz | faults`. Each installs what it
//! needs (the `wasm32-wasip2` target, Redis and RabbitMQ when missing) and starts what
//! it needs, so that a fresh machine needs nothing but Rust.
//!
//! # Layout
//! - `main.rs`: the commands.
//! - `services.rs`: finding, installing and starting Redis and RabbitMQ.
//! - `plugins.rs`: the wasm target and the plugin builds.
//! - `other_languages.rs`: the Python and JavaScript plugins (componentize-py,
//!   componentize-js), for `test`, `bench` and `build-plugins`.

mod other_languages;
mod plugins;
mod services;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Parser)]
#[command(name = "xtask")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Builds the plugins and the host, and runs the host on the embedded backends
    /// with the example plugins (config: host.toml).
    Run {
        /// Another config file.
        #[arg(long, default_value = "host.toml")]
        config: PathBuf,
        /// Run the business-flow demo (`techub-host demo`) instead of serving.
        #[arg(long)]
        demo: bool,
    },
    /// Runs every test of the workspace against real Redis and RabbitMQ (started if
    /// needed) and real plugins (built first).
    Test {
        /// Extra arguments for `cargo test` (e.g. a test name filter).
        #[arg(trailing_var_arg = true)]
        args: Vec<String>,
    },
    /// Runs the benchmarks (release build); each prints its ratio to a native baseline.
    /// `--quick`: every bench with small counts and one round, on the debug build (CI).
    Bench {
        /// Extra arguments for the bench binary (a benchmark name, `--quick`,
        /// `--plugins N` for `start`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Builds every plugin for wasm32-wasip2 (the Rust ones, and the Python and
    /// JavaScript ones with their toolchains, installed if missing) and copies the
    /// Rust examples to plugins/dist.
    BuildPlugins,
    /// `cargo fmt --check` and `cargo clippy -D warnings` over both workspaces.
    Lint,
    /// Faults under a steady confirmed stream (the real host binary on Redis and
    /// RabbitMQ, killed or stopped mid-stream), counted from the backends; fails on
    /// any loss. Writes target/faults/report.json.
    Faults {
        /// Messages per scenario.
        #[arg(long, default_value_t = 2000)]
        messages: usize,
    },
    /// Fuzzes the plugin loader with cargo fuzz (nightly; both installed if missing)
    /// for a bounded time, seeded with the built plugins; fails on a crash.
    Fuzz {
        /// How long, in seconds.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
    },
}

fn main() -> Result<()> {
    let root = workspace_root()?;
    std::env::set_current_dir(&root)?;
    match Cli::parse().command {
        Task::Run { config, demo } => {
            plugins::build(&root)?;
            eprintln!(
                "xtask: building and starting the host (the first build compiles wasmtime: several minutes on 2 cores)"
            );
            let command = if demo { "demo" } else { "run" };
            // Built with the workspace's feature resolution (`test` and `faults` build
            // `--workspace --bins`), only the host's binary: `-p techub-host` resolved
            // features for that package alone and compiled the host again after a
            // `cargo xtask test` (77 s here), and that build again before the next test.
            run(Command::new("cargo").args(["build", "--workspace", "--bin", "techub-host"]))?;
            run(Command::new(root.join("target/debug/techub-host"))
                .arg(command)
                .arg("--config")
                .arg(&config))
        }
        Task::Test { args } => {
            plugins::build(&root)?;
            other_languages::build(&root)?;
            eprintln!(
                "xtask: building the host and the test suite (the first build takes several minutes)"
            );
            services::ensure_redis()?;
            services::ensure_rabbitmq()?;
            services::ensure_test_tools()?;
            // The suite runs the real `techub-host` binary too, which `cargo test` builds
            // only for the host package's own integration tests. Built for the whole
            // workspace: the features cargo resolves then are the ones `cargo test
            // --workspace` uses, so that it compiles nothing again (`-p techub-host`
            // resolved them for that package alone, and wasmtime was compiled twice).
            run(Command::new("cargo").args(["build", "--workspace", "--bins"]))?;
            if args.is_empty() {
                // The example plugins' own unit tests, natively (their crates build for
                // wasm32-wasip2 by default).
                let host = plugins::host_triple()?;
                run(Command::new("cargo")
                    .current_dir(root.join("plugins"))
                    .args(["test", "--quiet", "--target", &host]))?;
            }
            run(Command::new("cargo")
                .args(["test", "--workspace"])
                .args(&args))
        }
        Task::Bench { args } => {
            plugins::build(&root)?;
            other_languages::build(&root)?;
            services::ensure_redis()?;
            services::ensure_rabbitmq()?;
            if args.iter().any(|a| a == "--quick") {
                // Small counts, one round, figures that mean nothing: the debug build
                // `test` already made (same feature resolution), no release build.
                run(Command::new("cargo").args(["build", "--workspace", "--bins"]))?;
                return run(Command::new(root.join("target/debug/bench")).args(&args));
            }
            run(Command::new("cargo")
                .args([
                    "run",
                    "--release",
                    "-p",
                    "techub-tests",
                    "--bin",
                    "bench",
                    "--",
                ])
                .args(&args))
        }
        Task::BuildPlugins => {
            plugins::build(&root)?;
            other_languages::build(&root)
        }
        Task::Fuzz { seconds } => fuzz(&root, seconds),
        Task::Faults { messages } => {
            plugins::build(&root)?;
            services::ensure_redis()?;
            services::ensure_rabbitmq()?;
            // Debug builds of the whole workspace's binaries (the host's among them):
            // the features cargo resolves for the workspace are the test suite's, so
            // that CI compiles nothing more. (`cargo run -p techub-tests` resolved them
            // for that one package and built wasmtime and the host a second time.)
            run(Command::new("cargo").args(["build", "--workspace", "--bins"]))?;
            run(Command::new(root.join("target/debug/faults"))
                .arg("--messages")
                .arg(messages.to_string()))
        }
        Task::Lint => {
            plugins::ensure_wasm_target()?;
            run(Command::new("cargo").args(["fmt", "--all", "--", "--check"]))?;
            run(Command::new("cargo").args([
                "fmt",
                "--all",
                "--manifest-path",
                "plugins/Cargo.toml",
                "--",
                "--check",
            ]))?;
            run(Command::new("cargo").args([
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ]))?;
            run(Command::new("cargo")
                .current_dir(root.join("plugins"))
                .args(["clippy", "--release", "--", "-D", "warnings"]))
        }
    }
}

/// `cargo +nightly fuzz run load_plugin` for `seconds`, its corpus seeded with every
/// plugin this repository builds (valid components to mutate from).
fn fuzz(root: &Path, seconds: u64) -> Result<()> {
    let toolchains = Command::new("rustup")
        .args(["toolchain", "list"])
        .output()?;
    if !String::from_utf8_lossy(&toolchains.stdout).contains("nightly") {
        run(Command::new("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
        ]))?;
    }
    let installed = Command::new("cargo").args(["fuzz", "--version"]).output();
    if !installed.is_ok_and(|o| o.status.success()) {
        eprintln!("xtask: installing cargo-fuzz");
        run(Command::new("cargo").args(["install", "cargo-fuzz", "--locked"]))?;
    }
    plugins::build(root)?;
    let corpus = root.join("fuzz/corpus/load_plugin");
    std::fs::create_dir_all(&corpus)?;
    for entry in std::fs::read_dir(root.join("target/wasm32-wasip2/release"))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "wasm") {
            std::fs::copy(&path, corpus.join(path.file_name().unwrap_or_default()))?;
        }
    }
    eprintln!(
        "xtask: fuzzing the plugin loader for {seconds} s (the first build compiles wasmtime with coverage: several minutes); libFuzzer's last line says how many runs"
    );
    run(Command::new("cargo")
        .current_dir(root)
        .args([
            "+nightly",
            "fuzz",
            "run",
            "--fuzz-dir",
            "fuzz",
            "load_plugin",
        ])
        .arg(&corpus)
        .args(["--", &format!("-max_total_time={seconds}")]))
}

/// Runs a command, failing with its exit status.
pub(crate) fn run(command: &mut Command) -> Result<()> {
    let status = command
        .status()
        .with_context(|| format!("could not start {command:?}"))?;
    if !status.success() {
        bail!("{command:?} failed with {status}");
    }
    Ok(())
}

/// The checkout xtask runs for: the parent of xtask's manifest directory as `cargo run`
/// gives it *now* (`CARGO_MANIFEST_DIR` in the environment), not as it was when xtask
/// was compiled: a copied or moved checkout with its `target/` keeps the old binary,
/// which would otherwise build in the original checkout. Without the variable (xtask
/// run directly), the nearest directory up from here holding `xtask/Cargo.toml`.
fn workspace_root() -> Result<PathBuf> {
    root_from(
        std::env::var_os("CARGO_MANIFEST_DIR").map(PathBuf::from),
        &std::env::current_dir()?,
    )
}

fn root_from(manifest_dir: Option<PathBuf>, cwd: &Path) -> Result<PathBuf> {
    if let Some(dir) = manifest_dir {
        return Ok(dir.parent().unwrap_or(Path::new(".")).to_path_buf());
    }
    cwd.ancestors()
        .find(|dir| dir.join("xtask/Cargo.toml").is_file())
        .map(Path::to_path_buf)
        .with_context(|| {
            format!(
                "{} is not inside a techub checkout (no xtask/Cargo.toml above it); run `cargo xtask` from the checkout",
                cwd.display()
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_root_is_read_at_run_time_not_fixed_at_compile_time() {
        let copy = std::env::temp_dir().join("a-copied-checkout");
        assert_eq!(
            root_from(Some(copy.join("xtask")), Path::new("/elsewhere")).unwrap(),
            copy,
            "the checkout cargo runs xtask in"
        );
        assert_ne!(
            copy,
            Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
        );
        // Run directly: found from the working directory.
        let here = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        assert_eq!(
            root_from(None, &here).unwrap(),
            Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
        );
        assert!(root_from(None, Path::new("/")).is_err());
    }
}
