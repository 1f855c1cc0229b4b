//! The fenced counter of the Redis failover scenarios, the writes of it that a
//! failover lost after Redis acknowledged them, and how the plugin's invocations
//! ended meanwhile: a failover must reach the guest as a typed error it retries, never
//! as an instance killed over its CPU or time limit (a hang) or a trap.
//!
//! With `tally = "on"` the ledger fixture adds one to `{ledger}tally` per delivery,
//! under a lock and its fencing token, and publishes `<id> <value written>` once the
//! store acknowledged the write. Those reports live on the broker, outside the Redis
//! that fails over. Each acknowledged write set the counter to a value one above the
//! last, so a write the failover lost shows up as its value written a second time (the
//! counter went back and counted up again) or as a value above the final count. A
//! write whose answer the failover swallowed is not reported, and shows as a gap:
//! harmless, and not counted.

use crate::host::HostProcess;
use crate::ledger::Publisher;
use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use techub_host::capability::messaging::{Broker, open_watch};

/// The routing key of the fixture's reports.
const WRITTEN: &str = "fixture.tally.written";

/// The fenced counter's figures.
#[derive(Debug, serde::Serialize)]
pub struct Tally {
    /// Fenced writes the store acknowledged (reports received).
    acknowledged: usize,
    /// The counter's final value.
    counter: i64,
    /// Acknowledged writes that the failover lost.
    lost_after_acknowledgement: usize,
    /// Reports that were not `<id> <value>`.
    malformed_reports: usize,
    /// Invocations that ended asking for a retry (the failover's typed errors among
    /// them).
    invocations_retried: u64,
    /// Invocations that ended trapped, or over their CPU, time or memory limit.
    invocations_killed: u64,
    /// Whether claims and fencing waited for a replica (`wait_replicas`).
    waited_for_replicas: bool,
}

impl Tally {
    /// Writes were made (else the scenario tested nothing); with `wait_replicas`,
    /// none that Redis acknowledged was lost.
    pub fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.acknowledged > 0,
            "no fenced write was acknowledged: the scenario tested nothing"
        );
        anyhow::ensure!(
            self.invocations_killed == 0,
            "{} invocation(s) trapped or ran over a limit during the Redis failover: the guest must get a typed error instead",
            self.invocations_killed
        );
        anyhow::ensure!(
            self.malformed_reports == 0,
            "{} report(s) of the ledger's fenced writes were not `<id> <value>`",
            self.malformed_reports
        );
        anyhow::ensure!(
            !self.waited_for_replicas || self.lost_after_acknowledgement == 0,
            "{} acknowledged fenced write(s) lost in the failover with wait_replicas on",
            self.lost_after_acknowledgement
        );
        Ok(())
    }
}

impl std::fmt::Display for Tally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "fenced counter: {} writes acknowledged, final count {}, {} acknowledged write(s) lost{}; invocations: {} retried, {} killed",
            self.acknowledged,
            self.counter,
            self.lost_after_acknowledgement,
            match self.waited_for_replicas {
                true => " (wait_replicas 1)",
                false => " (no waiting: Redis replicates asynchronously)",
            },
            self.invocations_retried,
            self.invocations_killed
        )
    }
}

/// Turns the fixture's tally on for `host` (a setting, and the grant to report).
pub fn turn_on(host: &mut HostProcess) -> anyhow::Result<()> {
    let plugin = host
        .config
        .plugins
        .get_mut(crate::host::LEDGER.plugin)
        .ok_or_else(|| anyhow::anyhow!("the ledger is not configured"))?;
    plugin.settings.insert("tally".into(), "on".into());
    plugin.publish.push(WRITTEN.into());
    host.rewrite(|_| {})
}

/// The reports, collected as they arrive, from before the stream starts.
pub struct Reports {
    /// The watching queue (deleted at the end: it is not durable, but it would stay).
    queue: String,
    received: Arc<Mutex<Received>>,
    task: tokio::task::JoinHandle<()>,
}

