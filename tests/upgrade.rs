//! A database made by the previous release upgrades with its data.
//!
//! `tests/fixtures/upgrade/` holds databases the previous release (7a0c9bd)
//! wrote, made by `tests/fixtures/make.sh`: 150 seeded customers, campaign `t`
//! sent into the outbox, the two-step sequence `seq` with its first step sent,
//! then 50 more customers `t` has not reached. Each test restores one into its
//! fresh database, runs the current binary's `herald migrate` and checks that
//! nothing was lost and that the current binary carries on where the old one
//! stopped.

mod common;

use std::collections::HashSet;
use std::path::Path;

use common::smtp::SmtpServer;
use common::{TestDb, stderr, stdout};
use herald::store::Backend;
use sqlx::Connection as _;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/upgrade");
const RELEASE: &str = "7a0c9bd";
/// The migrations the previous release lacks.
const NEW_MIGRATIONS: [i64; 6] = [
    20261202000001,
    20261206000001,
    20261208000001,
    20261209000001,
    20261210000001,
    20261211000001,
];

/// The fixture of `db`'s backend, restored into `db`, with the fixture's
/// campaign files and templates in the test's directory.
async fn restore_fixture(db: &TestDb) {
    for dir in ["campaigns", "templates"] {
        std::fs::create_dir_all(db.path(dir)).unwrap();
        for file in std::fs::read_dir(Path::new(FIXTURES).join(dir)).unwrap() {
            let file = file.unwrap();
            std::fs::copy(file.path(), db.path(dir).join(file.file_name())).unwrap();
        }
    }
    match db.backend {
        Backend::Sqlite => {
            let fixture = Path::new(FIXTURES).join(format!("herald-{RELEASE}.db"));
            std::fs::copy(fixture, db.path("herald.db")).unwrap();
        }
        Backend::Postgres => {
            let dump = std::fs::read_to_string(
                Path::new(FIXTURES).join(format!("herald-{RELEASE}.pg.sql")),
            )
            .unwrap();
            // pg_dump's psql meta-commands (`\restrict KEY`, `\unrestrict KEY`) are not SQL.
            let sql: String = dump
                .lines()
                .filter(|l| !l.starts_with("\\restrict ") && !l.starts_with("\\unrestrict "))
                .flat_map(|l| [l, "\n"])
                .collect();
            let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(&mut conn)
                .await
                .expect("the dump restores");
            conn.close().await.unwrap();
        }
    }
}

/// Rows of text columns from a query run over a connection of its own.
async fn rows(db: &TestDb, sql: &str) -> Vec<Vec<String>> {
    use sqlx::Row as _;
    let sql = sqlx::AssertSqlSafe(sql.to_string());
    match db.backend {
        Backend::Sqlite => {
            let mut conn = sqlx::SqliteConnection::connect(&db.url).await.unwrap();
            let found = sqlx::query(sql).fetch_all(&mut conn).await.unwrap();
            conn.close().await.unwrap();
            found
                .iter()
                .map(|r| (0..r.len()).map(|i| r.get::<String, _>(i)).collect())
                .collect()
        }
        Backend::Postgres => {
            let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
            let found = sqlx::query(sql).fetch_all(&mut conn).await.unwrap();
            conn.close().await.unwrap();
            found
                .iter()
                .map(|r| (0..r.len()).map(|i| r.get::<String, _>(i)).collect())
                .collect()
        }
    }
}

/// One number from a query run over a connection of its own.
async fn count(db: &TestDb, sql: &str) -> i64 {
    let sql = sqlx::AssertSqlSafe(sql.to_string());
    match db.backend {
        Backend::Sqlite => {
            let mut conn = sqlx::SqliteConnection::connect(&db.url).await.unwrap();
            sqlx::query_scalar(sql).fetch_one(&mut conn).await.unwrap()
        }
        Backend::Postgres => {
            let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
            sqlx::query_scalar(sql).fetch_one(&mut conn).await.unwrap()
        }
    }
}

/// What the upgrade must keep: every customer (email, name, status,
/// attributes), row counts per table, deliveries per campaign, step and status,
/// and the generated tracking key (links in mail already sent verify with it).
async fn snapshot(db: &TestDb) -> Vec<Vec<String>> {
    let text = match db.backend {
        Backend::Sqlite => "CAST(attributes AS TEXT)",
        Backend::Postgres => "attributes::text",
    };
    let mut all = rows(
        db,
        &format!(
            "SELECT email, COALESCE(first_name, ''), status, {text} FROM customers ORDER BY email"
        ),
    )
    .await;
    let tables = [
        "customers",
        "interactions",
        "suppressions",
        "runs",
        "entries",
        "deliveries",
        "generated_keys",
    ];
    for table in tables {
        let n = count(db, &format!("SELECT COUNT(*) FROM {table}")).await;
        all.push(vec![table.to_string(), n.to_string()]);
    }
    all.extend(
        rows(
            db,
            "SELECT campaign || ' ' || step || ' ' || status || ' ' || CAST(COUNT(*) AS TEXT) \
             FROM deliveries GROUP BY campaign, step, status ORDER BY 1",
        )
        .await,
    );
    all.extend(
        rows(
            db,
            "SELECT name || ' ' || value FROM generated_keys ORDER BY name",
        )
        .await,
    );
    all
}

