//! Scripted campaign activity for the stats and report tests: deliveries and
//! events as plain Rust lists, loaded into a database, and the figures the
//! lists imply, counted here in Rust (never by the SQL under test).
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};

use herald::store::interactions::InteractionWrite;
use serde_json::{Map, Value, json};

use crate::common::TestDb;

pub const CAMPAIGN: &str = "promo";
/// 2026-11-02T09:00:00Z
pub const T0: i64 = 1_794_042_000_000;
pub const MIN: i64 = 60_000;
pub const HOUR: i64 = 60 * MIN;
pub const DAY: i64 = 24 * HOUR;
pub const LINK_A: &str = "https://acme.example/shop?utm=a&x=<1>";
pub const LINK_B: &str = "https://acme.example/sale";
/// As long as real links with campaign parameters are.
pub const LINK_LONG: &str = "https://acme.example/collections/new-arrivals/autumn-2026?utm_source=herald&utm_medium=email&utm_campaign=promo&utm_content=hero-banner";

/// The campaign file: two steps and a goal with a `where:` test.
pub const CAMPAIGN_YAML: &str = r#"name: promo
description: "Autumn promo <with> markup & quotes"
from: "Acme Shop <hello@acme.example>"
audience:
  attribute: country
  exists: true
steps:
  - id: offer
    subject: "Our offer"
    template: offer
  - id: reminder
    wait: 2d
    subject: "Reminder"
    template: offer
goal:
  event: purchase
  where:
    - field: amount
      gte: 10
"#;

#[derive(Debug, Clone)]
pub struct Delivery {
    pub id: i64,
    pub customer: i64,
    pub step: &'static str,
    pub status: &'static str,
    pub reason: Option<&'static str>,
    pub sent_at: Option<i64>,
}

#[derive(Debug, Clone)]
pub struct Event {
    pub customer: i64,
    pub kind: &'static str,
    pub at: i64,
    pub campaign: Option<&'static str>,
    pub step: Option<&'static str>,
    pub delivery: Option<i64>,
    pub data: Value,
}

#[derive(Debug, Clone, Default)]
pub struct Scenario {
    pub customers: i64,
    pub deliveries: Vec<Delivery>,
    pub events: Vec<Event>,
}

fn d(
    id: i64,
    customer: i64,
    step: &'static str,
    status: &'static str,
    reason: Option<&'static str>,
    sent_at: Option<i64>,
) -> Delivery {
    Delivery {
        id,
        customer,
        step,
        status,
        reason,
        sent_at,
    }
}

impl Scenario {
    fn delivery(&self, customer: i64, step: &str) -> &Delivery {
        self.deliveries
            .iter()
            .find(|d| d.customer == customer && d.step == step)
            .expect("scripted delivery")
    }

    /// An engagement event for the delivery of `step` to `customer`.
    fn on(&mut self, customer: i64, step: &'static str, kind: &'static str, at: i64, data: Value) {
        let delivery = self.delivery(customer, step).id;
        self.events.push(Event {
            customer,
            kind,
            at,
            campaign: Some(CAMPAIGN),
            step: Some(step),
            delivery: Some(delivery),
            data,
        });
    }

    /// A customer event outside any campaign (a purchase).
    fn own(&mut self, customer: i64, kind: &'static str, at: i64, data: Value) {
        self.events.push(Event {
            customer,
            kind,
            at,
            campaign: None,
            step: None,
            delivery: None,
            data,
        });
    }

    /// `email_sent` for every sent delivery and `email_bounced` for every
    /// bounced one, as the send pipeline records them.
    fn send_events(&mut self) {
        let deliveries = self.deliveries.clone();
        for d in deliveries {
            match (d.status, d.sent_at) {
                ("sent", Some(at)) => self.on(
                    d.customer,
                    d.step,
                    "email_sent",
                    at,
                    json!({"message_id": format!("m{}", d.id)}),
                ),
                ("bounced", _) => self.on(
                    d.customer,
                    d.step,
                    "email_bounced",
                    T0,
                    json!({"code": 550, "reply": "5.1.1 no such user", "hard": true}),
                ),
                _ => {}
            }
        }
    }
}

