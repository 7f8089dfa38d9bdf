//! Test harness: a fresh database per test on each backend, and the real binary.
//!
//! PostgreSQL comes from `HERALD_TEST_PG_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`); each test creates its own
//! uniquely named database there and drops it afterwards. With `CI=true` an
//! unreachable server fails the test; elsewhere the test says how to enable it
//! and passes without running.
#![allow(dead_code)]

pub mod api;
pub mod browser;
pub mod http;
pub mod serve;
pub mod smtp;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

use herald::store::{Backend, Store};
use sqlx::Connection;

pub const DEFAULT_PG_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A one-step campaign `t` to everyone with a country, template `hello`.
pub const HELLO_CAMPAIGN: &str = r#"name: t
from: "Acme Shop <hello@acme.example>"
audience:
  attribute: country
  exists: true
steps:
  - id: hello
    subject: 'Hi {{default customer.first_name "there"}}'
    template: hello
"#;

/// The template of [`HELLO_CAMPAIGN`]'s one step.
pub const HELLO_TEMPLATE: &str = r#"<p>Hi {{default customer.first_name "there"}}</p>
<a href="https://acme.example/shop">Shop</a> <a href="{{unsubscribe_url}}">Unsubscribe</a>"#;

/// Writes [`HELLO_CAMPAIGN`] and its template into the test's directory.
pub fn setup_hello(db: &TestDb) {
    std::fs::create_dir_all(db.path("campaigns")).unwrap();
    std::fs::create_dir_all(db.path("templates")).unwrap();
    std::fs::write(db.path("campaigns/t.yaml"), HELLO_CAMPAIGN).unwrap();
    std::fs::write(db.path("templates/hello.html.hbs"), HELLO_TEMPLATE).unwrap();
}

/// `herald run t` against a fresh relay; the addresses it received.
pub async fn run_hello(db: &TestDb) -> Vec<String> {
    let server = smtp::SmtpServer::accepting().await;
    let url = server.url();
    let ran = db.herald_env(&[("HERALD_SMTP_URL", url.as_str())], &["run", "t"]);
    assert!(ran.status.success(), "{}", stderr(&ran));
    server.received().into_iter().map(|r| r.to).collect()
}

/// One number, over a connection of the test's own.
pub async fn count(db: &TestDb, sql: &str) -> i64 {
    db.pairs(&format!("SELECT ({sql}), CAST(NULL AS BIGINT)"))
        .await[0]
        .0
}

/// A database that exists for one test.
pub struct TestDb {
    pub url: String,
    pub backend: Backend,
    /// Working directory for the test (holds the SQLite file, outbox, files).
    pub dir: tempfile::TempDir,
    pg: Option<(String, String)>,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

fn pg_admin_url() -> String {
    std::env::var("HERALD_TEST_PG_URL").unwrap_or_else(|_| DEFAULT_PG_URL.to_string())
}

/// Whether the tests run under CI, where a missing outside tool fails them.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

impl TestDb {
    pub fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("herald.db").display());
        TestDb {
            url,
            backend: Backend::Sqlite,
            dir,
            pg: None,
        }
    }

    /// A fresh PostgreSQL database, or `None` (with one line on stderr) when no
    /// server is reachable outside CI.
    pub async fn postgres() -> Option<TestDb> {
        let admin = pg_admin_url();
        let mut conn = match sqlx::PgConnection::connect(&admin).await {
            Ok(c) => c,
            Err(e) if in_ci() => panic!("PostgreSQL at {admin} is unreachable in CI: {e}"),
            Err(_) => {
                eprintln!(
                    "skipped: PostgreSQL not reachable; start it or set HERALD_TEST_PG_URL=postgres://USER@HOST:PORT/DB to run the PostgreSQL tests"
                );
                return None;
            }
        };
        let name = format!(
            "herald_test_{}_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0)
        );
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .expect("create test database");
        let _ = conn.close().await;
        let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin);
        Some(TestDb {
            url: format!("{base}/{name}"),
            backend: Backend::Postgres,
            dir: tempfile::tempdir().expect("temp dir"),
            pg: Some((admin, name)),
        })
    }

    pub async fn store(&self) -> Store {
        Store::open(&self.url).await.expect("open store")
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Runs the real `herald` binary against this database, in the test's directory.
    pub fn herald(&self, args: &[&str]) -> Output {
        herald_in(self.dir.path(), &self.url, args)
    }

    /// Like [`TestDb::herald`], with extra `HERALD_*` variables.
    pub fn herald_env(&self, env: &[(&str, &str)], args: &[&str]) -> Output {
        herald_cmd(self.dir.path(), &self.url, env, args)
    }
}

