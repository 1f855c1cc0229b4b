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
    // Declared (`publishes = [..]`): refused as the kit starts, naming the key.
    let refused = TestKit::file(fixture("user_notifications"))
        .name("user-notifications")
        .cache_domains(&["users"])
        .start()
        .await
        .err()
        .expect("a declared ungranted publish refuses the plugin");
    assert!(
        refused
            .to_string()
            .contains("declares it publishes \"notification.email\""),
        "{refused:#}"
    );
    // Not declared: the publish fails as it is made, and nothing goes out.
    let kit = TestKit::file(fixture("order_processor"))
        .name("order-processor")
        .cache_domains(&["orders"])
        .publish(&["order.*"])
        .start()
        .await
        .expect("the kit starts");
    kit.store_set("stock:a", "5").await;
    let order = json!({ "id": "o-9", "items": [{ "product": "a", "quantity": 1 }] });
    let handled = kit
        .deliver(TestMessage::json("order.created", &order))
        .await;
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

/// payment-processor in the kit, charging through `gateway`.
async fn payments(gateway: &techub_testkit::stand_ins::PaymentGateway) -> TestKit {
    TestKit::file(fixture("payment_processor"))
        .name("payment-processor")
        .publish(&["payment.*"])
        .setting("limit", "10000")
        .setting("gateway_url", &gateway.origin())
        .secret("gateway_key", "gw-key")
        .outbound(&[&gateway.origin()])
        // The first-byte wait runs from the request's start, after at most the
        // connect timeout.
        .limits(|l| {
            l.http_connect_timeout_ms = Some(300);
            l.http_first_byte_timeout_ms = Some(400);
        })
        .start()
        .await
        .expect("the kit starts")
}

