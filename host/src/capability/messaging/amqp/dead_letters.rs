//! The dead-letter queue on RabbitMQ: reading it page by page, replaying and purging
//! letters, and queue depths.
//!
//! Every pass runs on a channel of its own with `basic.get` without ack: a letter to
//! keep stays unacknowledged until the channel closes, which puts it back where it
//! was; a letter to remove is acked, and a replayed one only after the broker
//! confirmed its republish.

use super::publish::Sent;
use super::{AmqpBroker, convert, unavailable};
use crate::capability::BackendResult;
use crate::capability::messaging::{
    DEATH_AT_HEADER, DEATH_QUEUE_HEADER, DEATH_REASON_HEADER, DeadLetter, DeadLetterAction,
    DeadLetterPicker, ReplayTo, Reworked,
};
use lapin::options::{BasicAckOptions, BasicGetOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Channel, ErrorKind};

/// Most letters one pass looks at (the specification's dead-letter queue holds 10 000).
const MAX_PASS: usize = 100_000;
/// How long a pass waits for the letters it left to be back in the queue.
const RETURN_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

impl AmqpBroker {
    /// The next letter of the dead-letter queue on `channel`, unacknowledged.
    async fn next_letter(
        &self,
        channel: &Channel,
    ) -> BackendResult<Option<(DeadLetter, lapin::Acker)>> {
        let got = channel
            .basic_get(
                self.shared.names.dead_letter_queue.as_str().into(),
                BasicGetOptions { no_ack: false },
            )
            .await
            .map_err(|e| unavailable(&self.shared.url, "read the dead-letter queue", e))?;
        let Some(message) = got else { return Ok(None) };
        let delivery = message.delivery;
        let props = &delivery.properties;
        let envelope = convert::envelope(
            &delivery.routing_key,
            props,
            delivery.data.clone(),
            convert::Origin::Host,
        );
        // The host's headers when it dead-lettered the message; RabbitMQ's `x-death`
        // when the broker did (a TTL ran out, a full queue).
        let by_broker = convert::broker_death(props);
        // A plugin queue dead-letters under `dlx.<its name>` whichever queue behind it
        // the message was in (`physical.rs`); `x-death` names that queue.
        let routed_as = delivery.routing_key.as_str().strip_prefix("dlx.");
        let mut letter = DeadLetter {
            queue: convert::header(props, DEATH_QUEUE_HEADER)
                .or_else(|| routed_as.map(str::to_string))
                .or_else(|| by_broker.as_ref().map(|(_, queue)| queue.clone()))
                .unwrap_or_else(|| delivery.routing_key.to_string()),
            reason: convert::header(props, DEATH_REASON_HEADER)
                .or_else(|| by_broker.map(|(reason, _)| reason))
                .unwrap_or_else(|| "dead-lettered by the broker".to_string()),
            died_at_ms: convert::header(props, DEATH_AT_HEADER)
                .and_then(|ms| ms.parse().ok())
                .unwrap_or(envelope.published_at_ms),
            envelope,
            trusted: false,
        };
        // Only a letter the host sealed is trusted (see `seal.rs`).
        letter.trusted = convert::header(props, super::seal::SEAL_HEADER).is_some_and(|seal| {
            self.shared
                .seal
                .verify(&letter.queue, &letter.envelope, &seal)
        });
        Ok(Some((letter, delivery.acker)))
    }

    /// Up to `limit` letters after the first `offset`, left in place.
    pub(super) async fn peek_dead_letters(
        &self,
        offset: usize,
        limit: usize,
    ) -> BackendResult<Vec<DeadLetter>> {
        let before = self.dead_letter_ready().await?;
        let channel = self.open_channel().await?;
        let mut letters = Vec::new();
        let mut seen = 0;
        while letters.len() < limit && seen < MAX_PASS {
            let Some((letter, _acker)) = self.next_letter(&channel).await? else {
                break;
            };
            seen += 1;
            if seen > offset {
                letters.push(letter);
            }
        }
        // Closing puts every letter back where it was.
        let _ = channel.close(200, "peek done".into()).await;
        self.letters_returned(before).await;
        Ok(letters)
    }

