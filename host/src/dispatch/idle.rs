//! Instances a consumer keeps between deliveries when its plugin allows reuse
//! (`limits.reuse_instance` above 1): at most its prefetch window of them, each
//! holding a pool slot.
//!
//! They are given up (torn down, their slots freed) when they are of an older version
//! or configuration, when an invocation starts waiting for a slot, and when no
//! delivery has come for `limits.reuse_idle_ms`; a consumer that stops drops them once
//! drained.

use crate::plugins::LoadedPlugin;
use crate::runtime::Teardown;
use std::sync::{Arc, Mutex};

/// Answered instances, each with the version it ran.
#[derive(Default)]
pub(super) struct IdleInstances {
    kept: Mutex<Vec<(Arc<LoadedPlugin>, Teardown)>>,
}

impl IdleInstances {
    fn kept(&self) -> std::sync::MutexGuard<'_, Vec<(Arc<LoadedPlugin>, Teardown)>> {
        self.kept.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An instance of `version`, if one is kept; those of other versions are torn down.
    pub(super) fn take(&self, version: &Arc<LoadedPlugin>) -> Option<Teardown> {
        let mut stale = Vec::new();
        let found = {
            let mut kept = self.kept();
            loop {
                match kept.pop() {
                    Some((of, instance)) if Arc::ptr_eq(&of, version) => break Some(instance),
                    Some(other) => stale.push(other),
                    None => break None,
                }
            }
        };
        // Torn down outside the lock: a reset takes microseconds.
        drop(stale);
        found
    }

    /// Keeps `instance`, which ran `version`, for a later delivery.
    pub(super) fn put(&self, version: Arc<LoadedPlugin>, instance: Teardown) {
        self.kept().push((version, instance));
    }

    /// Whether any instance is kept.
    pub(super) fn is_empty(&self) -> bool {
        self.kept().is_empty()
    }

    /// Tears every kept instance down.
    pub(super) fn clear(&self) {
        let all = std::mem::take(&mut *self.kept());
        drop(all);
    }
}
