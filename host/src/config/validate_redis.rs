//! `[redis]`: the URLs each mode reads, and the settings every mode shares.

use super::validate::{check, invalid};
use super::{ConfigError, RedisConfig, RedisMode, redact_url};

/// Whether `url` names a Redis server the client can open.
fn is_redis_url(url: &str) -> bool {
    url.starts_with("redis://") || url.starts_with("rediss://")
}

/// Each of `urls` a `redis://` URL, at least one of them.
fn check_urls(field: &str, urls: &[String], mode: &str) -> Result<(), ConfigError> {
    if urls.is_empty() {
        return Err(invalid(
            field,
            format!("mode = \"{mode}\" needs at least one redis://host:port here"),
        ));
    }
    for (i, url) in urls.iter().enumerate() {
        if !is_redis_url(url) {
            return Err(invalid(
                format!("{field}[{i}]"),
                format!("must start with redis://, got {:?}", redact_url(url)),
            ));
        }
    }
    Ok(())
}

/// A list that only another mode reads, refused rather than ignored: an operator who
/// wrote it expected it to be used.
fn unused(field: &str, list: &[String], reader: &str) -> Result<(), ConfigError> {
    match list.is_empty() {
        true => Ok(()),
        false => Err(invalid(
            field,
            format!("is only read with mode = \"{reader}\"; set that mode or remove it"),
        )),
    }
}

/// The database of `url` (`/n` after the authority), 0 when absent.
fn database(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let path = rest.split_once('/')?.1;
    let db = path.split(['?', '#']).next().unwrap_or_default();
    (!db.is_empty() && db != "0").then_some(db)
}

/// Checks `[redis]`; the first failure names its field.
pub(super) fn validate(r: &RedisConfig) -> Result<(), ConfigError> {
    if !is_redis_url(&r.url) && !r.url.starts_with("unix://") {
        return Err(invalid(
            "redis.url",
            format!("must start with redis://, got {:?}", redact_url(&r.url)),
        ));
    }
    match r.mode {
        RedisMode::Single => {
            unused("redis.urls", &r.urls, "cluster")?;
            unused("redis.sentinels", &r.sentinels, "sentinel")?;
        }
        RedisMode::Cluster => {
            check_urls("redis.urls", &r.urls, "cluster")?;
            unused("redis.sentinels", &r.sentinels, "sentinel")?;
            if let Some(db) = r.urls.iter().find_map(|u| database(u)) {
                return Err(invalid(
                    "redis.urls",
                    format!("a Redis Cluster has only database 0, not {db}"),
                ));
            }
        }
        RedisMode::Sentinel => {
            check_urls("redis.sentinels", &r.sentinels, "sentinel")?;
            unused("redis.urls", &r.urls, "cluster")?;
            if r.master_name.is_empty() || r.master_name.bytes().any(|b| b.is_ascii_whitespace()) {
                return Err(invalid(
                    "redis.master_name",
                    "names the primary the sentinels monitor (SENTINEL MONITOR <name> ...): non-empty, no spaces",
                ));
            }
            if r.url.starts_with("unix://") {
                return Err(invalid(
                    "redis.url",
                    "with mode = \"sentinel\" it gives the primary's password and database (redis://:pass@ignored/0); the sentinels give its address",
                ));
            }
        }
    }
    check("redis.wait_replicas", r.wait_replicas, 0, 16)?;
    check("redis.wait_timeout_ms", r.wait_timeout_ms, 1, 60_000)?;
    check("redis.max_retries", r.max_retries, 0, 10)?;
    check("redis.retry_delay_ms", r.retry_delay_ms, 0, 60_000)?;
    check(
        "redis.connection_timeout_ms",
        r.connection_timeout_ms,
        1,
        600_000,
    )?;
    check("redis.command_timeout_ms", r.command_timeout_ms, 1, 600_000)?;
    check("redis.slow_command_ms", r.slow_command_ms, 1, 600_000)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::config::HostConfig;

    fn refused(toml: &str) -> String {
        HostConfig::parse(toml).unwrap_err().to_string()
    }

    #[test]
    fn cluster_mode_needs_seed_urls_and_names_the_field() {
        let err = refused("[redis]\nmode = \"cluster\"\n");
        assert!(err.contains("redis.urls"), "{err}");
        let err = refused("[redis]\nmode = \"cluster\"\nurls = [\"http://:hunter2@h:1\"]\n");
        assert!(err.contains("redis.urls[0]"), "{err}");
        assert!(
            !err.contains("hunter2"),
            "a password reached the error: {err}"
        );
        let err = refused("[redis]\nmode = \"cluster\"\nurls = [\"redis://h:1/3\"]\n");
        assert!(err.contains("database 0"), "{err}");
        let ok = HostConfig::parse(
            "[redis]\nmode = \"cluster\"\nurls = [\"redis://:pw@a:7000\", \"redis://b:7001/0\"]\n",
        );
        assert!(ok.is_ok(), "{ok:?}");
    }

    #[test]
    fn sentinel_mode_needs_sentinels_and_a_master_name() {
        let err = refused("[redis]\nmode = \"sentinel\"\n");
        assert!(err.contains("redis.sentinels"), "{err}");
        let err = refused(
            "[redis]\nmode = \"sentinel\"\nsentinels = [\"redis://s:26379\"]\nmaster_name = \"\"\n",
        );
        assert!(err.contains("redis.master_name"), "{err}");
        let ok = HostConfig::parse(
            "[redis]\nmode = \"sentinel\"\nsentinels = [\"redis://s:26379\"]\nmaster_name = \"orders\"\n",
        );
        assert!(ok.is_ok(), "{ok:?}");
    }

    #[test]
    fn a_list_another_mode_reads_is_refused() {
        let err = refused("[redis]\nurls = [\"redis://a:1\"]\n");
        assert!(
            err.contains("redis.urls") && err.contains("cluster"),
            "{err}"
        );
        let err = refused(
            "[redis]\nmode = \"cluster\"\nurls = [\"redis://a:1\"]\nsentinels = [\"redis://s:2\"]\n",
        );
        assert!(err.contains("redis.sentinels"), "{err}");
        let err = refused("[redis]\nmode = \"clustr\"\n");
        assert!(err.contains("mode"), "{err}");
    }

    #[test]
    fn passwords_of_every_mode_are_redacted_when_the_config_is_shown() {
        let config = HostConfig::parse(
            "[redis]\nmode = \"cluster\"\nurls = [\"redis://:hunter2@a:7000\"]\n",
        )
        .unwrap();
        let shown = toml::to_string(&crate::config::redacted(&config)).unwrap();
        assert!(!shown.contains("hunter2"), "{shown}");
        let mut config = HostConfig::default();
        config.redis.sentinels = vec!["redis://:hunter3@s:26379".into()];
        let shown = toml::to_string(&crate::config::redacted(&config)).unwrap();
        assert!(!shown.contains("hunter3"), "{shown}");
    }
}
