//! `wasi:logging/logging@0.1.0-draft` (wasmCloud's) onto the same [`LogView`] as
//! `techub:platform/log`: the same records, rate limit, masking and metrics.

use super::LogView;
use crate::capability::bindings::techub::platform::log::{Host as Log, Level};

wasmtime::component::bindgen!({
    path: "../wit/standard/logging-0.1.0-draft",
    world: "wasi:logging/imports",
    imports: { default: async | trappable },
});

use wasi::logging::logging;

/// Links the interface.
pub(super) fn link<T: Send + 'static>(
    linker: &mut wasmtime::component::Linker<T>,
    view: fn(&mut T) -> LogView<'_>,
) -> wasmtime::Result<()> {
    logging::add_to_linker::<T, super::HasLog>(linker, view)
}

impl logging::Host for LogView<'_> {
    async fn log(
        &mut self,
        level: logging::Level,
        context: String,
        message: String,
    ) -> wasmtime::Result<()> {
        let level = match level {
            logging::Level::Trace => Level::Trace,
            logging::Level::Debug => Level::Debug,
            logging::Level::Info => Level::Info,
            logging::Level::Warn => Level::Warn,
            // techub has no level above error.
            logging::Level::Error | logging::Level::Critical => Level::Error,
        };
        let fields = if context.is_empty() {
            Vec::new()
        } else {
            vec![("context".to_string(), context)]
        };
        Log::write(self, level, message, fields).await
    }
}
