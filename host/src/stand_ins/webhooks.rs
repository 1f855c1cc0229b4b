//! A customer's webhook endpoint that verifies each delivery as the Standard Webhooks
//! specification tells a receiver to: HMAC-SHA256 of `id.timestamp.body` under the
//! `whsec_` secret's key (any of the space-separated `v1,` signatures, compared in
//! constant time by `hmac`), and a timestamp within 5 minutes. It answers 401 (bad
//! signature) or 400 (old timestamp) to one that fails, records the rest, and answers
//! them 200, or first any statuses given to [`WebhookReceiver::answer_next`].

use super::server::{Request, Server, serve};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::Mac as _;
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

/// Seconds a delivery's `webhook-timestamp` may be from now (the reference
/// libraries' tolerance).
const TOLERANCE_S: u64 = 5 * 60;

/// The webhook endpoint stand-in.
pub struct WebhookReceiver {
    server: Server,
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
        let bytes = [
            uuid::Uuid::new_v4().into_bytes(),
            uuid::Uuid::new_v4().into_bytes(),
        ]
        .concat();
        format!("whsec_{}", STANDARD.encode(&bytes[..24]))
    }

    /// On a free loopback port, quiet: for tests.
    pub async fn start(secret: &str) -> Self {
        Self::serve(([127, 0, 0, 1], 0).into(), secret, false)
            .await
            .expect("a free loopback port")
    }

    /// On `addr`, verifying with `secret` (`whsec_...`; a secret that is not one
    /// verifies nothing); `print` prints every request.
    pub async fn serve(addr: SocketAddr, secret: &str, print: bool) -> std::io::Result<Self> {
        let key = STANDARD
            .decode(secret.strip_prefix("whsec_").unwrap_or(secret))
            .unwrap_or_default();
        let state = Arc::new(Mutex::new(ReceiverState {
            key,
            answers: VecDeque::new(),
            deliveries: Vec::new(),
            refused: Vec::new(),
        }));
        let shared = state.clone();
        let server = serve(addr, "webhooks", print, move |request| {
            let answer = shared
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .answer(&request);
            async move { answer }
        })
        .await?;
        Ok(Self { server, state })
    }

    /// The endpoint's URL.
    pub fn url(&self) -> String {
        format!("{}/webhooks", self.origin())
    }

    /// Its origin, to grant.
    pub fn origin(&self) -> String {
        format!("http://{}", self.server.addr)
    }

    /// Answers the next verified deliveries with these statuses (e.g. `[503]`).
    pub fn answer_next(&self, statuses: &[u16]) {
        self.lock().answers.extend(statuses);
    }

    /// The deliveries that passed verification, with what they were answered.
    pub fn deliveries(&self) -> Vec<WebhookDelivery> {
        self.lock().deliveries.clone()
    }

    /// Why each refused request was refused.
    pub fn refused(&self) -> Vec<String> {
        self.lock().refused.clone()
    }

    /// Every request received.
    pub fn received(&self) -> Vec<Request> {
        self.server.received()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ReceiverState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl ReceiverState {
    fn answer(&mut self, request: &Request) -> (u16, Value) {
        match self.verify(request) {
            Err(why) => {
                let status = if why.contains("timestamp") { 400 } else { 401 };
                self.refused.push(why.clone());
                (status, json!({ "message": why }))
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

    fn verify(&self, request: &Request) -> Result<(String, u64, Value), String> {
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
        if now.abs_diff(timestamp) > TOLERANCE_S {
            return Err(format!("timestamp {timestamp} outside the tolerance"));
        }
        let verified = header("webhook-signature")?.split(' ').any(|entry| {
            let Some(Ok(signature)) = entry.strip_prefix("v1,").map(|s| STANDARD.decode(s)) else {
                return false;
            };
            let Ok(mut mac) = hmac::Hmac::<sha2::Sha256>::new_from_slice(&self.key) else {
                return false;
            };
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
