//! What a reload of `host.toml` changes, and what only a restart can.
//!
//! Fixed at start: the backends and their connections (`[backends]`, `[redis]`,
//! `[amqp]`), the admin endpoint and its token, the webhook listener's address, the pool (`host.max_instances`,
//! `host.pooling`, and the slot size the largest memory limit set), the key prefix,
//! the plugins and cache directories, the embedded backends' memory budgets, metrics
//! on or off and their poll interval, and the cache statistics' retention and flush
//! interval. Everything else — limits, grants, settings, `enabled`, queue policies,
//! cache domains and limits, store and messaging limits — applies to the next
//! invocation; queue and dead-letter limits (TTL, length) apply to the queues as they
//! are (on RabbitMQ through policies).

use super::{ConfigError, HostConfig};

impl HostConfig {
    /// `self` (a new configuration) with every field fixed at start taken from
    /// `running`, and the names of those that differed (each needs a restart, and is
    /// ignored until then rather than half-applied). Refused when a plugin's memory
    /// limit would exceed `slot_mib`, the size of the pool's slots, fixed at start
    /// (`None`: no pool, any limit goes). A limit lowered by one reload can be raised
    /// again by the next, up to that size.
    pub fn for_reload(
        mut self,
        running: &HostConfig,
        slot_mib: Option<u32>,
    ) -> Result<(Self, Vec<String>), ConfigError> {
        let ignored = keep_fixed_fields(&mut self, running);
        let Some(slot) = slot_mib else {
            return Ok((self, ignored));
        };
        for name in self.plugins.keys().map(String::as_str).chain([""]) {
            let memory = match name {
                "" => self.limits.memory_mib,
                name => self.limits_of(name).memory_mib,
            };
            if memory > slot {
                let field = match name {
                    "" => "limits.memory_mib".to_string(),
                    name => format!("plugins.{name}.limits.memory_mib"),
                };
                return Err(ConfigError::Invalid {
                    field,
                    message: format!(
                        "is {memory}, more than the {slot} MiB the pool's slots were sized for at start; restart the host to raise it"
                    ),
                });
            }
        }
        Ok((self, ignored))
    }
}

