//! `/v1/customers` over real HTTP on both backends: the 360° view by id and
//! by email, interactions paged by cursor, a patch under the import's rule,
//! the GDPR export and erasure, each route's scope; after every refusal, a
//! count of what is stored shows that nothing was written. Customers come
//! from the real `herald import`, messages from a real run against a real
//! SMTP server.

mod common;

use std::collections::HashSet;

use common::api::{Answer, Auth, Server, create_key, get, send};
use common::{TestDb, count, run_hello, setup_hello, stderr};
use herald::clock::{format_rfc3339, parse_rfc3339};
use herald::store::interactions::InteractionWrite;
use reqwest::Method;
use serde_json::{Map, Value, json};

const ADA: &str = "ada+news@example.com";
/// Ada's address as a path segment: `+` and `@` percent-encoded, the domain
/// in capitals (an address's domain is compared in lower case).
const ADA_ENCODED: &str = "ada%2Bnews%40Example.COM";
/// When Ada's imported page views start.
const T0: i64 = 1_790_000_000_000;

/// What a refused request must leave as it was: customers (and when each
/// was last updated), interactions, deliveries, entries, suppressions.
async fn stored(db: &TestDb) -> Vec<i64> {
    let mut all = Vec::new();
    for sql in [
        "SELECT COUNT(*) FROM customers",
        "SELECT CAST(COALESCE(SUM(updated_at), 0) AS BIGINT) FROM customers",
        "SELECT COUNT(*) FROM interactions",
        "SELECT COUNT(*) FROM deliveries",
        "SELECT COUNT(*) FROM entries",
        "SELECT COUNT(*) FROM suppressions",
    ] {
        all.push(count(db, sql).await);
    }
    all
}

