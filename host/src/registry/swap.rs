//! Starting a plugin's consumers, and swapping a new version in.

use super::{Entry, Registry, State};
use crate::capability::bindings::Subscription;
use crate::capability::messaging::{QueueLimits, QueueSpec};
use crate::dispatch::{self, ConsumerHandle, Versions};
use crate::names::routing::TopicPattern;
use crate::names::topology::queue_name;
use crate::plugins::LoadedPlugin;
use crate::runtime::short_version;
use arc_swap::ArcSwap;
use std::sync::Arc;

impl Registry {
    /// Starts a plugin that does not serve yet: a consumer per subscription. If one
    /// cannot start, those started are stopped again and the plugin is not serving.
    pub(super) async fn start(
        &self,
        state: &mut State,
        version: Arc<LoadedPlugin>,
    ) -> Result<(), String> {
        let versions: Versions = Arc::new(ArcSwap::new(version.clone()));
        let mut consumers = Vec::new();
        for subscription in &version.subscriptions {
            match self.consumer(&versions, &version, subscription).await {
                Ok(consumer) => consumers.push(consumer),
                Err(error) => {
                    self.drain(&version.name, "its start failed", consumers);
                    return Err(format!(
                        "plugin {}: could not subscribe: {error:#}",
                        version.name
                    ));
                }
            }
        }
        if !version.config.plugins.contains_key(&version.name) {
            tracing::warn!(plugin = %version.name,
                "no [plugins.{}] section in host.toml: the plugin has no grants (cache_domains, subscribe, publish); add one", version.name);
        }
        tracing::info!(plugin = %version.name, version = %short_version(&version.hash),
            subscriptions = ?version.subscriptions.iter().map(|s| (&s.queue, &s.routing_keys)).collect::<Vec<_>>(), "plugin serving");
        self.services
            .messaging
            .priorities
            .set_plugin(&version.name, default_priorities(&version));
        state.serving.insert(
            version.name.clone(),
            Entry {
                versions,
                consumers,
                last_error: None,
            },
        );
        Ok(())
    }

