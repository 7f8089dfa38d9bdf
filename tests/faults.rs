//! What an outside fault suite found, kept as stories against the real binary,
//! a real SMTP server over TCP and both backends: runs that drain slower than
//! their lease, a slow relay, hostile names, and kills at random instants.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use common::smtp::SmtpServer;
use common::{TestDb, stderr, stdout};

const TEMPLATE: &str = r#"<p>Hi {{default customer.first_name "there"}}</p>
<a href="https://acme.example/shop">Shop</a> <a href="{{unsubscribe_url}}">Unsubscribe</a>"#;

fn campaign(limits: &str) -> String {
    format!(
        r#"name: t
from: "Acme Shop <hello@acme.example>"
audience:
  attribute: country
  exists: true
{limits}steps:
  - id: hello
    subject: 'Hi {{{{default customer.first_name "there"}}}}'
    template: hello
"#
    )
}

fn write_files(db: &TestDb, yaml: &str) {
    std::fs::create_dir_all(db.path("campaigns")).unwrap();
    std::fs::create_dir_all(db.path("templates")).unwrap();
    std::fs::write(db.path("campaigns/t.yaml"), yaml).unwrap();
    std::fs::write(db.path("templates/hello.html.hbs"), TEMPLATE).unwrap();
}

/// Seeds `n` customers; returns the campaign's audience.
fn seed(db: &TestDb, n: usize) -> HashSet<String> {
    let seeded = db.herald(&["seed", "--customers", &n.to_string(), "--seed", "9"]);
    assert!(seeded.status.success(), "{}", stderr(&seeded));
    let listed = db.herald(&["audience", "t", "--list"]);
    stdout(&listed).lines().map(str::to_string).collect()
}

/// Copies the relay received, per recipient.
fn copies(server: &SmtpServer) -> HashMap<String, usize> {
    let mut n = HashMap::new();
    for r in server.received() {
        *n.entry(r.to).or_default() += 1;
    }
    n
}

fn assert_each_once(server: &SmtpServer, audience: &HashSet<String>) {
    let copies = copies(server);
    let repeated: Vec<_> = copies.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        repeated.is_empty(),
        "{} recipients got more than one copy, e.g. {:?}",
        repeated.len(),
        repeated.iter().take(3).collect::<Vec<_>>()
    );
    let got: HashSet<String> = copies.into_keys().collect();
    assert_eq!(&got, audience, "everyone in the audience, once");
}

/// `herald run t` with a 1 s lease and one message at a time; its output.
fn run_on_one_connection_with_a_short_lease(db: &TestDb, server: &SmtpServer) -> String {
    let url = server.url();
    let env = [
        ("HERALD_SMTP_URL", url.as_str()),
        ("HERALD_SEND_LEASE", "1s"),
        ("HERALD_SMTP_CONCURRENCY", "1"),
    ];
    let out = db.herald_env(&env, &["run", "t"]);
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out)
}

/// A run that drains its claims far slower than the lease (a campaign rate
/// limit, one connection): the pass renews what it holds and never claims it
/// again, so nobody gets a second copy, and the figures match the relay's.
async fn rate_limited_run_longer_than_its_lease(db: TestDb) {
    write_files(&db, &campaign("limits:\n  rate: 50/s\n"));
    let audience = seed(&db, 400);
    assert!(audience.len() > 200, "a run of several seconds");
    let server = SmtpServer::accepting().await;
    let text = run_on_one_connection_with_a_short_lease(&db, &server);
    assert_each_once(&server, &audience);
    assert!(
        text.contains(&format!("sent {}, ", audience.len())),
        "{text}"
    );
}
both_backends!(rate_limited, rate_limited_run_longer_than_its_lease);

/// A relay that takes its time over every reply: the same, without a rate.
async fn slow_relay(db: TestDb) {
    write_files(&db, &campaign(""));
    let audience = seed(&db, 250);
    let server = SmtpServer::accepting().await;
    server.set_delay(Duration::from_millis(25));
    run_on_one_connection_with_a_short_lease(&db, &server);
    assert_each_once(&server, &audience);
}
both_backends!(slow_relay_replies, slow_relay);

