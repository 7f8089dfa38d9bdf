//! Campaign reports: the figures behind `herald stats` and the self-contained
//! HTML report of `herald report`.
//!
//! The figures are aggregated in the database ([`crate::store::stats`]); this
//! module adds what a reader needs around them — steps in the campaign file's
//! order, rates, the conversion rule — and renders them. Where a campaign's
//! customers stand in its sequence (`herald status`) is in `status.rs`.

mod charts;
mod html;
mod status;

use std::collections::BTreeMap;

use serde::Serialize;

use crate::campaign::Campaign;
use crate::clock::{Millis, format_rfc3339};
use crate::quantity::Span;
use crate::segment::{self, Condition, Context, EventCondition, FieldTest, Predicate};
use crate::store::stats::{CONVERSION_FIRST_PARAM, Conversion, Counts};
use crate::store::{Store, StoreError};

pub use html::render_html;
pub use status::{SequenceStatus, StepStatus, sequence_status};

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Which event counts as a conversion, and for how long after a send.
#[derive(Debug, Clone, PartialEq)]
pub struct ConversionRule {
    pub event: String,
    pub window: Span,
    /// `where:` tests of the goal's event condition.
    pub filters: Vec<FieldTest>,
    pub source: ConversionSource,
}

/// Where a conversion rule comes from; shown as `goal` or `option`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ConversionSource {
    /// The campaign file's `goal:`.
    Goal,
    /// `--conversion-event`.
    Option,
}

impl std::fmt::Display for ConversionSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ConversionSource::Goal => "goal",
            ConversionSource::Option => "option",
        })
    }
}

impl ConversionRule {
    /// The rule for a campaign: an explicit event wins; otherwise the goal's
    /// event (the first `event:` condition of `goal:` that is not under a
    /// `not:`), with its `where:` tests. `None` when neither gives an event.
    pub fn choose(
        campaign: Option<&Campaign>,
        event: Option<&str>,
        window: Span,
    ) -> Option<ConversionRule> {
        if let Some(event) = event {
            return Some(ConversionRule {
                event: event.to_string(),
                window,
                filters: Vec::new(),
                source: ConversionSource::Option,
            });
        }
        let goal = campaign?.goal.as_ref()?;
        let e = first_event(goal)?;
        Some(ConversionRule {
            event: e.kind.clone(),
            window,
            filters: e.filters.clone(),
            source: ConversionSource::Goal,
        })
    }

    fn to_store(&self, store: &Store, now: Millis, campaign: &str) -> Conversion {
        let cx = Context::new(store.backend(), now, campaign).params_from(CONVERSION_FIRST_PARAM);
        Conversion {
            kind: self.event.clone(),
            window: self.window.as_millis(),
            filter: segment::compile(Predicate::EventData(&self.filters), &cx),
        }
    }
}

fn first_event(c: &Condition) -> Option<&EventCondition> {
    match c {
        Condition::Event(e) if e.min_count >= 1 => Some(e),
        Condition::All(cs) | Condition::Any(cs) => cs.iter().find_map(first_event),
        _ => None,
    }
}

/// One campaign's figures, as `herald stats --json` prints them. The keys are
/// stable (documented in the README); new keys may be added.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CampaignStats {
    pub campaign: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// First and last send or tracked event, RFC 3339 (UTC).
    pub period: Option<Period>,
    /// Entries into the campaign and distinct customers who entered.
    pub entered: i64,
    pub customers: i64,
    pub conversion: Option<ConversionInfo>,
    /// False for a campaign with `tracking: false`: its opens and clicks are
    /// unknown, and their rates are `null`, not 0.
    pub tracked: bool,
    pub totals: StepStats,
    pub steps: Vec<StepStats>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Period {
    pub from: String,
    pub to: String,
    #[serde(skip)]
    pub from_ms: Millis,
    #[serde(skip)]
    pub to_ms: Millis,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ConversionInfo {
    pub event: String,
    pub window: String,
    pub source: ConversionSource,
}

/// The figures of one step (or of the campaign, in `totals`, without `step`).
/// Rates are fractions (0.25 = 25 %), `null` when their base is 0.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StepStats {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// Whether the campaign file (still) has this step.
    #[serde(skip)]
    pub in_file: bool,
    pub entered: i64,
    pub pending: i64,
    pub sent: i64,
    pub bounced: i64,
    pub bounced_later: i64,
    pub failed: i64,
    pub skipped: i64,
    pub skipped_by_reason: BTreeMap<String, i64>,
    pub opened: i64,
    pub opened_human: i64,
    pub opens: i64,
    pub opens_human: i64,
    pub clicked: i64,
    pub clicks: i64,
    pub unsubscribed: i64,
    pub complained: i64,
    pub converted: i64,
    pub open_rate: Option<f64>,
    pub open_rate_human: Option<f64>,
    pub click_rate: Option<f64>,
    pub click_to_open_rate: Option<f64>,
    pub unsubscribe_rate: Option<f64>,
    pub bounce_rate: Option<f64>,
    pub conversion_rate: Option<f64>,
    pub links: Vec<LinkStats>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LinkStats {
    pub url: String,
    pub clicks: i64,
    pub clicked: i64,
}

fn rate(n: i64, base: i64) -> Option<f64> {
    (base > 0).then(|| n as f64 / base as f64)
}

/// Which rates a campaign can have at all.
#[derive(Debug, Clone, Copy)]
struct Measured {
    /// Opens and clicks are recorded (`tracking:` is on).
    tracked: bool,
    /// A conversion event is known (a goal or `--conversion-event`).
    converting: bool,
}

impl StepStats {
    fn from_counts(c: Counts, in_file: bool, m: Measured) -> StepStats {
        let tracked = |r: Option<f64>| r.filter(|_| m.tracked);
        // Refused at the relay: the base of the bounce rate is what reached it.
        let reached = c.sent + c.bounced - c.bounced_later;
        StepStats {
            step: c.step,
            in_file,
            entered: c.entered,
            pending: c.pending,
            sent: c.sent,
            bounced: c.bounced,
            bounced_later: c.bounced_later,
            failed: c.failed,
            skipped: c.skipped,
            skipped_by_reason: c.skipped_by_reason.into_iter().collect(),
            opened: c.opened,
            opened_human: c.opened_human,
            opens: c.opens,
            opens_human: c.opens_human,
            clicked: c.clicked,
            clicks: c.clicks,
            unsubscribed: c.unsubscribed,
            complained: c.complained,
            converted: c.converted,
            open_rate: tracked(rate(c.opened, c.sent)),
            open_rate_human: tracked(rate(c.opened_human, c.sent)),
            click_rate: tracked(rate(c.clicked, c.sent)),
            click_to_open_rate: tracked(rate(c.clicked, c.opened)),
            unsubscribe_rate: rate(c.unsubscribed, c.sent),
            bounce_rate: rate(c.bounced, reached),
            conversion_rate: rate(c.converted, c.sent).filter(|_| m.converting),
            links: c
                .links
                .into_iter()
                .map(|l| LinkStats {
                    url: l.url.unwrap_or_else(|| "(no URL recorded)".to_string()),
                    clicks: l.clicks,
                    clicked: l.clicked,
                })
                .collect(),
        }
    }
}

/// What `stats` and `report` need besides the campaign's name.
#[derive(Debug, Clone)]
pub struct StatsOptions<'a> {
    /// The campaign file, for the order of steps, the description and the goal.
    pub campaign: Option<&'a Campaign>,
    pub conversion: Option<ConversionRule>,
    /// "Now" for any `within:` in a goal's `where:` tests.
    pub now: Millis,
}

