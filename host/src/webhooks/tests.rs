//! The schemes against the vectors their publishers give: Standard Webhooks' own test
//! vector, GitHub's documented example, and a Stripe signature computed with Python's
//! `hmac` as Stripe's documentation describes.

use super::verify::{Verified, verify};
use crate::config::{SecretRef, Verify, WebhookRoute};
use axum::http::HeaderMap;

fn route(verify: Verify, secret: &str) -> WebhookRoute {
    WebhookRoute {
        path: "/h".into(),
        routing_key: "a.b".into(),
        verify,
        secret: Some(SecretRef::literal(secret)),
        max_bytes: None,
        tolerance: None,
    }
}

fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    pairs
        .iter()
        .map(|(name, value)| {
            (
                axum::http::HeaderName::from_static(name),
                value.parse().unwrap(),
            )
        })
        .collect()
}

#[test]
fn the_standard_webhooks_test_vector_verifies_and_any_change_refuses() {
    let route = route(
        Verify::StandardWebhooks,
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    );
    let body = br#"{"test": 2432232314}"#;
    let signed = |signature: &str, timestamp: &str| {
        headers(&[
            ("webhook-id", "msg_p5jXN8AQM9LWM0D4loKWxJek"),
            ("webhook-timestamp", timestamp),
            ("webhook-signature", signature),
        ])
    };
    let good = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";
    let at = 1_614_265_330;
    assert_eq!(
        verify(
            &route,
            &signed(&format!("v1,bm90IGl0 {good}"), "1614265330"),
            body,
            at
        ),
        Ok(Verified {
            id: Some("msg_p5jXN8AQM9LWM0D4loKWxJek".into()),
            event: None
        }),
        "any one of the space-separated signatures may hold"
    );
    let refused = |headers: HeaderMap, body: &[u8], now: u64| {
        verify(&route, &headers, body, now).unwrap_err().outcome
    };
    assert_eq!(
        refused(signed(good, "1614265330"), br#"{"test": 2432232315}"#, at),
        "bad_signature"
    );
    assert_eq!(
        refused(signed(good, "1614265331"), body, at),
        "bad_signature"
    );
    assert_eq!(
        refused(signed("v2,abc", "1614265330"), body, at),
        "bad_signature"
    );
    assert_eq!(refused(signed(good, "1614265330"), body, at + 301), "stale");
    assert_eq!(refused(signed(good, "1614265330"), body, at - 301), "stale");
    assert!(verify(&route, &signed(good, "1614265330"), body, at + 300).is_ok());
    assert_eq!(refused(HeaderMap::new(), body, at), "bad_signature");
}

#[test]
fn github_s_documented_example_verifies() {
    let route = route(Verify::Github, "It's a Secret to Everybody");
    let signed = headers(&[
        (
            "x-hub-signature-256",
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
        ),
        ("x-github-delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958"),
        ("x-github-event", "push"),
    ]);
    assert_eq!(
        verify(&route, &signed, b"Hello, World!", 0),
        Ok(Verified {
            id: Some("72d3162e-cc78-11e3-81ab-4c9367dc0958".into()),
            event: Some("push".into())
        })
    );
    assert_eq!(
        verify(&route, &signed, b"Hello, World?", 0)
            .unwrap_err()
            .outcome,
        "bad_signature"
    );
}

#[test]
fn a_stripe_signature_verifies_within_the_tolerance() {
    let route = route(Verify::Stripe, "whsec_test_secret");
    let body = br#"{"id":"evt_1","type":"payment_intent.succeeded"}"#;
    let signed = headers(&[(
        "stripe-signature",
        "t=1700000000,v1=0000,v1=22d8dc182f5c588077683bd378368e29765bfe5df2560112b4f28fef120f0e31,v0=ff",
    )]);
    assert_eq!(
        verify(&route, &signed, body, 1_700_000_100),
        Ok(Verified {
            id: Some("evt_1".into()),
            event: Some("payment_intent.succeeded".into())
        })
    );
    assert_eq!(
        verify(&route, &signed, body, 1_700_000_301)
            .unwrap_err()
            .outcome,
        "stale"
    );
    let other_secret = self::route(Verify::Stripe, "whsec_other");
    assert_eq!(
        verify(&other_secret, &signed, body, 1_700_000_000)
            .unwrap_err()
            .outcome,
        "bad_signature"
    );
}
