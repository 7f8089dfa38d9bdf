//! The segment engine against an independent oracle: a plain in-memory evaluator
//! over the seeded data, written here without any SQL. Every case runs on SQLite
//! and PostgreSQL; a property test compares random condition trees on both.

mod common;

use std::collections::BTreeSet;

use common::TestDb;
use herald::campaign;
use herald::clock::{Millis, parse_rfc3339};
use herald::customer::{CustomerStatus, Email};
use herald::quantity::Span;
use herald::seed;
use herald::segment::{
    self, Column, Condition, EventCondition, FieldTest, Op, Predicate, Scalar, Subject, Test,
};
use herald::store::Store;
use herald::store::customers::CustomerWrite;
use herald::store::interactions::InteractionWrite;
use serde_json::{Map, Value, json};

const SEED: u64 = 3;
const ANCHOR: &str = "2026-11-01";
const NOW: Millis = 1_793_491_200_000; // 2026-11-01T00:00:00Z
const DAY: Millis = 86_400_000;

// ---------------------------------------------------------------------------
// The oracle: customers in memory and a direct reading of the documented rules.

#[derive(Debug, Clone)]
struct Customer {
    email: String,
    first_name: Option<String>,
    last_name: Option<String>,
    external_id: Option<String>,
    timezone: Option<String>,
    status: String,
    suppressed: bool,
    created_at: Millis,
    attributes: Value,
    interactions: Vec<Event>,
}