#[tokio::test]
async fn payment_processor_charges_the_gateway_once_and_declines_for_good() {
    let gateway = techub_testkit::stand_ins::PaymentGateway::start("gw-key").await;
    let kit = payments(&gateway).await;
    let approved = kit.deliver(payment("o-1", 2500, "4242")).await;
    assert_eq!(approved.outcome, Outcome::Ok, "{approved:?}");
    assert_eq!(approved.published[0].routing_key, "payment.processed");
    assert_eq!(approved.published[0].json()["amount"], 2500);
    assert_eq!(approved.published[0].json()["charge"], "ch_1");
    assert_eq!(approved.published[0].priority, 10, "urgent");
    let charges = gateway.charges();
    assert_eq!(charges.len(), 1, "{charges:?}");
    assert_eq!(
        (charges[0].amount, charges[0].idempotency_key.as_str()),
        (2500, "order-o-1")
    );
    // A redelivery charges nothing again, and does not even ask.
    let again = kit.deliver(payment("o-1", 2500, "4242").attempt(2)).await;
    assert_eq!(again.outcome, Outcome::Ok, "{again:?}");
    assert!(
        again.published.is_empty() && again.logged("already charged"),
        "{again:?}"
    );
    assert_eq!(gateway.received().len(), 1);

    for (order, total, card, why) in [
        ("o-2", 2500, "0002", "card declined by the issuer"),
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
    assert_eq!(gateway.charges().len(), 1, "a decline charged");
}

#[tokio::test]
async fn payment_processor_retries_a_gateway_that_is_down_then_charges() {
    let gateway = techub_testkit::stand_ins::PaymentGateway::start("gw-key").await;
    gateway.fail_next(&[503, 502]);
    let kit = payments(&gateway).await;
    for attempt in 1..=2 {
        let handled = kit
            .deliver(payment("o-1", 100, "4242").attempt(attempt))
            .await;
        assert!(
            matches!(&handled.outcome, Outcome::Retry(reason) if reason.contains("the gateway answered 50")),
            "{handled:?}"
        );
        assert!(handled.published.is_empty());
    }
    let third = kit.deliver(payment("o-1", 100, "4242").attempt(3)).await;
    assert_eq!(third.outcome, Outcome::Ok, "{third:?}");
    assert_eq!(third.published[0].routing_key, "payment.processed");
    assert_eq!(gateway.charges().len(), 1);
}

/// The gateway charges but answers after the plugin stopped waiting: the retry
/// carries the same idempotency key, and the gateway (which counts) charged once.
#[tokio::test]
async fn payment_processor_charges_once_when_a_timed_out_charge_went_through() {
    let gateway = techub_testkit::stand_ins::PaymentGateway::start("gw-key").await;
    gateway.answer_late(std::time::Duration::from_secs(2));
    let kit = payments(&gateway).await;
    let timed_out = kit.deliver(payment("o-7", 900, "4242")).await;
    assert!(
        matches!(&timed_out.outcome, Outcome::Retry(reason) if reason.contains("timed out")),
        "{timed_out:?}"
    );
    let retried = kit.deliver(payment("o-7", 900, "4242").attempt(2)).await;
    assert_eq!(retried.outcome, Outcome::Ok, "{retried:?}");
    assert_eq!(
        gateway.received().len(),
        2,
        "the retry asked the gateway again"
    );
    let charges = gateway.charges();
    assert_eq!(charges.len(), 1, "charged twice: {charges:?}");
    assert_eq!(
        retried.published[0].json()["charge"],
        charges[0].id.as_str()
    );
}

#[tokio::test]
async fn inventory_keeper_announces_low_and_out_once_and_invalidates_the_product() {
    let kit = TestKit::file(fixture("inventory_keeper"))
        .name("inventory-keeper")
        .cache_domains(&["products"])
        .publish(&["inventory.*"])
        .setting("low", "3")
        .start()
        .await
        .expect("the kit starts");
    let restock = TestMessage::json(
        "inventory.restocked",
        &json!({ "product": "a", "quantity": 5 }),
    );
    let handled = kit.deliver(restock.clone().id("r-1")).await;
    assert_eq!(handled.outcome, Outcome::Ok, "{handled:?}");
    assert!(handled.published.is_empty());
    // The same event again (a redelivery) counts once.
    kit.deliver(restock.id("r-1").attempt(2)).await;
    assert_eq!(kit.store_get("level:a").await.as_deref(), Some(&b"5"[..]));

    let reserve = |id: &str, n: i64| {
        TestMessage::json(
            "inventory.updated",
            &json!({ "product": "a", "reserved": n, "order": format!("o-{id}") }),
        )
        .id(id)
    };
    let minute = std::time::Duration::from_secs(60);
    kit.cache_set("products", "a", "12 in stock", minute, &["product:a"])
        .await;
    let low = kit.deliver(reserve("u-1", 3)).await;
    assert_eq!(
        kit.cache_get("products", "a").await,
        None,
        "the product's entry was dropped"
    );
    assert_eq!(low.published.len(), 1, "{low:?}");
    assert_eq!(low.published[0].routing_key, "inventory.low");
    assert_eq!(low.published[0].json()["level"], 2);
    let still_low = kit.deliver(reserve("u-2", 1)).await;
    assert!(
        still_low.published.is_empty(),
        "announced once: {still_low:?}"
    );
    let out = kit.deliver(reserve("u-3", 1)).await;
    assert_eq!(out.published[0].routing_key, "inventory.out");
    assert!(out.logged("stock level"), "{:?}", out.logs);
}

#[tokio::test]
async fn analytics_counts_events_revenue_and_best_sellers_once_each() {
    let kit = TestKit::file(fixture("analytics"))
        .name("analytics")
        .start()
        .await
        .expect("the kit starts");
    let day = "2026-12-01";
    let at = |m: TestMessage| m.published_at_ms(1_796_083_200_000 + 3_600_000);
    let paid = at(TestMessage::json(
        "payment.processed",
        &json!({ "order": "o-1", "amount": 2500 }),
    ));
    kit.deliver(paid.clone().id("p-1")).await;
    kit.deliver(paid.id("p-1").attempt(2)).await; // a redelivery: not counted again
    kit.deliver(
        at(TestMessage::json(
            "payment.processed",
            &json!({ "amount": 500 }),
        ))
        .id("p-2"),
    )
    .await;
    for (id, product, n) in [("i-1", "a", 2), ("i-2", "b", 5), ("i-3", "a", 4)] {
        let event = json!({ "product": product, "reserved": n });
        let handled = kit
            .deliver(at(TestMessage::json("inventory.updated", &event)).id(id))
            .await;
        assert_eq!(handled.outcome, Outcome::Ok, "{handled:?}");
    }
    let text = |v: Option<Vec<u8>>| v.map(|v| String::from_utf8(v).unwrap());
    assert_eq!(
        text(
            kit.store_get(&format!("events:payment.processed:{day}"))
                .await
        )
        .as_deref(),
        Some("2")
    );
    assert_eq!(
        text(kit.store_get(&format!("revenue:{day}")).await).as_deref(),
        Some("3000")
    );
    let key = kit.store_key("best-sellers").await;
    let best = kit
        .services()
        .store
        .sorted_range(&key, 0, -1, true)
        .await
        .unwrap();
    let best: Vec<(String, f64)> = best
        .into_iter()
        .map(|(member, score)| (String::from_utf8(member).unwrap(), score))
        .collect();
    assert_eq!(best, vec![("a".to_string(), 6.0), ("b".to_string(), 5.0)]);
}

/// `store::once` after a host died mid-invocation: its claim is still `pending`, so a
/// redelivery retries (it neither skips work that may never have been done, nor does
/// it twice at once); once the claim lapses, the redelivery does the work. A `done`
/// claim (or one from before claims had states) is skipped.
#[tokio::test]
async fn once_retries_while_a_dead_attempt_claim_is_pending_and_skips_a_done_one() {
    let kit = TestKit::file(fixture("fixture_ledger"))
        .name("ledger")
        .start()
        .await
        .expect("the kit starts");
    let store = kit.services().store.clone();
    let claim = kit.store_key("once:{ledger}:m-1").await;
    let lapse = std::time::Duration::from_millis(300);
    store
        .set(
            &claim,
            b"pending",
            Some(lapse),
            techub_host::capability::store::SetCondition::Always,
        )
        .await
        .unwrap();
    let message = |id: &str| TestMessage::new("fixture.ledger.m", "x").id(id);
    let early = kit.deliver(message("m-1")).await;
    assert!(
        matches!(&early.outcome, Outcome::Retry(why) if why.contains("another attempt")),
        "{early:?}"
    );
    assert_eq!(
        kit.store_get("{ledger}effects").await,
        None,
        "no effect while pending"
    );
    tokio::time::sleep(lapse + std::time::Duration::from_millis(100)).await;
    let late = kit.deliver(message("m-1").attempt(2)).await;
    assert_eq!(late.outcome, Outcome::Ok, "{late:?}");
    assert_eq!(
        kit.store_get("{ledger}effects").await.as_deref(),
        Some(&b"1"[..])
    );
    assert_eq!(
        kit.store_get("once:{ledger}:m-1").await.as_deref(),
        Some(&b"done"[..])
    );

    for (id, value) in [("m-2", &b"done"[..]), ("m-3", &b""[..])] {
        kit.store_set(&format!("once:{{ledger}}:{id}"), value).await;
        let skipped = kit.deliver(message(id)).await;
        assert_eq!(skipped.outcome, Outcome::Ok, "{skipped:?}");
    }
    assert_eq!(
        kit.store_get("{ledger}effects").await.as_deref(),
        Some(&b"1"[..]),
        "skipped"
    );
}

#[tokio::test]
async fn a_plugin_reaches_a_local_server_the_kit_grants_with_its_secret() {
    use techub_testkit::http_server::{Behaviour, TestServer};
    let provider = TestServer::http(Behaviour::Echo).await;
    let elsewhere = TestServer::http(Behaviour::Echo).await;
    let kit = TestKit::file(fixture("fixture_caller"))
        .outbound(&[&provider.origin(false)])
        .secret("api_key", "kit-secret-123")
        .start()
        .await
        .expect("the kit starts the caller");
    let plan = json!({ "requests": [
        { "method": "POST", "url": format!("{}/send", provider.origin(false)),
          "headers": { "authorization": "{secret:api_key}" }, "body": "hi" },
        { "url": format!("{}/", elsewhere.origin(false)) },
    ]});
    let handled = kit
        .deliver(TestMessage::json("fixture.caller.kit", &plan))
        .await;
    let Outcome::Reject(report) = &handled.outcome else {
        panic!("{handled:?}");
    };
    assert!(report.contains("#0 200"), "{report}");
    assert!(report.contains("#1 error HTTP request denied"), "{report}");
    let seen = provider.received();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        (seen[0].method.as_str(), seen[0].body.as_slice()),
        ("POST", &b"hi"[..])
    );
    assert_eq!(seen[0].header("authorization"), Some("kit-secret-123"));
    assert!(elsewhere.received().is_empty());
}

