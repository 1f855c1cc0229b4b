//! The plugins in other languages: Python (`plugins/python/<name>/app.py`, built by
//! componentize-py from PyPI) and JavaScript (`plugins/js/<name>/app.js`, built by
//! componentize-js from the npm registry through `plugins/js/build.mjs`), each against
//! the `plugin` world of `wit/`, into `target/wasm32-wasip2/release/<name>.wasm` beside
//! the Rust plugins (dashes as underscores). Each toolchain is installed when missing
//! (Debian's `python3-pip`, `nodejs` and `npm` with apt-get; componentize-py with pip;
//! componentize-js with `npm ci`); a component is rebuilt only when its source, the WIT or the
//! toolchain's pin changed, since each build takes 15 to 30 s.

use crate::run;
use crate::services::{apt_install, installed};
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

/// The componentize-py measured with this WIT (see the README).
const COMPONENTIZE_PY: &str = "componentize-py==0.25.1";

/// Builds every Python and JavaScript plugin whose component is older than its inputs.
pub fn build(root: &Path) -> Result<()> {
    let out = root.join("target/wasm32-wasip2/release");
    std::fs::create_dir_all(&out)?;
    let wit = root.join("wit");
    let wit_changed = newest(&wit)?;
    build_python(root, &out, &wit, wit_changed)?;
    build_js(root, &out, &wit, wit_changed)
}

fn build_python(root: &Path, out: &Path, wit: &Path, wit_changed: SystemTime) -> Result<()> {
    let plugins = sources(&root.join("plugins/python"), "app.py")?;
    let stale: Vec<_> = plugins
        .iter()
        .filter(|(name, app)| is_stale(&component(out, name), &[app], wit_changed))
        .collect();
    if stale.is_empty() {
        return Ok(());
    }
    ensure_componentize_py()?;
    for (name, app) in stale {
        eprintln!("xtask: building the Python plugin {name} (componentize-py, ~15 s)");
        let dir = app.parent().context("app.py has a directory")?;
        run(Command::new("componentize-py")
            .arg("-d")
            .arg(wit)
            .args(["-w", "plugin", "componentize", "app", "-p"])
            .arg(dir)
            .arg("-o")
            .arg(component(out, name)))?;
    }
    Ok(())
}

fn build_js(root: &Path, out: &Path, wit: &Path, wit_changed: SystemTime) -> Result<()> {
    let js = root.join("plugins/js");
    let plugins = sources(&js, "app.js")?;
    let lock = js.join("package-lock.json");
    let script = js.join("build.mjs");
    if plugins
        .iter()
        .all(|(name, app)| !is_stale(&component(out, name), &[app, &lock, &script], wit_changed))
    {
        return Ok(());
    }
    for (tool, package) in [("node", "nodejs"), ("npm", "npm")] {
        if !installed(tool) {
            apt_install(package).with_context(|| {
                format!(
                    "building the JavaScript plugins needs {tool} (Node.js 20 or later with npm)"
                )
            })?;
        }
    }
    if !js
        .join("node_modules/@bytecodealliance/componentize-js")
        .exists()
        || is_stale(
            &js.join("node_modules/.package-lock.json"),
            &[&lock],
            SystemTime::UNIX_EPOCH,
        )
    {
        eprintln!("xtask: installing componentize-js (npm ci in plugins/js)");
        run(Command::new("npm")
            .current_dir(&js)
            .args(["ci", "--no-audit", "--no-fund"]))?;
    }
    eprintln!("xtask: building the JavaScript plugins (componentize-js, ~30 s each)");
    run(Command::new("node")
        .current_dir(&js)
        .arg("build.mjs")
        .arg(wit)
        .arg(out))
}

/// componentize-py on the PATH, installed with pip when missing or not the pinned one.
fn ensure_componentize_py() -> Result<()> {
    let pinned = COMPONENTIZE_PY.trim_start_matches("componentize-py==");
    let version = Command::new("componentize-py").arg("--version").output();
    if version.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(pinned)) {
        return Ok(());
    }
    eprintln!("xtask: installing {COMPONENTIZE_PY} with pip");
    if !installed("pip3") && !installed("pip") {
        apt_install("python3-pip")?;
    }
    let pip = if installed("pip3") { "pip3" } else { "pip" };
    run(Command::new(pip).args(["install", "--quiet", COMPONENTIZE_PY])).context(
        "building the Python plugins needs Python 3.10+ with pip (`apt-get install python3-pip`)",
    )
}

/// `(name, source)` of each plugin directory under `dir` that has `file`.
fn sources(dir: &Path, file: &str) -> Result<Vec<(String, PathBuf)>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path().join(file);
        if path.is_file() {
            let name = path
                .parent()
                .and_then(Path::file_name)
                .context("a plugin directory has a name")?
                .to_string_lossy()
                .into_owned();
            found.push((name, path));
        }
    }
    found.sort();
    Ok(found)
}

/// Where the component of plugin `name` goes.
fn component(out: &Path, name: &str) -> PathBuf {
    out.join(format!("{}.wasm", name.replace('-', "_")))
}

/// Whether `output` is missing or older than one of `inputs` or than `wit_changed`.
fn is_stale(output: &Path, inputs: &[&PathBuf], wit_changed: SystemTime) -> bool {
    let Ok(built) = std::fs::metadata(output).and_then(|m| m.modified()) else {
        return true;
    };
    built < wit_changed
        || inputs.iter().any(|input| {
            std::fs::metadata(input)
                .and_then(|m| m.modified())
                .is_ok_and(|changed| changed > built)
        })
}

/// The latest modification time of the files under `dir`.
fn newest(dir: &Path) -> Result<SystemTime> {
    let mut latest = SystemTime::UNIX_EPOCH;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let time = if entry.file_type()?.is_dir() {
            newest(&entry.path())?
        } else {
            entry.metadata()?.modified()?
        };
        latest = latest.max(time);
    }
    Ok(latest)
}