async fn upgraded_database_keeps_its_data_and_carries_on(db: TestDb) {
    restore_fixture(&db).await;
    let before = snapshot(&db).await;
    let already: HashSet<String> = rows(
        &db,
        "SELECT c.email FROM customers c JOIN deliveries d ON d.customer_id = c.id \
         WHERE d.campaign = 't'",
    )
    .await
    .into_iter()
    .map(|r| r[0].clone())
    .collect();
    // The story the fixture tells.
    assert_eq!(count(&db, "SELECT COUNT(*) FROM customers").await, 200);
    assert!(already.len() > 100, "{} reached by `t`", already.len());
    assert_eq!(count(&db, "SELECT COUNT(*) FROM runs").await, 2);
    let first_sent = count(
        &db,
        "SELECT COUNT(*) FROM deliveries WHERE campaign = 'seq' AND step = 'first' \
         AND status = 'sent'",
    )
    .await;
    assert!(first_sent > 0);
    let migrated_before = count(&db, "SELECT COUNT(*) FROM herald_migrations").await;
    for version in NEW_MIGRATIONS {
        assert_eq!(
            count(
                &db,
                &format!("SELECT COUNT(*) FROM herald_migrations WHERE version = {version}")
            )
            .await,
            0,
            "the fixture predates migration {version}"
        );
    }

    let migrated = db.herald(&["migrate"]);
    assert!(migrated.status.success(), "{}", stderr(&migrated));
    assert!(
        stdout(&migrated).contains("schema is up to date"),
        "{}",
        stdout(&migrated)
    );
    assert_eq!(
        count(&db, "SELECT COUNT(*) FROM herald_migrations").await,
        migrated_before + NEW_MIGRATIONS.len() as i64
    );
    for version in NEW_MIGRATIONS {
        assert_eq!(
            count(
                &db,
                &format!(
                    "SELECT COUNT(*) FROM herald_migrations WHERE version = {version} AND success"
                )
            )
            .await,
            1
        );
    }
    assert_eq!(snapshot(&db).await, before, "the data survived the upgrade");

    // The current binary reads what the old one wrote ...
    let stats = db.herald(&["stats", "t", "--json"]);
    assert!(stats.status.success(), "{}", stderr(&stats));
    let stats: serde_json::Value = serde_json::from_str(&stdout(&stats)).unwrap();
    let sent_t = count(
        &db,
        "SELECT COUNT(*) FROM deliveries WHERE campaign = 't' AND status = 'sent'",
    )
    .await;
    assert_eq!(stats["totals"]["sent"], sent_t);
    let status = db.herald(&["status", "seq"]);
    assert!(status.status.success(), "{}", stderr(&status));
    let entries = count(&db, "SELECT COUNT(*) FROM entries WHERE campaign = 'seq'").await;
    assert!(
        stdout(&status).starts_with(&format!("seq: 2 steps, {entries} entries\n")),
        "{}",
        stdout(&status)
    );

    // ... moves the sequence on (the second step is due) ...
    let advanced = db.herald(&["advance", "seq"]);
    assert!(advanced.status.success(), "{}", stderr(&advanced));
    assert_eq!(
        count(
            &db,
            "SELECT COUNT(*) FROM deliveries WHERE campaign = 'seq' AND step = 'second'"
        )
        .await,
        first_sent,
        "everyone whose first step went out is queued for the second"
    );

    // ... and a new run of `t` reaches only the 50 customers it had not.
    let server = SmtpServer::accepting().await;
    let url = server.url();
    let run = db.herald_env(&[("HERALD_SMTP_URL", url.as_str())], &["run", "t"]);
    assert!(run.status.success(), "{}", stderr(&run));
    let received: Vec<String> = server.received().into_iter().map(|r| r.to).collect();
    let unique: HashSet<String> = received.iter().cloned().collect();
    assert!(!unique.is_empty());
    assert_eq!(received.len(), unique.len(), "nobody twice");
    assert!(
        unique.is_disjoint(&already),
        "nobody the old release had sent to"
    );
    let newly_sent: HashSet<String> = rows(
        &db,
        "SELECT c.email FROM customers c JOIN deliveries d ON d.customer_id = c.id \
         JOIN runs r ON r.id = d.run_id \
         WHERE d.campaign = 't' AND d.status = 'sent' AND r.id = (SELECT MAX(id) FROM runs WHERE campaign = 't')",
    )
    .await
    .into_iter()
    .map(|r| r[0].clone())
    .collect();
    assert_eq!(unique, newly_sent);
    // Seeded customer i has external id S3-i: the new ones are 150 and up.
    let seeded_later: HashSet<String> = rows(
        &db,
        "SELECT email FROM customers WHERE CAST(substr(external_id, 4) AS INTEGER) >= 150",
    )
    .await
    .into_iter()
    .map(|r| r[0].clone())
    .collect();
    assert!(unique.is_subset(&seeded_later), "only the 50 seeded later");
    let (deliveries, customers) = db
        .pairs("SELECT COUNT(*), COUNT(DISTINCT customer_id) FROM deliveries WHERE campaign = 't'")
        .await[0];
    assert_eq!(Some(deliveries), customers, "nobody has `t` twice");
}
both_backends!(upgrade, upgraded_database_keeps_its_data_and_carries_on);
