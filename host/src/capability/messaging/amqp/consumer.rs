//! Consuming a queue: deliveries with manual ack, settled by ack, retry or dead letter.

use super::{AmqpBroker, convert, unavailable};
use crate::capability::BackendResult;
use crate::capability::messaging::{Consumer, DEAD_LETTER_REFUSED_PAUSE, Delivery, Envelope};
use crate::metrics::AmqpEvent;
use futures::StreamExt;
use lapin::options::{BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions};
use lapin::types::FieldTable;
use lapin::{Acker, Channel};
use std::time::Duration;

pub(super) struct AmqpConsumer {
    broker: AmqpBroker,
    queue: String,
    stream: lapin::Consumer,
    // Kept so the channel (and its unacked deliveries) lives as long as the consumer,
    // and to wait on its recovery.
    channel: Channel,
}

impl AmqpConsumer {
    pub(super) async fn start(
        broker: AmqpBroker,
        channel: Channel,
        queue: &str,
    ) -> BackendResult<Self> {
        let tag = format!("techub-{}", uuid::Uuid::new_v4().simple());
        let stream = channel
            .basic_consume(
                queue.into(),
                tag.as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| unavailable(&broker.shared.url, &format!("consume {queue}"), e))?;
        Ok(Self {
            broker,
            queue: queue.to_string(),
            stream,
            channel,
        })
    }
}

#[async_trait::async_trait]
impl Consumer for AmqpConsumer {
    async fn next(&mut self) -> Option<Box<dyn Delivery>> {
        loop {
            match self.stream.next().await? {
                Ok(delivery) => return Some(self.wrap(delivery)),
                Err(error) => {
                    tracing::warn!(queue = %self.queue, %error, "consumer interrupted; waiting for the connection to recover");
                    if let Err(error) = self.channel.wait_for_recovery(error).await {
                        tracing::error!(queue = %self.queue, %error, "consumer lost for good");
                        return None;
                    }
                    self.broker.shared.metrics.amqp(AmqpEvent::Reconnect);
                    tracing::info!(queue = %self.queue, "consumer recovered");
                }
            }
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
        let tag = self.stream.tag();
        if let Err(error) = self
            .channel
            .basic_cancel(tag, BasicCancelOptions::default())
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
            envelope,
            redelivered: delivery.redelivered,
            acker: Some(delivery.acker),
        })
    }
}

struct AmqpDelivery {
    broker: AmqpBroker,
    queue: String,
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
        acker
            .ack(BasicAckOptions::default())
            .await
            .map_err(|e| unavailable(url, "ack", e))?;
        Ok(())
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
        let mut next = self.envelope.clone();
        next.attempt += 1;
        next.expiration_ms = None;
        // Confirmed copy first, then ack: a crash in between duplicates, never loses.
        self.broker.send_retry(&self.queue, &next, delay).await?;
        AmqpDelivery::ack(&mut self).await
    }

    async fn dead_letter(mut self: Box<Self>, reason: &str) -> BackendResult<()> {
        if let Err(error) = self
            .broker
            .send_dead_letter(&self.queue, &self.envelope, reason)
            .await
        {
            // Unsettled, it goes back to its queue when dropped: after a pause, so that
            // a full dead-letter queue does not spin the consumer.
            tokio::time::sleep(DEAD_LETTER_REFUSED_PAUSE).await;
            return Err(error);
        }
        AmqpDelivery::ack(&mut self).await
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
