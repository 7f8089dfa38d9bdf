//! `herald config` and `herald migrate` through the real binary.

mod common;

use common::{TestDb, herald_in, stderr, stdout};

#[test]
fn precedence_flag_env_file_and_masking() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("herald.toml"),
        "smtp_rate = \"10/s\"\nfrequency_cap = \"3/7d\"\nsmtp_url = \"smtp://mailer:hunter2@relay.example:587\"\nwebhook_secret = \"whsec\"\nsecret = \"k1-0123456789abcdef,k2-0123456789abcdef\"\n",
    )
    .unwrap();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_herald"));
    for (key, _) in std::env::vars() {
        if key.starts_with("HERALD_") {
            cmd.env_remove(key);
        }
    }
    let out = cmd
        .current_dir(dir.path())
        .env("HERALD_SMTP_RATE", "20/s")
        .env("HERALD_SMTP_CONCURRENCY", "4")
        .args(["config", "--smtp-rate", "50/s"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let line = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no {name} in {text}"))
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert_eq!(line("smtp_rate"), "smtp_rate 50/s (flag)");
    assert_eq!(line("smtp_concurrency"), "smtp_concurrency 4 (environment)");
    assert_eq!(line("frequency_cap"), "frequency_cap 3/7d (herald.toml)");
    assert_eq!(
        line("database_url"),
        "database_url sqlite://herald.db (default)"
    );
    assert_eq!(
        line("smtp_url"),
        "smtp_url smtp://mailer:****@relay.example:587 (herald.toml)"
    );
    assert_eq!(line("secret"), "secret **** (2 keys) (herald.toml)");
    assert_eq!(line("webhook_secret"), "webhook_secret **** (herald.toml)");
    assert!(!text.contains("hunter2") && !text.contains("whsec") && !text.contains("k1-"));
}

#[test]
fn bad_settings_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let out = herald_in(
        dir.path(),
        "sqlite://x.db",
        &["config", "--frequency-cap", "three a week"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out)
            .contains("setting frequency_cap (from --frequency-cap): invalid frequency cap"),
        "{}",
        stderr(&out)
    );
    std::fs::write(dir.path().join("h.toml"), "smtp_rat = 1\n").unwrap();
    let out = herald_in(
        dir.path(),
        "sqlite://x.db",
        &["config", "--config", "h.toml"],
    );
    assert!(
        stderr(&out).contains("h.toml: unknown setting \"smtp_rat\""),
        "{}",
        stderr(&out)
    );
}

#[test]
fn sqlite_default_file_is_created_in_the_working_directory() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_herald"));
    for (key, _) in std::env::vars() {
        if key.starts_with("HERALD_") {
            cmd.env_remove(key);
        }
    }
    let out = cmd.current_dir(dir.path()).arg("migrate").output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("schema is up to date (sqlite)"));
    assert!(dir.path().join("herald.db").exists());
}

async fn migrate_twice(db: TestDb) {
    for _ in 0..2 {
        let out = db.herald(&["migrate"]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let store = db.store().await;
    assert_eq!(store.table_counts().await.unwrap().customers, 0);
    store.close().await;
}
both_backends!(migrate, migrate_twice);

/// Logs written to a pipe carry no colour codes; `log_format = "json"` makes
/// every log line one JSON object with its level and fields.
#[test]
fn logs_are_plain_in_a_pipe_and_json_on_request() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("campaigns")).unwrap();
    std::fs::create_dir_all(d.join("templates")).unwrap();
    std::fs::write(d.join("campaigns/t.yaml"), common::HELLO_CAMPAIGN).unwrap();
    std::fs::write(
        d.join("templates/hello.html.hbs"),
        "<p>Hi {{unsubscribe_url}}</p>",
    )
    .unwrap();
    let url = format!("sqlite://{}", d.join("herald.db").display());
    let seeded = herald_in(d, &url, &["seed", "--customers", "5"]);
    assert!(seeded.status.success(), "{}", stderr(&seeded));
    let info = [("HERALD_LOG", "herald=info")];
    let out = common::herald_cmd(d, &url, &info, &["run", "t"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stderr(&out);
    assert!(text.contains("no secret configured"), "{text}");
    assert!(!text.contains('\u{1b}'), "colour codes in a pipe: {text:?}");

    let json = [("HERALD_LOG", "herald=info"), ("HERALD_LOG_FORMAT", "json")];
    let out = common::herald_cmd(d, &url, &json, &["run", "t"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let lines: Vec<serde_json::Value> = stderr(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(
        lines.iter().any(|l| l["level"] == "WARN"
            && l["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("no secret configured"))),
        "{lines:?}"
    );
    let bad = common::herald_cmd(d, &url, &[("HERALD_LOG_FORMAT", "xml")], &["config"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        stderr(&bad)
            .contains("setting log_format (from HERALD_LOG_FORMAT): \"xml\" is not text or json")
    );
}

/// A statement that takes over a second (here: waiting for a lock the test
/// holds) no longer prints its SQL as a warning to the person at the terminal;
/// sqlx reports it at debug.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_statements_are_not_warnings() {
    use sqlx::Connection as _;
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let seeded = db.herald(&["seed", "--customers", "5"]);
    assert!(seeded.status.success(), "{}", stderr(&seeded));
    // `herald seed` while the test holds the customers table for 1.5 s.
    let seed_behind_a_lock = async |env: &[(&str, &str)], n: &str| {
        let mut lock = sqlx::PgConnection::connect(&db.url).await.unwrap();
        sqlx::raw_sql("BEGIN; LOCK TABLE customers IN ACCESS EXCLUSIVE MODE")
            .execute(&mut lock)
            .await
            .unwrap();
        let child = db
            .command(env, &["seed", "--customers", n])
            .stderr(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
        sqlx::raw_sql("COMMIT").execute(&mut lock).await.unwrap();
        child.wait_with_output().unwrap()
    };
    let out = seed_behind_a_lock(&[], "6").await;
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        !err.contains("slow statement") && !err.contains("INSERT"),
        "{err}"
    );
    // The notice is still there for whoever asks for it.
    let out = seed_behind_a_lock(&[("HERALD_LOG", "sqlx=debug")], "7").await;
    assert!(stderr(&out).contains("slow statement"), "{}", stderr(&out));
}