/// Sets every field of `new` fixed at start to its value in `running`; the names of
/// those that differed. Every field of the configuration is named here, fixed or live
/// (`_`): a field added to a section does not compile until it is classified.
fn keep_fixed_fields(new: &mut HostConfig, running: &HostConfig) -> Vec<String> {
    let mut ignored = Vec::new();
    let mut keep = |name: &str, differs: bool| {
        if differs {
            ignored.push(name.to_string());
        }
    };
    macro_rules! fixed {
        ($new:expr, $running:expr, $name:literal) => {
            keep($name, *$new != $running);
            *$new = $running.clone();
        };
    }
    let HostConfig {
        host,
        limits: _,
        backends,
        redis,
        amqp,
        cache,
        store,
        messaging,
        queues: _,
        dead_letter: _,
        lock: _,
        http: _,
        plugins: _,
        schedules: _,
        webhooks,
        stand_ins,
    } = new;
    fixed!(backends, running.backends, "backends");
    fixed!(redis, running.redis, "redis");
    fixed!(amqp, running.amqp, "amqp");
    let super::HostSection {
        plugins_dir,
        admin_addr,
        key_prefix,
        max_instances,
        loader_instances,
        max_key_length: _,
        max_message_bytes: _,
        pooling,
        admin_token,
        admin_token_env,
        cache_dir,
        compile_cache,
        drain_timeout_ms: _,
        keep_resident_mib,
        metrics,
        metrics_poll_ms,
        max_plugin_bytes: _,
    } = host;
    let was = &running.host;
    fixed!(plugins_dir, was.plugins_dir, "host.plugins_dir");
    fixed!(admin_addr, was.admin_addr, "host.admin_addr");
    fixed!(admin_token, was.admin_token, "host.admin_token");
    fixed!(admin_token_env, was.admin_token_env, "host.admin_token_env");
    fixed!(key_prefix, was.key_prefix, "host.key_prefix");
    fixed!(max_instances, was.max_instances, "host.max_instances");
    fixed!(
        loader_instances,
        was.loader_instances,
        "host.loader_instances"
    );
    fixed!(pooling, was.pooling, "host.pooling");
    fixed!(
        keep_resident_mib,
        was.keep_resident_mib,
        "host.keep_resident_mib"
    );
    fixed!(cache_dir, was.cache_dir, "host.cache_dir");
    fixed!(compile_cache, was.compile_cache, "host.compile_cache");
    fixed!(metrics, was.metrics, "host.metrics");
    fixed!(metrics_poll_ms, was.metrics_poll_ms, "host.metrics_poll_ms");
    let super::CacheConfig {
        max_entry_bytes: _,
        max_bulk_keys: _,
        max_tags: _,
        memory_budget_mib,
        stats_retention_s,
        stats_flush_ms,
        domains: _,
        invalidate: _,
        loaders: _,
        load_wait_ms: _,
        warm: _,
        l1: _,
        l1_max_stale_ms: _,
    } = cache;
    let was = &running.cache;
    fixed!(
        memory_budget_mib,
        was.memory_budget_mib,
        "cache.memory_budget_mib"
    );
    fixed!(
        stats_retention_s,
        was.stats_retention_s,
        "cache.stats_retention_s"
    );
    fixed!(stats_flush_ms, was.stats_flush_ms, "cache.stats_flush_ms");
    let super::StoreConfig {
        memory_budget_mib,
        max_value_bytes: _,
    } = store;
    fixed!(
        memory_budget_mib,
        running.store.memory_budget_mib,
        "store.memory_budget_mib"
    );
    let super::MessagingConfig {
        confirm_timeout_ms: _,
        status_ttl_ms,
    } = messaging;
    fixed!(
        status_ttl_ms,
        running.messaging.status_ttl_ms,
        "messaging.status_ttl_ms"
    );
    fixed!(stand_ins, running.stand_ins, "stand_ins");
    let super::webhooks::WebhooksConfig { addr, routes: _ } = webhooks;
    fixed!(addr, running.webhooks.addr, "webhooks.addr");
    ignored
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_fields_are_kept_and_named_and_live_ones_change() {
        let running = HostConfig::default();
        let new = HostConfig::parse(
            "[backends]\ncache = \"redis\"\n[host]\nmax_instances = 3\n[limits]\ncpu_ms = 20\n",
        )
        .unwrap();
        let slot = Some(running.max_memory_mib());
        let (effective, ignored) = new.for_reload(&running, slot).unwrap();
        assert_eq!(ignored, ["backends", "host.max_instances"]);
        assert_eq!(effective.backends, running.backends);
        assert_eq!(effective.host.max_instances, running.host.max_instances);
        assert_eq!(effective.limits.cpu_ms, 20, "limits apply live");
    }

    #[test]
    fn a_queue_types_kind_changes_on_a_reload() {
        // The broker moves its queues to the new kind (`amqp/migrate.rs`).
        let running = HostConfig::default();
        let new = HostConfig::parse("[queues.order]\nkind = \"quorum\"\n").unwrap();
        let (effective, ignored) = new.for_reload(&running, None).unwrap();
        assert!(ignored.is_empty(), "{ignored:?}");
        assert_eq!(
            effective.queues["order"].kind,
            Some(crate::config::QueueKind::Quorum)
        );
    }

    #[test]
    fn memory_beyond_the_pool_slots_needs_a_restart() {
        let running = HostConfig::default();
        let new = HostConfig::parse("[plugins.big.limits]\nmemory_mib = 128\n").unwrap();
        let slot = Some(running.max_memory_mib());
        let err = new.for_reload(&running, slot).unwrap_err().to_string();
        assert!(
            err.contains("plugins.big.limits.memory_mib") && err.contains("restart"),
            "{err}"
        );
        // Without the pooling allocator there are no slots to outgrow.
        let new = HostConfig::parse("[plugins.big.limits]\nmemory_mib = 128\n").unwrap();
        assert!(new.for_reload(&running, None).is_ok());
    }

    #[test]
    fn a_lowered_memory_limit_can_be_raised_again_up_to_the_slot_size() {
        let started = HostConfig::default();
        let slot = Some(started.max_memory_mib());
        let lowered = HostConfig::parse("[limits]\nmemory_mib = 1\n").unwrap();
        let (running, _) = lowered.for_reload(&started, slot).unwrap();
        let raised = HostConfig::parse("[limits]\nmemory_mib = 64\n").unwrap();
        let (running, _) = raised
            .for_reload(&running, slot)
            .expect("back up to the size the slots have had since start");
        assert_eq!(running.limits.memory_mib, 64);
    }
}
