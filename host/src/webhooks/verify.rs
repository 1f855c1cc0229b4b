//! The providers' signature schemes, each as its provider publishes it. Every HMAC is
//! `hmac`'s HMAC-SHA256, compared in constant time by `Mac::verify_slice`; a secret
//! never appears in a refusal's reason.

use crate::config::{Verify, WebhookRoute};
use axum::http::HeaderMap;
use base64::Engine as _;
use hmac::Mac as _;
use serde::Deserialize;

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// What a verified request tells about itself.
#[derive(Debug, Default, PartialEq)]
pub(super) struct Verified {
    /// The provider's id of the webhook (its retries carry the same one); none: the
    /// scheme has none and the request gave no `Idempotency-Key`.
    pub id: Option<String>,
    /// The event's type, when the scheme says it.
    pub event: Option<String>,
}

/// Why a request is refused, as the answer and the metric's outcome.
#[derive(Debug, PartialEq)]
pub(super) struct Refusal {
    pub status: u16,
    pub outcome: &'static str,
    pub reason: String,
}

fn bad_signature(reason: impl Into<String>) -> Refusal {
    Refusal {
        status: 401,
        outcome: "bad_signature",
        reason: reason.into(),
    }
}

fn malformed(reason: impl Into<String>) -> Refusal {
    Refusal {
        status: 400,
        outcome: "malformed",
        reason: reason.into(),
    }
}

/// Checks `body` and `headers` against `route`'s scheme at `now` (Unix seconds).
pub(super) fn verify(
    route: &WebhookRoute,
    headers: &HeaderMap,
    body: &[u8],
    now: u64,
) -> Result<Verified, Refusal> {
    let key = route
        .key()
        // Checked when the configuration was read; the reason is the requester's to
        // see, so it says nothing of the secret.
        .map_err(|_| bad_signature("the route cannot verify signatures"))?;
    let tolerance = route.tolerance().as_secs();
    let within = |timestamp: u64| {
        if now.abs_diff(timestamp) > tolerance {
            return Err(Refusal {
                status: 400,
                outcome: "stale",
                reason: format!(
                    "timestamp {timestamp} is more than {tolerance} s from now ({now}): refused as a replay"
                ),
            });
        }
        Ok(())
    };
    match route.verify {
        Verify::Stripe => {
            let header = header(headers, "stripe-signature")
                .ok_or_else(|| bad_signature("no Stripe-Signature header"))?;
            let mut timestamp = None;
            let mut signatures = Vec::new();
            for part in header.split(',') {
                match part.trim().split_once('=') {
                    Some(("t", t)) => timestamp = t.parse::<u64>().ok(),
                    Some(("v1", signature)) => signatures.push(signature),
                    _ => {}
                }
            }
            let timestamp =
                timestamp.ok_or_else(|| bad_signature("no t= timestamp in Stripe-Signature"))?;
            let prefix = format!("{timestamp}.");
            let signed = [prefix.as_bytes(), body];
            if !signatures
                .iter()
                .any(|s| hex_signature_holds(&key, &signed, s))
            {
                return Err(bad_signature("no valid v1 signature in Stripe-Signature"));
            }
            within(timestamp)?;
            let event: StripeEvent = serde_json::from_slice(body)
                .map_err(|e| malformed(format!("the body is not a Stripe event: {e}")))?;
            Ok(Verified {
                id: Some(event.id),
                event: event.kind,
            })
        }
        Verify::StandardWebhooks => {
            let id = header(headers, "webhook-id")
                .ok_or_else(|| bad_signature("no webhook-id header"))?;
            let timestamp = header(headers, "webhook-timestamp")
                .ok_or_else(|| bad_signature("no webhook-timestamp header"))?;
            let signatures = header(headers, "webhook-signature")
                .ok_or_else(|| bad_signature("no webhook-signature header"))?;
            let timestamp: u64 = timestamp
                .parse()
                .map_err(|_| bad_signature("webhook-timestamp is not Unix seconds"))?;
            let prefix = format!("{id}.{timestamp}.");
            let signed = [prefix.as_bytes(), body];
            let holds = signatures.split(' ').any(|entry| {
                let Some(Ok(signature)) = entry
                    .strip_prefix("v1,")
                    .map(|s| base64::engine::general_purpose::STANDARD.decode(s))
                else {
                    return false;
                };
                signature_holds(&key, &signed, &signature)
            });
            if !holds {
                return Err(bad_signature("no valid v1 signature in webhook-signature"));
            }
            within(timestamp)?;
            Ok(Verified {
                id: Some(id.to_string()),
                event: event_type(body),
            })
        }
        Verify::Github => {
            let signature = header(headers, "x-hub-signature-256")
                .and_then(|h| h.strip_prefix("sha256="))
                .ok_or_else(|| bad_signature("no X-Hub-Signature-256: sha256=... header"))?;
            if !hex_signature_holds(&key, &[body], signature) {
                return Err(bad_signature("X-Hub-Signature-256 does not hold"));
            }
            let id = header(headers, "x-github-delivery")
                .ok_or_else(|| malformed("no X-GitHub-Delivery header"))?;
            Ok(Verified {
                id: Some(id.to_string()),
                event: header(headers, "x-github-event").map(str::to_string),
            })
        }
        Verify::None => Ok(Verified {
            id: header(headers, "webhook-id")
                .or_else(|| header(headers, "idempotency-key"))
                .map(str::to_string),
            event: event_type(body),
        }),
    }
}

/// The fields of a Stripe event the host reads.
#[derive(Deserialize)]
struct StripeEvent {
    id: String,
    #[serde(rename = "type")]
    kind: Option<String>,
}

/// A JSON body's top-level `type`, if it has one.
fn event_type(body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Typed {
        #[serde(rename = "type")]
        kind: Option<String>,
    }
    serde_json::from_slice::<Typed>(body).ok()?.kind
}

fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name)?.to_str().ok()
}

/// Whether `signature` is the HMAC-SHA256 of `parts` (concatenated) under `key`.
fn signature_holds(key: &[u8], parts: &[&[u8]], signature: &[u8]) -> bool {
    // HMAC takes a key of any length: this never fails.
    let Ok(mut mac) = HmacSha256::new_from_slice(key) else {
        return false;
    };
    for part in parts {
        mac.update(part);
    }
    mac.verify_slice(signature).is_ok()
}

fn hex_signature_holds(key: &[u8], parts: &[&[u8]], signature: &str) -> bool {
    hex::decode(signature).is_ok_and(|signature| signature_holds(key, parts, &signature))
}
