//! The invalidation channel: this host's subscription to `<prefix>cache-l1`, on
//! which every host's writes, deletes and invalidations publish their keys (from
//! inside the Redis scripts that make them, so in Redis's own order). On a cluster
//! with sharded pub/sub each L1 domain has its own channel,
//! `<prefix>cache-l1:{<domain>}`, on the shard that holds the domain.
//!
//! How a host knows its L1 is current: it publishes a ping to itself
//! (`<prefix>cache-l1-ping:<host id>`; sharded, one per L1 domain in the domain's
//! slot) every quarter of `cache.l1_max_stale_ms`, carrying the time it sent it.
//! Redis delivers one connection's messages in the order it ran their publishes, so
//! when the ping sent at `t` comes back, every invalidation of a write that returned
//! before `t` has come back before it (sharded: every invalidation of the ping's
//! shard, so L1 is as fresh as its stalest domain's ping). The host serves from L1
//! only while the latest ping it heard was sent at most `l1_max_stale_ms` ago; a
//! channel that stalls or breaks therefore turns L1 off within that bound, without
//! any timeout to tune. A broken channel also drops every copy (what it missed is
//! unknown), and so does each new subscription.

use super::TwoLayerCache;
use crate::capability::redis_client::{RedisClient, Retry, Subscription};
use std::collections::HashMap;
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

    /// The send time of the stalest newest ping over the channels listened to.
    fn set_heard(&self, sent: u64) {
        self.heard.store(sent, Ordering::Release);
    }

    fn lost(&self) {
        self.subscribed.store(false, Ordering::Release);
        self.heard.store(0, Ordering::Release);
    }
}

/// What a host subscribes to for its L1 domains: for each domain, its invalidation
/// channel and its ping channel; the same two for every domain (classic pub/sub) or
/// the domain's own (sharded: each in the domain's slot, so that a domain's ping
/// proves its own shard's invalidations came before it).
#[derive(Clone, PartialEq, Eq)]
pub(super) struct Plan(Vec<Channels>);

/// One L1 domain's channels.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Channels {
    domain: String,
    invalidations: String,
    pings: String,
}

impl Channels {
    fn pair(&self) -> Vec<String> {
        vec![self.invalidations.clone(), self.pings.clone()]
    }
}

impl Plan {
    pub(super) fn of(cache: &TwoLayerCache) -> Self {
        let mut channels: Vec<Channels> = cache
            .layers
            .load()
            .keys()
            .map(|domain| Channels {
                domain: domain.clone(),
                invalidations: cache.redis.invalidation_channel(domain),
                pings: cache.redis.ping_channel(domain),
            })
            .collect();
        channels.sort();
        Self(channels)
    }

    /// Whether it listens on `channels`' two channels (for any domain).
    fn hears(&self, channels: &Channels) -> bool {
        self.0.iter().any(|c| c.pair() == channels.pair())
    }

    /// The subscription's groups: each distinct pair, one slot's when sharded.
    fn groups(&self) -> Vec<Vec<String>> {
        let mut groups: Vec<Vec<String>> = self.0.iter().map(Channels::pair).collect();
        groups.dedup();
        groups
    }

    /// The distinct ping channels.
    fn pings(&self) -> impl Iterator<Item = &String> {
        let mut pings: Vec<&String> = self.0.iter().map(|c| &c.pings).collect();
        pings.sort();
        pings.dedup();
        pings.into_iter()
    }
}

