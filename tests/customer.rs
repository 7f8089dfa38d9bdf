//! `herald customer show|export|erase` with the real binary, and the profile
//! library the `/v1/customers` routes call: the 360° view, interactions paged
//! by cursor, a patch under the import's rule, export and erasure, on both
//! backends. An erased address imported again is never mailed.

mod common;

use std::collections::HashSet;

use common::{TestDb, count, run_hello, setup_hello, stderr, stdout};
use herald::customer::{CustomerRef, CustomerStatus, Email};
use herald::profile::{self, CustomerPatch, ProfileError, ViewSize};
use herald::store::customers::CustomerWrite;
use herald::store::interactions::InteractionWrite;
use herald::store::profile::InteractionFilter;
use serde_json::{Map, Value, json};

async fn show_export_erase_and_reimport(db: TestDb) {
    setup_hello(&db);
    let seeded = db.herald(&["seed", "--customers", "12", "--seed", "4"]);
    assert!(seeded.status.success(), "{}", stderr(&seeded));
    let first = run_hello(&db).await;
    assert_eq!(first.len(), 12, "everyone seeded has a country");
    let victim = first[0].clone();
    let store = db.store().await;
    let c = store.customer_by_email(&victim).await.unwrap().unwrap();
    let id = c.id;
    // A ticket and a purchase of the victim's, imported like any event.
    std::fs::write(
        db.path("events.jsonl"),
        format!(
            "{{\"email\":\"{victim}\",\"kind\":\"support_ticket\",\"occurred_at\":\"2026-11-01T10:00:00Z\",\"data\":{{\"topic\":\"refund-4711\"}}}}\n\
             {{\"email\":\"{victim}\",\"kind\":\"purchase\",\"occurred_at\":\"2026-11-02T10:00:00Z\",\"data\":{{\"product\":\"Blue Kettle\"}}}}\n"
        ),
    )
    .unwrap();
    let imported = db.herald(&["import", "interactions", "events.jsonl"]);
    assert!(imported.status.success(), "{}", stderr(&imported));

    // show: one screen with who, attributes, purchases, tickets, messages.
    let shown = db.herald(&["customer", "show", &victim]);
    assert!(shown.status.success(), "{}", stderr(&shown));
    let text = stdout(&shown);
    for expected in [
        victim.as_str(),
        &format!("customer {id}"),
        "Attributes",
        "country",
        "Blue Kettle",
        "refund-4711",
        "t/hello",
        "sent",
        "not suppressed",
    ] {
        assert!(text.contains(expected), "{expected:?} missing:\n{text}");
    }
    assert!(text.lines().count() < 60, "one screen:\n{text}");
    let by_id = db.herald(&["customer", "show", &id.to_string(), "--utc"]);
    assert!(
        stdout(&by_id).contains("times shown in UTC"),
        "{}",
        stdout(&by_id)
    );

    // export: every interaction and message, as one JSON document.
    let exported = db.herald(&["customer", "export", &victim]);
    assert!(exported.status.success(), "{}", stderr(&exported));
    let doc: Value = serde_json::from_slice(&exported.stdout).unwrap();
    assert_eq!(doc["customer"]["email"], victim.as_str());
    let held = db
        .pairs(&format!(
            "SELECT id, CAST(NULL AS BIGINT) FROM interactions WHERE customer_id = {id}"
        ))
        .await;
    let in_doc: HashSet<i64> = doc["interactions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_i64().unwrap())
        .collect();
    assert_eq!(in_doc, held.iter().map(|r| r.0).collect::<HashSet<_>>());
    assert!(
        held.len() >= 3,
        "email_sent, the ticket, the purchase and more"
    );
    let kinds: Vec<&str> = doc["interactions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["kind"].as_str().unwrap())
        .collect();
    assert!(kinds.contains(&"email_sent") && kinds.contains(&"support_ticket"));
    assert_eq!(doc["messages"].as_array().unwrap().len(), 1);
    assert_eq!(doc["messages"][0]["status"], "sent");
    assert!(doc["messages"][0]["message_id"].is_string());
    assert_eq!(doc["entries"].as_array().unwrap().len(), 1);
    let to_file = db.herald(&["customer", "export", &victim, "--output", "me.json"]);
    assert!(to_file.status.success(), "{}", stderr(&to_file));
    let again: Value =
        serde_json::from_str(&std::fs::read_to_string(db.path("me.json")).unwrap()).unwrap();
    assert_eq!(again["interactions"], doc["interactions"]);

    // erase: refused without --yes off a terminal, then everything goes.
    let unasked = db.herald(&["customer", "erase", &victim]);
    assert_eq!(unasked.status.code(), Some(2), "{}", stderr(&unasked));
    assert!(stderr(&unasked).contains("--yes"));
    assert_eq!(count(&db, "SELECT COUNT(*) FROM customers").await, 12);
    let erased = db.herald(&["customer", "erase", &victim, "--yes"]);
    assert!(erased.status.success(), "{}", stderr(&erased));
    let said = stdout(&erased);
    assert!(
        said.contains(&format!(
            "erased {victim} (customer {id}): {} interactions, 1 messages, 1 campaign entries",
            held.len()
        )),
        "{said}"
    );
    assert!(said.contains("one-way hash"), "{said}");
    for table in ["interactions", "deliveries", "entries"] {
        assert_eq!(
            count(
                &db,
                &format!("SELECT COUNT(*) FROM {table} WHERE customer_id = {id}")
            )
            .await,
            0,
            "{table}"
        );
    }
    assert_eq!(count(&db, "SELECT COUNT(*) FROM customers").await, 11);
    let rows = db
        .pairs("SELECT COUNT(*), CAST(NULL AS BIGINT) FROM suppressions")
        .await;
    assert_eq!(rows[0].0, 1, "only the mark");
    let store = db.store().await;
    assert_eq!(store.suppression_of(&victim).await.unwrap(), None);
    // Nothing anywhere names the address any more.
    let named = count(
        &db,
        &format!(
            "SELECT COUNT(*) FROM suppressions WHERE email = '{victim}' OR email NOT LIKE 'erased:%'"
        ),
    )
    .await;
    assert_eq!(named, 0);

    let gone = db.herald(&["customer", "show", &victim]);
    assert_eq!(gone.status.code(), Some(1));
    assert!(
        stderr(&gone).contains(&format!("no customer {victim}")),
        "{}",
        stderr(&gone)
    );
    // What is still held on the address: its mark, and nothing else.
    let left = db.herald(&["customer", "export", &victim]);
    assert!(left.status.success(), "{}", stderr(&left));
    let left: Value = serde_json::from_slice(&left.stdout).unwrap();
    assert_eq!(left["customer"], Value::Null);
    assert_eq!(left["interactions"], json!([]));
    assert_eq!(left["suppressions"].as_array().unwrap().len(), 1);
    assert_eq!(left["suppressions"][0]["hashed"], true);
    assert_eq!(left["suppressions"][0]["reason"], "erased");
    let twice = db.herald(&["customer", "erase", &victim, "--yes"]);
    assert_eq!(twice.status.code(), Some(1));
    assert!(
        stderr(&twice).contains("erasure mark"),
        "{}",
        stderr(&twice)
    );

    // A later import brings the address back: it is suppressed again at once
    // and a real run mails the newcomer beside it, never the erased address.
    std::fs::write(
        db.path("back.csv"),
        format!("email,first_name,country\n{victim},Back,DE\nnewcomer@example.com,New,DE\n"),
    )
    .unwrap();
    let back = db.herald(&["import", "customers", "back.csv"]);
    assert!(back.status.success(), "{}", stderr(&back));
    assert_eq!(
        store.suppression_of(&victim).await.unwrap().as_deref(),
        Some("erased")
    );
    let audience = stdout(&db.herald(&["audience", "t", "--list"]));
    assert!(!audience.contains(&victim), "{audience}");
    let second = run_hello(&db).await;
    assert_eq!(second, vec!["newcomer@example.com".to_string()]);
    let shown = stdout(&db.herald(&["customer", "show", &victim]));
    assert!(shown.contains("SUPPRESSED"), "{shown}");

    // --forget-suppression leaves nothing, not even the mark.
    let forgot = db.herald(&[
        "customer",
        "erase",
        &victim,
        "--yes",
        "--forget-suppression",
    ]);
    assert!(forgot.status.success(), "{}", stderr(&forgot));
    assert!(
        stdout(&forgot).contains("nothing kept"),
        "{}",
        stdout(&forgot)
    );
    assert_eq!(count(&db, "SELECT COUNT(*) FROM suppressions").await, 0);

    let nobody = db.herald(&["customer", "show", "99999"]);
    assert_eq!(nobody.status.code(), Some(1));
    assert!(
        stderr(&nobody).contains("no customer id 99999"),
        "{}",
        stderr(&nobody)
    );
    let bad = db.herald(&["customer", "show", "not an address"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        stderr(&bad).contains("neither a customer id"),
        "{}",
        stderr(&bad)
    );
}
both_backends!(show_export_erase, show_export_erase_and_reimport);

fn write(email: &str, status: CustomerStatus, attributes: Value) -> CustomerWrite {
    CustomerWrite {
        email: Email::parse(email).unwrap(),
        external_id: None,
        first_name: Some("Ann".into()),
        last_name: None,
        status,
        timezone: Some("Europe/Berlin".into()),
        attributes: attributes.as_object().unwrap().clone(),
        created_at: 1_000,
        updated_at: 1_000,
    }
}

/// Paging by cursor returns each interaction exactly once, newest first, also
/// with many at the same instant; `kind` and `since` filter; a bad cursor is
/// named.
async fn cursor_pages_cover_everything_once(db: TestDb) {
    let store = db.store().await;
    store
        .write_customers(&[
            write("ann@x.example", CustomerStatus::Subscribed, json!({})),
            write("bob@x.example", CustomerStatus::Subscribed, json!({})),
        ])
        .await
        .unwrap();
    let ann = store
        .customer_by_email("ann@x.example")
        .await
        .unwrap()
        .unwrap();
    let bob = store
        .customer_by_email("bob@x.example")
        .await
        .unwrap()
        .unwrap();
    let kinds = ["purchase", "page_view", "support_ticket"];
    let mut rows = Vec::new();
    for i in 0..250i64 {
        rows.push(InteractionWrite {
            customer_id: if i % 10 == 9 { bob.id } else { ann.id },
            kind: kinds[i as usize % 3].to_string(),
            // Groups of five at the same millisecond: the id breaks ties.
            occurred_at: 1_000_000 + (i / 5) * 1000,
            campaign: None,
            step: None,
            delivery_id: None,
            external_id: None,
            data: Map::new(),
        });
    }
    store.write_interactions(&rows).await.unwrap();
    let who = CustomerRef::Email(ann.email.clone());

    let page_all = |filter: InteractionFilter, limit: i64| {
        let (store, who) = (store.clone(), who.clone());
        async move {
            let mut seen = Vec::new();
            let mut cursor: Option<String> = None;
            loop {
                let page = profile::interactions(&store, &who, &filter, cursor.as_deref(), limit)
                    .await
                    .unwrap();
                assert!(page.interactions.len() as i64 <= limit);
                seen.extend(
                    page.interactions
                        .iter()
                        .map(|i| (i.occurred_at, i.id, i.kind.clone())),
                );
                match page.next_cursor {
                    Some(c) => cursor = Some(c),
                    None => break,
                }
            }
            seen
        }
    };
    let seen = page_all(InteractionFilter::default(), 7).await;
    assert_eq!(seen.len(), 225, "ann's 225, none of bob's");
    let ids: HashSet<i64> = seen.iter().map(|s| s.1).collect();
    assert_eq!(ids.len(), 225, "each once");
    let mut sorted = seen.clone();
    sorted.sort_by_key(|s| std::cmp::Reverse((s.0, s.1)));
    assert_eq!(seen, sorted, "newest first");

    let since = 1_000_000 + 20 * 1000;
    let tickets = page_all(
        InteractionFilter {
            kind: Some("support_ticket".into()),
            since: Some(since),
        },
        4,
    )
    .await;
    let expected = rows
        .iter()
        .filter(|r| r.customer_id == ann.id && r.kind == "support_ticket" && r.occurred_at >= since)
        .count();
    assert_eq!(tickets.len(), expected);
    assert!(
        tickets
            .iter()
            .all(|t| t.2 == "support_ticket" && t.0 >= since)
    );

    let bad = profile::interactions(
        &store,
        &who,
        &InteractionFilter::default(),
        Some("nope!"),
        5,
    )
    .await;
    assert!(matches!(bad, Err(ProfileError::BadCursor(_))), "{bad:?}");
    let unknown = CustomerRef::Email(Email::parse("nobody@x.example").unwrap());
    let missing =
        profile::interactions(&store, &unknown, &InteractionFilter::default(), None, 5).await;
    assert!(matches!(missing, Err(ProfileError::NotFound(_))));

    // The view: the latest N of each kind in one statement.
    let view = profile::view(
        &store,
        &who,
        ViewSize {
            per_kind: 3,
            messages: 5,
        },
        2_000,
    )
    .await
    .unwrap();
    assert_eq!(view.latest.len(), 9);
    for k in kinds {
        assert_eq!(view.latest.iter().filter(|i| i.kind == k).count(), 3, "{k}");
    }
    assert!(!view.suppressed);
    assert!(view.messages.is_empty());
}
both_backends!(cursor_pages, cursor_pages_cover_everything_once);

/// A patch merges attributes key by key and never moves a customer back to
/// subscribed, as an import would not.
async fn patch_follows_the_import_rule(db: TestDb) {
    let store = db.store().await;
    store
        .write_customers(&[write(
            "ann@x.example",
            CustomerStatus::Unsubscribed,
            json!({"plan": "pro", "ltv": 3}),
        )])
        .await
        .unwrap();
    let who: CustomerRef = "ann@x.example".parse().unwrap();
    let mut attributes = Map::new();
    attributes.insert("ltv".into(), json!(4));
    let patched = profile::patch(
        &store,
        &who,
        CustomerPatch {
            status: Some(CustomerStatus::Subscribed),
            attributes,
            ..CustomerPatch::default()
        },
        5_000,
    )
    .await
    .unwrap();
    assert!(patched.changed && patched.resubscribe_refused);
    assert_eq!(patched.customer.status, CustomerStatus::Unsubscribed);
    assert_eq!(
        Value::Object(patched.customer.attributes.clone()),
        json!({"plan": "pro", "ltv": 4})
    );
    assert_eq!(patched.customer.updated_at, 5_000);
    let bounced = profile::patch(
        &store,
        &CustomerRef::Id(patched.customer.id),
        CustomerPatch {
            status: Some(CustomerStatus::Bounced),
            ..CustomerPatch::default()
        },
        6_000,
    )
    .await
    .unwrap();
    assert_eq!(bounced.customer.status, CustomerStatus::Bounced);
    let bad_zone = profile::patch(
        &store,
        &who,
        CustomerPatch {
            timezone: Some("Mars/Olympus".into()),
            ..CustomerPatch::default()
        },
        7_000,
    )
    .await;
    assert!(
        matches!(&bad_zone, Err(ProfileError::Invalid { field, message })
            if field == "timezone" && message.contains("unknown time zone")),
        "{bad_zone:?}"
    );
    let nul = profile::patch(
        &store,
        &who,
        CustomerPatch {
            first_name: Some("A\0nn".into()),
            ..CustomerPatch::default()
        },
        7_000,
    )
    .await;
    assert!(
        matches!(&nul, Err(ProfileError::Invalid { field, .. }) if field == "first_name"),
        "{nul:?}"
    );
    let same = profile::patch(&store, &who, CustomerPatch::default(), 7_000)
        .await
        .unwrap();
    assert!(!same.changed);
    assert_eq!(same.customer.updated_at, 6_000);
}
both_backends!(patch, patch_follows_the_import_rule);

/// `herald customer show … | head`: a reader that stops early ends the output
/// quietly (no panic, no error), for `show` and `export` alike.
#[tokio::test]
async fn a_closed_pipe_ends_the_output_quietly() {
    let db = TestDb::sqlite();
    let seeded = db.herald(&["seed", "--customers", "3", "--seed", "1"]);
    assert!(seeded.status.success(), "{}", stderr(&seeded));
    let id = count(&db, "SELECT MIN(id) FROM customers")
        .await
        .to_string();
    for command in ["show", "export"] {
        // The reading end is closed before herald writes a byte.
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = db
            .command(&[], &["customer", command, &id])
            .stdout(writer)
            .output()
            .unwrap();
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "customer {command}: {:?}\n{}",
            out.status,
            stderr(&out)
        );
    }
}
