//! The engine, the linker, the epoch ticker and component compilation.

use super::component::ComponentPre;
use super::state::PluginState;
use crate::config::HostConfig;
use anyhow::Context;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use wasmtime::component::Linker;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// How often the epoch advances: the grain of CPU limits and of yielding.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Compiles and instantiates plugins.
pub struct Runtime {
    pub(crate) engine: Engine,
    pub(super) linker: Linker<PluginState>,
    ticker_stop: Arc<AtomicBool>,
    /// The pool's slots: an invocation waits for one, by priority, instead of failing
    /// when the plugins' prefetch windows together exceed `host.max_instances`.
    pub(crate) slots: super::Slots,
    /// Slots kept for cache loaders (`host.loader_instances`), apart from the
    /// handlers': a handler holding the last slot while it reads through a loader
    /// would otherwise wait for itself.
    pub(crate) loader_slots: super::Slots,
    /// Compiled components on disk.
    pub cache: super::CompiledCache,
    /// The memory of each pool slot in MiB (the largest memory limit at start); `None`
    /// without the pooling allocator.
    slot_memory_mib: Option<u32>,
}

/// Why a `.wasm` file could not become a plugin.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("could not read {path}: {message}")]
    Read {
        /// The file.
        path: String,
        /// The OS error.
        message: String,
    },
    /// The bytes are not a valid WebAssembly component (e.g. a core module, or garbage).
    #[error("{path} is not a valid WebAssembly component: {message}")]
    Invalid {
        /// The file.
        path: String,
        /// wasmtime's reason.
        message: String,
    },
    /// The component does not fit the `techub:platform/plugin` world.
    #[error("{path} does not implement the techub:platform/plugin world: {message}")]
    WrongWorld {
        /// The file.
        path: String,
        /// The missing or mistyped import/export.
        message: String,
    },
}

impl Runtime {
    /// Whether instances come from wasmtime's pooling allocator (`host.pooling`), as
    /// the engine reports it.
    pub fn uses_pooling(&self) -> bool {
        self.engine.pooling_allocator_metrics().is_some()
    }

    /// The memory of each pool slot in MiB, fixed at start; `None` without a pool.
    pub fn slot_memory_mib(&self) -> Option<u32> {
        self.slot_memory_mib
    }

    /// An engine sized for `config` (pool slots, memory per slot).
    pub fn new(config: &HostConfig) -> anyhow::Result<Self> {
        let max_memory = config.max_memory_mib() as usize * 1024 * 1024;
        let instances = config.host.max_instances + config.host.loader_instances;
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(instances)
            // A Rust wasip2 component holds its module plus a few adapter shims.
            .total_core_instances(instances * 8)
            .total_memories(instances * 2)
            .total_tables(instances * 4)
            .total_stacks(instances)
            .max_memory_size(max_memory)
            .max_core_instances_per_component(16)
            .max_memories_per_component(4)
            .max_tables_per_component(8)
            .max_component_instance_size(1 << 20)
            .max_core_instance_size(1 << 20)
            // Reusing a slot resets only the pages the last instance touched (found with
            // Linux's PAGEMAP_SCAN, 6.7+; older kernels fall back to madvise) and keeps
            // up to this much resident, instead of decommitting and faulting it all in
            // again: the reset was most of the host's CPU per message.
            .pagemap_scan(wasmtime::Enabled::Auto)
            .linear_memory_keep_resident(config.host.keep_resident_mib as usize * 1024 * 1024)
            .table_keep_resident(config.host.keep_resident_mib.min(1) as usize * 1024 * 1024);

        let mut wasm = Config::new();
        wasm.epoch_interruption(true)
            .wasm_component_model(true)
            .concurrency_support(false)
            .allocation_strategy(if config.host.pooling {
                InstanceAllocationStrategy::Pooling(pool)
            } else {
                InstanceAllocationStrategy::OnDemand
            });
        let engine = Engine::new(&wasm)
            .map_err(|e| anyhow::anyhow!("could not create the wasmtime engine: {e:#}"))?;

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(|e| anyhow::anyhow!("could not link WASI: {e:#}"))?;
        link_capabilities(&mut linker)
            .map_err(|e| anyhow::anyhow!("could not link the techub imports: {e:#}"))?;

        let ticker_stop = Arc::new(AtomicBool::new(false));
        let (weak, stop) = (engine.weak(), ticker_stop.clone());
        std::thread::Builder::new()
            .name("techub-epoch".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    match weak.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => break,
                    }
                }
            })
            .context("could not start the epoch ticker")?;

        let slots = super::Slots::new(config.host.max_instances as usize);
        let loader_slots = super::Slots::new(config.host.loader_instances as usize);
        let cache_dir = config
            .host
            .compile_cache
            .then(|| config.host.cache_dir.clone());
        let cache = super::CompiledCache::new(&engine, cache_dir);
        Ok(Self {
            engine,
            linker,
            ticker_stop,
            slots,
            loader_slots,
            cache,
            slot_memory_mib: config.host.pooling.then(|| config.max_memory_mib()),
        })
    }

    /// The handlers' pool slots: how many in all, and how many are free now.
    pub fn pool_slots(&self) -> (usize, usize) {
        self.slots.counts()
    }

    /// Compiles `bytes` (whose SHA-256 is `hash`), or loads it from the compiled cache,
    /// on a blocking thread (compilation takes tens of ms and must not stall the async
    /// runtime), and links it against the world.
    pub async fn prepare(
        self: &Arc<Self>,
        path: &Path,
        bytes: Vec<u8>,
        hash: &str,
    ) -> Result<ComponentPre, LoadError> {
        let shown = path.display().to_string();
        if !bytes.starts_with(b"\0asm") {
            return Err(LoadError::Invalid {
                path: shown,
                message: "no WebAssembly magic number".into(),
            });
        }
        let (runtime, hash) = (self.clone(), hash.to_string());
        let component = tokio::task::spawn_blocking(move || {
            runtime
                .cache
                .load_or_compile(&runtime.engine, &hash, &bytes)
        })
        .await
        .map_err(|e| LoadError::Invalid {
            path: shown.clone(),
            message: format!("compilation task failed: {e}"),
        })?
        .map_err(|e| LoadError::Invalid {
            path: shown.clone(),
            message: format!("{e:#}"),
        })?;
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| LoadError::WrongWorld {
                path: shown.clone(),
                message: format!("{e:#}"),
            })?;
        ComponentPre::new(pre).map_err(|e| LoadError::WrongWorld {
            path: shown,
            message: format!("{e:#}"),
        })
    }
}

/// Links each capability's interface with its view of the instance's state: one line
/// per capability (a new one adds its `link` here).
fn link_capabilities(linker: &mut Linker<PluginState>) -> wasmtime::Result<()> {
    use crate::capability::{cache, config, http, keyvalue, lock, log, messaging, store};
    cache::link(linker)?;
    store::link(linker)?;
    keyvalue::link(linker)?;
    lock::link(linker)?;
    messaging::link(linker)?;
    config::link(linker)?;
    log::link(linker)?;
    http::link(linker)?;
    Ok(())
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}
