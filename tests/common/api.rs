//! The `/v1` API over real HTTP, for the API's tests: the real service on a
//! port-0 listener, a real HTTP client (reqwest), keys made by the real
//! `herald api-key`, answers read as JSON with their status.

use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;

use herald::clock::SystemClock;
use herald::config::Settings;
use herald::http::{Campaigns, HttpError};
use herald::quantity::Rate;
use herald::store::Store;
use herald::tracking::{Senders, Totals};
use reqwest::StatusCode;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use super::{TestDb, stderr, stdout};

/// The HTTP service of one test, on its own port.
pub struct Server {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<Result<Totals, HttpError>>,
    pub client: reqwest::Client,
}

impl Server {
    pub async fn start(store: Store, api_rate: &str) -> Server {
        Server::start_with(store, api_rate, Senders::default().into()).await
    }

    /// The service knowing `campaigns` (their senders, triggers and
    /// transactional campaigns).
    pub async fn start_with(store: Store, api_rate: &str, campaigns: Campaigns) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut settings = Settings::for_database("sqlite://not-opened.db");
        settings.secrets = vec!["api-test-secret-0123456789".into()];
        settings.api_rate = api_rate.parse::<Rate>().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let done = tokio::spawn(async move {
            herald::http::serve_with_clock(
                store,
                &settings,
                listener,
                async {
                    let _ = stopped.await;
                },
                Arc::new(SystemClock),
                herald::metrics::Metrics::new(),
                campaigns,
            )
            .await
        });
        Server {
            addr,
            stop: Some(stop),
            done,
            client: client(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        self.done.await.unwrap().unwrap();
    }
}

pub fn client() -> reqwest::Client {
    // No automatic decompression of answers, no pooling surprises: plain requests.
    reqwest::Client::builder().no_gzip().build().unwrap()
}

/// How a request authenticates.
#[derive(Clone, Copy)]
pub enum Auth<'a> {
    None,
    Bearer(&'a str),
    /// The key as HTTP Basic user name, empty password (Segment's libraries).
    Basic(&'a str),
}

pub fn authed(request: reqwest::RequestBuilder, auth: Auth<'_>) -> reqwest::RequestBuilder {
    match auth {
        Auth::None => request,
        Auth::Bearer(key) => request.bearer_auth(key),
        Auth::Basic(key) => request.basic_auth(key, Some("")),
    }
}

/// Status, headers and JSON body of an answer.
pub struct Answer {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Answer {
    pub async fn of(response: reqwest::Response) -> Answer {
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        let body = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("not JSON ({e}), status {status}: {text:?}"));
        assert_eq!(
            headers.get("content-type").and_then(|v| v.to_str().ok()),
            Some("application/json"),
            "{status} {text}"
        );
        Answer {
            status,
            headers,
            body,
        }
    }

    /// Asserts an error answer: its status, code, and field (if any).
    pub fn error(&self, status: u16, code: &str, field: Option<&str>) -> &str {
        assert_eq!(self.status.as_u16(), status, "{}", self.body);
        assert_eq!(self.body["error"]["code"], code, "{}", self.body);
        assert_eq!(self.body["error"]["field"].as_str(), field, "{}", self.body);
        self.body["error"]["message"].as_str().unwrap()
    }
}

pub async fn get(s: &Server, path: &str, auth: Auth<'_>) -> Answer {
    Answer::of(
        authed(s.client.get(s.url(path)), auth)
            .send()
            .await
            .unwrap(),
    )
    .await
}

/// `POST path` with a raw body and headers.
pub async fn post(
    s: &Server,
    path: &str,
    auth: Auth<'_>,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Answer {
    let mut request = authed(s.client.post(s.url(path)), auth).body(body);
    for (n, v) in headers {
        request = request.header(*n, *v);
    }
    Answer::of(request.send().await.unwrap()).await
}

/// `METHOD path` with a JSON body, or none.
pub async fn send(
    s: &Server,
    method: reqwest::Method,
    path: &str,
    auth: Auth<'_>,
    body: Option<&Value>,
) -> Answer {
    let mut request = authed(s.client.request(method, s.url(path)), auth);
    if let Some(body) = body {
        request = request.json(body);
    }
    Answer::of(request.send().await.unwrap()).await
}

pub const JSON: (&str, &str) = ("content-type", "application/json");

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// `herald api-key create NAME --scope SCOPE`: the key it printed.
pub fn create_key(db: &TestDb, name: &str, scope: &str) -> String {
    let out = db.herald(&["api-key", "create", name, "--scope", scope]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("cannot be shown again"),
        "{}",
        stderr(&out)
    );
    let key = stdout(&out).trim().to_string();
    assert!(
        key.starts_with("hk_") && key.len() == 3 + 12 + 1 + 64,
        "{key}"
    );
    key
}
