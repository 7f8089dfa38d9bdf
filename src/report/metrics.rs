//! Prometheus metrics for the worker: counters and histograms kept in atomics
//! (a [`Metrics`] is cheap to clone and to update from every sender task), the
//! queue depth read from the database at scrape time, and the text exposition
//! format 0.0.4 written by hand (no client library needed for this much).
//!
//! Wiring (done where the events happen):
//! - the send pipeline calls [`Metrics::outcome`] once per recorded
//!   [`Outcome`] (sent, retried, failed, bounced by class, skipped),
//!   [`Metrics::observe_send_latency`] with the time of one SMTP transaction
//!   (or outbox write), and [`Metrics::observe_rate_limit_wait`] with the time
//!   spent waiting on a rate limiter before a send;
//! - the tracking service calls [`Metrics::tracking_event`] per recorded event;
//! - the worker's HTTP service mounts [`router`] (`GET /metrics`).

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;

use crate::mailer::Reply;
use crate::store::Store;
use crate::store::deliveries::Outcome;

/// The content type of the text exposition format.
pub const CONTENT_TYPE_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Bounce classes: enhanced status codes by class and subject (`5.1` bad
/// mailbox, `5.7` policy, …; RFC 3463), and the basic reply class when the
/// relay gave no enhanced code.
const BOUNCE_CLASSES: [&str; 18] = [
    "4.0", "4.1", "4.2", "4.3", "4.4", "4.5", "4.6", "4.7", "4xx", "5.0", "5.1", "5.2", "5.3",
    "5.4", "5.5", "5.6", "5.7", "5xx",
];
/// Shown even at zero, so that dashboards and alerts find the series.
const BOUNCE_CLASSES_ALWAYS: [&str; 4] = ["4xx", "5xx", "5.1", "5.7"];

/// Tracking event kinds as Herald records them; anything else is `other`.
const TRACKING_KINDS: [&str; 7] = [
    "email_opened",
    "email_clicked",
    "unsubscribed",
    "email_complained",
    "email_bounced",
    "email_sent",
    "other",
];

/// Upper bounds (seconds) of the send-latency buckets: one SMTP transaction.
const SEND_LATENCY_BOUNDS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];
/// Upper bounds (seconds) of the rate-limiter wait buckets.
const RATE_WAIT_BOUNDS: [f64; 11] = [
    0.0001, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 120.0,
];

/// A histogram in atomics: per-bucket counts (not cumulative; summed when
/// rendered), the total count and the sum in nanoseconds.
struct Histogram {
    bounds: &'static [f64],
    buckets: Vec<AtomicU64>,
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            buckets: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_nanos: AtomicU64::new(0),
        }
    }

    fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = self.bounds.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Relaxed);
        }
        self.count.fetch_add(1, Relaxed);
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        header(out, name, help, "histogram");
        let mut cumulative = 0;
        for (bound, n) in self.bounds.iter().zip(&self.buckets) {
            cumulative += n.load(Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        // Read count after the buckets: a concurrent observation may land
        // between the loads, and +Inf must never be below the last bucket.
        let count = self.count.load(Relaxed).max(cumulative);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let sum = self.sum_nanos.load(Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum {sum}");
        let _ = writeln!(out, "{name}_count {count}");
    }
}

struct Inner {
    sent: AtomicU64,
    failed: AtomicU64,
    retried: AtomicU64,
    skipped: AtomicU64,
    bounced: [AtomicU64; BOUNCE_CLASSES.len()],
    tracking: [AtomicU64; TRACKING_KINDS.len()],
    send_latency: Histogram,
    rate_wait: Histogram,
}

/// The worker's metrics. Clones share the same counters.
#[derive(Clone)]
pub struct Metrics(Arc<Inner>);

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("sent", &self.0.sent.load(Relaxed))
            .finish_non_exhaustive()
    }
}

/// The label of a bounce: `5.1` from `5.1.1 …` in the reply text, else `5xx`/`4xx`.
pub fn bounce_class(code: u16, text: &str) -> &'static str {
    let reply = Reply::parse(code, text);
    if let Some((class, subject, _)) = reply.enhanced {
        let label = format!("{class}.{subject}");
        if let Some(known) = BOUNCE_CLASSES.iter().find(|c| **c == label) {
            return known;
        }
    }
    if code / 100 == 4 { "4xx" } else { "5xx" }
}

impl Metrics {
    pub fn new() -> Metrics {
        Metrics(Arc::new(Inner {
            sent: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            retried: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            bounced: std::array::from_fn(|_| AtomicU64::new(0)),
            tracking: std::array::from_fn(|_| AtomicU64::new(0)),
            send_latency: Histogram::new(&SEND_LATENCY_BOUNDS),
            rate_wait: Histogram::new(&RATE_WAIT_BOUNDS),
        }))
    }

    /// Counts one recorded outcome of a delivery.
    pub fn outcome(&self, outcome: &Outcome) {
        match outcome {
            Outcome::Sent { .. } => self.sent(),
            Outcome::Retry { .. } => self.retried(),
            Outcome::Failed { .. } => self.failed(),
            Outcome::Bounced { reply } => self.bounced(reply.code, &reply.text),
            Outcome::Skipped { .. } => {
                self.0.skipped.fetch_add(1, Relaxed);
            }
            // Waiting for a send window or given back at shutdown: not an outcome.
            Outcome::Deferred { .. } => {}
        }
    }

    pub fn sent(&self) {
        self.0.sent.fetch_add(1, Relaxed);
    }

    /// A temporary failure that will be tried again.
    pub fn retried(&self) {
        self.0.retried.fetch_add(1, Relaxed);
    }

    /// A final failure (not a bounce): attempts exhausted, a template error, ….
    pub fn failed(&self) {
        self.0.failed.fetch_add(1, Relaxed);
    }

