//! `[stand_ins]`: local stand-ins for the providers the example plugins call (see
//! [`crate::stand_ins`]), for trying techub with no internet: the demo and
//! `cargo xtask run` use them; a production `host.toml` leaves the section out.

use super::http::SecretRef;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

/// `[stand_ins]`: where each stand-in listens (left out: not started), and the key
/// the mail provider and the gateway accept and the webhook endpoint's secret (the
/// plugins' secrets name the same sources). Read at start; a change takes effect at
/// the next start.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Default)]
#[serde(default, deny_unknown_fields)]
pub struct StandInsConfig {
    /// The mail provider (`POST /emails`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mail: Option<SocketAddr>,
    /// The payment gateway (`POST /charges`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway: Option<SocketAddr>,
    /// The webhook endpoint (`POST /webhooks`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhooks: Option<SocketAddr>,
    /// The API key the mail provider and the gateway accept.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<SecretRef>,
    /// The webhook endpoint's signing secret (`whsec_...`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook_secret: Option<SecretRef>,
}

#[cfg(test)]
mod tests {
    use crate::config::HostConfig;

    #[test]
    fn stand_ins_need_their_key_and_secret_and_are_read_at_start_only() {
        let error = HostConfig::parse("[stand_ins]\ngateway = \"127.0.0.1:0\"\n")
            .unwrap_err()
            .to_string();
        assert!(error.contains("stand_ins.key"), "{error}");
        let error = HostConfig::parse("[stand_ins]\nwebhooks = \"127.0.0.1:0\"\n")
            .unwrap_err()
            .to_string();
        assert!(error.contains("stand_ins.webhook_secret"), "{error}");
        let error = HostConfig::parse("[stand_ins]\nmail = \"somewhere\"\n")
            .unwrap_err()
            .to_string();
        assert!(error.contains("mail"), "{error}");

        let running = HostConfig::default();
        let new = HostConfig::parse("[stand_ins]\n").unwrap();
        let (effective, ignored) = new.for_reload(&running, None).unwrap();
        assert_eq!(ignored, ["stand_ins"]);
        assert_eq!(effective.stand_ins, None);
    }
}
