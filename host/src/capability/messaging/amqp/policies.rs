//! Queue limits (TTL, length bound, overflow) as RabbitMQ policies, kept through the
//! management HTTP API.
//!
//! RabbitMQ fixes a queue's arguments when it is declared: declaring it again with
//! another `x-message-ttl` fails with `PRECONDITION_FAILED inequivalent arg`, and the
//! queue has to be deleted by hand. A policy can change at any time and applies to the
//! queue as it is. So the host declares each queue with the arguments that never change
//! (priority bound, dead-letter exchange and routing key) and keeps its limits in one
//! policy per queue, `techub-limits.<queue>` (pattern: exactly that name, priority
//! [`POLICY_PRIORITY`]); a queue without limits has no policy (a stale one is removed).
//!
//! RabbitMQ applies one user policy per queue (the highest priority): an operator's
//! own broad policy (say, for mirroring) does not add to these; operator policies do.

use crate::capability::messaging::{Overflow, QueueLimits};
use crate::capability::{BackendError, BackendResult};
use crate::config::{AmqpConfig, QueueKind, redact_url};
use base64::Engine;
use http_body_util::Full;
use std::time::Duration;

/// Priority of the host's policies, above the 0 that policies get by default.
pub const POLICY_PRIORITY: u32 = 10;
/// Name of the policy that carries `queue`'s limits.
pub fn policy_name(queue: &str) -> String {
    format!("techub-limits.{queue}")
}

/// The RabbitMQ limits of a queue: what a policy or the queue's arguments say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    pub message_ttl_ms: Option<u64>,
    pub max_length: Option<u32>,
    pub overflow: &'static str,
}

impl Limits {
    /// A plugin queue's: a full queue with `reject-publish` dead-letters what it
    /// refuses (`reject-publish-dlx`), so that a retry coming back to it through the
    /// retry queue is parked rather than dropped.
    pub fn of_queue(limits: QueueLimits, kind: QueueKind) -> Self {
        Self {
            message_ttl_ms: limits.message_ttl_ms,
            max_length: limits.max_length,
            overflow: match (limits.overflow, kind) {
                // A classic queue parks a copy of what it refuses in the dead-letter
                // queue; a quorum queue cannot (and dead-letters at least once only
                // with plain reject-publish).
                (Overflow::RejectPublish, QueueKind::Classic) => "reject-publish-dlx",
                (Overflow::RejectPublish, QueueKind::Quorum) => "reject-publish",
                (Overflow::DropHead, _) => Overflow::DropHead.as_str(),
            },
        }
    }

    fn is_unbounded(&self) -> bool {
        self.message_ttl_ms.is_none() && self.max_length.is_none()
    }

    /// The policy definition; `None` when there is nothing to bound.
    fn definition(&self) -> Option<serde_json::Value> {
        if self.is_unbounded() {
            return None;
        }
        let mut definition = serde_json::Map::new();
        if let Some(ttl) = self.message_ttl_ms {
            definition.insert("message-ttl".into(), ttl.into());
        }
        if let Some(length) = self.max_length {
            definition.insert("max-length".into(), length.into());
            definition.insert("overflow".into(), self.overflow.into());
        }
        Some(definition.into())
    }
}

/// A client of the management API, for the host's policies.
pub struct Management {
    /// `host:port`.
    addr: String,
    /// Path prefix, when the API is served under one (`/rabbitmq`); else empty.
    base: String,
    authorization: String,
    /// The vhost, percent-encoded for a path.
    vhost: String,
    /// The URL with its password hidden, for messages.
    pub shown: String,
    timeout: Duration,
}

