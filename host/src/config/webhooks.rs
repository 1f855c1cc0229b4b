//! `[webhooks]`: providers' webhooks taken in, verified and published (see
//! [`crate::webhooks`]).

use super::http::SecretRef;
use super::validate::{ConfigError, invalid, validate_name};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// How far a signed timestamp may be from now unless a route says otherwise: the
/// 5 minutes Stripe's and the Standard Webhooks reference libraries use.
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(300);

/// `[webhooks]`: the listener, and one `[webhooks.<name>]` table per route.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Default)]
#[serde(try_from = "toml::Table")]
pub struct WebhooksConfig {
    /// Where webhooks are served (`0.0.0.0:8090` behind a TLS-terminating proxy);
    /// its own listener, apart from the admin endpoint and its token. Read at start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub addr: Option<String>,
    /// The routes, by name (a metric label and the `webhook` header of each message).
    #[serde(flatten)]
    pub routes: BTreeMap<String, WebhookRoute>,
}

/// `[webhooks.<name>]`: one provider's endpoint.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WebhookRoute {
    /// The request path the provider posts to (`/hooks/stripe`).
    pub path: String,
    /// Where each verified webhook is published.
    pub routing_key: String,
    /// How the provider signs its requests.
    pub verify: Verify,
    /// The signing secret (required unless `verify = "none"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<SecretRef>,
    /// Largest accepted body, in bytes; none: `host.max_message_bytes`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<usize>,
    /// How far the signed timestamp may be from now (`"5m"`); older (or newer)
    /// requests are refused as replays. Stripe and Standard Webhooks only: GitHub
    /// signs no timestamp.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerance: Option<String>,
}

/// A provider's signature scheme.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Verify {
    /// `Stripe-Signature: t=<unix s>,v1=<hex HMAC-SHA256 of "t.body">`, keyed by the
    /// whole `whsec_...` secret; the id is the event's `id`.
    Stripe,
    /// `webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64 HMAC-SHA256
    /// of "id.timestamp.body">`, keyed by the base64 after `whsec_`.
    StandardWebhooks,
    /// `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>`; the id is
    /// `X-GitHub-Delivery`.
    Github,
    /// No signature: for a provider on a trusted network only.
    None,
}

/// Read by hand rather than with `#[serde(flatten)]`, whose errors lose the field's
/// path: a misspelled `verify` in `[webhooks.stripe]` is named as
/// `webhooks.stripe`'s, not as somewhere in `[webhooks]`.
impl TryFrom<toml::Table> for WebhooksConfig {
    type Error = String;

    fn try_from(mut table: toml::Table) -> Result<Self, String> {
        let addr = match table.remove("addr") {
            None => None,
            Some(toml::Value::String(addr)) => Some(addr),
            Some(other) => return Err(format!("webhooks.addr: {other} is not a string")),
        };
        let routes = table
            .into_iter()
            .map(|(name, value)| {
                let route = value.try_into::<WebhookRoute>().map_err(|e| {
                    let message = super::suggest::with_suggestion(e.message().to_string());
                    format!("webhooks.{name}: {message}")
                })?;
                Ok((name, route))
            })
            .collect::<Result<_, String>>()?;
        Ok(Self { addr, routes })
    }
}

impl Verify {
    /// Its name in `host.toml`.
    pub fn name(self) -> &'static str {
        match self {
            Verify::Stripe => "stripe",
            Verify::StandardWebhooks => "standard-webhooks",
            Verify::Github => "github",
            Verify::None => "none",
        }
    }
}

impl WebhookRoute {
    /// The tolerance of signed timestamps.
    pub fn tolerance(&self) -> Duration {
        self.tolerance
            .as_deref()
            .and_then(|t| humantime::parse_duration(t).ok())
            .unwrap_or(DEFAULT_TOLERANCE)
    }

    /// The largest body, with `max_message_bytes` the host's limit.
    pub fn max_bytes(&self, max_message_bytes: usize) -> usize {
        self.max_bytes.unwrap_or(max_message_bytes)
    }

