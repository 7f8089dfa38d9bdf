//! The shipped templates: every step of every example campaign renders for
//! seeded customers on both backends; `herald preview` writes files that an
//! independent parser (Python's `email`, default policy) reads back;
//! `herald validate` reports a broken template with file, line and variable;
//! and a snapshot of one real template's parts.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use common::{TestDb, assert_snapshot, stderr, stdout};
use herald::campaign::{self, Campaign, Checks};
use herald::clock::{ManualClock, SystemClock, parse_rfc3339};
use herald::config::{Layer, Settings, Source};
use herald::pipeline::{self, Engine};
use herald::render::{self, links::Tracking};
use herald::segment::{self, Condition, Predicate};
use herald::token::Signer;
use serde_json::{Map, Value, json};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn shipped_campaigns() -> Vec<Campaign> {
    let dir = repo().join("templates");
    let catalog = campaign::load(
        &[repo().join("campaigns")],
        &Checks {
            templates: Some(&dir),
        },
    );
    assert!(catalog.problems.is_empty(), "{:?}", catalog.problems);
    catalog.campaigns.into_iter().map(|(_, c)| c).collect()
}

fn settings(db: &TestDb) -> Settings {
    let config = db.path("herald.toml");
    std::fs::write(&config, "").unwrap();
    let mut layer = Layer::new();
    for (k, v) in [
        ("database_url", db.url.as_str()),
        ("secret", "templates-test-secret-0123"),
        ("postal_address", "Acme Inc, 1 Main St, Springfield"),
    ] {
        layer.insert(k, (v.to_string(), Source::Flag));
    }
    Settings::load(layer, Some(&config)).unwrap()
}

