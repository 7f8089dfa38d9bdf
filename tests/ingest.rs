//! Segment's HTTP Tracking API on `/v1`, told as a shop would use it: the
//! real `herald serve` on a port-0 listener, keys from the real `herald
//! api-key`, calls from a real HTTP client (reqwest) and from Segment's own
//! Python library, and after every call a look at what is stored, on both
//! backends.

mod common;

use std::io::Write as _;
use std::process::Stdio;

use common::api::create_key;
use common::serve::{Serve, Servers};
use common::{TestDb, in_ci, stderr, stdout};
use herald::store::Store;
use serde_json::{Value, json};

/// (customers, interactions, visitors, visitors' events) as stored.
async fn counts(db: &TestDb) -> [i64; 4] {
    let pair = |sql| async move {
        let rows = db.pairs(sql).await;
        (rows[0].0, rows[0].1.unwrap_or(0))
    };
    let (customers, interactions) =
        pair("SELECT (SELECT COUNT(*) FROM customers), (SELECT COUNT(*) FROM interactions)").await;
    let (visitors, events) =
        pair("SELECT (SELECT COUNT(*) FROM visitors), (SELECT COUNT(*) FROM visitor_events)").await;
    [customers, interactions, visitors, events]
}

async fn customer(store: &Store, email: &str) -> herald::store::customers::StoredCustomer {
    store
        .customer_by_email(email)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("no customer {email}"))
}

/// Kinds of a customer's interactions, oldest first, with their data.
async fn history(store: &Store, email: &str, kinds: &[&str]) -> Vec<(String, Value)> {
    let id = customer(store, email).await.id;
    let mut all = Vec::new();
    for kind in kinds {
        for (at, data) in store.interactions_of(id, kind).await.unwrap() {
            all.push((at, kind.to_string(), Value::Object(data)));
        }
    }
    all.sort_by_key(|(at, _, _)| *at);
    all.into_iter().map(|(_, k, d)| (k, d)).collect()
}

