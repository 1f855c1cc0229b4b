//! The host's reply queue: exclusive (only this connection reads it) and auto-delete
//! (gone with the host), consumed without acks (a reply whose caller is gone is
//! worthless); and replies, sent straight to a reply queue through the default
//! exchange, confirmed like every publish.

use super::publish::Sent;
use super::{AmqpBroker, convert, unavailable};
use crate::capability::BackendResult;
use crate::capability::messaging::{Envelope, ReplyInbox};
use futures::StreamExt;
use lapin::options::{BasicConsumeOptions, QueueDeclareOptions};
use lapin::types::FieldTable;

/// Most replies read from the broker and not yet matched to their requests.
const REPLY_BACKLOG: usize = 1024;

impl AmqpBroker {
    pub(super) async fn open_reply_queue(&self, name: &str) -> BackendResult<ReplyInbox> {
        // The channel is kept beside its stream, for as long as it is consumed.
        let (mut _channel, mut stream) = self.consume_replies(name).await?;
        let (sender, inbox) = tokio::sync::mpsc::channel(REPLY_BACKLOG);
        let queue = name.to_string();
        let broker = self.clone();
        tokio::spawn(async move {
            loop {
                match stream.next().await {
                    Some(Ok(delivery)) => {
                        let envelope = convert::envelope(
                            &delivery.routing_key,
                            &delivery.properties,
                            delivery.data,
                            convert::Origin::Host,
                        );
                        if sender.send(envelope).await.is_err() {
                            return;
                        }
                    }
                    // The connection failed: the queue (exclusive) went with it. Declare
                    // it again on the next connection; requests waiting meanwhile time
                    // out, and replies sent to the old queue are lost with it.
                    Some(Err(_)) | None if broker.is_closing() => return,
                    Some(Err(_)) | None => {
                        tracing::warn!(%queue, "reply queue interrupted; declaring it again once the connection is back");
                        (_channel, stream) = loop {
                            if broker.healthy_link().await.is_none() || sender.is_closed() {
                                return;
                            }
                            match broker.consume_replies(&queue).await {
                                Ok(consuming) => break consuming,
                                Err(error) => {
                                    tracing::warn!(%queue, %error, "could not declare the reply queue again; retrying");
                                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                                }
                            }
                        };
                    }
                }
            }
        });
        Ok(inbox)
    }

    /// Declares the reply queue `name` (exclusive, auto-delete) and consumes it without
    /// acks.
    async fn consume_replies(
        &self,
        name: &str,
    ) -> BackendResult<(lapin::Channel, lapin::Consumer)> {
        let url = &self.shared.url;
        let channel = self.open_channel().await?;
        channel
            .queue_declare(
                name.into(),
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(|e| unavailable(url, &format!("declare the reply queue {name}"), e))?;
        let stream = channel
            .basic_consume(
                name.into(),
                "techub-replies".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..BasicConsumeOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(|e| unavailable(url, &format!("consume the reply queue {name}"), e))?;
        Ok((channel, stream))
    }

    pub(super) async fn send_reply(&self, to: &str, envelope: Envelope) -> BackendResult<()> {
        let props = convert::properties(&envelope, &[]);
        match self
            .send(
                super::link::Lane::Messages,
                "",
                to,
                &envelope.payload,
                props,
                false,
            )
            .await?
        {
            Sent::Nacked => Err(self.nacked()),
            Sent::Routed | Sent::Returned => Ok(()),
        }
    }
}
