//! Publishing: every message waits for the broker's confirm; retries, delays and dead
//! letters are mandatory, so a missing queue is noticed instead of dropping them.

use super::convert::{self, string, table};
use super::link::Lane;
use super::{AmqpBroker, Declared, IDLE_QUEUE_EXPIRY_MS, unavailable};
use crate::capability::BackendResult;
use crate::capability::messaging::Envelope;
use crate::metrics::AmqpEvent;
use lapin::BasicProperties;
use lapin::options::BasicPublishOptions;
use lapin::types::AMQPValue;
use std::time::Duration;

/// What became of a confirmed publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sent {
    /// A queue took it (or, not mandatory, no queue was bound).
    Routed,
    /// Mandatory, and no queue took it: it came back.
    Returned,
    /// The broker refused it (a full queue with `reject-publish`, or an internal error).
    Nacked,
}

impl AmqpBroker {
    /// Replaces `nacked`, the publisher channel of `link`, with a new one on the same
    /// connection, once: publishes nacked together renew it once. A failure leaves
    /// the channel as it is, and a broken link to the supervisor.
    async fn renew_publisher(
        &self,
        link: &super::link::Link,
        lane: Lane,
        nacked: &std::sync::Arc<lapin::Channel>,
    ) {
        let current = link.channel(lane);
        // Only where quorum queues are: a classic queue's nack (a full queue) is
        // what it says, and its channel is fine.
        if !self.uses_quorum() || !std::sync::Arc::ptr_eq(&current.load(), nacked) {
            return;
        }
        let Ok(channel) = link.connection.create_channel().await else {
            return;
        };
        if channel
            .confirm_select(lapin::options::ConfirmSelectOptions::default())
            .await
            .is_err()
        {
            return;
        }
        let previous = current.compare_and_swap(nacked, std::sync::Arc::new(channel));
        if std::sync::Arc::ptr_eq(&previous, nacked) {
            // Closed once the publishes still waiting on it have their confirms.
            let (nacked, wait) = (nacked.clone(), self.shared.confirm_timeout);
            tokio::spawn(async move {
                tokio::time::sleep(wait).await;
                let _ = nacked.close(200, "renewed after a nack".into()).await;
            });
        }
    }

    pub(super) fn nacked(&self) -> crate::capability::BackendError {
        unavailable(
            &self.shared.url,
            "publish",
            "the broker refused the message (nack)",
        )
    }

    /// Publishes and waits for the broker's confirm. With `mandatory`, a message that
    /// no queue takes comes back ([`Sent::Returned`]); without, it is dropped (a topic
    /// publish nobody subscribes to) and counts as routed.
    pub(crate) async fn send(
        &self,
        lane: Lane,
        exchange: &str,
        routing_key: &str,
        payload: &[u8],
        props: BasicProperties,
        mandatory: bool,
    ) -> BackendResult<Sent> {
        let shared = &self.shared;
        let options = BasicPublishOptions {
            mandatory,
            ..BasicPublishOptions::default()
        };
        let metrics = &shared.metrics;
        let confirm = async {
            metrics.amqp(AmqpEvent::Publish);
            let link = shared.link.load_full();
            let channel = link.channel(lane).load_full();
            let pending = channel
                .basic_publish(exchange.into(), routing_key.into(), options, payload, props)
                .await
                .map_err(|e| unavailable(&shared.url, "publish", e))?;
            let confirmation = pending
                .await
                .map_err(|e| unavailable(&shared.url, "confirm a publish", e))?;
            if confirmation.is_nack() {
                metrics.amqp(AmqpEvent::Nack);
                // A quorum queue's channel was seen to nack every publish after a
                // node of the cluster died (RabbitMQ 3.10): the next publish gets a
                // channel of its own.
                self.renew_publisher(&link, lane, &channel).await;
                return Ok(Sent::Nacked);
            }
            metrics.amqp(AmqpEvent::Confirm);
            Ok(match confirmation.take_message() {
                None => Sent::Routed,
                Some(_) => {
                    metrics.amqp(AmqpEvent::Return);
                    Sent::Returned
                }
            })
        };
        tokio::time::timeout(shared.confirm_timeout, confirm)
            .await
            .unwrap_or_else(|_| {
                Err(unavailable(
                    &shared.url,
                    "publish",
                    format!(
                        "no confirm within {} ms",
                        shared.confirm_timeout.as_millis()
                    ),
                ))
            })
    }

