//! The names of the broker topology the host declares for plugins.

/// The routing key every subscription to `queue_type` binds besides its own keys: a
/// message published with it (`messaging::send(queue_type, ..)` in the SDK, or
/// `techub-host publish queue.<type>`) reaches every plugin subscribed to the type,
/// whatever routing keys they bind. No other binding may match it (checked at load).
pub fn queue_type_key(queue_type: &str) -> String {
    format!("queue.{queue_type}")
}

/// The queue name of `plugin`'s subscription to `queue_type`.
pub fn queue_name(prefix: &str, queue_type: &str, plugin: &str) -> String {
    format!("{prefix}{queue_type}.{plugin}")
}
