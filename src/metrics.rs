//! Prometheus metrics of one process, kept in a `prometheus-client`
//! [`Registry`]: typed counters, label families and histograms that every
//! sender task updates without allocating, and the two text formats a scraper
//! may ask for, written by the crate's encoders. Nothing here speaks HTTP:
//! `http::metrics` serves [`Metrics::encode`] at `GET /metrics`.
//!
//! Wiring (done where the events happen):
//! - the send pipeline calls [`Metrics::outcome`] once per recorded
//!   [`Outcome`] (sent, retried, failed, bounced by class, skipped),
//!   [`Metrics::observe_send_latency`] with the time of one SMTP transaction
//!   (or outbox write), and [`Metrics::observe_rate_limit_wait`] with the time
//!   spent waiting on a rate limiter before a send;
//! - the HTTP service calls [`Metrics::tracking_event`] per recorded event;
//! - what only the database knows for all workers (the queue depth) is read
//!   by the scrape and handed to [`Metrics::encode`] as a [`Scraped`].

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelSet, EncodeLabelValue, EncodeMetric, LabelValueEncoder,
    prometheus_text, text,
};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::mailer::Reply;
use crate::store::deliveries::Outcome;

/// Every metric's name starts with this.
const PREFIX: &str = "herald";

/// Bounce classes: enhanced status codes by class and subject (`5.1` bad
/// mailbox, `5.7` policy, …; RFC 3463), and the basic reply class when the
/// relay gave no enhanced code.
const BOUNCE_CLASSES: [&str; 18] = [
    "4.0", "4.1", "4.2", "4.3", "4.4", "4.5", "4.6", "4.7", "4xx", "5.0", "5.1", "5.2", "5.3",
    "5.4", "5.5", "5.6", "5.7", "5xx",
];
/// Shown even at zero, so that dashboards and alerts find the series; the
/// other classes appear with their first bounce.
const BOUNCE_CLASSES_ALWAYS: [&str; 4] = ["4xx", "5xx", "5.1", "5.7"];

/// Upper bounds (seconds) of the send-latency buckets: one SMTP transaction.
const SEND_LATENCY_BOUNDS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];
/// Upper bounds (seconds) of the rate-limiter wait buckets.
const RATE_WAIT_BOUNDS: [f64; 11] = [
    0.0001, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 120.0,
];

/// The exposition formats, both written by `prometheus-client`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The Prometheus text format 0.0.4: what a scraper gets unless it asks
    /// for OpenMetrics. Counter families are named with their `_total`.
    Prometheus,
    /// OpenMetrics 1.0.0 text: `# UNIT` lines, counter families named
    /// without `_total` (their samples keep it), and a final `# EOF`.
    OpenMetrics,
}

impl Format {
    /// The media type a response in this format carries.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Prometheus => prometheus_text::CONTENT_TYPE,
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// A tracking event's kind, as Herald records it; anything else is `other`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TrackingKind {
    Opened,
    Clicked,
    Unsubscribed,
    Complained,
    Bounced,
    Sent,
    Other,
}

impl TrackingKind {
    const ALL: [TrackingKind; 7] = [
        TrackingKind::Opened,
        TrackingKind::Clicked,
        TrackingKind::Unsubscribed,
        TrackingKind::Complained,
        TrackingKind::Bounced,
        TrackingKind::Sent,
        TrackingKind::Other,
    ];

    /// The interaction kind it counts (`email_opened`, …); the `kind` label.
    pub fn as_str(self) -> &'static str {
        match self {
            TrackingKind::Opened => "email_opened",
            TrackingKind::Clicked => "email_clicked",
            TrackingKind::Unsubscribed => "unsubscribed",
            TrackingKind::Complained => "email_complained",
            TrackingKind::Bounced => "email_bounced",
            TrackingKind::Sent => "email_sent",
            TrackingKind::Other => "other",
        }
    }
}

