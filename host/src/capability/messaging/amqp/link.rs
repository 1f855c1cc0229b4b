//! The connection to RabbitMQ, and its replacement when it fails.
//!
//! lapin can recover a connection by itself, but its recovery was seen to stall: after
//! the broker came back (behind a TCP proxy that had been dropping connections), a
//! reconnection stuck in its handshake ("invalid state Connecting, step
//! ProtocolHeader") until the broker's own 10 s handshake timeout, so consumption
//! resumed 12–17 s after the broker returned. The host reconnects by itself instead:
//! a fresh `Connection` for every attempt, each bounded by `amqp.connection_timeout_ms`
//! and at most [`RECONNECT_MAX_DELAY`] apart. Once one is up it declares the topology
//! and every queue the host had declared, swaps the new [`Link`] in and announces its
//! generation; consumers and the reply queue then subscribe again on it. Deliveries
//! unsettled on the old connection are redelivered by the broker.

use super::{AmqpBroker, Shared, connection_name};
use crate::metrics::AmqpEvent;
use lapin::options::ConfirmSelectOptions;
use lapin::{Channel, Connection, ConnectionProperties};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

/// The longest wait between two reconnection attempts. An attempt against a broker
/// that is away costs one refused TCP connection, so a short bound is cheap.
pub const RECONNECT_MAX_DELAY: Duration = Duration::from_secs(1);
/// The first wait after a connection fails.
const RECONNECT_MIN_DELAY: Duration = Duration::from_millis(100);
/// How often the supervisor looks at the connection's health.
const HEALTH_POLL: Duration = Duration::from_millis(50);

/// Which publisher channel a publish goes out on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lane {
    /// Messages, retries, delays, replies, replays.
    Messages,
    /// Dead letters, which a full dead-letter queue nacks (`reject-publish`). Apart:
    /// RabbitMQ coalesces a channel's confirms, and a nack sent with `multiple` was
    /// seen to cover an ordinary publish confirmed in the same batch (the operator's
    /// publish refused while dead letters were being refused).
    DeadLetters,
}

/// One connection and the channels the host publishes on, replaced whole.
pub(crate) struct Link {
    pub connection: Connection,
    /// Replaced on the same connection after a nack (see `publish.rs`).
    pub publisher: arc_swap::ArcSwap<Channel>,
    /// The channel of dead letters ([`Lane::DeadLetters`]).
    pub dead_letters: arc_swap::ArcSwap<Channel>,
    /// 1 for the first connection, one more for each replacement.
    pub generation: u64,
}

impl Link {
    /// Connects once (no retries: the supervisor retries) and enables confirms.
    pub async fn open(
        raw_url: &str,
        shown: &str,
        timeout: Duration,
        generation: u64,
    ) -> anyhow::Result<Self> {
        let properties = ConnectionProperties::default()
            .with_connection_name(connection_name(std::process::id()).into());
        let connect = async {
            let connection = Connection::connect(raw_url, properties)
                .await
                .map_err(|e| anyhow::anyhow!("could not connect to RabbitMQ at {shown}: {e}"))?;
            let confirming = || async {
                let channel = connection
                    .create_channel()
                    .await
                    .map_err(|e| anyhow::anyhow!("could not open a channel on {shown}: {e}"))?;
                channel
                    .confirm_select(ConfirmSelectOptions::default())
                    .await
                    .map_err(|e| anyhow::anyhow!("could not enable publisher confirms: {e}"))?;
                anyhow::Ok(channel)
            };
            let publisher = confirming().await?;
            let dead_letters = confirming().await?;
            anyhow::Ok(Self {
                publisher: arc_swap::ArcSwap::from_pointee(publisher),
                dead_letters: arc_swap::ArcSwap::from_pointee(dead_letters),
                connection,
                generation,
            })
        };
        tokio::time::timeout(timeout, connect).await.map_err(|_| {
            anyhow::anyhow!(
                "could not connect to RabbitMQ at {shown}: no answer within {} ms",
                timeout.as_millis()
            )
        })?
    }

