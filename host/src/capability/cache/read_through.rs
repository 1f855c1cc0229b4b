//! Read-through: a miss is filled by the domain's loader, once per key however many
//! callers miss it at the same time.
//!
//! In one host, the first caller to miss a key leads its *flight*; later callers wait
//! on the flight's channel for the leader's answer. Across hosts, the leader also takes
//! the key's *load lease* (a lock named `<prefix>cache-load:<domain>:<key>` on the lock
//! backend, held for `cache.load_wait_ms`): the host that wins it loads, the others
//! poll the cache for the value it writes. A poller that finds the lease free again
//! without a value (the loader had none, or the host died) takes the lease and loads;
//! one that reaches the end of its wait loads without it. So a stampede costs one
//! loader call per key, two when a lease ran out mid-load.

use super::{CacheBackend, CacheWrite, Priority};
use crate::capability::BackendError;
use crate::capability::lock::LockBackend;
use crate::metrics::CacheEvent;
use crate::names::check_name;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// A value a loader gave, and how to cache it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedEntry {
    /// The value.
    pub value: Vec<u8>,
    /// Lifetime in seconds; `None` (or zero) for the domain's TTL.
    pub ttl_seconds: Option<u32>,
    /// Tags to file it under.
    pub tags: Vec<String>,
}

/// The loaders of the running plugins, as the registry knows them.
#[async_trait::async_trait]
pub trait Loaders: Send + Sync {
    /// The answers of `domain`'s loader for `keys`, one per key in order; `Err` with
    /// why it could not answer (no loader configured or serving, a trap, a limit, the
    /// loader's own error).
    async fn load(&self, domain: &str, keys: &[String])
    -> Result<Vec<Option<LoadedEntry>>, String>;
}

/// Why a key could not be read through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadFailure {
    /// The cache or lock backend failed.
    Backend(BackendError),
    /// The loader failed, or there is none; the reason, for the caller.
    Loader(String),
}

impl From<BackendError> for LoadFailure {
    fn from(error: BackendError) -> Self {
        Self::Backend(error)
    }
}

type Answer = Result<Option<Vec<u8>>, LoadFailure>;

/// Where the callers waiting on a flight get its answer.
type Waiting = watch::Receiver<Option<Answer>>;

/// The keys a caller leads (index, its flight) and those it waits on (index, channel).
type Joined<'a> = (Vec<(usize, Flight<'a>)>, Vec<(usize, Waiting)>);

/// The flights in progress, by (domain, key).
type Flights = HashMap<(String, String), Waiting>;

/// The limits a read-through works under, from the configuration of its caller.
#[derive(Debug, Clone, Copy)]
pub struct LoadLimits {
    /// The domain's default TTL, in seconds.
    pub domain_ttl: u32,
    /// How long to wait for another host's load (`cache.load_wait_ms`).
    pub wait: Duration,
    /// Largest entry (`cache.max_entry_bytes`).
    pub max_entry_bytes: usize,
    /// Most tags on an entry (`cache.max_tags`).
    pub max_tags: u32,
    /// Longest tag (`host.max_key_length`).
    pub max_key_length: usize,
}

impl LoadLimits {
    /// The limits `config` sets, for a domain of TTL `domain_ttl`.
    pub fn of(config: &crate::config::HostConfig, domain_ttl: u32) -> Self {
        Self {
            domain_ttl,
            wait: Duration::from_millis(config.cache.load_wait_ms),
            max_entry_bytes: config.cache.max_entry_bytes,
            max_tags: config.cache.max_tags,
            max_key_length: config.host.max_key_length,
        }
    }
}

/// What read-through has done since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoadCounts {
    /// Loader calls made by this host.
    pub loader_calls: u64,
    /// Keys those calls asked for.
    pub keys_loaded: u64,
    /// Keys a caller got by joining another caller's load in this host.
    pub coalesced: u64,
    /// Keys a caller got by waiting for another caller's lease: another host's load
    /// (or one in this host whose flight it could not join).
    pub waited: u64,
    /// Loader calls that failed.
    pub failures: u64,
}