async fn segment_calls_become_customers_and_interactions(db: TestDb) {
    let key = create_key(&db, "shop-web", "ingest");
    let reader = create_key(&db, "reporting", "read");
    let store = db.store().await;
    let s = Serve::start(&db);

    // identify makes the customer: userId → external id, traits → fields and attributes.
    let (status, body) = s
        .call(
            &key,
            "identify",
            &json!({"userId": "u-1", "traits": {"email": "Ann@Shop.Example", "firstName": "Ann",
                    "plan": "pro"}, "context": {"timezone": "Europe/Berlin"},
                    "messageId": "id-1", "integrations": {"All": true}}),
        )
        .await;
    assert_eq!((status, &body), (200, &json!({"success": true})));
    let ann = customer(&store, "Ann@shop.example").await;
    assert_eq!(ann.external_id.as_deref(), Some("u-1"));
    assert_eq!(ann.first_name.as_deref(), Some("Ann"));
    assert_eq!(ann.timezone.as_deref(), Some("Europe/Berlin"));
    assert_eq!(
        Value::Object(ann.attributes.clone()),
        json!({"plan": "pro"})
    );

    // track by userId; the client's clock is ten minutes fast, sentAt corrects it.
    let before = herald::clock::now_millis();
    let (status, _) = s
        .call(
            &key,
            "track",
            &json!({"userId": "u-1", "event": "Order Completed", "messageId": "m-1",
                    "properties": {"total": 30, "currency": "EUR"},
                    "timestamp": herald::clock::format_rfc3339(before + 600_000 - 5_000),
                    "sentAt": herald::clock::format_rfc3339(before + 600_000)}),
        )
        .await;
    assert_eq!(status, 200);
    let after = herald::clock::now_millis();
    let orders = store
        .interactions_of(ann.id, "Order Completed")
        .await
        .unwrap();
    assert_eq!(orders.len(), 1);
    assert_eq!(
        Value::Object(orders[0].1.clone()),
        json!({"total": 30, "currency": "EUR"})
    );
    let at = orders[0].0;
    assert!(
        at >= before - 5_000 && at <= after - 5_000,
        "corrected to receive time minus 5 s: {at} not in [{}, {}]",
        before - 5_000,
        after - 5_000
    );
    // A retried call adds nothing.
    let (status, _) = s
        .call(
            &key,
            "track",
            &json!({"userId": "u-1", "event": "Order Completed", "messageId": "m-1"}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(counts(&db).await, [1, 1, 0, 0]);

    for (route, body) in [
        (
            "page",
            json!({"userId": "u-1", "name": "Pricing", "properties": {"url": "/pricing"}, "messageId": "m-2"}),
        ),
        (
            "screen",
            json!({"userId": "u-1", "name": "Cart", "messageId": "m-3"}),
        ),
        (
            "group",
            json!({"userId": "u-1", "groupId": "acme", "traits": {"seats": 5}, "messageId": "m-4"}),
        ),
    ] {
        let (status, body) = s.call(&key, route, &body).await;
        assert_eq!(status, 200, "{route}: {body}");
    }
    assert_eq!(
        history(
            &store,
            "Ann@shop.example",
            &["page_view", "screen_view", "group"]
        )
        .await,
        [
            (
                "page_view".to_string(),
                json!({"url": "/pricing", "name": "Pricing"})
            ),
            ("screen_view".to_string(), json!({"name": "Cart"})),
            (
                "group".to_string(),
                json!({"group_id": "acme", "traits": {"seats": 5}})
            ),
        ]
    );

    // An anonymous visitor's events wait on a visitor until an identify links them.
    for (i, event) in ["Viewed Product", "Added To Cart"].iter().enumerate() {
        let (status, _) = s
            .call(
                &key,
                "track",
                &json!({"anonymousId": "anon-b", "event": event, "messageId": format!("b-{i}")}),
            )
            .await;
        assert_eq!(status, 200);
    }
    let (status, _) = s
        .call(
            &key,
            "identify",
            &json!({"anonymousId": "anon-b", "traits": {"lastName": "Berg", "source": "ad"}}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(counts(&db).await, [1, 4, 1, 2]);
    let (status, _) = s
        .call(
            &key,
            "identify",
            &json!({"anonymousId": "anon-b", "userId": "u-2",
                    "traits": {"email": "bo@shop.example", "firstName": "Bo"}}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(counts(&db).await, [2, 6, 0, 0], "moved, once");
    let bo = customer(&store, "bo@shop.example").await;
    assert_eq!(bo.external_id.as_deref(), Some("u-2"));
    assert_eq!(
        (bo.first_name.as_deref(), bo.last_name.as_deref()),
        (Some("Bo"), Some("Berg"))
    );
    assert_eq!(bo.attributes.get("source"), Some(&json!("ad")));
    assert_eq!(
        history(
            &store,
            "bo@shop.example",
            &["Viewed Product", "Added To Cart"]
        )
        .await
        .len(),
        2
    );
    // Later anonymous calls of that device are Bo's at once; retries of the old ones add nothing.
    let (status, _) = s
        .call(
            &key,
            "track",
            &json!({"anonymousId": "anon-b", "event": "Viewed Product", "messageId": "b-0"}),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = s
        .call(
            &key,
            "page",
            &json!({"anonymousId": "anon-b", "name": "Home", "messageId": "b-9"}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(counts(&db).await, [2, 7, 0, 0]);

    // alias: an anonymous id seen before sign-up becomes Ann's.
    let (status, _) = s
        .call(
            &key,
            "page",
            &json!({"anonymousId": "anon-c", "name": "Blog", "messageId": "c-1"}),
        )
        .await;
    assert_eq!(status, 200);
    let (status, body) = s
        .call(
            &key,
            "alias",
            &json!({"previousId": "anon-c", "userId": "u-1", "messageId": "c-2"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(counts(&db).await, [2, 8, 0, 0]);
    assert_eq!(
        history(&store, "Ann@shop.example", &["page_view"])
            .await
            .len(),
        2
    );

    // An anonymous id linked straight to a customer (no visitor in between)
    // is stamped with the time of the call, not 1970.
    let (status, _) = s
        .call(
            &key,
            "identify",
            &json!({"anonymousId": "anon-d", "userId": "u-1"}),
        )
        .await;
    assert_eq!(status, 200);
    let export = db.herald(&["customer", "export", "Ann@shop.example"]);
    let export: Value = serde_json::from_str(&stdout(&export)).unwrap();
    let linked = export["linked_ids"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["value"] == "anon-d")
        .unwrap_or_else(|| panic!("{export}"));
    assert!(linked["linked_at"].as_str().unwrap() >= "2026", "{linked}");

    // Never back to subscribed.
    for status_trait in ["unsubscribed", "subscribed"] {
        let (status, _) = s
            .call(
                &key,
                "identify",
                &json!({"userId": "u-2", "traits": {"status": status_trait}}),
            )
            .await;
        assert_eq!(status, 200);
    }
    assert_eq!(
        customer(&store, "bo@shop.example").await.status.as_str(),
        "unsubscribed"
    );

    // A conflict (Bo's email for another user) is refused and changes nothing.
    let (status, body) = s
        .call(
            &key,
            "identify",
            &json!({"userId": "u-3", "traits": {"email": "bo@shop.example", "plan": "x"}}),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "conflict");
    assert_eq!(body["error"]["field"], "traits.email");
    assert!(
        customer(&store, "bo@shop.example")
            .await
            .attributes
            .get("plan")
            .is_none()
    );

    // The export holds the ids linked to the person; erasure removes them.
    let export = db.herald(&["customer", "export", "bo@shop.example"]);
    assert!(export.status.success(), "{}", stderr(&export));
    let export: Value = serde_json::from_str(&stdout(&export)).unwrap();
    assert_eq!(export["linked_ids"][0]["kind"], "anonymous", "{export}");
    assert_eq!(export["linked_ids"][0]["value"], "anon-b", "{export}");
    // An erased person identified again is a customer, never mailable.
    let erased = db.herald(&["customer", "erase", "bo@shop.example", "--yes"]);
    assert!(erased.status.success(), "{}", stderr(&erased));
    assert_eq!(
        db.pairs("SELECT COUNT(*), NULL FROM identities WHERE value = 'anon-b'")
            .await[0]
            .0,
        0
    );
    let (status, _) = s
        .call(
            &key,
            "identify",
            &json!({"userId": "u-2", "traits": {"email": "bo@shop.example"}}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        db.pairs("SELECT COUNT(*), NULL FROM suppressions WHERE email = 'bo@shop.example'")
            .await[0]
            .0,
        1
    );

    // Refusals name the field and store nothing.
    let stored = counts(&db).await;
    for (key, route, body, status, code, field) in [
        (
            &key,
            "track",
            json!({"event": "x"}),
            400,
            "bad_request",
            Some("userId"),
        ),
        (
            &key,
            "track",
            json!({"userId": "u-1"}),
            400,
            "bad_request",
            Some("event"),
        ),
        (
            &key,
            "track",
            json!({"userId": "u-1", "event": "x", "properties": 3}),
            400,
            "bad_request",
            Some("properties"),
        ),
        (
            &key,
            "track",
            json!({"userId": "u-1", "event": "x", "timestamp": "yesterday"}),
            422,
            "unprocessable",
            Some("timestamp"),
        ),
        (
            &key,
            "identify",
            json!({"userId": "u-1", "traits": {"email": "not-an-email"}}),
            422,
            "unprocessable",
            Some("traits.email"),
        ),
        (
            &key,
            "page",
            json!({"type": "track", "userId": "u-1"}),
            400,
            "bad_request",
            Some("type"),
        ),
        (
            &key,
            "alias",
            json!({"userId": "u-1"}),
            400,
            "bad_request",
            Some("previousId"),
        ),
        (
            &reader,
            "track",
            json!({"userId": "u-1", "event": "x"}),
            403,
            "forbidden",
            None,
        ),
    ] {
        let (got, body) = s.call(key, route, &body).await;
        assert_eq!(got, status, "{route} {body}");
        assert_eq!(body["error"]["code"], code, "{body}");
        assert_eq!(body["error"]["field"].as_str(), field, "{body}");
    }
    let (status, _) = s
        .call(
            "hk_0123456789ab_00",
            "track",
            &json!({"userId": "u-1", "event": "x"}),
        )
        .await;
    assert_eq!(status, 401);
    let big = json!({"userId": "u-1", "event": "x", "properties": {"p": "x".repeat(33 * 1024)}});
    assert_eq!(s.call(&key, "track", &big).await.0, 413);
    assert_eq!(counts(&db).await, stored);
    s.stop();
}

both_backends!(
    segment_calls,
    segment_calls_become_customers_and_interactions
);

async fn a_batch_keeps_its_good_items_and_names_the_bad(db: TestDb) {
    let key = create_key(&db, "shop-web", "ingest");
    let s = Serve::start(&db);
    let batch = json!({
        "batch": [
            {"type": "identify", "userId": "u-1", "traits": {"email": "cy@shop.example"}, "messageId": "q-0"},
            {"type": "track", "userId": "u-1", "messageId": "q-1"},
            {"type": "track", "userId": "u-1", "event": "Signed Up", "messageId": "q-2",
             "timestamp": "2026-12-01T10:00:00Z"},
            {"type": "identify", "userId": "u-4", "traits": {"email": "nope"}},
            "not an object",
            {"type": "page", "anonymousId": "anon-q", "name": "Home", "messageId": "q-5"},
            {"type": "unknown", "userId": "u-1"}
        ],
        "sentAt": "2026-12-01T10:00:00Z",
        "writeKey": "ignored",
        "context": {"library": {"name": "test"}}
    });
    let (status, body) = s.call(&key, "batch", &batch).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["accepted"], 3, "{body}");
    let named: Vec<(u64, String, String)> = body["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["index"].as_u64().unwrap(),
                r["code"].as_str().unwrap().to_string(),
                r["field"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert_eq!(
        named,
        [
            (1, "bad_request".into(), "batch[1].event".into()),
            (3, "unprocessable".into(), "batch[3].traits.email".into()),
            (4, "bad_request".into(), "batch[4]".into()),
            (6, "bad_request".into(), "batch[6].type".into()),
        ]
    );
    assert!(
        body["rejected"][1]["message"]
            .as_str()
            .unwrap()
            .contains("nope")
    );
    assert_eq!(counts(&db).await, [1, 1, 1, 1]);
    // The batch-level sentAt corrected the item's timestamp: it was sent when it happened.
    let store = db.store().await;
    let cy = customer(&store, "cy@shop.example").await;
    let at = store.interactions_of(cy.id, "Signed Up").await.unwrap()[0].0;
    assert!((herald::clock::now_millis() - at).abs() < 60_000, "{at}");

    // The same batch again (a client's retry), plain and gzipped: nothing new.
    for gzip in [false, true] {
        let bytes = batch.to_string().into_bytes();
        let body = if gzip {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(&bytes).unwrap();
            e.finish().unwrap()
        } else {
            bytes
        };
        let (status, answer) = s.raw(&key, "batch", body, gzip).await;
        assert_eq!((status, &answer["accepted"]), (200, &json!(3)), "{answer}");
        assert_eq!(counts(&db).await, [1, 1, 1, 1]);
    }

    // An envelope that is not a batch stores nothing; nor does a batch over 500 KB.
    let (status, body) = s.call(&key, "batch", &json!({"items": []})).await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (400, Some("batch")),
        "{body}"
    );
    let items: Vec<Value> = (0..600)
        .map(|i| {
            json!({"type": "track", "userId": "u-1", "event": "x", "messageId": format!("big-{i}"),
                        "properties": {"pad": "y".repeat(900)}})
        })
        .collect();
    let (status, _) = s.call(&key, "batch", &json!({"batch": items})).await;
    assert_eq!(status, 413);
    assert_eq!(counts(&db).await, [1, 1, 1, 1]);

    // Three sends of 3 good and 4 bad items, counted by outcome.
    let scrape = s
        .client
        .get(s.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "herald_api_calls_total{outcome=\"stored\"} 9",
        "herald_api_calls_total{outcome=\"refused\"} 12",
        "herald_api_calls_total{outcome=\"unstored\"} 0",
    ] {
        assert!(scrape.lines().any(|l| l == line), "{line} not in {scrape}");
    }
    s.stop();
}

both_backends!(batches, a_batch_keeps_its_good_items_and_names_the_bad);

/// Two requests race to link one anonymous id to two different people, and
/// then two others to add a trait each to one person, many times over: on
/// PostgreSQL through two `herald serve` processes on one database, on SQLite
/// through one. Every time, the anonymous events end up with exactly one of
/// them, once, and both traits are kept.
async fn racing_links_move_an_anonymous_profile_once(db: TestDb) {
    let key = create_key(&db, "shop-web", "ingest");
    let servers = Servers::start(&db);
    let (first, other) = (&servers.first, servers.other());
    const ROUNDS: usize = 25;
    for round in 0..ROUNDS {
        let anon = format!("anon-{round}");
        let events: Vec<Value> = (0..3)
            .map(|i| {
                json!({"type": "track", "anonymousId": anon, "event": "Viewed",
                            "messageId": format!("r{round}-{i}")})
            })
            .collect();
        let (status, _) = first.call(&key, "batch", &json!({"batch": events})).await;
        assert_eq!(status, 200);
        let link = |who: &str| {
            json!({"anonymousId": anon, "userId": format!("{who}-{round}"),
                   "traits": {"email": format!("{who}-{round}@race.example")}})
        };
        let (a, b) = (link("ann"), link("bo"));
        let (x, y) = tokio::join!(
            first.call(&key, "identify", &a),
            other.call(&key, "identify", &b)
        );
        assert_eq!((x.0, y.0), (200, 200), "{x:?} {y:?}");
        // Two traits of one person at once: both are kept (no lost update).
        let trait_of =
            |name: &str| json!({"userId": format!("ann-{round}"), "traits": {name: round}});
        let (left, right) = (trait_of("left"), trait_of("right"));
        let (x, y) = tokio::join!(
            first.call(&key, "identify", &left),
            other.call(&key, "identify", &right)
        );
        assert_eq!((x.0, y.0), (200, 200), "{x:?} {y:?}");
    }
    let store = db.store().await;
    for round in 0..ROUNDS {
        let mut owners = Vec::new();
        for who in ["ann", "bo"] {
            let c = customer(&store, &format!("{who}-{round}@race.example")).await;
            let n = store.interactions_of(c.id, "Viewed").await.unwrap().len();
            if n > 0 {
                owners.push((who, n));
            }
        }
        assert_eq!(owners.len(), 1, "round {round}: {owners:?}");
        let ann = customer(&store, &format!("ann-{round}@race.example")).await;
        assert_eq!(
            (ann.attributes.get("left"), ann.attributes.get("right")),
            (Some(&json!(round)), Some(&json!(round))),
            "round {round}"
        );
        assert_eq!(owners[0].1, 3, "round {round}: {owners:?}");
    }
    assert_eq!(
        counts(&db).await,
        [2 * ROUNDS as i64, 3 * ROUNDS as i64, 0, 0]
    );
    assert_eq!(
        db.pairs(
            "SELECT COUNT(*), COUNT(DISTINCT customer_id) FROM identities WHERE kind = 'anonymous'"
        )
        .await[0],
        (ROUNDS as i64, Some(ROUNDS as i64))
    );
    servers.stop();
}

both_backends!(racing_links, racing_links_move_an_anonymous_profile_once);

/// Two anonymous profiles reach one new person at once, through two servers
/// on PostgreSQL: each identify names the same userId and email with its own
/// anonymousId. One customer results, holding both profiles' events and both
/// anonymous ids; no profile is left behind and no event is lost or doubled.
async fn two_profiles_reaching_one_new_person_merge_once(db: TestDb) {
    let key = create_key(&db, "shop-web", "ingest");
    let servers = Servers::start(&db);
    let (first, other) = (&servers.first, servers.other());
    const ROUNDS: usize = 20;
    for round in 0..ROUNDS {
        for side in ["a", "b"] {
            let events: Vec<Value> = (0..2)
                .map(|i| {
                    json!({"type": "track", "anonymousId": format!("anon-{side}-{round}"),
                           "event": "Viewed", "messageId": format!("m{side}{round}-{i}")})
                })
                .collect();
            let (status, _) = first.call(&key, "batch", &json!({"batch": events})).await;
            assert_eq!(status, 200);
        }
        let link = |side: &str| {
            json!({"anonymousId": format!("anon-{side}-{round}"), "userId": format!("u-{round}"),
                   "traits": {"email": format!("u-{round}@merge.example")}})
        };
        let (a, b) = (link("a"), link("b"));
        let (x, y) = tokio::join!(
            first.call(&key, "identify", &a),
            other.call(&key, "identify", &b)
        );
        assert_eq!((x.0, y.0), (200, 200), "{x:?} {y:?}");
    }
    let store = db.store().await;
    for round in 0..ROUNDS {
        let c = customer(&store, &format!("u-{round}@merge.example")).await;
        let n = store.interactions_of(c.id, "Viewed").await.unwrap().len();
        assert_eq!(n, 4, "round {round}");
    }
    assert_eq!(
        db.pairs(
            "SELECT COUNT(*), COUNT(DISTINCT customer_id) FROM identities WHERE kind = 'anonymous'"
        )
        .await[0],
        (2 * ROUNDS as i64, Some(ROUNDS as i64))
    );
    assert_eq!(
        db.pairs("SELECT COUNT(*), NULL FROM visitors").await[0].0,
        0,
        "an anonymous profile was left behind"
    );
    assert_eq!(
        db.pairs("SELECT COUNT(*), NULL FROM customers WHERE email LIKE '%@merge.example'")
            .await[0]
            .0,
        ROUNDS as i64
    );
    servers.stop();
}

both_backends!(
    two_profiles_merge,
    two_profiles_reaching_one_new_person_merge_once
);

/// Segment's own Python library (segment-analytics-python, from PyPI),
/// pointed at Herald by its `host` setting and nothing else, plain and
/// gzipped.
async fn segments_python_library_sends_unchanged(db: TestDb) {
    let have = std::process::Command::new("python3")
        .args(["-c", "import segment.analytics"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !have {
        assert!(
            !in_ci(),
            "segment-analytics-python is missing in CI (pip install segment-analytics-python)"
        );
        eprintln!("skipped: pip install segment-analytics-python to run this test");
        return;
    }
    let key = create_key(&db, "python-backend", "ingest");
    let s = Serve::start(&db);
    let script = r#"
import sys
from segment import analytics
analytics.write_key = sys.argv[1]
analytics.host = sys.argv[2]
analytics.gzip = sys.argv[3] == "gzip"
failures = []
analytics.on_error = lambda error, items: failures.append(str(error))
suffix = sys.argv[3]
analytics.identify("py-" + suffix, {"email": "py-" + suffix + "@shop.example", "firstName": "Py", "plan": "pro"})
analytics.track("py-" + suffix, "Order Completed", {"total": 12.5}, message_id="py-order-" + suffix)
analytics.page(anonymous_id="anon-py-" + suffix, name="Home", properties={"url": "/"})
analytics.alias("anon-py-" + suffix, "py-" + suffix)
analytics.group("py-" + suffix, "acme", {"seats": 3})
analytics.screen("py-" + suffix, name="Cart")
analytics.flush()
analytics.shutdown()
if failures:
    print("\n".join(failures), file=sys.stderr)
    sys.exit(1)
"#;
    let store = db.store().await;
    for mode in ["plain", "gzip"] {
        let out = std::process::Command::new("python3")
            .args(["-c", script, &key, &s.url(""), mode])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
        let email = format!("py-{mode}@shop.example");
        let c = customer(&store, &email).await;
        assert_eq!(
            c.external_id.as_deref(),
            Some(format!("py-{mode}").as_str())
        );
        assert_eq!(c.first_name.as_deref(), Some("Py"));
        let kinds = history(
            &store,
            &email,
            &["Order Completed", "page_view", "group", "screen_view"],
        )
        .await;
        let names: Vec<&str> = kinds.iter().map(|(k, _)| k.as_str()).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(
            sorted,
            ["Order Completed", "group", "page_view", "screen_view"],
            "{kinds:?}"
        );
        assert_eq!(
            kinds
                .iter()
                .find(|(k, _)| k == "Order Completed")
                .unwrap()
                .1,
            json!({"total": 12.5})
        );
    }
    // The library's own messageIds make its retries harmless: send the same again.
    assert_eq!(counts(&db).await, [2, 8, 0, 0]);
    s.stop();
}

both_backends!(python_library, segments_python_library_sends_unchanged);
