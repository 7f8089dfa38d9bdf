//! `herald worker`: apalis queues and cron schedules, with the real binary, a
//! real SMTP server over TCP, both backends.

mod common;

use std::collections::HashSet;
use std::process::Child;
use std::time::{Duration, Instant};

use common::smtp::SmtpServer;
use common::{TestDb, stderr, stdout};
use herald::campaign;
use herald::pipeline::jobs;

const TEMPLATE: &str = r#"<p>Hi {{default customer.first_name "there"}}</p>
<a href="https://acme.example/shop">Shop</a> <a href="{{unsubscribe_url}}">Unsubscribe</a>"#;

fn campaign_yaml(schedule: Option<&str>) -> String {
    let schedule = schedule
        .map(|s| format!("schedule: \"{s}\"\ntimezone: Asia/Kathmandu\n"))
        .unwrap_or_default();
    format!(
        r#"name: t
from: "Acme Shop <hello@acme.example>"
{schedule}audience:
  attribute: country
  exists: true
steps:
  - id: hello
    subject: 'Hi {{{{default customer.first_name "there"}}}}'
    template: hello
"#
    )
}

fn setup(db: &TestDb, schedule: Option<&str>, customers: &str) -> HashSet<String> {
    std::fs::create_dir_all(db.path("campaigns")).unwrap();
    std::fs::create_dir_all(db.path("templates")).unwrap();
    std::fs::write(db.path("campaigns/t.yaml"), campaign_yaml(schedule)).unwrap();
    std::fs::write(db.path("templates/hello.html.hbs"), TEMPLATE).unwrap();
    let seeded = db.herald(&["seed", "--customers", customers, "--seed", "4"]);
    assert!(seeded.status.success(), "{}", stderr(&seeded));
    let listed = db.herald(&["audience", "t", "--list"]);
    stdout(&listed).lines().map(str::to_string).collect()
}

async fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A worker process that is killed if the test fails before stopping it.
struct Worker(Child);

