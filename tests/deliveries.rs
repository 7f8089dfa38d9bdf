//! Runs, entries and deliveries on both backends: idempotent planning, re-entry,
//! claims under a lease, outcomes.

mod common;

use common::TestDb;
use herald::customer::CustomerStatus;
use herald::mailer::Reply;
use herald::segment::{Compiled, Param};
use herald::status::{RunStatus, SkipReason};
use herald::store::Store;
use herald::store::deliveries::{Outcome, Reentry, Trigger};

const ANCHOR: i64 = 1_793_491_200_000; // 2026-11-01
/// Message-IDs given at first claim: herald.ID.t@acme.example
const IDS: (&str, &str) = ("herald.", ".t@acme.example");

async fn seeded(db: &TestDb, n: &str) -> Store {
    let out = db.herald(&[
        "seed",
        "--customers",
        n,
        "--seed",
        "4",
        "--anchor",
        "2026-11-01",
    ]);
    assert!(out.status.success(), "{out:?}");
    db.store().await
}

/// A manual run of `news` planned at ANCHOR for [`audience`]: (run, planned).
async fn manual_run(store: &Store) -> (i64, usize) {
    let run = store
        .create_run("news", Trigger::Manual, None, ANCHOR)
        .await
        .unwrap()
        .unwrap();
    let planned = store
        .plan_run(run, "news", &audience(), Reentry::Never, "issue", ANCHOR)
        .await
        .unwrap() as usize;
    (run, planned)
}

/// Every other subscribed customer: a stand-in for a compiled segment.
fn audience() -> Compiled {
    Compiled {
        predicate: "c.status = $1 AND c.id % 2 = $2".into(),
        params: vec![Param::Text("subscribed".into()), Param::Int(0)],
        reads_customer: true,
    }
}

async fn planning_is_idempotent_and_respects_reentry(db: TestDb) {
    let store = seeded(&db, "200").await;
    let run = store
        .create_run("winback", Trigger::Schedule, Some(ANCHOR), ANCHOR)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        store
            .create_run("winback", Trigger::Schedule, Some(ANCHOR), ANCHOR)
            .await
            .unwrap(),
        None,
        "one run per tick"
    );
    let planned = store
        .plan_run(run, "winback", &audience(), Reentry::Never, "offer", ANCHOR)
        .await
        .unwrap();
    assert!(planned > 50, "{planned}");
    assert_eq!(
        store
            .plan_run(run, "winback", &audience(), Reentry::Never, "offer", ANCHOR)
            .await
            .unwrap(),
        0
    );

    // A later run: nobody re-enters under `never`; under `always` only finished entries.
    let run2 = store
        .create_run("winback", Trigger::Manual, None, ANCHOR + 1)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        store
            .plan_run(
                run2,
                "winback",
                &audience(),
                Reentry::Never,
                "offer",
                ANCHOR + 1
            )
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        store
            .plan_run(
                run2,
                "winback",
                &audience(),
                Reentry::Always,
                "offer",
                ANCHOR + 1
            )
            .await
            .unwrap(),
        0,
        "entries still active"
    );
    let counts = store.run_counts(run).await.unwrap();
    assert_eq!(counts.queued as u64, planned);

    // Deleting a customer takes their entries and deliveries with them (a
    // foreign key on SQLite, a statement trigger on PostgreSQL) and nothing else.
    let gone = db
        .pairs("SELECT MIN(customer_id), COUNT(*) FROM deliveries")
        .await[0];
    db.pairs(&format!("DELETE FROM customers WHERE id = {}", gone.0))
        .await;
    let of_gone = format!("WHERE customer_id = {}", gone.0);
    let count =
        |table: &str, filter: &str| format!("SELECT COUNT(*), COUNT(*) FROM {table} {filter}");
    assert_eq!(db.pairs(&count("entries", &of_gone)).await[0].0, 0);
    assert_eq!(db.pairs(&count("deliveries", &of_gone)).await[0].0, 0);
    assert_eq!(
        Some(db.pairs(&count("deliveries", "")).await[0].0),
        gone.1.map(|n| n - 1)
    );
    store.close().await;
}
both_backends!(planning, planning_is_idempotent_and_respects_reentry);

