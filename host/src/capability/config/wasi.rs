//! `wasi:config/store` at both versions in use, `0.2.0-rc.1` (wasmtime) and
//! `0.2.0-draft-2024-09-27` (Spin), onto the same [`ConfigView`] as
//! `techub:platform/config`: the same settings and secrets, the same quota.

use super::ConfigView;
use crate::capability::bindings::techub::platform::config::Host as Config;

mod rc1 {
    wasmtime::component::bindgen!({
        path: "../wit/standard/config-0.2.0-rc.1",
        world: "wasi:config/imports",
        imports: { default: async | trappable },
    });
}

mod draft {
    wasmtime::component::bindgen!({
        path: "../wit/standard/config-0.2.0-draft-2024-09-27",
        world: "wasi:config/imports",
        imports: { default: async | trappable },
    });
}

/// Links both versions.
pub(super) fn link<T: Send + 'static>(
    linker: &mut wasmtime::component::Linker<T>,
    view: fn(&mut T) -> ConfigView<'_>,
) -> wasmtime::Result<()> {
    rc1::wasi::config::store::add_to_linker::<T, super::HasConfig>(linker, view)?;
    draft::wasi::config::store::add_to_linker::<T, super::HasConfig>(linker, view)
}

// Reads do not fail (the values are in memory), so neither version's `error` is
// ever returned; past the host-call quota the instance traps, as with `config`.

impl rc1::wasi::config::store::Host for ConfigView<'_> {
    async fn get(
        &mut self,
        key: String,
    ) -> wasmtime::Result<Result<Option<String>, rc1::wasi::config::store::Error>> {
        Ok(Ok(Config::get(self, key).await?))
    }

    async fn get_all(
        &mut self,
    ) -> wasmtime::Result<Result<Vec<(String, String)>, rc1::wasi::config::store::Error>> {
        Ok(Ok(Config::get_all(self).await?))
    }
}

impl draft::wasi::config::store::Host for ConfigView<'_> {
    async fn get(
        &mut self,
        key: String,
    ) -> wasmtime::Result<Result<Option<String>, draft::wasi::config::store::Error>> {
        Ok(Ok(Config::get(self, key).await?))
    }

    async fn get_all(
        &mut self,
    ) -> wasmtime::Result<Result<Vec<(String, String)>, draft::wasi::config::store::Error>> {
        Ok(Ok(Config::get_all(self).await?))
    }
}