impl Reports {
    /// Declares the watching queue and collects from it.
    pub async fn collect(publisher: &Publisher) -> anyhow::Result<Self> {
        let name = techub_tests::unique("fault-tally");
        let mut consumer = open_watch(publisher.broker(), &name, vec![WRITTEN.into()], 200)
            .await
            .map_err(anyhow::Error::msg)?;
        let received = Arc::<Mutex<Received>>::default();
        let into = received.clone();
        let task = tokio::spawn(async move {
            while let Some(delivery) = consumer.next().await {
                let text = String::from_utf8_lossy(&delivery.envelope().payload).into_owned();
                let report = text
                    .split_once(' ')
                    .and_then(|(id, value)| Some((id.to_string(), value.parse().ok()?)));
                {
                    let mut received = into.lock().unwrap_or_else(|e| e.into_inner());
                    match report {
                        Some(report) => received.reports.push(report),
                        None => received.malformed += 1,
                    }
                }
                let _ = delivery.ack().await;
            }
        });
        Ok(Self {
            queue: name,
            received,
            task,
        })
    }

    /// Waits until every id in `handled` has reported (each reports before it is
    /// handled; at most 10 s). Read the counter after this: a write the wait lets in
    /// would otherwise count as above the final count.
    pub async fn settle(&self, handled: &HashSet<String>) {
        let waiting = Instant::now();
        let all_reported = || {
            let received = self.received.lock().unwrap_or_else(|e| e.into_inner());
            let reported: HashSet<&String> = received.reports.iter().map(|(id, _)| id).collect();
            handled.iter().all(|id| reported.contains(id))
        };
        while !all_reported() && waiting.elapsed() < Duration::from_secs(10) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The figures against the counter's final value and the invocations' `outcomes`
    /// (`HostProcess::invocation_outcomes`); deletes the watching queue.
    pub async fn tally(
        self,
        publisher: &Publisher,
        counter: i64,
        outcomes: &BTreeMap<String, u64>,
        waited: bool,
    ) -> Tally {
        self.task.abort();
        let _ = publisher.broker().delete_queue(&self.queue).await;
        let received = self.received.lock().unwrap_or_else(|e| e.into_inner());
        let count = |outcome: &str| outcomes.get(outcome).copied().unwrap_or(0);
        Tally {
            invocations_retried: count("retry"),
            invocations_killed: ["trap", "cpu_limit", "timeout", "memory_limit"]
                .into_iter()
                .map(count)
                .sum(),
            acknowledged: received.reports.len(),
            counter,
            lost_after_acknowledgement: lost_after_acknowledgement(&received.reports, counter),
            malformed_reports: received.malformed,
            waited_for_replicas: waited,
        }
    }
}

/// What the watching queue received.
#[derive(Default)]
struct Received {
    /// (message id, value written), in arrival order.
    reports: Vec<(String, i64)>,
    /// Reports that were not `<id> <value>` (a broken fixture: fails the check).
    malformed: usize,
}

/// Acknowledged writes that did not last: a value written a second time (the counter
/// went back below it, so the first write was lost) or above the final count.
fn lost_after_acknowledgement(reports: &[(String, i64)], counter: i64) -> usize {
    let mut values = HashSet::new();
    reports
        .iter()
        .filter(|(_, value)| !values.insert(*value) || *value > counter)
        .count()
}

#[cfg(test)]
mod tests {
    use super::lost_after_acknowledgement;

    fn reports(values: &[i64]) -> Vec<(String, i64)> {
        values
            .iter()
            .enumerate()
            .map(|(i, v)| (format!("m-{i}"), *v))
            .collect()
    }

    #[test]
    fn a_write_lost_after_its_acknowledgement_is_counted_and_an_unreported_one_is_not() {
        // Every write reported, in any order: nothing lost.
        assert_eq!(lost_after_acknowledgement(&reports(&[1, 3, 2, 4]), 4), 0);
        // 3 was acknowledged, lost (the counter went back to 2), and written again.
        assert_eq!(lost_after_acknowledgement(&reports(&[1, 2, 3, 3, 4]), 4), 1);
        // 4 and 5 acknowledged, then lost with nothing written after.
        assert_eq!(lost_after_acknowledgement(&reports(&[1, 2, 3, 4, 5]), 3), 2);
        // 2 written but its answer lost (no report): a gap, not a loss.
        assert_eq!(lost_after_acknowledgement(&reports(&[1, 3]), 3), 0);
    }
}
