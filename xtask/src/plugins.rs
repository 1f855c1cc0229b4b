//! The `wasm32-wasip2` target and the plugin builds.

use crate::run;
use anyhow::{Context, Result};
use std::path::Path;
use std::process::Command;

/// The example plugins copied to `plugins/dist` for `cargo xtask run`.
const EXAMPLES: &[&str] = &[
    "user_notifications",
    "order_processor",
    "payment_processor",
    "inventory_keeper",
    "analytics",
    "email_sender",
    "webhook_dispatcher",
];

/// Installs the wasm target if rustup lacks it.
pub fn ensure_wasm_target() -> Result<()> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .context("could not run rustup; install Rust with rustup (https://rustup.rs)")?;
    if !String::from_utf8_lossy(&installed.stdout)
        .lines()
        .any(|l| l.trim() == "wasm32-wasip2")
    {
        eprintln!("xtask: installing the wasm32-wasip2 target");
        run(Command::new("rustup").args(["target", "add", "wasm32-wasip2"]))?;
    }
    Ok(())
}

/// Builds every plugin (examples and test fixtures) in release mode and puts the
/// examples into `plugins/dist` under their plugin names (`order_processor.wasm` →
/// `order-processor.wasm`), each by an atomic rename, so that a running host never
/// sees a half-written file.
pub fn build(root: &Path) -> Result<()> {
    ensure_wasm_target()?;
    eprintln!(
        "xtask: building the plugins for wasm32-wasip2 (release; the first build takes a minute or two)"
    );
    // The plugins workspace's own .cargo/config.toml picks the target, so run there.
    run(Command::new("cargo")
        .current_dir(root.join("plugins"))
        .args(["build", "--release"]))?;
    let out = root.join("target/wasm32-wasip2/release");
    let dist = root.join("plugins/dist");
    std::fs::create_dir_all(&dist)?;
    for example in EXAMPLES {
        let from = out.join(format!("{example}.wasm"));
        let name = example.replace('_', "-");
        let to = dist.join(format!("{name}.wasm"));
        // Not `.wasm` until the rename: the host ignores the file while it is written.
        let partial = dist.join(format!(".{name}.wasm.partial"));
        std::fs::copy(&from, &partial).with_context(|| {
            format!("could not copy {} to {}", from.display(), partial.display())
        })?;
        std::fs::rename(&partial, &to).with_context(|| {
            format!("could not rename {} to {}", partial.display(), to.display())
        })?;
    }
    Ok(())
}

/// The host's target triple (`rustc -vV`), for native builds of the plugins' tests.
pub fn host_triple() -> Result<String> {
    let output = Command::new("rustc").arg("-vV").output()?;
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_string))
        .context("rustc -vV names no host triple")
}