    /// Publishes to a queue the host declares on demand (retry and delay queues), as
    /// mandatory: if the queue is gone (they expire when idle), it is declared again and
    /// the message sent once more, so that a retry or a delayed message is never
    /// dropped for want of its queue.
    pub(super) async fn send_via(
        &self,
        queue: &Declared<'_>,
        exchange: &str,
        routing_key: &str,
        payload: &[u8],
        props: BasicProperties,
    ) -> BackendResult<()> {
        for _ in 0..2 {
            self.declare_once(queue.name, queue.args.clone(), queue.bind.clone())
                .await?;
            match self
                .send(
                    Lane::Messages,
                    exchange,
                    routing_key,
                    payload,
                    props.clone(),
                    true,
                )
                .await?
            {
                Sent::Routed => return Ok(()),
                Sent::Nacked => return Err(self.nacked()),
                Sent::Returned => {}
            }
            self.shared
                .declared
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(queue.name);
        }
        Err(unavailable(
            &self.shared.url,
            &format!("route to {}", queue.name),
            "the broker returned the message",
        ))
    }

    /// Sends `envelope` to plugin queue `logical` again after `delay`, through the
    /// retry queue of the queue behind it that takes its priority now (an old queue
    /// being drained gets no retries: they come back to the new one).
    pub(crate) async fn send_retry(
        &self,
        logical: &str,
        envelope: &Envelope,
        delay: Duration,
    ) -> BackendResult<()> {
        let delay_ms = (delay.as_millis() as u64).max(1);
        let physical = self.physical(logical);
        let queue = physical.lane(envelope.priority);
        let retry_queue = format!("{queue}.retry.{delay_ms}");
        let names = &self.shared.names;
        let mut args = super::kind::arguments(
            self.kind_of_queue(logical),
            super::kind::Role::Waiting,
            names.delivery_limit,
        );
        args.extend([
            ("x-message-ttl", AMQPValue::LongLongInt(delay_ms as i64)),
            ("x-dead-letter-exchange", string("")),
            ("x-dead-letter-routing-key", string(queue)),
            (
                "x-expires",
                AMQPValue::LongLongInt((delay_ms + IDLE_QUEUE_EXPIRY_MS) as i64),
            ),
        ]);
        let args = table(&args);
        let declared = Declared {
            name: &retry_queue,
            args,
            bind: None,
        };
        self.send_via(
            &declared,
            "",
            &retry_queue,
            &envelope.payload,
            convert::properties(envelope, &[]),
        )
        .await
    }

    /// Parks `envelope` in the dead-letter queue; `false` when the queue is full and
    /// refused it (`reject-publish`).
    pub(crate) async fn send_dead_letter(
        &self,
        queue: &str,
        envelope: &Envelope,
        reason: &str,
    ) -> BackendResult<bool> {
        let extra = [
            (
                crate::capability::messaging::DEATH_REASON_HEADER,
                reason.to_string(),
            ),
            (
                crate::capability::messaging::DEATH_QUEUE_HEADER,
                queue.to_string(),
            ),
            (
                crate::capability::messaging::DEATH_AT_HEADER,
                crate::capability::messaging::now_ms().to_string(),
            ),
            (
                super::seal::SEAL_HEADER,
                self.shared.seal.seal(queue, envelope),
            ),
        ];
        let letter = convert::properties(envelope, &extra);
        // Mandatory: if the dead-letter queue is gone, the delivery stays unsettled and
        // comes back, rather than being acked into nowhere. A nack means the queue is
        // full (`reject-publish`): counted, and the caller parks the message.
        let sent = self
            .send(
                Lane::DeadLetters,
                &self.shared.names.dead_letter_exchange,
                &format!("dlx.{queue}"),
                &envelope.payload,
                letter,
                true,
            )
            .await?;
        match sent {
            Sent::Routed => Ok(true),
            Sent::Nacked => {
                let refused = self
                    .shared
                    .dead_letters_refused
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                    + 1;
                tracing::error!(%queue, id = %envelope.id, refused, "the dead-letter queue is full and refused a dead letter");
                Ok(false)
            }
            Sent::Returned => Err(unavailable(
                &self.shared.url,
                "dead-letter",
                "no dead-letter queue took the message",
            )),
        }
    }
}