/// A campaign's figures, steps in the campaign file's order (steps the file
/// no longer has follow, in the order they were first planned).
pub async fn campaign_stats(
    store: &Store,
    name: &str,
    opts: &StatsOptions<'_>,
) -> Result<CampaignStats, ReportError> {
    let conversion = opts
        .conversion
        .as_ref()
        .map(|r| r.to_store(store, opts.now, name));
    let counts = store.campaign_counts(name, conversion.as_ref()).await?;
    let m = Measured {
        tracked: opts.campaign.is_none_or(|c| c.tracking),
        converting: conversion.is_some(),
    };
    let mut stored: Vec<Counts> = counts.steps;
    let mut steps = Vec::new();
    if let Some(c) = opts.campaign {
        for s in &c.steps {
            let found = stored
                .iter()
                .position(|x| x.step.as_deref() == Some(s.id.as_str()));
            let counts = match found {
                Some(i) => stored.remove(i),
                None => Counts {
                    step: Some(s.id.clone()),
                    ..Default::default()
                },
            };
            steps.push(StepStats::from_counts(counts, true, m));
        }
    }
    let known = opts.campaign.is_none();
    steps.extend(
        stored
            .into_iter()
            .map(|c| StepStats::from_counts(c, known, m)),
    );
    let period = match (counts.first_sent, counts.last_activity) {
        (Some(from), Some(to)) => Some(Period {
            from: format_rfc3339(from),
            to: format_rfc3339(to),
            from_ms: from,
            to_ms: to,
        }),
        _ => None,
    };
    Ok(CampaignStats {
        campaign: name.to_string(),
        description: opts.campaign.and_then(|c| c.description.clone()),
        period,
        entered: counts.entries,
        customers: counts.customers,
        conversion: opts.conversion.as_ref().map(|r| ConversionInfo {
            event: r.event.clone(),
            window: r.window.to_string(),
            source: r.source,
        }),
        tracked: m.tracked,
        totals: StepStats::from_counts(counts.total, true, m),
        steps,
    })
}

/// Events over time, in buckets of `bucket` milliseconds.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub bucket: Millis,
    pub buckets: Vec<crate::store::stats::Bucket>,
}

const HOUR: Millis = 3_600_000;
const DAY: Millis = 24 * HOUR;
const MAX_BUCKETS: Millis = 5_000;

/// Hourly buckets for a campaign active up to three days, daily otherwise;
/// empty buckets between the first and the last are filled in with zeros.
pub async fn campaign_series(store: &Store, stats: &CampaignStats) -> Result<Series, ReportError> {
    let span = stats
        .period
        .as_ref()
        .map(|p| p.to_ms - p.from_ms)
        .unwrap_or(0);
    let bucket = if span <= 3 * DAY { HOUR } else { DAY };
    let found = store.campaign_series(&stats.campaign, bucket).await?;
    let mut buckets = Vec::new();
    if let (Some(first), Some(last)) = (found.first(), found.last()) {
        let (first, last) = (first.at, last.at);
        // Hourly up to three days or daily: a few thousand buckets at most,
        // unless a stray timestamp lies far away; then keep the sparse list.
        if (last - first) / bucket > MAX_BUCKETS {
            return Ok(Series {
                bucket,
                buckets: found,
            });
        }
        let mut it = found.into_iter().peekable();
        let mut at = first;
        while at <= last {
            match it.peek() {
                Some(b) if b.at == at => buckets.extend(it.next()),
                _ => buckets.push(crate::store::stats::Bucket {
                    at,
                    ..Default::default()
                }),
            }
            at += bucket;
        }
    }
    Ok(Series { bucket, buckets })
}
