//! `herald seed`: deterministic, idempotent, the same rows on both backends.

mod common;

use common::{TestDb, stdout};
use herald::seed;

const ANCHOR: &str = "2026-11-01";
const ANCHOR_MS: i64 = 1_793_491_200_000;

/// The seeded rows as stored, read back through the store, in a canonical text form.
async fn stored_digest(store: &herald::store::Store, n: u64) -> Vec<String> {
    let mut out = Vec::new();
    for i in 0..n {
        let expected = seed::customer(9, i, ANCHOR_MS);
        let c = store
            .customer_by_email(&expected.email)
            .await
            .unwrap()
            .expect("seeded customer");
        out.push(format!(
            "{} {:?} {:?} {:?} {} {:?} {} {}",
            c.email,
            c.external_id,
            c.first_name,
            c.last_name,
            c.status,
            c.timezone,
            c.created_at,
            serde_json::Value::Object(c.attributes)
        ));
        let mut kinds: Vec<(i64, String)> = Vec::new();
        for kind in ["purchase", "page_view", "support_ticket"] {
            for (t, data) in store.interactions_of(c.id, kind).await.unwrap() {
                kinds.push((t, format!("{kind} {}", serde_json::Value::Object(data))));
            }
        }
        kinds.sort();
        out.extend(kinds.into_iter().map(|(t, k)| format!("  {t} {k}")));
    }
    out
}

/// The same digest computed straight from the generator, independent of SQL.
fn generated_digest(n: u64) -> Vec<String> {
    let mut out = Vec::new();
    for i in 0..n {
        let c = seed::customer(9, i, ANCHOR_MS);
        out.push(format!(
            "{} {:?} {:?} {:?} {} {:?} {} {}",
            c.email,
            Some(c.external_id.clone()),
            Some(c.first_name.clone()),
            Some(c.last_name.clone()),
            c.status,
            Some(c.timezone.to_string()),
            c.created_at,
            serde_json::Value::Object(c.attributes.clone())
        ));
        let mut kinds: Vec<(i64, String)> = c
            .interactions
            .iter()
            .map(|x| {
                (
                    x.occurred_at,
                    format!("{} {}", x.kind, serde_json::Value::Object(x.data.clone())),
                )
            })
            .collect();
        kinds.sort();
        out.extend(kinds.into_iter().map(|(t, k)| format!("  {t} {k}")));
    }
    out
}

async fn seed_is_deterministic_and_idempotent(db: TestDb) {
    let out = db.herald(&[
        "seed",
        "--customers",
        "300",
        "--seed",
        "9",
        "--anchor",
        ANCHOR,
    ]);
    assert!(out.status.success(), "{out:?}");
    let store = db.store().await;
    let counts = store.table_counts().await.unwrap();
    assert_eq!(counts.customers, 300);
    let expected_interactions: usize = (0..300)
        .map(|i| seed::customer(9, i, ANCHOR_MS).interactions.len())
        .sum();
    assert_eq!(counts.interactions as usize, expected_interactions);
    assert!(
        (2_400..3_600).contains(&expected_interactions),
        "about ten each: {expected_interactions}"
    );
    assert_eq!(stored_digest(&store, 300).await, generated_digest(300));

    // Again, and with more customers: only the new ones are added.
    let again = db.herald(&[
        "seed",
        "--customers",
        "300",
        "--seed",
        "9",
        "--anchor",
        ANCHOR,
    ]);
    assert!(
        stdout(&again).contains("seeded 0 customers and 0 interactions"),
        "{}",
        stdout(&again)
    );
    let more = db.herald(&[
        "seed",
        "--customers",
        "350",
        "--seed",
        "9",
        "--anchor",
        ANCHOR,
    ]);
    assert!(
        stdout(&more).contains("seeded 50 customers"),
        "{}",
        stdout(&more)
    );
    assert_eq!(store.table_counts().await.unwrap().customers, 350);
    assert_eq!(stored_digest(&store, 350).await, generated_digest(350));
    store.close().await;
}
both_backends!(seed_determinism, seed_is_deterministic_and_idempotent);
