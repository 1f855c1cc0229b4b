//! One plugin's recent throughput and latency, for the status page's chart: handled
//! messages and a coarse latency histogram per [`SLOT_SECONDS`] slot, over the last
//! [`SLOTS`] slots. Lock-free: an invocation adds to its slot with a few atomic
//! operations (Prometheus keeps the exact totals; this keeps only a short picture).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Seconds one slot covers.
pub const SLOT_SECONDS: u64 = 10;
/// Slots kept: five minutes.
pub const SLOTS: usize = 30;
/// Latency buckets: bucket `i` holds durations up to `100 µs × 2^i` (the last: any).
const BUCKETS: usize = 20;

struct Slot {
    /// Which slot of time (seconds since the epoch / [`SLOT_SECONDS`]) the counts are of.
    at: AtomicU64,
    handled: AtomicU64,
    latency: [AtomicU64; BUCKETS],
}

/// The recent slots of one plugin.
pub struct Recent {
    slots: [Slot; SLOTS],
}

/// One slot, read: its start (seconds since the epoch), messages per second, and the
/// 99th-percentile latency (an upper bound, to the bucket).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RecentPoint {
    /// Start of the slot, seconds since the epoch.
    pub at_s: u64,
    /// Messages handled per second in it.
    pub per_second: f64,
    /// 99th-percentile handling time, milliseconds (0 when nothing was handled).
    pub p99_ms: f64,
}

impl Default for Recent {
    fn default() -> Self {
        Self {
            slots: std::array::from_fn(|_| Slot {
                at: AtomicU64::new(0),
                handled: AtomicU64::new(0),
                latency: std::array::from_fn(|_| AtomicU64::new(0)),
            }),
        }
    }
}

fn bucket_of(elapsed: Duration) -> usize {
    let units = elapsed.as_micros().div_ceil(100).max(1) as u64;
    // The smallest i with units <= 2^i.
    let i = 64 - (units - 1).leading_zeros() as usize;
    i.min(BUCKETS - 1)
}

fn bucket_bound_ms(i: usize) -> f64 {
    0.1 * (1u64 << i) as f64
}

impl Recent {
    /// Counts one message handled in `elapsed`, at `now_s` (seconds since the epoch).
    pub fn record(&self, now_s: u64, elapsed: Duration) {
        let at = now_s / SLOT_SECONDS;
        let slot = &self.slots[(at % SLOTS as u64) as usize];
        let seen = slot.at.load(Ordering::Acquire);
        if seen != at
            && slot
                .at
                .compare_exchange(seen, at, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            // This slot held an older time: start it over. (A count racing with the
            // reset may be lost: it is a picture, not a total.)
            slot.handled.store(0, Ordering::Relaxed);
            slot.latency
                .iter()
                .for_each(|b| b.store(0, Ordering::Relaxed));
        }
        slot.handled.fetch_add(1, Ordering::Relaxed);
        slot.latency[bucket_of(elapsed)].fetch_add(1, Ordering::Relaxed);
    }

    /// The last [`SLOTS`] slots up to `now_s`, oldest first; slots with nothing
    /// handled read as zero.
    pub fn points(&self, now_s: u64) -> Vec<RecentPoint> {
        let current = now_s / SLOT_SECONDS;
        (0..SLOTS as u64)
            .rev()
            .filter_map(|back| current.checked_sub(back))
            .map(|at| {
                let slot = &self.slots[(at % SLOTS as u64) as usize];
                let counts: Vec<u64> = match slot.at.load(Ordering::Acquire) == at {
                    true => slot
                        .latency
                        .iter()
                        .map(|b| b.load(Ordering::Relaxed))
                        .collect(),
                    false => vec![0; BUCKETS],
                };
                let handled: u64 = counts.iter().sum();
                // The current slot has run only part of its time.
                let seconds = match at == current {
                    true => (now_s % SLOT_SECONDS + 1) as f64,
                    false => SLOT_SECONDS as f64,
                };
                let p99_ms = match handled {
                    0 => 0.0,
                    _ => {
                        let wanted = (handled * 99).div_ceil(100);
                        let mut seen = 0;
                        let i = counts
                            .iter()
                            .position(|c| {
                                seen += c;
                                seen >= wanted
                            })
                            .unwrap_or(BUCKETS - 1);
                        bucket_bound_ms(i)
                    }
                };
                RecentPoint {
                    at_s: at * SLOT_SECONDS,
                    per_second: handled as f64 / seconds,
                    p99_ms,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_and_the_99th_percentile_per_slot() {
        let recent = Recent::default();
        let now = 1_000_000;
        for _ in 0..99 {
            recent.record(now - 5, Duration::from_micros(150)); // bucket ≤ 0.2 ms
        }
        recent.record(now - 5, Duration::from_millis(30)); // ≤ 51.2 ms
        recent.record(now, Duration::from_millis(3)); // ≤ 3.2 ms
        let points = recent.points(now);
        assert_eq!(points.len(), SLOTS);
        let older = points[SLOTS - 2];
        assert_eq!(older.per_second, 10.0, "100 in 10 s");
        assert_eq!(older.p99_ms, 0.2, "99 of 100 within 0.2 ms");
        let current = points[SLOTS - 1];
        assert_eq!(current.p99_ms, 3.2);
        assert!(points[..SLOTS - 2].iter().all(|p| p.per_second == 0.0));
        // Five minutes later the old counts are gone, not read as new.
        let later = now + SLOTS as u64 * SLOT_SECONDS;
        assert!(recent.points(later).iter().all(|p| p.per_second == 0.0));
        recent.record(later, Duration::from_millis(1));
        assert_eq!(recent.points(later)[SLOTS - 1].p99_ms, 1.6);
    }
}
