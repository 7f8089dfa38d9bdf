//! Campaign files end to end: exact messages for malformed files, `herald
//! validate` over many files, `herald schema`, and `herald audience`.

mod common;

use std::path::Path;

use common::{TestDb, stdout};
use herald::campaign;

/// A valid campaign; each case below changes one thing in it.
const BASE: &str = r#"# yaml-language-server: $schema=schema.json
name: winback
from: "Acme Shop <hello@acme.example>"
audience:
  all:
    - attribute: country
      in: [DE, AT, CH]
    - event: purchase
      within: 365d
    - not: { event: purchase, within: 30d }
    - attribute: lifetime_value
      gte: 100
steps:
  - id: offer
    subject: "15% off"
    template: winback
  - id: reminder
    wait: 3d
    when:
      not: { opened: offer }
    subject: "Soon"
    template: winback-reminder
goal:
  event: purchase
"#;

/// (what is wrong, replace this, with this, the exact messages)
const MALFORMED: &[(&str, &str, &str, &[&str])] = &[
    (
        "an open that can never be known",
        "goal:",
        "tracking: false\ngoal:",
        &[
            "campaigns/winback.yaml:20:14: opened: can never be known in a campaign with tracking: false (no open pixel, no tracked links); turn tracking on or use another condition",
        ],
    ),
    (
        "the issue's example: unknown operator",
        "      gte: 100",
        "      greater: 100",
        &[
            "campaigns/winback.yaml:12:7: unknown operator \"greater\"; expected one of eq, ne, in, not_in, gt, gte, lt, lte, contains, starts_with, exists, within, older_than",
        ],
    ),
    (
        "unknown top-level key",
        "name: winback",
        "nme: winback",
        &[
            "campaigns/winback.yaml:2:1: unknown key \"nme\"; did you mean \"name\"? (expected one of name, description, kind, from, reply_to, schedule, trigger, timezone, reentry, tracking, audience, steps, goal, limits, send_window)",
            "campaigns/winback.yaml:2:1: missing key \"name\"",
        ],
    ),
    (
        "wrong type",
        "goal:",
        "tracking: \"yes\"\ngoal:",
        &["campaigns/winback.yaml:23:11: expected true or false, found a string"],
    ),
    (
        "missing required key",
        "from: \"Acme Shop <hello@acme.example>\"\n",
        "",
        &["campaigns/winback.yaml:2:1: missing key \"from\""],
    ),
    (
        "bad campaign name",
        "name: winback",
        "name: Win Back",
        &[
            "campaigns/winback.yaml:2:7: invalid campaign name \"Win Back\": use lower-case letters, digits and '-'",
        ],
    ),
    (
        "bad address",
        "from: \"Acme Shop <hello@acme.example>\"",
        "from: \"Acme Shop <hello-at-acme>\"",
        &[
            "campaigns/winback.yaml:3:7: invalid address \"Acme Shop <hello-at-acme>\": expected user@example.com or \"Name <user@example.com>\"",
        ],
    ),
    (
        "bad schedule",
        "goal:",
        "schedule: \"0 9 * *\"\ngoal:",
        &[
            "campaigns/winback.yaml:23:11: invalid schedule \"0 9 * *\": expected 5 cron fields (minute hour day-of-month month day-of-week), e.g. \"0 9 * * MON-FRI\"",
        ],
    ),
    (
        "numeric weekdays",
        "goal:",
        "schedule: \"0 9 * * 1-5\"\ngoal:",
        &[
            "campaigns/winback.yaml:23:11: invalid schedule \"0 9 * * 1-5\": write days of the week as names (MON-FRI, SUN), not numbers",
        ],
    ),
    (
        "bad time zone",
        "goal:",
        "timezone: Europe/Berln\ngoal:",
        &[
            "campaigns/winback.yaml:23:11: unknown time zone \"Europe/Berln\": expected an IANA name such as Europe/Berlin",
        ],
    ),
    (
        "bad reentry",
        "goal:",
        "reentry: sometimes\ngoal:",
        &[
            "campaigns/winback.yaml:23:10: invalid reentry \"sometimes\": expected never, always or a duration such as 90d",
        ],
    ),
    (
        "bad rate",
        "goal:",
        "limits: { rate: fast }\ngoal:",
        &[
            "campaigns/winback.yaml:23:17: invalid rate \"fast\": expected COUNT/UNIT with unit s, m, h or d (for example 50/s)",
        ],
    ),
    (
        "bad duration",
        "      within: 365d",
        "      within: 1y",
        &[
            "campaigns/winback.yaml:9:15: invalid duration \"1y\": expected a whole number followed by s, m, h, d or w (for example 90d)",
        ],
    ),
    (
        "two operators",
        "      gte: 100",
        "      gte: 100\n      lte: 500",
        &[
            "campaigns/winback.yaml:13:7: more than one operator (\"gte\" and \"lte\"); write each as its own condition under all:",
        ],
    ),
    (
        "no operator",
        "      gte: 100\n",
        "",
        &[
            "campaigns/winback.yaml:11:7: condition on \"lifetime_value\" has no operator; expected one of eq, ne, in, not_in, gt, gte, lt, lte, contains, starts_with, exists, within, older_than",
        ],
    ),
    (
        "unknown condition",
        "    - event: purchase\n      within: 365d",
        "    - evnt: purchase",
        &[
            "campaigns/winback.yaml:8:7: unknown condition \"evnt\"; expected one of attribute, event, all, any, not",
        ],
    ),
    (
        "two heads in one condition",
        "    - event: purchase\n      within: 365d",
        "    - event: purchase\n      attribute: country",
        &[
            "campaigns/winback.yaml:9:7: \"attribute\" cannot share a condition with \"event\"; list them under all: or any:",
        ],
    ),
    (
        "unknown key in an event",
        "      within: 365d",
        "      since: 365d",
        &[
            "campaigns/winback.yaml:9:7: unknown key \"since\" in an event condition; expected one of within, min_count, max_count, where",
        ],
    ),
    (
        "opened in the audience",
        "    - event: purchase\n      within: 365d",
        "    - opened: offer",
        &["campaigns/winback.yaml:8:7: \"opened\" is only allowed in a step's when: or in goal:"],
    ),
    (
        "opened names a later step",
        "opened: offer",
        "opened: reminder",
        &[
            "campaigns/winback.yaml:20:22: opened: \"reminder\" is not an earlier step; expected one of offer",
        ],
    ),
    (
        "when on the first step",
        "    template: winback\n",
        "    template: winback\n    when: { opened: offer }\n",
        &[
            "campaigns/winback.yaml:17:5: the first step has no when: (its audience is the campaign's audience; put conditions there)",
        ],
    ),
    (
        "duplicate step id",
        "  - id: reminder",
        "  - id: offer",
        &["campaigns/winback.yaml:17:9: duplicate step id \"offer\" (already used by step 1)"],
    ),
    (
        "field outside where",
        "    - attribute: country\n",
        "    - field: country\n",
        &[
            "campaigns/winback.yaml:6:7: \"field\" is only allowed in an event's where:; use attribute: for customers",
        ],
    ),
    (
        "bad attribute name",
        "attribute: country",
        "attribute: \"country name\"",
        &[
            "campaigns/winback.yaml:6:18: invalid attribute name \"country name\": use letters, digits, '_' and '-', with '.' between nested names",
        ],
    ),
    (
        "status is not a condition",
        "attribute: country\n      in: [DE, AT, CH]",
        "attribute: status\n      eq: subscribed",
        &[
            "campaigns/winback.yaml:6:18: \"status\" cannot be tested: audiences only ever hold subscribed customers",
        ],
    ),
    (
        "created_at takes timestamps",
        "attribute: country\n      in: [DE, AT, CH]",
        "attribute: created_at\n      eq: 5",
        &["campaigns/winback.yaml:7:7: created_at takes within, older_than, gt, gte, lt or lte"],
    ),
    (
        "text column with a number",
        "attribute: country\n      in: [DE, AT, CH]",
        "attribute: email\n      eq: 5",
        &["campaigns/winback.yaml:7:11: email is text: compare it with strings"],
    ),
    (
        "gt with a boolean",
        "      gte: 100",
        "      gt: true",
        &["campaigns/winback.yaml:12:11: \"gt\" compares numbers or strings, not booleans"],
    ),
    (
        "empty in list",
        "in: [DE, AT, CH]",
        "in: []",
        &["campaigns/winback.yaml:7:11: expected a non-empty list"],
    ),
    (
        "min above max",
        "      within: 365d",
        "      within: 365d\n      min_count: 3\n      max_count: 1",
        &["campaigns/winback.yaml:11:18: max_count (1) is below min_count (3)"],
    ),
    (
        "template name with a path",
        "    template: winback\n",
        "    template: ../secret\n",
        &[
            "campaigns/winback.yaml:16:15: invalid template name \"../secret\": use letters, digits, '-' and '_' (templates/NAME.html.hbs)",
        ],
    ),
    (
        "missing step keys",
        "    subject: \"15% off\"\n    template: winback\n",
        "",
        &[
            "campaigns/winback.yaml:14:5: missing key \"subject\" in a step",
            "campaigns/winback.yaml:14:5: missing key \"template\" in a step",
        ],
    ),
    (
        "YAML syntax: unclosed flow",
        "in: [DE, AT, CH]",
        "in: [DE, AT, CH",
        &[
            "campaigns/winback.yaml:8:12: did not find expected ',' or ']', while parsing a flow sequence",
        ],
    ),
    (
        "YAML syntax: duplicate key",
        "name: winback",
        "name: winback\nname: again",
        &["campaigns/winback.yaml:2:1: duplicate entry with key \"name\""],
    ),
    (
        "YAML syntax: tab indentation",
        "  all:\n",
        "  all:\n\t",
        &[
            "campaigns/winback.yaml:6:1: found character that cannot start any token, while scanning for the next token",
        ],
    ),
    (
        "several problems at once",
        "name: winback",
        "name: Win Back\nreentry: sometimes",
        &[
            "campaigns/winback.yaml:2:7: invalid campaign name \"Win Back\": use lower-case letters, digits and '-'",
            "campaigns/winback.yaml:3:10: invalid reentry \"sometimes\": expected never, always or a duration such as 90d",
        ],
    ),
];

