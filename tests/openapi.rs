//! The API's OpenAPI document (`GET /v1/openapi.json`) kept true: it is valid
//! OpenAPI 3.1 by an independent validator (openapi-spec-validator); every
//! operation it lists is served, and no other method on its paths; and
//! schemathesis, a property-based API tester, sends the real server (on each
//! backend, with seeded customers) what the document allows and what it does
//! not, and finds no 5xx and no answer the document does not describe.
//!
//! The Python tools are optional outside CI (the tests say how to install
//! them and pass); with `CI=true` a missing tool fails the test.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use common::api::{Answer, Auth, Server, create_key, get};
use common::{TestDb, in_ci, stderr};
use herald::customer::CustomerRef;
use serde_json::Value;

/// Whether `python3 -c CHECK` succeeds; when it does not, fails in CI and
/// says how to install `what` elsewhere.
fn have(check: &[&str], what: &str) -> bool {
    let have = Command::new(check[0])
        .args(&check[1..])
        .output()
        .is_ok_and(|o| o.status.success());
    if !have {
        assert!(!in_ci(), "{what} is required in CI (.ci/run installs it)");
        eprintln!("skipped: install {what} (`python3 -m pip install {what}`) to run this test");
    }
    have
}

/// The served document, fetched without a key.
async fn document(s: &Server) -> Value {
    let a = get(s, "/v1/openapi.json", Auth::None).await;
    assert_eq!(a.status, 200, "{}", a.body);
    a.body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_is_valid_openapi_3_1() {
    let db = TestDb::sqlite();
    let s = Server::start(db.store().await, "1000/s").await;
    let doc = document(&s).await;
    s.stop().await;
    assert_eq!(doc["openapi"], "3.1.0");
    if !have(
        &["python3", "-c", "import openapi_spec_validator"],
        "openapi-spec-validator",
    ) {
        return;
    }
    let file = db.path("openapi.json");
    std::fs::write(&file, doc.to_string()).unwrap();
    let out = Command::new("python3")
        .args([
            "-c",
            "import sys, json\n\
             from openapi_spec_validator import validate\n\
             validate(json.load(open(sys.argv[1])))\n\
             print('valid')",
        ])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openapi-spec-validator refused the document:\n{}",
        stderr(&out)
    );
}

/// Every operation of the document is served (a request without a key is
/// refused with 401, not the API's 404 or 405), and every other method on a
/// documented path is 405: the router and the document list the same
/// operations. (That they list the same paths is a unit test beside the
/// router, `http::api::openapi`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_operation_is_served_and_no_other() {
    let db = TestDb::sqlite();
    let s = Server::start(db.store().await, "1000/s").await;
    let doc = document(&s).await;
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.contains_key("/v1/customers/{id_or_email}"));
    assert!(paths.contains_key("/v1/keys"));
    let methods = ["get", "post", "put", "patch", "delete"];
    let mut operations = 0;
    for (path, item) in paths {
        let documented: BTreeSet<&str> = item
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .filter(|m| methods.contains(m))
            .collect();
        // Any value will do for a path parameter: no key, so no look-up.
        let url = path.replace("{id_or_email}", "1").replace("{name}", "x");
        for method in methods {
            let request = s
                .client
                .request(method.to_uppercase().parse().unwrap(), s.url(&url));
            let a = Answer::of(request.send().await.unwrap()).await;
            if !documented.contains(method) {
                a.error(405, "method_not_allowed", None);
                continue;
            }
            operations += 1;
            let open = item[method]["security"] == serde_json::json!([{}]);
            if open {
                assert_eq!(a.status, 200, "{method} {path}: {}", a.body);
            } else {
                a.error(401, "unauthorized", None);
            }
            // Each answer of the operation is one its document lists.
            let listed = item[method]["responses"].as_object().unwrap();
            assert!(
                listed.contains_key(a.status.as_str()),
                "{method} {path} answered {} and does not document it",
                a.status
            );
        }
    }
    assert!(operations >= 9, "{operations}");
    s.stop().await;
}

