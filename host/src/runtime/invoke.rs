//! One message through one fresh instance: store, limits, instantiate, call, clean up.

use super::component::ComponentPre;
use super::engine::Runtime;
use super::output::OutputCounts;
use super::slots::{Slot, Slots};
use super::state::PluginState;
use crate::capability::PluginContext;
use crate::capability::Usage;
use crate::capability::bindings::{Delivery, Loaded, Outcome, Subscription};
use crate::capability::messaging::Answering;
use crate::metrics::{InvocationFigures, InvocationOutcome, PluginMetrics, QuotaKind};
use std::sync::Arc;
use std::time::Duration;
use wasmtime::component::Instance;
use wasmtime::{CallHook, Store, UpdateDeadline};

/// Why an invocation did not return an outcome. Each counts as a retry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvocationError {
    /// The guest ran longer than `limits.cpu_ms`.
    #[error("CPU limit of {0} ms exceeded")]
    CpuLimit(u32),
    /// The message took longer than `limits.timeout_ms`, host calls included.
    #[error("timeout of {0} ms exceeded")]
    Timeout(u32),
    /// The guest's memory could not grow within `limits.memory_mib`.
    #[error("memory limit of {0} MiB exceeded: {1}")]
    MemoryLimit(u32, String),
    /// The guest trapped (panic, unreachable, out of bounds...).
    #[error("plugin trapped: {0}")]
    Trap(String),
}

impl InvocationError {
    /// How the metrics and the log name this ending.
    pub fn outcome(&self) -> InvocationOutcome {
        match self {
            Self::Trap(_) => InvocationOutcome::Trap,
            Self::CpuLimit(_) => InvocationOutcome::CpuLimit,
            Self::Timeout(_) => InvocationOutcome::Timeout,
            Self::MemoryLimit(..) => InvocationOutcome::MemoryLimit,
        }
    }
}

/// How the metrics and the log name the ending of a `handle` call.
pub fn outcome_of(result: &Result<Outcome, InvocationError>) -> InvocationOutcome {
    match result {
        Ok(Outcome::Ok) => InvocationOutcome::Ok,
        Ok(Outcome::Retry(_)) => InvocationOutcome::Retry,
        Ok(Outcome::Reject(_)) => InvocationOutcome::Reject,
        Err(error) => error.outcome(),
    }
}

/// `result` with the plugin's secrets masked in a handler's failure reason (which
/// goes to the log and into a dead letter).
pub fn mask_outcome(plugin: &PluginContext, result: &mut Result<Outcome, InvocationError>) {
    let reason = match result {
        Ok(Outcome::Retry(reason) | Outcome::Reject(reason)) => reason,
        Err(InvocationError::Trap(reason) | InvocationError::MemoryLimit(_, reason)) => reason,
        _ => return,
    };
    if let std::borrow::Cow::Owned(masked) = plugin.mask(reason) {
        *reason = masked;
    }
}

/// What an invocation did, for logs and metrics.
#[derive(Debug, Clone)]
pub struct InvocationReport<T = Outcome> {
    /// The answer (for `handle`, the outcome), or why there was none.
    pub result: Result<T, InvocationError>,
    /// Wall time of the whole invocation.
    pub elapsed: Duration,
    /// Time spent in host calls.
    pub host_time: Duration,
    /// CPU time of the guest's own code (what `limits.cpu_ms` holds it to).
    pub guest_cpu: Duration,
    /// Quotas used.
    pub usage: Usage,
    /// Guest output kept and dropped (past `limits.max_output_bytes`).
    pub output: OutputCounts,
    /// Largest linear memory the instance reached, in bytes.
    pub memory_peak: usize,
}

impl<T> InvocationReport<T> {
    /// Records this invocation, which ended `outcome`, in its plugin's metrics.
    pub fn record(&self, metrics: &PluginMetrics, outcome: InvocationOutcome) {
        let over = &self.usage.over;
        let quotas: Vec<QuotaKind> = [
            (over.host_calls, QuotaKind::HostCalls),
            (over.publishes, QuotaKind::Publishes),
            (over.leases, QuotaKind::Leases),
            (over.http_requests, QuotaKind::HttpRequests),
            (self.output.dropped > 0, QuotaKind::Output),
        ]
        .into_iter()
        .filter_map(|(hit, kind)| hit.then_some(kind))
        .collect();
        metrics.finished(
            &InvocationFigures {
                guest_cpu: self.guest_cpu,
                host_time: self.host_time,
                elapsed: self.elapsed,
                memory_peak: self.memory_peak,
                calls: self.usage.calls(),
                quotas: &quotas,
            },
            outcome,
        );
    }
}

