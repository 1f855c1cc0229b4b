//! Stand-ins for the providers the example plugins call: real HTTP servers on
//! loopback (a [`TestServer`] each) with the state and the rules of the real thing,
//! so a test sees what a provider would have done: accepted, refused, or deduplicated.

use crate::http_server::{Received, TestServer};
use serde_json::{Value, json};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

/// A transactional mail provider's HTTP API, modelled on the common ones (Resend,
/// Postmark): `POST /emails` with `Authorization: Bearer <key>` and a JSON body with
/// at least `to`; `Idempotency-Key` makes a retried request return the first one's
/// email instead of sending another.
///
/// Answers: 200 `{"id": ...}`; 401 for a wrong key; 422 for an unusable `to`; and
/// first, any statuses given to [`MailProvider::fail_next`] (as an outage would).
pub struct MailProvider {
    server: TestServer,
    state: Arc<Mutex<MailState>>,
}

/// One email the provider accepted.
#[derive(Debug, Clone)]
pub struct Email {
    /// The provider's id for it.
    pub id: String,
    /// The request's `Idempotency-Key`, if it had one.
    pub idempotency_key: Option<String>,
    /// The JSON body as sent.
    pub message: Value,
}

#[derive(Default)]
struct MailState {
    accepted: Vec<Email>,
    by_key: HashMap<String, String>,
    failures: VecDeque<u16>,
    requests: usize,
}

impl MailProvider {
    /// A provider that accepts requests bearing `api_key`.
    pub async fn start(api_key: &str) -> Self {
        let state = Arc::new(Mutex::new(MailState::default()));
        let (shared, key) = (state.clone(), format!("Bearer {api_key}"));
        let server = TestServer::http_with(move |request| {
            let mut state = shared.lock().unwrap_or_else(|e| e.into_inner());
            let (status, body) = state.answer(request, &key);
            (status, body.to_string())
        })
        .await;
        Self { server, state }
    }

    /// The provider's origin (`http://127.0.0.1:<port>`), to grant and to configure.
    pub fn origin(&self) -> String {
        self.server.origin(false)
    }

    /// Answers the next requests with these statuses (e.g. `[503, 503]`), whatever
    /// they carry.
    pub fn fail_next(&self, statuses: &[u16]) {
        self.lock().failures.extend(statuses);
    }

    /// The emails accepted: one per idempotency key, however often it was sent.
    pub fn emails(&self) -> Vec<Email> {
        self.lock().accepted.clone()
    }

    /// Every request received, failed and repeated ones included.
    pub fn requests(&self) -> usize {
        self.lock().requests
    }