/// schemathesis --checks all against the real server: no 5xx, no status,
/// content type, header or body the document does not describe, schema-valid
/// requests accepted and schema-violating ones refused.
async fn schemathesis_finds_nothing(db: TestDb) {
    if !have(&["schemathesis", "--version"], "schemathesis") {
        return;
    }
    let seeded = db.herald(&["seed", "--customers", "30", "--seed", "7"]);
    assert!(seeded.status.success(), "{}", stderr(&seeded));
    let admin = create_key(&db, "schemathesis", "admin");
    let store = db.store().await;
    // Ids and addresses of the seeded customers: the first twenty for most
    // routes, the last ten for erasure.
    let ids = db
        .pairs("SELECT id, CAST(NULL AS BIGINT) FROM customers ORDER BY id")
        .await;
    assert_eq!(ids.len(), 30);
    let mut names = Vec::new();
    for (id, _) in &ids {
        let c = store
            .customer_by_ref(&CustomerRef::Id(*id))
            .await
            .unwrap()
            .unwrap();
        names.push(vec![id.to_string(), c.email.to_string()]);
    }
    let dictionary = |rows: &[Vec<String>]| {
        serde_json::to_string(&rows.concat()).unwrap() // a JSON array is a TOML array
    };
    // A transactional campaign to send, and messages sent before the run for
    // `GET /v1/messages/{id}` to find.
    let receipt = herald::campaign::parse(
        "receipt.yaml",
        "name: receipt\nkind: transactional\nfrom: \"Acme <orders@acme.example>\"\n\
         steps:\n  - id: receipt\n    subject: Your order\n    template: receipt\n",
    )
    .unwrap();
    let s = Server::start_with(
        store,
        "100000/s",
        herald::http::Campaigns::new(std::slice::from_ref(&receipt)),
    )
    .await;
    let mut messages = Vec::new();
    for (i, name) in names[..5].iter().enumerate() {
        let answer = s
            .client
            .post(s.url("/v1/send"))
            .bearer_auth(&admin)
            .header("Idempotency-Key", format!("before-the-run-{i}"))
            .json(&serde_json::json!({"campaign": "receipt", "to": name[1]}))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 202);
        let body: Value = answer.json().await.unwrap();
        messages.push(vec![body["id"].as_str().unwrap().to_string()]);
    }
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/schemathesis.toml");
    let config = format!(
        "{}\n[dictionaries.customers]\nvalues = {}\n\n[dictionaries.erasable]\nvalues = {}\n\n\
         [dictionaries.messages]\nvalues = {}\n",
        std::fs::read_to_string(fixture).unwrap(),
        dictionary(&names[..20]),
        dictionary(&names[20..]),
        dictionary(&messages),
    );
    let config_file = db.path("schemathesis.toml");
    std::fs::write(&config_file, config).unwrap();

    let url = s.url("/v1/openapi.json");
    let dir = db.dir.path().to_path_buf();
    let run = tokio::task::spawn_blocking(move || {
        Command::new("schemathesis")
            .current_dir(&dir)
            .args(["--no-color", "--config-file"])
            .arg(&config_file)
            .args(["run", &url, "--checks", "all", "--max-examples", "150"])
            .args(["--seed", "20261206", "--workers", "2"])
            .args(["-H", &format!("Authorization: Bearer {admin}")])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    s.stop().await;
    let report = format!("{}{}", String::from_utf8_lossy(&run.stdout), stderr(&run));
    assert!(
        run.status.success(),
        "schemathesis found the API and its document disagree:\n{report}"
    );
    // The run reached the customers: not every answer was a 404.
    assert!(!report.contains("Missing test data"), "{report}");
    assert!(!report.contains("Authentication failed"), "{report}");
}
both_backends!(schemathesis, schemathesis_finds_nothing);