    /// Swaps `new` in for the serving version of `entry`:
    /// 1. consumers for queue types it newly subscribes to start (if one cannot, the
    ///    swap is refused and nothing changed);
    /// 2. the current version pointer changes, atomically: deliveries already running
    ///    finish on the old version, every later one runs on the new;
    /// 3. queues it keeps bind the added routing keys and unbind the removed ones; a
    ///    changed prefetch replaces the consumer (the old one drains);
    /// 4. consumers of queue types it dropped stop and drain; their keys are unbound.
    pub(super) async fn swap(
        &self,
        entry: &mut Entry,
        new: Arc<LoadedPlugin>,
    ) -> Result<(), String> {
        let old = entry.versions.load_full();
        let name = new.name.clone();
        let mut started = Vec::new();
        for subscription in &new.subscriptions {
            if entry
                .consumers
                .iter()
                .any(|c| c.queue_type == subscription.queue)
            {
                continue;
            }
            match self.consumer(&entry.versions, &new, subscription).await {
                Ok(consumer) => started.push(consumer),
                Err(error) => {
                    self.drain(&name, "the swap that started it was refused", started);
                    return Err(format!("plugin {name}: could not subscribe: {error:#}"));
                }
            }
        }
        entry.versions.store(new.clone());
        entry.last_error = None;

        let broker = &self.services.messaging.broker;
        let mut dropped = Vec::new();
        let mut replaced = Vec::new();
        let mut kept = Vec::new();
        for consumer in std::mem::take(&mut entry.consumers) {
            let before = keys_of(&old.subscriptions, &consumer.queue_type);
            let Some(after) = new
                .subscriptions
                .iter()
                .find(|s| s.queue == consumer.queue_type)
            else {
                if let Err(error) = broker.unbind(&consumer.queue, &before).await {
                    tracing::warn!(plugin = %name, queue = %consumer.queue, %error, "could not unbind a dropped subscription");
                }
                dropped.push(consumer);
                continue;
            };
            let spec = self.spec(&new, after);
            let added = after.routing_keys.iter().any(|k| !before.contains(k));
            // A changed TTL or length bound applies to the queue as it is (a policy on
            // RabbitMQ): declaring again sets it.
            let limits_changed = self.spec(&old, after).limits != spec.limits;
            if (added || limits_changed)
                && let Err(error) = broker.declare_queue(&spec).await
            {
                tracing::warn!(plugin = %name, queue = %spec.name, %error, "could not bind the added routing keys");
                entry.last_error = Some(format!("could not bind {:?}: {error}", spec.bindings));
            }
            let removed: Vec<String> = before
                .into_iter()
                .filter(|k| !after.routing_keys.contains(k))
                .collect();
            if !removed.is_empty()
                && let Err(error) = broker.unbind(&spec.name, &removed).await
            {
                tracing::warn!(plugin = %name, queue = %spec.name, %error, "could not unbind the removed routing keys");
            }
            if consumer.prefetch != new.context.limits.prefetch {
                match self.consumer(&entry.versions, &new, after).await {
                    Ok(fresh) => {
                        replaced.push(consumer);
                        kept.push(fresh);
                    }
                    Err(error) => {
                        tracing::warn!(plugin = %name, %error, "could not restart the consumer with the new prefetch; the old one keeps consuming");
                        kept.push(consumer);
                    }
                }
            } else {
                kept.push(consumer);
            }
        }
        // Consumers started above bound their keys as they started.
        kept.extend(started);
        entry.consumers = kept;
        self.drain(&name, "a subscription it no longer has", dropped);
        self.drain(&name, "its prefetch changed", replaced);
        self.services
            .messaging
            .priorities
            .set_plugin(&name, default_priorities(&new));
        if old.hash != new.hash {
            tracing::info!(plugin = %name, from = %short_version(&old.hash), to = %short_version(&new.hash), "new version serving");
        }
        Ok(())
    }

    fn spec(&self, version: &LoadedPlugin, subscription: &Subscription) -> QueueSpec {
        let config = &version.config;
        let policy = config.queues.get(&subscription.queue);
        QueueSpec {
            name: queue_name(
                &config.amqp.queue_prefix,
                &subscription.queue,
                &version.name,
            ),
            bindings: subscription.routing_keys.clone(),
            durable: policy.is_none_or(|q| q.durable),
            limits: policy.map(QueueLimits::of).unwrap_or_default(),
        }
    }

    async fn consumer(
        &self,
        versions: &Versions,
        version: &LoadedPlugin,
        subscription: &Subscription,
    ) -> anyhow::Result<ConsumerHandle> {
        let spec = self.spec(version, subscription);
        dispatch::start(
            self.runtime.clone(),
            self.services.clone(),
            versions.clone(),
            &subscription.queue,
            &spec,
            version.context.limits.prefetch,
        )
        .await
    }
}

fn keys_of(subscriptions: &[Subscription], queue_type: &str) -> Vec<String> {
    subscriptions
        .iter()
        .find(|s| s.queue == queue_type)
        .map(|s| s.routing_keys.clone())
        .unwrap_or_default()
}

/// What `plugin`'s subscriptions bind, each with its queue type's priority.
fn default_priorities(plugin: &LoadedPlugin) -> Vec<(TopicPattern, u8)> {
    let config = &plugin.config;
    plugin
        .subscriptions
        .iter()
        .flat_map(|s| {
            let level = config
                .queues
                .get(&s.queue)
                .map_or(5, |q| q.priority.level());
            s.routing_keys.iter().filter_map(move |key| {
                TopicPattern::parse(key)
                    .ok()
                    .map(|pattern| (pattern, level))
            })
        })
        .collect()
}