/// Read-through for every domain of one host.
pub struct ReadThrough {
    cache: Arc<dyn CacheBackend>,
    locks: Arc<dyn LockBackend>,
    stats: Arc<super::CacheStats>,
    metrics: Arc<crate::metrics::Metrics>,
    loaders: OnceLock<Weak<dyn Loaders>>,
    flights: Mutex<Flights>,
    lease_prefix: String,
    lease_fence: String,
    /// On a Redis Cluster a domain's leases and their fencing counter share its slot.
    layout: crate::capability::redis_client::KeyLayout,
    loader_calls: AtomicU64,
    keys_loaded: AtomicU64,
    coalesced: AtomicU64,
    waited: AtomicU64,
    failures: AtomicU64,
}

/// How often a host waiting on another host's load looks for the value.
const POLL: Duration = Duration::from_millis(10);

impl ReadThrough {
    /// Read-through over these backends; `key_prefix` is `host.key_prefix`.
    pub fn new(
        cache: Arc<dyn CacheBackend>,
        locks: Arc<dyn LockBackend>,
        stats: Arc<super::CacheStats>,
        metrics: Arc<crate::metrics::Metrics>,
        key_prefix: &str,
        layout: crate::capability::redis_client::KeyLayout,
    ) -> Self {
        Self {
            layout,
            cache,
            locks,
            stats,
            metrics,
            loaders: OnceLock::new(),
            flights: Mutex::default(),
            lease_prefix: format!("{key_prefix}cache-load:"),
            lease_fence: format!("{key_prefix}cache-load-fence"),
            loader_calls: AtomicU64::new(0),
            keys_loaded: AtomicU64::new(0),
            coalesced: AtomicU64::new(0),
            waited: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        }
    }

    /// Connects the loaders: the registry, which is built after the services and
    /// holds them (hence weak: no cycle keeps a stopped host alive).
    pub fn set_loaders(&self, loaders: Weak<dyn Loaders>) {
        let _ = self.loaders.set(loaders);
    }

    /// What read-through has done since start.
    pub fn counts(&self) -> LoadCounts {
        LoadCounts {
            loader_calls: self.loader_calls.load(Ordering::Relaxed),
            keys_loaded: self.keys_loaded.load(Ordering::Relaxed),
            coalesced: self.coalesced.load(Ordering::Relaxed),
            waited: self.waited.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
        }
    }

    /// Values of `keys` (each missed by a read just now), loaded through `domain`'s
    /// loader, in order: at most one load per key at a time in this host, and, with
    /// leases on a shared lock backend, across hosts.
    pub async fn load(&self, domain: &str, keys: &[String], limits: LoadLimits) -> Vec<Answer> {
        let mut answers: Vec<Option<Answer>> = vec![None; keys.len()];
        // A flight whose leader went away unanswered (cancelled) is led again.
        for _ in 0..3 {
            let (leading, waiting) = self.join_flights(domain, keys, &answers);
            if !leading.is_empty() {
                let led: Vec<String> = leading.iter().map(|(i, _)| keys[*i].clone()).collect();
                let results = self.lead(domain, &led, limits).await;
                for ((i, flight), answer) in leading.into_iter().zip(results) {
                    flight.finish(answer.clone());
                    answers[i] = Some(answer);
                }
            }
            for (i, mut receiver) in waiting {
                if let Ok(answer) = receiver.wait_for(Option::is_some).await {
                    self.coalesced();
                    answers[i] = answer.clone();
                }
            }
            if answers.iter().all(Option::is_some) {
                break;
            }
        }
        answers
            .into_iter()
            .map(|a| {
                a.unwrap_or_else(|| {
                    Err(LoadFailure::Loader(
                        "the load this read waited for was cancelled; retry".into(),
                    ))
                })
            })
            .collect()
    }

