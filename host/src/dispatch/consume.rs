//! The consumer loop every queue the host consumes runs on: each plugin subscription
//! and the host's own invalidation queue. One drain discipline for all: deliveries
//! are taken until the consumer is cancelled, each handled (and settled) by its
//! [`Handler`] as a tracked task, or inline with a window of one; then the broker
//! stops sending, the deliveries in flight finish, and the consumer closes. A
//! delivery never started goes back to the queue unsettled.

use crate::capability::messaging::{Consumer, Delivery};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// What a consumer loop hands its deliveries to.
#[async_trait::async_trait]
pub trait Handler: Send + Sync + 'static {
    /// Which consumer this is, for the log.
    fn name(&self) -> String;

    /// Handles `delivery` and settles it (ack, retry or dead-letter).
    async fn handle(self: Arc<Self>, delivery: Box<dyn Delivery>);

    /// A pause before the next delivery is handled (a backed-off plugin), if any.
    fn pause(&self) -> Option<Duration> {
        None
    }

    /// Housekeeping while no delivery comes: resolves once it did some (the loop then
    /// waits again). By default there is none.
    async fn idle(&self) {
        std::future::pending::<()>().await
    }

    /// Called once the consumer has drained, before it closes.
    fn drained(&self) {}
}

/// Runs `consumer` into `handler` until `cancel`, then drains: `inline` handles one
/// delivery at a time in the loop itself (for a window of one, or a consumer whose
/// events must apply in order); otherwise each is a task of `in_flight`, bounded by
/// the prefetch window.
pub(crate) async fn run<H: Handler>(
    handler: Arc<H>,
    mut consumer: Box<dyn Consumer>,
    inline: bool,
    cancel: CancellationToken,
    in_flight: TaskTracker,
) {
    'deliveries: loop {
        let next = {
            let next = consumer.next();
            tokio::pin!(next);
            loop {
                tokio::select! {
                    biased;
                    _ = cancel.cancelled() => break 'deliveries,
                    next = &mut next => break next,
                    () = handler.idle() => {}
                }
            }
        };
        let Some(delivery) = next else {
            tracing::warn!(consumer = %handler.name(), "consumer closed");
            break;
        };
        let handling = handler.clone().handle(delivery);
        match handler.pause() {
            None if inline => in_flight.track_future(handling).await,
            // The prefetch window bounds how many of these run at once.
            None => drop(in_flight.spawn(handling)),
            // Backed off: a pause, then this one alone. A stop during the pause leaves
            // it unsettled: back to the queue.
            Some(pause) => {
                tokio::select! {
                    biased;
                    _ = cancel.cancelled() => break,
                    _ = tokio::time::sleep(pause) => {}
                }
                let _ = in_flight.spawn(handling).await;
            }
        }
    }
    consumer.stop().await;
    in_flight.close();
    in_flight.wait().await;
    handler.drained();
    consumer.close().await;
    tracing::info!(consumer = %handler.name(), "consumer drained and closed");
}
