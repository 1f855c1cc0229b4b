//! `config`: the plugin's own settings (and secrets) from `host.toml`, through
//! `techub:platform/config` and the standard `wasi:config/store` (`wasi.rs`).

mod wasi;

use crate::capability::Usage;
use crate::capability::bindings::techub::platform::config::Host;
use crate::capability::context::Secrets;
use std::collections::BTreeMap;
use std::sync::Arc;
use wasmtime::component::HasData;

/// What one plugin's `config` view serves: its settings and secrets from the
/// configuration its version was built with.
pub struct ConfigGrant {
    /// Its settings.
    settings: BTreeMap<String, String>,
    /// Its secrets (served beside the settings; never printed).
    secrets: Arc<Secrets>,
}

impl ConfigGrant {
    /// The grant of a plugin with `settings` and `secrets`.
    pub fn new(settings: BTreeMap<String, String>, secrets: Arc<Secrets>) -> Self {
        Self { settings, secrets }
    }
}

/// What the `config` interface reaches of an instance: the plugin's settings and
/// secrets, and this invocation's quotas.
pub struct ConfigView<'a> {
    plugin: &'a ConfigGrant,
    usage: &'a mut Usage,
}

impl<'a> ConfigView<'a> {
    /// The view of one instance.
    pub fn new(plugin: &'a ConfigGrant, usage: &'a mut Usage) -> Self {
        Self { plugin, usage }
    }
}

/// The view of an instance's `state` this capability's host functions run on.
pub(crate) fn view(state: &mut crate::capability::InstanceState) -> ConfigView<'_> {
    ConfigView::new(&state.plugin.settings, &mut state.usage)
}

/// Links `config`, and both versions of `wasi:config/store`, with [`ConfigView`], the
/// [`view`] of an instance's state.
pub fn link<T: crate::capability::HoldsInstanceState>(
    linker: &mut wasmtime::component::Linker<T>,
) -> wasmtime::Result<()> {
    let of_instance: fn(&mut T) -> ConfigView<'_> = |data| view(data.instance_state());
    crate::capability::bindings::techub::platform::config::add_to_linker::<T, HasConfig>(
        linker,
        of_instance,
    )?;
    wasi::link(linker, of_instance)
}

/// Links `config` with [`ConfigView`].
pub struct HasConfig;

impl HasData for HasConfig {
    type Data<'a> = ConfigView<'a>;
}

impl Host for ConfigView<'_> {
    async fn get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        self.usage.charge_or_trap("config", "get")?;
        let plugin = self.plugin;
        Ok(plugin
            .settings
            .get(&key)
            .cloned()
            .or_else(|| plugin.secrets.get(&key).map(|s| s.expose().to_string())))
    }

    async fn get_all(&mut self) -> wasmtime::Result<Vec<(String, String)>> {
        self.usage.charge_or_trap("config", "get_all")?;
        Ok(self
            .plugin
            .settings
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .chain(
                self.plugin
                    .secrets
                    .iter()
                    .map(|(k, v)| (k.clone(), v.expose().to_string())),
            )
            .collect())
    }
}
