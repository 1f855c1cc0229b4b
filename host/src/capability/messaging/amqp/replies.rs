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
        let mut stream = channel
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
        let (sender, inbox) = tokio::sync::mpsc::channel(REPLY_BACKLOG);
        let queue = name.to_string();
        tokio::spawn(async move {
            while let Some(next) = stream.next().await {
                match next {
                    Ok(delivery) => {
                        let envelope = convert::envelope(
                            &delivery.routing_key,
                            &delivery.properties,
                            delivery.data,
                            convert::Origin::Host,
                        );
                        if sender.send(envelope).await.is_err() {
                            break;
                        }
                    }
                    // lapin recovers the connection and redeclares the queue and this
                    // consumer; requests waiting meanwhile time out.
                    Err(error) => {
                        tracing::warn!(%queue, %error, "reply queue interrupted; waiting for the connection to recover");
                        if let Err(error) = channel.wait_for_recovery(error).await {
                            tracing::error!(%queue, %error, "reply queue lost for good: requests will time out");
                            break;
                        }
                    }
                }
            }
        });
        Ok(inbox)
    }

    pub(super) async fn send_reply(&self, to: &str, envelope: Envelope) -> BackendResult<()> {
        let props = convert::properties(&envelope, &[]);
        match self.send("", to, &envelope.payload, props, false).await? {
            Sent::Nacked => Err(self.nacked()),
            Sent::Routed | Sent::Returned => Ok(()),
        }
    }
}
