//! A queue type changing kind (classic → quorum, or back) on a live deployment.
//!
//! RabbitMQ cannot change a queue's type in place, so the two kinds have different
//! names (`physical.rs`) and live side by side while the old one drains:
//! 1. Declaring the plugin queue with its new kind (a reload that changes
//!    `[queues.<type>] kind`, or a start with a new `amqp.queue_kind`) declares and
//!    binds the new queues first, then finds the old ones and unbinds the plugin's
//!    patterns from them: from then on new messages go to the new queues only (a
//!    message published between the bind and the unbind reaches both: a duplicate,
//!    never a loss).
//! 2. The plugin's consumer takes the old queues' messages as well as the new ones
//!    (`merged.rs`); their retries go to the new queues.
//! 3. An old queue is kept at least the *grace* after this host began (the longest a
//!    retry of the queue type waits, or `dead_letter.retry_when_full_ms` if longer):
//!    retries sent before the change come back to it by name. After that, once it is
//!    empty, the consumer stops taking from it; once nothing from it is unsettled here,
//!    no host consumes it and it has stayed empty for [`QUIET`], it is deleted
//!    (`if-empty`, `if-unused`: RabbitMQ refuses while another host still consumes it
//!    or a message came back). A message that does come back is consumed again.
//!
//! Several hosts each do the same on their own reload; the queue goes once the last
//! of them let go of it. Without the management API, only the patterns the plugin
//! binds now are unbound from the old queue (a pattern an older version bound and no
//! longer does keeps feeding it: the old queue then stays, consumed, and an operator
//! unbinds it).

use super::AmqpBroker;
use super::physical::Physical;
use crate::capability::BackendResult;
use crate::capability::messaging::QueueSpec;
use crate::config::QueueKind;
use std::time::{Duration, Instant};

/// How long an old queue must have been empty, without a consumer anywhere and with
/// nothing of it unsettled here, before it is deleted: time for another host that
/// just stopped consuming it to settle what it holds.
pub(super) const QUIET: Duration = Duration::from_secs(5);

/// The old queues one plugin queue drains.
#[derive(Debug, Clone)]
pub(crate) struct Migration {
    /// The old queues (of the other kind) that still exist.
    pub sources: Vec<String>,
    /// When this host began draining them.
    pub started: Instant,
    /// How long after `started` an old queue is kept at least.
    pub grace: Duration,
}

/// What the consumer of a plugin queue does next with one old queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum DrainStep {
    /// Take its messages (start again if stopped).
    Consume,
    /// Stop taking its messages: it is empty and past the grace.
    Stop,
    /// Nothing to do yet.
    Wait,
    /// It is gone (deleted here or elsewhere): forget it.
    Gone,
}

impl AmqpBroker {
    /// After `spec`'s queues of `kind` are declared and bound: finds the queues of the
    /// other kind under its name and makes them drain into the new ones.
    pub(super) async fn begin_migration(
        &self,
        spec: &QueueSpec,
        kind: QueueKind,
    ) -> BackendResult<()> {
        let mut found = Vec::new();
        for name in Physical::of_other_kind(&spec.name, kind) {
            if self.exists(&name).await? {
                found.push(name);
            }
        }
        if found.is_empty() {
            self.end_migration(&spec.name);
            return Ok(());
        }
        for name in &found {
            self.unbind_everywhere(name, &spec.bindings).await?;
        }
        let grace = Duration::from_millis(
            spec.limits
                .longest_retry_ms
                .max(self.dead_letter_config().retry_when_full_ms),
        );
        let mut migrations = self.migrations();
        let migration = migrations
            .entry(spec.name.clone())
            .or_insert_with(|| Migration {
                sources: Vec::new(),
                started: Instant::now(),
                grace,
            });
        for name in found {
            if !migration.sources.contains(&name) {
                tracing::info!(queue = %spec.name, old = %name, kind = ?kind, grace_ms = grace.as_millis() as u64,
                    "this queue type changed kind: new messages go to the new queue, and the old one is drained into it, then deleted");
                migration.sources.push(name);
            }
        }
        Ok(())
    }

