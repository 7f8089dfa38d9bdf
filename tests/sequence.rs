//! Follow-up sequences with a manual clock (no sleeping): waits, `when:` with
//! engagement, goals, completion, send windows; both backends.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;

use common::TestDb;
use herald::campaign::{self, Campaign};
use herald::clock::{Clock, ManualClock, Millis};
use herald::config::{Layer, Settings, Source};
use herald::customer::{CustomerStatus, Email};
use herald::pipeline::{self, Engine, sequence};
use herald::status::EntryState;
use herald::store::Store;
use herald::store::customers::CustomerWrite;
use herald::store::deliveries::Trigger;
use herald::store::interactions::InteractionWrite;
use herald::store::sequence::Transition;
use serde_json::{Map, Value, json};
use tokio::sync::watch;

const DAY: Millis = 86_400_000;
/// 2026-11-02T08:00:00Z, a Monday.
const T0: Millis = 1_793_606_400_000;

const SEQUENCE: &str = r#"name: seq
from: "Acme Shop <hello@acme.example>"
audience:
  attribute: country
  exists: true
steps:
  - id: offer
    subject: "Hi"
    template: hello
  - id: reminder
    wait: 3d
    when:
      not: { opened: offer }
    subject: "Reminder"
    template: hello
  - id: last
    wait: 2d
    # the attribute test holds for everyone: it makes the transition read
    # the customer row as well as the engagement
    when:
      all:
        - clicked: reminder
        - attribute: country
          exists: true
    subject: "Last chance"
    template: hello
goal:
  event: purchase
"#;

const WINDOWED: &str = r#"name: night
from: "Acme Shop <hello@acme.example>"
timezone: Europe/Berlin
audience:
  attribute: country
  exists: true
steps:
  - id: one
    subject: "Night owl"
    template: hello
send_window:
  days: [MON, TUE, WED, THU, FRI, SAT, SUN]
  from: "22:00"
  to: "06:00"
"#;

const TEMPLATE: &str = r#"<p>Hi {{default customer.first_name "there"}}</p>
<a href="https://acme.example/shop">Shop</a> <a href="{{unsubscribe_url}}">Unsubscribe</a>"#;

struct Setup {
    db: TestDb,
    store: Store,
    engine: Engine,
    clock: ManualClock,
    campaign: Campaign,
    /// Customer ids by position in the imported list.
    ids: Vec<i64>,
}

async fn setup(db: TestDb, yaml: &str, name: &str, zones: &[Option<&str>]) -> Setup {
    let dir = db.path("files");
    std::fs::create_dir_all(dir.join("campaigns")).unwrap();
    std::fs::create_dir_all(dir.join("templates")).unwrap();
    std::fs::write(dir.join(format!("campaigns/{name}.yaml")), yaml).unwrap();
    std::fs::write(dir.join("templates/hello.html.hbs"), TEMPLATE).unwrap();
    let campaign = campaign::find(name, &dir.join("campaigns")).unwrap();
    let store = db.store().await;
    let rows: Vec<CustomerWrite> = zones
        .iter()
        .enumerate()
        .map(|(i, zone)| CustomerWrite {
            email: Email::parse(&format!("c{i}@example.com")).unwrap(),
            external_id: None,
            first_name: Some(format!("C{i}")),
            last_name: None,
            status: CustomerStatus::Subscribed,
            timezone: zone.map(str::to_string),
            attributes: json!({"country": "DE"}).as_object().cloned().unwrap(),
            created_at: T0 - 30 * DAY,
            updated_at: T0 - 30 * DAY,
        })
        .collect();
    store.write_customers(&rows).await.unwrap();
    let mut ids = Vec::new();
    for i in 0..zones.len() {
        let c = store
            .customer_by_email(&format!("c{i}@example.com"))
            .await
            .unwrap()
            .unwrap();
        ids.push(c.id);
    }
    let clock = ManualClock::at(T0);
    let mut layer = Layer::new();
    for (k, v) in [
        ("database_url", db.url.clone()),
        ("secret", "sequence-test-secret-0123".to_string()),
        ("outbox_dir", db.path("outbox").display().to_string()),
    ] {
        layer.insert(k, (v, Source::Flag));
    }
    let config = db.path("herald.toml");
    std::fs::write(&config, "").unwrap();
    let settings = Settings::load(layer, Some(&config)).unwrap();
    let engine = Engine::new(
        store.clone(),
        settings,
        &dir.join("templates"),
        std::slice::from_ref(&campaign),
        Arc::new(clock.clone()),
    )
    .await
    .unwrap();
    Setup {
        db,
        store,
        engine,
        clock,
        campaign,
        ids,
    }
}

