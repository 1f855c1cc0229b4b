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
//! and above before the rest. Where the broker has none (found out when the first
//! quorum queue is declared, `kind::quorum_priorities`), the host gives quorum queues
//! the same two levels itself. Every publish of priority 5 and above carries the
//! header `techub-lane: high` (whoever consumes it, so that publishers need not
//! know), and a quorum queue with lanes is reached through a router of its own:
//!
//! ```text
//! techub.main ──(its patterns)──▶ <name>.quorum.lanes (headers)
//!     techub-lane = high ──▶ <name>.quorum.high
//!     anything else ──(alternate exchange)──▶ <name>.quorum.lanes.rest (fanout) ──▶ <name>.quorum
//! ```
//!
//! so a message without the header (another publisher, an older host) goes to the
//! normal lane, and nothing depends on which hosts know about lanes. The consumer
//! takes the high lane first (`merged.rs`), without starving the other.

use super::convert::{string, table};
use super::{AmqpBroker, unavailable};
use crate::capability::BackendResult;
use crate::config::QueueKind;
use lapin::ExchangeKind;
use lapin::options::{
    ExchangeBindOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, ExchangeUnbindOptions,
    QueueBindOptions,
};
use lapin::types::FieldTable;

/// The first priority of the high lane (RabbitMQ 4's first "high" priority).
pub(super) const HIGH_LANE_FROM: u8 = 5;
/// The header that sends a message to the high lane, and its value. Not `x-`: a
/// headers exchange leaves those out of its matching (RabbitMQ 3.x).
pub(super) const LANE_HEADER: &str = "techub-lane";
pub(super) const HIGH_LANE: &str = "high";

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

    /// With lanes, the router's exchanges: the headers exchange the patterns are
    /// bound to, and its alternate (the normal lane's way in).
    pub fn router(&self) -> Option<(String, String)> {
        self.high.as_ref()?;
        let lanes = format!("{}.lanes", self.normal);
        let rest = format!("{lanes}.rest");
        Some((lanes, rest))
    }

    /// The queue a message of `priority` goes to (and is retried in).
    pub fn lane(&self, priority: u8) -> &str {
        match &self.high {
            Some(high) if priority >= HIGH_LANE_FROM => high,
            _ => &self.normal,
        }
    }
}

impl AmqpBroker {
    /// Decides once whether quorum queues get priority lanes: where the broker has no
    /// priorities of its own on them.
    pub(super) async fn decide_lanes(&self) {
        let url = &self.shared.url;
        self.shared
            .lanes
            .get_or_init(|| async {
                let connection = &self.shared.link.load().connection;
                match super::kind::quorum_priorities(connection).await {
                    Ok(true) => {
                        tracing::info!(%url, "quorum queues have priorities on this broker (RabbitMQ 4 or later): two levels, 5 and above first");
                        false
                    }
                    answer => {
                        if let Err(error) = answer {
                            tracing::warn!(%url, %error, "could not find out whether quorum queues have priorities here; giving them priority lanes");
                        }
                        tracing::info!(%url, "quorum queues have no priorities on this broker (RabbitMQ before 4.0): priority lanes, 5 and above first");
                        true
                    }
                }
            })
            .await;
    }

    /// Routes `patterns` of the main exchange to the queues `physical`: straight to
    /// the queue, or through its lane router (declared here).
    pub(super) async fn route(
        &self,
        physical: &Physical,
        patterns: &[String],
    ) -> BackendResult<()> {
        let url = &self.shared.url;
        let main = self.shared.names.main_exchange.as_str();
        let ch = self.open_channel().await?;
        let failed = |what: String| move |e| unavailable(url, &what, e);
        let Some((lanes, rest)) = physical.router() else {
            for pattern in patterns {
                ch.queue_bind(
                    physical.normal.as_str().into(),
                    main.into(),
                    pattern.as_str().into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(failed(format!(
                    "bind queue {} to {pattern}",
                    physical.normal
                )))?;
            }
            let _ = ch.close(200, "bound".into()).await;
            return Ok(());
        };
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..ExchangeDeclareOptions::default()
        };
        ch.exchange_declare(
            rest.as_str().into(),
            ExchangeKind::Fanout,
            durable,
            FieldTable::default(),
        )
        .await
        .map_err(failed(format!("declare exchange {rest}")))?;
        let alternate = table(&[("alternate-exchange", string(&rest))]);
        ch.exchange_declare(
            lanes.as_str().into(),
            ExchangeKind::Headers,
            durable,
            alternate,
        )
        .await
        .map_err(failed(format!("declare exchange {lanes}")))?;
        ch.queue_bind(
            physical.normal.as_str().into(),
            rest.as_str().into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(failed(format!("bind queue {}", physical.normal)))?;
        let high = physical.high.as_deref().unwrap_or_default();
        let high_only = table(&[("x-match", string("all")), (LANE_HEADER, string(HIGH_LANE))]);
        ch.queue_bind(
            high.into(),
            lanes.as_str().into(),
            "".into(),
            QueueBindOptions::default(),
            high_only,
        )
        .await
        .map_err(failed(format!("bind queue {high}")))?;
        for pattern in patterns {
            ch.exchange_bind(
                lanes.as_str().into(),
                main.into(),
                pattern.as_str().into(),
                ExchangeBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(failed(format!("bind {lanes} to {pattern}")))?;
        }
        let _ = ch.close(200, "bound".into()).await;
        Ok(())
    }

    /// Undoes [`Self::route`] for `patterns`.
    pub(super) async fn unroute(
        &self,
        physical: &Physical,
        patterns: &[String],
    ) -> BackendResult<()> {
        let url = &self.shared.url;
        let main = self.shared.names.main_exchange.as_str();
        let ch = self.open_channel().await?;
        for pattern in patterns {
            let unbound = match physical.router() {
                None => {
                    ch.queue_unbind(
                        physical.normal.as_str().into(),
                        main.into(),
                        pattern.as_str().into(),
                        FieldTable::default(),
                    )
                    .await
                }
                Some((lanes, _)) => {
                    ch.exchange_unbind(
                        lanes.as_str().into(),
                        main.into(),
                        pattern.as_str().into(),
                        ExchangeUnbindOptions::default(),
                        FieldTable::default(),
                    )
                    .await
                }
            };
            unbound.map_err(|e| unavailable(url, &format!("unbind {pattern}"), e))?;
        }
        let _ = ch.close(200, "unbound".into()).await;
        Ok(())
    }

    /// Deletes the lane router of plugin queue `logical`, if it has one (with the
    /// queue: an exchange that is not there closes only its own channel).
    pub(super) async fn delete_lane_router(&self, logical: &str) {
        let quorum = Physical::of(logical, QueueKind::Quorum, true);
        let Some((lanes, rest)) = quorum.router() else {
            return;
        };
        for exchange in [lanes, rest] {
            let Ok(ch) = self.open_channel().await else {
                return;
            };
            let _ = ch
                .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
                .await;
            if ch.status().connected() {
                let _ = ch.close(200, "deleted".into()).await;
            }
        }
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