async fn every_step_renders(db: TestDb) {
    let seeded = db.herald(&["seed", "--customers", "600", "--seed", "11"]);
    assert!(seeded.status.success(), "{seeded:?}");
    let store = db.store().await;
    let campaigns = shipped_campaigns();
    assert_eq!(campaigns.len(), 5);
    let scratch = tempfile::tempdir().unwrap();
    let engine = Engine::new(
        store.clone(),
        pipeline::render_only(&settings(&db), scratch.path()),
        &repo().join("templates"),
        &campaigns,
        Arc::new(SystemClock),
    )
    .await
    .unwrap();
    // Every customer, whatever the audience: a template must render for anyone.
    let everyone = segment::compile(
        Predicate::Audience(&Condition::All(Vec::new())),
        &segment::Context::new(store.backend(), herald::clock::now_millis(), "all"),
    );
    let ids = store.audience_ids(&everyone).await.unwrap();
    // Subscribed customers (the audience compiler always requires that).
    assert!(ids.len() > 500, "{}", ids.len());
    for c in &campaigns {
        let check = pipeline::check_templates(&engine, c, &ids).await.unwrap();
        assert_eq!(check.failures, vec![], "{}", c.name);
        assert_eq!(
            check.rendered,
            (ids.len() * c.steps.len()) as u64,
            "{}",
            c.name
        );
        // And each audience has members to render for (the data fits the campaigns).
        let (sample, of) = pipeline::check_sample(&store, c, herald::clock::now_millis(), 100)
            .await
            .unwrap();
        assert!(!sample.is_empty(), "{}", c.name);
        assert_eq!(of, pipeline::SampleOf::Audience, "{}", c.name);
    }
    store.close().await;

    // The same through `herald validate`, which samples each audience.
    let campaigns_dir = repo().join("campaigns");
    let templates_dir = repo().join("templates");
    let out = db.herald(&[
        "validate",
        campaigns_dir.to_str().unwrap(),
        "--templates",
        templates_dir.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = stdout(&out);
    assert!(
        text.contains("winback: 2 steps rendered for ")
            && text.contains("welcome: 3 steps rendered for "),
        "{text}"
    );
    assert!(text.ends_with("5 campaigns OK\n"), "{text}");
    assert!(
        !db.path("outbox").exists(),
        "validate must not create an outbox"
    );
}
both_backends!(every_step_renders_for_seeded_customers, every_step_renders);

/// Measured in each message's frame: the widths, every visible element that
/// sticks out of its parent's box, and the preheader (the body's first element).
const FITS: &str = r#"function (win, doc) {
  var outside = [];
  doc.querySelectorAll("body *").forEach(function (e) {
    var b = e.getBoundingClientRect();
    if (b.width === 0 && b.height === 0) return;
    var p = e.parentElement.getBoundingClientRect();
    if (b.left < p.left - 0.5 || b.right > p.right + 0.5) {
      outside.push(e.tagName.toLowerCase() + (e.className ? "." + e.className : "") +
        " spans " + Math.round(b.left) + "–" + Math.round(b.right) +
        " px in " + e.parentElement.tagName.toLowerCase() + " " +
        Math.round(p.left) + "–" + Math.round(p.right));
    }
  });
  var first = doc.body.firstElementChild;
  var box = first.getBoundingClientRect();
  return {
    width: win.innerWidth,
    scrollWidth: doc.documentElement.scrollWidth,
    outside: outside,
    preheader: first.textContent.trim(),
    preheaderShown: win.getComputedStyle(first).display !== "none" || box.width > 0 || box.height > 0,
    text: doc.body.innerText.length
  };
}"#;

/// Every shipped step's HTML in headless Chromium, in a frame as wide as a
/// phone (390 px) and as a desktop window (1200 px): nothing is wider than
/// the screen, nothing sticks out of the box it sits in (the cross-sell's
/// product cards did, by 16 px, once stacked), and the preheader is there
/// for the inbox's preview but not shown.
#[test]
fn shipped_messages_fit_a_phone_screen() {
    let Some(browser) = common::browser::chromium() else {
        return;
    };
    let db = TestDb::sqlite();
    let messages = common::preview_shipped_steps(&db);
    let pages: Vec<(String, String)> = messages
        .iter()
        .map(|m| (m.step.clone(), std::fs::read_to_string(&m.html).unwrap()))
        .collect();
    let pages: Vec<(&str, &str)> = pages
        .iter()
        .map(|(s, h)| (s.as_str(), h.as_str()))
        .collect();
    let measured = common::browser::layout(&browser, db.dir.path(), &pages, &[390, 1200], FITS);
    assert_eq!(measured.len(), messages.len() * 2);
    let mut problems = Vec::new();
    for ((step, width), m) in &measured {
        assert_eq!(m["width"], *width, "{step}: the frame is the screen");
        assert!(m["text"].as_u64().unwrap() > 200, "{step}: laid out: {m}");
        let scroll = m["scrollWidth"].as_u64().unwrap();
        if scroll > u64::from(*width) {
            problems.push(format!("{step} at {width} px: {scroll} px wide"));
        }
        for e in m["outside"].as_array().unwrap() {
            problems.push(format!("{step} at {width} px: {}", e.as_str().unwrap()));
        }
        assert!(
            m["preheader"].as_str().unwrap().len() > 20,
            "{step}: a preheader: {m}"
        );
        assert_eq!(
            m["preheaderShown"], false,
            "{step}: the preheader is hidden"
        );
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Copies the shipped campaigns and templates into `dir`.
fn copy_examples(dir: &Path) {
    for sub in ["campaigns", "templates", "templates/partials"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
        for entry in std::fs::read_dir(repo().join(sub)).unwrap() {
            let p = entry.unwrap().path();
            if p.is_file() {
                std::fs::copy(&p, dir.join(sub).join(p.file_name().unwrap())).unwrap();
            }
        }
    }
}

const POSTAL: &str = "Acme Inc., 1 Main Street, Springfield, OR 97477, USA";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preview_writes_an_eml_that_parses_back() {
    let db = TestDb::sqlite();
    copy_examples(db.dir.path());
    let seeded = db.herald(&["seed", "--customers", "300", "--seed", "4"]);
    assert!(seeded.status.success(), "{seeded:?}");
    let env = [("HERALD_POSTAL_ADDRESS", POSTAL)];

    let out = db.herald_env(&env, &["preview", "winback", "--out", "shots"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = stdout(&out);
    let paths: Vec<PathBuf> = text
        .lines()
        .filter_map(|l| {
            l.trim()
                .strip_prefix("shots/")
                .map(|f| db.path("shots").join(f))
        })
        .collect();
    let names: Vec<String> = paths
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        [
            "winback-offer.eml",
            "winback-offer.html",
            "winback-offer.txt"
        ],
        "{text}"
    );
    let email = text
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("winback/offer for "))
        .expect("first line names the customer")
        .to_string();

    let v = parse_eml(&paths[0]);
    assert_eq!(v["defects"], json!([]));
    assert_eq!(
        v["parts"],
        json!(["multipart/alternative", "text/plain", "text/html"])
    );
    assert!(v["to"].as_str().unwrap().contains(&email), "{}", v["to"]);
    assert!(
        v["subject"]
            .as_str()
            .unwrap()
            .ends_with(", 15% off your next order")
    );
    let lu = v["list_unsubscribe"].as_str().unwrap();
    assert!(lu.starts_with("<http://localhost:8080/u/"), "{lu}");
    assert_eq!(v["list_unsubscribe_post"], "List-Unsubscribe=One-Click");
    let unsubscribe = lu.trim_start_matches('<').trim_end_matches('>');
    let html = v["html"].as_str().unwrap();
    let plain = v["text"].as_str().unwrap();
    assert!(
        html.contains(&format!("href=\"{unsubscribe}\"")),
        "footer links the List-Unsubscribe URL"
    );
    assert!(html.contains(POSTAL) && plain.contains(POSTAL));
    assert!(
        plain.contains(&format!("Unsubscribe ({unsubscribe})")),
        "{plain}"
    );
    assert!(
        plain.contains("COMEBACK15") && !plain.contains('<'),
        "{plain}"
    );
    // The side files are the parts of the message.
    assert_eq!(std::fs::read_to_string(&paths[1]).unwrap(), html);
    assert_eq!(std::fs::read_to_string(&paths[2]).unwrap(), plain);

    // A named customer and step.
    let out = db.herald_env(
        &env,
        &[
            "preview",
            "winback",
            "--step",
            "reminder",
            "--customer",
            &email,
            "--out",
            "shots",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(stdout(&out).starts_with(&format!("winback/reminder for {email}\n")));
    assert!(db.path("shots/winback-reminder.eml").is_file());

    let out = db.herald(&["preview", "winback", "--step", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out)
            .contains("campaign winback has no step \"nope\"; its steps are: offer, reminder"),
        "{out:?}"
    );
    let out = db.herald(&["preview", "winback", "--customer", "nobody@example.com"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no customer with email \"nobody@example.com\""),
        "{out:?}"
    );

    // Previews write no deliveries and create no outbox.
    use sqlx::Connection as _;
    let mut conn = sqlx::SqliteConnection::connect(&db.url).await.unwrap();
    let deliveries: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM deliveries")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(deliveries, 0);
    assert!(!db.path("outbox").exists());
}

fn parse_eml(path: &Path) -> Value {
    let script = r#"
import sys, email, email.policy, json
m = email.message_from_binary_file(open(sys.argv[1], 'rb'), policy=email.policy.default)
print(json.dumps({
  "subject": str(m["subject"]), "to": str(m["to"]),
  "list_unsubscribe": str(m["list-unsubscribe"]), "list_unsubscribe_post": str(m["list-unsubscribe-post"]),
  "parts": [p.get_content_type() for p in m.walk()],
  "html": m.get_body(('html',)).get_content(), "text": m.get_body(('plain',)).get_content(),
  "defects": [str(d) for p in m.walk() for d in p.defects]}))
"#;
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(path)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_reports_template_errors_with_line_and_customer() {
    let db = TestDb::sqlite();
    copy_examples(db.dir.path());

    // No database yet: file checks only, and a note saying so.
    let out = db.herald(&["validate"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(stdout(&out), "5 campaigns OK\n");
    assert!(stderr(&out).contains("no database at"), "{out:?}");
    assert!(
        !db.path("herald.db").exists(),
        "validate must not create it"
    );

    // A database without customers.
    assert!(db.herald(&["migrate"]).status.success());
    let out = db.herald(&["validate"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(stderr(&out).contains("no customers in"), "{out:?}");

    let seeded = db.herald(&["seed", "--customers", "300", "--seed", "4"]);
    assert!(seeded.status.success());
    let path = db.path("templates/winback-reminder.html.hbs");
    let source = std::fs::read_to_string(&path).unwrap();
    // Line 3 gains a variable no customer has.
    let mut lines: Vec<&str> = source.lines().collect();
    lines.insert(2, "<p>Your colour: {{customer.favourite_colour}}</p>");
    std::fs::write(&path, lines.join("\n")).unwrap();

    let out = db.herald(&["validate"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let text = stdout(&out);
    let error = text
        .lines()
        .find(|l| l.starts_with("templates/winback-reminder.html.hbs:3:"))
        .unwrap_or_else(|| panic!("no error line for the template: {text}"));
    assert!(
        error.contains("variable \"customer.favourite_colour\" is missing"),
        "{error}"
    );
    assert!(
        error.contains("(campaign winback, step reminder, customer ") && error.contains(" more)"),
        "{error}"
    );
    assert!(text.contains("winback: 2 steps rendered for"), "{text}");
    assert!(stderr(&out).contains("1 problem found"), "{out:?}");
}

/// One real template's parts for a fixed customer, events and clock.
#[test]
fn winback_offer_parts_match_snapshots() {
    let campaigns = shipped_campaigns();
    let templates = pipeline::templates_for(&repo().join("templates"), &campaigns).unwrap();
    let attrs: Map<String, Value> = json!({
        "country": "DE", "city": "Berlin", "plan": "pro", "lifetime_value": 512.4,
        "orders": 3, "vip": true, "language": "de"
    })
    .as_object()
    .unwrap()
    .clone();
    let customer = render::customer_context(
        42,
        "lea.mueller@example.com",
        Some("C-42"),
        Some("Léa"),
        Some("Müller"),
        Some("Europe/Berlin"),
        parse_rfc3339("2024-03-05T10:00:00Z").unwrap(),
        &attrs,
    );
    let purchase = |at: &str, product: &str, amount: f64, quantity: i64| {
        render::event_context(
            parse_rfc3339(at).unwrap(),
            json!({"product": product, "amount": amount, "currency": "EUR",
                   "category": "shoes", "quantity": quantity})
            .as_object()
            .unwrap(),
        )
    };
    let mut events = Map::new();
    events.insert(
        "purchase".into(),
        json!([
            purchase("2026-08-30T22:30:00Z", "Trail Running Shoes", 129.0, 1),
            purchase("2026-05-02T09:00:00Z", "Hiking Socks", 29.8, 2),
        ]),
    );
    let signer = Signer::new(&["snapshot-secret-0123456789".to_string()]).unwrap();
    let tracking = Tracking {
        signer: &signer,
        base_url: "https://t.acme.example",
        delivery_id: 5001,
        customer_id: 42,
    };
    let unsubscribe = tracking.unsubscribe_url();
    let clock = ManualClock::at(parse_rfc3339("2026-11-02T08:00:00Z").unwrap());
    let context = render::message_context(
        customer,
        "winback",
        "offer",
        events,
        &unsubscribe,
        Some(POSTAL),
        herald::clock::Clock::now(&clock),
    );
    let mut r = templates
        .render(
            "winback",
            &pipeline::subject_key("winback", "offer"),
            context,
        )
        .unwrap();
    r.html = tracking.apply(&r.html, &unsubscribe);
    assert_snapshot("winback-offer.subject.txt", &r.subject);
    assert_snapshot("winback-offer.html", &r.html);
    assert_snapshot("winback-offer.txt", &r.text);
}