/// Ten customers, two steps; every kind of figure at least once.
pub fn scripted() -> Scenario {
    let mut s = Scenario {
        customers: 11,
        ..Default::default()
    };
    for c in 1..=7 {
        s.deliveries
            .push(d(c, c, "offer", "sent", None, Some(T0 + c * MIN)));
    }
    s.deliveries.push(d(
        8,
        8,
        "offer",
        "bounced",
        Some("550 5.1.1 no such user"),
        None,
    ));
    s.deliveries
        .push(d(9, 9, "offer", "skipped", Some("unsubscribed"), None));
    s.deliveries
        .push(d(10, 10, "offer", "skipped", Some("frequency_cap"), None));
    s.deliveries.push(d(11, 11, "offer", "queued", None, None));
    for c in 1..=3 {
        s.deliveries.push(d(
            20 + c,
            c,
            "reminder",
            "sent",
            None,
            Some(T0 + 3 * DAY + c * MIN),
        ));
    }
    s.deliveries.push(d(
        24,
        4,
        "reminder",
        "failed",
        Some("too many attempts"),
        None,
    ));
    s.send_events();

    let human = json!({"machine": false, "user_agent": "Thunderbird"});
    let machine = json!({"machine": true, "user_agent": "Mozilla/5.0"});
    // c1: two human opens, a click on each link.
    s.on(1, "offer", "email_opened", T0 + HOUR, human.clone());
    s.on(1, "offer", "email_opened", T0 + 2 * HOUR, json!({}));
    s.on(
        1,
        "offer",
        "email_clicked",
        T0 + 2 * HOUR,
        json!({"url": LINK_A, "link": 0}),
    );
    s.on(
        1,
        "offer",
        "email_clicked",
        T0 + 3 * HOUR,
        json!({"url": LINK_B, "link": 1}),
    );
    // c2: a machine open only.
    s.on(2, "offer", "email_opened", T0 + 2 * MIN, machine.clone());
    // c3: machine, then human; link A twice.
    s.on(3, "offer", "email_opened", T0 + 4 * MIN, machine.clone());
    s.on(3, "offer", "email_opened", T0 + 5 * HOUR, human.clone());
    s.on(
        3,
        "offer",
        "email_clicked",
        T0 + 5 * HOUR,
        json!({"url": LINK_A, "link": 0}),
    );
    s.on(
        3,
        "offer",
        "email_clicked",
        T0 + 6 * HOUR,
        json!({"url": LINK_A, "link": 0}),
    );
    // c1 opens the reminder too; c2 clicks it (link B) after a machine open.
    s.on(
        1,
        "reminder",
        "email_opened",
        T0 + 3 * DAY + HOUR,
        human.clone(),
    );
    s.on(
        2,
        "reminder",
        "email_opened",
        T0 + 3 * DAY + 3 * MIN,
        machine.clone(),
    );
    s.on(
        2,
        "reminder",
        "email_clicked",
        T0 + 3 * DAY + 2 * HOUR,
        json!({"url": LINK_B, "link": 1}),
    );
    // c5 unsubscribes, c6 complains; c7 bounces after being sent.
    s.on(
        5,
        "offer",
        "unsubscribed",
        T0 + DAY,
        json!({"method": "one-click"}),
    );
    s.on(6, "offer", "email_complained", T0 + DAY, json!({}));
    s.on(
        7,
        "offer",
        "email_bounced",
        T0 + 2 * HOUR,
        json!({"type": "Permanent", "detail": "mailbox full"}),
    );
    // Purchases. c1: inside the offer's window. c2: eight days after the offer
    // (outside; c2's reminder came at T0+3d, so inside the reminder's).
    // c3: inside both. c4: inside, but 5 < 10 fails the goal's `where:`.
    // c5: before the send. c6: exactly at the window's end (outside).
    s.own(1, "purchase", T0 + DAY, json!({"amount": 50}));
    s.own(2, "purchase", T0 + 8 * DAY, json!({"amount": 30}));
    s.own(
        3,
        "purchase",
        T0 + 3 * DAY + 2 * HOUR,
        json!({"amount": 20.5}),
    );
    s.own(4, "purchase", T0 + HOUR, json!({"amount": 5}));
    s.own(5, "purchase", T0 - HOUR, json!({"amount": 99}));
    s.own(6, "purchase", T0 + 6 * MIN + 7 * DAY, json!({"amount": 15}));
    // Noise: another campaign's open, a page view.
    s.events.push(Event {
        customer: 4,
        kind: "email_opened",
        at: T0,
        campaign: Some("other"),
        step: Some("offer"),
        delivery: None,
        data: json!({}),
    });
    s.own(4, "page_view", T0 + HOUR, json!({"url": LINK_A}));
    s
}

