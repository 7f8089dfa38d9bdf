//! `herald backup FILE`: a consistent copy of a live SQLite database, taken
//! with the real binary while `herald run` sends over a real SMTP server; an
//! existing file kept; PostgreSQL sent to pg_dump.

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::smtp::SmtpServer;
use common::{TestDb, herald_in, stderr, stdout};
use sqlx::Connection as _;

const CAMPAIGN: &str = r#"name: t
from: "Acme Shop <hello@acme.example>"
audience:
  attribute: country
  exists: true
limits:
  rate: 40/s
steps:
  - id: hello
    subject: 'Hi {{default customer.first_name "there"}}'
    template: hello
"#;

const TEMPLATE: &str = r#"<p>Hi {{default customer.first_name "there"}}</p>
<a href="https://acme.example/shop">Shop</a> <a href="{{unsubscribe_url}}">Unsubscribe</a>"#;

/// Campaign `t` (40 messages a second) and `n` seeded customers; the audience.
fn setup(db: &TestDb, n: usize) -> HashSet<String> {
    std::fs::create_dir_all(db.path("campaigns")).unwrap();
    std::fs::create_dir_all(db.path("templates")).unwrap();
    std::fs::write(db.path("campaigns/t.yaml"), CAMPAIGN).unwrap();
    std::fs::write(db.path("templates/hello.html.hbs"), TEMPLATE).unwrap();
    let seeded = db.herald(&["seed", "--customers", &n.to_string(), "--seed", "5"]);
    assert!(seeded.status.success(), "{}", stderr(&seeded));
    let listed = db.herald(&["audience", "t", "--list"]);
    stdout(&listed).lines().map(str::to_string).collect()
}

/// One number from an SQLite file, over a connection of its own.
async fn scalar(file: &Path, sql: &str) -> i64 {
    let url = format!("sqlite://{}", file.display());
    let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
    let n = sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_string()))
        .fetch_one(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    n
}

/// Names in `dir` that start with `prefix` (left-over partial copies).
fn names_starting(dir: &Path, prefix: &str) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(prefix))
        .collect()
}

