//! Real-time journeys (issue 19), told as a shop uses them: events arrive over
//! the Segment API of a real `herald serve` (or from `herald import`), a
//! separate `herald worker` sends over SMTP to a real server on loopback,
//! and what is stored is looked at after every step; both backends.
//!
//! A trigger whose first step waits is told in `tests/sequence.rs`, with a
//! manual clock (no sleeping for an hour).

mod common;

use std::collections::BTreeMap;
use std::process::Child;
use std::time::{Duration, Instant};

use common::api::create_key;
use common::serve::Serve;
use common::smtp::SmtpServer;
use common::{TestDb, stderr, stdout};
use serde_json::{Value, json};

/// Enter whoever leaves a cart of 50 or more; one message at once.
const CART: &str = r#"name: cart
from: "Acme Shop <hello@acme.example>"
trigger:
  event: cart_abandoned
  where:
    - field: total
      gte: 50
steps:
  - id: nudge
    subject: "Your cart is waiting"
    template: cart
"#;

const CART_TEMPLATE: &str = r#"<p>Hi {{default customer.first_name "there"}}, your cart of {{trigger.data.total}} EUR ({{trigger.kind}}) is waiting.</p>
<a href="{{unsubscribe_url}}">Unsubscribe</a>"#;

/// Writes the campaign files and templates into the test's directory.
fn files(db: &TestDb, campaigns: &[(&str, &str)]) {
    std::fs::create_dir_all(db.path("campaigns")).unwrap();
    std::fs::create_dir_all(db.path("templates")).unwrap();
    for (name, yaml) in campaigns {
        std::fs::write(db.path(&format!("campaigns/{name}.yaml")), yaml).unwrap();
    }
    std::fs::write(db.path("templates/cart.html.hbs"), CART_TEMPLATE).unwrap();
}

/// A worker process that is killed if the test fails before stopping it.
struct Worker(Child);

impl Worker {
    fn start(db: &TestDb, smtp: &str, name: &str) -> Worker {
        Worker(
            db.command(
                &[("HERALD_SMTP_URL", smtp)],
                &["worker", "--no-http", "--name", name],
            )
            .spawn()
            .unwrap(),
        )
    }