/// A deterministic larger campaign for the report: `n` customers.
pub fn generated(n: i64, seed: u64) -> Scenario {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut rnd = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 33) as f64) / f64::from(1u32 << 31)
    };
    let mut s = Scenario {
        customers: n,
        ..Default::default()
    };
    let links = [LINK_A, LINK_B, LINK_LONG];
    let reasons = ["unsubscribed", "frequency_cap", "suppressed"];
    let mut next_id = 1;
    for c in 1..=n {
        let r = rnd();
        let (status, reason) = if r < 0.86 {
            ("sent", None)
        } else if r < 0.89 {
            ("bounced", Some("550 5.1.1 no such user"))
        } else if r < 0.91 {
            ("failed", Some("too many attempts"))
        } else {
            ("skipped", Some(reasons[(rnd() * 3.0) as usize % 3]))
        };
        let sent_at = (status == "sent").then(|| T0 + (rnd() * 6.0 * HOUR as f64) as i64);
        s.deliveries
            .push(d(next_id, c, "offer", status, reason, sent_at));
        next_id += 1;
    }
    let offers = s.deliveries.clone();
    let mut reminded = Vec::new();
    for o in &offers {
        let Some(sent) = o.sent_at else { continue };
        let c = o.customer;
        let mut opened = false;
        if rnd() < 0.2 {
            s.on(
                c,
                "offer",
                "email_opened",
                sent + 5_000,
                json!({"machine": true}),
            );
        }
        if rnd() < 0.5 {
            opened = true;
            let opens = 1 + (rnd() * 3.0) as i64;
            for k in 0..opens {
                let at = sent + (rnd() * rnd() * 40.0 * HOUR as f64) as i64 + k * MIN;
                s.on(c, "offer", "email_opened", at, json!({"machine": false}));
            }
            if rnd() < 0.4 {
                let link = links[(rnd() * rnd() * 3.0) as usize % 3];
                let at = sent + (rnd() * 40.0 * HOUR as f64) as i64;
                s.on(c, "offer", "email_clicked", at, json!({"url": link}));
                if rnd() < 0.4 {
                    s.own(
                        c,
                        "purchase",
                        at + (rnd() * 9.0 * DAY as f64) as i64,
                        json!({"amount": (rnd() * 120.0).round()}),
                    );
                }
            }
        }
        if rnd() < 0.02 {
            s.on(c, "offer", "unsubscribed", sent + 3 * HOUR, json!({}));
        } else if rnd() < 0.005 {
            s.on(c, "offer", "email_complained", sent + 4 * HOUR, json!({}));
        } else if !opened {
            reminded.push(c);
        }
    }
    for c in reminded {
        let sent = T0 + 2 * DAY + (rnd() * 4.0 * HOUR as f64) as i64;
        s.deliveries
            .push(d(next_id, c, "reminder", "sent", None, Some(sent)));
        next_id += 1;
        if rnd() < 0.3 {
            let at = sent + (rnd() * rnd() * 20.0 * HOUR as f64) as i64;
            s.on(c, "reminder", "email_opened", at, json!({}));
            if rnd() < 0.3 {
                s.on(
                    c,
                    "reminder",
                    "email_clicked",
                    at + MIN,
                    json!({"url": LINK_B}),
                );
                if rnd() < 0.5 {
                    s.own(c, "purchase", at + HOUR, json!({"amount": 40}));
                }
            }
        }
    }
    s.send_events();
    s
}

/// Writes the campaign file into the test's `campaigns/`.
pub fn write_campaign(db: &TestDb) {
    std::fs::create_dir_all(db.path("campaigns")).unwrap();
    std::fs::write(db.path("campaigns/promo.yaml"), CAMPAIGN_YAML).unwrap();
}