/// A backup taken while `herald run` is writing is one consistent moment of
/// the database: intact, every planned delivery present, each sent delivery
/// with its `email_sent`, and usable by `herald status` and `herald stats`,
/// also once restored over `herald.db` as the README says. The run is not
/// disturbed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_while_a_run_is_sending() {
    let db = TestDb::sqlite();
    let audience = setup(&db, 400);
    assert!(audience.len() > 300, "a run of several seconds");
    let server = SmtpServer::accepting().await;
    let url = server.url();
    let mut run = db
        .command(&[("HERALD_SMTP_URL", url.as_str())], &["run", "t"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while server.received().len() < 60 {
        assert!(started.elapsed() < Duration::from_secs(60), "no progress");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let copy = db.path("copy.db");
    let backup = db.herald(&["backup", "copy.db"]);
    assert!(backup.status.success(), "{}", stderr(&backup));
    assert!(
        run.try_wait().unwrap().is_none(),
        "the run was still sending when the backup finished"
    );
    let said = stdout(&backup);
    let bytes = std::fs::metadata(&copy).unwrap().len();
    assert!(said.starts_with("wrote copy.db ("), "{said}");
    assert!(said.contains(&format!("{bytes} bytes")), "{said}");
    assert!(said.contains("herald.db"), "{said}");
    assert!(names_starting(db.dir.path(), ".copy.db").is_empty());

    let ran = run.wait_with_output().unwrap();
    assert!(ran.status.success(), "{}", stderr(&ran));
    assert!(
        stdout(&ran).contains(&format!("sent {}, ", audience.len())),
        "{}",
        stdout(&ran)
    );
    let got: Vec<String> = server.received().into_iter().map(|r| r.to).collect();
    let unique: HashSet<String> = got.iter().cloned().collect();
    assert_eq!(
        unique, audience,
        "everyone, with the backup taken meanwhile"
    );
    assert_eq!(got.len(), unique.len(), "nobody twice");

    // The copy: intact, and one moment of the run.
    let check: String = {
        let url = format!("sqlite://{}", copy.display());
        let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
        let ok = sqlx::query_scalar("PRAGMA integrity_check")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
        ok
    };
    assert_eq!(check, "ok");
    assert_eq!(scalar(&copy, "SELECT COUNT(*) FROM customers").await, 400);
    let planned = scalar(&copy, "SELECT planned FROM runs WHERE campaign = 't'").await;
    assert_eq!(planned, audience.len() as i64);
    assert_eq!(
        scalar(&copy, "SELECT COUNT(*) FROM deliveries").await,
        planned
    );
    assert_eq!(scalar(&copy, "SELECT COUNT(*) FROM entries").await, planned);
    let sent = scalar(
        &copy,
        "SELECT COUNT(*) FROM deliveries WHERE status = 'sent'",
    )
    .await;
    assert!(
        sent > 0 && sent < planned,
        "taken mid-run: {sent} of {planned} sent"
    );
    assert_eq!(
        scalar(
            &copy,
            "SELECT COUNT(*) FROM interactions WHERE kind = 'email_sent'"
        )
        .await,
        sent,
        "each sent delivery with its email_sent, committed together"
    );

    // Usable as it is ...
    let copy_url = format!("sqlite://{}", copy.display());
    for args in [&["status", "t"][..], &["stats", "t", "--json"][..]] {
        let out = herald_in(db.dir.path(), &copy_url, args);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    }
    let stats = herald_in(db.dir.path(), &copy_url, &["stats", "t", "--json"]);
    let stats: serde_json::Value = serde_json::from_str(&stdout(&stats)).unwrap();
    assert_eq!(stats["totals"]["sent"], sent);

    // ... and restored as the README says: the run is stopped; copy over
    // herald.db, remove the stale -wal and -shm files, start.
    let live = db.path("herald.db");
    std::fs::copy(&copy, &live).unwrap();
    for stale in ["herald.db-wal", "herald.db-shm"] {
        let _ = std::fs::remove_file(db.path(stale));
    }
    let status = db.herald(&["status", "t"]);
    assert!(status.status.success(), "{}", stderr(&status));
    assert_eq!(
        scalar(
            &live,
            "SELECT COUNT(*) FROM deliveries WHERE status = 'sent'"
        )
        .await,
        sent
    );
}

/// An existing FILE is never overwritten without `--force`, a failed backup
/// leaves no file behind, the database itself cannot be the target, and a
/// database that does not exist is not created by backing it up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_refuses_what_it_must_not_do() {
    let db = TestDb::sqlite();
    setup(&db, 20);
    std::fs::write(db.path("copy.db"), "keep me").unwrap();

    let refused = db.herald(&["backup", "copy.db"]);
    assert!(!refused.status.success());
    let err = stderr(&refused);
    assert!(err.contains("copy.db already exists"), "{err}");
    assert!(err.contains("--force"), "{err}");
    assert_eq!(std::fs::read(db.path("copy.db")).unwrap(), b"keep me");

    let forced = db.herald(&["backup", "copy.db", "--force"]);
    assert!(forced.status.success(), "{}", stderr(&forced));
    assert_eq!(
        scalar(&db.path("copy.db"), "SELECT COUNT(*) FROM customers").await,
        20
    );

    // A copy that fails part-way (here the partial file's name is too long
    // for the file system): no FILE, and no partial file left over.
    let long = format!("{}.db", "b".repeat(250));
    let failed = db.herald(&["backup", &long]);
    assert!(!failed.status.success());
    assert!(
        stderr(&failed).contains("VACUUM INTO"),
        "{}",
        stderr(&failed)
    );
    assert!(!db.path(&long).exists());
    assert!(names_starting(db.dir.path(), ".").is_empty());

    // A directory that does not exist: said so, nothing is left.
    let failed = db.herald(&["backup", "missing/copy.db"]);
    assert!(!failed.status.success());
    assert!(
        stderr(&failed)
            .contains("cannot write the backup missing/copy.db: there is no directory missing"),
        "{}",
        stderr(&failed)
    );
    assert!(!db.path("missing").exists());
    assert!(names_starting(db.dir.path(), ".").is_empty());

    let itself = db.herald(&["backup", "herald.db", "--force"]);
    assert!(!itself.status.success());
    assert!(
        stderr(&itself).contains("is the database being backed up"),
        "{}",
        stderr(&itself)
    );
    assert_eq!(
        scalar(&db.path("herald.db"), "SELECT COUNT(*) FROM customers").await,
        20
    );

    let nowhere = format!("sqlite://{}", db.path("nope.db").display());
    let missing = herald_in(db.dir.path(), &nowhere, &["backup", "x.db"]);
    assert!(!missing.status.success());
    assert!(
        stderr(&missing).contains("no database at"),
        "{}",
        stderr(&missing)
    );
    assert!(!db.path("nope.db").exists());
    assert!(!db.path("x.db").exists());
}

/// On PostgreSQL, `herald backup` says to use pg_dump, with the command, and
/// writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_on_postgres_points_to_pg_dump() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let out = db.herald(&["backup", "herald.dump"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("pg_dump --format=custom --file=herald.dump"),
        "{err}"
    );
    assert!(err.contains(&db.url), "{err}");
    assert!(err.contains("pg_restore"), "{err}");
    assert!(!db.path("herald.dump").exists());
}