/// An instance that has answered, and its pool slot: both are released when this is
/// dropped, the instance first (the pool has room for it only while the slot is held).
/// Tearing an instance down resets its memory to the component's image, microseconds
/// of work: [`Runtime::invoke_held`] hands it to a caller whose answer someone waits
/// for (the broker, for the ack), to drop once the answer is on its way, or to hand
/// back for the plugin's next message when it allows reuse (`limits.reuse_instance`).
pub struct Teardown {
    // Fields drop in declaration order: the instance, then its slot.
    store: Store<PluginState>,
    /// The instance in `store`; `None` if instantiation failed.
    instance: Option<Instance>,
    /// The call returned: an instance stopped by a trap, a limit or the timeout may
    /// be mid-way through its own code, and is never entered again.
    answered: bool,
    /// Messages it has handled.
    served: u32,
    _slot: Slot,
}

impl Teardown {
    /// Whether it may handle another message of a plugin allowing `reuse_instance`.
    pub fn reusable(&self, reuse_instance: u32) -> bool {
        self.answered && self.instance.is_some() && self.served < reuse_instance
    }
}

impl std::fmt::Debug for Teardown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Teardown")
    }
}

/// Marker error the epoch callback raises, to tell a CPU-limit trap from others.
#[derive(Debug)]
struct CpuLimitExceeded;

impl std::fmt::Display for CpuLimitExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CPU limit exceeded")
    }
}

impl std::error::Error for CpuLimitExceeded {}