    /// Whether the connection and the publisher channels still work.
    pub fn healthy(&self) -> bool {
        self.connection.status().connected()
            && self.publisher.load().status().connected()
            && self.dead_letters.load().status().connected()
    }

    /// The channel of `lane`.
    pub fn channel(&self, lane: Lane) -> &arc_swap::ArcSwap<Channel> {
        match lane {
            Lane::Messages => &self.publisher,
            Lane::DeadLetters => &self.dead_letters,
        }
    }
}

impl AmqpBroker {
    /// Whether `close` was called.
    pub(crate) fn is_closing(&self) -> bool {
        self.shared.closing.load(Ordering::Acquire)
    }

    /// The current link once it is healthy and announced (its queues declared):
    /// waits through a reconnection. `None` once the broker is closed.
    pub(crate) async fn healthy_link(&self) -> Option<Arc<Link>> {
        let mut ready = self.shared.ready.subscribe();
        loop {
            if self.shared.closing.load(Ordering::Acquire) {
                return None;
            }
            let link = self.shared.link.load_full();
            if link.generation == *ready.borrow_and_update() && link.healthy() {
                return Some(link);
            }
            // Announced by the supervisor; the timeout also catches a link that broke
            // before the supervisor noticed.
            let _ = tokio::time::timeout(HEALTH_POLL, ready.changed()).await;
        }
    }
}

/// Watches the link and replaces it when it fails, until the broker is closed or
/// dropped.
pub(super) async fn supervise(shared: Weak<Shared>) {
    loop {
        tokio::time::sleep(HEALTH_POLL).await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        if shared.closing.load(Ordering::Acquire) {
            return;
        }
        let broken = shared.link.load_full();
        if broken.healthy() {
            continue;
        }
        tracing::warn!(url = %shared.url, "the RabbitMQ connection failed; reconnecting");
        let broker = AmqpBroker { shared };
        if !reconnect(&broker, broken.generation + 1).await {
            return;
        }
    }
}

/// Connects until it works (or the broker is closed), declares what the host had
/// declared, and announces the new link. `false` when the broker was closed meanwhile.
async fn reconnect(broker: &AmqpBroker, generation: u64) -> bool {
    let shared = &broker.shared;
    let timeout = Duration::from_millis(shared.names.connection_timeout_ms);
    let mut delay = RECONNECT_MIN_DELAY;
    let started = std::time::Instant::now();
    let mut attempts = 0;
    loop {
        // The next node first (the one the link was on just failed), and each in
        // turn; a pause only once a whole round of them failed.
        attempts += 1;
        let count = shared.nodes.len().max(1);
        let index = (shared.node.load(Ordering::Acquire) + 1) % count;
        shared.node.store(index, Ordering::Release);
        let node = &shared.nodes[index];
        // Closed, or dropped by everyone but this supervisor: stop trying.
        if shared.closing.load(Ordering::Acquire) || Arc::strong_count(shared) <= 1 {
            return false;
        }
        let shown = crate::config::redact_url(node);
        match Link::open(node, &shown, timeout, generation).await {
            Ok(link) => {
                shared.link.store(Arc::new(link));
                // On-demand queues (retry, delay) may be gone with a broker that
                // restarted: declare them again as they are used.
                shared
                    .declared
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clear();
                match broker.redeclare().await {
                    Ok(()) => {
                        shared.metrics.amqp(AmqpEvent::Reconnect);
                        tracing::info!(url = %shown, generation, after_ms = started.elapsed().as_millis() as u64, "reconnected to RabbitMQ");
                        shared.ready.send_replace(generation);
                        return true;
                    }
                    Err(error) => {
                        tracing::warn!(url = %shared.url, %error, "reconnected, but could not declare the topology again; retrying");
                        let _ = shared
                            .link
                            .load_full()
                            .connection
                            .close(200, "redeclare failed".into())
                            .await;
                    }
                }
            }
            Err(error) => tracing::debug!(%error, "reconnection attempt failed"),
        }
        if attempts % count == 0 {
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(RECONNECT_MAX_DELAY);
        }
    }
}
