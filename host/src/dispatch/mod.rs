//! Consumers: queue → plugin handler → ack, retry with backoff, or dead-letter.
//!
//! Each subscription of each plugin gets its own queue, `<prefix><queue-type>.<plugin>`
//! (prefix: `[amqp] queue_prefix`), bound to `techub.main` with the subscription's
//! routing keys, so that plugins never steal each other's messages, a retry reaches
//! only the plugin that failed, and two deployments on one broker never share a queue. A delivery
//! is settled only after its handler returned (or failed): at-least-once end to end.

mod settle;

use crate::bindings::Delivery as WitDelivery;
use crate::capability::Services;
use crate::capability::messaging::{Delivery, Envelope, MessageStatus, QueueSpec};
use crate::config::QueuePolicy;
use crate::plugins::LoadedPlugin;
use crate::runtime::Runtime;
use std::sync::Arc;
use tokio::task::JoinHandle;

/// The queue name of `plugin`'s subscription to `queue_type`.
pub fn queue_name(prefix: &str, queue_type: &str, plugin: &str) -> String {
    format!("{prefix}{queue_type}.{plugin}")
}

/// Declares the plugin's queues and starts one consumer task per subscription; on an
/// error, the consumers already started are stopped again.
pub async fn start(
    runtime: Arc<Runtime>,
    services: Arc<Services>,
    plugin: Arc<LoadedPlugin>,
) -> anyhow::Result<Vec<JoinHandle<()>>> {
    let mut tasks = Vec::new();
    if let Err(error) = start_each(runtime, services, plugin, &mut tasks).await {
        tasks.iter().for_each(JoinHandle::abort);
        return Err(error);
    }
    Ok(tasks)
}

async fn start_each(
    runtime: Arc<Runtime>,
    services: Arc<Services>,
    plugin: Arc<LoadedPlugin>,
    tasks: &mut Vec<JoinHandle<()>>,
) -> anyhow::Result<()> {
    for subscription in &plugin.subscriptions {
        let policy = plugin
            .context
            .config
            .queues
            .get(&subscription.queue)
            .copied()
            .ok_or_else(|| {
                anyhow::anyhow!("queue type {:?} is not declared", subscription.queue)
            })?;
        let spec = QueueSpec {
            name: queue_name(
                &plugin.context.config.amqp.queue_prefix,
                &subscription.queue,
                &plugin.name,
            ),
            bindings: subscription.routing_keys.clone(),
            durable: policy.durable,
        };
        services
            .broker
            .declare_queue(&spec)
            .await
            .map_err(|e| anyhow::anyhow!("could not declare queue {}: {e}", spec.name))?;
        let prefetch = plugin.context.limits.prefetch;
        let mut consumer = services
            .broker
            .consume(&spec.name, prefetch)
            .await
            .map_err(|e| anyhow::anyhow!("could not consume queue {}: {e}", spec.name))?;
        tracing::info!(plugin = %plugin.name, queue = %spec.name, bindings = ?spec.bindings, "consuming");
        let worker = Worker {
            runtime: runtime.clone(),
            services: services.clone(),
            plugin: plugin.clone(),
            queue_type: subscription.queue.clone(),
            queue: spec.name.clone(),
            policy,
        };
        tasks.push(tokio::spawn(async move {
            let worker = Arc::new(worker);
            while let Some(delivery) = consumer.next().await {
                // The consumer's prefetch window bounds how many of these run at once.
                let worker = worker.clone();
                tokio::spawn(async move { worker.handle(delivery).await });
            }
            tracing::warn!(plugin = %worker.plugin.name, "consumer closed");
        }));
    }
    Ok(())
}

/// Everything one subscription's deliveries need.
struct Worker {
    runtime: Arc<Runtime>,
    services: Arc<Services>,
    plugin: Arc<LoadedPlugin>,
    queue_type: String,
    queue: String,
    policy: QueuePolicy,
}

impl Worker {
    async fn handle(&self, delivery: Box<dyn Delivery>) {
        let envelope = delivery.envelope().clone();
        self.track(&envelope.id, MessageStatus::Processing);
        let message = to_wit(&envelope, &self.queue_type, delivery.redelivered());
        let report = self
            .runtime
            .invoke(
                &self.plugin.pre,
                self.plugin.context.clone(),
                &message,
                self.policy.priority.level(),
            )
            .await;
        tracing::debug!(plugin = %self.plugin.name, id = %envelope.id, attempt = envelope.attempt,
            elapsed_us = report.elapsed.as_micros() as u64, host_us = report.host_time.as_micros() as u64, result = ?report.result, "handled");
        settle::settle(self, delivery, &envelope, report.result).await;
    }
}

impl Worker {
    /// Records the status of message `id` in this worker's queue.
    fn track(&self, id: &str, status: MessageStatus) {
        self.services
            .tracker
            .delivered(id, &self.queue, &self.plugin.name, status);
    }
}

fn to_wit(envelope: &Envelope, queue_type: &str, redelivered: bool) -> WitDelivery {
    WitDelivery {
        id: envelope.id.clone(),
        queue: queue_type.to_string(),
        routing_key: envelope.routing_key.clone(),
        payload: envelope.payload.clone(),
        headers: envelope.headers.clone(),
        correlation_id: envelope.correlation_id.clone(),
        reply_to: envelope.reply_to.clone(),
        priority: crate::capability::messaging::priority_of_level(envelope.priority),
        published_at_ms: envelope.published_at_ms,
        attempt: envelope.attempt,
        redelivered,
    }
}