    /// Unbinds `bindings` from old queue `queue`: from the main exchange, and (a
    /// quorum queue with lanes) its lane router's, each on a channel of its own (what
    /// is not there closes only its own channel).
    async fn unbind_everywhere(&self, queue: &str, bindings: &[String]) -> BackendResult<()> {
        let direct = Physical {
            normal: queue.to_string(),
            high: None,
        };
        let routed = Physical {
            normal: queue.to_string(),
            high: Some(format!("{queue}.high")),
        };
        for physical in [direct, routed] {
            if let Err(error) = self.unroute(&physical, bindings).await
                && !error.to_string().contains("NOT_FOUND")
            {
                return Err(error);
            }
        }
        Ok(())
    }

    /// Whether queue `name` exists: through the management API where it answers (a
    /// passive declare of a missing queue makes lapin log an error).
    pub(super) async fn exists(&self, name: &str) -> BackendResult<bool> {
        if let Some(api) = &self.shared.policies
            && let Ok(exists) = api.queue_exists(name).await
        {
            return Ok(exists);
        }
        Ok(self.depth(name).await?.is_some())
    }

    /// The old queues plugin queue `logical` still drains.
    pub(super) fn migration_sources(&self, logical: &str) -> Vec<String> {
        self.migrations()
            .get(logical)
            .map(|m| m.sources.clone())
            .unwrap_or_default()
    }

    /// Forgets the migration of `logical` (its queue deleted, or nothing to drain).
    pub(super) fn end_migration(&self, logical: &str) {
        self.migrations().remove(logical);
    }

    /// One look at old queue `source` of plugin queue `logical`, whose consumer here
    /// is `consuming` it and holds `unsettled` of its deliveries; `quiet_since` is when
    /// this look first found it ready to go (kept by the caller).
    pub(super) async fn drain_step(
        &self,
        logical: &str,
        source: &str,
        consuming: bool,
        unsettled: usize,
        quiet_since: &mut Option<Instant>,
    ) -> BackendResult<DrainStep> {
        let Some(migration) = self.migrations().get(logical).cloned() else {
            return Ok(DrainStep::Gone);
        };
        let Some((ready, consumers)) = self.queue_state(source).await? else {
            self.forget_source(logical, source);
            return Ok(DrainStep::Gone);
        };
        let past_grace = migration.started.elapsed() >= migration.grace;
        if ready > 0 || !past_grace {
            *quiet_since = None;
            return Ok(match (consuming, unsettled) {
                (true, _) => DrainStep::Wait,
                // Start again only once what the stopped consumer holds is settled:
                // a new channel would hand those back to the queue.
                (false, 0) => DrainStep::Consume,
                (false, _) => DrainStep::Wait,
            });
        }
        if consuming {
            return Ok(DrainStep::Stop);
        }
        if unsettled > 0 || consumers > 0 {
            *quiet_since = None;
            return Ok(DrainStep::Wait);
        }
        let since = *quiet_since.get_or_insert_with(Instant::now);
        if since.elapsed() < QUIET {
            return Ok(DrainStep::Wait);
        }
        let ch = self.open_channel().await?;
        let deleted = ch
            .queue_delete(
                source.into(),
                lapin::options::QueueDeleteOptions {
                    if_unused: true,
                    if_empty: true,
                    ..Default::default()
                },
            )
            .await;
        match deleted {
            Ok(_) => {
                let _ = ch.close(200, "drained".into()).await;
                tracing::info!(queue = %logical, old = %source, "the old queue is drained and deleted");
                self.forget_source(logical, source);
                Ok(DrainStep::Gone)
            }
            Err(error) => {
                // Another host consumes it again, or a message came back: later.
                tracing::debug!(queue = %logical, old = %source, %error, "the old queue is not ready to delete");
                *quiet_since = None;
                Ok(DrainStep::Wait)
            }
        }
    }

    fn forget_source(&self, logical: &str, source: &str) {
        let mut migrations = self.migrations();
        if let Some(migration) = migrations.get_mut(logical) {
            migration.sources.retain(|s| s != source);
            if migration.sources.is_empty() {
                migrations.remove(logical);
            }
        }
        drop(migrations);
        self.shared
            .layout
            .send_modify(|generation| *generation += 1);
    }

    fn migrations(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, Migration>> {
        self.shared
            .migrations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }
}