/// Runs the campaign now (a manual run: entry and its first step).
async fn run_now(s: &Setup) -> pipeline::RunReport {
    pipeline::run_campaign(
        &s.engine,
        &s.campaign,
        Trigger::Manual,
        None,
        false,
        watch::channel(false).1,
    )
    .await
    .unwrap()
    .pop()
    .unwrap()
}

/// Sends what is due in every unfinished run of the campaign.
async fn send_due(s: &Setup) {
    let (_tx, stop) = watch::channel(false);
    for run in s.store.unfinished_runs(&s.campaign.name).await.unwrap() {
        pipeline::send_pass(&s.engine, &s.campaign, run, stop.clone())
            .await
            .unwrap();
    }
}

/// (customer id, delivery id) of every sent delivery of a step.
async fn sent(s: &Setup, step: &str) -> Vec<(i64, i64)> {
    let sql = format!(
        "SELECT customer_id, id FROM deliveries WHERE campaign = '{}' AND step = '{step}' \
         AND status = 'sent' ORDER BY customer_id",
        s.campaign.name
    );
    s.db.pairs(&sql)
        .await
        .into_iter()
        .map(|(c, d)| (c, d.unwrap_or_default()))
        .collect()
}

fn customers(list: &[(i64, i64)]) -> BTreeSet<i64> {
    list.iter().map(|(c, _)| *c).collect()
}

fn interaction(
    customer: i64,
    kind: &str,
    at: Millis,
    delivery: Option<(i64, &str)>,
    data: Value,
) -> InteractionWrite {
    InteractionWrite {
        customer_id: customer,
        kind: kind.into(),
        occurred_at: at,
        campaign: delivery.map(|_| "seq".to_string()),
        step: delivery.map(|(_, s)| s.to_string()),
        delivery_id: delivery.map(|(d, _)| d),
        external_id: None,
        data: data.as_object().cloned().unwrap_or_else(Map::new),
    }
}