/// The `email-sender` example in the kit, granted a mail provider stand-in whose key
/// is `key`.
async fn email_sender(provider: &techub_testkit::stand_ins::MailProvider, key: &str) -> TestKit {
    TestKit::file(fixture("email_sender"))
        .name("email-sender")
        .outbound(&[&provider.origin()])
        .setting("provider_url", &provider.origin())
        .secret("api_key", key)
        .limits(|l| l.http_first_byte_timeout_ms = Some(500))
        .start()
        .await
        .expect("the kit starts")
}

fn email_to(to: &str) -> TestMessage {
    TestMessage::json(
        "notification.email",
        &json!({ "template": "welcome", "to": to, "from": "hello@techub.test", "name": "Ada" }),
    )
}

#[tokio::test]
async fn email_sender_sends_one_email_per_message_with_the_key_and_the_message_id() {
    let provider = techub_testkit::stand_ins::MailProvider::start("mail-key-1").await;
    let kit = email_sender(&provider, "mail-key-1").await;
    let handled = kit.deliver(email_to("ada@example.com").id("m-1")).await;
    assert_eq!(handled.outcome, Outcome::Ok, "{handled:?}");
    assert!(handled.logged("email sent"), "{:?}", handled.logs);
    let emails = provider.emails();
    assert_eq!(emails.len(), 1, "{emails:?}");
    assert_eq!(emails[0].idempotency_key.as_deref(), Some("m-1"));
    assert_eq!(emails[0].message["to"], "ada@example.com");
    assert_eq!(emails[0].message["template"], "welcome");
    // A redelivery of a message whose email went out sends nothing.
    let again = kit
        .deliver(email_to("ada@example.com").id("m-1").attempt(2))
        .await;
    assert_eq!(again.outcome, Outcome::Ok, "{again:?}");
    assert_eq!(
        provider.requests(),
        1,
        "the redelivery reached the provider"
    );
    assert!(again.logged("already sent"), "{:?}", again.logs);
    kit.stop().await;
}

