//! Building a plugin crate into its component, and deploying it: what `techub-host
//! dev` and the test kit share.

use anyhow::Context as _;
use std::path::{Path, PathBuf};

/// A plugin crate: where it is, its plugin name (the package name) and the target
/// directory cargo builds it into.
#[derive(Debug, Clone)]
pub struct PluginCrate {
    /// The crate's directory.
    pub dir: PathBuf,
    /// Its package name, which is the plugin's name (`<name>.wasm`).
    pub name: String,
    /// Its target directory (as `cargo metadata` says).
    pub target_dir: PathBuf,
}

impl PluginCrate {
    /// Reads the crate in `dir` through `cargo metadata`.
    pub fn inspect(dir: &Path) -> anyhow::Result<Self> {
        let manifest = dir.join("Cargo.toml");
        anyhow::ensure!(
            manifest.is_file(),
            "{} is not a plugin crate (no Cargo.toml); create one with `techub-host new <name>`",
            dir.display()
        );
        let output = std::process::Command::new(cargo())
            .args([
                "metadata",
                "--format-version",
                "1",
                "--no-deps",
                "--manifest-path",
            ])
            .arg(&manifest)
            .output()
            .context("could not run cargo (is Rust installed? https://rustup.rs)")?;
        anyhow::ensure!(
            output.status.success(),
            "cargo metadata failed for {}: {}",
            manifest.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
        let metadata: serde_json::Value = serde_json::from_slice(&output.stdout)?;
        let manifest = manifest.canonicalize()?;
        let package = metadata["packages"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["manifest_path"].as_str().map(Path::new) == Some(manifest.as_path()))
            .context("cargo metadata did not list the crate's package")?;
        Ok(Self {
            dir: dir.to_path_buf(),
            name: package["name"].as_str().unwrap_or_default().to_string(),
            target_dir: PathBuf::from(metadata["target_directory"].as_str().unwrap_or("target")),
        })
    }

    /// `cargo build --release --target wasm32-wasip2` (cargo's progress on stderr),
    /// into `target_dir` or the crate's own; the component's path. Blocks.
    pub fn build(&self, target_dir: Option<&Path>) -> anyhow::Result<PathBuf> {
        let mut command = std::process::Command::new(cargo());
        command
            .args([
                "build",
                "--release",
                "--target",
                "wasm32-wasip2",
                "--manifest-path",
            ])
            .arg(self.dir.join("Cargo.toml"));
        if let Some(dir) = target_dir {
            command.arg("--target-dir").arg(dir);
        }
        let status = command.status().context("could not run cargo")?;
        anyhow::ensure!(status.success(), "the build of {} failed", self.name);
        Ok(target_dir
            .unwrap_or(&self.target_dir)
            .join("wasm32-wasip2/release")
            .join(format!("{}.wasm", self.name.replace('-', "_"))))
    }
}

/// Copies `wasm` beside `plugins_dir` and renames it into it as `<name>.wasm`, so
/// that a watching host never reads half a file; the deployed path.
pub fn deploy(wasm: &Path, name: &str, plugins_dir: &Path) -> anyhow::Result<PathBuf> {
    let partial = plugins_dir.join(format!(".{name}.wasm.partial"));
    let deployed = plugins_dir.join(format!("{name}.wasm"));
    std::fs::copy(wasm, &partial).with_context(|| format!("could not copy {}", wasm.display()))?;
    std::fs::rename(&partial, &deployed)
        .with_context(|| format!("could not rename into {}", deployed.display()))?;
    Ok(deployed)
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}