    /// The requests as received (headers and bodies).
    pub fn received(&self) -> Vec<Received> {
        self.server.received()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MailState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl MailState {
    fn answer(&mut self, request: &Received, authorization: &str) -> (u16, Value) {
        self.requests += 1;
        if request.method != "POST" || request.path != "/emails" {
            return (404, json!({ "message": "no such endpoint" }));
        }
        if request.header("authorization") != Some(authorization) {
            return (401, json!({ "message": "invalid API key" }));
        }
        if let Some(status) = self.failures.pop_front() {
            return (status, json!({ "message": "temporarily unavailable" }));
        }
        let Ok(message) = serde_json::from_slice::<Value>(&request.body) else {
            return (400, json!({ "message": "the body is not JSON" }));
        };
        if !message["to"].as_str().is_some_and(|to| to.contains('@')) {
            return (422, json!({ "message": "`to` is not a valid address" }));
        }
        let idempotency_key = request.header("idempotency-key").map(str::to_string);
        if let Some(id) = idempotency_key.as_ref().and_then(|k| self.by_key.get(k)) {
            return (200, json!({ "id": id }));
        }
        let id = format!("em_{}", self.accepted.len() + 1);
        if let Some(key) = &idempotency_key {
            self.by_key.insert(key.clone(), id.clone());
        }
        self.accepted.push(Email {
            id: id.clone(),
            idempotency_key,
            message,
        });
        (200, json!({ "id": id }))
    }
}

/// Seconds a delivery's `webhook-timestamp` may be from now (the Standard Webhooks
/// reference libraries' tolerance).
const WEBHOOK_TOLERANCE_S: u64 = 5 * 60;

/// A customer's webhook endpoint: it verifies each delivery as the Standard Webhooks
/// specification says a receiver must (HMAC-SHA256 of `id.timestamp.body` under the
/// `whsec_` secret's key, any of the space-separated `v1,` signatures, a timestamp
/// within 5 minutes), answers 401/400 to one that fails, and records the rest. It
/// answers 200, or first any statuses given to [`WebhookReceiver::answer_next`].
pub struct WebhookReceiver {
    server: TestServer,
    state: Arc<Mutex<ReceiverState>>,
}

/// One delivery whose signature and timestamp held.
#[derive(Debug, Clone)]
pub struct WebhookDelivery {
    /// `webhook-id`.
    pub id: String,
    /// `webhook-timestamp`.
    pub timestamp: u64,
    /// The JSON body.
    pub body: Value,
    /// What the receiver answered.
    pub status: u16,
}

struct ReceiverState {
    key: Vec<u8>,
    answers: VecDeque<u16>,
    deliveries: Vec<WebhookDelivery>,
    refused: Vec<String>,
}

impl WebhookReceiver {
    /// A fresh `whsec_` secret (24 random bytes).
    pub fn new_secret() -> String {
        use base64::Engine as _;
        let bytes = [
            uuid::Uuid::new_v4().into_bytes(),
            uuid::Uuid::new_v4().into_bytes(),
        ]
        .concat();
        format!(
            "whsec_{}",
            base64::engine::general_purpose::STANDARD.encode(&bytes[..24])
        )
    }

    /// An endpoint verifying with `secret` (`whsec_...`).
    pub async fn start(secret: &str) -> Self {
        use base64::Engine as _;
        let encoded = secret.strip_prefix("whsec_").unwrap_or(secret);
        let key = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .expect("a whsec_ secret");
        let state = Arc::new(Mutex::new(ReceiverState {
            key,
            answers: VecDeque::new(),
            deliveries: Vec::new(),
            refused: Vec::new(),
        }));
        let shared = state.clone();
        let server = TestServer::http_with(move |request| {
            let mut state = shared.lock().unwrap_or_else(|e| e.into_inner());
            let (status, body) = state.answer(request);
            (status, body.to_string())
        })
        .await;
        Self { server, state }
    }

    /// The endpoint's URL.
    pub fn url(&self) -> String {
        format!("{}/webhooks", self.server.origin(false))
    }

    /// Its origin, to grant.
    pub fn origin(&self) -> String {
        self.server.origin(false)
    }

    /// Answers the next verified deliveries with these statuses (e.g. `[503]`, `[410]`).
    pub fn answer_next(&self, statuses: &[u16]) {
        self.lock().answers.extend(statuses);
    }

    /// The deliveries that passed verification, with what they were answered.
    pub fn deliveries(&self) -> Vec<WebhookDelivery> {
        self.lock().deliveries.clone()
    }

    /// Why each refused request was refused (a bad signature, an old timestamp).
    pub fn refused(&self) -> Vec<String> {
        self.lock().refused.clone()
    }

    /// Every request received.
    pub fn received(&self) -> Vec<Received> {
        self.server.received()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ReceiverState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl ReceiverState {
    fn answer(&mut self, request: &Received) -> (u16, Value) {
        match self.verify(request) {
            Err(why) => {
                self.refused.push(why.clone());
                (
                    if why.contains("timestamp") { 400 } else { 401 },
                    json!({ "message": why }),
                )
            }
            Ok((id, timestamp, body)) => {
                let status = self.answers.pop_front().unwrap_or(200);
                self.deliveries.push(WebhookDelivery {
                    id,
                    timestamp,
                    body,
                    status,
                });
                (status, json!({}))
            }
        }
    }

    /// The Standard Webhooks receiver's checks.
    fn verify(&self, request: &Received) -> Result<(String, u64, Value), String> {
        use base64::Engine as _;
        use hmac::Mac as _;
        let header = |name: &str| {
            request
                .header(name)
                .ok_or_else(|| format!("no {name} header"))
        };
        let id = header("webhook-id")?;
        let timestamp: u64 = header("webhook-timestamp")?
            .parse()
            .map_err(|_| "webhook-timestamp is not a number".to_string())?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if now.abs_diff(timestamp) > WEBHOOK_TOLERANCE_S {
            return Err(format!("timestamp {timestamp} outside the tolerance"));
        }
        let signatures = header("webhook-signature")?;
        let verified = signatures.split(' ').any(|entry| {
            let Some(encoded) = entry.strip_prefix("v1,") else {
                return false;
            };
            let Ok(signature) = base64::engine::general_purpose::STANDARD.decode(encoded) else {
                return false;
            };
            let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&self.key)
                .expect("HMAC takes keys of any length");
            mac.update(format!("{id}.{timestamp}.").as_bytes());
            mac.update(&request.body);
            mac.verify_slice(&signature).is_ok()
        });
        if !verified {
            return Err("no valid v1 signature".into());
        }
        let body = serde_json::from_slice(&request.body).map_err(|e| format!("body: {e}"))?;
        Ok((id.to_string(), timestamp, body))
    }
}
