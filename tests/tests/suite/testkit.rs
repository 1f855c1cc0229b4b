//! The test kit (`techub-testkit`) on the example plugins: what a plugin author's
//! `cargo test` sees. Each delivery runs in the kit's embedded host (the real runtime
//! and embedded backends); the tests assert on outcomes, publishes, logs and state.

use serde_json::json;
use techub_testkit::{Outcome, TestKit, TestMessage};
use techub_tests::{fixture, repo_root};

fn user(id: &str, email: &str) -> TestMessage {
    TestMessage::json(
        "user.created",
        &json!({ "id": id, "email": email, "name": "Ada" }),
    )
}

#[tokio::test]
async fn user_notifications_caches_the_user_publishes_the_email_and_logs_it() {
    let kit = TestKit::file(fixture("user_notifications"))
        .name("user-notifications")
        .cache_domains(&["users"])
        .publish(&["notification.*"])
        .setting("sender", "hello@techub.test")
        .start()
        .await
        .expect("the kit starts");
    let handled = kit.deliver(user("42", "ada@example.com").id("m-1")).await;
    assert_eq!(handled.outcome, Outcome::Ok, "{handled:?}");
    assert_eq!(handled.published.len(), 1, "{handled:?}");
    let email = &handled.published[0];
    assert_eq!(email.routing_key, "notification.email");
    assert_eq!(email.json()["from"], "hello@techub.test");
    assert_eq!(
        email.correlation_id.as_deref(),
        Some("m-1"),
        "it follows the event"
    );
    assert!(
        handled.logged("welcome email requested"),
        "{:?}",
        handled.logs
    );
    let cached = kit
        .cache_get("users", "42")
        .await
        .expect("the user is cached");
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&cached).unwrap()["name"],
        "Ada"
    );

    let handled = kit.deliver(user("43", "no-at-sign")).await;
    assert!(
        matches!(&handled.outcome, Outcome::Reject(reason) if reason.contains("no usable id or email")),
        "{handled:?}"
    );
    assert!(
        handled.published.is_empty() && handled.logs.is_empty(),
        "{handled:?}"
    );
    kit.stop().await;
}

#[tokio::test]
async fn a_publish_the_kit_did_not_grant_fails_the_delivery_and_publishes_nothing() {
    let kit = TestKit::file(fixture("user_notifications"))
        .name("user-notifications")
        .cache_domains(&["users"])
        .start()
        .await
        .expect("the kit starts");
    let handled = kit.deliver(user("42", "ada@example.com")).await;
    assert!(
        matches!(&handled.outcome, Outcome::Reject(reason) | Outcome::Retry(reason) if reason.contains("publish")),
        "{handled:?}"
    );
    assert!(handled.published.is_empty(), "{handled:?}");
}

#[tokio::test]
async fn order_processor_reserves_stock_once_per_order_and_cancels_what_it_cannot_fill() {
    let kit = TestKit::file(fixture("order_processor"))
        .name("order-processor")
        .cache_domains(&["orders"])
        .publish(&["inventory.*", "order.*"])
        .start()
        .await
        .expect("the kit starts");
    kit.store_set("stock:a", "5").await;
    let order = |id: &str, quantity: i64| {
        TestMessage::json(
            "order.created",
            &json!({ "id": id, "items": [{ "product": "a", "quantity": quantity }] }),
        )
    };
    let handled = kit.deliver(order("o-1", 2)).await;
    assert_eq!(handled.outcome, Outcome::Ok, "{handled:?}");
    assert_eq!(handled.published[0].routing_key, "inventory.updated");
    assert_eq!(kit.store_get("stock:a").await.as_deref(), Some(&b"3"[..]));
    assert!(kit.cache_get("orders", "o-1").await.is_some());
    assert!(!kit.lock_held("product:a").await, "the lock was released");

    // A redelivery of the same order reserves nothing again.
    let again = kit.deliver(order("o-1", 2).attempt(2)).await;
    assert_eq!(again.outcome, Outcome::Ok, "{again:?}");
    assert!(again.published.is_empty(), "{again:?}");
    assert_eq!(kit.store_get("stock:a").await.as_deref(), Some(&b"3"[..]));

    let short = kit.deliver(order("o-2", 10)).await;
    assert_eq!(short.outcome, Outcome::Ok, "{short:?}");
    assert_eq!(short.published[0].routing_key, "order.cancelled");
    assert_eq!(short.published[0].json()["reason"], "out of stock");
    assert_eq!(kit.store_get("stock:a").await.as_deref(), Some(&b"3"[..]));
}

