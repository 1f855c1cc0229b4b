//! Time accounting of one invocation: wall time, time in host calls, and the guest's
//! CPU time, which the CPU limit holds it to.
//!
//! Cheap on every switch between wasm and the host (call hooks: a monotonic clock read),
//! exact where it matters. The guest's *wall* time is the time it runs wasm code,
//! excluding host calls (a dead Redis), and epoch yields (which wasmtime brackets as a
//! host call, so time parked while the executor is busy is excluded too). At every
//! epoch tick (each 10 ms of guest running) that wall time is settled against the
//! thread's OS CPU clock: the guest is charged the smaller of the two for the interval,
//! so losing the core to other processes on a crowded machine is not charged either.
//! (The instance is a fiber that may resume on another worker thread after a yield;
//! an interval that crossed threads is charged its wall time.) The first interval and
//! the last, shorter than a tick, are charged their wall time.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

/// CPU time of the calling thread, in ns.
fn thread_cpu_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    (t.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(t.tv_nsec as u64)
}

/// The thread CPU clock read where the guest last resumed after a tick.
type CpuMark = Arc<Mutex<Option<(ThreadId, u64)>>>;

/// Time accounting of one invocation, kept in the store so hooks can reach it.
#[derive(Debug, Clone)]
pub(crate) struct Clock {
    pub(crate) started: Instant,
    pub(crate) host_time: Duration,
    entered_host: Option<Instant>,
    /// Since when wasm code runs (the current stretch), if it does.
    running_since: Option<Instant>,
    /// Guest wall time of finished stretches.
    guest_wall: Duration,
    /// CPU charged up to the last tick.
    charged: Duration,
    /// Guest wall time at the last tick.
    wall_at_tick: Duration,
    cpu_mark: CpuMark,
}

impl Clock {
    pub(crate) fn start() -> Self {
        Self {
            started: Instant::now(),
            host_time: Duration::ZERO,
            entered_host: None,
            running_since: None,
            guest_wall: Duration::ZERO,
            charged: Duration::ZERO,
            wall_at_tick: Duration::ZERO,
            cpu_mark: Arc::default(),
        }
    }

    fn wall_now(&self) -> Duration {
        self.guest_wall + self.running_since.map_or(Duration::ZERO, |s| s.elapsed())
    }

    /// CPU time charged to the guest so far.
    pub(crate) fn guest_cpu(&self) -> Duration {
        self.charged + self.wall_now().saturating_sub(self.wall_at_tick)
    }

    /// Wasm code starts or resumes running.
    pub(crate) fn entering_wasm(&mut self) {
        let now = Instant::now();
        if let Some(entered) = self.entered_host.take() {
            self.host_time += now.duration_since(entered);
        }
        self.running_since.get_or_insert(now);
    }

    /// Wasm code stops running: it calls the host, or returns.
    pub(crate) fn leaving_wasm(&mut self, to_host: bool) {
        let now = Instant::now();
        if let Some(since) = self.running_since.take() {
            self.guest_wall += now.duration_since(since);
        }
        if to_host {
            self.entered_host = Some(now);
        }
    }

    /// At an epoch tick, while wasm runs: settles the interval since the last tick (the
    /// smaller of its guest wall time and the thread's CPU time) and returns the CPU
    /// charged so far.
    pub(crate) fn tick(&mut self) -> Duration {
        let wall = self.wall_now();
        let interval = wall.saturating_sub(self.wall_at_tick);
        let here = std::thread::current().id();
        let now_ns = thread_cpu_ns();
        let mark = self
            .cpu_mark
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let charge = match mark {
            Some((thread, ns)) if thread == here => {
                interval.min(Duration::from_nanos(now_ns.saturating_sub(ns)))
            }
            _ => interval,
        };
        self.charged += charge;
        self.wall_at_tick = wall;
        self.charged
    }

    /// The yield after a tick: to the executor, then marks the thread CPU clock on
    /// whichever thread resumes the instance.
    pub(crate) fn epoch_yield(&self) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        let mark = self.cpu_mark.clone();
        Box::pin(async move {
            tokio::task::yield_now().await;
            let reading = (std::thread::current().id(), thread_cpu_ns());
            *mark.lock().unwrap_or_else(|e| e.into_inner()) = Some(reading);
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spin(d: Duration) {
        let started = Instant::now();
        while started.elapsed() < d {
            std::hint::black_box(0);
        }
    }

    #[test]
    fn host_time_is_not_guest_time() {
        let mut clock = Clock::start();
        clock.entering_wasm();
        spin(Duration::from_millis(20));
        clock.leaving_wasm(true);
        let after_running = clock.guest_cpu();
        assert!(
            after_running >= Duration::from_millis(15),
            "{after_running:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(clock.guest_cpu(), after_running);
        clock.entering_wasm();
        assert!(clock.host_time >= Duration::from_millis(50));
    }

    #[test]
    fn a_tick_charges_no_more_than_the_thread_used() {
        let mut clock = Clock::start();
        clock.entering_wasm();
        *clock.cpu_mark.lock().unwrap() = Some((std::thread::current().id(), thread_cpu_ns()));
        // Wall time passes while the thread does not run (as when preempted).
        std::thread::sleep(Duration::from_millis(50));
        let charged = clock.tick();
        assert!(charged < Duration::from_millis(10), "{charged:?}");
    }
}
