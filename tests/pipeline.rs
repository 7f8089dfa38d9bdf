//! The delivery pipeline end to end: the real binary, a real SMTP server over
//! TCP, both backends.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::smtp::{Behavior, SmtpServer};
use common::{HELLO_CAMPAIGN as CAMPAIGN, TestDb, stderr, stdout};

const TEMPLATE: &str = r#"<p>Hi {{default customer.first_name "there"}}</p>
<a href="https://acme.example/shop">Shop</a> <a href="{{unsubscribe_url}}">Unsubscribe</a>"#;

fn write_campaign(db: &TestDb, yaml: &str) {
    std::fs::create_dir_all(db.path("campaigns")).unwrap();
    std::fs::create_dir_all(db.path("templates")).unwrap();
    std::fs::write(db.path("campaigns/t.yaml"), yaml).unwrap();
    std::fs::write(db.path("templates/hello.html.hbs"), TEMPLATE).unwrap();
}

fn import(db: &TestDb, csv: &str) {
    std::fs::write(db.path("c.csv"), csv).unwrap();
    let out = db.herald(&["import", "customers", "c.csv"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

async fn retries_bounces_and_no_double_sends(db: TestDb) {
    write_campaign(&db, CAMPAIGN);
    import(
        &db,
        "email,first_name,country,status\n\
         slow@x.example,Sam,DE,\n\
         gone@x.example,Gil,DE,\n\
         drop@x.example,Dee,DE,\n\
         ok@x.example,Oli,DE,\n\
         left@x.example,Lea,DE,unsubscribed\n",
    );
    let seen: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let counter = seen.clone();
    let server = SmtpServer::start(move |_, rcpt| {
        let mut seen = counter.lock().unwrap();
        let n = seen.entry(rcpt.to_string()).or_default();
        *n += 1;
        match (rcpt, *n) {
            ("slow@x.example", 1) => Behavior::ReplyAfterData("451 4.3.0 Try again later".into()),
            ("slow@x.example", 2) => Behavior::RejectRcpt("421 4.7.0 Too busy, closing".into()),
            ("gone@x.example", _) => {
                Behavior::RejectRcpt("550 5.1.1 <gone@x.example>: no such user".into())
            }
            ("drop@x.example", 1) => Behavior::DropMidData,
            _ => Behavior::Accept,
        }
    })
    .await;
    let url = server.url();
    let env = [
        ("HERALD_SMTP_URL", url.as_str()),
        ("HERALD_RETRY_BACKOFF", "1s"),
        ("HERALD_MAX_ATTEMPTS", "4"),
        ("HERALD_UNSUBSCRIBE_MAILTO", "unsubscribe@acme.example"),
    ];
    let out = db.herald_env(&env, &["run", "t"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("planned 4, sent 3, skipped 0, failed 0, bounced 1 → SMTP relay 127.0.0.1:"),
        "{text}"
    );

    let mut got: Vec<String> = server.received().iter().map(|r| r.to.clone()).collect();
    got.sort();
    assert_eq!(
        got,
        ["drop@x.example", "ok@x.example", "slow@x.example"],
        "each delivered exactly once"
    );
    assert_eq!(
        seen.lock().unwrap()["slow@x.example"],
        3,
        "451 and 421 were retried"
    );

    let store = db.store().await;
    let gone = store
        .customer_by_email("gone@x.example")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(gone.status, herald::customer::CustomerStatus::Bounced);
    let bounce = store
        .interactions_of(gone.id, "email_bounced")
        .await
        .unwrap();
    assert_eq!(bounce[0].1["code"], 550);
    assert!(bounce[0].1["reply"].as_str().unwrap().contains("5.1.1"));
    assert_eq!(store.table_counts().await.unwrap().suppressions, 1);
    let ok = store
        .customer_by_email("ok@x.example")
        .await
        .unwrap()
        .unwrap();
    let sent = store.interactions_of(ok.id, "email_sent").await.unwrap();
    assert_eq!(sent.len(), 1);
    assert!(
        sent[0].1["message_id"]
            .as_str()
            .unwrap()
            .ends_with("@acme.example")
    );
    let left = store
        .customer_by_email("left@x.example")
        .await
        .unwrap()
        .unwrap();
    assert!(
        store
            .interactions_of(left.id, "email_sent")
            .await
            .unwrap()
            .is_empty()
    );

    // Running again sends nobody anything twice.
    let again = db.herald_env(&env, &["run", "t"]);
    assert!(
        stdout(&again).contains("planned 0, sent 0"),
        "{}",
        stdout(&again)
    );
    assert_eq!(server.received().len(), 3);
    store.close().await;
}
both_backends!(smtp_failures, retries_bounces_and_no_double_sends);

async fn campaign_rate_limit_spaces_messages(db: TestDb) {
    write_campaign(&db, &format!("{CAMPAIGN}limits:\n  rate: 10/s\n"));
    let mut csv = String::from("email,country\n");
    for i in 0..25 {
        csv.push_str(&format!("c{i}@x.example,DE\n"));
    }
    import(&db, &csv);
    let server = SmtpServer::accepting().await;
    let url = server.url();
    let out = db.herald_env(&[("HERALD_SMTP_URL", url.as_str())], &["run", "t"]);
    assert!(stdout(&out).contains("sent 25"), "{}", stdout(&out));
    let got = server.received();
    // After the first second's burst of 10, 15 more at 10/s take at least 1.4 s.
    let span = got[24].at.duration_since(got[10].at);
    assert!(span >= Duration::from_millis(1300), "{span:?}");
}
both_backends!(campaign_rate, campaign_rate_limit_spaces_messages);

async fn frequency_cap_and_outbox(db: TestDb) {
    write_campaign(&db, CAMPAIGN);
    std::fs::write(
        db.path("campaigns/u.yaml"),
        CAMPAIGN.replace("name: t", "name: u"),
    )
    .unwrap();
    import(&db, "email,country\na@x.example,DE\nb@x.example,FR\n");
    let env = [("HERALD_FREQUENCY_CAP", "1/7d")];
    assert!(stdout(&db.herald_env(&env, &["run", "t"])).contains("sent 2"));
    let second = db.herald_env(&env, &["run", "u"]);
    assert!(
        stdout(&second).contains("planned 2, sent 0, skipped 2 (frequency_cap 2)"),
        "{}",
        stdout(&second)
    );
    let files: Vec<_> = std::fs::read_dir(db.path("outbox")).unwrap().collect();
    assert_eq!(files.len(), 2);
}
both_backends!(frequency_cap, frequency_cap_and_outbox);

async fn dry_run_keeps_nothing(db: TestDb) {
    write_campaign(&db, CAMPAIGN);
    import(&db, "email,country\na@x.example,DE\nb@x.example,FR\n");
    let out = db.herald(&["run", "t", "--dry-run"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("audience 2, would send 2, would skip 0, template errors 0"),
        "{}",
        stdout(&out)
    );
    assert!(
        !db.path("outbox").exists() || std::fs::read_dir(db.path("outbox")).unwrap().count() == 0
    );
    let real = db.herald(&["run", "t"]);
    assert!(
        stdout(&real).contains("planned 2, sent 2"),
        "a dry run plans nothing that stays: {}",
        stdout(&real)
    );
}
both_backends!(dry_run, dry_run_keeps_nothing);

/// The worker is killed with SIGKILL mid-run and started again: every customer
/// gets the message, and only messages in flight at the kill (at most the
/// concurrency) may arrive twice.
async fn sigkill_mid_run_then_restart(db: TestDb) {
    write_campaign(&db, CAMPAIGN);
    let seeded = db.herald(&["seed", "--customers", "400", "--seed", "2"]);
    assert!(seeded.status.success());
    let listed = db.herald(&["audience", "t", "--list"]);
    let expected: HashSet<String> = stdout(&listed).lines().map(str::to_string).collect();
    assert!(expected.len() > 300, "{}", expected.len());
    let server = SmtpServer::accepting().await;
    server.set_delay(Duration::from_millis(5));
    let url = server.url();
    let env = [
        ("HERALD_SMTP_URL", url.as_str()),
        ("HERALD_SMTP_CONCURRENCY", "4"),
        ("HERALD_SEND_LEASE", "2s"),
    ];
    let mut child = db.command(&env, &["run", "t"]).spawn().unwrap();
    let started = Instant::now();
    while server.received().len() < 120 {
        assert!(started.elapsed() < Duration::from_secs(60), "no progress");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // SIGKILL: no chance to clean up.
    child.kill().unwrap();
    let _ = child.wait();
    let before_restart = server.received().len();
    assert!(before_restart < expected.len(), "killed before the end");

    let out = db.herald_env(&env, &["run", "t"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let got: Vec<String> = server.received().iter().map(|r| r.to.clone()).collect();
    let unique: HashSet<String> = got.iter().cloned().collect();
    assert_eq!(unique, expected, "no customer lost");
    let duplicates = got.len() - unique.len();
    assert!(
        duplicates <= 4,
        "{duplicates} duplicates; at most the 4 in flight may repeat"
    );
}
both_backends!(sigkill, sigkill_mid_run_then_restart);

/// Two workers share one run: the second resumes the first's unfinished run
/// and they claim disjoint batches.
async fn two_workers_share_a_run(db: TestDb) {
    write_campaign(&db, CAMPAIGN);
    assert!(
        db.herald(&["seed", "--customers", "300", "--seed", "5"])
            .status
            .success()
    );
    let listed = db.herald(&["audience", "t", "--list"]);
    let expected: HashSet<String> = stdout(&listed).lines().map(str::to_string).collect();
    let server = SmtpServer::accepting().await;
    server.set_delay(Duration::from_millis(10));
    let url = server.url();
    let env = [
        ("HERALD_SMTP_URL", url.as_str()),
        ("HERALD_SMTP_CONCURRENCY", "2"),
    ];
    let mut first = db.command(&env, &["run", "t"]).spawn().unwrap();
    let started = Instant::now();
    while server.received().len() < 20 {
        assert!(started.elapsed() < Duration::from_secs(60), "no progress");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let second = db.herald_env(&env, &["run", "t"]);
    assert!(second.status.success(), "{}", stderr(&second));
    assert!(first.wait().unwrap().success());
    let got: Vec<String> = server.received().iter().map(|r| r.to.clone()).collect();
    let unique: HashSet<String> = got.iter().cloned().collect();
    assert_eq!(unique, expected);
    assert_eq!(got.len(), unique.len(), "no duplicates");
}
both_backends!(two_workers, two_workers_share_a_run);

async fn demo_sends_every_campaign_once(db: TestDb) {
    let root = env!("CARGO_MANIFEST_DIR");
    let (campaigns, templates) = (format!("{root}/campaigns"), format!("{root}/templates"));
    let args = [
        "demo",
        "--customers",
        "400",
        "--campaigns",
        &campaigns,
        "--templates",
        &templates,
    ];
    let out = db.herald(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let sent: usize = text
        .lines()
        .filter_map(|l| l.split(", sent ").nth(1))
        .map(|rest| {
            rest.split(',')
                .next()
                .unwrap()
                .trim()
                .parse::<usize>()
                .unwrap()
        })
        .sum();
    assert!(sent > 100, "{text}");
    // Each summary says where its messages went, once, as a path.
    let runs: Vec<&str> = text.lines().filter(|l| l.contains(" planned ")).collect();
    assert!(!runs.is_empty(), "{text}");
    assert!(runs.iter().all(|l| l.ends_with(" → outbox/")), "{text}");
    assert!(
        text.contains("messages: written to outbox/ (open any .eml"),
        "{text}"
    );
    assert!(!text.contains("outbox outbox"), "{text}");
    let files: Vec<_> = std::fs::read_dir(db.path("outbox"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), sent);
    for f in files.iter().take(20) {
        let eml = std::fs::read_to_string(f).unwrap();
        assert!(
            eml.contains("List-Unsubscribe-Post: List-Unsubscribe=One-Click"),
            "{}",
            f.display()
        );
        // One list per campaign, and Gmail's feedback loop fields.
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        let campaign = [
            "cross-sell",
            "newsletter",
            "support-followup",
            "welcome",
            "winback",
        ]
        .into_iter()
        .find(|c| name.starts_with(&format!("{c}-")))
        .unwrap();
        assert!(
            eml.contains(&format!(" <{campaign}.acme.example>\r\n"))
                && eml.contains("\r\nList-Id: "),
            "{}",
            f.display()
        );
        assert!(
            eml.contains(&format!("\r\nFeedback-ID: {campaign}:"))
                && eml.contains(":marketing:acme.example\r\n"),
            "{}",
            f.display()
        );
    }
    let again = db.herald(&args);
    assert!(
        stdout(&again)
            .lines()
            .filter(|l| l.contains("planned") && !l.contains("(resumed"))
            .all(|l| l.contains("planned 0")),
        "{}",
        stdout(&again)
    );
}
both_backends!(demo, demo_sends_every_campaign_once);

/// SIGTERM drains: messages in flight finish and are recorded, unstarted claims
/// go back to the queue, and the next run completes with no duplicates.
async fn sigterm_drains_then_resumes(db: TestDb) {
    write_campaign(&db, CAMPAIGN);
    assert!(
        db.herald(&["seed", "--customers", "150", "--seed", "8"])
            .status
            .success()
    );
    let listed = db.herald(&["audience", "t", "--list"]);
    let expected: HashSet<String> = stdout(&listed).lines().map(str::to_string).collect();
    let server = SmtpServer::accepting().await;
    server.set_delay(Duration::from_millis(20));
    let url = server.url();
    let env = [
        ("HERALD_SMTP_URL", url.as_str()),
        ("HERALD_SMTP_CONCURRENCY", "2"),
    ];
    let mut child = db.command(&env, &["run", "t"]).spawn().unwrap();
    let started = Instant::now();
    while server.received().len() < 10 {
        assert!(started.elapsed() < Duration::from_secs(60), "no progress");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let status = common::sigterm_and_wait(&mut child);
    assert!(status.success(), "a drained stop exits cleanly: {status:?}");
    let after_stop = server.received().len();
    assert!(after_stop < expected.len(), "stopped before the end");

    let store = db.store().await;
    let runs = store.unfinished_runs("t").await.unwrap();
    assert_eq!(runs.len(), 1);
    let counts = store.run_counts(runs[0]).await.unwrap();
    assert_eq!(counts.sending, 0, "nothing left claimed");
    assert_eq!(
        counts.sent as usize, after_stop,
        "every message that went out was recorded"
    );
    store.close().await;

    let out = db.herald_env(&env, &["run", "t"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let got: Vec<String> = server.received().iter().map(|r| r.to.clone()).collect();
    let unique: HashSet<String> = got.iter().cloned().collect();
    assert_eq!(unique, expected);
    assert_eq!(
        got.len(),
        unique.len(),
        "no duplicates after a drained stop"
    );
}
both_backends!(sigterm, sigterm_drains_then_resumes);