impl TestDb {
    /// Rows of two integer columns (the second may be NULL) from a query run
    /// over a connection of its own: for checking what the code under test wrote.
    pub async fn pairs(&self, sql: &str) -> Vec<(i64, Option<i64>)> {
        use sqlx::Connection as _;
        let sql = sqlx::AssertSqlSafe(sql.to_string());
        match self.backend {
            Backend::Sqlite => {
                let mut conn = sqlx::SqliteConnection::connect(&self.url).await.unwrap();
                sqlx::query_as(sql).fetch_all(&mut conn).await.unwrap()
            }
            Backend::Postgres => {
                let mut conn = sqlx::PgConnection::connect(&self.url).await.unwrap();
                sqlx::query_as(sql).fetch_all(&mut conn).await.unwrap()
            }
        }
    }

    /// Statements run as written (several at once) over a connection of their
    /// own: for setting up what the code under test will meet.
    pub async fn exec(&self, sql: &'static str) {
        use sqlx::Connection as _;
        match self.backend {
            Backend::Sqlite => {
                let mut conn = sqlx::SqliteConnection::connect(&self.url).await.unwrap();
                sqlx::raw_sql(sql).execute(&mut conn).await.unwrap();
            }
            Backend::Postgres => {
                let mut conn = sqlx::PgConnection::connect(&self.url).await.unwrap();
                sqlx::raw_sql(sql).execute(&mut conn).await.unwrap();
            }
        }
    }

    /// The `herald` command, ready to spawn, in the test's directory.
    pub fn command(&self, env: &[(&str, &str)], args: &[&str]) -> Command {
        command_in(self.dir.path(), &self.url, env, args)
    }
}

/// Runs `herald` with a clean `HERALD_*` environment.
pub fn herald_in(dir: &Path, database_url: &str, args: &[&str]) -> Output {
    herald_cmd(dir, database_url, &[], args)
}

/// Runs `herald` in `dir` with extra `HERALD_*` variables.
pub fn herald_cmd(dir: &Path, database_url: &str, env: &[(&str, &str)], args: &[&str]) -> Output {
    command_in(dir, database_url, env, args)
        .output()
        .expect("run herald")
}

/// `herald` with a clean `HERALD_*` environment plus `env`, run in `dir`.
fn command_in(dir: &Path, database_url: &str, env: &[(&str, &str)], args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_herald"));
    for (key, _) in std::env::vars() {
        if key.starts_with("HERALD_") {
            cmd.env_remove(key);
        }
    }
    cmd.current_dir(dir)
        .env("HERALD_DATABASE_URL", database_url)
        .env("HERALD_LOG", "warn")
        // Test relays listen on loopback, and so do the tracking links; a
        // test of the refusal itself sets it back to false.
        .env("HERALD_ALLOW_UNSAFE", "true")
        .envs(env.iter().copied())
        .args(args);
    cmd
}

/// Sends SIGTERM to a spawned `herald` and waits for it to exit.
pub fn sigterm_and_wait(child: &mut std::process::Child) -> std::process::ExitStatus {
    let term = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success(), "kill -TERM {}", child.id());
    child.wait().unwrap()
}

/// The address a spawned `herald serve` (stdout piped) announces on its first
/// line of output, `… http://ADDR …`, and the rest of its output to read on.
pub fn announced_addr(
    child: &mut std::process::Child,
) -> (
    std::net::SocketAddr,
    std::io::BufReader<std::process::ChildStdout>,
) {
    let mut out = std::io::BufReader::new(child.stdout.take().expect("stdout piped"));
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line).expect("the first line of output");
    let addr = line
        .split("http://")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"));
    (addr, out)
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some((admin, name)) = self.pg.take() else {
            return;
        };
        // Drop runs outside any runtime the test may have had: use a private one.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                if let Ok(mut conn) = sqlx::PgConnection::connect(&admin).await {
                    let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                    let _ = sqlx::query(sqlx::AssertSqlSafe(sql))
                        .execute(&mut conn)
                        .await;
                }
            });
        })
        .join();
    }
}

/// Defines `NAME::sqlite` and `NAME::postgres` tests that run the same async
/// function `fn(TestDb)` on a fresh database of each backend.
#[macro_export]
macro_rules! both_backends {
    ($name:ident, $case:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$case($crate::common::TestDb::sqlite()).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if let Some(db) = $crate::common::TestDb::postgres().await {
                    super::$case(db).await;
                }
            }
        }
    };
}

/// One message of a shipped campaign step, as `herald preview` wrote it.
pub struct ShippedMessage {
    /// `CAMPAIGN/STEP`
    pub step: String,
    pub eml: PathBuf,
    pub html: PathBuf,
}

