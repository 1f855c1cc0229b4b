//! Declarations: the fixed topology at start, and the queues declared on demand, each
//! on a short-lived channel so that a refused declaration cannot close the channel
//! the host publishes on.

use super::convert::{string, table};
use super::policies::Limits;
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
        let link = self.shared.link.load_full();
        let ch = &**link.publisher.load();
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
        let dlq = &self
            .declare_limited(
                &n.dead_letter_queue,
                true,
                super::kind::arguments(n.queue_kind, super::kind::Role::DeadLetters, 0),
                dead_letter_limits(dead_letter),
            )
            .await?;
        dlq.queue_bind(
            n.dead_letter_queue.as_str().into(),
            n.dead_letter_exchange.as_str().into(),
            "dlx.#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|e| unavailable(url, "bind the dead-letter queue", e))?;
        let _ = dlq.close(200, "declared".into()).await;
        Ok(())
    }

    /// Declares `name` with the arguments that never change (`fixed`) and sets its
    /// `limits`: as its policy when the management API is there, else as arguments.
    /// A queue that exists with other arguments (declared by an older host, or
    /// limits changed without the API) is reported, not redeclared. Returns an open
    /// channel for the bindings.
    pub(super) async fn declare_limited(
        &self,
        name: &str,
        durable: bool,
        fixed: Vec<(&str, AMQPValue)>,
        limits: Limits,
    ) -> BackendResult<Channel> {
        let url = &self.shared.url;
        let api = self.shared.policies.as_ref();
        let mut args = fixed;
        if api.is_none() {
            args.extend(limit_arguments(limits));
        }
        // A channel of its own: a refused declaration closes its channel, and must
        // not take publishing down.
        let ch = self.open_channel().await?;
        let declared = ch
            .queue_declare(
                name.into(),
                QueueDeclareOptions {
                    durable,
                    ..QueueDeclareOptions::default()
                },
                table(&args),
            )
            .await;
        let ch = match declared {
            Ok(_) => ch,
            Err(error) if differs_in_limits_only(&error) => {
                let Some(api) = api else {
                    return Err(unavailable(
                        url,
                        &format!("declare queue {name}"),
                        format!(
                            "{error}: its TTL or length changed, and without RabbitMQ's management API (`rabbitmq-plugins enable rabbitmq_management`, or amqp.management_url) they are queue arguments, which RabbitMQ cannot change: enable the API, or delete the queue once it is empty"
                        ),
                    ));
                };
                tracing::warn!(queue = %name, api = %api.shown, %error,
                    "this queue exists with other arguments (declared by an older techub, or without the management API): it keeps them, and where an argument and the host's policy bound the same thing the lower value wins; delete the queue once, when it is empty, to drop them");
                // The refusal closed that channel.
                self.open_channel().await?
            }
            Err(error) if differs_in_kind(&error) => {
                // The dead-letter queue, declared by a host of the other kind: its
                // letters stay where they are, and it keeps serving.
                tracing::warn!(queue = %name, %error,
                    "this queue exists as the other kind (classic or quorum) and keeps it: RabbitMQ cannot change a queue's kind; to move it, let it empty and delete it");
                self.open_channel().await?
            }
            Err(error) => return Err(unavailable(url, &format!("declare queue {name}"), error)),
        };
        if let Some(api) = api {
            api.apply(name, limits).await?;
        }
        Ok(ch)
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
        let mut ch = self.open_channel().await?;
        let declared = ch
            .queue_declare(
                name.into(),
                QueueDeclareOptions {
                    durable: true,
                    ..QueueDeclareOptions::default()
                },
                args,
            )
            .await;
        match declared {
            Ok(_) => {}
            // A delay queue a host of the other kind declared (they are shared by
            // delay): it works as it is, and expires once idle.
            Err(error) if differs_in_kind(&error) => {
                tracing::debug!(queue = %name, %error, "using the queue as the other kind declared it");
                ch = self.open_channel().await?;
            }
            Err(error) => return Err(unavailable(url, &format!("declare queue {name}"), error)),
        }
        let ch = &ch;
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
            .link
            .load()
            .connection
            .create_channel()
            .await
            .map_err(|e| unavailable(url, "open a channel", e))
    }
}

/// The dead-letter queue's limits: a dead letter is the last copy of a message, so at
/// the bound it refuses new ones (the failing delivery waits in its retry queue) rather
/// than drop the oldest, RabbitMQ's default.
pub(super) fn dead_letter_limits(config: DeadLetterConfig) -> Limits {
    Limits {
        message_ttl_ms: Some(config.ttl_ms),
        max_length: Some(config.max_length),
        overflow: "reject-publish",
    }
}

/// `limits` as queue arguments (without the management API).
fn limit_arguments(limits: Limits) -> Vec<(&'static str, AMQPValue)> {
    let mut args = Vec::new();
    if let Some(ttl) = limits.message_ttl_ms {
        args.push(("x-message-ttl", AMQPValue::LongLongInt(ttl as i64)));
    }
    if let Some(length) = limits.max_length {
        args.push(("x-max-length", AMQPValue::LongLongInt(length.into())));
        args.push(("x-overflow", string(limits.overflow)));
    }
    args
}

/// Whether a refused declaration is about a limit argument only (`inequivalent arg
/// 'x-message-ttl'`, ...): a queue declared with limits as arguments, which a policy
/// can take over. Any other difference (durability, priority, dead-letter exchange)
/// is a queue the host cannot use as it is.
fn differs_in_limits_only(error: &lapin::Error) -> bool {
    let text = error.to_string();
    text.contains("PRECONDITION_FAILED")
        && ["x-message-ttl", "x-max-length", "x-overflow"]
            .iter()
            .any(|arg| text.contains(&format!("inequivalent arg '{arg}'")))
}

/// Whether a refused declaration is about the queue's kind: it exists as a classic
/// queue and a quorum one was asked for, or the other way round.
fn differs_in_kind(error: &lapin::Error) -> bool {
    let text = error.to_string();
    text.contains("PRECONDITION_FAILED") && text.contains("inequivalent arg 'x-queue-type'")
}
