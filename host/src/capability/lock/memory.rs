//! The embedded lock table.

use super::LockBackend;
use crate::capability::BackendResult;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Default)]
struct Table {
    held: HashMap<String, (String, Instant)>,
    fences: HashMap<String, u64>,
}

/// In-process lock backend.
#[derive(Default)]
pub struct MemoryLocks {
    table: Mutex<Table>,
}

impl MemoryLocks {
    /// An empty lock table.
    pub fn new() -> Self {
        Self::default()
    }

    fn with<T>(&self, f: impl FnOnce(&mut Table, Instant) -> T) -> T {
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        table.held.retain(|_, (_, expires_at)| *expires_at > now);
        f(&mut table, now)
    }
}

#[async_trait::async_trait]
impl LockBackend for MemoryLocks {
    async fn try_acquire(
        &self,
        key: &str,
        fence: &str,
        token: &str,
        ttl: Duration,
    ) -> BackendResult<Option<u64>> {
        Ok(self.with(|t, now| {
            if t.held.contains_key(key) {
                return None;
            }
            t.held
                .insert(key.to_string(), (token.to_string(), now + ttl));
            let fence = t.fences.entry(fence.to_string()).or_default();
            *fence += 1;
            Some(*fence)
        }))
    }

    async fn release(&self, key: &str, token: &str) -> BackendResult<bool> {
        Ok(self.with(|t, _| {
            if t.held.get(key).is_some_and(|(holder, _)| holder == token) {
                t.held.remove(key);
                return true;
            }
            false
        }))
    }

    async fn extend(&self, key: &str, token: &str, ttl: Duration) -> BackendResult<bool> {
        Ok(self.with(|t, now| match t.held.get_mut(key) {
            Some((holder, expires_at)) if holder == token => {
                *expires_at = now + ttl;
                true
            }
            _ => false,
        }))
    }
}
