//! The RabbitMQ queues behind one plugin queue.
//!
//! The rest of the host knows a plugin queue by one name (`techub.<type>.<plugin>`:
//! metrics, dead letters, the status page, replays). On RabbitMQ that name stands for:
//! - classic: the queue of that name (with 0–10 priorities, `x-max-priority`);
//! - quorum: `<name>.quorum`, and with priority lanes also `<name>.quorum.high`.
//!
//! A quorum queue has a name of its own so that a queue type moving from classic to
//! quorum (or back) has both queues side by side while the old one drains
//! (`migrate.rs`): RabbitMQ cannot change a queue's type in place.
//!
//! **Priority lanes.** RabbitMQ before 4.0 has no priorities on quorum queues (it
//! refuses `x-max-priority` on them); 4.0 and later give them two levels, priority 5
//! and above before the rest. Where the broker has none (probed at connect,
//! `kind::quorum_priorities`) and quorum queues are configured, the host gives them
//! the same two levels itself: messages of priority 5 and above (`normal`, `high`,
//! `urgent`) are published to `<main exchange>.high`, the rest to the main exchange;
//! every plugin queue binds its patterns on both (a classic queue with itself, a
//! quorum queue with its high lane), and the consumer takes the high lane first
//! (`merged.rs`), without starving the other.

use super::{AmqpBroker, unavailable};
use crate::capability::BackendResult;
use crate::config::QueueKind;
use lapin::ExchangeKind;
use lapin::options::{ExchangeDeclareOptions, QueueBindOptions};
use lapin::types::FieldTable;

/// The first priority of the high lane (RabbitMQ 4's first "high" priority).
pub(super) const HIGH_LANE_FROM: u8 = 5;

/// The queues of one plugin queue of one kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Physical {
    /// Every message (classic), or those below [`HIGH_LANE_FROM`] (quorum with lanes).
    pub normal: String,
    /// With lanes, the quorum queue of priorities [`HIGH_LANE_FROM`] and above.
    pub high: Option<String>,
}

impl Physical {
    /// The queues of plugin queue `logical` as a `kind` queue.
    pub fn of(logical: &str, kind: QueueKind, lanes: bool) -> Self {
        match kind {
            QueueKind::Classic => Self {
                normal: logical.to_string(),
                high: None,
            },
            QueueKind::Quorum => {
                let normal = format!("{logical}.quorum");
                Self {
                    high: lanes.then(|| format!("{normal}.high")),
                    normal,
                }
            }
        }
    }

    /// The queues a queue of the other kind than `kind` would have (with lanes or
    /// without): a migration's sources.
    pub fn of_other_kind(logical: &str, kind: QueueKind) -> Vec<String> {
        match kind {
            QueueKind::Quorum => vec![logical.to_string()],
            QueueKind::Classic => Self::of(logical, QueueKind::Quorum, true).all(),
        }
    }

    /// Every queue either kind would have under `logical`: what deleting the plugin
    /// queue removes (RabbitMQ deletes a missing queue without complaint).
    pub fn every(logical: &str) -> Vec<String> {
        let mut every = Self::of(logical, QueueKind::Classic, false).all();
        every.extend(Self::of(logical, QueueKind::Quorum, true).all());
        every
    }

    /// Its queues, normal first.
    pub fn all(&self) -> Vec<String> {
        std::iter::once(self.normal.clone())
            .chain(self.high.clone())
            .collect()
    }

    /// The queue a message of `priority` goes to (and is retried in).
    pub fn lane(&self, priority: u8) -> &str {
        match &self.high {
            Some(high) if priority >= HIGH_LANE_FROM => high,
            _ => &self.normal,
        }
    }
}

/// The exchange of the high lane, beside `main_exchange`.
pub(super) fn high_exchange(main_exchange: &str) -> String {
    format!("{main_exchange}.high")
}

impl AmqpBroker {
    /// Decides once whether quorum queues get priority lanes: where the broker has no
    /// priorities of its own on them.
    pub(super) async fn decide_lanes(&self) {
        let url = &self.shared.url;
        let main = &self.shared.names.main_exchange;
        self.shared
            .lanes
            .get_or_init(|| async {
                let connection = &self.shared.link.load().connection;
                match super::kind::quorum_priorities(connection).await {
                    Ok(true) => {
                        tracing::info!(%url, "quorum queues have priorities on this broker (RabbitMQ 4 or later): two levels, 5 and above first");
                        None
                    }
                    answer => {
                        if let Err(error) = answer {
                            tracing::warn!(%url, %error, "could not find out whether quorum queues have priorities here; giving them priority lanes");
                        }
                        tracing::info!(%url, "quorum queues have no priorities on this broker (RabbitMQ before 4.0): priority lanes, 5 and above first");
                        Some(high_exchange(main))
                    }
                }
            })
            .await;
    }

    /// Declares the high lane's exchange and binds every plugin queue declared so far
    /// on it too (lanes decided after they were declared, by a reload that brought
    /// the first quorum queue).
    pub(super) async fn bind_high_lanes(&self) -> BackendResult<()> {
        let Some(exchange) = self.high_exchange() else {
            return Ok(());
        };
        let url = &self.shared.url;
        let ch = self.open_channel().await?;
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..ExchangeDeclareOptions::default()
        };
        ch.exchange_declare(
            exchange.into(),
            ExchangeKind::Topic,
            durable,
            FieldTable::default(),
        )
        .await
        .map_err(|e| unavailable(url, &format!("declare exchange {exchange}"), e))?;
        let specs: Vec<_> = self.queues().values().cloned().collect();
        for spec in specs {
            // Declared before lanes, each is one queue: bound on the high exchange too.
            let queue = self.physical(&spec.name).normal;
            for binding in &spec.bindings {
                ch.queue_bind(
                    queue.as_str().into(),
                    exchange.into(),
                    binding.as_str().into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(|e| unavailable(url, &format!("bind queue {queue} to {binding}"), e))?;
            }
        }
        let _ = ch.close(200, "bound".into()).await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_classic_queue_is_its_own_name_and_a_quorum_queue_has_lanes_apart() {
        let classic = Physical::of("techub.order.ledger", QueueKind::Classic, true);
        assert_eq!(classic.all(), ["techub.order.ledger"]);
        assert_eq!(classic.lane(10), "techub.order.ledger");
        let quorum = Physical::of("techub.order.ledger", QueueKind::Quorum, true);
        assert_eq!(
            quorum.all(),
            [
                "techub.order.ledger.quorum",
                "techub.order.ledger.quorum.high"
            ]
        );
        assert_eq!(quorum.lane(1), "techub.order.ledger.quorum");
        assert_eq!(quorum.lane(4), "techub.order.ledger.quorum");
        assert_eq!(quorum.lane(5), "techub.order.ledger.quorum.high");
        assert_eq!(quorum.lane(10), "techub.order.ledger.quorum.high");
        let native = Physical::of("techub.order.ledger", QueueKind::Quorum, false);
        assert_eq!(native.all(), ["techub.order.ledger.quorum"]);
        assert_eq!(native.lane(10), "techub.order.ledger.quorum");
    }

    #[test]
    fn the_other_kind_names_every_queue_a_migration_may_drain() {
        assert_eq!(
            Physical::of_other_kind("q", QueueKind::Quorum),
            ["q".to_string()]
        );
        assert_eq!(
            Physical::of_other_kind("q", QueueKind::Classic),
            ["q.quorum".to_string(), "q.quorum.high".to_string()]
        );
    }
}
