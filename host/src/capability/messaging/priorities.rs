//! The default priority of a publish that names none: the `[queues.<type>].priority`
//! of the queue types whose subscriptions bind its routing key (the highest, when
//! several do), or `normal`.

use crate::names::routing::TopicPattern;
use std::collections::BTreeMap;
use std::sync::RwLock;

/// The priority AMQP gives `normal`.
pub const NORMAL: u8 = 5;

/// Per plugin, the patterns its subscriptions bind and their queue type's priority.
#[derive(Default)]
pub struct DefaultPriorities {
    by_plugin: RwLock<BTreeMap<String, Vec<(TopicPattern, u8)>>>,
}

impl DefaultPriorities {
    /// Sets what `plugin` binds (replacing what it bound before).
    pub fn set_plugin(&self, plugin: &str, bindings: Vec<(TopicPattern, u8)>) {
        self.by_plugin
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(plugin.to_string(), bindings);
    }

    /// Forgets `plugin` (removed or failed).
    pub fn remove_plugin(&self, plugin: &str) {
        self.by_plugin
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(plugin);
    }

    /// The wire priority a publish to `routing_key` gets when it names none.
    pub fn of(&self, routing_key: &str) -> u8 {
        self.by_plugin
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .flatten()
            .filter(|(pattern, _)| pattern.matches(routing_key))
            .map(|(_, level)| *level)
            .max()
            .unwrap_or(NORMAL)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_highest_binding_queue_type_wins_and_normal_is_the_fallback() {
        let priorities = DefaultPriorities::default();
        let p = |s: &str| TopicPattern::parse(s).unwrap();
        priorities.set_plugin("billing", vec![(p("payment.#"), 10)]);
        priorities.set_plugin("stats", vec![(p("#"), 1)]);
        assert_eq!(priorities.of("payment.captured"), 10);
        assert_eq!(priorities.of("user.created"), 1);
        priorities.remove_plugin("stats");
        assert_eq!(priorities.of("user.created"), NORMAL);
    }
}
