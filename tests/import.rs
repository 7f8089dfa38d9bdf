//! `herald import` end to end: the real binary against a real SQLite file and a
//! real PostgreSQL database.

mod common;

use std::fmt::Write as _;

use common::{TestDb, stderr, stdout};
use herald::customer::CustomerStatus;
use serde_json::json;

/// 10,000 customers, three of them broken in the ways the issue names.
fn customers_csv() -> (String, Vec<(u64, &'static str)>) {
    let mut csv = String::from(
        "email,first_name,last_name,timezone,country,lifetime_value,vip,zip,address.city\n",
    );
    let mut bad = Vec::new();
    for i in 0..10_000u64 {
        let line = i + 2; // header is line 1
        match i {
            1234 => {
                bad.push((line, "invalid email"));
                writeln!(csv, "not-an-email,Bad,Row,UTC,DE,1,false,1,Berlin").unwrap();
            }
            5000 => {
                bad.push((line, "8 fields, expected 9"));
                writeln!(csv, "short{i}@Example.com,Short,Row,UTC,DE,1,false,1").unwrap();
            }
            9000 => {
                bad.push((line, "unknown time zone"));
                writeln!(
                    csv,
                    "tz{i}@example.com,Bad,Zone,Mars/Olympus,DE,1,false,1,Berlin"
                )
                .unwrap();
            }
            _ => {
                writeln!(
                    csv,
                    "  user{i}@Example.COM ,First{i},Last{i},Europe/Berlin,{},{}.5,{},0{i},City {i}",
                    if i % 2 == 0 { "DE" } else { "US" },
                    i,
                    i % 3 == 0
                )
                .unwrap();
            }
        }
    }
    (csv, bad)
}

async fn csv_import_reports_bad_rows_and_is_idempotent(db: TestDb) {
    let (csv, bad) = customers_csv();
    let file = db.path("customers.csv");
    std::fs::write(&file, csv).unwrap();
    let out = db.herald(&["import", "customers", "customers.csv"]);
    assert_eq!(out.status.code(), Some(3), "stderr: {}", stderr(&out));
    let err = stderr(&out);
    let reported: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("customers.csv:"))
        .collect();
    assert_eq!(reported.len(), 3, "{err}");
    for ((line, reason), text) in bad.iter().zip(&reported) {
        assert!(
            text.starts_with(&format!("customers.csv:{line}: ")),
            "{text}"
        );
        assert!(text.contains(reason), "{text} should mention {reason}");
    }
    assert!(
        stdout(&out).contains("9997 new, 0 updated, 0 unchanged, 3 rejected"),
        "{}",
        stdout(&out)
    );

    let store = db.store().await;
    assert_eq!(store.table_counts().await.unwrap().customers, 9_997);
    let c = store
        .customer_by_email("user42@example.com")
        .await
        .unwrap()
        .expect("normalised email stored");
    assert_eq!(c.first_name.as_deref(), Some("First42"));
    assert_eq!(c.timezone.as_deref(), Some("Europe/Berlin"));
    assert_eq!(c.status, CustomerStatus::Subscribed);
    assert_eq!(
        serde_json::Value::Object(c.attributes.clone()),
        json!({"country": "DE", "lifetime_value": 42.5, "vip": true, "zip": "042", "address": {"city": "City 42"}})
    );

    // The same file again changes nothing, not even updated_at.
    let before = snapshot(&store).await;
    let again = db.herald(&["import", "customers", "customers.csv"]);
    assert_eq!(again.status.code(), Some(3));
    assert!(
        stdout(&again).contains("0 new, 0 updated, 9997 unchanged, 3 rejected"),
        "{}",
        stdout(&again)
    );
    assert_eq!(snapshot(&store).await, before);
    store.close().await;
}
both_backends!(csv_import, csv_import_reports_bad_rows_and_is_idempotent);

/// Every customer's full row, ordered, for before/after comparisons.
async fn snapshot(store: &herald::store::Store) -> Vec<String> {
    let mut rows = Vec::new();
    for i in (0..10_000).step_by(97) {
        if let Some(c) = store
            .customer_by_email(&format!("user{i}@example.com"))
            .await
            .unwrap()
        {
            rows.push(format!("{c:?}"));
        }
    }
    assert!(rows.len() > 90);
    rows
}

