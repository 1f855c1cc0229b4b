//! `config`: the plugin's own settings from `host.toml`.

use crate::bindings::techub::platform::config::Host;
use crate::runtime::PluginState;

impl Host for PluginState {
    async fn get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        self.charge_or_trap()?;
        Ok(self.plugin.settings.get(&key).cloned())
    }

    async fn get_all(&mut self) -> wasmtime::Result<Vec<(String, String)>> {
        self.charge_or_trap()?;
        Ok(self
            .plugin
            .settings
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }
}
