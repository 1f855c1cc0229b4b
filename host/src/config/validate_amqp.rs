//! `[amqp]`: URLs, queue kinds (with what quorum queues require of each queue type),
//! the management API, the queue prefix, timeouts.

use super::validate::{check, invalid};
use super::{AmqpConfig, ConfigError, QueuePolicy, redact_url};
use std::collections::BTreeMap;

fn valid_queue_prefix(prefix: &str) -> bool {
    !prefix.is_empty()
        && prefix.len() <= 64
        && prefix
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
}

/// Checks `[amqp]`, and that each queue type `queues` makes a quorum queue can be one.
pub(super) fn validate(
    a: &AmqpConfig,
    queues: &BTreeMap<String, QueuePolicy>,
) -> Result<(), ConfigError> {
    if !a.url.starts_with("amqp://") && !a.url.starts_with("amqps://") {
        return Err(invalid(
            "amqp.url",
            format!("must start with amqp://, got {:?}", redact_url(&a.url)),
        ));
    }
    for (i, url) in a.urls.iter().enumerate() {
        if !url.starts_with("amqp://") && !url.starts_with("amqps://") {
            return Err(invalid(
                format!("amqp.urls[{i}]"),
                format!("must start with amqp://, got {:?}", redact_url(url)),
            ));
        }
    }
    check("amqp.delivery_limit", a.delivery_limit, 1, 1_000)?;
    for (name, policy) in queues {
        if policy.kind.unwrap_or(a.queue_kind) != super::QueueKind::Quorum {
            continue;
        }
        let field = |f: &str| match policy.kind {
            Some(_) => format!("queues.{name}.{f}"),
            None => format!("queues.{name}.{f} (with amqp.queue_kind = \"quorum\")"),
        };
        if policy.overflow != super::Overflow::RejectPublish {
            return Err(invalid(
                field("overflow"),
                "a quorum queue dead-letters at least once only with overflow = \"reject-publish\"; drop-head could lose a dropped message",
            ));
        }
        if !policy.durable {
            return Err(invalid(
                field("durable"),
                "a quorum queue is always durable: set durable = true or kind = \"classic\"",
            ));
        }
    }
    if let Some(url) = &a.management_url
        && !url.starts_with("http://")
    {
        return Err(invalid(
            "amqp.management_url",
            format!(
                "must start with http:// (the host speaks plain HTTP to RabbitMQ's management API), got {:?}",
                redact_url(url)
            ),
        ));
    }
    if !valid_queue_prefix(&a.queue_prefix) {
        return Err(invalid(
            "amqp.queue_prefix",
            "must be 1 to 64 characters of a-z, 0-9, '.', '-' and '_'",
        ));
    }
    check(
        "amqp.connection_timeout_ms",
        a.connection_timeout_ms,
        1,
        600_000,
    )?;
    Ok(())
}
