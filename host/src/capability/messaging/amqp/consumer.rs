//! Consuming one RabbitMQ queue (one of those behind a plugin queue, `merged.rs`):
//! deliveries with manual ack, settled by ack, retry or dead letter.

use super::{AmqpBroker, convert, unavailable};
use crate::capability::BackendResult;
use crate::capability::messaging::{
    Buried, Consumer, DEAD_LETTER_REFUSED_PAUSE, Delivery, Envelope,
};
use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
};
use lapin::types::FieldTable;
use lapin::{Acker, Channel};
use std::time::Duration;

pub(super) struct AmqpConsumer {
    broker: AmqpBroker,
    /// The RabbitMQ queue consumed.
    queue: String,
    /// The plugin queue it is behind: retries and dead letters go by its name.
    logical: String,
    prefetch: u16,
    tag: String,
    stream: lapin::Consumer,
    // Kept so the channel (and its unacked deliveries) lives as long as the consumer.
    channel: Channel,
    /// The generation of the link it consumes on.
    generation: u64,
    /// Its stream failed and it must consume again before it reads: kept here so
    /// that a `next` dropped while it waits for the connection (the merged consumer
    /// drops those of the queues that did not deliver first) does not forget it.
    broken: bool,
}

/// A channel with the prefetch window, consuming `queue` as `tag`.
async fn subscribe(
    broker: &AmqpBroker,
    connection: &lapin::Connection,
    queue: &str,
    prefetch: u16,
    tag: &str,
) -> BackendResult<(Channel, lapin::Consumer)> {
    let url = &broker.shared.url;
    let channel = connection
        .create_channel()
        .await
        .map_err(|e| unavailable(url, "open a channel", e))?;
    channel
        .basic_qos(prefetch.max(1), BasicQosOptions::default())
        .await
        .map_err(|e| unavailable(url, "set the prefetch", e))?;
    let stream = channel
        .basic_consume(
            queue.into(),
            tag.into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|e| unavailable(url, &format!("consume {queue}"), e))?;
    Ok((channel, stream))
}

impl AmqpConsumer {
    pub(super) async fn start(
        broker: AmqpBroker,
        queue: &str,
        logical: &str,
        prefetch: u16,
    ) -> BackendResult<Self> {
        let tag = format!("techub-{}", uuid::Uuid::new_v4().simple());
        let link = broker.shared.link.load_full();
        let (channel, stream) = subscribe(&broker, &link.connection, queue, prefetch, &tag).await?;
        Ok(Self {
            broker,
            queue: queue.to_string(),
            logical: logical.to_string(),
            prefetch,
            tag,
            stream,
            channel,
            generation: link.generation,
            broken: false,
        })
    }

    /// The RabbitMQ queue it consumes.
    pub(super) fn queue(&self) -> &str {
        &self.queue
    }

    /// Consumes again on the newest healthy link (after a reconnect, or on a new
    /// channel when only this one failed, or after [`Consumer::stop`]). `false` once
    /// the broker is closed.
    pub(super) async fn resubscribe(&mut self) -> bool {
        loop {
            let Some(link) = self.broker.healthy_link().await else {
                return false;
            };
            let subscribed = subscribe(
                &self.broker,
                &link.connection,
                &self.queue,
                self.prefetch,
                &self.tag,
            )
            .await;
            match subscribed {
                Ok((channel, stream)) => {
                    (self.channel, self.stream) = (channel, stream);
                    self.generation = link.generation;
                    tracing::info!(queue = %self.queue, generation = link.generation, "consuming again");
                    return true;
                }
                Err(error) => {
                    tracing::warn!(queue = %self.queue, %error, "could not consume again; retrying");
                    tokio::time::sleep(RESUBSCRIBE_PAUSE).await;
                }
            }
        }
    }

    /// Whether the stream ended because the connection or channel under it failed
    /// (rather than the broker cancelling the consumer, e.g. its queue deleted).
    fn lost_its_link(&self) -> bool {
        let link = self.broker.shared.link.load();
        link.generation != self.generation || !link.healthy() || !self.channel.status().connected()
    }
}

/// Between two attempts to consume again on a link that just came up.
const RESUBSCRIBE_PAUSE: Duration = Duration::from_millis(200);

#[async_trait::async_trait]
impl Consumer for AmqpConsumer {
    async fn next(&mut self) -> Option<Box<dyn Delivery>> {
        loop {
            if self.broken {
                if !self.resubscribe().await {
                    return None;
                }
                self.broken = false;
            }
            match self.stream.next().await {
                Some(Ok(delivery)) => return Some(self.wrap(delivery)),
                Some(Err(error)) => {
                    tracing::warn!(queue = %self.queue, %error, "consumer interrupted; consuming again once the connection is back");
                }
                None if self.lost_its_link() => {
                    tracing::warn!(queue = %self.queue, "consumer interrupted; consuming again once the connection is back");
                }
                None => return None,
            }
            self.broken = true;
        }
    }

    async fn stop(&mut self) {
        self.cancel().await;
    }

    async fn close(self: Box<Self>) {
        // Deliveries received but not handed out go back to the queue.
        let _ = self.channel.close(200, "consumer closed".into()).await;
    }
}

