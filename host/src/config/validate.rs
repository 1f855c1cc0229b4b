//! Range checks of a parsed configuration; each error names its field.

use super::*;
use std::fmt::Display;

/// Why a configuration was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("could not read {path}: {message}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        message: String,
    },
    /// The text is not valid TOML or does not fit the schema (unknown or mistyped field).
    #[error("{0}")]
    Syntax(String),
    /// A field is out of range.
    #[error("`{field}` {message}")]
    Invalid {
        /// Dotted path of the field, e.g. `queues.email.max_retries`.
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// An error in a named file. (Its message already holds the inner error's, so the
    /// inner error is not a `source`: a report would print it twice.)
    #[error("{path}: {error}")]
    InFile {
        /// The file.
        path: PathBuf,
        /// The error.
        error: Box<ConfigError>,
    },
}

impl ConfigError {
    pub(super) fn in_file(self, path: &Path) -> Self {
        Self::InFile {
            path: path.to_path_buf(),
            error: Box::new(self),
        }
    }
}

pub(super) fn check<T: PartialOrd + Display>(
    field: impl Into<String>,
    value: T,
    min: T,
    max: T,
) -> Result<(), ConfigError> {
    if value < min || value > max {
        return Err(ConfigError::Invalid {
            field: field.into(),
            message: format!("must be between {min} and {max}, got {value}"),
        });
    }
    Ok(())
}

pub(super) fn invalid(field: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.into(),
        message: message.into(),
    }
}

/// The shortest lease a plugin may ask for (the specification's 1 s).
pub const MIN_LOCK_TTL_MS: u32 = 1_000;

/// Whether `name` is a valid plugin, domain or queue name.
///
/// Plugin, domain and queue names become parts of keys and queue names: keep them to
/// a charset that needs no escaping anywhere.
pub fn validate_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

impl HostConfig {
    /// Checks every section; the first failure names its field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.host.validate()?;
        self.limits.validate("limits")?;
        self.http.validate()?;
        self.validate_plugins()?;
        super::validate_redis::validate(&self.redis)?;
        super::validate_amqp::validate(&self.amqp, &self.queues)?;
        self.messaging.validate()?;
        super::validate_cache::validate(
            &self.cache,
            self.backends.cache,
            self.host.max_key_length,
        )?;
        self.store.validate()?;
        for (queue, policy) in &self.queues {
            policy.validate(queue)?;
        }
        self.dead_letter.validate()?;
        self.lock.validate()?;
        for (name, schedule) in &self.schedules {
            schedule.validate(name)?;
        }
        self.webhooks.validate(self.host.max_message_bytes)?;
        if let Some(stand_ins) = &self.stand_ins {
            stand_ins.validate()?;
        }
        Ok(())
    }

    /// `[plugins.<name>]`: names, limits, grants of declared domains, patterns,
    /// outbound grants, secrets.
    fn validate_plugins(&self) -> Result<(), ConfigError> {
        for (name, plugin) in &self.plugins {
            if !validate_name(name) {
                return Err(invalid(
                    format!("plugins.{name}"),
                    "plugin names use a-z, 0-9, - and _ (at most 64)",
                ));
            }
            self.limits_of(name)
                .validate(&format!("plugins.{name}.limits"))?;
            for domain in &plugin.cache_domains {
                if !self.cache.domains.contains_key(domain) {
                    return Err(invalid(
                        format!("plugins.{name}.cache_domains"),
                        format!(
                            "names the undeclared domain {domain:?}; declare it in [cache.domains]"
                        ),
                    ));
                }
            }
            for pattern in &plugin.publish {
                crate::names::routing::validate_pattern(pattern)
                    .map_err(|e| invalid(format!("plugins.{name}.publish"), e))?;
            }
            for pattern in &plugin.subscribe {
                crate::names::routing::validate_pattern(pattern)
                    .map_err(|e| invalid(format!("plugins.{name}.subscribe"), e))?;
            }
            for grant in &plugin.outbound {
                OutboundGrant::parse(grant).map_err(|e| {
                    invalid(
                        format!("plugins.{name}.outbound"),
                        format!("{grant:?}: {e}"),
                    )
                })?;
            }
            for bucket in &plugin.buckets {
                if !validate_name(bucket) || bucket == super::DEFAULT_BUCKET {
                    return Err(invalid(
                        format!("plugins.{name}.buckets"),
                        format!(
                            "{bucket:?}: bucket names use a-z, 0-9, - and _ (at most 64), and \"default\" is every plugin's own"
                        ),
                    ));
                }
            }
            for secret in plugin.secrets.keys() {
                if plugin.settings.contains_key(secret) {
                    return Err(invalid(
                        format!("plugins.{name}.secrets.{secret}"),
                        "is also a setting: `config` would serve one of them; rename one",
                    ));
                }
                if secret.is_empty() || secret.len() > 128 {
                    return Err(invalid(
                        format!("plugins.{name}.secrets"),
                        "a secret's name is 1 to 128 bytes",
                    ));
                }
            }
        }
        Ok(())
    }
}