async fn claims_leases_and_outcomes(db: TestDb) {
    let store = seeded(&db, "100").await;
    let (run, planned) = manual_run(&store).await;
    let lease = ANCHOR + 60_000;
    let a = store
        .claim(run, 10, (ANCHOR, lease), None, IDS, "A")
        .await
        .unwrap();
    let b = store
        .claim(run, 1000, (ANCHOR, lease), None, IDS, "B")
        .await
        .unwrap();
    assert_eq!(a.len(), 10);
    assert_eq!(a.len() + b.len(), planned);
    assert!(
        a.iter()
            .all(|c| !b.iter().any(|d| d.delivery_id == c.delivery_id)),
        "claims never overlap"
    );
    assert!(
        store
            .claim(run, 10, (ANCHOR, lease), None, IDS, "C")
            .await
            .unwrap()
            .is_empty()
    );
    assert!(a[0].email.as_str().contains('@') && a[0].attributes.contains_key("plan"));

    // A live holder renews its leases; its own claims are never requeued by it.
    assert_eq!(
        store.renew_claims(run, "A", lease + 30_000).await.unwrap(),
        10
    );
    assert_eq!(
        store.requeue_expired(run, lease + 1, "B", 5).await.unwrap(),
        0,
        "B never takes back its own claims, A renewed"
    );
    // The worker holding `b` dies: after its lease, another takes its rows back,
    // marked as possibly sent.
    assert_eq!(
        store.requeue_expired(run, lease - 1, "C", 5).await.unwrap(),
        0
    );
    assert_eq!(
        store.requeue_expired(run, lease + 1, "C", 5).await.unwrap() as usize,
        planned - 10
    );
    let unknown = db
        .pairs("SELECT id, CAST(CASE WHEN outcome_unknown THEN 1 ELSE 0 END AS BIGINT) FROM deliveries WHERE status = 'queued'")
        .await;
    assert!(unknown.iter().all(|(_, u)| *u == Some(1)), "{unknown:?}");
    // A stalled B wakes up: what it would record for its lost claims is not written.
    let late: Vec<(i64, Outcome)> = b
        .iter()
        .map(|c| {
            (
                c.delivery_id,
                Outcome::Failed {
                    error: "late".into(),
                },
            )
        })
        .collect();
    store.record_outcomes(&late, lease + 1, "B").await.unwrap();
    assert_eq!(store.run_counts(run).await.unwrap().failed, 0);
    // A finishes without sending: what it holds goes back, its attempt returned.
    assert_eq!(store.release_claims(run, "A", lease + 1).await.unwrap(), 10);
    let again = store
        .claim(run, 1000, (lease + 2, lease + 60_000), None, IDS, "D")
        .await
        .unwrap();
    assert_eq!(again.len(), planned);
    assert!(again.iter().all(|c| c.attempts
        == if a.iter().any(|x| x.delivery_id == c.delivery_id) {
            1
        } else {
            2
        }));

    // The first claim gave each delivery its Message-ID (random: no counter
    // shows, and no other install draws it); the retry kept it.
    let first: std::collections::HashMap<i64, &str> = a
        .iter()
        .chain(&b)
        .map(|c| (c.delivery_id, c.message_id.as_str()))
        .collect();
    let ids: Vec<(i64, String)> = again
        .iter()
        .map(|c| (c.delivery_id, c.message_id.clone()))
        .collect();
    assert!(ids.iter().all(|(id, m)| first[id] == m.as_str()));
    assert!(ids.iter().all(|(_, m)| {
        let unique = m
            .strip_prefix("herald.")
            .and_then(|r| r.strip_suffix(".t@acme.example"))
            .unwrap_or_default();
        unique.len() == 32 && unique.bytes().all(|b| b.is_ascii_hexdigit())
    }));
    let distinct: std::collections::HashSet<&str> = first.values().copied().collect();
    assert_eq!(distinct.len(), planned);
    let mut outcomes = Vec::new();
    for (i, c) in again.iter().enumerate() {
        let o = match i % 5 {
            0 | 1 => Outcome::Sent {
                message_id: ids[i].1.clone(),
            },
            2 => Outcome::Skipped {
                reason: SkipReason::Unsubscribed,
            },
            3 => Outcome::Bounced {
                reply: Reply::parse(550, "5.1.1 no such user"),
            },
            _ => Outcome::Retry {
                at: lease + 120_000,
                error: "451 4.3.0 later".into(),
                unknown: false,
            },
        };
        outcomes.push((c.delivery_id, o));
    }
    store
        .record_outcomes(&outcomes, lease + 3, "D")
        .await
        .unwrap();
    let counts = store.run_counts(run).await.unwrap();
    let n = |k: usize| (0..planned).filter(|i| i % 5 == k).count() as i64;
    assert_eq!(counts.sent, n(0) + n(1));
    assert_eq!(counts.bounced, n(3));
    assert_eq!(counts.queued, n(4));
    assert_eq!(counts.skipped, vec![("unsubscribed".to_string(), n(2))]);
    assert_eq!(
        store.next_attempt(run).await.unwrap(),
        Some(lease + 120_000)
    );
    assert!(
        store
            .claim(run, 10, (lease + 4, lease + 60_000), None, IDS, "D")
            .await
            .unwrap()
            .is_empty(),
        "retries wait"
    );

    // Sent deliveries left email_sent interactions; hard bounces suppressed the address.
    let first = &again[0];
    let sent = store
        .interactions_of(first.customer_id, "email_sent")
        .await
        .unwrap();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].1["message_id"], ids[0].1.as_str());
    let bounced = &again[3];
    let b = store
        .interactions_of(bounced.customer_id, "email_bounced")
        .await
        .unwrap();
    assert_eq!(b[0].1["code"], 550);
    let c = store
        .customer_by_email(bounced.email.as_str())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(c.status, CustomerStatus::Bounced);
    assert_eq!(store.table_counts().await.unwrap().suppressions, n(3));

    // The frequency-cap count sees sends since the cut-off; suppressions show.
    let other = &again[1];
    assert!(
        store
            .suppress(other.email.as_str(), "manual", lease)
            .await
            .unwrap()
    );
    assert!(
        !store
            .suppress(other.email.as_str(), "manual", lease)
            .await
            .unwrap()
    );
    let run2 = store
        .create_run("promo", Trigger::Manual, None, lease + 10)
        .await
        .unwrap()
        .unwrap();
    store
        .plan_run(run2, "promo", &audience(), Reentry::Never, "p", lease + 10)
        .await
        .unwrap();
    let claimed = store
        .claim(
            run2,
            1000,
            (lease + 11, lease + 70_000),
            Some(lease),
            IDS,
            "E",
        )
        .await
        .unwrap();
    let of_first = claimed
        .iter()
        .find(|c| c.customer_id == first.customer_id)
        .unwrap();
    assert_eq!(of_first.recent_sends, 1);
    assert!(
        claimed
            .iter()
            .find(|c| c.customer_id == other.customer_id)
            .unwrap()
            .suppressed
    );
    assert!(!of_first.suppressed);
    assert!(
        claimed.iter().all(|c| c.customer_id != bounced.customer_id),
        "bounced customers left the audience"
    );
    store.close().await;
}
both_backends!(claims, claims_leases_and_outcomes);