impl From<&str> for TrackingKind {
    /// An interaction kind; one Herald does not record from outside is `other`.
    fn from(kind: &str) -> TrackingKind {
        TrackingKind::ALL
            .into_iter()
            .find(|k| k.as_str() == kind)
            .unwrap_or(TrackingKind::Other)
    }
}

impl EncodeLabelValue for TrackingKind {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&self.as_str(), encoder)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct BounceLabels {
    /// One of [`BOUNCE_CLASSES`].
    class: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct TrackingLabels {
    kind: TrackingKind,
}

/// What a scrape reads from the database rather than from this process.
#[derive(Debug, Clone, Copy, Default)]
pub struct Scraped {
    /// Deliveries queued (all workers); `None` when it could not be read.
    pub queue_depth: Option<i64>,
}

/// `herald_queue_depth`, encoded from the value the scrape read: its HELP
/// and TYPE always, its sample only when known.
#[derive(Debug)]
struct QueueDepth(Option<i64>);

impl Collector for QueueDepth {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let gauge = ConstGauge::new(self.0.unwrap_or_default());
        let metric = encoder.encode_descriptor(
            "queue_depth",
            "Deliveries queued in the database (all workers), read at scrape time.",
            None,
            gauge.metric_type(),
        )?;
        match self.0 {
            Some(_) => gauge.encode(metric),
            None => Ok(()),
        }
    }
}

struct Inner {
    registry: Registry,
    sent: Counter,
    failed: Counter,
    retried: Counter,
    skipped: Counter,
    bounced: Family<BounceLabels, Counter>,
    /// One handle per [`TrackingKind`] (in [`TrackingKind::ALL`]'s order),
    /// taken from the family once: counting an event hashes no label set.
    tracking: [Counter; TrackingKind::ALL.len()],
    send_latency: Histogram,
    rate_wait: Histogram,
    /// `/v1` Segment calls by [`ApiCallOutcome`], in its order.
    api_calls: [Counter; 3],
}

/// What became of a Segment call sent to `/v1`: the `outcome` label of
/// `herald_api_calls_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ApiCallOutcome {
    /// Committed (or already stored: a retry).
    Stored,
    /// Refused with a 4xx naming the field; nothing stored.
    Refused,
    /// Not stored for a fault on Herald's side (503): the client retries.
    Unstored,
}

impl ApiCallOutcome {
    const ALL: [ApiCallOutcome; 3] = [
        ApiCallOutcome::Stored,
        ApiCallOutcome::Refused,
        ApiCallOutcome::Unstored,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ApiCallOutcome::Stored => "stored",
            ApiCallOutcome::Refused => "refused",
            ApiCallOutcome::Unstored => "unstored",
        }
    }
}

impl EncodeLabelValue for ApiCallOutcome {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&self.as_str(), encoder)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ApiCallLabels {
    outcome: ApiCallOutcome,
}

/// The process's metrics. Clones share the same registry and counters.
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
            .field("sent", &self.0.sent.get())
            .finish_non_exhaustive()
    }
}

