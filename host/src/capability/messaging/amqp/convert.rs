//! [`Envelope`] ⇄ AMQP properties and headers.

use crate::capability::messaging::{ATTEMPT_HEADER, Envelope, PARKED_HEADER, now_ms};
use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};

/// Header carrying the original publish time in ms (AMQP timestamps are seconds).
const PUBLISHED_HEADER: &str = "x-techub-published-at-ms";
/// Header carrying the routing key the message was published with: a retry, a dead
/// letter or a replay travels under another routing key (its queue's), and the
/// handler must still see the original one.
const ROUTING_KEY_HEADER: &str = "x-techub-routing-key";

/// Properties of `envelope`, plus `extra` host headers.
pub fn properties(envelope: &Envelope, extra: &[(&str, String)]) -> BasicProperties {
    let mut headers = FieldTable::default();
    for (name, value) in &envelope.headers {
        headers.insert(
            name.as_str().into(),
            AMQPValue::LongString(LongString::from(value.as_str())),
        );
    }
    headers.insert(
        ATTEMPT_HEADER.into(),
        AMQPValue::LongLongInt(envelope.attempt.into()),
    );
    headers.insert(
        PUBLISHED_HEADER.into(),
        AMQPValue::LongLongInt(envelope.published_at_ms as i64),
    );
    headers.insert(
        ROUTING_KEY_HEADER.into(),
        AMQPValue::LongString(LongString::from(envelope.routing_key.as_str())),
    );
    if let Some(reason) = &envelope.parked {
        headers.insert(
            PARKED_HEADER.into(),
            AMQPValue::LongString(LongString::from(reason.as_str())),
        );
    }
    // Which lane of a quorum queue takes it, where the host gives them lanes
    // (`physical.rs`); every publish carries it, whoever consumes.
    if envelope.priority >= super::physical::HIGH_LANE_FROM {
        headers.insert(
            super::physical::LANE_HEADER.into(),
            AMQPValue::LongString(LongString::from(super::physical::HIGH_LANE)),
        );
    }
    for (name, value) in extra {
        headers.insert(
            (*name).into(),
            AMQPValue::LongString(LongString::from(value.as_str())),
        );
    }
    let mut props = BasicProperties::default()
        .with_message_id(envelope.id.as_str().into())
        .with_priority(envelope.priority)
        .with_delivery_mode(if envelope.persistent { 2 } else { 1 })
        .with_timestamp(envelope.published_at_ms / 1000)
        .with_content_type("application/octet-stream".into())
        .with_headers(headers);
    if let Some(id) = &envelope.correlation_id {
        props = props.with_correlation_id(id.as_str().into());
    }
    if let Some(reply_to) = &envelope.reply_to {
        props = props.with_reply_to(reply_to.as_str().into());
    }
    if let Some(ms) = envelope.expiration_ms {
        props = props.with_expiration(ms.to_string().into());
    }
    props
}

fn text(value: &AMQPValue) -> Option<String> {
    match value {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_string()),
        AMQPValue::LongLongInt(n) => Some(n.to_string()),
        AMQPValue::LongInt(n) => Some(n.to_string()),
        AMQPValue::LongUInt(n) => Some(n.to_string()),
        AMQPValue::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

fn number(value: &AMQPValue) -> Option<u64> {
    match value {
        AMQPValue::LongLongInt(n) => u64::try_from(*n).ok(),
        AMQPValue::LongInt(n) => u64::try_from(*n).ok(),
        AMQPValue::LongUInt(n) => Some((*n).into()),
        AMQPValue::ShortUInt(n) => Some((*n).into()),
        other => text(other)?.parse().ok(),
    }
}

/// A host header's value as text.
pub fn header(props: &BasicProperties, name: &str) -> Option<String> {
    props.headers().as_ref()?.inner().get(name).and_then(text)
}

/// Why and from which queue RabbitMQ itself dead-lettered a message (`expired`,
/// `maxlen`, `rejected`), from the newest entry of its `x-death` header.
pub fn broker_death(props: &BasicProperties) -> Option<(String, String)> {
    let headers = props.headers().as_ref()?;
    let AMQPValue::FieldArray(deaths) = headers.inner().get("x-death")? else {
        return None;
    };
    let AMQPValue::FieldTable(newest) = deaths.as_slice().first()? else {
        return None;
    };
    let field = |name: &str| newest.inner().get(name).and_then(text);
    Some((field("reason")?, field("queue")?))
}

/// Where a delivered message came from, which decides whether its `x-techub-*`
/// headers are the host's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Through the main exchange: published by anyone with access to it. Headers under
    /// the host's names are a publisher's claims and are dropped (a publisher must not
    /// set the attempt counter and so cut a message's retries short).
    Exchange,
    /// Back from the host's own retry queue (the default exchange), or read from the
    /// dead-letter queue the host writes: the host set those headers.
    Host,
}