/// `TestKit::crate_at` builds the crate for wasm32-wasip2 itself (here the trap
/// fixture, into the suite's plugin build directory, so it is already fresh); a
/// trap is `Failed`, not a hang or a panic of the test.
#[tokio::test]
async fn a_crate_is_built_by_the_kit_and_a_trap_is_a_failed_outcome() {
    let kit = TestKit::crate_at(repo_root().join("plugins/fixtures/trap"))
        .target_dir(repo_root().join("target"))
        .start()
        .await
        .expect("the kit builds and starts the crate");
    assert_eq!(kit.name(), "fixture-trap");
    let handled = kit.deliver(TestMessage::new("anything", "{}")).await;
    assert!(
        matches!(&handled.outcome, Outcome::Failed(why) if why.contains("trapped")),
        "{handled:?}"
    );
}

fn payment(id: &str, total: u64, card: &str) -> TestMessage {
    TestMessage::json(
        "order.created",
        &json!({ "id": id, "total": total, "card": card }),
    )
}

async fn payments(gateway_failures: u32) -> TestKit {
    TestKit::file(fixture("payment_processor"))
        .name("payment-processor")
        .publish(&["payment.*"])
        .setting("limit", "10000")
        .setting("gateway_failures", &gateway_failures.to_string())
        .start()
        .await
        .expect("the kit starts")
}

#[tokio::test]
async fn payment_processor_charges_once_and_declines_for_good() {
    let kit = payments(0).await;
    let approved = kit.deliver(payment("o-1", 2500, "4242")).await;
    assert_eq!(approved.outcome, Outcome::Ok, "{approved:?}");
    assert_eq!(approved.published[0].routing_key, "payment.processed");
    assert_eq!(approved.published[0].json()["amount"], 2500);
    assert_eq!(approved.published[0].priority, 10, "urgent");
    // A redelivery charges nothing again.
    let again = kit.deliver(payment("o-1", 2500, "4242").attempt(2)).await;
    assert_eq!(again.outcome, Outcome::Ok, "{again:?}");
    assert!(
        again.published.is_empty() && again.logged("already charged"),
        "{again:?}"
    );

    for (order, total, card, why) in [
        ("o-2", 2500, "0002", "card declined"),
        ("o-3", 20_000, "4242", "over the limit"),
    ] {
        let declined = kit.deliver(payment(order, total, card)).await;
        assert!(
            matches!(&declined.outcome, Outcome::Reject(reason) if reason.contains(why)),
            "{declined:?}"
        );
        assert_eq!(declined.published[0].routing_key, "payment.failed");
        assert_eq!(declined.published[0].json()["status"], "failed");
    }
}

#[tokio::test]
async fn payment_processor_retries_a_gateway_that_is_down_then_charges() {
    let kit = payments(2).await;
    for attempt in 1..=2 {
        let handled = kit
            .deliver(payment("o-1", 100, "4242").attempt(attempt))
            .await;
        assert!(
            matches!(&handled.outcome, Outcome::Retry(reason) if reason.contains("gateway unavailable")),
            "{handled:?}"
        );
        assert!(handled.published.is_empty());
    }
    let third = kit.deliver(payment("o-1", 100, "4242").attempt(3)).await;
    assert_eq!(third.outcome, Outcome::Ok, "{third:?}");
    assert_eq!(third.published[0].routing_key, "payment.processed");
}
