//! Sending for real the first time, as a new operator would: a relay without
//! 8BITMIME, messages that fail for good, and a run where every message fails.
//! The real binary, a real SMTP server over TCP, both backends.

mod common;

use common::smtp::SmtpServer;
use common::{TestDb, stderr, stdout};

const TEMPLATE: &str = r#"<p>Grüße, {{default customer.first_name "there"}}: schöne Woche!</p>
<a href="{{unsubscribe_url}}">Abmelden</a>"#;

const CAMPAIGN: &str = r#"name: t
from: "Acme Shöp <hello@acme.example>"
audience:
  attribute: country
  exists: true
steps:
  - id: hello
    subject: 'Grüße, {{default customer.first_name "there"}}'
    template: hello
"#;

/// Writes the campaign and imports `emails` (all in the audience).
fn setup(db: &TestDb, emails: &[String]) {
    std::fs::create_dir_all(db.path("campaigns")).unwrap();
    std::fs::create_dir_all(db.path("templates")).unwrap();
    std::fs::write(db.path("campaigns/t.yaml"), CAMPAIGN).unwrap();
    std::fs::write(db.path("templates/hello.html.hbs"), TEMPLATE).unwrap();
    let mut csv = String::from("email,first_name,country\n");
    for e in emails {
        csv.push_str(&format!("{e},Jörg,DE\n"));
    }
    std::fs::write(db.path("c.csv"), csv).unwrap();
    let out = db.herald(&["import", "customers", "c.csv"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

fn emails(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}@x.example")).collect()
}

/// A relay that does not announce 8BITMIME gets every message, each one
/// ASCII throughout (quoted-printable bodies, encoded headers), and the DKIM
/// signature covers what was sent.
async fn relay_without_8bitmime(db: TestDb) {
    let audience = emails("q", 12);
    setup(&db, &audience);
    let server = SmtpServer::accepting().await;
    server.refuse_8bitmime();
    let url = server.url();
    let key = common::dkim_key_path();
    let env = [
        ("HERALD_SMTP_URL", url.as_str()),
        ("HERALD_DKIM_SELECTOR", "herald"),
        ("HERALD_DKIM_DOMAIN", "acme.example"),
        ("HERALD_DKIM_KEY", key.to_str().unwrap()),
    ];
    let out = db.herald_env(&env, &["run", "t"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("sent 12, "), "{}", stdout(&out));
    let received = server.received();
    assert_eq!(received.len(), 12);
    for r in &received {
        assert!(r.data.is_ascii(), "{}", String::from_utf8_lossy(&r.data));
        assert!(!r.mail_params.contains("8BITMIME"), "{}", r.mail_params);
        let text = String::from_utf8_lossy(&r.data);
        assert!(
            text.contains("Content-Transfer-Encoding: quoted-printable"),
            "{text}"
        );
        assert!(text.contains("Gr=C3=BC=C3=9Fe"), "{text}");
    }
    if common::have_dkimpy() {
        let eml = db.path("received.eml");
        std::fs::write(&eml, &received[0].data).unwrap();
        let verdict = common::dkim_verify(&eml);
        assert!(verdict.starts_with("ok "), "{verdict}");
    }
}
both_backends!(no_8bitmime, relay_without_8bitmime);

/// Messages that fail for good make `herald run` exit 3 after sending the
/// rest, and say where to look; the failures are logged as warnings.
async fn failed_messages_make_run_exit_non_zero(db: TestDb) {
    let mut audience = emails("ok", 12);
    audience.push("jörg@bücher.example".to_string());
    audience.push("zoë@bücher.example".to_string());
    setup(&db, &audience);
    let server = SmtpServer::accepting().await;
    let url = server.url();
    let out = db.herald_env(&[("HERALD_SMTP_URL", url.as_str())], &["run", "t"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stdout(&out).contains("sent 12, "), "{}", stdout(&out));
    assert!(stdout(&out).contains("failed 2, "), "{}", stdout(&out));
    let err = stderr(&out);
    assert!(
        err.contains("2 messages failed for good; `herald status t`"),
        "{err}"
    );
    assert!(
        err.contains("WARN") && err.contains("does not offer SMTPUTF8"),
        "{err}"
    );
    assert_eq!(server.received().len(), 12);
}
both_backends!(failures_exit_3, failed_messages_make_run_exit_non_zero);

/// When the first ten messages all fail for good, the run stops there with
/// the reason, and the rest stay queued for when the cause is fixed.
async fn a_run_where_every_message_fails_stops_early(db: TestDb) {
    let audience: Vec<String> = (0..25).map(|i| format!("jörg{i}@bücher.example")).collect();
    setup(&db, &audience);
    let server = SmtpServer::accepting().await;
    let url = server.url();
    let env = [
        ("HERALD_SMTP_URL", url.as_str()),
        ("HERALD_SMTP_CONCURRENCY", "1"),
    ];
    let out = db.herald_env(&env, &["run", "t"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("the first 10 messages all failed (")
            && err.contains("does not offer SMTPUTF8"),
        "{err}"
    );
    let counts = db
        .pairs("SELECT CAST(CASE WHEN status = 'failed' THEN 1 ELSE 0 END AS BIGINT), COUNT(*) FROM deliveries GROUP BY 1 ORDER BY 1")
        .await;
    assert_eq!(counts, vec![(0, Some(15)), (1, Some(10))]);
    assert!(server.received().is_empty());
}
both_backends!(
    every_message_fails,
    a_run_where_every_message_fails_stops_early
);

/// Placeholder settings over SMTP are refused before any work: a tracking URL
/// on this machine or without https, no postal address. `allow_unsafe` lets a
/// test relay through; DKIM that is missing or does not align with the From
/// domain is a warning.
async fn placeholder_settings_are_refused_before_any_work(db: TestDb) {
    setup(&db, &emails("p", 3));
    let server = SmtpServer::accepting().await;
    let url = server.url();
    let smtp = ("HERALD_SMTP_URL", url.as_str());
    let strict = ("HERALD_ALLOW_UNSAFE", "false");
    let https = ("HERALD_PUBLIC_URL", "https://t.acme.example");
    let postal = (
        "HERALD_POSTAL_ADDRESS",
        "Acme Inc., 1 Main Street, Springfield",
    );

    let out = db.herald_env(&[smtp, strict], &["run", "t"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = stderr(&out);
    assert!(
        err.contains(
            "setting public_url (from default): http://localhost:8080 points at this machine"
        ) && err.contains("--allow-unsafe"),
        "{err}"
    );
    let out = db.herald_env(
        &[smtp, strict, ("HERALD_PUBLIC_URL", "http://t.acme.example")],
        &["run", "t"],
    );
    assert!(
        stderr(&out).contains("(from HERALD_PUBLIC_URL): http://t.acme.example is not https"),
        "{out:?}"
    );
    let out = db.herald_env(&[smtp, strict, https], &["worker"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        stderr(&out).contains("setting postal_address (from default): sending over SMTP needs"),
        "{out:?}"
    );
    let runs = db
        .pairs("SELECT COUNT(*), CAST(0 AS BIGINT) FROM runs")
        .await;
    assert_eq!(runs, vec![(0, Some(0))], "nothing was planned");
    assert!(server.received().is_empty());

    // Safe settings send, with a warning about DKIM.
    let out = db.herald_env(&[smtp, strict, https, postal], &["run", "t"]);
    assert!(out.status.success(), "{out:?}");
    assert!(stderr(&out).contains("DKIM is not configured"), "{out:?}");
    let key = common::dkim_key_path();
    let misaligned = [
        ("HERALD_DKIM_SELECTOR", "herald"),
        ("HERALD_DKIM_DOMAIN", "other.example"),
        ("HERALD_DKIM_KEY", key.to_str().unwrap()),
    ];
    let mut env = vec![smtp, strict, https, postal];
    env.extend(misaligned);
    let out = db.herald_env(&env, &["run", "t"]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        stderr(&out)
            .contains("DKIM domain other.example does not align with the From domain acme.example"),
        "{out:?}"
    );
    // --allow-unsafe is a switch.
    let out = db.herald_env(&[smtp, strict], &["run", "t", "--allow-unsafe"]);
    assert!(out.status.success(), "{out:?}");
}
both_backends!(
    placeholder_settings,
    placeholder_settings_are_refused_before_any_work
);

/// A bad value is reported with where it came from, before anything is done
/// (the demo used to seed 5,000 customers first).
#[test]
fn a_short_secret_fails_before_the_demo_seeds() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("herald.db").display());
    let out = common::herald_cmd(dir.path(), &db, &[("HERALD_SECRET", "short")], &["demo"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = stderr(&out);
    assert!(
        err.contains(
            "setting secret (from HERALD_SECRET): every key must be at least 16 characters"
        ),
        "{err}"
    );
    assert!(!dir.path().join("herald.db").exists(), "nothing seeded");
}

/// The EHLO name and the envelope sender are settings: bounces go to the
/// bounce address, the From header stays the campaign's.
async fn helo_name_and_bounce_address(db: TestDb) {
    setup(&db, &emails("h", 2));
    let server = SmtpServer::accepting().await;
    let url = server.url();
    let env = [
        ("HERALD_SMTP_URL", url.as_str()),
        ("HERALD_SMTP_HELO", "mail.acme.example"),
        ("HERALD_BOUNCE_ADDRESS", "bounces@acme.example"),
    ];
    let out = db.herald_env(&env, &["run", "t"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let received = server.received();
    assert_eq!(received.len(), 2);
    for r in &received {
        assert_eq!(r.helo, "mail.acme.example");
        assert_eq!(r.from, "bounces@acme.example");
        let text = String::from_utf8_lossy(&r.data);
        assert!(text.contains("<hello@acme.example>"), "{text}");
    }
    let bad = db.herald_env(&[("HERALD_BOUNCE_ADDRESS", "not an address")], &["config"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        stderr(&bad).contains("setting bounce_address (from HERALD_BOUNCE_ADDRESS)"),
        "{bad:?}"
    );
}
both_backends!(helo_and_bounce, helo_name_and_bounce_address);

/// Every subcommand's help keeps its own options first and groups the global
/// settings under their own heading.
#[test]
fn help_groups_the_settings() {
    let dir = tempfile::tempdir().unwrap();
    let out = common::herald_in(dir.path(), "sqlite://x.db", &["run", "--help"]);
    assert!(out.status.success(), "{out:?}");
    let help = stdout(&out);
    let heading = help
        .find("Settings (each also HERALD_NAME")
        .expect("a settings heading");
    let own = help.find("--dry-run").expect("run's own option");
    let setting = help.find("--database-url").expect("a setting");
    assert!(own < heading && heading < setting, "{help}");
}

/// A relay that refuses the sender (5.7.x) for every message stops the run
/// after five such replies, with the reply in the error; nobody is
/// suppressed for it (the sender is the problem, not the recipients).
async fn a_relay_refusing_the_sender_stops_the_run(db: TestDb) {
    setup(&db, &emails("r", 20));
    let server = SmtpServer::start(|_, _| {
        common::smtp::Behavior::ReplyAfterData("554 5.7.1 Sender address rejected".into())
    })
    .await;
    let url = server.url();
    let env = [
        ("HERALD_SMTP_URL", url.as_str()),
        ("HERALD_SMTP_CONCURRENCY", "1"),
    ];
    let out = db.herald_env(&env, &["run", "t"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = stderr(&out);
    assert!(
        err.contains("the relay refuses the sender (554 5.7.1 Sender address rejected); stopped after 5 such replies"),
        "{err}"
    );
    let store = db.store().await;
    assert_eq!(store.table_counts().await.unwrap().suppressions, 0);
    store.close().await;
    assert_eq!(server.attempts(), 5);
}
both_backends!(sender_refused, a_relay_refusing_the_sender_stops_the_run);
