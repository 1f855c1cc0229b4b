//! `techub-host new <name>`: a plugin crate that builds as it is, anywhere.
//!
//! It is a workspace of its own (so it builds inside another workspace's tree too),
//! pins `wasm32-wasip2` in `.cargo/config.toml` (a bare `cargo build` makes the
//! component) and names this binary as the target's runner (a bare `cargo test` runs
//! the tests in a techub host: `cli/test_runner.rs`), depends on the SDK by path (this
//! host's source tree, or `--sdk`), and carries a handler, a test of its logic and one
//! of the handler through the SDK, and the `host.toml` lines that grant what the
//! handler uses.

use anyhow::{Context, bail};
use std::path::{Path, PathBuf};

/// What `new` was asked for.
pub struct NewPlugin {
    /// The plugin name (the `.wasm` file stem and its `[plugins.<name>]`).
    pub name: String,
    /// The queue type it consumes.
    pub queue: String,
    /// The routing key it binds.
    pub routing_key: String,
    /// Where to create the crate directory.
    pub dir: PathBuf,
    /// The SDK (`guest-sdk/`); default: the one of this host's source tree.
    pub sdk: Option<PathBuf>,
}

/// The SDK beside the host crate this binary was built from.
fn default_sdk() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or(Path::new("."))
        .join("guest-sdk")
}

/// Creates the crate; the directory it made.
pub fn create(request: &NewPlugin) -> anyhow::Result<PathBuf> {
    let NewPlugin {
        name,
        queue,
        routing_key,
        ..
    } = request;
    if !techub_host::config::validate_name(name) {
        bail!("{name:?} is not a plugin name: use a-z, 0-9, - and _");
    }
    if !techub_host::HostConfig::default()
        .queues
        .contains_key(queue)
    {
        bail!(
            "{queue:?} is not one of the specification's queue types (email, sms, notification, order, payment, inventory, export, import, analytics, webhook); declare others in [queues.<type>]"
        );
    }
    techub_host::names::routing::validate_pattern(routing_key)
        .map_err(|e| anyhow::anyhow!("--routing-key {e}"))?;
    let sdk = request.sdk.clone().unwrap_or_else(default_sdk);
    let sdk = sdk.canonicalize().with_context(|| {
        format!(
            "the SDK is not at {}; pass --sdk <path to guest-sdk>",
            sdk.display()
        )
    })?;
    let root = request.dir.join(name);
    if root.exists() {
        bail!("{} exists already", root.display());
    }
    let files = [
        ("Cargo.toml", cargo_toml(name, &sdk)),
        (".cargo/config.toml", cargo_config(&runner_program())),
        (".gitignore", "/target\n".to_string()),
        ("src/lib.rs", lib_rs(queue, routing_key)),
        ("README.md", readme(name, routing_key)),
        ("host.toml", host_toml(name, routing_key)),
    ];
    for (file, text) in files {
        let path = root.join(file);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("could not create {}", parent.display()))?;
        }
        std::fs::write(&path, text)
            .with_context(|| format!("could not write {}", path.display()))?;
    }
    Ok(root)
}

fn cargo_toml(name: &str, sdk: &Path) -> String {
    let crate_name = name.replace('-', "_");
    format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
publish = false

# A workspace of its own: it builds wherever it sits.
[workspace]

[lib]
name = "{crate_name}"
crate-type = ["cdylib"]

[dependencies]
# The techub guest SDK, by path (or: {{ git = "<the techub repository>" }}).
techub-guest = {{ path = {sdk:?} }}
serde = {{ version = "1", features = ["derive"] }}
serde_json = "1"

[profile.release]
opt-level = "s"
lto = true
codegen-units = 1
strip = true
"#,
        sdk = sdk.display().to_string()
    )
}

/// Every `cargo build` makes the component, and every `cargo test` runs in a host.
fn cargo_config(runner: &str) -> String {
    format!(
        r#"[build]
target = "wasm32-wasip2"

# `cargo test` builds the tests as a WebAssembly command and runs it in a techub host,
# as this plugin (the grants of host.toml) on the embedded backends: SDK calls work.
[target.wasm32-wasip2]
runner = [{runner:?}, "test-runner"]
"#
    )
}

/// The program cargo runs tests with: this binary, by name when `PATH` finds it there
/// (so the crate works on another machine with techub-host installed), else by path
/// (e.g. `target/debug/techub-host` of a source tree).
fn runner_program() -> String {
    let Ok(me) = std::env::current_exe().and_then(|exe| exe.canonicalize()) else {
        return "techub-host".into();
    };
    let found_on_path = std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path)
            .any(|dir| dir.join("techub-host").canonicalize().ok().as_ref() == Some(&me))
    });
    match found_on_path {
        true => "techub-host".into(),
        false => me.display().to_string(),
    }
}

