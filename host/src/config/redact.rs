//! Secrets out of messages and logs: the password of a connection URL, the admin
//! token. One helper for Redis and AMQP URLs alike.

use super::HostConfig;

/// `url` with its password replaced by `***` (`redis://:***@host`, `amqp://u:***@h`).
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_string();
    };
    // The authority ends at the first `/`, `?` or `#` after the scheme.
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let Some(at) = authority.rfind('@') else {
        return url.to_string();
    };
    let credentials = &authority[..at];
    let user = credentials.split(':').next().unwrap_or_default();
    let hidden = if credentials.contains(':') {
        format!("{user}:***")
    } else {
        // `redis://secret@host` puts the password where a user name would be.
        "***".to_string()
    };
    format!("{}{hidden}{}", &url[..scheme_end], &url[scheme_end + at..])
}

/// A copy of `config` safe to print: URLs redacted, the admin token hidden.
pub fn redacted(config: &HostConfig) -> HostConfig {
    let mut shown = config.clone();
    shown.redis.url = redact_url(&shown.redis.url);
    shown.redis.urls = shown.redis.urls.iter().map(|u| redact_url(u)).collect();
    shown.redis.sentinels = shown
        .redis
        .sentinels
        .iter()
        .map(|u| redact_url(u))
        .collect();
    shown.amqp.url = redact_url(&shown.amqp.url);
    shown.amqp.urls = shown.amqp.urls.iter().map(|u| redact_url(u)).collect();
    shown.amqp.management_url = shown.amqp.management_url.as_deref().map(redact_url);
    if shown.host.admin_token.is_some() {
        shown.host.admin_token = Some("***".to_string());
    }
    shown
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn passwords_are_hidden_and_the_rest_kept() {
        assert_eq!(
            redact_url("redis://:hunter2@10.0.0.1:6379/0"),
            "redis://:***@10.0.0.1:6379/0"
        );
        assert_eq!(
            redact_url("amqp://guest:guest@127.0.0.1:5672/%2f"),
            "amqp://guest:***@127.0.0.1:5672/%2f"
        );
        assert_eq!(
            redact_url("redis://hunter2@host:6379"),
            "redis://***@host:6379"
        );
        assert_eq!(
            redact_url("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
        // An `@` in the path is not a credential separator.
        assert_eq!(redact_url("amqp://h:5672/v@x"), "amqp://h:5672/v@x");
        assert_eq!(redact_url("amqp://u:p@ss@h:5672/"), "amqp://u:***@h:5672/");
    }
}
