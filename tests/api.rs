//! The `/v1` JSON API's foundation over real HTTP on both backends: keys made
//! by the real `herald api-key`, requests from a real HTTP client (reqwest)
//! to the real server on a port-0 listener (and to `herald serve`, for the
//! log lines and the rate limit), and after every refusal a count of what is
//! stored.

mod common;

use base64::Engine as _;
use common::api::{Answer, Auth, JSON, Server, client, create_key, get, gzip, post};
use common::{TestDb, stderr, stdout};
use serde_json::{Value, json};

/// (keys, active keys) as stored.
async fn key_rows(db: &TestDb) -> (i64, i64) {
    let rows = db
        .pairs("SELECT COUNT(*), SUM(CASE WHEN revoked_at IS NULL THEN 1 ELSE 0 END) FROM api_keys")
        .await;
    (rows[0].0, rows[0].1.unwrap_or(0))
}

/// A key of the right shape that was never issued.
const UNKNOWN: &str =
    "hk_0123456789ab_00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

/// A key with its last character changed: the right prefix, a wrong secret.
fn tampered(key: &str) -> String {
    let last = if key.ends_with('0') { '1' } else { '0' };
    format!("{}{last}", &key[..key.len() - 1])
}

async fn keys_on_the_command_line_and_over_http(db: TestDb) {
    let admin = create_key(&db, "ops", "admin");
    let ingest = create_key(&db, "shop-web", "ingest");
    let read = create_key(&db, "reporting", "read");
    let old = create_key(&db, "old", "ingest");

    // Only a digest is stored: no table holds the key or its secret part.
    let hashes = db.pairs("SELECT COUNT(*), NULL FROM api_keys").await;
    assert_eq!(hashes[0].0, 4);
    let store = db.store().await;
    for key in [&admin, &ingest, &read, &old] {
        let (_, secret) = key[3..].split_once('_').unwrap();
        let stored = store.api_key_by_prefix(&key[3..15]).await.unwrap().unwrap();
        assert!(!format!("{:?}", stored.key).contains(secret));
    }
    let listed = db.herald(&["api-key", "list"]);
    assert!(listed.status.success(), "{}", stderr(&listed));
    let list = stdout(&listed);
    for (name, key, scope) in [
        ("ops", &admin, "admin"),
        ("shop-web", &ingest, "ingest"),
        ("reporting", &read, "read"),
    ] {
        let line = list.lines().find(|l| l.starts_with(name)).unwrap();
        assert!(line.contains(scope) && line.contains(&key[..15]), "{list}");
        assert!(!list.contains(&key[16..]), "a secret in the list: {list}");
    }

    // The same name twice, a bad name: refused, nothing written.
    let again = db.herald(&["api-key", "create", "ops", "--scope", "read"]);
    assert!(!again.status.success());
    assert!(
        stderr(&again).contains("named ops exists"),
        "{}",
        stderr(&again)
    );
    let bad = db.herald(&["api-key", "create", "a b", "--scope", "read"]);
    assert!(!bad.status.success());
    assert!(
        stderr(&bad).contains("invalid key name"),
        "{}",
        stderr(&bad)
    );
    assert_eq!(key_rows(&db).await, (4, 4));

    let revoked = db.herald(&["api-key", "revoke", "old"]);
    assert!(revoked.status.success(), "{}", stderr(&revoked));
    assert!(stdout(&revoked).contains("revoked API key old"));
    let twice = db.herald(&["api-key", "revoke", "old"]);
    assert!(!twice.status.success());
    assert!(stderr(&twice).contains("no active API key named \"old\""));
    assert_eq!(key_rows(&db).await, (4, 3));
    let list = stdout(&db.herald(&["api-key", "list"]));
    let old_line = list.lines().find(|l| l.starts_with("old")).unwrap();
    assert!(
        !old_line.trim_end().ends_with('-'),
        "revoked time shown: {list}"
    );

    let s = Server::start(store, "1000/s").await;

    // Both ways of sending a key; any scope may ask who it is.
    for (auth, name, scope) in [
        (Auth::Bearer(&admin), "ops", "admin"),
        (Auth::Basic(&ingest), "shop-web", "ingest"),
        (Auth::Bearer(&read), "reporting", "read"),
    ] {
        let a = get(&s, "/v1/keys/current", auth).await;
        assert_eq!(a.status, 200, "{}", a.body);
        assert_eq!(a.body["name"], name);
        assert_eq!(a.body["scope"], scope);
        assert!(a.body.get("key").is_none() && a.body.get("key_hash").is_none());
    }

    // 401: no key, an unknown or tampered key, a revoked one, a malformed
    // header; as Basic and as Bearer.
    let a = get(&s, "/v1/keys/current", Auth::None).await;
    a.error(401, "unauthorized", None);
    let challenges: Vec<_> = a.headers.get_all("www-authenticate").iter().collect();
    assert_eq!(challenges.len(), 2, "{challenges:?}");
    let wrong = tampered(&admin);
    for key in [UNKNOWN, wrong.as_str(), "hk_", "not-a-key"] {
        for auth in [Auth::Bearer(key), Auth::Basic(key)] {
            let m = get(&s, "/v1/keys/current", auth)
                .await
                .error(401, "unauthorized", None)
                .to_string();
            assert_eq!(m, "the API key is not valid");
        }
    }
    for auth in [Auth::Bearer(&old), Auth::Basic(&old)] {
        let m = get(&s, "/v1/keys/current", auth)
            .await
            .error(401, "unauthorized", None)
            .to_string();
        assert_eq!(m, "the API key was revoked");
    }
    let with_password = base64::engine::general_purpose::STANDARD.encode(format!("{admin}:x"));
    let a = Answer::of(
        s.client
            .get(s.url("/v1/keys/current"))
            .header("authorization", format!("Basic {with_password}"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(
        a.error(401, "unauthorized", None)
            .contains("empty password")
    );

    // 403: a valid key without the scope; admin sees every key, no secrets.
    for auth in [Auth::Bearer(&ingest), Auth::Basic(&read)] {
        let m = get(&s, "/v1/keys", auth)
            .await
            .error(403, "forbidden", None)
            .to_string();
        assert!(m.contains("needs admin"), "{m}");
    }
    let all = get(&s, "/v1/keys", Auth::Basic(&admin)).await;
    assert_eq!(all.status, 200, "{}", all.body);
    let keys = all.body["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 4);
    let text = all.body.to_string();
    for key in [&admin, &ingest, &read, &old] {
        assert!(!text.contains(&key[16..]), "a secret in {text}");
    }
    let old_view = keys.iter().find(|k| k["name"] == "old").unwrap();
    assert!(old_view["revoked_at"].is_string());
    // An accepted key's use is noted (beside the request, so wait a little).
    let mut used = None;
    for _ in 0..50 {
        used = db
            .pairs("SELECT COUNT(*), NULL FROM api_keys WHERE last_used_at IS NOT NULL")
            .await
            .first()
            .map(|r| r.0);
        if used == Some(3) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(
        used,
        Some(3),
        "ops, shop-web and reporting were used; old was not"
    );

    // Unknown routes and methods answer in the API's format.
    get(&s, "/v1/nothing-here", Auth::Bearer(&admin))
        .await
        .error(404, "not_found", None);
    let a = Answer::of(
        s.client
            .put(s.url("/v1/keys"))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap(),
    )
    .await;
    a.error(405, "method_not_allowed", None);
    s.stop().await;
}
both_backends!(keys_and_auth, keys_on_the_command_line_and_over_http);

async fn bad_requests_are_refused_and_write_nothing(db: TestDb) {
    let admin = create_key(&db, "ops", "admin");
    let read = create_key(&db, "reporting", "read");
    let old = create_key(&db, "old", "admin");
    assert!(db.herald(&["api-key", "revoke", "old"]).status.success());
    let s = Server::start(db.store().await, "1000/s").await;
    let before = key_rows(&db).await;
    assert_eq!(before, (3, 2));
    let new = |name: &str| {
        json!({"name": name, "scope": "ingest"})
            .to_string()
            .into_bytes()
    };

    // Refused before the body is read: no key, wrong key, revoked, wrong scope.
    for (auth, status) in [
        (Auth::None, 401),
        (Auth::Bearer(UNKNOWN), 401),
        (Auth::Basic(&old), 401),
        (Auth::Bearer(&read), 403),
        (Auth::Basic(&read), 403),
    ] {
        let a = post(&s, "/v1/keys", auth, &[JSON], new("sneaky")).await;
        assert_eq!(a.status.as_u16(), status, "{}", a.body);
    }
    // A body the route cannot read: 400 naming the field, 415, 413, 422.
    let auth = Auth::Bearer(&admin);
    /// Headers, body, and the status, code and field of the answer.
    type Case<'a> = (
        &'a [(&'a str, &'a str)],
        Vec<u8>,
        u16,
        &'a str,
        Option<&'a str>,
    );
    let cases: Vec<Case> = vec![
        (
            &[JSON],
            b"{\"name\": \"x\",".to_vec(),
            400,
            "bad_request",
            None,
        ),
        (&[JSON], b"\"a string\"".to_vec(), 400, "bad_request", None),
        (
            &[JSON],
            br#"{"name": "x", "scope": "root"}"#.to_vec(),
            400,
            "bad_request",
            Some("scope"),
        ),
        (
            &[JSON],
            br#"{"name": "x"}"#.to_vec(),
            400,
            "bad_request",
            Some("scope"),
        ),
        (
            &[JSON],
            br#"{"name": 7, "scope": "read"}"#.to_vec(),
            400,
            "bad_request",
            Some("name"),
        ),
        (
            &[JSON],
            br#"{"name": "x", "scope": "read", "admin": true}"#.to_vec(),
            400,
            "bad_request",
            Some("admin"),
        ),
        (
            &[JSON],
            br#"{"name": "a b", "scope": "read"}"#.to_vec(),
            422,
            "unprocessable",
            Some("name"),
        ),
        (
            &[JSON],
            br#"{"name": "ops", "scope": "read"}"#.to_vec(),
            409,
            "conflict",
            None,
        ),
        (&[], new("x"), 415, "unsupported_media_type", None),
        (
            &[("content-type", "text/plain")],
            new("x"),
            415,
            "unsupported_media_type",
            None,
        ),
        (
            &[JSON, ("content-encoding", "br")],
            new("x"),
            415,
            "unsupported_media_type",
            None,
        ),
        (
            &[JSON, ("content-encoding", "gzip")],
            new("x"),
            400,
            "bad_request",
            None,
        ),
    ];
    for (headers, body, status, code, field) in cases {
        let text = String::from_utf8_lossy(&body).into_owned();
        let a = post(&s, "/v1/keys", auth, headers, body).await;
        assert_eq!(a.status.as_u16(), status, "{text}: {}", a.body);
        let m = a.error(status, code, field);
        if let Some(f) = field {
            assert!(m.starts_with(&format!("{f}:")), "{m}");
        }
    }
    // 413: too large as sent, and too large once decompressed (a gzip bomb).
    let padding = " ".repeat(2000);
    let large = format!("{{\"name\": \"big\",{padding}\"scope\": \"read\"}}");
    let a = post(&s, "/v1/keys", auth, &[JSON], large.clone().into_bytes()).await;
    assert!(
        a.error(413, "payload_too_large", None)
            .contains("1024 bytes")
    );
    let bomb = gzip(large.as_bytes());
    assert!(bomb.len() < 1024);
    post(
        &s,
        "/v1/keys",
        auth,
        &[JSON, ("content-encoding", "gzip")],
        bomb,
    )
    .await
    .error(413, "payload_too_large", None);
    // 404: revoking a key that is not active.
    let a = Answer::of(
        s.client
            .delete(s.url("/v1/keys/old"))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap(),
    )
    .await;
    a.error(404, "not_found", None);
    assert_eq!(key_rows(&db).await, before, "a refused request wrote");

    // Accepted: a gzipped body creates a key that works at once; revoking it
    // over HTTP refuses it at once.
    let a = post(
        &s,
        "/v1/keys",
        auth,
        &[JSON, ("content-encoding", "gzip")],
        gzip(&new("checkout")),
    )
    .await;
    assert_eq!(a.status, 201, "{}", a.body);
    assert_eq!(a.body["scope"], "ingest");
    let key = a.body["key"].as_str().unwrap().to_string();
    assert_eq!(key_rows(&db).await, (4, 3));
    let me = get(&s, "/v1/keys/current", Auth::Basic(&key)).await;
    assert_eq!(me.body["name"], "checkout");
    let a = Answer::of(
        s.client
            .delete(s.url("/v1/keys/checkout"))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(a.body["revoked_at"].is_string());
    get(&s, "/v1/keys/current", Auth::Basic(&key))
        .await
        .error(401, "unauthorized", None);
    // The name of a revoked key can be given to a new one.
    let a = post(&s, "/v1/keys", auth, &[JSON], new("checkout")).await;
    assert_eq!(a.status, 201, "{}", a.body);
    assert_eq!(key_rows(&db).await, (5, 3));
    s.stop().await;
}
both_backends!(bad_requests, bad_requests_are_refused_and_write_nothing);

/// `herald serve`: request ids answered and in the log lines; each key's
/// rate (`api_rate`) is its own, and a request over it gets 429.
async fn request_ids_and_rate_limits_in_herald_serve(db: TestDb) {
    let admin = create_key(&db, "ops", "admin");
    let other = create_key(&db, "shop-web", "ingest");
    let mut child = db
        .command(
            &[
                ("HERALD_HTTP_ADDR", "127.0.0.1:0"),
                ("HERALD_API_RATE", "3/m"),
                ("HERALD_LOG", "herald=info"),
                ("HERALD_LOG_FORMAT", "json"),
            ],
            &["serve"],
        )
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (addr, _stdout) = common::announced_addr(&mut child); // kept open: serve still prints
    let client = client();
    let url = format!("http://{addr}/v1/keys/current");

    let mine = client
        .get(&url)
        .bearer_auth(&admin)
        .header("x-request-id", "req-7f3a-test")
        .send()
        .await
        .unwrap();
    assert_eq!(mine.status(), 200);
    assert_eq!(mine.headers()["x-request-id"], "req-7f3a-test");
    let given = client.get(&url).bearer_auth(&admin).send().await.unwrap();
    let generated = given.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(generated.len(), 36, "a UUID: {generated}");
    let refused = client.get(&url).send().await.unwrap();
    assert_eq!(refused.status(), 401);
    assert!(refused.headers().contains_key("x-request-id"));

    // The third request of the minute is the last one allowed for this key.
    assert_eq!(
        client
            .get(&url)
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let over = client.get(&url).bearer_auth(&admin).send().await.unwrap();
    let retry: u64 = over.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=20).contains(&retry), "Retry-After {retry}");
    let a = Answer::of(over).await;
    assert!(a.error(429, "rate_limited", None).contains("3/m"));
    // Another key has its own bucket.
    assert_eq!(
        client
            .get(&url)
            .basic_auth(&other, Some(""))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    let status = common::sigterm_and_wait(&mut child);
    assert!(status.success(), "{status:?}");
    let mut log = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut log).unwrap();
    let lines: Vec<Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|l: &Value| l["fields"]["message"] == "answered")
        .collect();
    let answered = |id: &str| {
        lines
            .iter()
            .find(|l| l["span"]["request_id"] == id)
            .unwrap_or_else(|| panic!("no answered line for {id} in:\n{log}"))
    };
    let first = answered("req-7f3a-test");
    assert_eq!(first["fields"]["status"], 200);
    assert_eq!(first["span"]["key"], "ops");
    assert_eq!(first["span"]["path"], "/v1/keys/current");
    assert_eq!(answered(&generated)["fields"]["status"], 200);
    assert!(
        lines
            .iter()
            .any(|l| l["fields"]["status"] == 429 && l["span"]["key"] == "ops")
    );
    assert!(!log.contains(&admin[16..]), "a key in the log");
}
both_backends!(request_ids, request_ids_and_rate_limits_in_herald_serve);
