//! The invalidation channel: this host's subscription to `<prefix>cache-l1`, on
//! which every host's writes, deletes and invalidations publish their keys (from
//! inside the Redis scripts that make them, so in Redis's own order).
//!
//! How a host knows its L1 is current: it publishes a ping to itself
//! (`<prefix>cache-l1-ping:<host id>`) every quarter of `cache.l1_max_stale_ms`,
//! carrying the time it sent it. Redis delivers one connection's messages in the
//! order it ran their publishes, so when the ping sent at `t` comes back, every
//! invalidation of a write that returned before `t` has come back before it. The
//! host serves from L1 only while the latest ping it heard was sent at most
//! `l1_max_stale_ms` ago; a channel that stalls or breaks therefore turns L1 off
//! within that bound, without any timeout to tune. A broken channel also drops every
//! copy (what it missed is unknown), and so does each new subscription.

use super::TwoLayerCache;
use crate::capability::redis_client::{RedisClient, Retry};
use futures::StreamExt;
use std::sync::Weak;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Whether the channel proved itself recently enough to serve from L1.
pub(super) struct Freshness {
    start: Instant,
    /// When (ns after `start`, plus one) the newest ping heard was sent; 0: none
    /// heard on the current subscription.
    heard: AtomicU64,
    max_stale_ns: AtomicU64,
    subscribed: AtomicBool,
}

impl Freshness {
    pub(super) fn new(max_stale: Duration) -> Self {
        Self {
            start: Instant::now(),
            heard: AtomicU64::new(0),
            max_stale_ns: AtomicU64::new(max_stale.as_nanos() as u64),
            subscribed: AtomicBool::new(false),
        }
    }

    pub(super) fn set_max_stale(&self, max_stale: Duration) {
        self.max_stale_ns
            .store(max_stale.as_nanos() as u64, Ordering::Relaxed);
    }

    pub(super) fn max_stale(&self) -> Duration {
        Duration::from_nanos(self.max_stale_ns.load(Ordering::Relaxed))
    }

    fn now(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64 + 1
    }

    /// Whether L1 may answer now.
    pub(super) fn fresh(&self) -> bool {
        let heard = self.heard.load(Ordering::Acquire);
        heard != 0 && self.now().saturating_sub(heard) <= self.max_stale_ns.load(Ordering::Relaxed)
    }

    /// Whether copies may be kept: the channel is subscribed, so it will hear of any
    /// write that Redis runs after the read that made them.
    pub(super) fn subscribed(&self) -> bool {
        self.subscribed.load(Ordering::Acquire)
    }

    fn heard(&self, sent: u64) {
        self.heard.fetch_max(sent, Ordering::AcqRel);
    }

    fn lost(&self) {
        self.subscribed.store(false, Ordering::Release);
        self.heard.store(0, Ordering::Release);
    }
}

/// The channel's names for one host.
pub(super) struct Names {
    pub(super) invalidations: String,
    pub(super) pings: String,
    /// This host's origin id: its own messages are skipped.
    pub(super) origin: String,
}

/// Subscribes, applies invalidations and pings itself until `cache` is dropped;
/// reconnects after `retry_delay` when the connection breaks.
pub(super) async fn run(
    cache: Weak<TwoLayerCache>,
    redis: RedisClient,
    names: Names,
    retry_delay: Duration,
) {
    let pinger = tokio::spawn(ping(cache.clone(), redis.clone(), names.pings.clone()));
    let _stop_pinger = AbortOnDrop(pinger);
    loop {
        match subscribe(&redis, &names).await {
            Ok(stream) => {
                let Some(this) = cache.upgrade() else { return };
                // Copies from before this subscription may have missed invalidations.
                this.reset().await;
                this.freshness.subscribed.store(true, Ordering::Release);
                this.metrics.cache_l1_channel(true);
                tracing::info!("cache L1: invalidation channel subscribed");
                drop(this);
                listen(&cache, stream, &names).await;
                let Some(this) = cache.upgrade() else { return };
                this.freshness.lost();
                this.reset().await;
                this.metrics.cache_l1_channel(false);
                tracing::warn!(
                    "cache L1: invalidation channel lost; reading Redis and keeping no copies until it is back"
                );
            }
            Err(error) => {
                tracing::warn!(%error, "cache L1: could not subscribe to the invalidation channel; L1 stays off");
            }
        }
        if cache.strong_count() == 0 {
            return;
        }
        tokio::time::sleep(retry_delay).await;
    }
}

async fn subscribe(redis: &RedisClient, names: &Names) -> Result<redis::aio::PubSubStream, String> {
    let mut pubsub = redis.pubsub().await?;
    pubsub
        .subscribe(&[names.invalidations.as_str(), names.pings.as_str()])
        .await
        .map_err(|e| format!("SUBSCRIBE failed: {:?}", e.kind()))?;
    Ok(pubsub.into_on_message())
}

/// Applies messages until the connection breaks, or stays silent for so long
/// (20 staleness bounds, at least 2 s, while pings come every quarter bound) that it
/// is taken for broken.
async fn listen(cache: &Weak<TwoLayerCache>, mut stream: redis::aio::PubSubStream, names: &Names) {
    loop {
        let Some(silence) = cache
            .upgrade()
            .map(|this| (this.freshness.max_stale() * 20).max(Duration::from_secs(2)))
        else {
            return;
        };
        let Ok(Some(message)) = tokio::time::timeout(silence, stream.next()).await else {
            return;
        };
        let Some(this) = cache.upgrade() else { return };
        let payload = message.get_payload_bytes();
        if message.get_channel_name() == names.pings {
            if let Some(sent) = std::str::from_utf8(payload)
                .ok()
                .and_then(|text| text.parse::<u64>().ok())
            {
                this.freshness.heard(sent);
            }
            continue;
        }
        let Ok(text) = std::str::from_utf8(payload) else {
            continue;
        };
        let mut parts = text.split('\n');
        let header = parts.next().unwrap_or_default();
        let (domain, origin) = header.split_once(' ').unwrap_or((header, ""));
        if origin == names.origin {
            continue;
        }
        if let Some(layer) = this.layer(domain) {
            let keys: Vec<&str> = parts.collect();
            let dropped = layer.drop_keys(&keys).await;
            this.metrics.cache_l1_dropped(dropped);
        }
    }
}

/// Publishes the send time to this host's ping channel every quarter of the
/// staleness bound (re-read each round, so that a reload applies).
async fn ping(cache: Weak<TwoLayerCache>, redis: RedisClient, channel: String) {
    loop {
        let Some(this) = cache.upgrade() else { return };
        let interval = (this.freshness.max_stale() / 4).max(Duration::from_millis(2));
        let sent = this.freshness.now();
        drop(this);
        let _: Result<i64, _> = redis
            .run("PUBLISH", Retry::Never, |mut c| {
                let cmd = redis::cmd("PUBLISH").arg(&channel).arg(sent).clone();
                async move { cmd.query_async(&mut c).await }
            })
            .await;
        tokio::time::sleep(interval).await;
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