#[tokio::test]
async fn email_sender_retries_while_the_provider_is_down_and_sends_once_when_it_is_back() {
    let provider = techub_testkit::stand_ins::MailProvider::start("mail-key-2").await;
    provider.fail_next(&[503, 429]);
    let kit = email_sender(&provider, "mail-key-2").await;
    for attempt in 1..=2 {
        let handled = kit
            .deliver(email_to("ada@example.com").id("m-2").attempt(attempt))
            .await;
        assert!(
            matches!(&handled.outcome, Outcome::Retry(r) if r.contains("the mail provider answered")),
            "attempt {attempt}: {handled:?}"
        );
    }
    let handled = kit
        .deliver(email_to("ada@example.com").id("m-2").attempt(3))
        .await;
    assert_eq!(handled.outcome, Outcome::Ok, "{handled:?}");
    assert_eq!(provider.requests(), 3);
    let emails = provider.emails();
    assert_eq!(emails.len(), 1, "{emails:?}");
    // Every attempt carried the same idempotency key.
    assert!(
        provider
            .received()
            .iter()
            .all(|r| r.header("idempotency-key") == Some("m-2")),
        "{:?}",
        provider.received()
    );
    kit.stop().await;
}

#[tokio::test]
async fn email_sender_dead_letters_what_the_provider_refuses_with_its_reason() {
    let provider = techub_testkit::stand_ins::MailProvider::start("mail-key-3").await;
    let kit = email_sender(&provider, "mail-key-3").await;
    let handled = kit.deliver(email_to("nobody").id("m-3")).await;
    assert!(
        matches!(&handled.outcome, Outcome::Reject(r) if r.contains("422") && r.contains("`to` is not a valid address")),
        "{handled:?}"
    );
    kit.stop().await;
    // A wrong key is refused too, and the key is not in the reason.
    let kit = email_sender(&provider, "wrong-key").await;
    let handled = kit.deliver(email_to("ada@example.com").id("m-4")).await;
    assert!(
        matches!(&handled.outcome, Outcome::Reject(r) if r.contains("401") && r.contains("invalid API key") && !r.contains("wrong-key")),
        "{handled:?}"
    );
    assert!(provider.emails().is_empty());
    kit.stop().await;
}

#[tokio::test]
async fn email_sender_retries_when_the_provider_does_not_answer_in_time() {
    use techub_testkit::http_server::{Behaviour, TestServer};
    let silent = TestServer::http(Behaviour::Silent).await;
    let kit = TestKit::file(fixture("email_sender"))
        .name("email-sender")
        .outbound(&[&silent.origin(false)])
        .setting("provider_url", &silent.origin(false))
        .secret("api_key", "k")
        .limits(|l| l.http_first_byte_timeout_ms = Some(300))
        .start()
        .await
        .expect("the kit starts");
    let handled = kit.deliver(email_to("ada@example.com").id("m-5")).await;
    assert!(
        matches!(&handled.outcome, Outcome::Retry(r) if r.contains("timed out")),
        "{handled:?}"
    );
    kit.stop().await;
}