/// A line break in a customer's name cannot reach a header: the name is folded
/// to one line, the message goes out, and preview and dry run work for them.
async fn line_breaks_in_names(db: TestDb) {
    write_files(&db, &campaign(""));
    let mut csv = String::from("email,first_name,last_name,country\n");
    csv.push_str("\"eve@x.example\",\"Eve\r\nBcc: spy@evil.example\",\"Doe\",DE\n");
    csv.push_str("\"lf@x.example\",\"Lou\",\"Fox\nX-Injected: 1\",DE\n");
    for i in 0..20 {
        csv.push_str(&format!("ok{i}@x.example,Oli,Ok,DE\n"));
    }
    std::fs::write(db.path("c.csv"), csv).unwrap();
    let imported = db.herald(&["import", "customers", "c.csv"]);
    assert!(imported.status.success(), "{}", stderr(&imported));

    for args in [
        &["preview", "t", "--customer", "eve@x.example"][..],
        &["run", "t", "--dry-run"][..],
    ] {
        let out = db.herald(args);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    }
    let preview = std::fs::read_to_string(db.path("preview/t-hello.eml")).unwrap();
    let head = preview.split("\r\n\r\n").next().unwrap_or_default();
    assert!(
        head.lines()
            .any(|l| l.starts_with("To: ") && l.ends_with("<eve@x.example>")),
        "{head}"
    );
    assert!(!head.lines().any(|l| l.starts_with("Bcc:")), "{head}");

    let server = SmtpServer::accepting().await;
    let url = server.url();
    let env = [
        ("HERALD_SMTP_URL", url.as_str()),
        ("HERALD_SMTP_CONCURRENCY", "2"),
    ];
    let out = db.herald_env(&env, &["run", "t"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("sent 22, "), "{}", stdout(&out));
    let received = server.received();
    assert_eq!(received.len(), 22);
    for r in &received {
        let text = String::from_utf8_lossy(&r.data);
        let headers = text.split("\r\n\r\n").next().unwrap_or_default();
        assert!(
            !headers
                .lines()
                .any(|l| l.starts_with("Bcc:") || l.starts_with("X-Injected:")),
            "{headers}"
        );
    }
    assert!(received.iter().all(|r| r.to != "spy@evil.example"));
}
both_backends!(hostile_names, line_breaks_in_names);

/// A small random source for kill instants, seeded from the clock and printed,
/// so a failure can be replayed with `HERALD_TEST_KILL_SEED`.
fn kill_seed() -> u64 {
    std::env::var("HERALD_TEST_KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(7)
        })
}

fn next(state: &mut u64) -> u64 {
    *state = state
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    *state >> 33
}