/// (kind, occurred_at, data, campaign, step)
type Event = (String, Millis, Value, Option<String>, Option<String>);
/// A hand-made customer and its (kind, occurred_at, data) interactions.
type Extra = (CustomerWrite, Vec<(&'static str, Millis, Value)>);

fn lookup<'a>(doc: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut v = doc;
    for name in path {
        v = v.as_object()?.get(name)?;
    }
    (!v.is_null()).then_some(v)
}

fn equals(v: &Value, s: &Scalar) -> bool {
    match (v, s) {
        (Value::String(a), Scalar::Text(b)) => a == b,
        (Value::Number(a), Scalar::Number(b)) => a.as_f64() == b.as_f64(),
        (Value::Bool(a), Scalar::Bool(b)) => a == b,
        _ => false,
    }
}

fn order(v: &Value, s: &Scalar) -> Option<std::cmp::Ordering> {
    match (v, s) {
        (Value::String(a), Scalar::Text(b)) => Some(a.as_str().cmp(b.as_str())),
        (Value::Number(a), Scalar::Number(b)) => a.as_f64()?.partial_cmp(&b.as_f64()?),
        _ => None,
    }
}

/// One operator on an optional JSON value (None = missing or null).
fn test_value(v: Option<&Value>, op: &Op, now: Millis) -> bool {
    use std::cmp::Ordering::*;
    let Some(v) = v else {
        return matches!(op, Op::Exists(false));
    };
    let timestamp = || v.as_str().and_then(parse_rfc3339);
    match op {
        Op::Eq(s) => equals(v, s),
        Op::Ne(s) => !equals(v, s),
        Op::In(l) => l.iter().any(|s| equals(v, s)),
        Op::NotIn(l) => !l.iter().any(|s| equals(v, s)),
        Op::Gt(s) => order(v, s) == Some(Greater),
        Op::Gte(s) => matches!(order(v, s), Some(Greater | Equal)),
        Op::Lt(s) => order(v, s) == Some(Less),
        Op::Lte(s) => matches!(order(v, s), Some(Less | Equal)),
        Op::Contains(t) => match v {
            Value::String(s) => s.contains(t.as_str()),
            Value::Array(items) => items.iter().any(|i| i.as_str() == Some(t)),
            _ => false,
        },
        Op::StartsWith(t) => v.as_str().is_some_and(|s| s.starts_with(t.as_str())),
        Op::Exists(e) => *e,
        Op::Within(d) => timestamp().is_some_and(|t| t >= now - d.as_millis()),
        Op::OlderThan(d) => timestamp().is_some_and(|t| t < now - d.as_millis()),
    }
}

fn eval(c: &Condition, x: &Customer, now: Millis, campaign: &str) -> bool {
    match c {
        Condition::All(cs) => cs.iter().all(|c| eval(c, x, now, campaign)),
        Condition::Any(cs) => cs.iter().any(|c| eval(c, x, now, campaign)),
        Condition::Not(c) => !eval(c, x, now, campaign),
        Condition::Attribute(Test { subject, op }) => match subject {
            Subject::Attribute(path) => test_value(lookup(&x.attributes, path), op, now),
            Subject::Column(Column::CreatedAt) => match op {
                Op::Within(d) => x.created_at >= now - d.as_millis(),
                Op::OlderThan(d) => x.created_at < now - d.as_millis(),
                _ => test_value(Some(&json!(x.created_at)), op, now),
            },
            Subject::Column(col) => {
                let text = match col {
                    Column::Email => Some(x.email.clone()),
                    Column::FirstName => x.first_name.clone(),
                    Column::LastName => x.last_name.clone(),
                    Column::ExternalId => x.external_id.clone(),
                    Column::Timezone => x.timezone.clone(),
                    Column::CreatedAt => unreachable!(),
                };
                test_value(text.map(Value::String).as_ref(), op, now)
            }
        },
        Condition::Event(e) => {
            let n = x
                .interactions
                .iter()
                .filter(|(kind, at, data, _, _)| {
                    *kind == e.kind
                        && e.within.is_none_or(|w| *at >= now - w.as_millis())
                        && e.filters
                            .iter()
                            .all(|FieldTest { path, op }| test_value(lookup(data, path), op, now))
                })
                .count() as u64;
            n >= u64::from(e.min_count) && e.max_count.is_none_or(|m| n <= u64::from(m))
        }
        Condition::Opened(step) | Condition::Clicked(step) => {
            let kind = if matches!(c, Condition::Opened(_)) {
                "email_opened"
            } else {
                "email_clicked"
            };
            x.interactions.iter().any(|(k, _, _, camp, st)| {
                k == kind && camp.as_deref() == Some(campaign) && st.as_deref() == Some(step)
            })
        }
    }
}

fn expected(world: &[Customer], c: &Condition, now: Millis) -> BTreeSet<String> {
    world
        .iter()
        .filter(|x| x.status == "subscribed" && !x.suppressed)
        .filter(|x| eval(c, x, now, "test"))
        .map(|x| x.email.clone())
        .collect()
}

// ---------------------------------------------------------------------------
// The data: seeded customers, some suppressed, plus a few hand-made ones with
// attribute shapes the seeder never makes (arrays, timestamps, wrong types).

fn extras() -> Vec<Extra> {
    let mk = |email: &str, attributes: Value| CustomerWrite {
        email: Email::parse(email).unwrap(),
        external_id: None,
        first_name: None,
        last_name: None,
        status: CustomerStatus::Subscribed,
        timezone: None,
        attributes: attributes.as_object().cloned().unwrap_or_default(),
        created_at: NOW - 3 * DAY,
        updated_at: NOW,
    };
    vec![
        (
            mk(
                "tags.one@example.com",
                json!({"tags": ["vip", "beta"], "last_login": "2026-10-30T10:00:00Z", "score": "12", "country": "DE"}),
            ),
            vec![("email_opened", NOW - DAY, json!({}))],
        ),
        (
            mk(
                "tags.two@example.com",
                json!({"tags": ["beta"], "last_login": "2025-01-01T00:00:00+02:00", "score": 12, "nested": {"deep": {"x": 1.5}}}),
            ),
            vec![("email_clicked", NOW - DAY, json!({}))],
        ),
        (
            mk(
                "odd.types@example.com",
                json!({"tags": "vip-list", "last_login": "yesterday", "score": null, "lifetime_value": "250", "vip": "true", "plan": 5}),
            ),
            vec![(
                "purchase",
                NOW - 2 * DAY,
                json!({"amount": "35", "category": "shoes"}),
            )],
        ),
        (
            mk(
                "bad.date@example.com",
                json!({"last_login": "2026-13-45T00:00:00Z", "country": "'; DROP TABLE customers; --"}),
            ),
            vec![],
        ),
    ]
}

fn world(n: u64) -> Vec<Customer> {
    let mut out: Vec<Customer> = (0..n)
        .map(|i| {
            let c = seed::customer(SEED, i, NOW);
            Customer {
                suppressed: i % 40 == 7,
                email: c.email,
                first_name: Some(c.first_name),
                last_name: Some(c.last_name),
                external_id: Some(c.external_id),
                timezone: Some(c.timezone.to_string()),
                status: c.status.to_string(),
                created_at: c.created_at,
                attributes: Value::Object(c.attributes),
                interactions: c
                    .interactions
                    .into_iter()
                    .map(|x| {
                        (
                            x.kind.to_string(),
                            x.occurred_at,
                            Value::Object(x.data),
                            None,
                            None,
                        )
                    })
                    .collect(),
            }
        })
        .collect();
    for (w, events) in extras() {
        out.push(Customer {
            email: w.email.to_string(),
            first_name: None,
            last_name: None,
            external_id: None,
            timezone: None,
            status: w.status.to_string(),
            suppressed: false,
            created_at: w.created_at,
            attributes: Value::Object(w.attributes),
            interactions: events
                .into_iter()
                .map(|(k, t, d)| {
                    let engagement = k.starts_with("email_");
                    let step = if k == "email_opened" {
                        "offer"
                    } else {
                        "reminder"
                    };
                    (
                        k.to_string(),
                        t,
                        d,
                        engagement.then(|| "test".to_string()),
                        engagement.then(|| step.to_string()),
                    )
                })
                .collect(),
        });
    }
    out
}

/// Seeds through the real binary, then adds the extras and suppressions.
async fn load(db: &TestDb, n: u64, world: &[Customer]) -> Store {
    let out = db.herald(&[
        "seed",
        "--customers",
        &n.to_string(),
        "--seed",
        &SEED.to_string(),
        "--anchor",
        ANCHOR,
    ]);
    assert!(out.status.success(), "{out:?}");
    let store = db.store().await;
    let extras = extras();
    let writes: Vec<CustomerWrite> = extras.iter().map(|(w, _)| w.clone()).collect();
    store.write_customers(&writes).await.unwrap();
    let mut rows = Vec::new();
    for (w, events) in &extras {
        let id = store
            .customer_by_email(w.email.as_str())
            .await
            .unwrap()
            .unwrap()
            .id;
        for (kind, at, data) in events {
            let engagement = kind.starts_with("email_");
            let step = if *kind == "email_opened" {
                "offer"
            } else {
                "reminder"
            };
            rows.push(InteractionWrite {
                customer_id: id,
                kind: kind.to_string(),
                occurred_at: *at,
                campaign: engagement.then(|| "test".to_string()),
                step: engagement.then(|| step.to_string()),
                delivery_id: None,
                external_id: None,
                data: data.as_object().cloned().unwrap_or_else(Map::new),
            });
        }
    }
    store.write_interactions(&rows).await.unwrap();
    // Suppressions go in by SQL: the store has no API for them yet (a later issue).
    let suppressed: Vec<&str> = world
        .iter()
        .filter(|c| c.suppressed)
        .map(|c| c.email.as_str())
        .collect();
    suppress(db, &suppressed).await;
    store
}

async fn suppress(db: &TestDb, emails: &[&str]) {
    use sqlx::Connection as _;
    let sql = "INSERT INTO suppressions (email, reason, created_at) VALUES ($1, 'test', 0)";
    match db.backend {
        herald::store::Backend::Sqlite => {
            let mut conn = sqlx::SqliteConnection::connect(&db.url).await.unwrap();
            for e in emails {
                sqlx::query(sql).bind(*e).execute(&mut conn).await.unwrap();
            }
        }
        herald::store::Backend::Postgres => {
            let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
            for e in emails {
                sqlx::query(sql).bind(*e).execute(&mut conn).await.unwrap();
            }
            sqlx::query("ANALYZE").execute(&mut conn).await.unwrap();
        }
    }
}

async fn members(store: &Store, c: &Condition, now: Millis) -> BTreeSet<String> {
    let audience = segment::compile(
        Predicate::Audience(c),
        &segment::Context::new(store.backend(), now, "test"),
    );
    let mut out = BTreeSet::new();
    store
        .audience_for_each(&audience, |_, email| {
            out.insert(email.to_string());
            Ok::<_, ()>(())
        })
        .await
        .unwrap()
        .unwrap();
    let count = store.audience_count(&audience).await.unwrap();
    assert_eq!(count as usize, out.len(), "count and list disagree");
    out
}

// ---------------------------------------------------------------------------
// The table: conditions written as campaign YAML, so the parser is in the loop.

/// (name, audience YAML, the expected set may be empty)
const CASES: &[(&str, &str, bool)] = &[
    ("country in", "attribute: country\nin: [DE, AT, CH]", false),
    ("number gte", "attribute: lifetime_value\ngte: 100", false),
    ("string eq", "attribute: plan\neq: pro", false),
    ("string ne", "attribute: plan\nne: free", false),
    ("integer gt", "attribute: orders\ngt: 2", false),
    ("float lt", "attribute: lifetime_value\nlt: 129.5", false),
    ("bool eq true", "attribute: vip\neq: true", false),
    ("bool eq false", "attribute: newsletter\neq: false", false),
    ("nested", "attribute: address.city\neq: Berlin", false),
    ("deep nested", "attribute: nested.deep.x\ngte: 1.5", false),
    ("not_in", "attribute: language\nnot_in: [en, de]", false),
    ("mixed in", "attribute: plan\nin: [pro, 5, true]", false),
    ("starts_with", "attribute: city\nstarts_with: San", false),
    ("contains text", "attribute: city\ncontains: o", false),
    (
        "contains array or text",
        "attribute: tags\ncontains: vip",
        false,
    ),
    ("string gt", "attribute: city\ngt: Paris", false),
    ("type mismatch gt", "attribute: score\ngt: 10", false),
    (
        "type mismatch ne",
        "attribute: lifetime_value\nne: \"250\"",
        false,
    ),
    ("exists false", "attribute: tags\nexists: false", false),
    ("exists true", "attribute: score\nexists: true", false),
    ("missing eq", "attribute: no_such\neq: x", true),
    ("missing ne", "attribute: no_such\nne: x", true),
    (
        "not over missing",
        "not:\n  attribute: lifetime_value\n  gt: 50",
        false,
    ),
    (
        "timestamp within",
        "attribute: last_login\nwithin: 7d",
        false,
    ),
    (
        "timestamp older_than",
        "attribute: last_login\nolder_than: 7d",
        false,
    ),
    (
        "email starts_with",
        "attribute: email\nstarts_with: anna.",
        false,
    ),
    (
        "first_name in",
        "attribute: first_name\nin: [Léa, Søren, José]",
        false,
    ),
    ("last_name gte", "attribute: last_name\ngte: Müller", false),
    (
        "timezone ne",
        "attribute: timezone\nne: Europe/Berlin",
        false,
    ),
    (
        "external_id exists false",
        "attribute: external_id\nexists: false",
        false,
    ),
    (
        "created within",
        "attribute: created_at\nwithin: 30d",
        false,
    ),
    (
        "created older",
        "attribute: created_at\nolder_than: 365d",
        false,
    ),
    (
        "created after",
        "attribute: created_at\ngte: \"2026-06-01T00:00:00Z\"",
        false,
    ),
    ("event any", "event: purchase", false),
    ("event window", "event: purchase\nwithin: 90d", false),
    ("event min", "event: purchase\nmin_count: 3", false),
    ("event none", "event: purchase\nmax_count: 0", false),
    (
        "event range",
        "event: page_view\nwithin: 180d\nmin_count: 5\nmax_count: 8",
        false,
    ),
    (
        "event where",
        "event: purchase\nwhere:\n  - field: category\n    eq: shoes\n  - field: amount\n    gt: 100",
        false,
    ),
    (
        "event where bool",
        "event: support_ticket\nwhere:\n  - field: resolved\n    eq: false\n  - field: priority\n    in: [high]",
        false,
    ),
    ("not event", "not:\n  event: purchase", false),
    (
        "any",
        "any:\n  - attribute: vip\n    eq: true\n  - attribute: orders\n    eq: 0",
        false,
    ),
    ("all empty", "all: []", false),
    ("any empty", "any: []", true),
    (
        "winback",
        "all:\n  - attribute: country\n    in: [DE, AT, CH]\n  - attribute: lifetime_value\n    gte: 100\n  - event: purchase\n    within: 365d\n    where:\n      - field: amount\n        gte: 20\n  - not:\n      event: purchase\n      within: 30d",
        false,
    ),
    (
        "injection is a value",
        "attribute: country\neq: \"'; DROP TABLE customers; --\"",
        false,
    ),
];

fn campaign_with(audience: &str) -> campaign::Campaign {
    let indented: String = audience.lines().map(|l| format!("  {l}\n")).collect();
    let text = format!(
        "name: test\nfrom: a@example.com\naudience:\n{indented}steps:\n  - id: offer\n    subject: s\n    template: t\n  - id: reminder\n    subject: s\n    template: t\n"
    );
    match campaign::parse("case.yaml", &text) {
        Ok(c) => c,
        Err(p) => panic!("{audience}: {p:?}"),
    }
}

const TABLE_CUSTOMERS: u64 = 2000;

async fn segment_cases_match_the_oracle(db: TestDb) {
    let world = world(TABLE_CUSTOMERS);
    let store = load(&db, TABLE_CUSTOMERS, &world).await;
    let mut failures = Vec::new();
    for (name, yaml, may_be_empty) in CASES {
        let c = campaign_with(yaml);
        let want = expected(&world, &c.audience, NOW);
        let got = members(&store, &c.audience, NOW).await;
        if !may_be_empty && want.is_empty() {
            failures.push(format!(
                "{name}: the oracle selects nobody; the case proves little"
            ));
        }
        if got != want {
            failures.push(format!(
                "{name}: {} members, expected {}; extra {:?}; missing {:?}",
                got.len(),
                want.len(),
                got.difference(&want).take(3).collect::<Vec<_>>(),
                want.difference(&got).take(3).collect::<Vec<_>>()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // The injection case left the table alone.
    assert!(store.table_counts().await.unwrap().customers > TABLE_CUSTOMERS as i64);
    store.close().await;
}
both_backends!(segment_cases, segment_cases_match_the_oracle);

/// `opened:`/`clicked:` compile against this campaign's engagement interactions.
async fn engagement_conditions(db: TestDb) {
    let world = world(50);
    let store = load(&db, 50, &world).await;
    let cases = [
        (
            Condition::Opened("offer".into()),
            vec!["tags.one@example.com"],
        ),
        (
            Condition::Clicked("reminder".into()),
            vec!["tags.two@example.com"],
        ),
        (Condition::Opened("reminder".into()), vec![]),
    ];
    for (c, want) in cases {
        let got = members(&store, &c, NOW).await;
        let want: BTreeSet<String> = want.into_iter().map(String::from).collect();
        assert_eq!(got, want, "{c:?}");
        assert_eq!(expected(&world, &c, NOW), want, "oracle {c:?}");
    }
    // Another campaign's opens do not count.
    let other = segment::compile(
        Predicate::Audience(&Condition::Opened("offer".into())),
        &segment::Context::new(store.backend(), NOW, "other"),
    );
    assert_eq!(store.audience_count(&other).await.unwrap(), 0);
    store.close().await;
}
both_backends!(engagement, engagement_conditions);

/// The clock is a parameter: the same tree at another "now" gives other members.
async fn now_is_a_parameter(db: TestDb) {
    let world = world(300);
    let store = load(&db, 300, &world).await;
    let c = campaign_with("event: purchase\nwithin: 30d").audience;
    for now in [NOW, NOW - 200 * DAY, NOW - 400 * DAY] {
        assert_eq!(members(&store, &c, now).await, expected(&world, &c, now));
    }
    assert_ne!(
        expected(&world, &c, NOW),
        expected(&world, &c, NOW - 200 * DAY)
    );
    store.close().await;
}
both_backends!(clock, now_is_a_parameter);

// ---------------------------------------------------------------------------
// Property test: random trees, both backends, one oracle.

mod random {
    use super::*;
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};

    fn text(s: &str) -> Scalar {
        Scalar::Text(s.to_string())
    }
    fn num(n: f64) -> Scalar {
        Scalar::Number(serde_json::Number::from_f64(n).unwrap())
    }

    fn scalar() -> impl Strategy<Value = Scalar> {
        prop_oneof![
            prop::sample::select(vec!["DE", "US", "pro", "free", "Berlin", "en", "vip", "12"])
                .prop_map(text),
            prop::sample::select(vec![0.0, 1.0, 2.0, 3.0, 12.0, 59.8, 100.0, 129.0, 250.0])
                .prop_map(num),
            any::<bool>().prop_map(Scalar::Bool),
        ]
    }

    fn op() -> impl Strategy<Value = Op> {
        let days = |d: u64| Span::from_secs(d * 86_400);
        prop_oneof![
            scalar().prop_map(Op::Eq),
            scalar().prop_map(Op::Ne),
            prop::collection::vec(scalar(), 1..4).prop_map(Op::In),
            prop::collection::vec(scalar(), 1..4).prop_map(Op::NotIn),
            scalar()
                .prop_filter("no booleans", |s| !matches!(s, Scalar::Bool(_)))
                .prop_flat_map(|s| prop_oneof![
                    Just(Op::Gt(s.clone())),
                    Just(Op::Gte(s.clone())),
                    Just(Op::Lt(s.clone())),
                    Just(Op::Lte(s)),
                ]),
            prop::sample::select(vec!["e", "vi", "Ber", ""]).prop_map(|s| Op::Contains(s.into())),
            prop::sample::select(vec!["S", "B", "fr"]).prop_map(|s| Op::StartsWith(s.into())),
            any::<bool>().prop_map(Op::Exists),
            prop::sample::select(vec![1u64, 7, 400, 1000]).prop_map(move |d| Op::Within(days(d))),
            prop::sample::select(vec![1u64, 7, 400, 1000])
                .prop_map(move |d| Op::OlderThan(days(d))),
        ]
    }

    fn path() -> impl Strategy<Value = Vec<String>> {
        prop::sample::select(vec![
            "country",
            "plan",
            "lifetime_value",
            "orders",
            "vip",
            "newsletter",
            "language",
            "address.city",
            "tags",
            "last_login",
            "score",
            "missing",
        ])
        .prop_map(|p| p.split('.').map(String::from).collect())
    }

    fn leaf() -> impl Strategy<Value = Condition> {
        let field = (
            prop::sample::select(vec!["amount", "category", "resolved", "priority", "path"]),
            op(),
        )
            .prop_map(|(f, op)| FieldTest {
                path: vec![f.to_string()],
                op,
            });
        prop_oneof![
            3 => (path(), op()).prop_map(|(p, op)| Condition::Attribute(Test {
                subject: Subject::Attribute(p),
                op
            })),
            1 => (
                prop::sample::select(vec!["purchase", "page_view", "support_ticket"]),
                prop::option::of(prop::sample::select(vec![30u64, 180, 365])),
                0u32..4,
                prop::option::of(0u32..6),
                prop::collection::vec(field, 0..2),
            )
                .prop_map(|(kind, within, min, max, filters)| {
                    Condition::Event(EventCondition {
                        kind: kind.to_string(),
                        within: within.map(|d| Span::from_secs(d * 86_400)),
                        min_count: min,
                        max_count: max,
                        filters,
                    })
                }),
        ]
    }

    fn tree() -> impl Strategy<Value = Condition> {
        leaf().prop_recursive(3, 12, 3, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..3).prop_map(Condition::All),
                prop::collection::vec(inner.clone(), 0..3).prop_map(Condition::Any),
                inner.prop_map(|c| Condition::Not(Box::new(c))),
            ]
        })
    }

    const CUSTOMERS: u64 = 300;

    #[test]
    fn random_trees_agree_on_both_backends_and_the_oracle() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let world = world(CUSTOMERS);
        let sqlite = TestDb::sqlite();
        let pg = rt.block_on(TestDb::postgres());
        let mut stores = vec![rt.block_on(load(&sqlite, CUSTOMERS, &world))];
        if let Some(pg) = &pg {
            stores.push(rt.block_on(load(pg, CUSTOMERS, &world)));
        }
        let cases = std::env::var("HERALD_PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(96);
        let mut runner = TestRunner::new(Config {
            cases,
            failure_persistence: None,
            ..Config::default()
        });
        let result = runner.run(&tree(), |c| {
            let want = expected(&world, &c, NOW);
            for store in &stores {
                let got = rt.block_on(members(store, &c, NOW));
                prop_assert_eq!(
                    &got,
                    &want,
                    "{} disagrees with the oracle",
                    store.backend().name()
                );
            }
            Ok(())
        });
        for s in &stores {
            rt.block_on(s.close());
        }
        if let Err(e) = result {
            panic!("{e}");
        }
    }
}

/// Integer and fractional operands in the same SQL text, many times over the
/// pool's connections: each prepared statement must read both correctly.
async fn number_operands_share_statements(db: TestDb) {
    let world = world(200);
    let store = load(&db, 200, &world).await;
    for round in 0..12 {
        for yaml in [
            "attribute: lifetime_value\ngte: 100",
            "attribute: lifetime_value\ngte: 100.5",
        ] {
            let c = campaign_with(yaml).audience;
            assert_eq!(
                members(&store, &c, NOW).await,
                expected(&world, &c, NOW),
                "{yaml} round {round}"
            );
        }
    }
    store.close().await;
}
both_backends!(number_operands, number_operands_share_statements);