/// Loads the scenario: customers, one run, entries and deliveries through a
/// plain connection (the test's own SQL), the events through Herald's
/// interaction writer.
pub async fn load(db: &TestDb, s: &Scenario) {
    let store = db.store().await;
    let entries: BTreeSet<i64> = s.deliveries.iter().map(|d| d.customer).collect();
    macro_rules! load_with {
        ($pool:expr) => {{
            let pool = $pool;
            for c in 1..=s.customers {
                sqlx::query(
                    "INSERT INTO customers (id, email, status, attributes, created_at, updated_at) \
                     VALUES ($1, $2, 'subscribed', '{\"country\": \"DE\"}', 0, 0)",
                )
                .bind(c)
                .bind(format!("c{c}@x.example"))
                .execute(&pool)
                .await
                .unwrap();
            }
            sqlx::query(
                "INSERT INTO runs (id, campaign, trigger, status, created_at) VALUES (1, $1, 'manual', 'done', $2)",
            )
            .bind(CAMPAIGN)
            .bind(T0)
            .execute(&pool)
            .await
            .unwrap();
            for c in &entries {
                sqlx::query(
                    "INSERT INTO entries (id, campaign, customer_id, seq, run_id, entered_at, updated_at) \
                     VALUES ($1, $2, $1, 1, 1, $3, $3)",
                )
                .bind(c)
                .bind(CAMPAIGN)
                .bind(T0)
                .execute(&pool)
                .await
                .unwrap();
            }
            for d in &s.deliveries {
                sqlx::query(
                    "INSERT INTO deliveries (id, run_id, entry_id, campaign, step, customer_id, status, \
                     reason, sent_at, created_at, updated_at) VALUES ($1, 1, $2, $3, $4, $2, $5, $6, $7, $8, $8)",
                )
                .bind(d.id)
                .bind(d.customer)
                .bind(CAMPAIGN)
                .bind(d.step)
                .bind(d.status)
                .bind(d.reason)
                .bind(d.sent_at)
                .bind(if d.step == "offer" { T0 } else { T0 + DAY })
                .execute(&pool)
                .await
                .unwrap();
            }
            pool.close().await;
        }};
    }
    match db.backend {
        herald::store::Backend::Sqlite => {
            load_with!(sqlx::SqlitePool::connect(&db.url).await.unwrap())
        }
        herald::store::Backend::Postgres => {
            load_with!(sqlx::PgPool::connect(&db.url).await.unwrap())
        }
    }
    let rows: Vec<InteractionWrite> = s
        .events
        .iter()
        .map(|e| InteractionWrite {
            customer_id: e.customer,
            kind: e.kind.to_string(),
            occurred_at: e.at,
            campaign: e.campaign.map(str::to_string),
            step: e.step.map(str::to_string),
            delivery_id: e.delivery,
            external_id: None,
            data: match &e.data {
                Value::Object(m) => m.clone(),
                _ => Map::new(),
            },
        })
        .collect();
    store.write_interactions(&rows).await.unwrap();
    store.close().await;
}

/// The figures of one step (or all steps) as counted from the lists.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Expected {
    pub entered: i64,
    pub sent: i64,
    pub bounced: i64,
    pub failed: i64,
    pub skipped: i64,
    pub skipped_by_reason: BTreeMap<String, i64>,
    pub opened: i64,
    pub opened_human: i64,
    pub opens: i64,
    pub opens_human: i64,
    pub clicked: i64,
    pub clicks: i64,
    pub unsubscribed: i64,
    pub complained: i64,
    pub converted: i64,
    /// url → (clicks, distinct customers)
    pub links: BTreeMap<String, (i64, i64)>,
}

/// What counts as a conversion in [`expected`].
pub struct Rule<'a> {
    pub kind: &'a str,
    pub window: i64,
    pub accept: &'a dyn Fn(&Value) -> bool,
}