async fn recent_events_per_customer(db: TestDb) {
    let store = seeded(&db, "50").await;
    let ids: Vec<i64> = (1..=50).collect();
    let rows = store.recent_events(&ids, "page_view", 2).await.unwrap();
    let mut per: std::collections::HashMap<i64, Vec<i64>> = Default::default();
    for (c, t, _) in &rows {
        per.entry(*c).or_default().push(*t);
    }
    for i in 0..50u64 {
        let expected = herald::seed::customer(4, i, ANCHOR);
        let mut views: Vec<i64> = expected
            .interactions
            .iter()
            .filter(|x| x.kind == "page_view")
            .map(|x| x.occurred_at)
            .collect();
        views.sort_by(|a, b| b.cmp(a));
        views.truncate(2);
        let c = store
            .customer_by_email(expected.email.as_str())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            per.get(&c.id).cloned().unwrap_or_default(),
            views,
            "customer {i}"
        );
    }
    store.close().await;
}
both_backends!(recent_events, recent_events_per_customer);

/// A claim whose holder keeps dying goes round at most `max_attempts` times:
/// then it fails with the reason (and stays marked as possibly sent), instead
/// of being claimed a twelfth time as the fault suite saw.
async fn expired_claims_stop_at_max_attempts(db: TestDb) {
    let store = seeded(&db, "20").await;
    let (run, planned) = manual_run(&store).await;
    let max_attempts = 3;
    let mut now = ANCHOR;
    for life in 1..=max_attempts {
        let claimed = store
            .claim(
                run,
                1000,
                (now, now + 1_000),
                None,
                IDS,
                &format!("dies-{life}"),
            )
            .await
            .unwrap();
        assert_eq!(claimed.len(), planned, "life {life}");
        assert!(claimed.iter().all(|c| c.attempts as u32 == life));
        now += 2_000;
        store
            .requeue_expired(run, now, "next", max_attempts)
            .await
            .unwrap();
    }
    let counts = store.run_counts(run).await.unwrap();
    assert_eq!(counts.failed as usize, planned, "{counts:?}");
    assert!(
        store
            .claim(run, 1000, (now, now + 1_000), None, IDS, "late")
            .await
            .unwrap()
            .is_empty()
    );
    let attempts = db
        .pairs("SELECT id, CAST(attempts AS BIGINT) FROM deliveries WHERE status = 'failed' AND outcome_unknown")
        .await;
    assert_eq!(attempts.len(), planned);
    assert!(
        attempts
            .iter()
            .all(|(_, a)| *a == Some(i64::from(max_attempts)))
    );
    store.close().await;
}
both_backends!(expired_max_attempts, expired_claims_stop_at_max_attempts);

