//! Backing off a subscription whose plugin keeps breaking its limits.
//!
//! Limits stop each bad invocation, but not the next one: an infinite loop fed 50
//! messages a second at a 50 ms CPU limit would burn 2.5 cores, starving every
//! neighbour on a 2-core host. So once `limits.backoff_after_violations` (default 3)
//! invocations in a row end in a violation (a trap; the CPU, wall-clock or memory limit; the host-call,
//! publish or lease quota), the consumer takes its next delivery only after a pause
//! ([`FIRST_PAUSE`], doubling with each further violation, at most [`LONGEST_PAUSE`])
//! and handles one at a time, until an invocation ends without a violation. Its
//! messages wait in the queue meanwhile: nothing is lost, nothing is settled early.

use crate::runtime::InvocationReport;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// The pause before the next delivery once backed off.
pub const FIRST_PAUSE: Duration = Duration::from_millis(100);
/// The longest pause between two deliveries of a backed-off consumer.
pub const LONGEST_PAUSE: Duration = Duration::from_secs(5);

/// Whether an invocation broke one of its plugin's limits.
pub fn violated(report: &InvocationReport) -> bool {
    use crate::metrics::InvocationOutcome as O;
    let over = &report.usage.over;
    let outcome = crate::runtime::outcome_of(&report.result);
    matches!(outcome, O::Trap | O::CpuLimit | O::Timeout | O::MemoryLimit)
        || over.host_calls
        || over.publishes
        || over.leases
        || over.http_requests
}

/// One subscription's violations in a row.
#[derive(Default)]
pub struct Backoff {
    in_a_row: AtomicU32,
}

/// What recording an invocation changed, for the log.
#[derive(Debug, PartialEq, Eq)]
pub enum Change {
    None,
    /// This violation backed the consumer off.
    BackedOff,
    /// A clean invocation ended the back-off.
    Recovered,
}

impl Backoff {
    /// Counts a finished invocation; `after` is the plugin's
    /// `limits.backoff_after_violations` (0: never backed off).
    pub fn record(&self, violated: bool, after: u32) -> Change {
        if violated {
            let now = self
                .in_a_row
                .fetch_add(1, Ordering::AcqRel)
                .saturating_add(1);
            match after > 0 && now == after {
                true => Change::BackedOff,
                false => Change::None,
            }
        } else {
            let before = self.in_a_row.swap(0, Ordering::AcqRel);
            match after > 0 && before >= after {
                true => Change::Recovered,
                false => Change::None,
            }
        }
    }

    /// The pause before the next delivery; `None` when not backed off.
    pub fn pause(&self, after: u32) -> Option<Duration> {
        if after == 0 {
            return None;
        }
        let over = self.in_a_row.load(Ordering::Acquire).checked_sub(after)?;
        let doubled = FIRST_PAUSE.saturating_mul(1u32 << over.min(16));
        Some(doubled.min(LONGEST_PAUSE))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AFTER: u32 = 3;

    #[test]
    fn backs_off_after_violations_in_a_row_and_recovers_on_a_clean_invocation() {
        let backoff = Backoff::default();
        assert_eq!(backoff.record(true, AFTER), Change::None);
        assert_eq!(backoff.record(false, AFTER), Change::None);
        assert_eq!(
            backoff.pause(AFTER),
            None,
            "a clean invocation resets the count"
        );
        for _ in 1..AFTER {
            assert_eq!(backoff.record(true, AFTER), Change::None);
        }
        assert_eq!(backoff.pause(AFTER), None);
        assert_eq!(backoff.record(true, AFTER), Change::BackedOff);
        assert_eq!(backoff.pause(AFTER), Some(FIRST_PAUSE));
        backoff.record(true, AFTER);
        assert_eq!(backoff.pause(AFTER), Some(FIRST_PAUSE * 2));
        for _ in 0..100 {
            backoff.record(true, AFTER);
        }
        assert_eq!(backoff.pause(AFTER), Some(LONGEST_PAUSE));
        assert_eq!(backoff.record(false, AFTER), Change::Recovered);
        assert_eq!(backoff.pause(AFTER), None);
    }

    fn report(
        result: Result<crate::capability::bindings::Outcome, crate::runtime::InvocationError>,
        over: impl FnOnce(&mut crate::capability::QuotasHit),
    ) -> InvocationReport {
        let mut usage = crate::capability::Usage::within(u32::MAX);
        over(&mut usage.over);
        InvocationReport {
            result,
            elapsed: Duration::ZERO,
            host_time: Duration::ZERO,
            guest_cpu: Duration::ZERO,
            usage,
            output: Default::default(),
            memory_peak: 0,
        }
    }

    #[test]
    fn a_violation_is_a_trap_a_limit_or_any_quota_hit() {
        use crate::capability::bindings::Outcome;
        use crate::runtime::InvocationError as E;
        let clean = |_: &mut crate::capability::QuotasHit| {};
        for failed in [
            E::Trap("x".into()),
            E::CpuLimit(50),
            E::Timeout(1000),
            E::MemoryLimit(16, "x".into()),
        ] {
            assert!(violated(&report(Err(failed.clone()), clean)), "{failed}");
        }
        let quotas: [fn(&mut crate::capability::QuotasHit); 4] = [
            |o| o.host_calls = true,
            |o| o.publishes = true,
            |o| o.leases = true,
            |o| o.http_requests = true,
        ];
        for (i, quota) in quotas.into_iter().enumerate() {
            // A quota hit counts even when the plugin then answered (it chose to).
            assert!(violated(&report(Ok(Outcome::Ok), quota)), "quota {i}");
            assert!(
                violated(&report(Ok(Outcome::Reject("r".into())), quota)),
                "quota {i}"
            );
        }
        // Its own answers are not violations.
        for answer in [
            Outcome::Ok,
            Outcome::Retry("r".into()),
            Outcome::Reject("r".into()),
        ] {
            assert!(!violated(&report(Ok(answer.clone()), clean)), "{answer:?}");
        }
    }

    #[test]
    fn zero_never_backs_off() {
        let backoff = Backoff::default();
        for _ in 0..10 {
            assert_eq!(backoff.record(true, 0), Change::None);
        }
        assert_eq!(backoff.pause(0), None);
    }
}