impl Drop for Worker {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Workers in these tests share no port: the tracking service binds port 0.
fn spawn(db: &TestDb, env: &[(&str, &str)], args: &[&str]) -> Worker {
    let mut env = env.to_vec();
    env.push(("HERALD_HTTP_ADDR", "127.0.0.1:0"));
    Worker(db.command(&env, args).spawn().unwrap())
}

fn terminate(worker: &mut Worker) {
    let child = &mut worker.0;
    let status = common::sigterm_and_wait(child);
    assert!(status.success(), "the worker stops cleanly: {status:?}");
}

/// One number from the test's database, read over a connection of its own.
async fn scalar(db: &TestDb, sql: &str) -> i64 {
    use sqlx::Connection as _;
    let sql = sqlx::AssertSqlSafe(sql.to_string());
    match db.backend {
        herald::store::Backend::Sqlite => {
            let mut conn = sqlx::SqliteConnection::connect(&db.url).await.unwrap();
            sqlx::query_scalar(sql).fetch_one(&mut conn).await.unwrap()
        }
        herald::store::Backend::Postgres => {
            let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
            sqlx::query_scalar(sql).fetch_one(&mut conn).await.unwrap()
        }
    }
}

/// A run queued with `--now` goes through the plan and send queues of apalis's
/// SQL storage in Herald's database; the worker's HTTP service answers
/// `/metrics` with what it sent; SIGTERM stops the worker cleanly.
async fn queued_run_is_planned_and_sent(db: TestDb) {
    let expected = setup(&db, None, "150");
    let server = SmtpServer::accepting().await;
    let url = server.url();
    // A free port for the worker's HTTP service.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let http_addr = addr.to_string();
    let mut worker = Worker(
        db.command(
            &[
                ("HERALD_SMTP_URL", url.as_str()),
                ("HERALD_HTTP_ADDR", http_addr.as_str()),
            ],
            &["worker", "--now", "t", "--name", "w1"],
        )
        .spawn()
        .unwrap(),
    );

    wait_for("every message", Duration::from_secs(60), || {
        server.received().len() >= expected.len()
    })
    .await;
    // Let the send jobs finish the run, then stop.
    let started = Instant::now();
    while scalar(&db, "SELECT COUNT(*) FROM runs WHERE status = 'done'").await < 1 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "run not finished"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    terminate(&mut worker);
    let got: Vec<String> = server.received().iter().map(|r| r.to.clone()).collect();
    let unique: HashSet<String> = got.iter().cloned().collect();
    assert_eq!(unique, expected);
    assert_eq!(got.len(), unique.len(), "no duplicates");
    // The jobs went through apalis's tables under Herald's explicit queue names.
    let jobs_table = match db.backend {
        herald::store::Backend::Sqlite => "Jobs",
        herald::store::Backend::Postgres => "apalis.jobs",
    };
    let plan = format!(
        "SELECT COUNT(*) FROM {jobs_table} WHERE job_type = '{}'",
        jobs::PLAN_QUEUE
    );
    let send = format!(
        "SELECT COUNT(*) FROM {jobs_table} WHERE job_type = '{}'",
        jobs::SEND_QUEUE
    );
    assert_eq!(scalar(&db, &plan).await, 1);
    assert!(scalar(&db, &send).await >= jobs::SEND_SHARDS as i64);
}
both_backends!(queued_run, queued_run_is_planned_and_sent);

/// Two workers with the same schedule (every minute, in Asia/Kathmandu, whose
/// offset is +05:45): each tick becomes one run, and every customer gets the
/// message once.
async fn cron_tick_fires_once_across_workers(db: TestDb) {
    let expected = setup(&db, Some("* * * * *"), "60");
    let server = SmtpServer::accepting().await;
    let url = server.url();
    let env = [("HERALD_SMTP_URL", url.as_str())];
    let mut a = spawn(&db, &env, &["worker", "--name", "a"]);
    let mut b = spawn(&db, &env, &["worker", "--name", "b"]);
    wait_for("the first tick's messages", Duration::from_secs(90), || {
        server.received().len() >= expected.len()
    })
    .await;
    let started = Instant::now();
    while scalar(&db, "SELECT COUNT(*) FROM runs WHERE status = 'done'").await < 1 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "run not finished"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    terminate(&mut a);
    terminate(&mut b);
    let runs = scalar(&db, "SELECT COUNT(*) FROM runs").await;
    let ticks = scalar(&db, "SELECT COUNT(DISTINCT tick) FROM runs").await;
    assert!(runs >= 1);
    assert_eq!(runs, ticks, "one run per tick, whichever worker fired it");
    assert_eq!(
        scalar(
            &db,
            "SELECT COUNT(*) FROM runs WHERE trigger <> 'schedule' OR tick % 60000 <> 0"
        )
        .await,
        0,
        "runs come from minute ticks"
    );
    let got: Vec<String> = server.received().iter().map(|r| r.to.clone()).collect();
    let unique: HashSet<String> = got.iter().cloned().collect();
    assert_eq!(unique, expected);
    assert_eq!(got.len(), unique.len(), "no duplicates across workers");
}
both_backends!(cron_tick, cron_tick_fires_once_across_workers);

/// `herald run` killed mid-run: a worker started afterwards finishes the run
/// (its start-up sweep queues every unfinished run).
async fn worker_finishes_a_killed_run(db: TestDb) {
    let expected = setup(&db, None, "300");
    let server = SmtpServer::accepting().await;
    server.set_delay(Duration::from_millis(5));
    let url = server.url();
    let env = [
        ("HERALD_SMTP_URL", url.as_str()),
        ("HERALD_SMTP_CONCURRENCY", "4"),
        ("HERALD_SEND_LEASE", "2s"),
    ];
    let mut run = spawn(&db, &env, &["run", "t"]);
    wait_for("progress", Duration::from_secs(60), || {
        server.received().len() >= 60
    })
    .await;
    run.0.kill().unwrap();
    let _ = run.0.wait();
    assert!(server.received().len() < expected.len(), "killed mid-run");
    let mut worker = spawn(&db, &env, &["worker"]);
    let started = Instant::now();
    loop {
        let unique: HashSet<String> = server.received().iter().map(|r| r.to.clone()).collect();
        if unique == expected
            && scalar(&db, "SELECT COUNT(*) FROM runs WHERE status = 'done'").await == 1
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "worker did not finish the run"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    terminate(&mut worker);
    let got = server.received().len();
    assert!(
        got - expected.len() <= 4,
        "{} duplicates; at most the 4 in flight may repeat",
        got - expected.len()
    );
}
both_backends!(killed_run, worker_finishes_a_killed_run);

/// A worker that cannot queue a job stops with the database's reason and a
/// non-zero exit, instead of staying up with its tracking service and doing
/// nothing. (Here the queue refuses inserts while an unfinished run waits to
/// be resumed.)
async fn worker_stops_when_the_queue_fails(db: TestDb) {
    setup(&db, None, "20");
    let migrated = db.herald(&["migrate"]);
    assert!(migrated.status.success(), "{}", stderr(&migrated));
    match db.backend {
        herald::store::Backend::Sqlite => {
            db.exec(
                "CREATE TRIGGER closed BEFORE INSERT ON Jobs \
                 BEGIN SELECT RAISE(ABORT, 'the job queue is closed for maintenance'); END;",
            )
            .await
        }
        herald::store::Backend::Postgres => {
            db.exec(
                "CREATE FUNCTION closed() RETURNS trigger LANGUAGE plpgsql AS \
                 $$ BEGIN RAISE EXCEPTION 'the job queue is closed for maintenance'; END $$; \
                 CREATE TRIGGER closed BEFORE INSERT ON apalis.jobs \
                 FOR EACH ROW EXECUTE FUNCTION closed();",
            )
            .await
        }
    }
    db.exec(
        "INSERT INTO runs (campaign, trigger, status, created_at) VALUES ('t', 'manual', 'sending', 0)",
    )
    .await;
    let mut worker = Worker(
        db.command(&[("HERALD_HTTP_ADDR", "127.0.0.1:0")], &["worker"])
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let started = Instant::now();
    let status = loop {
        if let Some(status) = worker.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the worker stayed up after failing to queue a job"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut worker.0.stderr.take().unwrap(), &mut err).unwrap();
    assert!(!status.success(), "non-zero exit: {status:?}");
    assert!(err.contains("queueing a job"), "{err}");
    assert!(
        err.contains("the job queue is closed for maintenance"),
        "{err}"
    );
}
both_backends!(queue_failure, worker_stops_when_the_queue_fails);

/// Schedules are evaluated in the campaign's time zone, across DST changes.
#[test]
fn ticks_follow_the_campaign_time_zone() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = r#"name: berlin
from: "Acme <a@acme.example>"
schedule: "0 9 * * *"
timezone: Europe/Berlin
audience:
  attribute: country
  exists: true
steps:
  - id: one
    subject: "x"
    template: x
"#;
    let path = dir.path().join("berlin.yaml");
    std::fs::write(&path, yaml).unwrap();
    let c = campaign::find("berlin", dir.path()).unwrap();
    let ms = |s: &str| {
        chrono::DateTime::parse_from_rfc3339(s)
            .unwrap()
            .timestamp_millis()
    };
    // Winter time (UTC+1): 09:00 in Berlin is 08:00 UTC.
    assert_eq!(
        jobs::next_tick(&c, ms("2026-03-27T12:00:00Z")),
        Some(ms("2026-03-28T08:00:00Z"))
    );
    // Clocks go forward on 29 March: 09:00 is 07:00 UTC from then on.
    assert_eq!(
        jobs::next_tick(&c, ms("2026-03-28T12:00:00Z")),
        Some(ms("2026-03-29T07:00:00Z"))
    );
    // And back on 25 October.
    assert_eq!(
        jobs::next_tick(&c, ms("2026-10-25T00:00:00Z")),
        Some(ms("2026-10-25T08:00:00Z"))
    );
}