impl AmqpConsumer {
    /// Stops the broker sending more; buffered deliveries stay unacked until close.
    async fn cancel(&mut self) {
        if let Err(error) = self
            .channel
            .basic_cancel(self.tag.as_str().into(), BasicCancelOptions::default())
            .await
        {
            tracing::warn!(queue = %self.queue, %error, "could not cancel the consumer; closing its channel will");
        }
    }

    fn wrap(&self, delivery: lapin::message::Delivery) -> Box<dyn Delivery> {
        // Retries come back through the default exchange (the retry queue dead-letters
        // to it); everything else entered through the main exchange.
        let origin = match delivery.exchange.as_str() {
            "" => convert::Origin::Host,
            _ => convert::Origin::Exchange,
        };
        let envelope = convert::envelope(
            &delivery.routing_key,
            &delivery.properties,
            delivery.data,
            origin,
        );
        Box::new(AmqpDelivery {
            broker: self.broker.clone(),
            queue: self.queue.clone(),
            logical: self.logical.clone(),
            envelope,
            redelivered: delivery.redelivered,
            acker: Some(delivery.acker),
        })
    }
}

struct AmqpDelivery {
    broker: AmqpBroker,
    /// The RabbitMQ queue it came from.
    queue: String,
    /// The plugin queue: retried into its lane now, dead-lettered under its name.
    logical: String,
    envelope: Envelope,
    redelivered: bool,
    acker: Option<Acker>,
}

impl AmqpDelivery {
    async fn ack(&mut self) -> BackendResult<()> {
        let url = &self.broker.shared.url;
        let acker = self
            .acker
            .take()
            .expect("a delivery is settled once: settling consumes it");
        // Bounded: lapin resolves an ack once its frame is written, and an ack sent
        // as the connection broke was seen to wait for ever, holding the consumer
        // (and with a window of one, the plugin) before it could notice the break.
        let wait = self.broker.shared.confirm_timeout;
        match tokio::time::timeout(wait, acker.ack(BasicAckOptions::default())).await {
            Ok(acked) => acked.map(|_| ()).map_err(|e| unavailable(url, "ack", e)),
            Err(_) => Err(unavailable(
                url,
                "ack",
                format!(
                    "no answer within {} ms; the broker redelivers the message",
                    wait.as_millis()
                ),
            )),
        }
    }
}

#[async_trait::async_trait]
impl Delivery for AmqpDelivery {
    fn envelope(&self) -> &Envelope {
        &self.envelope
    }

    fn envelope_mut(&mut self) -> &mut Envelope {
        &mut self.envelope
    }

    fn redelivered(&self) -> bool {
        self.redelivered
    }

    async fn ack(mut self: Box<Self>) -> BackendResult<()> {
        AmqpDelivery::ack(&mut self).await
    }

    async fn retry(mut self: Box<Self>, delay: Duration) -> BackendResult<()> {
        // Changed in place, not copied (the payload may be large): a failed send drops
        // this delivery unsettled, and the broker delivers the original again.
        self.envelope.attempt += 1;
        self.envelope.expiration_ms = None;
        // Confirmed copy first, then ack: a crash in between duplicates, never loses.
        self.broker
            .send_retry(&self.logical, &self.envelope, delay)
            .await?;
        AmqpDelivery::ack(&mut self).await
    }

    async fn dead_letter(mut self: Box<Self>, reason: &str) -> BackendResult<Buried> {
        // A dead letter is parked no more: its reason travels as the death reason.
        self.envelope.parked = None;
        let stored = self
            .broker
            .send_dead_letter(&self.logical, &self.envelope, reason)
            .await;
        let parked = match stored {
            Ok(true) => {
                AmqpDelivery::ack(&mut self).await?;
                return Ok(Buried::DeadLettered);
            }
            Ok(false) => {
                let when_full = self.broker.dead_letter_config().retry_when_full_ms;
                let when_full = Duration::from_millis(when_full);
                // Full: wait in the retry queue (confirmed before the ack), at the
                // attempt it died at, marked to be dead-lettered again on return.
                self.envelope.parked = Some(reason.to_string());
                self.broker
                    .send_retry(&self.logical, &self.envelope, when_full)
                    .await
            }
            Err(error) => Err(error),
        };
        match parked {
            Ok(()) => {
                AmqpDelivery::ack(&mut self).await?;
                tracing::warn!(queue = %self.queue, id = %self.envelope.id, "parked in the retry queue until the dead-letter queue has room");
                Ok(Buried::Parked)
            }
            Err(error) => {
                // Unsettled, it goes back to its queue when dropped: after a pause, so
                // that a failing broker does not spin the consumer.
                tokio::time::sleep(DEAD_LETTER_REFUSED_PAUSE).await;
                Err(error)
            }
        }
    }
}

impl Drop for AmqpDelivery {
    fn drop(&mut self) {
        // Unsettled (e.g. settling failed): hand it back to the broker now rather than
        // when the channel closes.
        if let Some(acker) = self.acker.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(async move {
                let _ = acker
                    .nack(BasicNackOptions {
                        requeue: true,
                        ..BasicNackOptions::default()
                    })
                    .await;
            });
        }
    }
}
