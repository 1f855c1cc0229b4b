//! A card payment gateway's HTTP API, modelled on the common ones (Stripe's charges):
//! `POST /charges` with `Authorization: Bearer <key>`, an `Idempotency-Key` (required:
//! a charge without one could be made twice) and `{"amount", "currency", "card",
//! "order"}`. Answers 200 `{"id", "status": "succeeded", "amount"}`; 402 with
//! `{"error": {"code": "card_declined", "message"}}` for card `0002`; 401 for a wrong
//! key; 400 for a malformed charge. A repeated idempotency key returns the first
//! charge and charges nothing. [`PaymentGateway::fail_next`] scripts an outage and
//! [`PaymentGateway::answer_late`] a gateway that charges but answers after the
//! caller stopped waiting.

use super::server::{Request, Server, serve};
use serde_json::{Value, json};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The payment gateway stand-in.
pub struct PaymentGateway {
    server: Server,
    state: Arc<Mutex<GatewayState>>,
}

/// One charge the gateway made.
#[derive(Debug, Clone)]
pub struct Charge {
    pub id: String,
    pub idempotency_key: String,
    /// In the currency's smallest unit.
    pub amount: u64,
    pub order: String,
}

#[derive(Default)]
struct GatewayState {
    charges: Vec<Charge>,
    by_key: HashMap<String, usize>,
    failures: VecDeque<u16>,
    late: VecDeque<Duration>,
}

impl PaymentGateway {
    /// On a free loopback port, quiet: for tests.
    pub async fn start(api_key: &str) -> Self {
        Self::serve(([127, 0, 0, 1], 0).into(), api_key, false)
            .await
            .expect("a free loopback port")
    }

    /// On `addr`, accepting `api_key`; `print` prints every request.
    pub async fn serve(addr: SocketAddr, api_key: &str, print: bool) -> std::io::Result<Self> {
        let state = Arc::new(Mutex::new(GatewayState::default()));
        let (shared, key) = (state.clone(), format!("Bearer {api_key}"));
        let server = serve(addr, "gateway", print, move |request| {
            let (answer, late) = shared
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .answer(&request, &key);
            async move {
                if let Some(late) = late {
                    tokio::time::sleep(late).await;
                }
                answer
            }
        })
        .await?;
        Ok(Self { server, state })
    }

    /// `http://<addr>`, to grant and to configure.
    pub fn origin(&self) -> String {
        format!("http://{}", self.server.addr)
    }

    /// Answers the next requests with these statuses, charging nothing.
    pub fn fail_next(&self, statuses: &[u16]) {
        self.lock().failures.extend(statuses);
    }

    /// Makes the next charge, then answers it only after `delay`.
    pub fn answer_late(&self, delay: Duration) {
        self.lock().late.push_back(delay);
    }

    /// The charges made: one per idempotency key.
    pub fn charges(&self) -> Vec<Charge> {
        self.lock().charges.clone()
    }

    /// The requests as received.
    pub fn received(&self) -> Vec<Request> {
        self.server.received()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, GatewayState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl GatewayState {
    fn answer(
        &mut self,
        request: &Request,
        authorization: &str,
    ) -> ((u16, Value), Option<Duration>) {
        let error = |status: u16, code: &str, message: &str| {
            (
                (
                    status,
                    json!({ "error": { "code": code, "message": message } }),
                ),
                None,
            )
        };
        if request.method != "POST" || request.path != "/charges" {
            return error(404, "not_found", "no such endpoint");
        }
        if request.header("authorization") != Some(authorization) {
            return error(401, "invalid_api_key", "invalid API key");
        }
        if let Some(status) = self.failures.pop_front() {
            return error(status, "unavailable", "temporarily unavailable");
        }
        let Some(key) = request.header("idempotency-key").map(str::to_string) else {
            return error(
                400,
                "idempotency_key_missing",
                "an Idempotency-Key is required",
            );
        };
        let body: Value = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
        let (Some(amount), Some(order)) = (body["amount"].as_u64(), body["order"].as_str()) else {
            return error(400, "invalid_request", "amount and order are required");
        };
        if body["card"] == "0002" {
            return error(402, "card_declined", "card declined by the issuer");
        }
        let index = match self.by_key.get(&key) {
            Some(&index) => index,
            None => {
                self.charges.push(Charge {
                    id: format!("ch_{}", self.charges.len() + 1),
                    idempotency_key: key.clone(),
                    amount,
                    order: order.to_string(),
                });
                self.by_key.insert(key, self.charges.len() - 1);
                self.charges.len() - 1
            }
        };
        let charge = &self.charges[index];
        let answer = (
            200,
            json!({ "id": charge.id, "status": "succeeded", "amount": charge.amount }),
        );
        (answer, self.late.pop_front())
    }
}
