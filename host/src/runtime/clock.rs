//! Time accounting of one invocation: wall time, time in host calls, and the guest's
//! CPU time, which the CPU limit is held to.
//!
//! Guest CPU is the OS's CPU time of the thread while it runs wasm code, read at every
//! switch between wasm and the host (call hooks) and at every epoch yield. So neither
//! waiting in a host call (a dead Redis), nor sitting parked while the executor is
//! busy, nor losing the core to another process is charged to the plugin: only
//! instructions it executed. The instance is a fiber that may resume on another
//! worker thread after a suspension; each resumption reads that thread's clock.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// `since` when no wasm code is running.
const NOT_RUNNING: u64 = u64::MAX;

/// CPU time of the calling thread, in ns.
fn thread_cpu_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    (t.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(t.tv_nsec as u64)
}

/// The guest's CPU time; shared with the yield futures, which resume it.
#[derive(Debug)]
struct GuestCpu {
    /// CPU spent in wasm code by finished stretches.
    spent_ns: AtomicU64,
    /// The thread's CPU clock when the current stretch began, or [`NOT_RUNNING`].
    since_ns: AtomicU64,
}

impl GuestCpu {
    fn resume(&self) {
        self.since_ns.store(thread_cpu_ns(), Ordering::Relaxed);
    }

    fn pause(&self) {
        let since = self.since_ns.swap(NOT_RUNNING, Ordering::Relaxed);
        if since != NOT_RUNNING {
            let stretch = thread_cpu_ns().saturating_sub(since);
            self.spent_ns.fetch_add(stretch, Ordering::Relaxed);
        }
    }

    fn total(&self) -> Duration {
        let since = self.since_ns.load(Ordering::Relaxed);
        let running = match since {
            NOT_RUNNING => 0,
            since => thread_cpu_ns().saturating_sub(since),
        };
        Duration::from_nanos(self.spent_ns.load(Ordering::Relaxed) + running)
    }
}

/// Time accounting of one invocation, kept in the store so hooks can reach it.
#[derive(Debug, Clone)]
pub(crate) struct Clock {
    pub(crate) started: Instant,
    pub(crate) host_time: Duration,
    entered_host: Option<Instant>,
    cpu: Arc<GuestCpu>,
}

impl Clock {
    pub(crate) fn start() -> Self {
        Self {
            started: Instant::now(),
            host_time: Duration::ZERO,
            entered_host: None,
            cpu: Arc::new(GuestCpu {
                spent_ns: AtomicU64::new(0),
                since_ns: AtomicU64::new(NOT_RUNNING),
            }),
        }
    }

    /// CPU time the guest's wasm code has used so far.
    pub(crate) fn guest_cpu(&self) -> Duration {
        self.cpu.total()
    }

    /// Wasm code starts or resumes running on this thread.
    pub(crate) fn entering_wasm(&mut self) {
        if let Some(entered) = self.entered_host.take() {
            self.host_time += entered.elapsed();
        }
        self.cpu.resume();
    }

    /// Wasm code stops running: it calls the host, or returns.
    pub(crate) fn leaving_wasm(&mut self, to_host: bool) {
        self.cpu.pause();
        if to_host {
            self.entered_host = Some(Instant::now());
        }
    }

    /// Stops the guest's clock for an epoch yield; the future yields to the executor
    /// and restarts the clock on whichever thread resumes the instance.
    pub(crate) fn epoch_yield(&self) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        self.cpu.pause();
        let cpu = self.cpu.clone();
        Box::pin(async move {
            tokio::task::yield_now().await;
            cpu.resume();
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_running_stretches_count() {
        let mut clock = Clock::start();
        clock.entering_wasm();
        let spin = Instant::now();
        while spin.elapsed() < Duration::from_millis(20) {
            std::hint::black_box(0);
        }
        clock.leaving_wasm(true);
        let after_running = clock.guest_cpu();
        assert!(
            after_running >= Duration::from_millis(15),
            "{after_running:?}"
        );
        // Waiting (in the host, or parked) is not charged.
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(clock.guest_cpu(), after_running);
        clock.entering_wasm();
        assert!(clock.host_time >= Duration::from_millis(50));
    }
}