    fn stop(mut self) {
        let status = common::sigterm_and_wait(&mut self.0);
        assert!(status.success(), "the worker stops cleanly: {status:?}");
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Recipient → the bodies the SMTP server received for them.
fn mail(smtp: &SmtpServer) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for m in smtp.received() {
        out.entry(m.to.clone())
            .or_default()
            .push(String::from_utf8_lossy(&m.data).into_owned());
    }
    out
}

fn track(user: &str, event: &str, message_id: &str, properties: Value) -> Value {
    json!({
        "type": "track",
        "userId": user,
        "event": event,
        "messageId": message_id,
        "properties": properties,
    })
}

/// A track call enters its customer into the campaign it triggers and the
/// message reaches the SMTP server, sent by a worker in another process and
/// showing the event's data; events that do not match, customers who left,
/// retried calls and stale imports send nothing; on PostgreSQL two workers
/// and two API servers share the work and nobody gets two messages.
async fn a_track_call_enters_the_customer_and_the_message_goes_out(db: TestDb) {
    files(&db, &[("cart", CART)]);
    let key = create_key(&db, "shop-web", "ingest");
    let smtp = SmtpServer::accepting().await;
    let postgres = db.backend == herald::store::Backend::Postgres;
    // Who the shop knows: Carol has unsubscribed.
    let customers = db.path("customers.csv");
    std::fs::write(
        &customers,
        "email,first_name,status\nann@example.com,Ann,subscribed\nbob@example.com,Bob,subscribed\n\
         carol@example.com,Carol,unsubscribed\ndave@example.com,Dave,subscribed\n\
         erin@example.com,Erin,subscribed\n",
    )
    .unwrap();
    let out = db.herald(&["import", "customers", customers.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let serve = Serve::start(&db);
    let second = postgres.then(|| Serve::start(&db));
    let other = second.as_ref().unwrap_or(&serve);
    let mut workers = vec![Worker::start(&db, &smtp.url(), "w1")];
    if postgres {
        workers.push(Worker::start(&db, &smtp.url(), "w2"));
    }

    // The shop's site tells who its signed-in users are.
    for (user, email) in [
        ("u-ann", "ann@example.com"),
        ("u-bob", "bob@example.com"),
        ("u-carol", "carol@example.com"),
    ] {
        let (status, body) = serve
            .call(
                &key,
                "identify",
                &json!({"userId": user, "traits": {"email": email}}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }

    // Ann leaves a cart of 80: her message goes out, showing the event.
    let (status, body) = serve
        .call(
            &key,
            "track",
            &track("u-ann", "cart_abandoned", "m-ann-1", json!({"total": 80})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    wait_until("Ann's message", || {
        mail(&smtp).contains_key("ann@example.com")
    })
    .await;
    let ann = &mail(&smtp)["ann@example.com"];
    assert_eq!(ann.len(), 1);
    assert!(
        ann[0].contains("Hi Ann, your cart of 80 EUR (cart_abandoned) is waiting."),
        "{}",
        ann[0]
    );

    // A cart under 50, a page view, Carol's cart (she left), and Ann's call
    // retried by her client (the same messageId) against the other server:
    // none of them sends anything.
    for (server, call) in [
        (
            &serve,
            track("u-bob", "cart_abandoned", "m-bob-1", json!({"total": 20})),
        ),
        (
            &serve,
            track("u-bob", "page_view", "m-bob-2", json!({"total": 99})),
        ),
        (
            &serve,
            track(
                "u-carol",
                "cart_abandoned",
                "m-carol-1",
                json!({"total": 500}),
            ),
        ),
        (
            other,
            track("u-ann", "cart_abandoned", "m-ann-1", json!({"total": 80})),
        ),
    ] {
        let (status, body) = server.call(&key, "track", &call).await;
        assert_eq!(status, 200, "{body}");
    }
    // Bob's next cart is big enough: it goes out, through the other server.
    let (status, body) = other
        .call(
            &key,
            "track",
            &track("u-bob", "cart_abandoned", "m-bob-3", json!({"total": 50})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    wait_until("Bob's message", || {
        mail(&smtp).contains_key("bob@example.com")
    })
    .await;

    // A fresh cart in an import enters Dave; last month's cart of Erin's
    // does not (an import of history sends nothing).
    let now = herald::clock::now_millis();
    let events = db.path("carts.jsonl");
    std::fs::write(
        &events,
        format!(
            "{}\n{}\n",
            json!({"email": "dave@example.com", "kind": "cart_abandoned", "id": "imp-1",
                   "occurred_at": herald::clock::format_rfc3339(now - 60_000), "data": {"total": 120}}),
            json!({"email": "erin@example.com", "kind": "cart_abandoned", "id": "imp-2",
                   "occurred_at": herald::clock::format_rfc3339(now - 30 * 86_400_000), "data": {"total": 120}}),
        ),
    )
    .unwrap();
    let out = db.herald(&["import", "interactions", events.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("1 entered into triggered campaigns"),
        "{}",
        stdout(&out)
    );
    wait_until("Dave's message", || {
        mail(&smtp).contains_key("dave@example.com")
    })
    .await;

    // Give a stray duplicate time to show, then look at everything.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let got = mail(&smtp);
    assert_eq!(
        got.keys().map(String::as_str).collect::<Vec<_>>(),
        ["ann@example.com", "bob@example.com", "dave@example.com"],
    );
    assert!(
        got.values().all(|m| m.len() == 1),
        "one message each: {got:?}"
    );
    assert!(got["bob@example.com"][0].contains("cart of 50 EUR"));
    assert!(got["dave@example.com"][0].contains("Hi Dave, your cart of 120 EUR"));
    // One entry per triggering event, each naming its cause.
    assert_eq!(
        db.pairs(
            "SELECT COUNT(*), COUNT(DISTINCT cause_id) FROM entries \
             WHERE campaign = 'cart' AND cause_id IS NOT NULL"
        )
        .await,
        [(3, Some(3))]
    );
    for w in workers {
        w.stop();
    }
    // The day's event run holds them, open all day; once the day is over
    // (the worker's advance looks every 15 s) it is done, with its count.
    let runs = "SELECT COUNT(*), MAX(planned) FROM runs WHERE trigger = 'event' AND status = ";
    assert_eq!(db.pairs(&format!("{runs}'sending'")).await, [(1, Some(0))]);
    let store = db.store().await;
    assert_eq!(store.finish_past_event_runs(now).await.unwrap(), 0);
    assert_eq!(
        store
            .finish_past_event_runs(now + 86_400_000)
            .await
            .unwrap(),
        1
    );
    assert_eq!(db.pairs(&format!("{runs}'done'")).await, [(1, Some(3))]);
    serve.stop();
    if let Some(s) = second {
        s.stop();
    }
}

#[tokio::test]
async fn a_track_call_enters_the_customer_and_the_message_goes_out_sqlite() {
    a_track_call_enters_the_customer_and_the_message_goes_out(TestDb::sqlite()).await;
}

#[tokio::test]
async fn a_track_call_enters_the_customer_and_the_message_goes_out_postgres() {
    if let Some(db) = TestDb::postgres().await {
        a_track_call_enters_the_customer_and_the_message_goes_out(db).await;
    }
}

/// A receipt: sent on request, to customers who left marketing too.
const RECEIPT: &str = r#"name: receipt
kind: transactional
from: "Acme Shop <orders@acme.example>"
steps:
  - id: receipt
    subject: "Your order {{data.order}}"
    template: receipt
"#;

const RECEIPT_TEMPLATE: &str = r#"<p>Thanks {{default customer.first_name "there"}}: order {{data.order}}, {{data.total}} EUR.</p>"#;

/// `POST /v1/send` with an `Idempotency-Key`.
async fn send(
    server: &Serve,
    key: &str,
    idempotency: Option<&str>,
    body: &Value,
) -> (u16, Option<String>, Value) {
    let mut request = server
        .client
        .post(server.url("/v1/send"))
        .bearer_auth(key)
        .json(body);
    if let Some(k) = idempotency {
        request = request.header("Idempotency-Key", k);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let replayed = response
        .headers()
        .get("idempotent-replayed")
        .map(|v| v.to_str().unwrap().to_string());
    (status, replayed, response.json().await.unwrap())
}

async fn message(server: &Serve, key: &str, id: &str) -> (u16, Value) {
    let response = server
        .client
        .get(server.url(&format!("/v1/messages/{id}")))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

/// A shop's backend asks for receipts: a call is answered 202 with the
/// message's id before anything is sent; the same key, however often and
/// wherever it is retried (concurrently, on two servers, after the server
/// that took it was killed), is one message; a key reused for another
/// request, an unknown customer or campaign, a marketing campaign and a
/// missing key are refused naming the field; an unsubscribed customer gets
/// the receipt, a bounced one does not; `GET /v1/messages/{id}` follows it.
async fn transactional_sends_go_out_once_per_key(db: TestDb) {
    files(&db, &[("cart", CART), ("receipt", RECEIPT)]);
    std::fs::write(db.path("templates/receipt.html.hbs"), RECEIPT_TEMPLATE).unwrap();
    let customers = db.path("customers.csv");
    std::fs::write(
        &customers,
        "email,external_id,first_name,status\nann@example.com,u-ann,Ann,subscribed\n\
         bob@example.com,u-bob,Bob,unsubscribed\ncarol@example.com,u-carol,Carol,bounced\n",
    )
    .unwrap();
    let out = db.herald(&["import", "customers", customers.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let shop = create_key(&db, "shop-backend", "ingest");
    let other = create_key(&db, "other-backend", "ingest");
    let reader = create_key(&db, "support", "read");
    let postgres = db.backend == herald::store::Backend::Postgres;
    let first = Serve::start(&db);
    let second = Serve::start(&db);
    let receipt = |to: &str, order: &str| json!({"campaign": "receipt", "to": to, "data": {"order": order, "total": 80}});

    // Accepted with no worker running: queued, with an id.
    let (status, replayed, body) = send(
        &first,
        &shop,
        Some("order-A-1"),
        &receipt("ann@example.com", "A-1"),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(replayed, None);
    let id = body["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("msg_") && id.len() == 28, "{id}");
    assert_eq!(body["status"], "queued");
    assert_eq!(body["to"], "ann@example.com");

    // The client retries eight times at once (on PostgreSQL half of them on
    // another server): the same message each time.
    let again = receipt("ann@example.com", "A-1");
    let retries = (0..8).map(|i| {
        let server = if postgres && i % 2 == 1 {
            &second
        } else {
            &first
        };
        send(server, &shop, Some("order-A-1"), &again)
    });
    for (status, replayed, body) in futures_util::future::join_all(retries).await {
        assert_eq!(status, 202, "{body}");
        assert_eq!(replayed.as_deref(), Some("true"));
        assert_eq!(body["id"], id.as_str());
    }
    // The server that took the call dies (SIGKILL) before anything is sent;
    // a retry on the other server still finds it.
    first.kill();
    let (status, replayed, body) = send(
        &second,
        &shop,
        Some("order-A-1"),
        &receipt("ann@example.com", "A-1"),
    )
    .await;
    assert_eq!(
        (status, replayed.as_deref(), body["id"].as_str()),
        (202, Some("true"), Some(id.as_str()))
    );

    // Refusals, each naming what is wrong; none queues anything.
    for (key, idempotency, body, want, field) in [
        (
            &shop,
            Some("order-A-1"),
            receipt("ann@example.com", "A-2"),
            422,
            "Idempotency-Key",
        ),
        (
            &shop,
            None,
            receipt("ann@example.com", "A-3"),
            400,
            "Idempotency-Key",
        ),
        (
            &shop,
            Some("k-unknown"),
            receipt("nobody@example.com", "A-4"),
            422,
            "to",
        ),
        (
            &shop,
            Some("k-bad"),
            receipt("not an address@", "A-5"),
            422,
            "to",
        ),
        (
            &shop,
            Some("k-nul"),
            json!({"campaign": "receipt", "to": "ann@example.com", "data": {"note": "a\u{0}b"}}),
            422,
            "data.note",
        ),
        (
            &shop,
            Some("k-cart"),
            json!({"campaign": "cart", "to": "ann@example.com"}),
            422,
            "campaign",
        ),
    ] {
        let (status, _, answer) = send(&second, key, idempotency, &body).await;
        assert_eq!(status, want, "{body} → {answer}");
        assert_eq!(answer["error"]["field"], field, "{answer}");
    }
    let (status, _, answer) = send(
        &second,
        &reader,
        Some("k-read"),
        &receipt("ann@example.com", "A-6"),
    )
    .await;
    assert_eq!(status, 403, "{answer}");
    // Keys are the caller's own: another backend may use the same string.
    let (status, replayed, theirs) =
        send(&second, &other, Some("order-A-1"), &receipt("u-bob", "B-1")).await;
    assert_eq!((status, replayed), (202, None), "{theirs}");
    let bob = theirs["id"].as_str().unwrap().to_string();
    assert_eq!(theirs["to"], "bob@example.com");
    let (status, _, body) = send(
        &second,
        &shop,
        Some("order-C-1"),
        &receipt("u-carol", "C-1"),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let carol = body["id"].as_str().unwrap().to_string();

    // The worker starts: Ann and Bob (unsubscribed from marketing) get
    // their receipts, once; Carol's address bounced, so hers is skipped.
    let smtp = SmtpServer::accepting().await;
    let worker = Worker::start(&db, &smtp.url(), "w1");
    wait_until("the receipts", || mail(&smtp).len() == 2).await;
    let (status, ann) = message(&second, &shop, &id).await;
    assert_eq!(status, 200, "{ann}");
    let mut seen = ann.clone();
    for _ in 0..250 {
        if seen["status"] == "sent" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        seen = message(&second, &shop, &id).await.1;
    }
    assert_eq!(seen["status"], "sent", "{seen}");
    assert!(
        seen["message_id"]
            .as_str()
            .is_some_and(|m| m.contains("@acme.example")),
        "{seen}"
    );
    assert!(seen["sent_at"].is_string(), "{seen}");
    let mut carol_seen = message(&second, &shop, &carol).await.1;
    for _ in 0..250 {
        if carol_seen["status"] == "skipped" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        carol_seen = message(&second, &shop, &carol).await.1;
    }
    assert_eq!(carol_seen["status"], "skipped", "{carol_seen}");
    assert_eq!(carol_seen["reason"], "bounced", "{carol_seen}");
    // Another ingest key does not see Ann's message; a read key does.
    assert_eq!(message(&second, &other, &id).await.0, 404);
    assert_eq!(message(&second, &reader, &id).await.0, 200);
    assert_eq!(
        message(&second, &reader, "msg_000000000000000000000000")
            .await
            .0,
        404
    );
    assert_eq!(message(&second, &other, &bob).await.1["status"], "sent");

    tokio::time::sleep(Duration::from_millis(1000)).await;
    let got = mail(&smtp);
    assert_eq!(
        got.keys().map(String::as_str).collect::<Vec<_>>(),
        ["ann@example.com", "bob@example.com"]
    );
    assert_eq!(got["ann@example.com"].len(), 1, "one receipt for one key");
    assert!(got["ann@example.com"][0].contains("Subject: Your order A-1"));
    assert!(got["ann@example.com"][0].contains("Thanks Ann: order A-1, 80 EUR."));
    assert!(got["bob@example.com"][0].contains("order B-1"));
    assert_eq!(common::count(&db, "SELECT COUNT(*) FROM sends").await, 3);
    worker.stop();
    second.stop();
}

#[tokio::test]
async fn transactional_sends_go_out_once_per_key_sqlite() {
    transactional_sends_go_out_once_per_key(TestDb::sqlite()).await;
}

#[tokio::test]
async fn transactional_sends_go_out_once_per_key_postgres() {
    if let Some(db) = TestDb::postgres().await {
        transactional_sends_go_out_once_per_key(db).await;
    }
}