async fn upsert_merges_and_never_resubscribes(db: TestDb) {
    std::fs::write(
        db.path("a.csv"),
        "email,external_id,first_name,status,plan,score\n\
         ann@shop.example,A1,Ann,unsubscribed,pro,3\n\
         bob@shop.example,B1,Bob,,free,1\n",
    )
    .unwrap();
    assert!(
        db.herald(&["import", "customers", "a.csv"])
            .status
            .success()
    );
    // A later sync: Ann "subscribed" again in the CRM export, Bob upgrades, a new
    // row tries to take Ann's external id, and Bob appears twice (last wins).
    std::fs::write(
        db.path("b.jsonl"),
        concat!(
            r#"{"email": "ann@shop.example", "status": "subscribed", "attributes": {"score": 4}}"#,
            "\n",
            r#"{"email": "bob@shop.example", "plan": "pro", "tags": ["x", "y"]}"#,
            "\n",
            "\n",
            r#"{"email": "eve@shop.example", "external_id": "A1"}"#,
            "\n",
            r#"{"email": "bob@shop.example", "plan": "enterprise"}"#,
            "\n",
            r#"{"email": "broken@shop.example", "first_name": 7}"#,
            "\n",
            "not json\n",
        ),
    )
    .unwrap();
    let out = db.herald(&["import", "customers", "b.jsonl"]);
    assert_eq!(out.status.code(), Some(3));
    let err = stderr(&out);
    assert!(
        err.contains("b.jsonl:4: external_id \"A1\" already belongs to ann@shop.example"),
        "{err}"
    );
    assert!(
        err.contains("b.jsonl:6: first_name must be a string, found a number"),
        "{err}"
    );
    assert!(err.contains("b.jsonl:7: invalid JSON"), "{err}");

    let store = db.store().await;
    let ann = store
        .customer_by_email("ann@shop.example")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        ann.status,
        CustomerStatus::Unsubscribed,
        "an import must not resubscribe"
    );
    assert_eq!(
        serde_json::Value::Object(ann.attributes),
        json!({"plan": "pro", "score": 4})
    );
    let bob = store
        .customer_by_email("bob@shop.example")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        serde_json::Value::Object(bob.attributes),
        json!({"plan": "enterprise", "score": 1, "tags": ["x", "y"]})
    );
    assert_eq!(bob.external_id.as_deref(), Some("B1"));
    assert!(
        store
            .customer_by_email("eve@shop.example")
            .await
            .unwrap()
            .is_none()
    );
    store.close().await;
}
both_backends!(upsert_merge, upsert_merges_and_never_resubscribes);

async fn interactions_import(db: TestDb) {
    std::fs::write(
        db.path("c.csv"),
        "email,external_id\nann@shop.example,A1\nbob@shop.example,\n",
    )
    .unwrap();
    assert!(
        db.herald(&["import", "customers", "c.csv"])
            .status
            .success()
    );
    std::fs::write(
        db.path("events.jsonl"),
        concat!(
            r#"{"email": "ann@SHOP.Example", "kind": "purchase", "occurred_at": "2026-10-01T10:00:00Z", "data": {"amount": 20.5, "product": "Shoes"}, "id": "ord-1"}"#, "\n",
            r#"{"external_id": "A1", "kind": "page_view", "occurred_at": "2026-10-02T10:00:00+02:00"}"#, "\n",
            r#"{"email": "carl@shop.example", "kind": "purchase", "occurred_at": "2026-10-01T10:00:00Z"}"#, "\n",
            r#"{"email": "bob@shop.example", "kind": "purchase", "occurred_at": "last tuesday"}"#, "\n",
            r#"{"email": "bob@shop.example", "occurred_at": "2026-10-01T10:00:00Z"}"#, "\n",
            r#"{"email": "bob@shop.example", "kind": "support_ticket", "occurred_at": "2026-10-03T00:00:00Z", "data": {"topic": "returns"}}"#, "\n",
        ),
    )
    .unwrap();
    let out = db.herald(&["import", "interactions", "events.jsonl"]);
    assert_eq!(out.status.code(), Some(3));
    let err = stderr(&out);
    assert!(
        err.contains("events.jsonl:3: unknown customer (email carl@shop.example)"),
        "{err}"
    );
    assert!(
        err.contains("events.jsonl:4: bad timestamp \"last tuesday\" in occurred_at"),
        "{err}"
    );
    assert!(err.contains("events.jsonl:5: missing kind"), "{err}");
    assert!(
        stdout(&out).contains("3 new, 0 updated, 0 unchanged, 3 rejected"),
        "{}{err}",
        stdout(&out)
    );

    let store = db.store().await;
    let ann = store
        .customer_by_email("ann@shop.example")
        .await
        .unwrap()
        .unwrap();
    let purchases = store.interactions_of(ann.id, "purchase").await.unwrap();
    assert_eq!(purchases.len(), 1);
    assert_eq!(purchases[0].0, 1_790_848_800_000); // 2026-10-01T10:00:00Z
    assert_eq!(
        serde_json::Value::Object(purchases[0].1.clone()),
        json!({"amount": 20.5, "product": "Shoes"})
    );
    assert_eq!(
        store.interactions_of(ann.id, "page_view").await.unwrap()[0].0,
        1_790_928_000_000
    );

    // Rows with an id are imported once; rows without one are new events each time.
    let again = db.herald(&["import", "interactions", "events.jsonl"]);
    assert!(
        stdout(&again).contains("2 new, 0 updated, 1 unchanged, 3 rejected"),
        "{}",
        stdout(&again)
    );
    assert_eq!(
        store
            .interactions_of(ann.id, "purchase")
            .await
            .unwrap()
            .len(),
        1
    );
    store.close().await;
}
both_backends!(interactions, interactions_import);