    /// The HMAC key of the secret: the bytes after `whsec_` base64-decoded for
    /// Standard Webhooks, the secret's own bytes otherwise.
    pub fn key(&self) -> Result<Vec<u8>, String> {
        let secret = self
            .secret
            .as_ref()
            .map(|s| s.value.expose())
            .unwrap_or_default();
        match self.verify {
            Verify::StandardWebhooks => base64::engine::general_purpose::STANDARD
                .decode(secret.strip_prefix("whsec_").unwrap_or(secret))
                // Not the decoder's error: it names a byte of the secret.
                .map_err(|_| "is not whsec_ followed by base64".to_string()),
            _ => Ok(secret.as_bytes().to_vec()),
        }
    }
}

impl WebhooksConfig {
    /// Checks the whole section; `max_message_bytes` bounds the bodies.
    pub(super) fn validate(&self, max_message_bytes: usize) -> Result<(), ConfigError> {
        if !self.routes.is_empty() && self.addr.is_none() {
            return Err(invalid(
                "webhooks.addr",
                "is required to serve webhook routes: the address providers post to, e.g. \"0.0.0.0:8090\"",
            ));
        }
        if let Some(addr) = &self.addr
            && addr.parse::<std::net::SocketAddr>().is_err()
        {
            return Err(invalid(
                "webhooks.addr",
                format!("{addr:?} is not an address like \"0.0.0.0:8090\""),
            ));
        }
        let mut paths = BTreeMap::new();
        for (name, route) in &self.routes {
            let field = |f: &str| format!("webhooks.{name}.{f}");
            if !validate_name(name) {
                return Err(invalid(
                    format!("webhooks.{name}"),
                    "a route's name is 1 to 64 of a-z, 0-9, - and _",
                ));
            }
            let path_ok = route.path.len() > 1
                && route.path.len() <= 256
                && route.path.starts_with('/')
                && route
                    .path
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"/-_.~".contains(&b));
            if !path_ok {
                return Err(invalid(
                    field("path"),
                    "is a path like \"/hooks/stripe\": a /, then up to 255 of a-z, A-Z, 0-9, /, -, _, . and ~",
                ));
            }
            if let Some(other) = paths.insert(route.path.as_str(), name) {
                return Err(invalid(
                    field("path"),
                    format!("{:?} is also webhooks.{other}'s path", route.path),
                ));
            }
            crate::names::routing::validate_routing_key(&route.routing_key)
                .map_err(|e| invalid(field("routing_key"), e))?;
            if route.verify != Verify::None && route.secret.is_none() {
                return Err(invalid(
                    field("secret"),
                    format!(
                        "is required with verify = \"{}\": where the signing secret is, e.g. {{ env = \"STRIPE_WEBHOOK_SECRET\" }}",
                        route.verify.name()
                    ),
                ));
            }
            if let Some(max) = route.max_bytes
                && !(1..=max_message_bytes).contains(&max)
            {
                return Err(invalid(
                    field("max_bytes"),
                    format!("must be 1 to host.max_message_bytes ({max_message_bytes})"),
                ));
            }
            if let Some(tolerance) = &route.tolerance {
                let parsed = humantime::parse_duration(tolerance).map_err(|e| {
                    invalid(
                        field("tolerance"),
                        format!("{tolerance:?} is not a duration like \"5m\": {e}"),
                    )
                })?;
                if parsed < Duration::from_secs(1) || parsed > Duration::from_secs(86_400) {
                    return Err(invalid(field("tolerance"), "must be 1s to 1d"));
                }
            }
        }
        Ok(())
    }

    /// Reads the routes' secrets; a Standard Webhooks secret must decode.
    pub(super) fn read_secrets(&mut self) -> Result<(), ConfigError> {
        for (name, route) in &mut self.routes {
            let field = format!("webhooks.{name}.secret");
            if let Some(secret) = &mut route.secret {
                secret.load(&field)?;
            }
            if route.verify != Verify::None {
                route.key().map_err(|e| invalid(&field, e))?;
            }
        }
        Ok(())
    }

    /// Makes relative secret files absolute against `base`.
    pub(super) fn resolve_paths(&mut self, base: &std::path::Path) {
        for route in self.routes.values_mut() {
            if let Some(secret) = &mut route.secret {
                secret.resolve_path(base);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Verify;
    use crate::config::HostConfig;

    #[test]
    fn routes_need_an_address_a_path_a_routing_key_and_a_secret() {
        std::fs::write(
            std::env::temp_dir().join("techub-webhooks-config-test-secret"),
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n",
        )
        .unwrap();
        let secret = format!(
            "{{ file = \"{}\" }}",
            std::env::temp_dir()
                .join("techub-webhooks-config-test-secret")
                .display()
        );
        let ok = HostConfig::parse(&format!(
            "[webhooks]\naddr = \"127.0.0.1:0\"\n\
             [webhooks.stripe]\npath = \"/hooks/stripe\"\nrouting_key = \"payment.provider\"\nverify = \"stripe\"\nsecret = {secret}\n\
             [webhooks.svix]\npath = \"/hooks/svix\"\nrouting_key = \"a.b\"\nverify = \"standard-webhooks\"\nsecret = {secret}\nmax_bytes = 1024\ntolerance = \"1m\"\n"
        ))
        .unwrap();
        assert_eq!(ok.webhooks.routes.len(), 2);
        assert_eq!(ok.webhooks.routes["svix"].verify, Verify::StandardWebhooks);
        assert_eq!(ok.webhooks.routes["svix"].tolerance().as_secs(), 60);
        assert_eq!(ok.webhooks.routes["svix"].key().unwrap().len(), 24);
        assert_eq!(
            ok.webhooks.routes["stripe"].key().unwrap(),
            b"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
        );
        let route = "path = \"/h\"\nrouting_key = \"a.b\"\nverify = \"none\"";
        for (text, field) in [
            (format!("[webhooks.x]\n{route}\n"), "webhooks.addr"),
            (
                format!("[webhooks]\naddr = \"nowhere\"\n[webhooks.x]\n{route}\n"),
                "webhooks.addr",
            ),
            (
                "[webhooks]\naddr = \"127.0.0.1:0\"\n[webhooks.x]\npath = \"hooks\"\nrouting_key = \"a.b\"\nverify = \"none\"\n".into(),
                "webhooks.x.path",
            ),
            (
                format!("[webhooks]\naddr = \"127.0.0.1:0\"\n[webhooks.x]\n{route}\n[webhooks.y]\n{route}\n"),
                "webhooks.y.path",
            ),
            (
                "[webhooks]\naddr = \"127.0.0.1:0\"\n[webhooks.x]\npath = \"/h\"\nrouting_key = \"a.b\"\nverify = \"github\"\n".into(),
                "webhooks.x.secret",
            ),
            (
                "[webhooks]\naddr = \"127.0.0.1:0\"\n[webhooks.x]\npath = \"/h\"\nrouting_key = \"\"\nverify = \"none\"\n".into(),
                "webhooks.x.routing_key",
            ),
            (
                format!("[webhooks]\naddr = \"127.0.0.1:0\"\n[webhooks.x]\n{route}\nmax_bytes = 0\n"),
                "webhooks.x.max_bytes",
            ),
            (
                format!("[webhooks]\naddr = \"127.0.0.1:0\"\n[webhooks.x]\n{route}\ntolerance = \"soon\"\n"),
                "webhooks.x.tolerance",
            ),
            (
                "[webhooks]\naddr = \"127.0.0.1:0\"\n[webhooks.x]\npath = \"/h\"\nrouting_key = \"a.b\"\nverify = \"svix\"\n".into(),
                "webhooks.x: unknown variant `svix`",
            ),
            (
                format!("[webhooks]\naddr = \"127.0.0.1:0\"\n[webhooks.x]\n{route}\nsecrte = 1\n"),
                "did you mean `secret`",
            ),
        ] {
            let error = HostConfig::parse(&text).unwrap_err().to_string();
            assert!(error.contains(field), "{text}: {error}");
        }
    }

    #[test]
    fn a_standard_webhooks_secret_must_decode() {
        let file = std::env::temp_dir().join("techub-webhooks-config-test-bad-secret");
        std::fs::write(&file, "whsec_not base64!").unwrap();
        let error = HostConfig::parse(&format!(
            "[webhooks]\naddr = \"127.0.0.1:0\"\n[webhooks.x]\npath = \"/h\"\nrouting_key = \"a.b\"\nverify = \"standard-webhooks\"\nsecret = {{ file = \"{}\" }}\n",
            file.display()
        ))
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("webhooks.x.secret") && error.contains("whsec_"),
            "{error}"
        );
        // Nothing of the secret itself (a decoder's error names a byte of it).
        assert!(
            !error.contains("symbol") && !error.contains("offset"),
            "{error}"
        );
    }
}