/// A pass finishes a run only if nothing was queued into it since it counted
/// the run's deliveries (a later shard of a transition may queue into a run a
/// pass is ending), and an event run only once its day is over (triggers and
/// sends queue into it all day).
async fn finishing_a_run_that_grew_or_whose_day_goes_on(db: TestDb) {
    let store = seeded(&db, "40").await;
    let (run, planned) = manual_run(&store).await;
    let counted = store.run_planned(run).await.unwrap();
    assert_eq!(counted, planned as i64);
    // Meanwhile something is counted into the run.
    db.exec("UPDATE runs SET planned = planned + 1 WHERE trigger = 'manual'")
        .await;
    assert!(!store.finish_run(run, ANCHOR, counted).await.unwrap());
    assert_eq!(
        store.run_status(run).await.unwrap(),
        Some(RunStatus::Sending)
    );
    let now_counted = store.run_planned(run).await.unwrap();
    assert!(store.finish_run(run, ANCHOR, now_counted).await.unwrap());
    assert_eq!(store.run_status(run).await.unwrap(), Some(RunStatus::Done));

    let day = herald::store::triggers::event_tick(ANCHOR);
    let event = store
        .create_run("cart", Trigger::Event, Some(day), ANCHOR)
        .await
        .unwrap()
        .unwrap();
    let hour = 3_600_000;
    assert!(!store.finish_run(event, day + 23 * hour, 0).await.unwrap());
    assert!(store.finish_run(event, day + 24 * hour, 0).await.unwrap());
}
both_backends!(finishing, finishing_a_run_that_grew_or_whose_day_goes_on);
