//! The tracking service over real HTTP on both backends: messages come from a
//! real `herald run` into the outbox, requests go to the real server on a
//! port-0 listener, and a real headless Chromium opens a message and follows
//! its link.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::http::{self, LandingPage, Response};
use common::{HELLO_CAMPAIGN as CAMPAIGN, TestDb, stderr, stdout};
use herald::clock::{Clock, ManualClock, SystemClock};
use herald::config::Settings;
use herald::customer::CustomerStatus;
use herald::http::HttpError;
use herald::store::{Backend, Store};
use herald::token::{Purpose, Signer, Token};
use herald::tracking::{Senders, Totals};
use serde_json::Value;
use sqlx::Connection;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

const SECRET: &str = "tracking-test-secret-0123456789";
const HOOK: &str = "hook-secret-abcdef0123456789";
const HUMAN: &str =
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko)";
const HOUR: i64 = 3_600_000;

const TEMPLATE: &str = r#"<html><body><p>Hi {{default customer.first_name "there"}}</p>
<a href="https://acme.example/shop?a=1&amp;b=2">Shop</a> <a href="https://acme.example/sale">Sale</a>
<a href="{{unsubscribe_url}}">Unsubscribe</a></body></html>"#;

const CUSTOMERS: &str =
    "email,first_name,country\nann@x.example,Ann,DE\nbob@x.example,Bob,DE\ncat@x.example,Cat,DE\n";

/// The tracking service of one test, on its own port.
struct Server {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<Result<Totals, HttpError>>,
}

impl Server {
    /// The service, knowing the sender of campaign `t` (what `send_campaign` sends).
    async fn start(store: Store, clock: Arc<dyn Clock>, webhook: Option<&str>) -> Server {
        let t = herald::campaign::parse("t.yaml", CAMPAIGN).unwrap();
        Server::start_with(store, clock, webhook, Senders::new(&[t])).await
    }

    async fn start_with(
        store: Store,
        clock: Arc<dyn Clock>,
        webhook: Option<&str>,
        senders: Senders,
    ) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut settings = Settings::for_database("sqlite://not-opened.db");
        settings.secrets = vec![SECRET.to_string()];
        settings.webhook_secret = webhook.map(str::to_string);
        settings.public_url = format!("http://{addr}");
        let (stop, stopped) = oneshot::channel::<()>();
        let done = tokio::spawn(async move {
            let shutdown = async {
                let _ = stopped.await;
            };
            herald::http::serve_with_clock(
                store,
                &settings,
                listener,
                shutdown,
                clock,
                herald::metrics::Metrics::new(),
                senders,
            )
            .await
        });
        Server {
            addr,
            stop: Some(stop),
            done,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    async fn get(&self, path: &str, user_agent: Option<&str>) -> Response {
        let headers: Vec<(&str, &str)> = user_agent
            .map(|ua| ("User-Agent", ua))
            .into_iter()
            .collect();
        http::get(self.addr, path, &headers).await
    }

    /// Stops it (graceful shutdown) and returns what it did.
    async fn stop(mut self) -> Result<Totals, HttpError> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        self.done.await.unwrap()
    }
}

/// One message from the outbox: the paths of its tracking links.
#[derive(Debug, Clone)]
struct Message {
    customer_id: i64,
    delivery_id: i64,
    message_id: String,
    pixel: String,
    clicks: Vec<String>,
    unsubscribe: String,
    html: String,
}

fn write_campaign(db: &TestDb, template: &str) {
    std::fs::create_dir_all(db.path("campaigns")).unwrap();
    std::fs::create_dir_all(db.path("templates")).unwrap();
    std::fs::write(db.path("campaigns/t.yaml"), CAMPAIGN).unwrap();
    std::fs::write(db.path("templates/hello.html.hbs"), template).unwrap();
}