/// `herald run` killed with SIGKILL at random instants and started again each
/// time: nobody is lost, and each kill repeats at most the messages that were
/// in flight (`smtp_concurrency`), which are marked as possibly repeated.
async fn killed_at_random_instants(db: TestDb) {
    write_files(&db, &campaign(""));
    let audience = seed(&db, 300);
    let server = SmtpServer::accepting().await;
    server.set_delay(Duration::from_millis(8));
    let url = server.url();
    let concurrency = 4;
    let env = [
        ("HERALD_SMTP_URL", url.as_str()),
        ("HERALD_SEND_LEASE", "1s"),
        ("HERALD_SMTP_CONCURRENCY", "4"),
    ];
    let seed = kill_seed();
    let mut rng = seed;
    let mut kills = 0;
    for _ in 0..3 {
        let before = server.received().len();
        let mut child = db.command(&env, &["run", "t"]).spawn().unwrap();
        let after = Duration::from_millis(150 + next(&mut rng) % 600);
        let started = Instant::now();
        // Kill once it is sending (or when the instant comes, if it has finished).
        while started.elapsed() < after {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if let Ok(None) = child.try_wait() {
            child.kill().unwrap();
            kills += 1;
        }
        let _ = child.wait();
        eprintln!(
            "kill seed {seed}: killed after {after:?}, {} messages in that life",
            server.received().len() - before
        );
        // The killed process's leases run out before the next life takes over.
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    let out = db.herald_env(&env, &["run", "t"]);
    assert!(out.status.success(), "seed {seed}: {}", stderr(&out));

    let copies = copies(&server);
    let got: HashSet<String> = copies.keys().cloned().collect();
    assert_eq!(got, audience, "seed {seed}: nobody lost");
    let repeats: usize = copies.values().map(|n| n - 1).sum();
    assert!(
        repeats <= kills * concurrency,
        "seed {seed}: {repeats} repeats after {kills} kills"
    );
    // Every repeated recipient's delivery says it may have been repeated.
    let store = db.store().await;
    let marked = db
        .pairs(
            "SELECT d.id, CAST(CASE WHEN d.outcome_unknown THEN 1 ELSE 0 END AS BIGINT) \
             FROM deliveries d WHERE d.status = 'sent'",
        )
        .await;
    let unknown = marked.iter().filter(|(_, u)| *u == Some(1)).count();
    assert!(
        unknown >= copies.values().filter(|n| **n > 1).count(),
        "seed {seed}: repeats are marked"
    );
    let counts = store
        .run_counts(1)
        .await
        .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
    assert_eq!(counts.failed, 0, "seed {seed}");
    store.close().await;
}
both_backends!(sigkill, killed_at_random_instants);

/// What a planner killed between creating its run and committing the plan
/// leaves behind: a run row still `planning`, nothing else.
async fn leave_a_run_in_planning(db: &TestDb) {
    db.exec("INSERT INTO runs (campaign, trigger, created_at) VALUES ('t', 'manual', 0)")
        .await;
}

/// `herald run` plans and sends a run whose planner was killed, and its
/// summary shows that run as well as the new one (empty: everyone is in the
/// resumed run).
async fn run_left_in_planning_is_finished_by_the_next_run(db: TestDb) {
    write_files(&db, &campaign(""));
    let audience = seed(&db, 40);
    leave_a_run_in_planning(&db).await;
    let server = SmtpServer::accepting().await;
    let url = server.url();
    let out = db.herald_env(&[("HERALD_SMTP_URL", url.as_str())], &["run", "t"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    let n = audience.len();
    assert!(
        lines[0].starts_with("t: run 1 (resumed")
            && lines[0].contains(&format!("planned {n}, sent {n}, ")),
        "{text}"
    );
    assert!(
        lines[1].starts_with("t: run 2 planned 0, sent 0, "),
        "{text}"
    );
    assert_each_once(&server, &audience);
    let status = db.pairs("SELECT id, CAST(CASE WHEN status = 'done' THEN 1 ELSE 0 END AS BIGINT) FROM runs ORDER BY id").await;
    assert_eq!(status, vec![(1, Some(1)), (2, Some(1))]);
}
both_backends!(
    planning_then_run,
    run_left_in_planning_is_finished_by_the_next_run
);

/// `herald worker` does the same at start.
async fn run_left_in_planning_is_finished_by_a_worker(db: TestDb) {
    write_files(&db, &campaign(""));
    let audience = seed(&db, 40);
    leave_a_run_in_planning(&db).await;
    let server = SmtpServer::accepting().await;
    let url = server.url();
    let env = [
        ("HERALD_SMTP_URL", url.as_str()),
        ("HERALD_HTTP_ADDR", "127.0.0.1:0"),
    ];
    let mut worker = db
        .command(&env, &["worker", "--name", "w"])
        .spawn()
        .unwrap();
    let started = Instant::now();
    loop {
        let done = db
            .pairs("SELECT id, CAST(1 AS BIGINT) FROM runs WHERE status = 'done'")
            .await;
        if !done.is_empty() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the run is never finished"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(common::sigterm_and_wait(&mut worker).success());
    assert_each_once(&server, &audience);
}
both_backends!(
    planning_then_worker,
    run_left_in_planning_is_finished_by_a_worker
);

/// Two workers started together share a large run: each relays part of it
/// (each worker has its own relay here, so the split is visible), nobody gets
/// two copies, and nobody is left out.
async fn two_workers_share_a_run(db: TestDb) {
    write_files(&db, &campaign("limits:\n  rate: 150/s\n"));
    let audience = seed(&db, 700);
    let (a, b) = (SmtpServer::accepting().await, SmtpServer::accepting().await);
    let worker = |server: &SmtpServer, name: &str, now: bool| {
        let url = server.url();
        let env = [
            ("HERALD_SMTP_URL", url.as_str()),
            ("HERALD_HTTP_ADDR", "127.0.0.1:0"),
        ];
        let mut args = vec!["worker", "--name", name];
        if now {
            args.extend(["--now", "t"]);
        }
        db.command(&env, &args).spawn().unwrap()
    };
    let mut first = worker(&a, "a", true);
    let mut second = worker(&b, "b", false);
    let started = Instant::now();
    while a.received().len() + b.received().len() < audience.len() {
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "sent {} + {} of {}",
            a.received().len(),
            b.received().len(),
            audience.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(common::sigterm_and_wait(&mut first).success());
    assert!(common::sigterm_and_wait(&mut second).success());
    let (by_a, by_b) = (a.received().len(), b.received().len());
    eprintln!("worker a relayed {by_a}, worker b {by_b}");
    assert!(
        by_a > 0 && by_b > 0,
        "both workers send: a {by_a}, b {by_b}"
    );
    let mut copies: HashMap<String, usize> = HashMap::new();
    for r in a.received().into_iter().chain(b.received()) {
        *copies.entry(r.to).or_default() += 1;
    }
    assert!(copies.values().all(|n| *n == 1), "no duplicates");
    assert_eq!(copies.into_keys().collect::<HashSet<_>>(), audience);
}
both_backends!(two_workers, two_workers_share_a_run);
