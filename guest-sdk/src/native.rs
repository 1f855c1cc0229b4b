//! An SDK call made outside a host.
//!
//! Off `wasm32` the imports are stubs that abort the process (they cannot unwind), so
//! a plugin's `cargo test --target <host triple>` that reached one used to kill the
//! whole test binary with no word of why. Every SDK function that calls the host checks
//! first and panics, as a normal test failure, saying what to do.

/// Panics with what to do when this code is not running inside a techub host.
#[track_caller]
#[inline(always)]
pub(crate) fn ensure_host() {
    #[cfg(not(target_arch = "wasm32"))]
    panic!(
        "techub_guest: this call reaches the techub host, and this code runs natively (a `cargo test --target <host triple>`?): a plain `cargo test` in a crate made by `techub-host new` builds the tests for wasm32-wasip2 and runs them in a host (its .cargo/config.toml names `techub-host test-runner` as the runner); natively, test the built .wasm with techub-testkit"
    );
}
