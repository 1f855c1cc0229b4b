//! Declarations: the fixed topology at start, and the queues declared on demand, each
//! on a short-lived channel so that a refused declaration cannot close the channel
//! the host publishes on.

use super::convert::{string, table};
use super::{AmqpBroker, unavailable};
use crate::capability::BackendResult;
use crate::config::DeadLetterConfig;
use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, ExchangeKind};

impl AmqpBroker {
    pub(super) async fn declare_topology(
        &self,
        dead_letter: DeadLetterConfig,
    ) -> BackendResult<()> {
        let ch = &self.shared.publisher;
        let url = &self.shared.url;
        let n = &self.shared.names;
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..ExchangeDeclareOptions::default()
        };
        for (name, kind) in [
            (&n.main_exchange, ExchangeKind::Topic),
            (&n.dead_letter_exchange, ExchangeKind::Topic),
            (&n.delayed_exchange, ExchangeKind::Headers),
        ] {
            ch.exchange_declare(name.as_str().into(), kind, durable, FieldTable::default())
                .await
                .map_err(|e| unavailable(url, &format!("declare exchange {name}"), e))?;
        }
        let args = table(&[
            (
                "x-message-ttl",
                AMQPValue::LongLongInt(dead_letter.ttl_ms as i64),
            ),
            (
                "x-max-length",
                AMQPValue::LongLongInt(dead_letter.max_length.into()),
            ),
            // A dead letter is the last copy of a message: at the bound, refuse new ones
            // (the publish is nacked, the failing delivery stays in its queue) rather
            // than drop the oldest, RabbitMQ's default.
            ("x-overflow", string("reject-publish")),
        ]);
        ch.queue_declare(
            n.dead_letter_queue.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            args,
        )
        .await
        .map_err(|e| unavailable(url, "declare the dead-letter queue", e))?;
        ch.queue_bind(
            n.dead_letter_queue.as_str().into(),
            n.dead_letter_exchange.as_str().into(),
            "dlx.#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|e| unavailable(url, "bind the dead-letter queue", e))?;
        Ok(())
    }

    /// Declares `name` with `args` once per host run (declaring is idempotent, but a
    /// round trip per retry would be wasted).
    pub(super) async fn declare_once(
        &self,
        name: &str,
        args: FieldTable,
        bind: Option<(&str, FieldTable)>,
    ) -> BackendResult<()> {
        if self
            .shared
            .declared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(name)
        {
            return Ok(());
        }
        let url = &self.shared.url;
        let ch = &self.open_channel().await?;
        ch.queue_declare(
            name.into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            args,
        )
        .await
        .map_err(|e| unavailable(url, &format!("declare queue {name}"), e))?;
        if let Some((exchange, binding)) = bind {
            ch.queue_bind(
                name.into(),
                exchange.into(),
                "".into(),
                QueueBindOptions::default(),
                binding,
            )
            .await
            .map_err(|e| unavailable(url, &format!("bind queue {name}"), e))?;
        }
        let _ = ch.close(200, "declared".into()).await;
        self.shared
            .declared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_string());
        Ok(())
    }

    /// A channel of its own (declarations, consumers, peeks), apart from the one the
    /// host publishes on.
    pub(super) async fn open_channel(&self) -> BackendResult<Channel> {
        let url = &self.shared.url;
        self.shared
            .connection
            .create_channel()
            .await
            .map_err(|e| unavailable(url, "open a channel", e))
    }
}