impl Runtime {
    fn new_store(&self, context: Arc<PluginContext>) -> Store<PluginState> {
        let cpu_budget = Duration::from_millis(context.limits.cpu_ms.into());
        let mut store = Store::new(&self.engine, PluginState::new(context));
        store.limiter(|state| &mut state.limits);
        // Check every tick: guest CPU excludes host calls, parking and preemption (see
        // `clock`), so a plugin waiting on Redis is not charged. Between checks, yield
        // to the executor so that a busy plugin cannot starve the others.
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |mut ctx| {
            let clock = &mut ctx.data_mut().clock;
            if clock.tick() >= cpu_budget {
                return Err(wasmtime::Error::new(CpuLimitExceeded));
            }
            Ok(UpdateDeadline::YieldCustom(1, clock.epoch_yield()))
        });
        store.call_hook(|mut ctx, hook| {
            let clock = &mut ctx.data_mut().clock;
            match hook {
                CallHook::CallingWasm | CallHook::ReturningFromHost => clock.entering_wasm(),
                CallHook::CallingHost => clock.leaving_wasm(true),
                CallHook::ReturningFromWasm => clock.leaving_wasm(false),
            }
            Ok(())
        });
        store
    }

    /// Runs `delivery` through a fresh instance of the plugin; waiting for a pool slot
    /// behind invocations of a higher `priority` (the queue type's, 1 to 10).
    pub async fn invoke(
        &self,
        pre: &ComponentPre,
        context: Arc<PluginContext>,
        delivery: &Delivery,
        priority: u8,
    ) -> InvocationReport {
        self.invoke_held(pre, context, delivery, priority, None)
            .await
            .0
    }

    /// [`Runtime::invoke`], the instance not yet torn down: its slot stays taken until
    /// the [`Teardown`] is dropped. With `reused`, an instance of the same plugin
    /// context that answered before (see [`Teardown::reusable`]) handles the delivery
    /// instead of a fresh one; one of another context is torn down and not used.
    pub async fn invoke_held(
        &self,
        pre: &ComponentPre,
        context: Arc<PluginContext>,
        delivery: &Delivery,
        priority: u8,
        reused: Option<Teardown>,
    ) -> (InvocationReport, Teardown) {
        self.call_held(
            &self.slots,
            pre,
            context,
            reused,
            priority,
            async |instance, store| {
                store.data_mut().capabilities.answering = Answering::of(delivery);
                pre.handle(store, instance, delivery).await
            },
            // A claim holds only for an invocation that ended `ok`.
            |outcome| matches!(outcome, Outcome::Ok),
        )
        .await
    }

    /// Asks a plugin for its subscriptions, in a fresh instance under its limits; the
    /// `loader` export, if any, is type-checked on the same instance. `None` for a
    /// standard consumer, whose subscription is in `host.toml`.
    pub async fn subscriptions(
        &self,
        pre: &ComponentPre,
        context: Arc<PluginContext>,
    ) -> Result<Option<Vec<Subscription>>, InvocationError> {
        // Loading goes before messages: it is rare, and a plugin waits on it to serve.
        self.call(
            pre,
            context,
            u8::MAX,
            async |instance, store| {
                pre.loader(store, instance)?;
                pre.subscriptions(store, instance).await
            },
            |_| false,
        )
        .await
        .result
    }

    /// Calls the plugin's `loader.load(domain, keys)` in a fresh instance under its
    /// limits, in a slot kept for loaders. `Ok(Err(reason))` is the loader's own
    /// error; a component without the export answers with an error too.
    pub async fn load(
        &self,
        pre: &ComponentPre,
        context: Arc<PluginContext>,
        domain: &str,
        keys: &[String],
    ) -> InvocationReport<Result<Vec<Option<Loaded>>, String>> {
        self.call_held(
            &self.loader_slots,
            pre,
            context,
            None,
            u8::MAX,
            async |instance, store| {
                // A loader reading through a loader could wait for its own slot.
                store.data_mut().capabilities.in_loader = true;
                match pre.loader(store, instance)? {
                    Some(loader) => loader.call_load(store, domain, keys).await,
                    None => Ok(Err("the plugin does not export a loader".to_string())),
                }
            },
            |answer| answer.is_ok(),
        )
        .await
        .0
    }

    /// The one call path: a pool slot, a fresh instance under the plugin's limits, one
    /// export call (`export`), then cleanup: leases released, claims kept only when
    /// `keeps_claims` says the answer succeeded, output to the log.
    pub async fn call<T>(
        &self,
        pre: &ComponentPre,
        context: Arc<PluginContext>,
        priority: u8,
        export: impl AsyncFnOnce(&Instance, &mut Store<PluginState>) -> wasmtime::Result<T>,
        keeps_claims: impl FnOnce(&T) -> bool,
    ) -> InvocationReport<T> {
        self.call_held(
            &self.slots,
            pre,
            context,
            None,
            priority,
            export,
            keeps_claims,
        )
        .await
        .0
    }

    /// [`Runtime::call`] with a slot from `slots` (or the instance `reused`, if it is
    /// of the same context), the instance handed back.
    #[allow(clippy::too_many_arguments)]
    async fn call_held<T>(
        &self,
        slots: &Slots,
        pre: &ComponentPre,
        context: Arc<PluginContext>,
        reused: Option<Teardown>,
        priority: u8,
        export: impl AsyncFnOnce(&Instance, &mut Store<PluginState>) -> wasmtime::Result<T>,
        keeps_claims: impl FnOnce(&T) -> bool,
    ) -> (InvocationReport<T>, Teardown) {
        let limits = context.limits;
        // The context holds the limits the store was built with (memory, CPU budget)
        // and the grants, and every load or reload of a plugin builds its own (so it
        // also names the version, i.e. `pre`): an instance of another one is not
        // used, nor one that did not answer.
        let reused =
            reused.filter(|r| r.answered && Arc::ptr_eq(r.store.data().plugin(), &context));
        let (mut store, mut instance, served, slot) = match reused {
            Some(Teardown {
                mut store,
                instance,
                served,
                _slot,
                ..
            }) => {
                store.data_mut().next_message();
                store.set_epoch_deadline(1);
                (store, instance, served, _slot)
            }
            None => {
                let slot = slots.acquire(priority).await;
                (self.new_store(context), None, 0, slot)
            }
        };
        let call = async {
            let ready = match instance {
                Some(ready) => ready,
                None => *instance.insert(pre.instance_pre().instantiate_async(&mut store).await?),
            };
            export(&ready, &mut store).await
        };
        let timeout = Duration::from_millis(limits.timeout_ms.into());
        let mut result = match tokio::time::timeout(timeout, call).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(error)) => Err(classify(error, limits.cpu_ms)),
            Err(_) => Err(InvocationError::Timeout(limits.timeout_ms)),
        };
        let state = store.data_mut();
        let keep_claims = matches!(&result, Ok(answer) if keeps_claims(answer));
        state.capabilities.settle(keep_claims).await;
        // A Rust guest's panic message reaches only its stderr: put it in the reason,
        // where the operator looks (the dead letter, the logs).
        if let Err(InvocationError::Trap(reason)) = &mut result {
            let stderr = state.output.stderr_tail(STDERR_IN_REASON);
            if !stderr.is_empty() {
                reason.push_str("; stderr: ");
                reason.push_str(&stderr);
            }
        }
        // A trap after a refused growth is the memory limit (a Rust guest aborts on a
        // failed allocation, and the trap alone does not say why).
        if let Err(InvocationError::Trap(reason)) = &mut result
            && state.limits.refused
        {
            result = Err(InvocationError::MemoryLimit(
                limits.memory_mib,
                std::mem::take(reason),
            ));
        }
        let output = state.output.counts();
        state.output.flush_to_log(state.plugin());
        let clock = &state.clock;
        let (elapsed, host_time, guest_cpu) =
            (clock.started.elapsed(), clock.host_time, clock.guest_cpu());
        let (usage, memory_peak) = (state.capabilities.take_usage(), state.limits.peak);
        let report = InvocationReport {
            result,
            elapsed,
            host_time,
            guest_cpu,
            usage,
            output,
            memory_peak,
        };
        let teardown = Teardown {
            answered: report.result.is_ok(),
            store,
            instance,
            served: served + 1,
            _slot: slot,
        };
        (report, teardown)
    }
}

/// Any `Err` from a call is the guest's failure (a memory-limit failure is not even a
/// `Trap`); only the CPU limit is told apart.
fn classify(error: wasmtime::Error, cpu_ms: u32) -> InvocationError {
    if error.downcast_ref::<CpuLimitExceeded>().is_some() {
        return InvocationError::CpuLimit(cpu_ms);
    }
    tracing::debug!(
        error = format!("{error:#}"),
        "guest failure with its wasm backtrace"
    );
    InvocationError::Trap(error.root_cause().to_string())
}

/// Most bytes of a trapped guest's stderr kept in the failure reason.
const STDERR_IN_REASON: usize = 1024;