    /// A bounce with the relay's (or a DSN's) reply code and text.
    pub fn bounced(&self, code: u16, text: &str) {
        let class = bounce_class(code, text);
        if let Some(i) = BOUNCE_CLASSES.iter().position(|c| *c == class) {
            self.0.bounced[i].fetch_add(1, Relaxed);
        }
    }

    /// A tracking event recorded (`email_opened`, `email_clicked`, …).
    pub fn tracking_event(&self, kind: &str) {
        let i = TRACKING_KINDS
            .iter()
            .position(|k| *k == kind)
            .unwrap_or(TRACKING_KINDS.len() - 1);
        self.0.tracking[i].fetch_add(1, Relaxed);
    }

    /// The time of one send: SMTP transaction (or outbox write) to reply.
    pub fn observe_send_latency(&self, d: Duration) {
        self.0.send_latency.observe(d);
    }

    /// Time a send waited on a rate limiter.
    pub fn observe_rate_limit_wait(&self, d: Duration) {
        self.0.rate_wait.observe(d);
    }

    /// The metrics in the text exposition format; `queue_depth` is left out
    /// when it could not be read.
    pub fn render(&self, queue_depth: Option<i64>) -> String {
        let m = &self.0;
        let mut out = String::with_capacity(4096);
        counter(
            &mut out,
            "herald_messages_sent_total",
            "Messages accepted by the relay (or written to the outbox).",
            m.sent.load(Relaxed),
        );
        counter(
            &mut out,
            "herald_messages_failed_total",
            "Deliveries failed for good without a bounce (attempts exhausted, template errors).",
            m.failed.load(Relaxed),
        );
        counter(
            &mut out,
            "herald_messages_retried_total",
            "Temporary failures (4xx, lost connections) put back for a retry.",
            m.retried.load(Relaxed),
        );
        counter(
            &mut out,
            "herald_messages_skipped_total",
            "Deliveries skipped at send time (unsubscribed, suppressed, frequency cap).",
            m.skipped.load(Relaxed),
        );
        header(
            &mut out,
            "herald_messages_bounced_total",
            "Bounces by enhanced status class (5.1 bad mailbox, 5.7 policy, ...) or reply class (4xx, 5xx) when the reply had no enhanced code.",
            "counter",
        );
        for (class, n) in BOUNCE_CLASSES.iter().zip(&m.bounced) {
            let n = n.load(Relaxed);
            if n > 0 || BOUNCE_CLASSES_ALWAYS.contains(class) {
                let _ = writeln!(
                    out,
                    "herald_messages_bounced_total{{class=\"{class}\"}} {n}"
                );
            }
        }
        header(
            &mut out,
            "herald_tracking_events_total",
            "Tracking events recorded, by kind.",
            "counter",
        );
        for (kind, n) in TRACKING_KINDS.iter().zip(&m.tracking) {
            let _ = writeln!(
                out,
                "herald_tracking_events_total{{kind=\"{kind}\"}} {}",
                n.load(Relaxed)
            );
        }
        header(
            &mut out,
            "herald_queue_depth",
            "Deliveries queued in the database (all workers), read at scrape time.",
            "gauge",
        );
        if let Some(depth) = queue_depth {
            let _ = writeln!(out, "herald_queue_depth {depth}");
        }
        m.send_latency.render(
            &mut out,
            "herald_send_latency_seconds",
            "Time of one send, from handing the message to the relay to its reply.",
        );
        m.rate_wait.render(
            &mut out,
            "herald_rate_limit_wait_seconds",
            "Time a send waited on a rate limiter.",
        );
        out
    }
}

fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn counter(out: &mut String, name: &str, help: &str, value: u64) {
    header(out, name, help, "counter");
    let _ = writeln!(out, "{name} {value}");
}

#[derive(Clone)]
struct MetricsState {
    metrics: Metrics,
    store: Store,
}

/// `GET /metrics`, to be merged into the worker's HTTP service.
pub fn router(metrics: Metrics, store: Store) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .with_state(MetricsState { metrics, store })
}

async fn scrape(State(s): State<MetricsState>) -> impl IntoResponse {
    let depth = match s.store.queue_depth().await {
        Ok(d) => Some(d),
        Err(e) => {
            tracing::warn!(error = %e, "metrics: cannot read the queue depth");
            None
        }
    };
    ([(CONTENT_TYPE, CONTENT_TYPE_TEXT)], s.metrics.render(depth))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounce_classes_come_from_enhanced_codes() {
        assert_eq!(bounce_class(550, "5.1.1 <x@y>: no such user"), "5.1");
        assert_eq!(bounce_class(554, "5.7.1 relay denied"), "5.7");
        assert_eq!(bounce_class(550, "mailbox unavailable"), "5xx");
        assert_eq!(bounce_class(452, "4.2.2 mailbox full"), "4.2");
        assert_eq!(bounce_class(421, "try later"), "4xx");
    }

    #[test]
    fn histogram_buckets_are_cumulative() {
        let m = Metrics::new();
        m.observe_send_latency(Duration::from_millis(3));
        m.observe_send_latency(Duration::from_millis(30));
        m.observe_send_latency(Duration::from_secs(60));
        let text = m.render(Some(0));
        assert!(text.contains("herald_send_latency_seconds_bucket{le=\"0.005\"} 1\n"));
        assert!(text.contains("herald_send_latency_seconds_bucket{le=\"0.05\"} 2\n"));
        assert!(text.contains("herald_send_latency_seconds_bucket{le=\"10\"} 2\n"));
        assert!(text.contains("herald_send_latency_seconds_bucket{le=\"+Inf\"} 3\n"));
        assert!(text.contains("herald_send_latency_seconds_count 3\n"));
    }
}