impl Management {
    /// The API `config.management_url` names, or by default the AMQP URL's host on
    /// port 15672 with its credentials; for the AMQP URL's vhost.
    pub fn new(config: &AmqpConfig) -> Result<Self, String> {
        let amqp: lapin::uri::AMQPUri = config
            .url
            .parse()
            .map_err(|e| format!("invalid amqp.url: {e}"))?;
        let userinfo = &amqp.authority.userinfo;
        let (mut user, mut password) = (userinfo.username.clone(), userinfo.password.clone());
        let (addr, base) = match &config.management_url {
            None => (format!("{}:15672", amqp.authority.host), String::new()),
            Some(url) => {
                let rest = url.strip_prefix("http://").ok_or_else(|| {
                    "amqp.management_url must be an http:// URL (the host speaks plain HTTP to it)"
                        .to_string()
                })?;
                let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
                let addr = match authority.rsplit_once('@') {
                    Some((credentials, addr)) => {
                        let (u, p) = credentials.split_once(':').unwrap_or((credentials, ""));
                        (user, password) = (u.to_string(), p.to_string());
                        addr
                    }
                    None => authority,
                };
                (addr.to_string(), path.trim_end_matches('/').to_string())
            }
        };
        let shown = redact_url(
            config
                .management_url
                .as_deref()
                .unwrap_or(&format!("http://{user}:{password}@{addr}")),
        );
        Ok(Self {
            addr,
            base,
            authorization: format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
            ),
            vhost: percent_encode(&amqp.vhost),
            shown,
            timeout: Duration::from_millis(config.connection_timeout_ms),
        })
    }

    /// Whether the API answers and lets these credentials manage policies.
    pub async fn probe(&self) -> Result<(), String> {
        let path = format!("/api/policies/{}", self.vhost);
        match self.call(hyper::Method::GET, &path, None).await? {
            (200, _) => Ok(()),
            (status, body) => Err(format!("answered {status}: {}", snippet(&body))),
        }
    }

    /// The definition of the host's policy on `queue` (`message-ttl`, `max-length`,
    /// `overflow`); `None` when it has none.
    pub async fn policy(&self, queue: &str) -> Result<Option<serde_json::Value>, String> {
        let path = format!(
            "/api/policies/{}/{}",
            self.vhost,
            percent_encode(&policy_name(queue))
        );
        match self.call(hyper::Method::GET, &path, None).await? {
            (404, _) => Ok(None),
            (200, body) => serde_json::from_str::<serde_json::Value>(&body)
                .map(|policy| Some(policy["definition"].clone()))
                .map_err(|e| e.to_string()),
            (status, body) => Err(format!("answered {status}: {}", snippet(&body))),
        }
    }

    /// Whether `queue` exists. The host asks here rather than by a passive declare
    /// where it expects the answer to be no (the queues of another kind): a refused
    /// passive declare closes its channel, which lapin logs as an error.
    pub async fn queue_exists(&self, queue: &str) -> Result<bool, String> {
        let path = format!(
            "/api/queues/{}/{}?columns=name",
            self.vhost,
            percent_encode(queue)
        );
        match self.call(hyper::Method::GET, &path, None).await? {
            (404, _) => Ok(false),
            (200, _) => Ok(true),
            (status, body) => Err(format!("answered {status}: {}", snippet(&body))),
        }
    }

    /// The broker's client connections: each one's name (what closing it needs) and
    /// the `connection_name` its client gave (the host's: [`super::connection_name`]).
    /// The host itself never needs this; the fault suite does, to close its hosts'
    /// connections on a shared broker without touching anyone else's.
    pub async fn connections(&self) -> Result<Vec<(String, String)>, String> {
        match self
            .call(hyper::Method::GET, "/api/connections", None)
            .await?
        {
            (200, body) => {
                let listed: Vec<serde_json::Value> =
                    serde_json::from_str(&body).map_err(|e| e.to_string())?;
                Ok(listed
                    .iter()
                    .map(|c| {
                        let text = |v: &serde_json::Value| v.as_str().unwrap_or("").to_string();
                        (
                            text(&c["name"]),
                            text(&c["client_properties"]["connection_name"]),
                        )
                    })
                    .collect())
            }
            (status, body) => Err(format!("answered {status}: {}", snippet(&body))),
        }
    }

    /// Force-closes the connection `name` (as `rabbitmqctl close_connection` does).
    pub async fn close_connection(&self, name: &str) -> Result<(), String> {
        let path = format!("/api/connections/{}", percent_encode(name));
        match self.call(hyper::Method::DELETE, &path, None).await? {
            (200..=299 | 404, _) => Ok(()),
            (status, body) => Err(format!("answered {status}: {}", snippet(&body))),
        }
    }

    /// Makes `queue`'s policy say `limits` (removes it when there are none).
    pub(crate) async fn apply(&self, queue: &str, limits: Limits) -> BackendResult<()> {
        let path = format!(
            "/api/policies/{}/{}",
            self.vhost,
            percent_encode(&policy_name(queue))
        );
        let answer = match limits.definition() {
            Some(definition) => {
                let body = serde_json::json!({
                    "pattern": format!("^{}$", regex_escape(queue)),
                    "definition": definition,
                    "priority": POLICY_PRIORITY,
                    "apply-to": "queues",
                });
                self.call(hyper::Method::PUT, &path, Some(body)).await
            }
            None => self.call(hyper::Method::DELETE, &path, None).await,
        };
        match answer {
            Ok((200..=299 | 404, _)) => Ok(()),
            Ok((status, body)) => Err(BackendError::Unavailable(format!(
                "RabbitMQ management API at {} refused the limits of queue {queue}: {status} {}",
                self.shown,
                snippet(&body)
            ))),
            Err(error) => Err(BackendError::Unavailable(format!(
                "RabbitMQ management API at {}: could not set the limits of queue {queue}: {error}",
                self.shown
            ))),
        }
    }

    async fn call(
        &self,
        method: hyper::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<(u16, String), String> {
        let request = hyper::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header(hyper::header::HOST, &self.addr)
            .header(hyper::header::AUTHORIZATION, &self.authorization)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(bytes::Bytes::from(
                body.map(|b| b.to_string()).unwrap_or_default(),
            )))
            .map_err(|e| e.to_string())?;
        tokio::time::timeout(self.timeout, crate::http1::send(&self.addr, request))
            .await
            .map_err(|_| format!("no answer within {} ms", self.timeout.as_millis()))?
            .map_err(|e| format!("{e:#}"))
    }
}