/// The label of a bounce: the class and subject of the reply's enhanced
/// status code (`5.1` of `5.1.1`) when it is one of [`BOUNCE_CLASSES`], else
/// `5xx`/`4xx`.
pub fn bounce_class(reply: &Reply) -> &'static str {
    let code = reply.code;
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
        let mut registry = Registry::with_prefix(PREFIX);
        let counter = |registry: &mut Registry, name: &str, help: &str| {
            let c = Counter::default();
            registry.register(name, help, c.clone());
            c
        };
        // Help texts without the final period: the registry adds it.
        let sent = counter(
            &mut registry,
            "messages_sent",
            "Messages accepted by the relay (or written to the outbox)",
        );
        let failed = counter(
            &mut registry,
            "messages_failed",
            "Deliveries failed for good without a bounce (attempts exhausted, template errors)",
        );
        let retried = counter(
            &mut registry,
            "messages_retried",
            "Temporary failures (4xx, lost connections) put back for a retry",
        );
        let skipped = counter(
            &mut registry,
            "messages_skipped",
            "Deliveries skipped at send time (unsubscribed, suppressed, frequency cap)",
        );
        let bounced = Family::<BounceLabels, Counter>::default();
        for class in BOUNCE_CLASSES_ALWAYS {
            bounced.get_or_create_owned(&BounceLabels { class });
        }
        registry.register(
            "messages_bounced",
            "Bounces by enhanced status class (5.1 bad mailbox, 5.7 policy, ...) or reply class (4xx, 5xx) when the reply had no enhanced code",
            bounced.clone(),
        );
        let events = Family::<TrackingLabels, Counter>::default();
        let tracking =
            TrackingKind::ALL.map(|kind| events.get_or_create_owned(&TrackingLabels { kind }));
        registry.register(
            "tracking_events",
            "Tracking events recorded, by kind",
            events,
        );
        let send_latency = Histogram::new(SEND_LATENCY_BOUNDS);
        registry.register_with_unit(
            "send_latency",
            "Time of one send, from handing the message to the relay to its reply",
            Unit::Seconds,
            send_latency.clone(),
        );
        let rate_wait = Histogram::new(RATE_WAIT_BOUNDS);
        registry.register_with_unit(
            "rate_limit_wait",
            "Time a send waited on a rate limiter",
            Unit::Seconds,
            rate_wait.clone(),
        );
        let calls = Family::<ApiCallLabels, Counter>::default();
        let api_calls = ApiCallOutcome::ALL
            .map(|outcome| calls.get_or_create_owned(&ApiCallLabels { outcome }));
        registry.register(
            "api_calls",
            "Segment calls sent to /v1 (identify, track, ..., each item of a batch), by outcome",
            calls,
        );
        Metrics(Arc::new(Inner {
            registry,
            api_calls,
            sent,
            failed,
            retried,
            skipped,
            bounced,
            tracking,
            send_latency,
            rate_wait,
        }))
    }

    /// Counts one recorded outcome of a delivery.
    pub fn outcome(&self, outcome: &Outcome) {
        match outcome {
            Outcome::Sent { .. } => self.sent(),
            Outcome::Retry { .. } => self.retried(),
            Outcome::Failed { .. } => self.failed(),
            Outcome::Bounced { reply } => self.bounced(reply),
            Outcome::Skipped { .. } => {
                self.0.skipped.inc();
            }
            // Waiting for a send window or given back at shutdown: not an outcome.
            Outcome::Deferred { .. } => {}
        }
    }

    pub fn sent(&self) {
        self.0.sent.inc();
    }

    /// A temporary failure that will be tried again.
    pub fn retried(&self) {
        self.0.retried.inc();
    }

    /// A final failure (not a bounce): attempts exhausted, a template error, ….
    pub fn failed(&self) {
        self.0.failed.inc();
    }

    /// A bounce with the relay's (or a DSN's) reply.
    pub fn bounced(&self, reply: &Reply) {
        let class = bounce_class(reply);
        self.0.bounced.get_or_create(&BounceLabels { class }).inc();
    }

    /// A tracking event recorded: a [`TrackingKind`], or an interaction kind
    /// such as `"email_opened"`.
    pub fn tracking_event(&self, kind: impl Into<TrackingKind>) {
        // A variant's discriminant is its index in ALL (see the test).
        self.0.tracking[kind.into() as usize].inc();
    }

    /// `n` Segment calls that came to `outcome`.
    pub fn api_calls(&self, outcome: ApiCallOutcome, n: u64) {
        if n > 0 {
            // A variant's discriminant is its index in ALL.
            self.0.api_calls[outcome as usize].inc_by(n);
        }
    }

    /// The time of one send: SMTP transaction (or outbox write) to reply.
    pub fn observe_send_latency(&self, d: Duration) {
        self.0.send_latency.observe(d.as_secs_f64());
    }

    /// Time a send waited on a rate limiter.
    pub fn observe_rate_limit_wait(&self, d: Duration) {
        self.0.rate_wait.observe(d.as_secs_f64());
    }

    /// Every metric in `format`, with what the scrape read from the database.
    pub fn encode(&self, format: Format, scraped: Scraped) -> Result<String, std::fmt::Error> {
        let mut read = Registry::with_prefix(PREFIX);
        read.register_collector(Box::new(QueueDepth(scraped.queue_depth)));
        let mut out = String::with_capacity(4096);
        match format {
            Format::Prometheus => {
                prometheus_text::encode(&mut out, &self.0.registry)?;
                prometheus_text::encode(&mut out, &read)?;
            }
            Format::OpenMetrics => {
                text::encode_registry(&mut out, &self.0.registry)?;
                text::encode_registry(&mut out, &read)?;
                text::encode_eof(&mut out)?;
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounce_classes_come_from_enhanced_codes() {
        assert_eq!(
            bounce_class(&Reply::parse(550, "5.1.1 <x@y>: no such user")),
            "5.1"
        );
        assert_eq!(
            bounce_class(&Reply::parse(554, " 5.7.1 relay denied")),
            "5.7"
        );
        assert_eq!(
            bounce_class(&Reply::parse(550, "mailbox unavailable")),
            "5xx"
        );
        assert_eq!(
            bounce_class(&Reply::parse(452, "4.2.2 mailbox full")),
            "4.2"
        );
        assert_eq!(bounce_class(&Reply::parse(421, "try later")), "4xx");
    }

    #[test]
    fn tracking_kinds_index_their_handles() {
        for (i, kind) in TrackingKind::ALL.into_iter().enumerate() {
            assert_eq!(kind as usize, i);
            assert_eq!(TrackingKind::from(kind.as_str()), kind);
        }
    }

    #[test]
    fn histogram_buckets_are_cumulative() {
        let m = Metrics::new();
        m.observe_send_latency(Duration::from_millis(3));
        m.observe_send_latency(Duration::from_millis(30));
        m.observe_send_latency(Duration::from_secs(60));
        let scraped = Scraped {
            queue_depth: Some(0),
        };
        let text = m.encode(Format::Prometheus, scraped).unwrap();
        assert!(text.contains("herald_send_latency_seconds_bucket{le=\"0.005\"} 1\n"));
        assert!(text.contains("herald_send_latency_seconds_bucket{le=\"0.05\"} 2\n"));
        assert!(text.contains("herald_send_latency_seconds_bucket{le=\"10\"} 2\n"));
        assert!(text.contains("herald_send_latency_seconds_bucket{le=\"+Inf\"} 3\n"));
        assert!(text.contains("herald_send_latency_seconds_count 3\n"));
    }

    #[test]
    fn the_two_formats_name_families_their_own_way() {
        let m = Metrics::new();
        m.sent();
        m.tracking_event("email_opened");
        m.tracking_event("something_else");
        let none = Scraped::default();
        let classic = m.encode(Format::Prometheus, none).unwrap();
        assert!(classic.contains("# TYPE herald_messages_sent_total counter\n"));
        assert!(classic.contains("\nherald_messages_sent_total 1\n"));
        assert!(classic.contains("herald_tracking_events_total{kind=\"email_opened\"} 1\n"));
        assert!(classic.contains("herald_tracking_events_total{kind=\"other\"} 1\n"));
        assert!(classic.contains("herald_messages_bounced_total{class=\"5.7\"} 0\n"));
        assert!(!classic.contains("class=\"5.2\""));
        // Unknown depth: the family is described, with no sample.
        assert!(classic.contains("# TYPE herald_queue_depth gauge\n"));
        assert!(!classic.contains("\nherald_queue_depth "));
        assert!(!classic.contains("# EOF"));

        let open = m
            .encode(
                Format::OpenMetrics,
                Scraped {
                    queue_depth: Some(4),
                },
            )
            .unwrap();
        assert!(open.contains("# TYPE herald_messages_sent counter\n"));
        assert!(open.contains("\nherald_messages_sent_total 1\n"));
        assert!(open.contains("# UNIT herald_send_latency_seconds seconds\n"));
        assert!(open.contains("\nherald_queue_depth 4\n"));
        assert!(open.ends_with("# EOF\n"));
    }
}