    /// Splits the unanswered keys into those this caller leads (a new flight) and
    /// those another caller of this host is loading already (its flight's channel).
    fn join_flights(
        &self,
        domain: &str,
        keys: &[String],
        answers: &[Option<Answer>],
    ) -> Joined<'_> {
        let mut flights = lock(&self.flights);
        let (mut leading, mut waiting) = (Vec::new(), Vec::new());
        for (i, key) in keys.iter().enumerate() {
            if answers[i].is_some() {
                continue;
            }
            let id = (domain.to_string(), key.clone());
            match flights.get(&id) {
                Some(receiver) if receiver.has_changed().is_ok() => {
                    waiting.push((i, receiver.clone()))
                }
                _ => {
                    let (sender, receiver) = watch::channel(None);
                    flights.insert(id.clone(), receiver);
                    leading.push((
                        i,
                        Flight {
                            owner: self,
                            id,
                            sender,
                        },
                    ));
                }
            }
        }
        (leading, waiting)
    }

    /// Loads `keys` for this host: the keys whose lease it takes are loaded now; the
    /// others, loaded by another host, are waited for, and loaded here if they do not
    /// show up.
    async fn lead(&self, domain: &str, keys: &[String], limits: LoadLimits) -> Vec<Answer> {
        let mut answers: Vec<Option<Answer>> = vec![None; keys.len()];
        let mut leases = Vec::new();
        let mut elsewhere = Vec::new();
        let all: Vec<usize> = (0..keys.len()).collect();
        for (i, taken) in self.take_leases(domain, keys, &all, limits.wait).await {
            match taken {
                Ok(Some(lease)) => leases.push((i, lease)),
                Ok(None) => elsewhere.push(i),
                Err(error) => answers[i] = Some(Err(error.into())),
            }
        }
        self.load_leased(domain, keys, &mut leases, &mut answers, limits)
            .await;
        // Another host loads these: watch for its value, take over a lease it let go.
        let deadline = Instant::now() + limits.wait;
        while !elsewhere.is_empty() {
            tokio::time::sleep(POLL).await;
            let wanted: Vec<String> = elsewhere.iter().map(|i| keys[*i].clone()).collect();
            let values = match self.cache.get_many(domain, &wanted).await {
                Ok(values) => values,
                Err(error) => {
                    for i in elsewhere.drain(..) {
                        answers[i] = Some(Err(error.clone().into()));
                    }
                    break;
                }
            };
            let mut still = Vec::new();
            for (i, value) in elsewhere.into_iter().zip(values) {
                match value {
                    Some(value) => {
                        self.waited.fetch_add(1, Ordering::Relaxed);
                        self.metrics.cache_load("waited", 1);
                        answers[i] = Some(Ok(Some(value)));
                    }
                    None => still.push(i),
                }
            }
            let expired = Instant::now() >= deadline;
            let mut leased = Vec::new();
            elsewhere = Vec::new();
            for (i, taken) in self.take_leases(domain, keys, &still, limits.wait).await {
                match taken {
                    Ok(Some(lease)) => leased.push((i, lease)),
                    // Past the wait: load without the lease rather than fail the read.
                    Ok(None) if expired => leased.push((i, Lease::none())),
                    Ok(None) => elsewhere.push(i),
                    Err(error) => answers[i] = Some(Err(error.into())),
                }
            }
            self.load_leased(domain, keys, &mut leased, &mut answers, limits)
                .await;
        }
        answers.into_iter().map(|a| a.unwrap_or(Ok(None))).collect()
    }

    /// Loads the keys of `leased` (indices into `keys`), writes what the loader gave,
    /// answers them, and lets the leases go.
    async fn load_leased(
        &self,
        domain: &str,
        keys: &[String],
        leased: &mut Vec<(usize, Lease)>,
        answers: &mut [Option<Answer>],
        limits: LoadLimits,
    ) {
        if leased.is_empty() {
            return;
        }
        let wanted: Vec<String> = leased.iter().map(|(i, _)| keys[*i].clone()).collect();
        let loaded = self
            .load_and_write(domain, &wanted, limits, None, true)
            .await;
        let released = leased.iter_mut().map(|(i, lease)| {
            self.release_lease(domain, &keys[*i], std::mem::replace(lease, Lease::none()))
        });
        futures::future::join_all(released).await;
        for ((i, _), answer) in leased.drain(..).zip(loaded) {
            answers[i] = Some(answer);
        }
    }

    /// Warms `keys` of `domain`: loads every one (present or not, so that entries
    /// are refreshed before they expire) and writes what the loader gave, with
    /// `ttl_seconds` when set, else the loader's TTL, else the domain's.
    pub async fn refresh(
        &self,
        domain: &str,
        keys: &[String],
        limits: LoadLimits,
        ttl_seconds: Option<u32>,
    ) -> Vec<Answer> {
        self.load_and_write(domain, keys, limits, ttl_seconds, false)
            .await
    }

    /// Calls the loader for `keys` and writes what it gave: with `ttl_seconds` when
    /// set, else the loader's TTL, else the domain's. With `reread`, reads them once
    /// more first (another host may have written them since the miss) and loads only
    /// those still missing.
    async fn load_and_write(
        &self,
        domain: &str,
        keys: &[String],
        limits: LoadLimits,
        ttl_seconds: Option<u32>,
        reread: bool,
    ) -> Vec<Answer> {
        let mut answers: Vec<Option<Answer>> = match reread {
            false => vec![None; keys.len()],
            true => match self.cache.get_many(domain, keys).await {
                Ok(values) => values.into_iter().map(|v| v.map(|v| Ok(Some(v)))).collect(),
                Err(error) => return vec![Err(error.into()); keys.len()],
            },
        };
        let missing: Vec<usize> = (0..keys.len()).filter(|i| answers[*i].is_none()).collect();
        if !missing.is_empty() {
            let wanted: Vec<String> = missing.iter().map(|i| keys[*i].clone()).collect();
            let loaded = self.call_loader(domain, &wanted, limits).await;
            // Each entry has its own TTL and tags: written together, not one by one.
            let writes = missing.iter().zip(loaded).map(|(i, entry)| async move {
                match entry {
                    Ok(Some(entry)) => self
                        .write(domain, &keys[*i], entry, limits, ttl_seconds)
                        .await
                        .map(Some),
                    Ok(None) => Ok(None),
                    Err(e) => Err(e),
                }
            });
            for (i, result) in missing.iter().zip(futures::future::join_all(writes).await) {
                answers[*i] = Some(result);
            }
        }
        answers.into_iter().map(|a| a.unwrap_or(Ok(None))).collect()
    }

    /// One loader call for `keys`: an answer per key, or the failure for each.
    async fn call_loader(
        &self,
        domain: &str,
        keys: &[String],
        limits: LoadLimits,
    ) -> Vec<Result<Option<LoadedEntry>, LoadFailure>> {
        let Some(loaders) = self.loaders.get().and_then(Weak::upgrade) else {
            let reason = "the host's plugins are not loaded (starting or stopping)";
            return vec![Err(LoadFailure::Loader(reason.into())); keys.len()];
        };
        self.loader_calls.fetch_add(1, Ordering::Relaxed);
        self.metrics.cache_load("called", 1);
        self.keys_loaded
            .fetch_add(keys.len() as u64, Ordering::Relaxed);
        let answers = match loaders.load(domain, keys).await {
            Ok(answers) if answers.len() == keys.len() => Ok(answers),
            Ok(answers) => Err(format!(
                "the loader of {domain:?} gave {} answers for {} keys",
                answers.len(),
                keys.len()
            )),
            Err(reason) => Err(reason),
        };
        let answers = match answers {
            Ok(answers) => answers,
            Err(reason) => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                self.metrics.cache_load("failed", 1);
                return vec![Err(LoadFailure::Loader(reason)); keys.len()];
            }
        };
        answers
            .into_iter()
            .map(|entry| match entry {
                Some(entry) => check_entry(domain, &entry, limits)
                    .map(|()| Some(entry))
                    .map_err(LoadFailure::Loader),
                None => Ok(None),
            })
            .collect()
    }

    /// Writes one loaded entry; its value.
    async fn write(
        &self,
        domain: &str,
        key: &str,
        entry: LoadedEntry,
        limits: LoadLimits,
        ttl_seconds: Option<u32>,
    ) -> Result<Vec<u8>, LoadFailure> {
        let ttl = ttl_seconds
            .or(entry.ttl_seconds.filter(|t| *t > 0))
            .unwrap_or(limits.domain_ttl);
        let write = CacheWrite {
            ttl: Duration::from_secs(ttl.into()),
            tags: entry.tags,
            priority: Priority::Medium,
        };
        let entries = [(key.to_string(), entry.value)];
        self.cache.set_many(domain, &entries, &write).await?;
        self.stats.record(domain, CacheEvent::Set, 1);
        let [(_, value)] = entries;
        Ok(value)
    }

    /// The load leases of `keys[i]` for each `i` of `indices`, asked for together (one
    /// round trip's wait on a multiplexed connection, not one per key).
    async fn take_leases(
        &self,
        domain: &str,
        keys: &[String],
        indices: &[usize],
        ttl: Duration,
    ) -> Vec<(usize, Result<Option<Lease>, BackendError>)> {
        let taken = indices
            .iter()
            .map(|i| self.take_lease(domain, &keys[*i], ttl));
        indices
            .iter()
            .copied()
            .zip(futures::future::join_all(taken).await)
            .collect()
    }

    /// The load lease of `key`, if no other caller holds it.
    async fn take_lease(
        &self,
        domain: &str,
        key: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>, BackendError> {
        let token = uuid::Uuid::new_v4().to_string();
        let name = self.lease_name(domain, key);
        Ok(self
            .locks
            .try_acquire(
                &name,
                &self.layout.counter(&self.lease_fence, domain),
                &token,
                ttl,
            )
            .await?
            .map(|_| Lease(Some(token))))
    }

    async fn release_lease(&self, domain: &str, key: &str, lease: Lease) {
        let Some(token) = lease.0 else { return };
        let name = self.lease_name(domain, key);
        if let Err(error) = self.locks.release(&name, &token).await {
            // It runs out by itself within `cache.load_wait_ms`.
            tracing::warn!(%domain, %error, "could not release a cache load lease");
        }
    }

    fn coalesced(&self) {
        self.coalesced.fetch_add(1, Ordering::Relaxed);
        self.metrics.cache_load("coalesced", 1);
    }

    fn lease_name(&self, domain: &str, key: &str) -> String {
        format!("{}{}:{key}", self.lease_prefix, self.layout.group(domain))
    }
}