/// `text` with every byte but the unreserved ones percent-encoded (a path segment).
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `name` as a regular expression matching exactly itself.
fn regex_escape(name: &str) -> String {
    name.chars()
        .flat_map(|c| match c.is_ascii_alphanumeric() || c == '_' {
            true => vec![c],
            false => vec!['\\', c],
        })
        .collect()
}

/// The start of an answer's body, for an error message.
fn snippet(body: &str) -> String {
    body.chars().take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_api_is_the_amqp_host_on_15672_with_its_credentials() {
        let config = AmqpConfig {
            url: "amqp://app:s3cret@rabbit.internal:5672/prod%2Fa".to_string(),
            ..AmqpConfig::default()
        };
        let api = Management::new(&config).unwrap();
        assert_eq!(api.addr, "rabbit.internal:15672");
        assert_eq!(api.vhost, "prod%2Fa");
        assert!(!api.shown.contains("s3cret"), "{}", api.shown);
        let explicit = Management::new(&AmqpConfig {
            management_url: Some("http://ops:pw@10.0.0.1:8080/rabbitmq/".to_string()),
            ..config
        })
        .unwrap();
        assert_eq!(explicit.addr, "10.0.0.1:8080");
        assert_eq!(explicit.base, "/rabbitmq");
        assert!(!explicit.shown.contains("pw@"), "{}", explicit.shown);
    }

    #[test]
    fn an_https_api_is_refused_plainly() {
        let config = AmqpConfig {
            management_url: Some("https://h:15671".to_string()),
            ..AmqpConfig::default()
        };
        assert!(Management::new(&config).err().unwrap().contains("http://"));
    }

    #[test]
    fn a_policy_matches_its_queue_only() {
        assert_eq!(
            regex_escape("techub.email.mailer-2"),
            r"techub\.email\.mailer\-2"
        );
        let limits = Limits {
            message_ttl_ms: Some(60_000),
            max_length: None,
            overflow: "drop-head",
        };
        let definition = limits.definition().unwrap();
        assert_eq!(definition["message-ttl"], 60_000);
        assert!(definition.get("overflow").is_none());
        assert!(
            Limits::of_queue(QueueLimits::default(), QueueKind::Classic)
                .definition()
                .is_none()
        );
    }
}
