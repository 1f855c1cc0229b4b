//! The embedded cache: in-process entries with TTL, tags and a memory budget.
//!
//! When the budget is exceeded, expired entries go first, then the lowest priority,
//! oldest first.

use super::{CacheBackend, CacheWrite, Priority};
use crate::capability::BackendResult;
use crate::names::glob;
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

struct Entry {
    value: Vec<u8>,
    expires_at: Instant,
    tags: Vec<String>,
    priority: u8,
    written: u64,
}

#[derive(Default)]
struct Domain {
    entries: HashMap<String, Entry>,
    tags: HashMap<String, HashSet<String>>,
    bytes: usize,
    evictions: u64,
}

#[derive(Default)]
struct State {
    domains: HashMap<String, Domain>,
    bytes: usize,
    writes: u64,
}

/// In-process cache backend.
pub struct MemoryCache {
    state: Mutex<State>,
    budget_bytes: usize,
}

impl MemoryCache {
    /// A cache that keeps at most about `budget_bytes` of keys and values.
    pub fn new(budget_bytes: usize) -> Self {
        Self {
            state: Mutex::new(State::default()),
            budget_bytes,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn weight(key: &str, entry: &Entry) -> usize {
    key.len() + entry.value.len() + entry.tags.iter().map(String::len).sum::<usize>() + 64
}

fn priority_rank(p: Priority) -> u8 {
    match p {
        Priority::Low => 0,
        Priority::Medium => 1,
        Priority::High => 2,
        Priority::Critical => 3,
    }
}

impl State {
    fn remove(&mut self, domain: &str, key: &str) -> bool {
        let Some(d) = self.domains.get_mut(domain) else {
            return false;
        };
        let Some(entry) = d.entries.remove(key) else {
            return false;
        };
        let bytes = weight(key, &entry);
        self.bytes = self.bytes.saturating_sub(bytes);
        d.bytes = d.bytes.saturating_sub(bytes);
        for tag in &entry.tags {
            if let Some(keys) = d.tags.get_mut(tag) {
                keys.remove(key);
                if keys.is_empty() {
                    d.tags.remove(tag);
                }
            }
        }
        true
    }

    fn live<'a>(&'a mut self, domain: &str, key: &str, now: Instant) -> Option<&'a Entry> {
        let expired = self.domains.get(domain)?.entries.get(key)?.expires_at <= now;
        if expired {
            self.remove(domain, key);
            return None;
        }
        self.domains.get(domain)?.entries.get(key)
    }

    /// Evicts once over the budget: expired entries first, then by priority and age,
    /// down to 90% of the budget, so that the sort is paid once per tenth of the budget
    /// rather than on every write near the limit.
    fn evict(&mut self, budget: usize, now: Instant) {
        if self.bytes <= budget {
            return;
        }
        let target = budget / 10 * 9;
        let mut candidates: Vec<(bool, u8, u64, String, String)> = self
            .domains
            .iter()
            .flat_map(|(d, dom)| {
                dom.entries.iter().map(move |(k, e)| {
                    (
                        e.expires_at > now,
                        e.priority,
                        e.written,
                        d.clone(),
                        k.clone(),
                    )
                })
            })
            .collect();
        candidates.sort();
        for (_, _, _, domain, key) in candidates {
            if self.bytes <= target {
                break;
            }
            if self.remove(&domain, &key)
                && let Some(d) = self.domains.get_mut(&domain)
            {
                d.evictions += 1;
            }
        }
    }
}

#[async_trait::async_trait]
impl CacheBackend for MemoryCache {
    async fn get_many(&self, domain: &str, keys: &[String]) -> BackendResult<Vec<Option<Vec<u8>>>> {
        let now = Instant::now();
        let mut state = self.lock();
        Ok(keys
            .iter()
            .map(|k| state.live(domain, k, now).map(|e| e.value.clone()))
            .collect())
    }

    async fn set_many(
        &self,
        domain: &str,
        entries: &[(String, Vec<u8>)],
        write: &CacheWrite,
    ) -> BackendResult<()> {
        let now = Instant::now();
        let expires_at = now
            .checked_add(write.ttl)
            .unwrap_or(now + Duration::from_secs(365 * 86_400));
        let mut state = self.lock();
        for (key, value) in entries {
            state.remove(domain, key);
            state.writes += 1;
            let entry = Entry {
                value: value.clone(),
                expires_at,
                tags: write.tags.clone(),
                priority: priority_rank(write.priority),
                written: state.writes,
            };
            let bytes = weight(key, &entry);
            state.bytes += bytes;
            let d = state.domains.entry(domain.to_string()).or_default();
            d.bytes += bytes;
            for tag in &write.tags {
                d.tags.entry(tag.clone()).or_default().insert(key.clone());
            }
            d.entries.insert(key.clone(), entry);
        }
        state.evict(self.budget_bytes, now);
        Ok(())
    }

    async fn delete(&self, domain: &str, key: &str) -> BackendResult<bool> {
        let now = Instant::now();
        let mut state = self.lock();
        let live = state.live(domain, key, now).is_some();
        Ok(state.remove(domain, key) && live)
    }

    async fn exists(&self, domain: &str, key: &str) -> BackendResult<bool> {
        Ok(self.lock().live(domain, key, Instant::now()).is_some())
    }

    async fn invalidate_tag(&self, domain: &str, tag: &str) -> BackendResult<u64> {
        let now = Instant::now();
        let mut state = self.lock();
        let keys: Vec<String> = state
            .domains
            .get(domain)
            .and_then(|d| d.tags.get(tag))
            .map(|keys| keys.iter().cloned().collect())
            .unwrap_or_default();
        let mut removed = 0;
        for key in keys {
            if state.live(domain, &key, now).is_some() && state.remove(domain, &key) {
                removed += 1;
            }
        }
        Ok(removed)
    }

    fn usage(&self) -> Vec<super::DomainUsage> {
        let state = self.lock();
        state
            .domains
            .iter()
            .map(|(domain, d)| super::DomainUsage {
                domain: domain.clone(),
                bytes: d.bytes as u64,
                evictions: d.evictions,
            })
            .collect()
    }

    async fn invalidate_pattern(&self, domain: &str, pattern: &str) -> BackendResult<u64> {
        let now = Instant::now();
        let mut state = self.lock();
        let keys: Vec<String> = state
            .domains
            .get(domain)
            .map(|d| {
                d.entries
                    .keys()
                    .filter(|k| glob::matches(pattern, k))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        let mut removed = 0;
        for key in keys {
            if state.live(domain, &key, now).is_some() && state.remove(domain, &key) {
                removed += 1;
            }
        }
        Ok(removed)
    }
}
