//! The gauges the platform's poller sets from plain figures (queue depths, pool slots,
//! cache bytes, backends up): the poller reads the services, these only record.

use super::{BackendLabel, DomainLabel, Metrics, QueueNameLabel};

impl Metrics {
    /// Instance pool slots: how many there are and how many are in use.
    pub fn instance_slots(&self, total: usize, in_use: usize) {
        self.slots_total.set(total as i64);
        self.slots_in_use.set(in_use as i64);
    }

    /// The embedded cache's bytes in `domain`, and the evictions since the last poll.
    pub fn cache_domain_usage(&self, domain: &str, bytes: u64, new_evictions: u64) {
        let label = DomainLabel {
            domain: domain.to_string(),
        };
        self.cache_bytes.get_or_create(&label).set(bytes as i64);
        self.cache_evictions
            .get_or_create(&label)
            .inc_by(new_evictions);
    }

    /// Whether `backend` (`redis`, `amqp`) answered its last health check.
    pub fn set_backend_up(&self, backend: &'static str, up: bool) {
        self.backend_up
            .get_or_create(&BackendLabel { backend })
            .set(i64::from(up));
    }

    /// The dead-letter queue's depth, and whether it is at its `max_length`.
    pub fn dead_letter_fill(&self, depth: u64, full: bool) {
        self.dead_letter_depth.set(depth as i64);
        self.dead_letter_queue_full.set(i64::from(full));
    }

    /// Messages ready in the plugin queue `queue`.
    pub fn set_queue_depth(&self, queue: &str, depth: u64) {
        self.queue_depth
            .get_or_create(&QueueNameLabel {
                queue: queue.to_string(),
            })
            .set(depth as i64);
    }

    /// `queue` no longer serves: it drops out of the exposition.
    pub fn forget_queue(&self, queue: &str) {
        self.queue_depth.remove(&QueueNameLabel {
            queue: queue.to_string(),
        });
    }
}