/// A held load lease (its token), or none (loading past the wait).
struct Lease(Option<String>);

impl Lease {
    fn none() -> Self {
        Self(None)
    }
}

/// A flight this caller leads: its answer goes to every caller waiting on it. Dropped
/// unanswered (the leader was cancelled), it is removed, and the waiters lead again.
struct Flight<'a> {
    owner: &'a ReadThrough,
    id: (String, String),
    sender: watch::Sender<Option<Answer>>,
}

impl Flight<'_> {
    fn finish(self, answer: Answer) {
        self.sender.send_replace(Some(answer));
    }
}

impl Drop for Flight<'_> {
    fn drop(&mut self) {
        let mut flights = lock(&self.owner.flights);
        // Remove the entry only if it is still this flight's (not a newer one's).
        if flights
            .get(&self.id)
            .is_some_and(|r| r.same_channel(&self.sender.subscribe()))
        {
            flights.remove(&self.id);
        }
    }
}

/// Whether a loaded entry fits the cache's limits; the reason when not.
fn check_entry(domain: &str, entry: &LoadedEntry, limits: LoadLimits) -> Result<(), String> {
    if entry.value.len() > limits.max_entry_bytes {
        return Err(format!(
            "the loader of {domain:?} gave a value of {} bytes, more than cache.max_entry_bytes ({})",
            entry.value.len(),
            limits.max_entry_bytes
        ));
    }
    if entry.tags.len() > limits.max_tags as usize {
        return Err(format!(
            "the loader of {domain:?} gave more than {} tags",
            limits.max_tags
        ));
    }
    for tag in &entry.tags {
        check_name(tag, limits.max_key_length)
            .map_err(|m| format!("the loader of {domain:?} gave a tag that {m}"))?;
    }
    Ok(())
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