impl HostSection {
    /// `[host]`.
    fn validate(&self) -> Result<(), ConfigError> {
        let h = self;
        check("host.max_instances", h.max_instances, 1, 100_000)?;
        check("host.loader_instances", h.loader_instances, 1, 10_000)?;
        check("host.drain_timeout_ms", h.drain_timeout_ms, 0, 3_600_000)?;
        check("host.keep_resident_mib", h.keep_resident_mib, 0, 4096)?;
        check("host.metrics_poll_ms", h.metrics_poll_ms, 100, 3_600_000)?;
        check(
            "host.max_plugin_bytes",
            h.max_plugin_bytes,
            1024,
            4 * 1024 * 1024 * 1024,
        )?;
        check("host.max_key_length", h.max_key_length, 16, 64 * 1024)?;
        check(
            "host.max_message_bytes",
            h.max_message_bytes,
            1,
            128 * 1024 * 1024,
        )?;
        if h.key_prefix.is_empty()
            || h.key_prefix
                .bytes()
                .any(|b| b.is_ascii_control() || b"*?[]\\{}".contains(&b))
        {
            // `{}` would make the prefix the hash tag of every key on a Redis Cluster.
            return Err(invalid(
                "host.key_prefix",
                "must be non-empty, without control, glob or hash-tag ({}) characters",
            ));
        }
        let Ok(admin) = h.admin_addr.parse::<std::net::SocketAddr>() else {
            return Err(invalid(
                "host.admin_addr",
                format!("is not an address like 127.0.0.1:8080: {:?}", h.admin_addr),
            ));
        };
        if h.admin_token.as_deref().is_some_and(|t| t.len() < 16) {
            return Err(invalid(
                "host.admin_token",
                "must be at least 16 characters",
            ));
        }
        if !admin.ip().is_loopback() && h.admin_token.is_none() && h.admin_token_env.is_none() {
            // The endpoint publishes as the operator: off this machine it needs a token.
            return Err(invalid(
                "host.admin_addr",
                format!(
                    "{admin} is not a loopback address: set host.admin_token_env (or host.admin_token) so the endpoint requires a bearer token"
                ),
            ));
        }
        Ok(())
    }
}

impl MessagingConfig {
    /// `[messaging]`.
    fn validate(&self) -> Result<(), ConfigError> {
        check(
            "messaging.confirm_timeout_ms",
            self.confirm_timeout_ms,
            1,
            600_000,
        )?;
        check(
            "messaging.status_ttl_ms",
            self.status_ttl_ms,
            60_000,
            30 * 86_400_000,
        )
    }
}

impl StoreConfig {
    /// `[store]`.
    fn validate(&self) -> Result<(), ConfigError> {
        check(
            "store.memory_budget_mib",
            self.memory_budget_mib,
            1,
            1 << 20,
        )?;
        check(
            "store.max_value_bytes",
            self.max_value_bytes,
            1,
            512 * 1024 * 1024,
        )
    }
}

impl QueuePolicy {
    /// `[queues.<queue>]`.
    fn validate(&self, queue: &str) -> Result<(), ConfigError> {
        let policy = self;
        if !validate_name(queue) {
            return Err(invalid(
                format!("queues.{queue}"),
                "queue names use a-z, 0-9, - and _",
            ));
        }
        let f = |field: &str| format!("queues.{queue}.{field}");
        check(f("max_retries"), policy.max_retries, 1, 10)?;
        check(f("retry_delay_ms"), policy.retry_delay_ms, 100, 86_400_000)?;
        check(
            f("backoff_multiplier"),
            policy.backoff_multiplier,
            1.0,
            10.0,
        )?;
        check(
            f("max_retry_delay_ms"),
            policy.max_retry_delay_ms,
            1_000,
            86_400_000,
        )?;
        if let Some(ttl) = policy.message_ttl_ms {
            // RabbitMQ's bound on a TTL (2^32 - 1 ms).
            check(f("message_ttl_ms"), ttl, 1, u64::from(u32::MAX))?;
        }
        if let Some(length) = policy.max_length {
            check(f("max_length"), length, 1, 10_000_000)?;
        }
        Ok(())
    }
}