/// The `webhook-dispatcher` example in the kit, with customer `acme`'s endpoint at
/// `receiver` signed with `secret`.
async fn webhook_dispatcher(
    receiver: &techub_testkit::stand_ins::WebhookReceiver,
    secret: &str,
) -> TestKit {
    TestKit::file(fixture("webhook_dispatcher"))
        .name("webhook-dispatcher")
        .outbound(&[&receiver.origin()])
        .setting("endpoint_acme", &receiver.url())
        .secret("secret_acme", secret)
        .start()
        .await
        .expect("the kit starts")
}

fn event_for(customer: &str, id: &str) -> TestMessage {
    TestMessage::json(
        "webhook.event",
        &json!({ "customer": customer, "type": "payment.processed", "data": { "order": "o-1", "amount": 4200 } }),
    )
    .id(id)
}

#[tokio::test]
async fn webhook_dispatcher_delivers_events_signed_so_the_receiver_verifies_them() {
    use techub_testkit::stand_ins::WebhookReceiver;
    let secret = WebhookReceiver::new_secret();
    let receiver = WebhookReceiver::start(&secret).await;
    let kit = webhook_dispatcher(&receiver, &secret).await;
    let handled = kit.deliver(event_for("acme", "evt-1")).await;
    assert_eq!(handled.outcome, Outcome::Ok, "{handled:?}");
    assert!(receiver.refused().is_empty(), "{:?}", receiver.refused());
    let deliveries = receiver.deliveries();
    assert_eq!(deliveries.len(), 1, "{deliveries:?}");
    assert_eq!(deliveries[0].id, "evt-1");
    assert_eq!(deliveries[0].body["type"], "payment.processed");
    assert_eq!(deliveries[0].body["data"]["amount"], 4200);
    assert!(
        deliveries[0].body["timestamp"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );
    kit.stop().await;

    // Signed with another secret, the receiver refuses it: a 4xx, dead-lettered.
    let kit = webhook_dispatcher(&receiver, &WebhookReceiver::new_secret()).await;
    let handled = kit.deliver(event_for("acme", "evt-2")).await;
    assert!(
        matches!(&handled.outcome, Outcome::Reject(r) if r.contains("refused the event: 401")),
        "{handled:?}"
    );
    assert_eq!(receiver.refused(), ["no valid v1 signature"]);
    // A customer without an endpoint is named.
    let handled = kit.deliver(event_for("globex", "evt-3")).await;
    assert!(
        matches!(&handled.outcome, Outcome::Reject(r) if r.contains("endpoint_globex")),
        "{handled:?}"
    );
    kit.stop().await;
}

#[tokio::test]
async fn webhook_dispatcher_retries_a_failing_endpoint_with_the_same_id_and_disables_a_gone_one() {
    use techub_testkit::stand_ins::WebhookReceiver;
    let secret = WebhookReceiver::new_secret();
    let receiver = WebhookReceiver::start(&secret).await;
    receiver.answer_next(&[503]);
    let kit = webhook_dispatcher(&receiver, &secret).await;
    let handled = kit.deliver(event_for("acme", "evt-4")).await;
    assert!(
        matches!(&handled.outcome, Outcome::Retry(r) if r.contains("503")),
        "{handled:?}"
    );
    let handled = kit.deliver(event_for("acme", "evt-4").attempt(2)).await;
    assert_eq!(handled.outcome, Outcome::Ok, "{handled:?}");
    let ids: Vec<_> = receiver.deliveries().iter().map(|d| d.id.clone()).collect();
    assert_eq!(ids, ["evt-4", "evt-4"], "a retry is the same webhook");

    // 410 Gone disables the endpoint: the next event is dead-lettered unsent.
    receiver.answer_next(&[410]);
    let handled = kit.deliver(event_for("acme", "evt-5")).await;
    assert!(
        matches!(&handled.outcome, Outcome::Reject(r) if r.contains("410 Gone: disabled")),
        "{handled:?}"
    );
    let sent = receiver.received().len();
    let handled = kit.deliver(event_for("acme", "evt-6")).await;
    assert!(
        matches!(&handled.outcome, Outcome::Reject(r) if r.contains("is disabled")),
        "{handled:?}"
    );
    assert_eq!(
        receiver.received().len(),
        sent,
        "a disabled endpoint got a request"
    );
    kit.stop().await;
}
