//! Stand-ins for the providers the example plugins call: a mail provider, a payment
//! gateway and a customer's webhook endpoint, each a real HTTP server on loopback with
//! the rules of the real thing (keys, validation, idempotency keys, signatures), so
//! that the demo and `cargo xtask run` show the business flow end to end with no
//! internet, and tests (through `techub_testkit::stand_ins`) see what a provider would
//! have done. Started by the host when `host.toml` has a `[stand_ins]` section, which a
//! production configuration leaves out.
//!
//! # Layout
//! - `server.rs`: the HTTP server under each one: records and (optionally) prints
//!   every request, answers through the stand-in.
//! - `mail.rs`: [`MailProvider`] (`POST /emails`).
//! - `gateway.rs`: [`PaymentGateway`] (`POST /charges`).
//! - `webhooks.rs`: [`WebhookReceiver`] (Standard Webhooks verification).
//! - this file: [`StandIns`], the three started from `[stand_ins]`.

mod gateway;
mod mail;
mod server;
mod webhooks;

pub use gateway::{Charge, PaymentGateway};
pub use mail::{Email, MailProvider};
pub use server::Request;
pub use webhooks::{WebhookDelivery, WebhookReceiver};

use crate::config::StandInsConfig;

/// The stand-ins `[stand_ins]` asks for, running until dropped.
pub struct StandIns {
    pub mail: Option<MailProvider>,
    pub gateway: Option<PaymentGateway>,
    pub webhooks: Option<WebhookReceiver>,
}

impl StandIns {
    /// Starts each stand-in that has an address, printing what it receives.
    pub async fn start(config: &StandInsConfig) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        let key = config
            .key
            .as_ref()
            .map(|k| k.value.expose().to_string())
            .unwrap_or_default();
        let mail = match config.mail {
            Some(addr) => Some(
                MailProvider::serve(addr, &key, true)
                    .await
                    .with_context(|| format!("stand_ins.mail: cannot listen on {addr}"))?,
            ),
            None => None,
        };
        let gateway = match config.gateway {
            Some(addr) => Some(
                PaymentGateway::serve(addr, &key, true)
                    .await
                    .with_context(|| format!("stand_ins.gateway: cannot listen on {addr}"))?,
            ),
            None => None,
        };
        let webhooks = match config.webhooks {
            Some(addr) => {
                let secret = config
                    .webhook_secret
                    .as_ref()
                    .map(|s| s.value.expose().to_string())
                    .unwrap_or_default();
                Some(
                    WebhookReceiver::serve(addr, &secret, true)
                        .await
                        .with_context(|| format!("stand_ins.webhooks: cannot listen on {addr}"))?,
                )
            }
            None => None,
        };
        Ok(Self {
            mail,
            gateway,
            webhooks,
        })
    }
}