impl DeadLetterConfig {
    /// `[dead_letter]`.
    fn validate(&self) -> Result<(), ConfigError> {
        check("dead_letter.ttl_ms", self.ttl_ms, 1_000, 30 * 86_400_000)?;
        check("dead_letter.max_length", self.max_length, 1, 10_000_000)?;
        check(
            "dead_letter.retry_when_full_ms",
            self.retry_when_full_ms,
            100,
            3_600_000,
        )?;
        Ok(())
    }
}

impl LockConfig {
    /// `[lock]`.
    fn validate(&self) -> Result<(), ConfigError> {
        check("lock.max_ttl_ms", self.max_ttl_ms, MIN_LOCK_TTL_MS, 300_000)?;
        check("lock.max_retries", self.max_retries, 0, 10)?;
        Ok(())
    }
}

impl super::stand_ins::StandInsConfig {
    /// `[stand_ins]`.
    fn validate(&self) -> Result<(), ConfigError> {
        let stand_ins = self;
        if (stand_ins.mail.is_some() || stand_ins.gateway.is_some()) && stand_ins.key.is_none() {
            return Err(invalid(
                "stand_ins.key",
                "is required with stand_ins.mail or stand_ins.gateway: the key they accept, e.g. { file = \"ops/demo/api-key\" }",
            ));
        }
        if stand_ins.webhooks.is_some() && stand_ins.webhook_secret.is_none() {
            return Err(invalid(
                "stand_ins.webhook_secret",
                "is required with stand_ins.webhooks: the whsec_ secret it verifies with",
            ));
        }
        Ok(())
    }
}