/// Subscribes, applies invalidations and pings itself until `cache` is dropped;
/// reconnects after `retry_delay` when the subscription ends.
pub(super) async fn run(cache: Weak<TwoLayerCache>, redis: RedisClient, retry_delay: Duration) {
    let pinger = tokio::spawn(ping(cache.clone(), redis.clone()));
    let _stop_pinger = AbortOnDrop(pinger);
    loop {
        let Some((plan, replanned)) = cache
            .upgrade()
            .map(|this| (Plan::of(&this), this.replanned.clone()))
        else {
            return;
        };
        if plan.0.is_empty() {
            // A reload removed every L1 domain: nothing to hear until one comes back.
            replanned.notified().await;
            continue;
        }
        match redis.subscribe(&plan.groups()).await {
            Ok(subscription) => {
                let Some(this) = cache.upgrade() else { return };
                // Copies from before this subscription may have missed invalidations.
                this.reset().await;
                this.freshness.subscribed.store(true, Ordering::Release);
                this.metrics.cache_l1_channel(true);
                tracing::info!("cache L1: invalidation channel subscribed");
                drop(this);
                listen(&cache, subscription, plan).await;
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

/// Applies messages until the subscription ends, or stays silent for so long (20
/// staleness bounds, at least 2 s, while pings come every quarter bound) that it is
/// taken for broken. When a reload names other L1 domains, subscribes to their
/// channels too (sharded pub/sub; classic has one channel for all).
async fn listen(cache: &Weak<TwoLayerCache>, mut subscription: Subscription, mut plan: Plan) {
    // The newest ping heard on each ping channel; L1 is as fresh as the stalest.
    let mut heard: HashMap<Vec<u8>, u64> = HashMap::new();
    loop {
        let Some((silence, replanned)) = cache.upgrade().map(|this| {
            (
                (this.freshness.max_stale() * 20).max(Duration::from_secs(2)),
                this.replanned.clone(),
            )
        }) else {
            return;
        };
        let next = tokio::select! {
            next = tokio::time::timeout(silence, subscription.next()) => next,
            () = replanned.notified() => {
                let Some(this) = cache.upgrade() else { return };
                let wanted = Plan::of(&this);
                for channels in wanted.0.iter().filter(|c| !plan.hears(c)) {
                    if subscription.add(&channels.pair()).await.is_err() {
                        return;
                    }
                    // Copies the new domain's layer made before its channel was
                    // subscribed may have missed invalidations.
                    if let Some(layer) = this.layer(&channels.domain) {
                        layer.clear().await;
                    }
                }
                plan = wanted;
                this.freshness.set_heard(stalest(&plan, &heard));
                continue;
            }
        };
        let Ok(Some((channel, payload))) = next else {
            return;
        };
        let Some(this) = cache.upgrade() else { return };
        if plan.pings().any(|ping| ping.as_bytes() == channel) {
            if let Some(sent) = std::str::from_utf8(&payload)
                .ok()
                .and_then(|text| text.parse::<u64>().ok())
            {
                let newest = heard.entry(channel).or_default();
                *newest = (*newest).max(sent);
                this.freshness.set_heard(stalest(&plan, &heard));
            }
            continue;
        }
        let Ok(text) = std::str::from_utf8(&payload) else {
            continue;
        };
        let mut parts = text.split('\n');
        let header = parts.next().unwrap_or_default();
        let (domain, origin) = header.split_once(' ').unwrap_or((header, ""));
        if origin == this.redis.origin() {
            continue;
        }
        if let Some(layer) = this.layer(domain) {
            let keys: Vec<&str> = parts.collect();
            let dropped = layer.drop_keys(&keys).await;
            this.metrics.cache_l1_dropped(dropped);
        }
    }
}

/// The send time of the stalest newest ping over the plan's ping channels (0 while one
/// has not been heard).
fn stalest(plan: &Plan, heard: &HashMap<Vec<u8>, u64>) -> u64 {
    plan.pings()
        .map(|ping| heard.get(ping.as_bytes()).copied().unwrap_or(0))
        .min()
        .unwrap_or(0)
}

/// Publishes the send time to this host's ping channels every quarter of the
/// staleness bound (bound and channels re-read each round, so that a reload applies).
/// A publish that took longer than a round is given up (its shard's ping is then
/// late, which is what the staleness bound is for).
async fn ping(cache: Weak<TwoLayerCache>, redis: RedisClient) {
    let publish = redis.publish_command();
    loop {
        let Some(this) = cache.upgrade() else { return };
        let interval = (this.freshness.max_stale() / 4).max(Duration::from_millis(2));
        let sent = this.freshness.now();
        let plan = Plan::of(&this);
        drop(this);
        // All at once, and none waited for past the round: a shard that does not
        // answer must not hold back the pings of the others.
        let pings = futures::future::join_all(plan.pings().map(|channel| {
            redis.run(publish, Retry::Never, move |mut c| {
                let cmd = redis::cmd(publish).arg(channel).arg(sent).clone();
                async move { cmd.query_async::<i64>(&mut c).await }
            })
        }));
        let _ = tokio::join!(
            tokio::time::timeout(interval, pings),
            tokio::time::sleep(interval)
        );
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