/// Imports customers, runs campaign `t` into the outbox with links to
/// `public_url`, and reads the messages back, in customer id order.
fn send_campaign(db: &TestDb, template: &str, customers: &str, public_url: &str) -> Vec<Message> {
    write_campaign(db, template);
    std::fs::write(db.path("c.csv"), customers).unwrap();
    let out = db.herald(&["import", "customers", "c.csv"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = db.herald_env(
        &[("HERALD_SECRET", SECRET), ("HERALD_PUBLIC_URL", public_url)],
        &["run", "t"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("sent"), "{}", stdout(&out));
    let signer = Signer::new(&[SECRET.to_string()]).unwrap();
    let mut messages: Vec<Message> = std::fs::read_dir(db.path("outbox"))
        .unwrap()
        .map(|e| read_message(&e.unwrap().path(), public_url, &signer))
        .collect();
    messages.sort_by_key(|m| m.customer_id);
    messages
}

/// Every value of `attr="PREFIX…"` in `text`, without the prefix.
fn attr_values(text: &str, attr: &str, prefix: &str) -> Vec<String> {
    let needle = format!("{attr}=\"{prefix}");
    text.match_indices(&needle)
        .map(|(at, _)| {
            let rest = &text[at + needle.len()..];
            rest[..rest.find('"').unwrap()].to_string()
        })
        .collect()
}

fn read_message(path: &Path, public_url: &str, signer: &Signer) -> Message {
    let eml = std::fs::read_to_string(path).unwrap();
    let html = html_part(&eml);
    let paths = |kind: &str| -> Vec<String> {
        let prefix = format!("{public_url}/{kind}/");
        let mut v = attr_values(&html, "href", &prefix);
        v.extend(attr_values(&html, "src", &prefix));
        v.into_iter().map(|t| format!("/{kind}/{t}")).collect()
    };
    let pixel = paths("o").pop().expect("a pixel");
    let unsubscribe = paths("u").pop().expect("an unsubscribe link");
    let open = signer
        .verify(
            pixel.trim_start_matches("/o/").trim_end_matches(".gif"),
            Purpose::Open,
        )
        .expect("the pixel's token verifies");
    let message_id = eml
        .lines()
        .find_map(|l| l.strip_prefix("Message-ID: "))
        .expect("a Message-ID")
        .trim()
        .to_string();
    Message {
        customer_id: open.customer_id as i64,
        delivery_id: open.delivery_id as i64,
        message_id,
        pixel,
        clicks: paths("c"),
        unsubscribe,
        html,
    }
}

/// The text/html part of an 8bit multipart message.
fn html_part(eml: &str) -> String {
    let at = eml.find("Content-Type: text/html").expect("an HTML part");
    let rest = &eml[at..];
    let body = &rest[rest.find("\r\n\r\n").expect("part body") + 4..];
    let end = body.find("\r\n--").unwrap_or(body.len());
    body[..end].to_string()
}

/// Waits (polling, bounded) until `count` reaches `want`.
async fn wait_count(store: &Store, kind: &str, want: i64) {
    let started = Instant::now();
    loop {
        let n = store.count_interactions(kind).await.unwrap();
        if n == want {
            return;
        }
        assert!(n < want, "{kind}: {n} recorded, expected {want}");
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{kind}: {n} recorded after 20 s, expected {want}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Why an address is on the suppression list, if it is.
async fn suppression(store: &Store, email: &str) -> Option<String> {
    store.suppression_of(email).await.unwrap()
}

async fn sent_at(store: &Store, delivery_id: i64) -> i64 {
    store.tracked_deliveries(&[delivery_id]).await.unwrap()[0]
        .sent_at
        .expect("sent")
}

/// A token with one character changed in the middle.
fn tampered(path: &str) -> String {
    let (head, token) = path.rsplit_once('/').unwrap();
    let mut chars: Vec<char> = token.chars().collect();
    let mid = chars.len() / 2;
    chars[mid] = if chars[mid] == 'A' { 'B' } else { 'A' };
    format!("{head}/{}", chars.into_iter().collect::<String>())
}

// ---------------------------------------------------------------------------

async fn opens_and_clicks(db: TestDb) {
    let store = db.store().await;
    let clock = ManualClock::at(0);
    let server = Server::start(store.clone(), Arc::new(clock.clone()), None).await;
    let m = send_campaign(&db, TEMPLATE, CUSTOMERS, &server.url());
    assert_eq!(m.len(), 3);
    let ann = &m[0];
    clock.set(sent_at(&store, ann.delivery_id).await + HOUR);

    let r = server.get(&ann.pixel, Some(HUMAN)).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("image/gif"));
    assert_eq!(
        r.header("cache-control"),
        Some("no-store, no-cache, must-revalidate, private")
    );
    assert!(r.body.starts_with(b"GIF89a") && r.body.len() == 42);
    // HEAD answers alike and records nothing.
    let head = http::request(
        server.addr,
        "HEAD",
        &ann.pixel,
        &[("User-Agent", HUMAN)],
        b"",
    )
    .await;
    assert_eq!(head.status, 200);

    assert_eq!(ann.clicks.len(), 2, "{:?}", ann.clicks);
    let r = server.get(&ann.clicks[0], Some(HUMAN)).await;
    assert_eq!(r.status, 302);
    assert_eq!(
        r.header("location"),
        Some("https://acme.example/shop?a=1&b=2")
    );
    let r = server.get(&ann.clicks[1], Some(HUMAN)).await;
    assert_eq!(r.header("location"), Some("https://acme.example/sale"));

    wait_count(&store, "email_clicked", 2).await;
    wait_count(&store, "email_opened", 1).await;
    let opened = store
        .interactions_of(ann.customer_id, "email_opened")
        .await
        .unwrap();
    assert_eq!(opened.len(), 1);
    assert_eq!(opened[0].0, sent_at(&store, ann.delivery_id).await + HOUR);
    assert_eq!(opened[0].1["machine"], Value::Bool(false));
    let mut clicked = store
        .interactions_of(ann.customer_id, "email_clicked")
        .await
        .unwrap();
    clicked.sort_by_key(|(_, d)| d["link"].as_u64());
    assert_eq!(clicked[0].1["url"], "https://acme.example/shop?a=1&b=2");
    assert_eq!(clicked[0].1["link"], 0);
    assert_eq!(clicked[1].1["url"], "https://acme.example/sale");
    assert_eq!(clicked[1].1["link"], 1);
    // The same service answers /metrics, with tracking events by kind.
    let metrics = http::get(server.addr, "/metrics", &[]).await.text();
    assert!(
        metrics.contains("herald_tracking_events_total{kind=\"email_opened\"} 1")
            && metrics.contains("herald_tracking_events_total{kind=\"email_clicked\"} 2"),
        "{metrics}"
    );
    let totals = server.stop().await.unwrap();
    assert_eq!((totals.accepted, totals.written), (3, 3));
    store.close().await;
}
both_backends!(opens_clicks, opens_and_clicks);

/// Links from data: Handlebars writes `=` as `&#x3D;` and `&` as `&amp;` in
/// the href, and the tracked redirect still goes where the untracked link
/// would have gone; a `javascript:` URL from data is no link at all.
async fn links_from_data(db: TestDb) {
    let store = db.store().await;
    let server = Server::start(store.clone(), Arc::new(SystemClock), None).await;
    let template = r#"<html><body><a href="{{customer.link}}">Yours</a>
<a href="{{customer.evil}}">Evil</a> <a href="{{unsubscribe_url}}">Unsubscribe</a></body></html>"#;
    let customers = "email,first_name,country,link,evil\n\
        ann@x.example,Ann,DE,https://acme.example/p?id=5&src=mail,javascript:alert(document.cookie)\n";
    let m = send_campaign(&db, template, customers, &server.url());
    let ann = &m[0];
    assert_eq!(ann.clicks.len(), 1, "{}", ann.html);
    assert!(
        ann.html.contains(r##"<a href="#">Evil</a>"##),
        "{}",
        ann.html
    );
    assert!(!ann.html.contains("javascript"), "{}", ann.html);
    let r = server.get(&ann.clicks[0], Some(HUMAN)).await;
    assert_eq!(r.status, 302);
    assert_eq!(
        r.header("location"),
        Some("https://acme.example/p?id=5&src=mail")
    );
    server.stop().await.unwrap();
    store.close().await;
}
both_backends!(data_links, links_from_data);

async fn machine_opens_are_flagged(db: TestDb) {
    let store = db.store().await;
    let clock = ManualClock::at(0);
    let server = Server::start(store.clone(), Arc::new(clock.clone()), None).await;
    let m = send_campaign(&db, TEMPLATE, CUSTOMERS, &server.url());
    let sent = sent_at(&store, m[0].delivery_id).await;
    let cases: [(Option<&str>, i64, Option<&str>); 6] = [
        (Some("Mozilla/5.0"), HOUR, Some("apple_mpp")),
        (
            Some(
                "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)",
            ),
            HOUR,
            None,
        ),
        (Some(HUMAN), 1_000, Some("soon_after_send")),
        (Some(HUMAN), 2 * HOUR, None),
        (None, HOUR, Some("no_user_agent")),
        (
            Some("Mozilla/5.0 (compatible; Barracuda Sentinel)"),
            HOUR,
            Some("scanner"),
        ),
    ];
    // Distinct times (+ i ms) tell the rows apart.
    for (i, (ua, after, _)) in cases.iter().enumerate() {
        clock.set(sent + after + i as i64);
        let r = server.get(&m[0].pixel, *ua).await;
        assert_eq!(r.status, 200);
        // One at a time, so the rows come in this order.
        wait_count(&store, "email_opened", i as i64 + 1).await;
    }
    let opens = store
        .interactions_of(m[0].customer_id, "email_opened")
        .await
        .unwrap();
    assert_eq!(opens.len(), cases.len());
    for (i, (ua, after, reason)) in cases.iter().enumerate() {
        let (_, data) = opens
            .iter()
            .find(|(at, _)| *at == sent + after + i as i64)
            .unwrap_or_else(|| panic!("no open for case {i}"));
        assert_eq!(data["machine"], Value::Bool(reason.is_some()), "{ua:?}");
        assert_eq!(
            data.get("machine_reason").and_then(Value::as_str),
            *reason,
            "{ua:?}"
        );
    }
    server.stop().await.unwrap();
    store.close().await;
}
both_backends!(machine_opens, machine_opens_are_flagged);

async fn bad_tokens_get_404_and_write_nothing(db: TestDb) {
    let store = db.store().await;
    let server = Server::start(store.clone(), Arc::new(SystemClock), None).await;
    let m = send_campaign(&db, TEMPLATE, CUSTOMERS, &server.url());
    let ann = &m[0];
    let stranger = Signer::new(&["someone-elses-key-0123456789".to_string()]).unwrap();
    let forged = |purpose, link: Option<(u32, String)>| {
        stranger.sign(&Token {
            purpose,
            delivery_id: ann.delivery_id as u64,
            customer_id: ann.customer_id as u64,
            link,
        })
    };
    let open_token = ann.pixel.trim_start_matches("/o/").trim_end_matches(".gif");
    let click_token = ann.clicks[0].trim_start_matches("/c/");
    let unsub_token = ann.unsubscribe.trim_start_matches("/u/");
    let pixels = [
        format!("/o/{}.gif", forged(Purpose::Open, None)),
        format!("{}.gif", tampered(&format!("/o/{open_token}"))),
        format!("/o/{}.gif", &open_token[..open_token.len() - 3]),
        format!("/o/{unsub_token}.gif"),
        format!("/o/{open_token}"),
        "/o/.gif".to_string(),
    ];
    for p in &pixels {
        let r = server.get(p, Some(HUMAN)).await;
        assert_eq!(r.status, 404, "{p}");
        assert_eq!(
            r.header("content-type"),
            Some("image/gif"),
            "still an image: {p}"
        );
    }
    let clicks = [
        format!(
            "/c/{}",
            forged(Purpose::Click, Some((0, "https://evil.example/".into())))
        ),
        tampered(&ann.clicks[0]),
        format!("/c/{}", &click_token[..click_token.len() - 1]),
        format!("/c/{open_token}"),
        format!("/c/{unsub_token}"),
    ];
    for p in &clicks {
        let r = server.get(p, Some(HUMAN)).await;
        assert_eq!(r.status, 404, "{p}");
        assert_eq!(r.header("location"), None);
    }
    let unsubs = [
        format!("/u/{}", forged(Purpose::Unsubscribe, None)),
        tampered(&ann.unsubscribe),
        format!("/u/{}", &unsub_token[..unsub_token.len() - 2]),
        format!("/u/{open_token}"),
        format!("/u/{click_token}"),
    ];
    for p in &unsubs {
        assert_eq!(server.get(p, Some(HUMAN)).await.status, 404, "{p}");
        let r = http::request(
            server.addr,
            "POST",
            p,
            &[("Content-Type", "application/x-www-form-urlencoded")],
            b"List-Unsubscribe=One-Click",
        )
        .await;
        assert_eq!(r.status, 404, "{p}");
    }
    let totals = server.stop().await.unwrap();
    assert_eq!(totals.accepted, 0);
    let counts = store.table_counts().await.unwrap();
    assert_eq!(counts.suppressions, 0);
    for kind in ["email_opened", "email_clicked", "unsubscribed"] {
        assert_eq!(store.count_interactions(kind).await.unwrap(), 0, "{kind}");
    }
    let ann_now = store
        .customer_by_email("ann@x.example")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ann_now.status, CustomerStatus::Subscribed);
    store.close().await;
}
both_backends!(bad_tokens, bad_tokens_get_404_and_write_nothing);

async fn unsubscribe_confirms_on_get_and_acts_once_on_post(db: TestDb) {
    let store = db.store().await;
    let server = Server::start(store.clone(), Arc::new(SystemClock), None).await;
    let m = send_campaign(&db, TEMPLATE, CUSTOMERS, &server.url());
    let (ann, bob, cat) = (&m[0], &m[1], &m[2]);

    // A preview's link (delivery 0) changes nothing either.
    let preview = Signer::new(&[SECRET.to_string()]).unwrap().sign(&Token {
        purpose: Purpose::Unsubscribe,
        delivery_id: 0,
        customer_id: ann.customer_id as u64,
        link: None,
    });
    let r = http::request(
        server.addr,
        "POST",
        &format!("/u/{preview}"),
        &[("Content-Type", "application/x-www-form-urlencoded")],
        b"List-Unsubscribe=One-Click",
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(r.text().contains("preview"), "{}", r.text());

    // A link scanner's GET changes nothing. The page says whose emails stop
    // and for which address.
    let page = server.get(&ann.unsubscribe, Some(HUMAN)).await;
    assert_eq!(page.status, 200);
    let text = page.text();
    assert!(text.contains("<form method=\"post\">"), "{text}");
    assert!(
        text.contains("<title>Unsubscribe from Acme Shop</title>")
            && text.contains(
                "Stop all marketing emails from <strong>Acme Shop</strong> to <strong>ann@x.example</strong>?"
            ),
        "{text}"
    );
    let status = |email: &'static str| {
        let store = store.clone();
        async move {
            store
                .customer_by_email(email)
                .await
                .unwrap()
                .unwrap()
                .status
        }
    };
    assert_eq!(status("ann@x.example").await, CustomerStatus::Subscribed);

    // RFC 8058 section 3.2, as a mail provider sends it.
    let one_click = || {
        http::request(
            server.addr,
            "POST",
            &ann.unsubscribe,
            &[("Content-Type", "application/x-www-form-urlencoded")],
            b"List-Unsubscribe=One-Click",
        )
    };
    let r = one_click().await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("location"), None, "no redirect");
    assert!(r.text().contains("You are unsubscribed"));
    // Durable before the answer: no waiting here.
    assert_eq!(status("ann@x.example").await, CustomerStatus::Unsubscribed);
    assert_eq!(
        suppression(&store, "ann@x.example").await.as_deref(),
        Some("unsubscribed")
    );
    let recorded = store
        .interactions_of(ann.customer_id, "unsubscribed")
        .await
        .unwrap();
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].1["method"], "one_click");

    // Again, and from the page: nothing changes.
    assert_eq!(one_click().await.status, 200);
    let r = confirm(server.addr, &ann.unsubscribe).await;
    assert_eq!(r.status, 200);
    assert_eq!(store.count_interactions("unsubscribed").await.unwrap(), 1);

    // The page's button.
    let r = confirm(server.addr, &bob.unsubscribe).await;
    assert_eq!(r.status, 200);
    assert!(
        r.text().contains(
            "<strong>bob@x.example</strong> will not receive marketing emails from <strong>Acme Shop</strong> any more."
        ),
        "{}",
        r.text()
    );
    assert_eq!(status("bob@x.example").await, CustomerStatus::Unsubscribed);
    let bob_unsub = store
        .interactions_of(bob.customer_id, "unsubscribed")
        .await
        .unwrap();
    assert_eq!(bob_unsub[0].1["method"], "page");

    // One-click as multipart form data (RFC 8058 allows it).
    let body = "--xyz\r\nContent-Disposition: form-data; name=\"List-Unsubscribe\"\r\n\r\nOne-Click\r\n--xyz--\r\n";
    let r = http::request(
        server.addr,
        "POST",
        &cat.unsubscribe,
        &[("Content-Type", "multipart/form-data; boundary=xyz")],
        body.as_bytes(),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(status("cat@x.example").await, CustomerStatus::Unsubscribed);
    assert_eq!(store.count_interactions("unsubscribed").await.unwrap(), 3);
    assert_eq!(store.table_counts().await.unwrap().suppressions, 3);
    server.stop().await.unwrap();
    store.close().await;
}
both_backends!(
    unsubscribe,
    unsubscribe_confirms_on_get_and_acts_once_on_post
);

/// The unsubscribe pages name the sender from the campaign's `From:` and
/// every other name the same list sends as (an unsubscribe stops them all),
/// escaped; a campaign the service has no file for is named by its name.
async fn unsubscribe_pages_name_the_sender(db: TestDb) {
    let store = db.store().await;
    let sender = r#"name: t
from: '"Tom & Jerry''s <Shop>" <hello@acme.example>'
audience:
  attribute: country
  exists: true
steps:
  - id: hello
    subject: Hi
    template: hello
"#;
    let journal = CAMPAIGN
        .replace("name: t", "name: journal")
        .replace("Acme Shop <hello@", "Acme Journal <journal@");
    let senders = Senders::new(&[
        herald::campaign::parse("t.yaml", sender).unwrap(),
        herald::campaign::parse("journal.yaml", &journal).unwrap(),
    ]);
    let server = Server::start_with(store.clone(), Arc::new(SystemClock), None, senders).await;
    let m = send_campaign(&db, TEMPLATE, CUSTOMERS, &server.url());
    let (ann, bob) = (&m[0], &m[1]);

    let page = server.get(&ann.unsubscribe, Some(HUMAN)).await;
    assert_eq!(page.status, 200);
    let text = page.text();
    assert!(
        text.contains("<title>Unsubscribe from Tom &amp; Jerry&#x27;s &lt;Shop&gt;</title>"),
        "{text}"
    );
    assert!(
        text.contains(
            "Stop all marketing emails from <strong>Tom &amp; Jerry&#x27;s &lt;Shop&gt;</strong> to <strong>ann@x.example</strong>?"
        ),
        "{text}"
    );
    assert!(
        text.contains("This also stops the emails sent as <strong>Acme Journal</strong>."),
        "{text}"
    );
    assert!(!text.contains("<Shop>"), "{text}");

    let r = confirm(server.addr, &bob.unsubscribe).await;
    assert_eq!(r.status, 200);
    let text = r.text();
    assert!(
        text.contains(
            "<strong>bob@x.example</strong> will not receive marketing emails from <strong>Tom &amp; Jerry&#x27;s &lt;Shop&gt;</strong> any more."
        ) && text.contains("Nor the emails sent as <strong>Acme Journal</strong>."),
        "{text}"
    );
    server.stop().await.unwrap();

    // A service without the campaign files names the campaign.
    let bare = Server::start_with(
        store.clone(),
        Arc::new(SystemClock),
        None,
        Senders::default(),
    )
    .await;
    let text = bare.get(&ann.unsubscribe, Some(HUMAN)).await.text();
    assert!(
        text.contains(
            "Stop all marketing emails from <strong>t</strong> to <strong>ann@x.example</strong>?"
        ) && !text.contains("This also stops"),
        "{text}"
    );
    bare.stop().await.unwrap();
    store.close().await;
}
both_backends!(unsubscribe_pages, unsubscribe_pages_name_the_sender);

async fn webhook_reports(db: TestDb) {
    let store = db.store().await;
    let server = Server::start(store.clone(), Arc::new(SystemClock), Some(HOOK)).await;
    let m = send_campaign(&db, TEMPLATE, CUSTOMERS, &server.url());
    let (ann, bob, cat) = (&m[0], &m[1], &m[2]);
    let auth = format!("Bearer {HOOK}");
    let post = |auth: Option<String>, body: String| {
        let addr = server.addr;
        async move {
            let mut headers = vec![("Content-Type", "application/json")];
            let auth = auth.unwrap_or_default();
            if !auth.is_empty() {
                headers.push(("Authorization", auth.as_str()));
            }
            http::request(addr, "POST", "/webhook", &headers, body.as_bytes()).await
        }
    };
    let hard = r#"{"email": "ann@X.EXAMPLE", "type": "hard", "detail": "550 5.1.1 no such user"}"#;
    for bad in [
        None,
        Some(format!("Bearer {HOOK}x")),
        Some(format!("Basic {HOOK}")),
    ] {
        let r = post(bad.clone(), hard.to_string()).await;
        assert_eq!(r.status, 401, "{bad:?}");
        assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    }
    assert_eq!(store.count_interactions("email_bounced").await.unwrap(), 0);

    let r = post(Some(auth.clone()), hard.to_string()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let answer: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(answer["recorded"], 1);
    let a = store
        .customer_by_email("ann@x.example")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(a.status, CustomerStatus::Bounced);
    assert_eq!(
        suppression(&store, "ann@x.example").await.as_deref(),
        Some("hard_bounce")
    );
    let bounce = store
        .interactions_of(ann.customer_id, "email_bounced")
        .await
        .unwrap();
    assert_eq!(bounce[0].1["type"], "hard");
    assert_eq!(bounce[0].1["detail"], "550 5.1.1 no such user");

    // A soft bounce by Message-ID: recorded against the delivery, nothing else.
    let soft = serde_json::json!({"message_id": bob.message_id, "type": "soft", "detail": "452 mailbox full"});
    let r = post(Some(auth.clone()), soft.to_string()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let b = store
        .customer_by_email("bob@x.example")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(b.status, CustomerStatus::Subscribed);
    assert_eq!(suppression(&store, "bob@x.example").await, None);
    let soft_rows = store
        .interactions_of(bob.customer_id, "email_bounced")
        .await
        .unwrap();
    assert_eq!(soft_rows.len(), 1);
    assert_eq!(soft_rows[0].1["hard"], false);

    // A batch: a complaint with an event id, and an address we do not know.
    let batch = r#"[{"email": "cat@x.example", "type": "complaint", "id": "evt-1"},
                    {"email": "nobody@x.example", "type": "hard"}]"#;
    let r = post(Some(auth.clone()), batch.to_string()).await;
    let answer: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(
        (answer["recorded"].as_u64(), answer["unknown"].as_u64()),
        (Some(1), Some(1)),
        "{answer}"
    );
    let again = post(Some(auth.clone()), batch.to_string()).await;
    let answer: Value = serde_json::from_slice(&again.body).unwrap();
    assert_eq!(
        answer["duplicates"], 1,
        "a retried report changes nothing: {answer}"
    );
    let c = store
        .customer_by_email("cat@x.example")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(c.status, CustomerStatus::Complained);
    assert_eq!(
        store
            .interactions_of(cat.customer_id, "email_complained")
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        suppression(&store, "cat@x.example").await.as_deref(),
        Some("complaint")
    );
    assert_eq!(
        suppression(&store, "nobody@x.example").await.as_deref(),
        Some("hard_bounce")
    );

    for bad in [
        r#"{"type": "hard"}"#,
        r#"{"email": "a@b.example", "type": "bounce"}"#,
        "not json",
    ] {
        let r = post(Some(auth.clone()), bad.to_string()).await;
        assert_eq!(r.status, 400, "{bad}");
        assert!(r.text().contains("error"), "{}", r.text());
    }
    server.stop().await.unwrap();

    // Without a configured secret there is no webhook.
    let closed = Server::start(store.clone(), Arc::new(SystemClock), None).await;
    let r = http::request(
        closed.addr,
        "POST",
        "/webhook",
        &[("Authorization", auth.as_str())],
        hard.as_bytes(),
    )
    .await;
    assert_eq!(r.status, 404);
    closed.stop().await.unwrap();
    store.close().await;
}
both_backends!(webhook, webhook_reports);

async fn health_readiness_and_a_database_outage(db: TestDb) {
    let store = db.store().await;
    let server = Server::start(store.clone(), Arc::new(SystemClock), None).await;
    let m = send_campaign(&db, TEMPLATE, CUSTOMERS, &server.url());
    let r = server.get("/healthz", None).await;
    assert_eq!((r.status, r.text().as_str()), (200, "ok\n"));
    assert_eq!(server.get("/readyz", None).await.status, 200);
    assert_eq!(server.get("/nothing/here", None).await.status, 404);

    // The database goes away: not ready, yet a genuine pixel still gets its GIF.
    store.close().await;
    let r = server.get("/readyz", None).await;
    assert_eq!(r.status, 503, "{}", r.text());
    let r = server.get(&m[0].pixel, Some(HUMAN)).await;
    assert_eq!(r.status, 200);
    assert!(r.body.starts_with(b"GIF89a"));
    let r = http::request(
        server.addr,
        "POST",
        &m[0].unsubscribe,
        &[],
        b"List-Unsubscribe=One-Click",
    )
    .await;
    assert_eq!(
        r.status, 503,
        "an unsubscribe that was not stored is not confirmed"
    );
    match server.stop().await {
        Err(HttpError::Unflushed { lost, .. }) => assert_eq!(lost, 1),
        other => panic!("expected the lost open to be reported, got {other:?}"),
    }
}
both_backends!(health, health_readiness_and_a_database_outage);

/// Holds the database's write lock (SQLite) or the interactions table (PostgreSQL).
enum WriteLock {
    Sqlite(sqlx::SqliteConnection),
    Postgres(sqlx::PgConnection),
}

async fn lock_writes(db: &TestDb) -> WriteLock {
    match db.backend {
        Backend::Sqlite => {
            let mut c = sqlx::SqliteConnection::connect(&db.url).await.unwrap();
            sqlx::query("BEGIN IMMEDIATE")
                .execute(&mut c)
                .await
                .unwrap();
            WriteLock::Sqlite(c)
        }
        Backend::Postgres => {
            let mut c = sqlx::PgConnection::connect(&db.url).await.unwrap();
            sqlx::query("BEGIN").execute(&mut c).await.unwrap();
            sqlx::query("LOCK TABLE interactions IN EXCLUSIVE MODE")
                .execute(&mut c)
                .await
                .unwrap();
            WriteLock::Postgres(c)
        }
    }
}

async fn unlock_writes(lock: WriteLock) {
    match lock {
        WriteLock::Sqlite(mut c) => {
            sqlx::query("ROLLBACK").execute(&mut c).await.unwrap();
        }
        WriteLock::Postgres(mut c) => {
            sqlx::query("ROLLBACK").execute(&mut c).await.unwrap();
        }
    }
}

async fn shutdown_writes_every_accepted_open(db: TestDb) {
    let store = db.store().await;
    let server = Server::start(store.clone(), Arc::new(SystemClock), None).await;
    let customers: String = std::iter::once("email,country\n".to_string())
        .chain((0..40).map(|i| format!("c{i}@x.example,DE\n")))
        .collect();
    let m = send_campaign(&db, TEMPLATE, &customers, &server.url());
    assert_eq!(m.len(), 40);

    // Writes are blocked: every pixel is still answered at once, and the
    // opens wait in the queue.
    let lock = lock_writes(&db).await;
    let mut requests = tokio::task::JoinSet::new();
    for round in 0..5 {
        for msg in &m {
            let (addr, path) = (server.addr, msg.pixel.clone());
            requests.spawn(async move {
                let ua = format!("{HUMAN} round {round}");
                http::get(addr, &path, &[("User-Agent", &ua)]).await.status
            });
        }
    }
    while let Some(status) = requests.join_next().await {
        assert_eq!(status.unwrap(), 200);
    }
    assert_eq!(store.count_interactions("email_opened").await.unwrap(), 0);

    // SIGTERM's path: stop, and release the database a moment later.
    let addr = server.addr;
    let stopping = tokio::spawn(server.stop());
    let started = Instant::now();
    while tokio::net::TcpStream::connect(addr).await.is_ok() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "still listening"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    unlock_writes(lock).await;
    let totals = stopping.await.unwrap().unwrap();
    assert_eq!(totals.accepted, 200);
    assert_eq!(totals.written, 200);
    assert!(
        totals.transactions < 200,
        "opens are written in batches: {totals:?}"
    );
    assert_eq!(store.count_interactions("email_opened").await.unwrap(), 200);
    store.close().await;
}
both_backends!(shutdown_flush, shutdown_writes_every_accepted_open);

/// `herald serve`, the binary: listens where told, SIGTERM writes what it accepted.
async fn herald_serve_stops_cleanly_on_sigterm(db: TestDb) {
    let m = send_campaign(&db, TEMPLATE, CUSTOMERS, "http://t.example");
    let mut child = db
        .command(
            &[
                ("HERALD_SECRET", SECRET),
                ("HERALD_HTTP_ADDR", "127.0.0.1:0"),
            ],
            &["serve"],
        )
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (addr, mut out) = common::announced_addr(&mut child);
    for msg in &m {
        for _ in 0..10 {
            assert_eq!(
                http::get(addr, &msg.pixel, &[("User-Agent", HUMAN)])
                    .await
                    .status,
                200
            );
        }
    }
    assert_eq!(http::get(addr, "/readyz", &[]).await.status, 200);
    let status = common::sigterm_and_wait(&mut child);
    assert!(status.success(), "{status:?}");
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    assert!(rest.contains("30 events accepted, 30 written"), "{rest}");
    let store = db.store().await;
    assert_eq!(store.count_interactions("email_opened").await.unwrap(), 30);
    store.close().await;
}
both_backends!(herald_serve, herald_serve_stops_cleanly_on_sigterm);

// ---------------------------------------------------------------------------
// A real browser.

/// Loads `url` in headless Chromium and returns the DOM after the load event
/// (images included, so the pixel has been fetched).
async fn chromium_dump_dom(binary: &Path, profile: &Path, url: &str) -> String {
    let mut cmd = std::process::Command::new(binary);
    cmd.args(common::browser::HEADLESS).args([
        "--metrics-recording-only",
        &format!("--user-data-dir={}", profile.display()),
        "--timeout=30000",
        "--dump-dom",
        url,
    ]);
    // Blocking wait on a thread of its own: the servers it talks to run on this runtime.
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap()
        .expect("run chromium");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

async fn chromium_opens_and_clicks(db: TestDb) {
    let Some(binary) = common::browser::chromium() else {
        return;
    };
    let binary = binary.as_path();
    let store = db.store().await;
    let landing = LandingPage::start().await;
    let server = Server::start(store.clone(), Arc::new(SystemClock), None).await;
    let template = format!(
        "<!doctype html><html><body><p>Hi {{{{default customer.first_name \"there\"}}}}</p>\n\
         <a id=\"shop\" href=\"http://{}/landing?from=email\">Shop now</a>\n\
         <a href=\"{{{{unsubscribe_url}}}}\">Unsubscribe</a></body></html>",
        landing.addr
    );
    let m = send_campaign(
        &db,
        &template,
        "email,country\nann@x.example,DE\n",
        &server.url(),
    );
    let ann = &m[0];
    assert!(
        ann.html.contains(&format!("{}/o/", server.url())),
        "{}",
        ann.html
    );
    let page = db.path("message.html");
    std::fs::write(&page, &ann.html).unwrap();
    let profile = tempfile::tempdir().unwrap();

    // Open the message: the browser fetches the pixel.
    let dom = chromium_dump_dom(
        binary,
        profile.path(),
        &format!("file://{}", page.display()),
    )
    .await;
    assert!(dom.contains("Shop now"), "{dom}");
    wait_count(&store, "email_opened", 1).await;
    let opened = store
        .interactions_of(ann.customer_id, "email_opened")
        .await
        .unwrap();
    assert_eq!(
        opened[0].1["machine"], true,
        "a headless browser is a machine: {:?}",
        opened[0].1
    );

    // Follow the link as written in the message: tracked, redirected, landed.
    assert_eq!(ann.clicks.len(), 1);
    let href = format!("{}{}", server.url(), ann.clicks[0]);
    let dom = chromium_dump_dom(binary, profile.path(), &href).await;
    assert!(dom.contains("Welcome to the shop"), "{dom}");
    assert_eq!(landing.hits(), ["/landing?from=email"]);
    wait_count(&store, "email_clicked", 1).await;
    let clicked = store
        .interactions_of(ann.customer_id, "email_clicked")
        .await
        .unwrap();
    assert_eq!(
        clicked[0].1["url"],
        format!("http://{}/landing?from=email", landing.addr)
    );
    server.stop().await.unwrap();
    store.close().await;
}
both_backends!(chromium, chromium_opens_and_clicks);

/// Presses the unsubscribe page's confirm button (the form's POST).
async fn confirm(addr: SocketAddr, page: &str) -> http::Response {
    http::request(
        addr,
        "POST",
        page,
        &[("Content-Type", "application/x-www-form-urlencoded")],
        b"confirm=yes",
    )
    .await
}
