//! The specification's constants as defaults (seed: `cache.constants.ts`,
//! `redis.constants.ts`, `rabbitmq.constants.ts`).

use super::*;

const MIB: usize = 1024 * 1024;

impl Default for HostConfig {
    fn default() -> Self {
        Self {
            host: HostSection::default(),
            limits: Limits::default(),
            backends: Backends::default(),
            redis: RedisConfig::default(),
            amqp: AmqpConfig::default(),
            cache: CacheConfig::default(),
            store: StoreConfig::default(),
            messaging: MessagingConfig::default(),
            queues: seed_queues(),
            dead_letter: DeadLetterConfig::default(),
            lock: LockConfig::default(),
            http: HttpConfig::default(),
            plugins: BTreeMap::new(),
            schedules: BTreeMap::new(),
            webhooks: Default::default(),
            stand_ins: None,
        }
    }
}

impl Default for HostSection {
    fn default() -> Self {
        Self {
            plugins_dir: PathBuf::from("plugins/dist"),
            admin_addr: "127.0.0.1:8080".to_string(),
            key_prefix: "techub:".to_string(),
            max_instances: 256,
            loader_instances: 16,
            max_key_length: 512,
            max_message_bytes: MIB,
            pooling: true,
            admin_token: None,
            admin_token_env: None,
            cache_dir: PathBuf::from(".techub-cache"),
            compile_cache: true,
            drain_timeout_ms: 30_000,
            keep_resident_mib: 16,
            metrics: true,
            metrics_poll_ms: 5_000,
            max_plugin_bytes: 64 * MIB as u64,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory_mib: 64,
            cpu_ms: 1_000,
            timeout_ms: 5_000,
            max_host_calls: 10_000,
            max_publishes: 100,
            max_leases: 16,
            max_output_bytes: 64 * 1024,
            max_log_records_per_s: 100,
            prefetch: 10,
            backoff_after_violations: 3,
            reuse_instance: 1,
            reuse_idle_ms: 1_000,
            max_http_requests: 10,
            max_http_in_flight: 64,
            http_connect_timeout_ms: 2_000,
            http_first_byte_timeout_ms: 5_000,
            http_between_bytes_timeout_ms: 5_000,
            max_http_request_bytes: 1024 * 1024,
            max_http_response_bytes: 8 * 1024 * 1024,
        }
    }
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            mode: RedisMode::Single,
            url: "redis://127.0.0.1:6379".to_string(),
            urls: Vec::new(),
            sentinels: Vec::new(),
            master_name: "mymaster".to_string(),
            wait_replicas: 0,
            wait_timeout_ms: 100,
            max_retries: 3,
            retry_delay_ms: 100,
            connection_timeout_ms: 10_000,
            command_timeout_ms: 5_000,
            slow_command_ms: 100,
        }
    }
}

impl Default for AmqpConfig {
    fn default() -> Self {
        Self {
            url: "amqp://guest:guest@127.0.0.1:5672/%2f".to_string(),
            urls: Vec::new(),
            queue_kind: QueueKind::Classic,
            delivery_limit: 20,
            connection_timeout_ms: 10_000,
            main_exchange: "techub.main".to_string(),
            dead_letter_exchange: "techub.dlx".to_string(),
            dead_letter_queue: "dead.letter.queue".to_string(),
            delayed_exchange: "techub.delayed".to_string(),
            queue_prefix: "techub.".to_string(),
            management_url: None,
            dead_letter_key: None,
        }
    }
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            max_entry_bytes: 5 * MIB,
            max_bulk_keys: 1000,
            max_tags: 32,
            memory_budget_mib: 256,
            stats_retention_s: 3_600,
            stats_flush_ms: 1_000,
            domains: seed_domains(),
            invalidate: Vec::new(),
            loaders: BTreeMap::new(),
            load_wait_ms: 5_000,
            warm: BTreeMap::new(),
            l1: BTreeMap::new(),
            l1_max_stale_ms: 100,
        }
    }
}

/// The seed's 14 `CacheDomain`s. The seed gives TTLs for seven; the rest get the
/// seed's `medium` default TTL (30 min), except `pricing` and `coupons`, which follow
/// `inventory` (5 min) because stale prices are costly.
pub(super) fn seed_domains() -> BTreeMap<String, u32> {
    [
        ("permissions", 900),
        ("users", 1_800),
        ("products", 3_600),
        ("categories", 7_200),
        ("sessions", 86_400),
        ("cart", 604_800),
        ("inventory", 300),
        ("pricing", 300),
        ("orders", 1_800),
        ("settings", 3_600),
        ("brands", 7_200),
        ("coupons", 300),
        ("reviews", 1_800),
        ("wishlist", 86_400),
    ]
    .into_iter()
    .map(|(name, ttl)| (name.to_string(), ttl))
    .collect()
}

impl Default for QueuePolicy {
    fn default() -> Self {
        Self {
            durable: true,
            max_retries: 3,
            retry_delay_ms: 5_000,
            backoff_multiplier: 2.0,
            max_retry_delay_ms: 300_000,
            priority: QueuePriority::Normal,
            message_ttl_ms: None,
            max_length: None,
            overflow: Overflow::RejectPublish,
            kind: None,
        }
    }
}

/// The seed's 10 `QueueType`s; the six it configures keep its values, the other four
/// get the defaults.
pub(super) fn seed_queues() -> BTreeMap<String, QueuePolicy> {
    let q = |max_retries, retry_delay_ms, priority| QueuePolicy {
        max_retries,
        retry_delay_ms,
        priority,
        ..QueuePolicy::default()
    };
    use QueuePriority::*;
    [
        ("email", q(3, 5_000, Normal)),
        ("sms", q(3, 5_000, High)),
        ("notification", q(5, 3_000, Normal)),
        ("order", q(5, 10_000, High)),
        ("payment", q(5, 5_000, Urgent)),
        ("inventory", q(3, 2_000, High)),
        ("export", QueuePolicy::default()),
        ("import", QueuePolicy::default()),
        ("analytics", QueuePolicy::default()),
        ("webhook", QueuePolicy::default()),
    ]
    .into_iter()
    .map(|(name, policy)| (name.to_string(), policy))
    .collect()
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            memory_budget_mib: 256,
            max_value_bytes: 10 * MIB,
        }
    }
}

impl Default for MessagingConfig {
    fn default() -> Self {
        Self {
            confirm_timeout_ms: 5_000,
            status_ttl_ms: 86_400_000,
        }
    }
}

impl Default for DeadLetterConfig {
    fn default() -> Self {
        Self {
            ttl_ms: 86_400_000,
            max_length: 10_000,
            retry_when_full_ms: 60_000,
        }
    }
}

impl Default for LockConfig {
    fn default() -> Self {
        Self {
            max_ttl_ms: 300_000,
            max_retries: 10,
        }
    }
}
