//! The registry as the cache's [`Loaders`]: `[cache.loaders]` names a plugin per
//! domain; its current version's `loader` export is called in a fresh instance under
//! that plugin's limits, in a slot kept for loaders.

use super::{Registry, lock};
use crate::capability::cache::{LoadedEntry, Loaders};
use crate::metrics::InvocationOutcome;

#[async_trait::async_trait]
impl Loaders for Registry {
    async fn load(
        &self,
        domain: &str,
        keys: &[String],
    ) -> Result<Vec<Option<LoadedEntry>>, String> {
        let config = self.config.load_full();
        let Some(plugin) = config.cache.loaders.get(domain) else {
            return Err(format!(
                "{domain}: the domain has no loader; add {domain} = \"<plugin>\" to [cache.loaders] in host.toml"
            ));
        };
        let versions = lock(&self.view).versions.get(plugin).cloned();
        let Some(versions) = versions else {
            return Err(format!(
                "{domain}: its loader, plugin {plugin:?}, is not serving"
            ));
        };
        let version = versions.load_full();
        if !version.pre.has_loader() {
            return Err(format!(
                "{domain}: plugin {plugin:?} does not export a loader (#[loader] in the SDK)"
            ));
        }
        let report = self
            .runtime
            .load(&version.pre, version.context.clone(), domain, keys)
            .await;
        let outcome = match &report.result {
            Ok(Ok(_)) => InvocationOutcome::Ok,
            Ok(Err(_)) => InvocationOutcome::Reject,
            Err(error) => error.outcome(),
        };
        report.record(&version.context.metrics, outcome);
        tracing::info!(plugin = %plugin, %domain, keys = keys.len(), outcome = outcome.label(),
            elapsed_us = report.elapsed.as_micros() as u64, "loaded");
        match report.result {
            Ok(Ok(answers)) => Ok(answers
                .into_iter()
                .map(|a| {
                    a.map(|a| LoadedEntry {
                        value: a.value,
                        ttl_seconds: a.ttl_seconds,
                        tags: a.tags,
                    })
                })
                .collect()),
            Ok(Err(reason)) => Err(format!("{domain}: loader {plugin:?} failed: {reason}")),
            Err(error) => Err(format!("{domain}: loader {plugin:?} failed: {error}")),
        }
    }
}