/// One message of every step of every campaign in `campaigns/`, DKIM-signed
/// with the test key, written by the real binary (`herald preview`) from a
/// freshly seeded `db`, for the
/// first member of each audience in address order, so every run writes the
/// same messages.
pub fn preview_shipped_steps(db: &TestDb) -> Vec<ShippedMessage> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let (campaigns, templates) = (root.join("campaigns"), root.join("templates"));
    let catalog = herald::campaign::load(
        std::slice::from_ref(&campaigns),
        &herald::campaign::Checks {
            templates: Some(&templates),
        },
    );
    assert!(catalog.problems.is_empty(), "{:?}", catalog.problems);
    assert!(!catalog.campaigns.is_empty());
    // Enough customers of every kind for each campaign's audience to have someone.
    let seeded = db.herald(&["seed", "--customers", "3000", "--seed", "1"]);
    assert!(seeded.status.success(), "{}", stderr(&seeded));
    let (campaigns, templates) = (campaigns.to_str().unwrap(), templates.to_str().unwrap());
    // Signed as they would be sent: the test key stands for acme.example.
    let key = dkim_key_path();
    let env = [
        ("HERALD_SECRET", "shipped-messages-secret-0123456789"),
        ("HERALD_PUBLIC_URL", "https://t.acme.example"),
        ("HERALD_DKIM_SELECTOR", "herald"),
        ("HERALD_DKIM_DOMAIN", "acme.example"),
        ("HERALD_DKIM_KEY", key.to_str().unwrap_or_default()),
    ];
    let mut messages = Vec::new();
    for (_, c) in &catalog.campaigns {
        let listed = db.herald(&["audience", &c.name, "--list", "--campaigns", campaigns]);
        assert!(listed.status.success(), "{}", stderr(&listed));
        let members = stdout(&listed);
        let customer = members
            .lines()
            .min()
            .unwrap_or_else(|| panic!("the seeded audience of {} is empty", c.name))
            .to_string();
        for step in &c.steps {
            let out = db.herald_env(
                &env,
                &[
                    "preview",
                    &c.name,
                    "--step",
                    &step.id,
                    "--customer",
                    &customer,
                    "--out",
                    "messages",
                    "--campaigns",
                    campaigns,
                    "--templates",
                    templates,
                ],
            );
            assert!(out.status.success(), "{}", stderr(&out));
            let base = format!("messages/{}-{}", c.name, step.id);
            let message = ShippedMessage {
                step: format!("{}/{}", c.name, step.id),
                eml: db.path(&format!("{base}.eml")),
                html: db.path(&format!("{base}.html")),
            };
            assert!(
                message.eml.is_file() && message.html.is_file(),
                "{}",
                stdout(&out)
            );
            messages.push(message);
        }
    }
    messages
}

/// Compares `actual` with `tests/snapshots/NAME`; `UPDATE_SNAPSHOTS=1` rewrites it.
pub fn assert_snapshot(name: &str, actual: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/snapshots")
        .join(name);
    if std::env::var("UPDATE_SNAPSHOTS").is_ok_and(|v| v == "1") {
        std::fs::create_dir_all(path.parent().expect("snapshot dir")).expect("create snapshots");
        std::fs::write(&path, actual).expect("write snapshot");
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|_| {
        panic!(
            "no snapshot {}; run with UPDATE_SNAPSHOTS=1 to create it",
            path.display()
        )
    });
    assert_eq!(
        actual, expected,
        "snapshot {name} differs; run with UPDATE_SNAPSHOTS=1 if the change is intended"
    );
}

/// The DKIM test key (tests/fixtures/dkim-test-key.pem, selector `herald`,
/// domain `acme.example`).
pub fn dkim_key_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dkim-test-key.pem")
}

/// Verifies the DKIM signature of the message in `eml` with dkimpy (an
/// independent verifier), the test key's record standing in for DNS. Prints
/// `ok h=…` or `bad h=…`; the caller asserts. dkimpy must be installed (the
/// caller checks, so it can skip outside CI).
pub fn dkim_verify(eml: &Path) -> String {
    let script = r#"
import sys, dkim
msg = open(sys.argv[1], 'rb').read()
record = open(sys.argv[2], 'rb').read().strip()
def dns(name, timeout=5):
    assert name == b'herald._domainkey.acme.example.', name
    return record
ok = dkim.verify(msg, dnsfunc=dns)
h = [x for x in msg.split(b'\r\n\r\n')[0].split(b'DKIM-Signature:')[1].replace(b'\r\n', b'').split(b';') if x.strip().startswith(b'h=')][0]
print(('ok ' if ok else 'bad ') + h.decode().strip())
"#;
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(eml)
        .arg(dkim_key_path().with_extension("txt"))
        .output()
        .expect("python3");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Whether dkimpy is installed; in CI its absence fails the test.
pub fn have_dkimpy() -> bool {
    let have = Command::new("python3")
        .args(["-c", "import dkim"])
        .status()
        .is_ok_and(|s| s.success());
    if !have {
        assert!(!in_ci(), "dkimpy is required in CI (.ci/run installs it)");
        eprintln!(
            "skipped: install dkimpy (`python3 -m pip install dkimpy`) to verify DKIM signatures"
        );
    }
    have
}