/// Every page of `path` (a query string included), following `next_cursor`:
/// the interactions' (time, id, kind), in the order given.
async fn every_page(s: &Server, path: &str, auth: Auth<'_>) -> (Vec<(i64, i64, String)>, usize) {
    let mut seen = Vec::new();
    let mut pages = 0;
    let mut cursor: Option<String> = None;
    loop {
        let url = match &cursor {
            Some(c) => format!("{path}&cursor={c}"),
            None => path.to_string(),
        };
        let a = get(s, &url, auth).await;
        assert_eq!(a.status, 200, "{url}: {}", a.body);
        pages += 1;
        for i in a.body["interactions"].as_array().unwrap() {
            let at = parse_rfc3339(i["occurred_at"].as_str().unwrap()).unwrap();
            let kind = i["kind"].as_str().unwrap().to_string();
            seen.push((at, i["id"].as_i64().unwrap(), kind));
        }
        match a.body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    (seen, pages)
}

async fn customers_over_http(db: TestDb) {
    setup_hello(&db);
    std::fs::write(
        db.path("customers.csv"),
        format!("email,first_name,country,status\n{ADA},Ada,UK,subscribed\nbob@example.com,Bob,DE,unsubscribed\n"),
    )
    .unwrap();
    let imported = db.herald(&["import", "customers", "customers.csv"]);
    assert!(imported.status.success(), "{}", stderr(&imported));
    assert_eq!(run_hello(&db).await, vec![ADA.to_string()]);
    let store = db.store().await;
    let ada = store.customer_by_email(ADA).await.unwrap().unwrap();
    let delivery = count(&db, "SELECT MIN(id) FROM deliveries").await;
    // 25 page views, a purchase, and two opens and a click of the message.
    let event = |kind: &str, at: i64, delivery_id: Option<i64>| InteractionWrite {
        customer_id: ada.id,
        kind: kind.to_string(),
        occurred_at: at,
        campaign: delivery_id.map(|_| "t".to_string()),
        step: delivery_id.map(|_| "hello".to_string()),
        delivery_id,
        external_id: None,
        data: Map::new(),
    };
    let mut events: Vec<InteractionWrite> = (0..25)
        .map(|i| event("page_view", T0 + i * 1000, None))
        .collect();
    let mut purchase = event("purchase", T0 + 30_000, None);
    purchase.data.insert("product".into(), json!("Blue Kettle"));
    events.push(purchase);
    events.push(event("email_opened", T0 + 40_000, Some(delivery)));
    events.push(event("email_opened", T0 + 41_000, Some(delivery)));
    events.push(event("email_clicked", T0 + 42_000, Some(delivery)));
    store.write_interactions(&events).await.unwrap();
    let held = count(
        &db,
        &format!(
            "SELECT COUNT(*) FROM interactions WHERE customer_id = {}",
            ada.id
        ),
    )
    .await;
    assert_eq!(held, 30, "the run's email_sent and the 29 above");

    let admin = create_key(&db, "ops", "admin");
    let read = create_key(&db, "reporting", "read");
    let ingest = create_key(&db, "shop-web", "ingest");
    let s = Server::start(store.clone(), "1000/s").await;
    let ada_path = format!("/v1/customers/{ADA_ENCODED}");

    // The view, by id and by email (encoded or not): the same customer.
    let view = get(
        &s,
        &format!("/v1/customers/{}", ada.id),
        Auth::Bearer(&read),
    )
    .await;
    assert_eq!(view.status, 200, "{}", view.body);
    for path in [ada_path.clone(), format!("/v1/customers/{ADA}")] {
        let again = get(&s, &path, Auth::Basic(&read)).await;
        assert_eq!(again.body, view.body, "{path}");
    }
    let v = &view.body;
    assert_eq!(v["customer"]["id"], ada.id);
    assert_eq!(v["customer"]["email"], ADA);
    assert_eq!(v["customer"]["first_name"], "Ada");
    assert_eq!(v["customer"]["status"], "subscribed");
    assert_eq!(v["customer"]["attributes"]["country"], "UK");
    assert!(parse_rfc3339(v["customer"]["created_at"].as_str().unwrap()).is_some());
    assert_eq!(v["suppressed"], false);
    assert_eq!(v["suppressions"], json!([]));
    let latest = v["latest"].as_array().unwrap();
    let of_kind = |k: &str| latest.iter().filter(|i| i["kind"] == k).count();
    assert_eq!(of_kind("page_view"), 5, "the latest five of a kind");
    assert_eq!(of_kind("purchase"), 1);
    assert_eq!(of_kind("email_sent"), 1);
    let message = &v["messages"][0];
    assert_eq!(v["messages"].as_array().unwrap().len(), 1);
    assert_eq!(
        (&message["campaign"], &message["step"], &message["status"]),
        (&json!("t"), &json!("hello"), &json!("sent"))
    );
    assert_eq!(
        (&message["opens"], &message["clicks"]),
        (&json!(2), &json!(1))
    );
    assert_eq!(
        parse_rfc3339(message["first_opened_at"].as_str().unwrap()),
        Some(T0 + 40_000)
    );

    // Nobody: unknown address, unknown id, neither an id nor an address.
    for path in [
        "/v1/customers/nobody%40example.com",
        "/v1/customers/99999999",
        "/v1/customers/not-an-address",
        "/v1/customers/%FF%FE",
        "/v1/customers/nobody%40example.com/interactions",
        "/v1/customers/nobody%40example.com/export",
    ] {
        get(&s, path, Auth::Bearer(&admin))
            .await
            .error(404, "not_found", None);
    }

    // Scopes: no key 401; ingest keys neither read nor write customers;
    // read keys read, but neither patch, export nor erase.
    let before = stored(&db).await;
    let patch_body = json!({"first_name": "Mallory"});
    let routes = [
        (Method::GET, ada_path.clone(), None),
        (Method::GET, format!("{ada_path}/interactions"), None),
        (Method::PATCH, ada_path.clone(), Some(&patch_body)),
        (Method::GET, format!("{ada_path}/export"), None),
        (Method::DELETE, ada_path.clone(), None),
    ];
    for (method, path, body) in &routes {
        let a = send(&s, method.clone(), path, Auth::None, *body).await;
        a.error(401, "unauthorized", None);
        let a = send(&s, method.clone(), path, Auth::Basic(&ingest), *body).await;
        a.error(403, "forbidden", None);
        let a = send(&s, method.clone(), path, Auth::Bearer(&read), *body).await;
        if *method == Method::GET && !path.ends_with("/export") {
            assert_eq!(a.status, 200, "{method} {path}: {}", a.body);
        } else {
            let m = a.error(403, "forbidden", None);
            assert!(m.contains("needs admin"), "{m}");
        }
    }
    assert_eq!(stored(&db).await, before, "a refused request wrote");

    // Interactions, page by page: each once, newest first, across pages.
    let all = format!("{ada_path}/interactions?limit=7");
    let (seen, pages) = every_page(&s, &all, Auth::Bearer(&read)).await;
    assert_eq!((seen.len() as i64, pages), (held, 5));
    assert_eq!(
        seen.iter().map(|s| s.1).collect::<HashSet<_>>().len(),
        seen.len()
    );
    let mut newest_first = seen.clone();
    newest_first.sort_by_key(|s| std::cmp::Reverse((s.0, s.1)));
    assert_eq!(seen, newest_first);
    let since = format_rfc3339(T0 + 20_000);
    let views = format!("{ada_path}/interactions?kind=page_view&since={since}&limit=2");
    let (seen, pages) = every_page(&s, &views, Auth::Bearer(&read)).await;
    assert_eq!((seen.len(), pages), (5, 3));
    assert!(
        seen.iter()
            .all(|s| s.2 == "page_view" && s.0 >= T0 + 20_000)
    );
    // What cannot be read is named; a forged cursor among them.
    for (query, field) in [
        ("cursor=forged!", "cursor"),
        ("cursor=djIuMS4y", "cursor"), // "v2.1.2": not a cursor of ours
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("since=yesterday", "since"),
        ("colour=red", "colour"),
    ] {
        let a = get(
            &s,
            &format!("{ada_path}/interactions?{query}"),
            Auth::Bearer(&read),
        )
        .await;
        let m = a.error(400, "bad_request", Some(field));
        assert!(m.starts_with(&format!("{field}:")), "{m}");
    }

    // Patch: every refusal names its field and writes nothing.
    let patch = |who: &str, body: Value| {
        let (s, path, admin) = (&s, format!("/v1/customers/{who}"), admin.clone());
        async move { send(s, Method::PATCH, &path, Auth::Bearer(&admin), Some(&body)).await }
    };
    let before = stored(&db).await;
    for (body, status, code, field) in [
        (json!({"nickname": "Ada"}), 400, "bad_request", "nickname"),
        (json!({"status": "gone"}), 400, "bad_request", "status"),
        (
            json!({"status": "Subscribed"}),
            400,
            "bad_request",
            "status",
        ),
        (json!({"first_name": 7}), 400, "bad_request", "first_name"),
        (json!({"attributes": [1]}), 400, "bad_request", "attributes"),
        (
            json!({"timezone": "Mars/Olympus"}),
            422,
            "unprocessable",
            "timezone",
        ),
        (
            json!({"last_name": "a\u{0}b"}),
            422,
            "unprocessable",
            "last_name",
        ),
        (
            json!({"attributes": {"address": {"city": "Lon\u{0}don"}}}),
            422,
            "unprocessable",
            "attributes.address.city",
        ),
    ] {
        let a = patch(ADA_ENCODED, body.clone()).await;
        let m = a.error(status, code, Some(field));
        assert!(m.starts_with(&format!("{field}:")), "{body}: {m}");
    }
    patch("nobody%40example.com", json!({"first_name": "X"}))
        .await
        .error(404, "not_found", None);
    let plain = s
        .client
        .patch(s.url(&ada_path))
        .bearer_auth(&admin)
        .header("content-type", "text/plain")
        .body(r#"{"first_name": "X"}"#)
        .send()
        .await
        .unwrap();
    Answer::of(plain)
        .await
        .error(415, "unsupported_media_type", None);
    let huge = json!({"attributes": {"notes": "x".repeat(40 * 1024)}});
    patch(ADA_ENCODED, huge)
        .await
        .error(413, "payload_too_large", None);
    assert_eq!(stored(&db).await, before, "a refused patch wrote");

    // Accepted: fields set, attributes merged key by key.
    let a = patch(
        ADA_ENCODED,
        json!({"first_name": "Augusta", "timezone": "Europe/London", "attributes": {"plan": "pro"}}),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body["changed"], true);
    assert_eq!(a.body["resubscribe_refused"], false);
    assert!(a.body.get("note").is_none(), "{}", a.body);
    let c = &a.body["customer"];
    assert_eq!(c["first_name"], "Augusta");
    assert_eq!(c["timezone"], "Europe/London");
    assert_eq!(c["attributes"], json!({"country": "UK", "plan": "pro"}));
    let updated = c["updated_at"].clone();
    let same = patch(&ada.id.to_string(), json!({"first_name": "Augusta"})).await;
    assert_eq!(same.body["changed"], false, "{}", same.body);
    assert_eq!(same.body["customer"]["updated_at"], updated);
    // Never back to subscribed: refused and said so; the rest is applied.
    let a = patch(
        "bob%40example.com",
        json!({"status": "subscribed", "attributes": {"vip": true}}),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body["resubscribe_refused"], true);
    assert_eq!(a.body["customer"]["status"], "unsubscribed");
    assert_eq!(a.body["customer"]["attributes"]["vip"], true);
    let note = a.body["note"].as_str().unwrap();
    assert!(note.contains("stays unsubscribed"), "{note}");
    let a = patch(ADA_ENCODED, json!({"status": "unsubscribed"})).await;
    assert_eq!(a.body["customer"]["status"], "unsubscribed", "{}", a.body);
    let a = patch(ADA_ENCODED, json!({"status": "subscribed"})).await;
    assert_eq!(a.body["resubscribe_refused"], true, "{}", a.body);
    assert_eq!(a.body["changed"], false);

    // Export: everything held, as one document.
    let a = get(&s, &format!("{ada_path}/export"), Auth::Bearer(&admin)).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body["format"], "herald.customer-export.v1");
    assert_eq!(a.body["email"], ADA);
    assert_eq!(a.body["customer"]["id"], ada.id);
    assert_eq!(a.body["customer"]["first_name"], "Augusta");
    let ids: HashSet<i64> = a.body["interactions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids.len() as i64, held);
    assert_eq!(a.body["messages"].as_array().unwrap().len(), 1);
    assert_eq!(a.body["messages"][0]["opens"], 2);
    assert_eq!(a.body["entries"].as_array().unwrap().len(), 1);

    // Erase: a bad flag is named and erases nothing.
    let before = stored(&db).await;
    for query in ["forget_suppression=maybe", "forget=true"] {
        let a = send(
            &s,
            Method::DELETE,
            &format!("{ada_path}?{query}"),
            Auth::Bearer(&admin),
            None,
        )
        .await;
        assert_eq!(a.status, 400, "{query}: {}", a.body);
    }
    assert_eq!(stored(&db).await, before, "a refused erasure wrote");
    let a = send(&s, Method::DELETE, &ada_path, Auth::Bearer(&admin), None).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body["customer_id"], ada.id);
    assert_eq!(a.body["interactions"], held);
    assert_eq!(
        (&a.body["messages"], &a.body["entries"]),
        (&json!(1), &json!(1))
    );
    assert_eq!(a.body["mark_kept"], true);
    for table in ["customers WHERE id", "interactions WHERE customer_id"] {
        let left = count(&db, &format!("SELECT COUNT(*) FROM {table} = {}", ada.id)).await;
        assert_eq!(left, 0, "{table}");
    }
    let left = format!("SELECT COUNT(*) FROM deliveries WHERE id = {delivery}");
    assert_eq!(count(&db, &left).await, 0);
    get(&s, &ada_path, Auth::Bearer(&read))
        .await
        .error(404, "not_found", None);
    let m = send(&s, Method::DELETE, &ada_path, Auth::Bearer(&admin), None)
        .await
        .error(410, "gone", None)
        .to_string();
    assert!(m.contains("was erased"), "{m}");
    let left = get(&s, &format!("{ada_path}/export"), Auth::Bearer(&admin)).await;
    assert_eq!(left.status, 200, "{}", left.body);
    assert_eq!(left.body["customer"], Value::Null);
    assert_eq!(left.body["interactions"], json!([]));
    assert_eq!(left.body["suppressions"][0]["hashed"], true);

    // Imported again, the address is suppressed at once and never mailed.
    std::fs::write(
        db.path("back.csv"),
        format!("email,first_name,country\n{ADA},Ada,UK\n"),
    )
    .unwrap();
    let back = db.herald(&["import", "customers", "back.csv"]);
    assert!(back.status.success(), "{}", stderr(&back));
    let v = get(&s, &ada_path, Auth::Bearer(&read)).await;
    assert_eq!(v.status, 200, "{}", v.body);
    assert_eq!(v.body["suppressed"], true);
    assert_ne!(v.body["customer"]["id"], ada.id, "a new customer");
    assert_eq!(run_hello(&db).await, Vec::<String>::new());

    // forget_suppression=true: nothing kept, not even the mark.
    let a = send(
        &s,
        Method::DELETE,
        &format!("{ada_path}?forget_suppression=true"),
        Auth::Basic(&admin),
        None,
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body["mark_kept"], false);
    assert!(a.body["suppressions"].as_i64().unwrap() >= 2, "{}", a.body);
    get(&s, &format!("{ada_path}/export"), Auth::Bearer(&admin))
        .await
        .error(404, "not_found", None);
    s.stop().await;
}
both_backends!(customers, customers_over_http);