async fn three_steps_with_engagement_and_goal(db: TestDb) {
    let s = setup(db, SEQUENCE, "seq", &[None; 30]).await;
    let n = s.ids.len();
    // The scripted engagement, by customer position.
    let opened: BTreeSet<usize> = (0..n).filter(|i| i % 3 == 0).collect();
    let machine_only: BTreeSet<usize> = (0..n).filter(|i| i % 3 == 1 && i % 2 == 0).collect();
    let bought: BTreeSet<usize> = [1, 5, 9, 12].into();
    let clicked: BTreeSet<usize> = (0..n).filter(|i| i % 4 == 1 || i % 4 == 2).collect();
    let late_buyer = 2usize; // buys after the reminder: gets nothing more

    // Entry and the first step.
    let report = run_now(&s).await;
    assert_eq!(report.counts.sent as usize, n);
    let offers = sent(&s, "offer").await;
    let offer_of = |i: usize| {
        offers
            .iter()
            .find(|(c, _)| *c == s.ids[i])
            .map(|(_, d)| *d)
            .unwrap()
    };

    // Day 1: opens (human and machine) and purchases.
    let mut events = Vec::new();
    for (who, machine) in [(&opened, false), (&machine_only, true)] {
        for &i in who {
            events.push(interaction(
                s.ids[i],
                "email_opened",
                T0 + DAY,
                Some((offer_of(i), "offer")),
                json!({ "machine": machine }),
            ));
        }
    }
    for &i in &bought {
        events.push(interaction(
            s.ids[i],
            "purchase",
            T0 + DAY,
            None,
            json!({"amount": 20}),
        ));
    }
    // A purchase before entering does not count towards the goal.
    events.push(interaction(
        s.ids[late_buyer],
        "purchase",
        T0 - DAY,
        None,
        json!({"amount": 5}),
    ));
    s.store.write_interactions(&events).await.unwrap();

    // Not yet due after 2 days.
    s.clock.set(T0 + 2 * DAY);
    let early = sequence::advance(&s.engine, &s.campaign, s.clock.now())
        .await
        .unwrap();
    assert_eq!(early.moved.queued, 0);
    assert_eq!(early.run_id, None);

    // Day 3 + a minute: the reminder for everyone who did not open (a machine
    // open is not an open) and did not buy.
    s.clock.set(T0 + 3 * DAY + 60_000);
    let step2 = sequence::advance(&s.engine, &s.campaign, s.clock.now())
        .await
        .unwrap();
    let expect_reminder: BTreeSet<usize> = (0..n)
        .filter(|i| !opened.contains(i) && !bought.contains(i))
        .collect();
    let goal_reached = bought.len();
    let exited_after_offer = (0..n)
        .filter(|i| opened.contains(i) && !bought.contains(i))
        .count();
    assert_eq!(step2.moved.queued as usize, expect_reminder.len());
    assert_eq!(step2.moved.goal as usize, goal_reached);
    assert_eq!(step2.moved.exited as usize, exited_after_offer);
    // The same tick again (a second worker): nothing more.
    let again = sequence::advance(&s.engine, &s.campaign, s.clock.now())
        .await
        .unwrap();
    assert_eq!(again.moved, Default::default());
    send_due(&s).await;
    let reminders = sent(&s, "reminder").await;
    let want: BTreeSet<i64> = expect_reminder.iter().map(|&i| s.ids[i]).collect();
    assert_eq!(customers(&reminders), want);

    // `herald status` as the operator reads it: whoever got the reminder waits
    // for the last step; goal reachers and exits are counted with the reason.
    let campaigns = s.db.path("files").join("campaigns");
    let out = s.db.herald(&[
        "status",
        "seq",
        "--campaigns",
        &campaigns.display().to_string(),
    ]);
    assert!(out.status.success(), "{out:?}");
    let text = common::stdout(&out);
    let row = |step: &str| -> Option<Vec<String>> {
        text.lines()
            .find(|l| l.split_whitespace().next() == Some(step))
            .map(|l| {
                l.split_whitespace()
                    .skip(1)
                    .take(3)
                    .map(String::from)
                    .collect()
            })
    };
    let counts =
        |q: usize, s: usize, w: usize| Some(vec![q.to_string(), s.to_string(), w.to_string()]);
    assert_eq!(row("offer"), counts(0, 0, 0), "{text}");
    assert_eq!(
        row("reminder"),
        counts(0, 0, expect_reminder.len()),
        "{text}"
    );
    assert!(text.contains("last due from "), "{text}");
    assert!(
        text.contains(&format!(
            "done: completed 0, reached the goal {goal_reached}, exited {exited_after_offer}"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!("exited (when: reminder): {exited_after_offer}")),
        "{text}"
    );

    // Clicks on the reminder; a late purchase by one who clicked.
    let reminder_of = |i: usize| {
        reminders
            .iter()
            .find(|(c, _)| *c == s.ids[i])
            .map(|(_, d)| *d)
    };
    let mut clicks = Vec::new();
    for &i in &clicked {
        if let Some(d) = reminder_of(i) {
            clicks.push(interaction(
                s.ids[i],
                "email_clicked",
                T0 + 4 * DAY,
                Some((d, "reminder")),
                json!({"url": "https://acme.example/shop", "link": 0}),
            ));
        }
    }
    clicks.push(interaction(
        s.ids[late_buyer],
        "purchase",
        T0 + 4 * DAY,
        None,
        json!({"amount": 50}),
    ));
    s.store.write_interactions(&clicks).await.unwrap();

    // Two days after the reminder: the last step for those who clicked.
    // Two advances at once under different ticks (a worker's tick and an
    // operator's `herald advance`): both run the transition, one after the
    // other per shard, and between them every customer moves exactly once.
    s.clock.set(T0 + 5 * DAY + 120_000);
    let (a, b) = tokio::join!(
        sequence::advance(&s.engine, &s.campaign, s.clock.now()),
        sequence::advance(&s.engine, &s.campaign, s.clock.now() + 1),
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    let mut step3 = a;
    step3.moved.queued += b.moved.queued;
    step3.moved.goal += b.moved.goal;
    step3.moved.exited += b.moved.exited;
    let expect_last: BTreeSet<usize> = expect_reminder
        .iter()
        .copied()
        .filter(|i| clicked.contains(i) && *i != late_buyer)
        .collect();
    assert!(expect_reminder.contains(&late_buyer) && clicked.contains(&late_buyer));
    assert_eq!(step3.moved.queued as usize, expect_last.len());
    assert_eq!(step3.moved.goal, 1, "the late buyer");
    send_due(&s).await;
    let last = sent(&s, "last").await;
    let want: BTreeSet<i64> = expect_last.iter().map(|&i| s.ids[i]).collect();
    assert_eq!(customers(&last), want);

    // Settling: whoever got the last step has completed.
    s.clock.set(T0 + 6 * DAY);
    let settled = sequence::advance(&s.engine, &s.campaign, s.clock.now())
        .await
        .unwrap();
    assert_eq!(settled.completed as usize, expect_last.len());
    let status = s.store.sequence_status("seq").await.unwrap();
    let count = |state: EntryState| -> usize {
        status
            .iter()
            .filter(|r| r.state == state)
            .map(|r| r.entries as usize)
            .sum()
    };
    assert_eq!(count(EntryState::Completed), expect_last.len());
    assert_eq!(count(EntryState::Goal), goal_reached + 1);
    assert_eq!(
        count(EntryState::Exited),
        exited_after_offer + (expect_reminder.len() - expect_last.len() - 1)
    );
    assert_eq!(count(EntryState::Active), 0);
    // Goal reachers never got a later step.
    for &i in &bought {
        assert!(!customers(&reminders).contains(&s.ids[i]));
    }
    assert!(!customers(&last).contains(&s.ids[late_buyer]));

    // Re-entry `never` (the default): a new run enters no one again.
    let again = run_now(&s).await;
    assert_eq!(again.planned, 0);
    s.store.close().await;
}
both_backends!(three_steps, three_steps_with_engagement_and_goal);

/// A transition opens its run in the transaction that queues into it: a worker
/// killed right after the commit (before anything else runs) leaves a run that
/// the next worker's sweep of unfinished runs finds and sends.
async fn a_transition_commits_an_open_run(db: TestDb) {
    let s = setup(db, SEQUENCE, "seq", &[None; 6]).await;
    run_now(&s).await;
    s.clock.set(T0 + 3 * DAY + 60_000);
    let now = s.clock.now();
    let run = s
        .store
        .create_run("seq", Trigger::Sequence, Some(now), now)
        .await
        .unwrap()
        .unwrap();
    let reminder = &s.campaign.steps[1];
    let moved = s
        .store
        .advance(
            &Transition {
                campaign: "seq",
                from_step: Some("offer"),
                to_step: "reminder",
                cutoff: now - 3 * DAY,
                when: reminder.when.as_ref(),
                goal: s.campaign.goal.as_ref(),
            },
            run,
            now,
        )
        .await
        .unwrap();
    assert_eq!(moved.queued, 6, "nobody opened or bought");
    // Nothing after the transition: what a crash at this instant leaves.
    assert_eq!(s.store.unfinished_runs("seq").await.unwrap(), vec![run]);
    let planned =
        s.db.pairs(&format!(
            "SELECT planned, planned FROM runs WHERE id = {run}"
        ))
        .await;
    assert_eq!(planned[0].0, 6);
}
both_backends!(open_run, a_transition_commits_an_open_run);

/// A window from 22:00 to 06:00 in each customer's zone (else Berlin):
/// messages due outside it wait for its opening and are sent then, across
/// midnight and the March DST change.
async fn send_window_defers_to_the_opening(db: TestDb) {
    let zones = [None, Some("America/New_York"), Some("Asia/Tokyo")];
    let s = setup(db, WINDOWED, "night", &zones).await;
    // Saturday 28 March 2026, 12:00 UTC: 13:00 in Berlin, 08:00 in New York
    // (already on summer time), 21:00 in Tokyo. Tokyo is outside (opens 22:00).
    let noon = 1_774_699_200_000; // 2026-03-28T12:00:00Z
    s.clock.set(noon);
    let report = run_now(&s).await;
    assert_eq!(
        report.counts.sent, 0,
        "nobody is inside the window at noon UTC"
    );
    assert!(report.pending);
    let due =
        s.db.pairs("SELECT customer_id, next_attempt_at FROM deliveries WHERE status = 'queued'")
            .await;
    let ms = |t: &str| {
        chrono::DateTime::parse_from_rfc3339(t)
            .unwrap()
            .timestamp_millis()
    };
    let expected = [
        // Berlin 22:00 CET (the change happens at 02:00 the next night).
        (s.ids[0], ms("2026-03-28T21:00:00Z")),
        // New York 22:00 EDT.
        (s.ids[1], ms("2026-03-29T02:00:00Z")),
        // Tokyo 22:00 JST.
        (s.ids[2], ms("2026-03-28T13:00:00Z")),
    ];
    for (customer, at) in expected {
        assert!(
            due.contains(&(customer, Some(at))),
            "customer {customer}: expected {at}, got {due:?}"
        );
    }
    // An attempt was not used up by waiting.
    let attempts =
        s.db.pairs("SELECT customer_id, CAST(attempts AS BIGINT) FROM deliveries")
            .await;
    assert!(attempts.iter().all(|(_, a)| *a == Some(0)), "{attempts:?}");
    // At Tokyo's opening only Tokyo goes.
    s.clock.set(ms("2026-03-28T13:00:00Z"));
    send_due(&s).await;
    assert_eq!(sent_of(&s).await, BTreeSet::from([s.ids[2]]));
    // Berlin's night crosses midnight and the DST change: 01:30 CET is inside.
    s.clock.set(ms("2026-03-29T00:30:00Z"));
    send_due(&s).await;
    assert_eq!(sent_of(&s).await, BTreeSet::from([s.ids[0], s.ids[2]]));
    // New York's opening.
    s.clock.set(ms("2026-03-29T02:00:00Z"));
    send_due(&s).await;
    assert_eq!(
        sent_of(&s).await,
        BTreeSet::from([s.ids[0], s.ids[1], s.ids[2]])
    );
    s.store.close().await;
}
both_backends!(send_window, send_window_defers_to_the_opening);

async fn sent_of(s: &Setup) -> BTreeSet<i64> {
    customers(&sent(s, "one").await)
}

/// An event-triggered campaign whose first step waits: enter on the event,
/// reminder an hour later unless the goal was reached meanwhile.
const ABANDONED_CART: &str = r#"name: cart
from: "Acme Shop <hello@acme.example>"
trigger:
  event: cart_abandoned
steps:
  - id: nudge
    wait: 1h
    subject: "Your cart of {{trigger.data.total}} EUR"
    template: hello
goal:
  event: purchase
"#;

/// Abandoned cart, with and without the purchase: both customers enter when
/// their cart is stored (by the same code as the API's and the import's),
/// nothing is queued before the hour is up, the one who bought meanwhile
/// reaches the goal and gets nothing, the other gets the reminder naming
/// the cart's total.
async fn abandoned_cart_with_and_without_the_purchase(db: TestDb) {
    const HOUR: Millis = 3_600_000;
    let s = setup(db, ABANDONED_CART, "cart", &[None; 3]).await;
    let rules = pipeline::trigger_rules(std::slice::from_ref(&s.campaign));
    let cart = |i: usize, total: i64| {
        interaction(
            s.ids[i],
            "cart_abandoned",
            T0,
            None,
            json!({ "total": total }),
        )
    };
    let (_, entered) = s
        .store
        .write_interactions_triggering(&[cart(0, 80), cart(1, 30)], &rules, T0)
        .await
        .unwrap();
    assert_eq!((entered.entries, entered.queued), (2, 0));

    // Half an hour later nothing is due.
    s.clock.set(T0 + HOUR / 2);
    let early = sequence::advance(&s.engine, &s.campaign, s.clock.now())
        .await
        .unwrap();
    assert_eq!(early.moved, Default::default());
    // Customer 1 buys.
    s.store
        .write_interactions(&[interaction(
            s.ids[1],
            "purchase",
            T0 + HOUR / 2 + 60_000,
            None,
            json!({}),
        )])
        .await
        .unwrap();
    s.clock.set(T0 + HOUR + 60_000);
    let due = sequence::advance(&s.engine, &s.campaign, s.clock.now())
        .await
        .unwrap();
    assert_eq!((due.moved.queued, due.moved.goal), (1, 1));
    send_due(&s).await;
    assert_eq!(customers(&sent(&s, "nudge").await), [s.ids[0]].into());
    let files: Vec<String> = std::fs::read_dir(s.db.path("outbox"))
        .unwrap()
        .map(|f| std::fs::read_to_string(f.unwrap().path()).unwrap())
        .collect();
    assert_eq!(files.len(), 1);
    assert!(
        files[0].contains("Subject: Your cart of 80 EUR"),
        "{}",
        files[0]
    );
    // The next advance completes the one who got it.
    sequence::advance(&s.engine, &s.campaign, s.clock.now() + 1)
        .await
        .unwrap();
    let states = s
        .store
        .sequence_status("cart")
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.state, r.entries))
        .collect::<Vec<_>>();
    assert_eq!(
        states,
        [(EntryState::Completed, 1), (EntryState::Goal, 1)],
        "customer 0 completed, customer 1 reached the goal"
    );
    s.store.close().await;
}
both_backends!(abandoned_cart, abandoned_cart_with_and_without_the_purchase);