/// The envelope of a delivered message. Messages from other producers may lack our
/// headers: the id falls back to a new one and the attempt to 1.
pub fn envelope(
    routing_key: &ShortString,
    props: &BasicProperties,
    payload: Vec<u8>,
    origin: Origin,
) -> Envelope {
    let trusted = origin == Origin::Host;
    let mut headers = Vec::new();
    let (mut attempt, mut published_at_ms, mut original_key) = (1, None, None);
    let mut parked = None;
    if let Some(table) = props.headers() {
        for (name, value) in table.inner() {
            match name.as_str() {
                ATTEMPT_HEADER if trusted => {
                    attempt = number(value)
                        .and_then(|n| u32::try_from(n).ok())
                        .unwrap_or(1)
                }
                PUBLISHED_HEADER => published_at_ms = number(value),
                ROUTING_KEY_HEADER if trusted => original_key = text(value),
                PARKED_HEADER if trusted => parked = text(value),
                // The host's routing, not the publisher's header.
                super::physical::LANE_HEADER => {}
                n if n.starts_with("x-") => {}
                n => {
                    if let Some(v) = text(value) {
                        headers.push((n.to_string(), v));
                    }
                }
            }
        }
    }
    Envelope {
        id: props.message_id().as_ref().map_or_else(
            || uuid::Uuid::new_v4().to_string(),
            |s| s.as_str().to_string(),
        ),
        routing_key: original_key.unwrap_or_else(|| routing_key.as_str().to_string()),
        payload,
        headers,
        correlation_id: props
            .correlation_id()
            .as_ref()
            .map(|s| s.as_str().to_string()),
        reply_to: props.reply_to().as_ref().map(|s| s.as_str().to_string()),
        priority: props.priority().unwrap_or(5),
        persistent: props.delivery_mode().unwrap_or(2) == 2,
        expiration_ms: None,
        published_at_ms: published_at(published_at_ms, props.timestamp(), trusted),
        attempt,
        parked,
    }
}

/// The publish time in ms: the host's header, when it is the host's (or, from another
/// publisher, agrees with the AMQP timestamp to the second, so that it only adds the
/// milliseconds to what the broker's property says); else the timestamp; else now.
fn published_at(header_ms: Option<u64>, timestamp_s: &Option<u64>, trusted: bool) -> u64 {
    let from_timestamp = timestamp_s.map(|s| s.saturating_mul(1000));
    match (header_ms, *timestamp_s) {
        (Some(ms), _) if trusted => ms,
        (Some(ms), Some(s)) if ms / 1000 == s => ms,
        _ => from_timestamp.unwrap_or_else(now_ms),
    }
}

/// A queue-arguments table.
pub fn table(entries: &[(&str, AMQPValue)]) -> FieldTable {
    let mut table = FieldTable::default();
    for (name, value) in entries {
        table.insert((*name).into(), value.clone());
    }
    table
}

/// A string argument.
pub fn string(value: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(value))
}
