//! `herald serve` as a separate process on a port-0 listener, and calls to its
//! `/v1` API the way Segment's libraries make them.

use std::net::SocketAddr;
use std::process::{Child, Stdio};

use serde_json::Value;

use super::TestDb;

/// A running `herald serve`.
pub struct Serve {
    pub addr: SocketAddr,
    child: Child,
    pub client: reqwest::Client,
    _out: std::io::BufReader<std::process::ChildStdout>,
}

impl Serve {
    pub fn start(db: &TestDb) -> Serve {
        Serve::start_with(db, &[], &[])
    }

    /// `herald serve ARGS` with extra `HERALD_*` variables.
    pub fn start_with(db: &TestDb, env: &[(&str, &str)], args: &[&str]) -> Serve {
        let mut env = env.to_vec();
        env.push(("HERALD_HTTP_ADDR", "127.0.0.1:0"));
        let mut args = args.to_vec();
        args.insert(0, "serve");
        let mut child = db
            .command(&env, &args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let (addr, out) = super::announced_addr(&mut child);
        Serve {
            child,
            addr,
            client: reqwest::Client::builder().no_gzip().build().unwrap(),
            _out: out,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `POST /v1/{route}` with `body`, the key as Segment's libraries send it.
    pub async fn call(&self, key: &str, route: &str, body: &Value) -> (u16, Value) {
        self.raw(key, route, body.to_string().into_bytes(), false)
            .await
    }

    pub async fn raw(&self, key: &str, route: &str, body: Vec<u8>, gzip: bool) -> (u16, Value) {
        let mut request = self
            .client
            .post(self.url(&format!("/v1/{route}")))
            .basic_auth(key, Some(""))
            .header("content-type", "application/json");
        if gzip {
            request = request.header("content-encoding", "gzip");
        }
        let response = request.body(body).send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        let body = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("not JSON ({e}), status {status}: {text:?}"));
        (status, body)
    }

    pub fn stop(mut self) {
        let status = super::sigterm_and_wait(&mut self.child);
        assert!(status.success(), "herald serve ended with {status}");
    }

    /// SIGKILL: the process ends at once, nothing is flushed or answered.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

/// Where racing calls go: two `herald serve` processes on PostgreSQL (several
/// may share one database), one on SQLite (one process writes).
pub struct Servers {
    pub first: Serve,
    pub second: Option<Serve>,
}

impl Servers {
    pub fn start(db: &TestDb) -> Servers {
        let first = Serve::start(db);
        let second = match db.backend {
            herald::store::Backend::Postgres => Some(Serve::start(db)),
            herald::store::Backend::Sqlite => None,
        };
        Servers { first, second }
    }

    /// The server a racing call goes to: the second, where there is one.
    pub fn other(&self) -> &Serve {
        self.second.as_ref().unwrap_or(&self.first)
    }

    pub fn stop(self) {
        self.first.stop();
        if let Some(s) = self.second {
            s.stop();
        }
    }
}
