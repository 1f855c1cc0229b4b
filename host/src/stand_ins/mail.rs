//! A transactional mail provider's HTTP API, modelled on the common ones (Resend,
//! Postmark): `POST /emails` with `Authorization: Bearer <key>` and a JSON body with at
//! least `to`; an `Idempotency-Key` makes a retried request return the first one's
//! email instead of sending another. Answers 200 `{"id"}`; 401 for a wrong key; 422
//! for an unusable `to`; and first, any statuses given to [`MailProvider::fail_next`].

use super::server::{Request, Server, serve};
use serde_json::{Value, json};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

/// The mail provider stand-in.
pub struct MailProvider {
    server: Server,
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
}

impl MailProvider {
    /// On a free loopback port, quiet: for tests.
    pub async fn start(api_key: &str) -> Self {
        Self::serve(([127, 0, 0, 1], 0).into(), api_key, false)
            .await
            .expect("a free loopback port")
    }

    /// On `addr`, accepting `api_key`; `print` prints every request.
    pub async fn serve(addr: SocketAddr, api_key: &str, print: bool) -> std::io::Result<Self> {
        let state = Arc::new(Mutex::new(MailState::default()));
        let (shared, key) = (state.clone(), format!("Bearer {api_key}"));
        let server = serve(addr, "mail", print, move |request| {
            let answer = shared
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .answer(&request, &key);
            async move { answer }
        })
        .await?;
        Ok(Self { server, state })
    }

    /// `http://<addr>`, to grant and to configure.
    pub fn origin(&self) -> String {
        format!("http://{}", self.server.addr)
    }

    /// Answers the next requests with these statuses (e.g. `[503, 503]`).
    pub fn fail_next(&self, statuses: &[u16]) {
        self.lock().failures.extend(statuses);
    }

    /// The emails accepted: one per idempotency key, however often it was sent.
    pub fn emails(&self) -> Vec<Email> {
        self.lock().accepted.clone()
    }

    /// Every request received, failed and repeated ones included.
    pub fn requests(&self) -> usize {
        self.server.received().len()
    }

    /// The requests as received.
    pub fn received(&self) -> Vec<Request> {
        self.server.received()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MailState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl MailState {
    fn answer(&mut self, request: &Request, authorization: &str) -> (u16, Value) {
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