    /// One pass over the letters present when it starts, each once, doing what `pick`
    /// says with it. A replayed letter that fails again is dead-lettered behind them,
    /// so the pass ends before it (and should a letter of this pass come round again
    /// all the same, the pass stops there): it waits for the next replay instead of
    /// being run again and again within this one.
    pub(super) async fn rework(&self, pick: &DeadLetterPicker<'_>) -> BackendResult<Reworked> {
        let present = self
            .depth(&self.shared.names.dead_letter_queue)
            .await?
            .unwrap_or(0);
        let channel = self.open_channel().await?;
        let mut done = Reworked::default();
        let mut replayed = std::collections::HashSet::new();
        let url = &self.shared.url;
        for _ in 0..(present as usize).min(MAX_PASS) {
            let Some((letter, acker)) = self.next_letter(&channel).await? else {
                break;
            };
            let id = letter.envelope.id.clone();
            if replayed.contains(&id) {
                // Back already: left unacknowledged, it returns to the queue.
                done.kept += 1;
                break;
            }
            match pick(&letter) {
                DeadLetterAction::Keep => done.kept += 1,
                DeadLetterAction::Purge => {
                    acker
                        .ack(BasicAckOptions::default())
                        .await
                        .map_err(|e| unavailable(url, "remove a dead letter", e))?;
                    done.purged += 1;
                }
                DeadLetterAction::Replay(to) => match self.replay(&letter, &to).await {
                    Ok(queue) => {
                        // Confirmed: only now does the letter leave the queue. Should
                        // this ack fail, the letter stays too (replayed twice, never lost).
                        acker
                            .ack(BasicAckOptions::default())
                            .await
                            .map_err(|e| unavailable(url, "remove a replayed dead letter", e))?;
                        replayed.insert(id.clone());
                        done.replayed.push((id, queue));
                    }
                    Err(error) => {
                        done.errors.push(format!("{id}: {error}"));
                        done.kept += 1;
                    }
                },
            }
        }
        let _ = channel.close(200, "dead-letter pass done".into()).await;
        let removed = done.purged + done.replayed.len() as u64;
        self.letters_returned(present.saturating_sub(removed)).await;
        Ok(done)
    }

    /// Letters ready in the dead-letter queue.
    async fn dead_letter_ready(&self) -> BackendResult<u64> {
        let queue = &self.shared.names.dead_letter_queue;
        Ok(self.depth(queue).await?.unwrap_or(0))
    }

    /// Waits (at most [`RETURN_WAIT`]) until at least `count` letters are ready
    /// again. A quorum queue takes back the letters of a closed channel
    /// asynchronously: a pass that starts right after another could otherwise miss
    /// the ones still on their way back (seen in CI).
    async fn letters_returned(&self, count: u64) {
        let deadline = tokio::time::Instant::now() + RETURN_WAIT;
        while tokio::time::Instant::now() < deadline {
            match self.dead_letter_ready().await {
                Ok(ready) if ready < count => {
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
                _ => return,
            }
        }
    }

    /// Publishes `letter` again as a first attempt and waits for the confirm; the
    /// queue it now waits in, when it went to one queue.
    async fn replay(&self, letter: &DeadLetter, to: &ReplayTo) -> Result<Option<String>, String> {
        let mut envelope = letter.envelope.clone();
        envelope.attempt = 1;
        envelope.expiration_ms = None;
        let (exchange, routing_key, mandatory, queue) = match to {
            // The default exchange reaches exactly that queue (and the routing-key
            // header keeps the original key for the handler).
            // (The queue behind the plugin queue that takes its priority.)
            ReplayTo::Queue => (
                "",
                self.resolve(&letter.queue)
                    .await
                    .map_err(|e| e.to_string())?
                    .lane(envelope.priority)
                    .to_string(),
                true,
                Some(letter.queue.clone()),
            ),
            ReplayTo::RoutingKey(key) => {
                envelope.routing_key = key.clone();
                (
                    self.shared.names.main_exchange.as_str(),
                    key.clone(),
                    false,
                    None,
                )
            }
        };
        let sent = self
            .send(
                super::link::Lane::Messages,
                exchange,
                &routing_key,
                &envelope.payload,
                convert::properties(&envelope, &[]),
                mandatory,
            )
            .await
            .map_err(|e| e.to_string())?;
        match sent {
            Sent::Routed => Ok(queue),
            Sent::Nacked => Err("the broker refused the republish (nack)".to_string()),
            Sent::Returned => Err(format!(
                "queue {} no longer exists; replay it with a routing key",
                letter.queue
            )),
        }
    }

    /// Messages ready in `queue` (a passive declare); `None` when it does not exist.
    pub(super) async fn depth(&self, queue: &str) -> BackendResult<Option<u64>> {
        Ok(self.queue_state(queue).await?.map(|(ready, _)| ready))
    }

    /// Messages ready in `queue` and its consumers (a passive declare); `None` when it
    /// does not exist.
    pub(super) async fn queue_state(&self, queue: &str) -> BackendResult<Option<(u64, u32)>> {
        // A passive declare of a missing queue closes its channel: use a fresh one.
        let channel = self.open_channel().await?;
        let options = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        let declared = channel
            .queue_declare(queue.into(), options, FieldTable::default())
            .await;
        let depth = match declared {
            Ok(q) => Some((u64::from(q.message_count()), q.consumer_count())),
            Err(error) => match error.kind() {
                ErrorKind::ProtocolError(e) if e.get_id() == 404 => None,
                _ => {
                    return Err(unavailable(
                        &self.shared.url,
                        &format!("read the depth of {queue}"),
                        error,
                    ));
                }
            },
        };
        if channel.status().connected() {
            let _ = channel.close(200, "depth read".into()).await;
        }
        Ok(depth)
    }
}