fn messages(text: &str) -> Vec<String> {
    match campaign::parse("campaigns/winback.yaml", text) {
        Ok(_) => Vec::new(),
        Err(problems) => problems.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn the_base_campaign_is_valid() {
    assert_eq!(messages(BASE), Vec::<String>::new());
}

#[test]
fn malformed_files_get_exact_messages() {
    let mut wrong = Vec::new();
    for (what, from, to, want) in MALFORMED {
        assert!(
            BASE.contains(from),
            "{what}: {from:?} is not in the base file"
        );
        let got = messages(&BASE.replacen(from, to, 1));
        if got != *want {
            wrong.push(format!("{what}:\n  got  {got:#?}\n  want {want:#?}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn write(dir: &Path, name: &str, text: &str) {
    let path = dir.join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

#[test]
fn validate_reports_every_problem_of_every_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(
        d,
        "campaigns/a.yaml",
        &BASE.replace("      gte: 100", "      greater: 100"),
    );
    write(
        d,
        "campaigns/b.yaml",
        &BASE
            .replace("name: winback", "name: Win Back")
            .replace("within: 365d", "within: 1y"),
    );
    write(d, "campaigns/c.yaml", BASE); // fine, but its name is taken by d.yaml too
    write(
        d,
        "campaigns/d.yml",
        &BASE.replace("template: winback-reminder", "template: missing"),
    );
    write(d, "campaigns/notes.txt", "not a campaign");
    write(
        d,
        "templates/winback.html.hbs",
        "<p>{{unsubscribe_url}}</p>",
    );
    write(
        d,
        "templates/winback-reminder.html.hbs",
        "<p>{{unsubscribe_url}}</p>",
    );
    let out = common::herald_in(d, "sqlite://unused.db", &["validate"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(
        stdout(&out),
        "campaigns/a.yaml:12:7: unknown operator \"greater\"; expected one of eq, ne, in, not_in, gt, gte, lt, lte, contains, starts_with, exists, within, older_than\n\
         campaigns/b.yaml:2:7: invalid campaign name \"Win Back\": use lower-case letters, digits and '-'\n\
         campaigns/b.yaml:9:15: invalid duration \"1y\": expected a whole number followed by s, m, h, d or w (for example 90d)\n\
         campaigns/d.yml:2:7: campaign name \"winback\" is already used by campaigns/c.yaml\n\
         campaigns/d.yml:22:15: template \"missing\" not found: expected templates/missing.html.hbs\n"
    );
    assert!(common::stderr(&out).contains("5 problems found"));

    // Only the good file, named explicitly: exit 0.
    let ok = common::herald_in(d, "sqlite://unused.db", &["validate", "campaigns/c.yaml"]);
    assert_eq!(ok.status.code(), Some(0), "{ok:?}");
    assert_eq!(stdout(&ok), "1 campaigns OK\n");
}

/// What the fault suite fed `herald validate` without getting a position: an
/// invalid subject template, an alias bomb (capped, quickly), bytes that are not
/// UTF-8, and two documents in one file.
#[test]
fn every_unreadable_file_gets_a_position() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(
        d,
        "campaigns/a.yaml",
        &BASE.replace("subject: \"Soon\"", "subject: \"Soon {{#if x}}\""),
    );
    let mut bomb = String::from(
        "a: &a [\"lol\", \"lol\", \"lol\", \"lol\", \"lol\", \"lol\", \"lol\", \"lol\", \"lol\"]\n",
    );
    for (name, prev) in ["b", "c", "d", "e", "f", "g", "h", "i"]
        .iter()
        .zip(["a", "b", "c", "d", "e", "f", "g", "h"])
    {
        let list = vec![format!("*{prev}"); 9].join(", ");
        bomb.push_str(&format!("{name}: &{name} [{list}]\n"));
    }
    bomb.push_str("name: bomb\n");
    write(d, "campaigns/b.yaml", &bomb);
    let mut not_utf8 = BASE.replace("name: winback", "name: latin").into_bytes();
    let at = not_utf8.windows(4).position(|w| w == b"Acme").unwrap();
    not_utf8.splice(at..at + 4, *b"Acm\xe9");
    std::fs::write(d.join("campaigns/c.yaml"), not_utf8).unwrap();
    write(
        d,
        "campaigns/d.yaml",
        &format!(
            "{}---\nname: second\n",
            BASE.replace("name: winback", "name: first")
        ),
    );
    write(
        d,
        "templates/winback.html.hbs",
        "<p>{{unsubscribe_url}}</p>",
    );
    write(
        d,
        "templates/winback-reminder.html.hbs",
        "<p>{{unsubscribe_url}}</p>",
    );
    let started = std::time::Instant::now();
    let out = common::herald_in(d, "sqlite://unused.db", &["validate"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(
        stdout(&out),
        "campaigns/a.yaml:21:14: the subject is not a valid template: invalid Handlebars syntax (an unclosed or unbalanced {{…}} tag?), at character 15 of the subject\n\
         campaigns/b.yaml:2:8: aliases expand beyond the limit (a YAML alias bomb?); write the values out\n\
         campaigns/c.yaml:3:11: the file is not valid UTF-8 here; save it as UTF-8\n\
         campaigns/d.yaml:25:1: a second YAML document starts here; a campaign file holds one\n"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(60),
        "the bomb is capped"
    );
}

#[test]
fn the_shipped_campaigns_are_valid() {
    let out = common::herald_in(repo(), "sqlite://unused.db", &["validate"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(stdout(&out), "5 campaigns OK\n");
}

#[test]
fn shipped_schema_equals_herald_schema() {
    let out = common::herald_in(repo(), "sqlite://unused.db", &["schema"]);
    assert!(out.status.success());
    let shipped = std::fs::read_to_string(repo().join("campaigns/schema.json")).unwrap();
    assert!(
        stdout(&out) == shipped,
        "campaigns/schema.json is stale: run `herald schema > campaigns/schema.json`"
    );
}

const AT: &str = "2026-11-01T00:00:00Z";

async fn audience_command(db: TestDb) {
    let seeded = db.herald(&[
        "seed",
        "--customers",
        "1500",
        "--seed",
        "3",
        "--anchor",
        "2026-11-01",
    ]);
    assert!(seeded.status.success(), "{seeded:?}");
    // The shipped campaigns, run from the test's directory.
    for entry in std::fs::read_dir(repo().join("campaigns")).unwrap() {
        let p = entry.unwrap().path();
        std::fs::create_dir_all(db.path("campaigns")).unwrap();
        std::fs::copy(&p, db.path("campaigns").join(p.file_name().unwrap())).unwrap();
    }
    let store = db.store().await;
    for name in [
        "winback",
        "welcome",
        "newsletter",
        "cross-sell",
        "support-followup",
    ] {
        let c = campaign::find(name, &db.path("campaigns")).unwrap();
        let now = herald::clock::parse_rfc3339(AT).unwrap();
        let want = store
            .audience_count(&c.audience_sql(store.backend(), now))
            .await
            .unwrap();
        assert!(want > 0, "{name} selects nobody in the seeded data");

        let out = db.herald(&["audience", name, "--at", AT]);
        assert!(out.status.success(), "{out:?}");
        assert_eq!(
            stdout(&out),
            format!("{want} customers in the audience of {name}\n")
        );

        let list = db.herald(&["audience", name, "--list", "--at", AT]);
        let emails: Vec<String> = stdout(&list).lines().map(String::from).collect();
        assert_eq!(emails.len() as i64, want, "{name}");
        assert!(emails.iter().all(|e| e.contains('@') && !e.contains(' ')));
    }

    let sample = db.herald(&["audience", "winback", "--sample", "3", "--at", AT]);
    let text = stdout(&sample);
    assert_eq!(text.lines().count(), 4, "{text}");
    assert!(
        text.lines()
            .skip(1)
            .all(|l| l.starts_with("  ") && l.contains('@'))
    );

    let explain = db.herald(&["audience", "winback", "--explain", "--at", AT]);
    let text = stdout(&explain);
    assert!(
        text.contains("SELECT COUNT(*) FROM customers c WHERE"),
        "{text}"
    );
    assert!(text.contains("$2 = \"DE\""), "{text}");
    let plan_words = ["SEARCH", "SCAN", "Aggregate"];
    assert!(plan_words.iter().any(|w| text.contains(w)), "{text}");

    let unknown = db.herald(&["audience", "nope"]);
    assert!(!unknown.status.success());
    assert!(common::stderr(&unknown).contains("no campaign named \"nope\""));
    store.close().await;
}
both_backends!(audience, audience_command);

/// A mistyped campaign name is an error with a suggestion for every command
/// that takes one, and nothing is written (the report used to be an empty file
/// and exit 0).
async fn unknown_campaigns_are_errors_with_a_suggestion(db: TestDb) {
    std::fs::create_dir_all(db.path("campaigns")).unwrap();
    std::fs::create_dir_all(db.path("templates")).unwrap();
    for entry in std::fs::read_dir(repo().join("campaigns")).unwrap() {
        let p = entry.unwrap().path();
        std::fs::copy(&p, db.path("campaigns").join(p.file_name().unwrap())).unwrap();
    }
    let seeded = db.herald(&["seed", "--customers", "20", "--seed", "3"]);
    assert!(seeded.status.success(), "{seeded:?}");
    for args in [
        &["stats", "newsleter"][..],
        &["stats", "newsleter", "--json"],
        &["report", "newsleter", "--out", "r.html"],
        &["run", "newsleter"],
        &["run", "newsleter", "--dry-run"],
        &["preview", "newsleter"],
        &["audience", "newsleter"],
        &["status", "newsleter"],
    ] {
        let out = db.herald(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {out:?}");
        let err = common::stderr(&out);
        assert!(
            err.contains("no campaign") && err.contains("did you mean \"newsletter\"?"),
            "{args:?}: {err}"
        );
        assert!(stdout(&out).is_empty(), "{args:?}: {}", stdout(&out));
    }
    assert!(!db.path("r.html").exists());
    let out = db.herald(&["stats", "zzzzzz"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(!common::stderr(&out).contains("did you mean"), "{out:?}");
}
both_backends!(
    unknown_campaigns,
    unknown_campaigns_are_errors_with_a_suggestion
);

/// A campaign file may already describe a real-time journey (`herald validate`
/// accepts it), but the commands that send refuse one using keys this version
/// does not run yet, naming the keys, before they open the database: run as
/// a straight sequence it would mail every step after a branch. The straight
/// campaigns beside it are named as runnable.
#[test]
fn journeys_are_validated_but_not_yet_run() {
    let dir = tempfile::tempdir().unwrap();
    let base = "from: \"Acme <hello@acme.example>\"\naudience:\n  attribute: plan\n  eq: pro\n";
    write(
        dir.path(),
        "campaigns/cart.yaml",
        &format!(
            "name: cart\n{base}trigger:\n  event: cart_abandoned\nsteps:\n  - id: remind\n    subject: Your cart\n    template: welcome\n    branch:\n      - when:\n          event: purchase\n          min_count: 1\n        exit: bought\n      - goto: last\n  - id: last\n    wait: 1d\n    subject: Still there?\n    template: welcome\n"
        ),
    );
    write(
        dir.path(),
        "campaigns/plain.yaml",
        &format!(
            "name: plain\n{base}steps:\n  - id: one\n    subject: Hi\n    template: welcome\n"
        ),
    );
    let templates = repo().join("templates");
    let templates = templates.to_str().unwrap();
    let db = format!("sqlite://{}", dir.path().join("herald.db").display());

    let validate = common::herald_in(
        dir.path(),
        &db,
        &["validate", "campaigns", "--templates", templates],
    );
    assert!(validate.status.success(), "{validate:?}");

    for args in [
        vec!["run", "cart", "--templates", templates],
        vec!["run", "cart", "--dry-run", "--templates", templates],
        vec!["advance", "--templates", templates],
        vec!["worker", "--templates", templates],
    ] {
        let out = common::herald_in(dir.path(), &db, &args);
        assert!(!out.status.success(), "{args:?}: {out:?}");
        let err = common::stderr(&out);
        assert!(
            err.contains("campaign \"cart\" uses branch: this version of herald validates real-time journeys but does not run them yet"),
            "{args:?}: {err}"
        );
        assert!(err.contains("not running cart"), "{args:?}: {err}");
        assert!(!err.contains("\"plain\""), "{args:?}: {err}");
        assert!(
            !dir.path().join("herald.db").exists(),
            "{args:?} opened the database"
        );
    }

    // A triggered campaign of straight steps runs in the worker, but `herald
    // run` would mail its whole audience at once: refused, saying why.
    std::fs::remove_file(dir.path().join("campaigns/cart.yaml")).unwrap();
    write(
        dir.path(),
        "campaigns/carts.yaml",
        &format!(
            "name: carts\n{base}trigger:\n  event: cart_abandoned\nsteps:\n  - id: remind\n    subject: Your cart\n    template: welcome\n"
        ),
    );
    let out = common::herald_in(dir.path(), &db, &["run", "carts", "--templates", templates]);
    assert!(!out.status.success(), "{out:?}");
    let err = common::stderr(&out);
    assert!(
        err.contains("campaign \"carts\" is triggered by events (cart_abandoned): the worker enters each customer when the event arrives: `herald run` would send its first step to its whole audience at once"),
        "{err}"
    );
    assert!(!dir.path().join("herald.db").exists());
}
