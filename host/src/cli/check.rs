//! `techub-host check <plugin.wasm>`: a plugin loaded as the host would load it, on
//! the embedded backends, offline; what it would be refused.

use anyhow::Context;
use std::sync::Arc;
use techub_host::HostConfig;

/// `techub-host check <plugin.wasm>`: loads the plugin as the host would, on the
/// embedded backends, and says what it would be refused.
pub async fn check_plugin(
    plugin: &std::path::Path,
    config: &std::path::Path,
    name: Option<String>,
) -> anyhow::Result<()> {
    let mut config = HostConfig::load(config)?;
    // Offline: nothing to connect to, nothing written to the compiled cache.
    config.backends = Default::default();
    config.host.compile_cache = false;
    let name = match name {
        Some(name) => name,
        None => techub_host::plugins::plugin_name(plugin).with_context(|| {
            format!(
                "{} is not named <name>.wasm with a valid plugin name; pass --name",
                plugin.display()
            )
        })?,
    };
    let config = Arc::new(config);
    let services = Arc::new(techub_host::services::connect(&config).await?);
    let runtime = Arc::new(techub_host::runtime::Runtime::new(&config)?);
    let bytes =
        techub_host::plugins::read_plugin_file(plugin, config.host.max_plugin_bytes).await?;
    let hash = techub_host::runtime::content_hash(&bytes);
    let as_named = plugin.with_file_name(format!("{name}.wasm"));
    match techub_host::plugins::load_bytes(
        &runtime,
        &as_named,
        bytes,
        hash.clone(),
        config.clone(),
        services,
    )
    .await
    {
        Ok(loaded) => {
            println!(
                "{}: ok, plugin {name}, version {}",
                plugin.display(),
                techub_host::runtime::short_version(&hash)
            );
            if loaded.pre.subscribes_in_config() {
                println!(
                    "  a standard consumer (wasmcloud:messaging/handler): host.toml names its queue"
                );
            }
            for s in &loaded.subscriptions {
                println!("  consumes queue type {} via {:?}", s.queue, s.routing_keys);
                if !s.publishes.is_empty() {
                    println!("    and publishes to {:?} (declared, granted)", s.publishes);
                }
            }
            let grants = config.plugins.get(&name).cloned().unwrap_or_default();
            println!("  cache domains granted: {:?}", grants.cache_domains);
            println!("  may publish to: {:?}", grants.publish);
            let loads: Vec<&String> = config
                .cache
                .loaders
                .iter()
                .filter(|(_, plugin)| **plugin == name)
                .map(|(domain, _)| domain)
                .collect();
            match (loaded.pre.has_loader(), loads.is_empty()) {
                (true, false) => println!("  loads cache domains: {loads:?}"),
                (true, true) => println!(
                    "  exports a cache loader; no domain names it (add <domain> = \"{name}\" to [cache.loaders])"
                ),
                (false, false) => {
                    println!(
                        "  refused as the loader of {loads:?}: it exports no loader (#[loader] in the SDK)"
                    );
                    std::process::exit(1);
                }
                (false, true) => {}
            }
            Ok(())
        }
        Err(error) => {
            println!("{}: refused: {error}", plugin.display());
            std::process::exit(1);
        }
    }
}
