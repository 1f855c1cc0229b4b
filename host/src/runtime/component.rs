//! A linked component and the exports it has: the `handler` every plugin exports, and
//! the `loader` only some do. Looked up once at load, per component, so that one host
//! links both worlds and no caller switches on which it got.

use super::state::PluginState;
use crate::capability::bindings::exports::techub::platform::{handler, loader};
use wasmtime::Store;
use wasmtime::component::{Instance, InstancePre};

/// A component ready to instantiate, once per call.
#[derive(Clone)]
pub struct ComponentPre {
    instance_pre: InstancePre<PluginState>,
    handler: handler::GuestIndices,
    loader: Option<loader::GuestIndices>,
}

impl ComponentPre {
    /// The exports of a linked component; `Err` with wasmtime's reason when it lacks
    /// the `handler` export.
    pub(crate) fn new(instance_pre: InstancePre<PluginState>) -> wasmtime::Result<Self> {
        let handler = handler::GuestIndices::new(&instance_pre)?;
        let loader = loader::GuestIndices::new(&instance_pre).ok();
        Ok(Self {
            instance_pre,
            handler,
            loader,
        })
    }

    /// Whether the component exports `loader`.
    pub fn has_loader(&self) -> bool {
        self.loader.is_some()
    }

    pub(crate) fn instance_pre(&self) -> &InstancePre<PluginState> {
        &self.instance_pre
    }

    /// The `handler` export of an instance of this component (type-checked here).
    pub(crate) fn handler(
        &self,
        store: &mut Store<PluginState>,
        instance: &Instance,
    ) -> wasmtime::Result<handler::Guest> {
        self.handler.load(store, instance)
    }

    /// The `loader` export of an instance of this component, if it has one.
    pub(crate) fn loader(
        &self,
        store: &mut Store<PluginState>,
        instance: &Instance,
    ) -> wasmtime::Result<Option<loader::Guest>> {
        self.loader
            .as_ref()
            .map(|indices| indices.load(store, instance))
            .transpose()
    }
}