fn lib_rs(queue: &str, routing_key: &str) -> String {
    // A routing key the handler's binding takes, for its test: the pattern's
    // wildcards filled in.
    let example_key = routing_key.replace(['*', '#'], "example");
    format!(
        r#"//! A techub plugin: consumes `{routing_key}` on the `{queue}` queue type.
use techub_guest::prelude::*;

#[derive(serde::Deserialize)]
struct Event {{
    id: String,
}}

#[handler(queue = "{queue}", routing_keys = ["{routing_key}"])]
fn handle(message: Message) -> Result<(), Failure> {{
    let event: Event = message.json()?; // malformed JSON: rejected, not retried
    // Deliveries are at-least-once: a side effect that must happen once per message
    // goes inside `store::once`, which skips it on a redelivery after it succeeded
    // (and lets a retry run it again if it failed).
    store::once(message.id(), 86_400_000, || -> Result<(), Failure> {{
        store::incr(format!("handled:{{}}", event.id))?;
        log::info(greeting(&event.id));
        Ok(())
    }})?;
    Ok(())
}}

/// The plugin's own logic, kept apart from the SDK calls.
fn greeting(id: &str) -> String {{
    format!("handled {{id}}")
}}

#[cfg(test)]
mod tests {{
    use super::*;

    #[test]
    fn greets_by_id() {{
        assert_eq!(greeting("42"), "handled 42");
    }}

    // `cargo test` runs the tests in a techub host (`.cargo/config.toml`'s runner), as
    // this plugin with the grants of host.toml, on a store and cache of the run's own
    // (shared by the run's tests: give each its own keys).
    #[test]
    #[cfg_attr(not(target_family = "wasm"), ignore = "calls the host: run by plain `cargo test`")]
    fn a_redelivered_message_is_handled_once() {{
        let message = Message::builder("{example_key}")
            .id("redelivered-1")
            .json(&serde_json::json!({{"id": "7"}}))
            .build();
        handle(message.clone()).unwrap();
        handle(message).unwrap(); // the broker delivered it again
        assert_eq!(store::get("handled:7").unwrap(), Some(b"1".to_vec()));
    }}
}}
"#
    )
}

/// The grants, for `techub-host dev` in the crate (and to copy into the host's own).
fn host_toml(name: &str, routing_key: &str) -> String {
    format!(
        r#"# What `techub-host dev` runs this plugin with (embedded backends); copy the
# [plugins.{name}] section into the host.toml of the host that will run it.
[plugins.{name}]
subscribe = ["{routing_key}"]
# cache_domains = ["products"]   # the domains it may use
# publish = ["notification.*"]   # the routing keys it may publish to
"#
    )
}

fn readme(name: &str, routing_key: &str) -> String {
    let crate_name = name.replace('-', "_");
    format!(
        r#"# {name}

A techub plugin.

```sh
techub-host dev                              # build, run on a host, rebuild + reload on every edit
cargo build --release                        # target/wasm32-wasip2/release/{crate_name}.wasm
cargo test                                   # the tests, in a techub host (SDK calls work)
techub-host check target/wasm32-wasip2/release/{crate_name}.wasm --name {name} --config host.toml
# deploy: copy beside the plugins directory, then rename into it (atomic)
cp target/wasm32-wasip2/release/{crate_name}.wasm /path/to/plugins/.{name}.wasm.partial
mv /path/to/plugins/.{name}.wasm.partial /path/to/plugins/{name}.wasm
```

`cargo test` builds the tests for wasm32-wasip2 and runs them with `techub-host
test-runner` (the runner `.cargo/config.toml` names): in the real runtime, as this
plugin with the grants of this `host.toml`, on embedded backends of the run's own, so a
test may call the handler and any SDK function. On wasm32 a panic aborts: the first
failing test ends the run (`cargo test <name>` runs one). The plugin's log records show
with `RUST_LOG=info cargo test`. To test the built `.wasm` from native Rust instead
(deliver messages, assert on what it published), use the techub repository's
`techub-testkit` crate in a native test crate (`cargo test --target <host triple>`).

Grant it in the host's `host.toml` (`techub-host dev` reads the crate's own `host.toml`,
which has these lines):

```toml
[plugins.{name}]
subscribe = ["{routing_key}"]
# cache_domains = ["products"]   # the domains it may use
# publish = ["notification.*"]   # the routing keys it may publish to
```
"#
    )
}