async fn header_problems_stop_before_any_write(db: TestDb) {
    std::fs::write(db.path("h.csv"), "mail,first_name\na@x.com,Ann\n").unwrap();
    let out = db.herald(&["import", "customers", "h.csv"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out)
            .contains("h.csv:1: the header row has no email column (columns: mail, first_name)"),
        "{}",
        stderr(&out)
    );
    std::fs::write(db.path("d.csv"), "email,plan,Plan\na@x.com,a,b\n").unwrap();
    assert!(
        stderr(&db.herald(&["import", "customers", "d.csv"]))
            .contains("column \"Plan\" appears twice")
    );
    let out = db.herald(&["import", "customers", "missing.csv"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("cannot read missing.csv"),
        "{}",
        stderr(&out)
    );
    std::fs::write(db.path("x.txt"), "email\n").unwrap();
    assert!(
        stderr(&db.herald(&["import", "customers", "x.txt"]))
            .contains("use --format csv or --format jsonl")
    );
    let store = db.store().await;
    assert_eq!(store.table_counts().await.unwrap().customers, 0);
    store.close().await;
}
both_backends!(header_problems, header_problems_stop_before_any_write);

/// A NUL byte (which PostgreSQL's text and jsonb cannot hold) rejects its row
/// by line, like any bad row, and the rest of its batch is kept; a file that
/// opens with a byte order mark reads its first line as any other, in CSV and
/// JSON Lines.
async fn nul_bytes_and_byte_order_marks(db: TestDb) {
    let mut csv = String::from("\u{feff}email,first_name,note\n");
    let mut nul_lines = Vec::new();
    for i in 0..3_000u64 {
        match i {
            10 => writeln!(csv, "n{i}@example.com,Nu\0ll,x").unwrap(),
            1500 => writeln!(csv, "n{i}@example.com,Ok,has \0 inside").unwrap(),
            _ => {
                writeln!(csv, "u{i}@example.com,User{i},n").unwrap();
                continue;
            }
        }
        nul_lines.push(i + 2);
    }
    std::fs::write(db.path("c.csv"), csv).unwrap();
    let out = db.herald(&["import", "customers", "c.csv"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let err = stderr(&out);
    let reported: Vec<&str> = err.lines().filter(|l| l.starts_with("c.csv:")).collect();
    assert_eq!(reported.len(), 2, "{err}");
    assert!(
        reported[0].starts_with(&format!(
            "c.csv:{}: first_name contains a NUL",
            nul_lines[0]
        )),
        "{err}"
    );
    assert!(
        reported[1].starts_with(&format!("c.csv:{}: note contains a NUL", nul_lines[1])),
        "{err}"
    );
    let store = db.store().await;
    assert_eq!(store.table_counts().await.unwrap().customers, 2_998);
    assert!(
        store
            .customer_by_email("u0@example.com")
            .await
            .unwrap()
            .is_some()
    );

    let jsonl = format!(
        "\u{feff}{}\n{}\n{}\n",
        json!({"email": "u1@example.com", "kind": "purchase", "occurred_at": "2026-01-02T03:04:05Z"}),
        json!({"email": "u2@example.com", "kind": "purchase", "occurred_at": "2026-01-02T03:04:05Z", "data": {"sku": ["a", "b\u{0}"]}}),
        json!({"email": "u3@example.com", "kind": "view", "occurred_at": "2026-01-02T03:04:05Z"}),
    );
    std::fs::write(db.path("i.jsonl"), jsonl).unwrap();
    let out = db.herald(&["import", "interactions", "i.jsonl"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("i.jsonl:2: data.sku.1 contains a NUL"),
        "{err}"
    );
    assert!(!err.contains("i.jsonl:1:"), "{err}");
    assert!(stdout(&out).contains("2 new"), "{}", stdout(&out));

    let jsonl = format!("\u{feff}{}\n", json!({"email": "bom@example.com"}));
    std::fs::write(db.path("c.jsonl"), jsonl).unwrap();
    let out = db.herald(&["import", "customers", "c.jsonl"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        store
            .customer_by_email("bom@example.com")
            .await
            .unwrap()
            .is_some()
    );
    store.close().await;
}
both_backends!(nul_and_bom, nul_bytes_and_byte_order_marks);
