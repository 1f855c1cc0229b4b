//! `techub-host new <name>`: a plugin crate that builds as it is, anywhere.
//!
//! It is a workspace of its own (so it builds inside another workspace's tree too),
//! pins `wasm32-wasip2` in `.cargo/config.toml` (a bare `cargo build` makes the
//! component), depends on the SDK by path (this host's source tree, or `--sdk`), and
//! carries a handler, a native unit test of its logic, and the `host.toml` lines that
//! grant what the handler uses.

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
        (".cargo/config.toml", CARGO_CONFIG.to_string()),
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

/// Every `cargo build` makes the component; tests run natively (see the README).
const CARGO_CONFIG: &str = r#"[build]
target = "wasm32-wasip2"
"#;

fn lib_rs(queue: &str, routing_key: &str) -> String {
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
        log::info(greeting(&event.id));
        Ok(())
    }})?;
    Ok(())
}}

/// The plugin's own logic, kept apart from the SDK calls so a native test reaches it.
fn greeting(id: &str) -> String {{
    format!("handled {{id}}")
}}

#[test]
fn greets_by_id() {{
    assert_eq!(greeting("42"), "handled 42");
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
cargo test --target "$(rustc -vV | sed -n 's/^host: //p')"   # the unit tests, natively
techub-host check target/wasm32-wasip2/release/{crate_name}.wasm --name {name} --config host.toml
# deploy: copy beside the plugins directory, then rename into it (atomic)
cp target/wasm32-wasip2/release/{crate_name}.wasm /path/to/plugins/.{name}.wasm.partial
mv /path/to/plugins/.{name}.wasm.partial /path/to/plugins/{name}.wasm
```

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