/// The figures for `step` (`None`: the whole campaign) from the lists alone.
pub fn expected(s: &Scenario, step: Option<&str>, rule: &Rule<'_>) -> Expected {
    let in_step = |x: Option<&str>| step.is_none() || x == step;
    let ds: Vec<&Delivery> = s
        .deliveries
        .iter()
        .filter(|d| in_step(Some(d.step)))
        .collect();
    let es: Vec<&Event> = s
        .events
        .iter()
        .filter(|e| e.campaign == Some(CAMPAIGN) && e.step.is_some() && in_step(e.step))
        .collect();
    let mut x = Expected {
        entered: ds.len() as i64,
        ..Default::default()
    };
    let count = |st: &str| ds.iter().filter(|d| d.status == st).count() as i64;
    x.sent = count("sent");
    x.failed = count("failed");
    x.skipped = count("skipped");
    for d in ds.iter().filter(|d| d.status == "skipped") {
        *x.skipped_by_reason
            .entry(d.reason.unwrap_or("").to_string())
            .or_default() += 1;
    }
    let bounced_later: BTreeSet<i64> = es
        .iter()
        .filter(|e| e.kind == "email_bounced")
        .filter_map(|e| e.delivery)
        .filter(|id| ds.iter().any(|d| d.id == *id && d.status != "bounced"))
        .collect();
    x.bounced = count("bounced") + bounced_later.len() as i64;
    let is_machine = |e: &Event| e.data.get("machine") == Some(&Value::Bool(true));
    let people = |f: &dyn Fn(&Event) -> bool| -> i64 {
        es.iter()
            .filter(|e| f(e))
            .map(|e| e.customer)
            .collect::<BTreeSet<_>>()
            .len() as i64
    };
    x.opened = people(&|e| e.kind == "email_opened");
    x.opened_human = people(&|e| e.kind == "email_opened" && !is_machine(e));
    x.opens = es.iter().filter(|e| e.kind == "email_opened").count() as i64;
    x.opens_human = es
        .iter()
        .filter(|e| e.kind == "email_opened" && !is_machine(e))
        .count() as i64;
    x.clicked = people(&|e| e.kind == "email_clicked");
    x.clicks = es.iter().filter(|e| e.kind == "email_clicked").count() as i64;
    x.unsubscribed = people(&|e| e.kind == "unsubscribed");
    x.complained = people(&|e| e.kind == "email_complained");
    let mut clickers: BTreeMap<String, BTreeSet<i64>> = BTreeMap::new();
    for e in es.iter().filter(|e| e.kind == "email_clicked") {
        let url = e.data["url"].as_str().unwrap_or("").to_string();
        x.links.entry(url.clone()).or_default().0 += 1;
        clickers.entry(url).or_default().insert(e.customer);
    }
    for (url, set) in clickers {
        x.links.get_mut(&url).unwrap().1 = set.len() as i64;
    }
    let converted: BTreeSet<i64> = ds
        .iter()
        .filter(|d| d.status == "sent")
        .filter(|d| {
            let sent = d.sent_at.unwrap();
            s.events.iter().any(|e| {
                e.customer == d.customer
                    && e.kind == rule.kind
                    && e.at >= sent
                    && e.at < sent + rule.window
                    && (rule.accept)(&e.data)
            })
        })
        .map(|d| d.customer)
        .collect();
    x.converted = converted.len() as i64;
    x
}

/// The same figures read from `herald stats --json` (a step or `totals`).
pub fn from_json(v: &Value) -> Expected {
    let n = |k: &str| {
        v[k].as_i64()
            .unwrap_or_else(|| panic!("key {k} missing or not an integer in {v}"))
    };
    let mut x = Expected {
        entered: n("entered"),
        sent: n("sent"),
        bounced: n("bounced"),
        failed: n("failed"),
        skipped: n("skipped"),
        opened: n("opened"),
        opened_human: n("opened_human"),
        opens: n("opens"),
        opens_human: n("opens_human"),
        clicked: n("clicked"),
        clicks: n("clicks"),
        unsubscribed: n("unsubscribed"),
        complained: n("complained"),
        converted: n("converted"),
        ..Default::default()
    };
    for (k, c) in v["skipped_by_reason"]
        .as_object()
        .expect("skipped_by_reason")
    {
        x.skipped_by_reason.insert(k.clone(), c.as_i64().unwrap());
    }
    for l in v["links"].as_array().expect("links") {
        x.links.insert(
            l["url"].as_str().unwrap().to_string(),
            (
                l["clicks"].as_i64().unwrap(),
                l["clicked"].as_i64().unwrap(),
            ),
        );
    }
    x
}
