//! The capabilities plugins import: `cache`, `store`, `lock`, `messaging`, outbound
//! `http`, plus `log` and `config`; and the standard `wasi:keyvalue` over `store`.
//!
//! Each capability has a directory whose `mod.rs` owns its wiring: the backend trait,
//! `connect` (the backend `host.toml` selects), the per-plugin grant its view holds
//! (its grants, limits, namespace and backend: nothing of another capability, nor the
//! whole configuration), `view` (its view of an instance's [`InstanceState`]) and
//! `link`; `host.rs` has the WIT `Host` impl on the view (validation, namespacing,
//! quotas), and one file per backend. `context.rs` is one plugin's grants together;
//! `instance.rs` what the capabilities keep in one instance; `redis_client/` is the
//! Redis connection they share; `bindings.rs` is the one `bindgen!` of the world,
//! whose imports these implement (and whose error and resource types name theirs
//! back). The services connected and the grants built from them are `services/`.

pub mod bindings;
pub mod cache;
pub mod config;
mod context;
pub mod http;
mod instance;
pub mod keyvalue;
pub mod lock;
pub mod log;
pub mod messaging;
pub mod redis_client;
pub mod store;

pub use context::{PluginContext, Secrets};
pub use instance::{HoldsInstanceState, InstanceState};

/// What one invocation used of its quotas, checked against the plugin's limits.
/// (No `Default`: a usage without its plugin's limit would refuse every call.)
#[derive(Debug, Clone)]
pub struct Usage {
    /// `limits.max_host_calls` of the plugin: every import is charged against it.
    max_host_calls: u32,
    /// Host calls made (every import counts).
    pub host_calls: u32,
    /// Messages published.
    pub publishes: u32,
    /// Leases currently held.
    pub leases: u32,
    /// The quotas the invocation ran into.
    pub over: QuotasHit,
    /// Host calls per (interface, function), for the metrics; a handful of entries.
    calls: Vec<(&'static str, &'static str, u32)>,
}

/// Which per-message quotas an invocation ran into (each counted once in metrics).
#[derive(Debug, Default, Clone, Copy)]
pub struct QuotasHit {
    /// `limits.max_host_calls`.
    pub host_calls: bool,
    /// `limits.max_publishes`.
    pub publishes: bool,
    /// `limits.max_leases`.
    pub leases: bool,
    /// `limits.max_http_requests`.
    pub http_requests: bool,
}

impl Usage {
    /// Nothing used yet, of at most `max_host_calls` host calls.
    pub fn within(max_host_calls: u32) -> Self {
        Self {
            max_host_calls,
            host_calls: 0,
            publishes: 0,
            leases: 0,
            over: QuotasHit::default(),
            calls: Vec::new(),
        }
    }

    /// Counts one host call to `interface.function`; `Err` with the reason once over
    /// the quota.
    pub(crate) fn charge(
        &mut self,
        interface: &'static str,
        function: &'static str,
    ) -> Result<(), String> {
        self.host_calls += 1;
        // A linear search: an invocation calls a few distinct functions.
        match self
            .calls
            .iter_mut()
            .find(|(i, f, _)| std::ptr::eq(*i, interface) && *f == function)
        {
            Some((_, _, count)) => *count += 1,
            None => self.calls.push((interface, function, 1)),
        }
        let max = self.max_host_calls;
        if self.host_calls > max {
            self.over.host_calls = true;
            return Err(format!("more than {max} host calls for one message"));
        }
        Ok(())
    }

    /// Counts one host call of an import that has no error to return: past the quota
    /// the instance traps (a runaway plugin, stopped like one over its CPU).
    pub(crate) fn charge_or_trap(
        &mut self,
        interface: &'static str,
        function: &'static str,
    ) -> wasmtime::Result<()> {
        self.charge(interface, function)
            .map_err(wasmtime::Error::msg)
    }

    /// Host calls made, per (interface, function).
    pub fn calls(&self) -> &[(&'static str, &'static str, u32)] {
        &self.calls
    }
}

/// The error of a capability's host function: the interface's WIT error, which the
/// guest receives, or a trap (a broken host invariant). `?` converts both, and a
/// [`BackendError`] through the interface's mapping (wasmtime-wasi's pattern).
pub type Failure<E> = wasmtime_wasi::TrappableError<E>;

/// A failure of a backend, before it is mapped onto an interface's WIT error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    /// The service is unreachable, failed, or did not answer in time.
    #[error("backend unavailable: {0}")]
    Unavailable(String),
    /// The key holds another data type, or the value is not an integer.
    #[error("wrong type")]
    WrongType,
    /// An increment would overflow.
    #[error("overflow")]
    Overflow,
    /// An argument the backend refused (e.g. a malformed pattern).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

/// What a guest is told when a backend of `capability` fails: what failed and that a
/// retry may help, never the detail. The detail (which may name a server, or carry a
/// URL) goes to the host's log, with any password already redacted by the client.
pub(crate) fn unavailable_for_guest(capability: &'static str, detail: &str) -> String {
    tracing::warn!(capability, %detail, "backend unavailable");
    format!("{capability} backend unavailable (failed or did not answer in time); retry later")
}

/// Shorthand for backend results.
pub type BackendResult<T> = Result<T, BackendError>;

/// Cuts `text` to at most `max` bytes at a character boundary; how many bytes it cut.
/// For strings a plugin chooses the length of, on their way into logs and headers.
pub(crate) fn truncate(text: &mut String, max: usize) -> usize {
    if text.len() <= max {
        return 0;
    }
    let cut = (0..=max)
        .rev()
        .find(|i| text.is_char_boundary(*i))
        .unwrap_or(0);
    let removed = text.len() - cut;
    text.truncate(cut);
    removed
}