impl Limits {
    fn validate(&self, at: &str) -> Result<(), ConfigError> {
        let f = |field: &str| format!("{at}.{field}");
        check(f("memory_mib"), self.memory_mib, 1, 4096)?;
        check(f("cpu_ms"), self.cpu_ms, 10, 600_000)?;
        check(f("timeout_ms"), self.timeout_ms, 10, 600_000)?;
        check(f("max_host_calls"), self.max_host_calls, 1, 10_000_000)?;
        check(f("max_publishes"), self.max_publishes, 0, 1_000_000)?;
        check(f("max_leases"), self.max_leases, 0, 1_000)?;
        check(
            f("max_output_bytes"),
            self.max_output_bytes,
            0,
            64 * 1024 * 1024,
        )?;
        check(f("prefetch"), self.prefetch, 1, 100)?;
        check(
            f("max_log_records_per_s"),
            self.max_log_records_per_s,
            1,
            1_000_000,
        )?;
        check(
            f("backoff_after_violations"),
            self.backoff_after_violations,
            0,
            1_000,
        )?;
        check(f("reuse_instance"), self.reuse_instance, 1, 1_000_000)?;
        check(f("reuse_idle_ms"), self.reuse_idle_ms, 10, 600_000)?;
        check(f("max_http_requests"), self.max_http_requests, 0, 10_000)?;
        check(f("max_http_in_flight"), self.max_http_in_flight, 1, 10_000)?;
        check(
            f("http_connect_timeout_ms"),
            self.http_connect_timeout_ms,
            1,
            600_000,
        )?;
        check(
            f("http_first_byte_timeout_ms"),
            self.http_first_byte_timeout_ms,
            1,
            600_000,
        )?;
        check(
            f("http_between_bytes_timeout_ms"),
            self.http_between_bytes_timeout_ms,
            1,
            600_000,
        )?;
        check(
            f("max_http_request_bytes"),
            self.max_http_request_bytes,
            0,
            1024 * 1024 * 1024,
        )?;
        check(
            f("max_http_response_bytes"),
            self.max_http_response_bytes,
            0,
            1024 * 1024 * 1024,
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_the_seed_defaults() {
        let config = HostConfig::parse("").unwrap();
        assert_eq!(config, HostConfig::default());
        assert_eq!(config.cache.domains.len(), 14);
        assert_eq!(config.cache.domains["cart"], 604_800);
        assert_eq!(config.queues.len(), 10);
        assert_eq!(config.queues["payment"].priority, QueuePriority::Urgent);
        assert_eq!(config.redis.command_timeout_ms, 5_000);
    }

    /// What `techub-host check` prints is a host.toml that reads back as the same
    /// configuration.
    #[test]
    fn the_effective_configuration_prints_as_toml_that_reads_back() {
        let text = "[queues.email]\nmax_length = 7\noverflow = \"drop-head\"\n\
                    [[cache.invalidate]]\non = \"product.*\"\ndomain = \"products\"\nkeys = [\"{id}\"]\n\
                    [plugins.a]\ncache_domains = [\"users\"]\n[plugins.a.limits]\ncpu_ms = 50\n";
        let config = HostConfig::parse(text).unwrap();
        let printed = toml::to_string_pretty(&config).unwrap();
        assert_eq!(HostConfig::parse(&printed).unwrap(), config, "{printed}");
    }

    #[test]
    fn buckets_are_named_like_plugins_and_default_is_no_ones_to_grant() {
        let parsed =
            |buckets: &str| HostConfig::parse(&format!("[plugins.a]\nbuckets = {buckets}\n"));
        let config = parsed("[\"orders\", \"shared_state-2\"]").unwrap();
        assert_eq!(config.plugins["a"].buckets, ["orders", "shared_state-2"]);
        for bad in ["[\"default\"]", "[\"Orders\"]", "[\"a:b\"]", "[\"\"]"] {
            let error = parsed(bad).unwrap_err().to_string();
            assert!(error.contains("plugins.a.buckets"), "{bad}: {error}");
        }
    }

    #[test]
    fn a_config_error_in_a_file_is_reported_once() {
        let error = HostConfig::parse("[limits]\ncpu_ms = 1\n")
            .unwrap_err()
            .in_file(Path::new("host.toml"));
        let report = format!("{:?}", anyhow::Error::from(error));
        assert_eq!(report.matches("must be between 10").count(), 1, "{report}");
    }

    #[test]
    fn unknown_field_is_named() {
        let err = HostConfig::parse("[redis]\nurll = \"x\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("urll"), "{err}");
    }

    #[test]
    fn out_of_range_field_is_named() {
        let err = HostConfig::parse("[queues.email]\nmax_retries = 11\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("queues.email.max_retries"), "{err}");
        let err = HostConfig::parse("[limits]\nprefetch = 0\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("limits.prefetch"), "{err}");
    }

    #[test]
    fn plugin_grant_of_undeclared_domain_is_refused() {
        let err = HostConfig::parse("[plugins.a]\ncache_domains = [\"nope\"]\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("plugins.a.cache_domains") && err.contains("nope"),
            "{err}"
        );
    }

    #[test]
    fn plugin_limits_override_the_defaults() {
        let config = HostConfig::parse("[plugins.a.limits]\ncpu_ms = 50\n").unwrap();
        assert_eq!(config.limits_of("a").cpu_ms, 50);
        assert_eq!(
            config.limits_of("a").memory_mib,
            Limits::default().memory_mib
        );
        assert_eq!(config.limits_of("b").cpu_ms, Limits::default().cpu_ms);
    }

    #[test]
    fn a_partial_domains_table_keeps_the_other_seed_domains() {
        let config = HostConfig::parse("[cache.domains]\nusers = 60\nextra = 5\n").unwrap();
        assert_eq!(config.cache.domains.len(), 15);
        assert_eq!(config.cache.domains["users"], 60);
        assert_eq!(config.cache.domains["cart"], 604_800);
    }

    #[test]
    fn a_partial_queue_section_keeps_the_rest_of_its_seed_policy() {
        let config = HostConfig::parse("[queues.payment]\nmax_retries = 2\n").unwrap();
        assert_eq!(config.queues.len(), 10);
        let payment = config.queues["payment"];
        assert_eq!(payment.max_retries, 2);
        assert_eq!(
            payment.priority,
            QueuePriority::Urgent,
            "seed priority kept"
        );
        assert_eq!(payment.retry_delay_ms, 5_000, "seed delay kept");
        let config = HostConfig::parse("[queues.fresh]\npriority = \"low\"\n").unwrap();
        assert_eq!(config.queues.len(), 11);
        assert_eq!(
            config.queues["fresh"].max_retries,
            QueuePolicy::default().max_retries
        );
        let err = HostConfig::parse("[queues.email]\nmax_retrys = 2\n").unwrap_err();
        assert!(err.to_string().contains("max_retrys"), "{err}");
    }

    #[test]
    fn moved_fields_are_refused_with_their_new_name() {
        let err = HostConfig::parse("[redis]\nmax_value_bytes = 10\n").unwrap_err();
        assert!(
            err.to_string().contains("redis.max_value_bytes")
                && err.to_string().contains("store.max_value_bytes"),
            "{err}"
        );
        let err = HostConfig::parse("[amqp]\nconfirm_timeout_ms = 10\n").unwrap_err();
        assert!(
            err.to_string().contains("messaging.confirm_timeout_ms"),
            "{err}"
        );
        let config = HostConfig::parse(
            "[store]\nmax_value_bytes = 10\n[messaging]\nconfirm_timeout_ms = 10\n",
        )
        .unwrap();
        assert_eq!(config.store.max_value_bytes, 10);
        assert_eq!(config.messaging.confirm_timeout_ms, 10);
    }

    #[test]
    fn lock_ttl_bound_follows_the_specification() {
        let err = HostConfig::parse("[lock]\nmax_ttl_ms = 999\n").unwrap_err();
        assert!(err.to_string().contains("lock.max_ttl_ms"), "{err}");
        let err = HostConfig::parse("[lock]\nmax_ttl_ms = 300001\n").unwrap_err();
        assert!(err.to_string().contains("lock.max_ttl_ms"), "{err}");
    }

    #[test]
    fn a_public_admin_address_needs_a_token() {
        let err = HostConfig::parse("[host]\nadmin_addr = \"0.0.0.0:8080\"\n").unwrap_err();
        assert!(
            err.to_string().contains("host.admin_addr") && err.to_string().contains("token"),
            "{err}"
        );
        HostConfig::parse("[host]\nadmin_addr = \"0.0.0.0:8080\"\nadmin_token_env = \"T\"\n")
            .unwrap();
        HostConfig::parse("[host]\nadmin_addr = \"[::1]:8080\"\n").unwrap();
        let err = HostConfig::parse("[host]\nadmin_token = \"short\"\n").unwrap_err();
        assert!(err.to_string().contains("host.admin_token"), "{err}");
    }

    #[test]
    fn a_bad_url_is_named_without_its_password() {
        let err = HostConfig::parse("[redis]\nurl = \"http://:hunter2@h\"\n").unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    #[test]
    fn quorum_queues_need_reject_publish_and_durability() {
        let ok = HostConfig::parse(
            "[amqp]\nurls = [\"amqp://a:5672\", \"amqp://b:5672\"]\nqueue_kind = \"quorum\"\n[queues.analytics]\nkind = \"classic\"\ndurable = false\n",
        )
        .unwrap();
        assert_eq!(ok.amqp.nodes().len(), 2);
        for (text, field) in [
            (
                "[amqp]\nqueue_kind = \"quorum\"\n[queues.order]\noverflow = \"drop-head\"\n",
                "queues.order.overflow (with amqp.queue_kind = \"quorum\")",
            ),
            (
                "[queues.order]\nkind = \"quorum\"\ndurable = false\n",
                "queues.order.durable",
            ),
            ("[amqp]\nurls = [\"http://a\"]\n", "amqp.urls[0]"),
            ("[amqp]\ndelivery_limit = 0\n", "amqp.delivery_limit"),
        ] {
            let error = HostConfig::parse(text).unwrap_err().to_string();
            assert!(error.contains(field), "{text}: {error}");
        }
    }

    #[test]
    fn retry_delay_grows_and_is_capped() {
        let policy = QueuePolicy {
            retry_delay_ms: 100,
            backoff_multiplier: 2.0,
            max_retry_delay_ms: 1_000,
            ..QueuePolicy::default()
        };
        assert_eq!(policy.retry_delay(1).as_millis(), 100);
        assert_eq!(policy.retry_delay(2).as_millis(), 200);
        assert_eq!(policy.retry_delay(3).as_millis(), 400);
        assert_eq!(policy.retry_delay(10).as_millis(), 1_000);
    }
}
