//! Campaign statistics: aggregates over `deliveries` and `interactions`,
//! computed in the database (one grouped statement per figure family, never a
//! loop over rows).
//!
//! What the figures mean:
//! - `entered` (per step): deliveries planned for the step; for the campaign:
//!   entries into it.
//! - `sent`: accepted by the relay. `bounced`: refused by it (5xx) plus
//!   deliveries that bounced later (an `email_bounced` for a delivery that was
//!   sent; also in `bounced_later`).
//! - `opened`, `clicked`, `unsubscribed`, `complained`, `converted`: distinct
//!   customers. `opens`, `clicks`: events. A `machine` open (Apple Mail Privacy
//!   Protection and other fetchers) counts in `opened`/`opens`, never in the
//!   `_human` figures.
//! - `converted`: customers with the conversion event at or after a step's
//!   send to them and before the window ends (`sent_at <= t < sent_at + window`).

use std::collections::BTreeMap;

use sqlx::AssertSqlSafe;

use super::audience::bind_all;
use super::{Context, Store, StoreError, named, with_pool};
use crate::clock::Millis;
use crate::segment::Compiled;
use crate::status::DeliveryStatus;

/// The figures of one step, or of the whole campaign (`step` is `None`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    pub step: Option<String>,
    pub entered: i64,
    /// Queued or being sent.
    pub pending: i64,
    pub sent: i64,
    pub bounced: i64,
    pub bounced_later: i64,
    pub failed: i64,
    pub skipped: i64,
    /// Skips by reason, most frequent first.
    pub skipped_by_reason: Vec<(String, i64)>,
    pub opened: i64,
    pub opened_human: i64,
    pub opens: i64,
    pub opens_human: i64,
    pub clicked: i64,
    pub clicks: i64,
    pub unsubscribed: i64,
    pub complained: i64,
    pub converted: i64,
    /// Clicks per link, most clicked first.
    pub links: Vec<LinkCount>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkCount {
    /// `data.url` of the click; `None` when the event carried none.
    pub url: Option<String>,
    pub clicks: i64,
    /// Distinct customers.
    pub clicked: i64,
}

/// Everything `stats` and `report` show about one campaign.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CampaignCounts {
    pub campaign: String,
    /// Entries into the campaign (a re-entry counts again).
    pub entries: i64,
    /// Distinct customers who entered.
    pub customers: i64,
    pub first_sent: Option<Millis>,
    pub last_sent: Option<Millis>,
    /// The latest send or tracked event of the campaign.
    pub last_activity: Option<Millis>,
    /// Campaign-wide figures: sums of the steps' deliveries, distinct
    /// customers across steps for the engagement figures.
    pub total: Counts,
    /// In the order the steps were first planned.
    pub steps: Vec<Counts>,
}

/// What counts as a conversion.
#[derive(Debug, Clone, PartialEq)]
pub struct Conversion {
    /// Interaction kind, e.g. `purchase`.
    pub kind: String,
    /// How long after a send the event still counts.
    pub window: Millis,
    /// A predicate over the interaction `i` with placeholders from `$4` on
    /// (a [`crate::segment::Predicate::EventData`]); `1 = 1` for none.
    pub filter: Compiled,
}

/// The parameter number a [`Conversion::filter`] must start at.
pub const CONVERSION_FIRST_PARAM: usize = 4;

/// Events of one time bucket.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Bucket {
    /// Start of the bucket (epoch ms, a multiple of its size).
    pub at: Millis,
    pub sent: i64,
    pub opens_human: i64,
    pub opens_machine: i64,
    pub clicks: i64,
}

/// Engagement kinds, grouped by step or over the whole campaign.
const ENGAGEMENT: &str = "COUNT(DISTINCT CASE WHEN i.kind = 'email_opened' THEN i.customer_id END), \
     COUNT(DISTINCT CASE WHEN i.kind = 'email_opened' AND NOT {machine} THEN i.customer_id END), \
     COUNT(CASE WHEN i.kind = 'email_opened' THEN 1 END), \
     COUNT(CASE WHEN i.kind = 'email_opened' AND NOT {machine} THEN 1 END), \
     COUNT(DISTINCT CASE WHEN i.kind = 'email_clicked' THEN i.customer_id END), \
     COUNT(CASE WHEN i.kind = 'email_clicked' THEN 1 END), \
     COUNT(DISTINCT CASE WHEN i.kind = 'unsubscribed' THEN i.customer_id END), \
     COUNT(DISTINCT CASE WHEN i.kind = 'email_complained' THEN i.customer_id END) \
     FROM interactions i WHERE i.campaign = $1 AND i.step IS NOT NULL \
     AND i.kind IN ('email_opened', 'email_clicked', 'unsubscribed', 'email_complained')";

type EngagementRow = (Option<String>, i64, i64, i64, i64, i64, i64, i64, i64);

/// A grouping key: by step, or one row for the campaign.
#[derive(Clone, Copy)]
enum By {
    Step,
    Campaign,
}

impl By {
    fn key(self, alias: &str) -> String {
        match self {
            By::Step => format!("{alias}.step"),
            By::Campaign => "CAST(NULL AS TEXT)".to_string(),
        }
    }
}

impl Store {
    /// Campaigns that have deliveries, by name.
    pub async fn campaigns_with_deliveries(&self) -> Result<Vec<String>, StoreError> {
        with_pool!(self, |pool| {
            sqlx::query_scalar("SELECT DISTINCT campaign FROM deliveries ORDER BY campaign")
                .fetch_all(pool)
                .await
        })
        .context("listing campaigns with deliveries")
    }

    /// Every figure of a campaign, per step and in total.
    pub async fn campaign_counts(
        &self,
        campaign: &str,
        conversion: Option<&Conversion>,
    ) -> Result<CampaignCounts, StoreError> {
        let mut out = CampaignCounts {
            campaign: campaign.to_string(),
            ..Default::default()
        };
        let (entries, customers, first_sent, last_sent, last_event): (
            i64,
            i64,
            Option<i64>,
            Option<i64>,
            Option<i64>,
        ) = with_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT (SELECT COUNT(*) FROM entries WHERE campaign = $1), \
                 (SELECT COUNT(DISTINCT customer_id) FROM entries WHERE campaign = $1), \
                 (SELECT MIN(sent_at) FROM deliveries WHERE campaign = $1), \
                 (SELECT MAX(sent_at) FROM deliveries WHERE campaign = $1), \
                 (SELECT MAX(occurred_at) FROM interactions WHERE campaign = $1)",
            )
            .bind(campaign)
            .fetch_one(pool)
            .await
        })
        .context("counting a campaign's entries")?;
        out.entries = entries;
        out.customers = customers;
        out.first_sent = first_sent;
        out.last_sent = last_sent;
        out.last_activity = last_sent.max(last_event);

        // Deliveries by step and status (skips by reason); additive, so the
        // campaign's totals are the sums.
        let rows: Vec<(String, String, Option<String>, i64, i64)> = with_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT step, status, CASE WHEN status = 'skipped' THEN COALESCE(reason, '') END, \
                 COUNT(*), MIN(created_at) FROM deliveries WHERE campaign = $1 \
                 GROUP BY step, status, CASE WHEN status = 'skipped' THEN COALESCE(reason, '') END",
            )
            .bind(campaign)
            .fetch_all(pool)
            .await
        })
        .context("counting a campaign's deliveries")?;
        let mut first_planned: BTreeMap<String, i64> = BTreeMap::new();
        let mut steps: BTreeMap<String, Counts> = BTreeMap::new();
        for (step, status, reason, n, created) in rows {
            let first = first_planned.entry(step.clone()).or_insert(created);
            *first = (*first).min(created);
            let c = steps.entry(step.clone()).or_insert_with(|| Counts {
                step: Some(step),
                ..Default::default()
            });
            c.entered += n;
            match named(&status).context("counting a campaign's deliveries")? {
                DeliveryStatus::Queued | DeliveryStatus::Sending => c.pending += n,
                DeliveryStatus::Sent => c.sent += n,
                DeliveryStatus::Bounced => c.bounced += n,
                DeliveryStatus::Failed => c.failed += n,
                DeliveryStatus::Skipped => {
                    c.skipped += n;
                    c.skipped_by_reason.push((reason.unwrap_or_default(), n));
                }
            }
        }

        let later: Vec<(String, i64)> = with_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT d.step, COUNT(DISTINCT d.id) FROM interactions i \
                 JOIN deliveries d ON d.id = i.delivery_id \
                 WHERE i.campaign = $1 AND i.kind = 'email_bounced' AND d.campaign = $1 \
                 AND d.status <> 'bounced' GROUP BY d.step",
            )
            .bind(campaign)
            .fetch_all(pool)
            .await
        })
        .context("counting later bounces")?;
        for (step, n) in later {
            if let Some(c) = steps.get_mut(&step) {
                c.bounced_later += n;
                c.bounced += n;
            }
        }

        for row in self.engagement(campaign, By::Step).await? {
            let c = steps.entry(row.0.clone().unwrap_or_default()).or_default();
            apply_engagement(c, row);
        }
        let mut links = self.links(campaign, By::Step).await?;
        for c in steps.values_mut() {
            let step = c.step.clone();
            c.links = links.remove(&step).unwrap_or_default();
        }
        if let Some(conv) = conversion {
            for (step, n) in self.conversions(campaign, conv, By::Step).await? {
                if let Some(c) = steps.get_mut(step.as_deref().unwrap_or_default()) {
                    c.converted = n;
                }
            }
        }

        // The campaign's totals.
        let mut total = Counts {
            entered: entries,
            ..Default::default()
        };
        let mut reasons: BTreeMap<String, i64> = BTreeMap::new();
        for c in steps.values_mut() {
            // Engagement of a step nobody was planned for (a renamed step).
            if c.step.is_none() {
                c.step = Some(String::new());
            }
            c.skipped_by_reason
                .sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            total.pending += c.pending;
            total.sent += c.sent;
            total.bounced += c.bounced;
            total.bounced_later += c.bounced_later;
            total.failed += c.failed;
            total.skipped += c.skipped;
            for (r, n) in &c.skipped_by_reason {
                *reasons.entry(r.clone()).or_default() += n;
            }
        }
        total.skipped_by_reason = reasons.into_iter().collect();
        total
            .skipped_by_reason
            .sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        if let Some(row) = self.engagement(campaign, By::Campaign).await?.pop() {
            apply_engagement(&mut total, row);
        }
        total.links = self
            .links(campaign, By::Campaign)
            .await?
            .remove(&None)
            .unwrap_or_default();
        if let Some(conv) = conversion {
            total.converted = self
                .conversions(campaign, conv, By::Campaign)
                .await?
                .first()
                .map(|r| r.1)
                .unwrap_or(0);
        }
        out.total = total;

        let mut steps: Vec<Counts> = steps.into_values().collect();
        steps.sort_by_key(|c| {
            let step = c.step.clone().unwrap_or_default();
            (first_planned.get(&step).copied().unwrap_or(i64::MAX), step)
        });
        out.steps = steps;
        Ok(out)
    }

    async fn engagement(&self, campaign: &str, by: By) -> Result<Vec<EngagementRow>, StoreError> {
        let machine = self.backend().json_key_true("i.data", "machine");
        let mut sql = format!(
            "SELECT {}, {}",
            by.key("i"),
            ENGAGEMENT.replace("{machine}", &machine)
        );
        if let By::Step = by {
            sql.push_str(" GROUP BY i.step");
        }
        with_pool!(self, |pool| {
            sqlx::query_as(AssertSqlSafe(&*sql))
                .bind(campaign)
                .fetch_all(pool)
                .await
        })
        .context("counting opens and clicks")
    }

    /// Clicks per link, keyed by step (`None` for the campaign).
    async fn links(
        &self,
        campaign: &str,
        by: By,
    ) -> Result<BTreeMap<Option<String>, Vec<LinkCount>>, StoreError> {
        let url = self.backend().json_key_text("i.data", "url");
        let group = match by {
            By::Step => "1, 2",
            By::Campaign => "2",
        };
        let sql = format!(
            "SELECT {}, {url}, COUNT(*), COUNT(DISTINCT i.customer_id) FROM interactions i \
             WHERE i.campaign = $1 AND i.kind = 'email_clicked' AND i.step IS NOT NULL \
             GROUP BY {group} ORDER BY 3 DESC, 2",
            by.key("i")
        );
        let rows: Vec<(Option<String>, Option<String>, i64, i64)> = with_pool!(self, |pool| {
            sqlx::query_as(AssertSqlSafe(&*sql))
                .bind(campaign)
                .fetch_all(pool)
                .await
        })
        .context("counting clicks per link")?;
        let mut out: BTreeMap<Option<String>, Vec<LinkCount>> = BTreeMap::new();
        for (step, url, clicks, clicked) in rows {
            out.entry(step).or_default().push(LinkCount {
                url,
                clicks,
                clicked,
            });
        }
        Ok(out)
    }

    async fn conversions(
        &self,
        campaign: &str,
        conv: &Conversion,
        by: By,
    ) -> Result<Vec<(Option<String>, i64)>, StoreError> {
        let mut sql = format!(
            "SELECT {}, COUNT(DISTINCT d.customer_id) FROM deliveries d \
             WHERE d.campaign = $1 AND d.status = 'sent' AND d.sent_at IS NOT NULL \
             AND EXISTS (SELECT 1 FROM interactions i WHERE i.customer_id = d.customer_id \
             AND i.kind = $2 AND i.occurred_at >= d.sent_at AND i.occurred_at < d.sent_at + $3 \
             AND ({}))",
            by.key("d"),
            conv.filter.predicate
        );
        if let By::Step = by {
            sql.push_str(" GROUP BY d.step");
        }
        with_pool!(self, |pool| {
            bind_all!(
                sqlx::query_as(AssertSqlSafe(&*sql))
                    .bind(campaign)
                    .bind(&conv.kind)
                    .bind(conv.window),
                &conv.filter.params
            )
            .fetch_all(pool)
            .await
        })
        .context("counting conversions")
    }

    /// Sends, opens (human and machine apart) and clicks per time bucket of
    /// `bucket` milliseconds, oldest first; empty buckets are left out.
    pub async fn campaign_series(
        &self,
        campaign: &str,
        bucket: Millis,
    ) -> Result<Vec<Bucket>, StoreError> {
        let machine = self.backend().json_key_true("i.data", "machine");
        let sql = format!(
            "SELECT t.bucket, t.kind, COUNT(*) FROM ( \
             SELECT (d.sent_at / $2) * $2 AS bucket, 'send' AS kind FROM deliveries d \
             WHERE d.campaign = $1 AND d.sent_at IS NOT NULL \
             UNION ALL \
             SELECT (i.occurred_at / $2) * $2, \
             CASE WHEN i.kind = 'email_clicked' THEN 'click' WHEN {machine} THEN 'machine' ELSE 'human' END \
             FROM interactions i WHERE i.campaign = $1 AND i.kind IN ('email_opened', 'email_clicked') \
             ) t GROUP BY t.bucket, t.kind ORDER BY t.bucket"
        );
        let bucket = bucket.max(1);
        let rows: Vec<(i64, String, i64)> = with_pool!(self, |pool| {
            sqlx::query_as(AssertSqlSafe(&*sql))
                .bind(campaign)
                .bind(bucket)
                .fetch_all(pool)
                .await
        })
        .context("counting events over time")?;
        let mut out: Vec<Bucket> = Vec::new();
        for (at, kind, n) in rows {
            if out.last().is_none_or(|b| b.at != at) {
                out.push(Bucket {
                    at,
                    ..Default::default()
                });
            }
            if let Some(b) = out.last_mut() {
                match kind.as_str() {
                    // The series' own labels, given in the statement above.
                    "send" => b.sent = n,
                    "click" => b.clicks = n,
                    "machine" => b.opens_machine = n,
                    _ => b.opens_human = n,
                }
            }
        }
        Ok(out)
    }

    /// Deliveries waiting to be sent (queued), for the queue-depth gauge.
    pub async fn queue_depth(&self) -> Result<i64, StoreError> {
        with_pool!(self, |pool| {
            sqlx::query_scalar("SELECT COUNT(*) FROM deliveries WHERE status = 'queued'")
                .fetch_one(pool)
                .await
        })
        .context("counting queued deliveries")
    }
}

fn apply_engagement(c: &mut Counts, row: EngagementRow) {
    let (step, opened, opened_human, opens, opens_human, clicked, clicks, unsub, complained) = row;
    if c.step.is_none() {
        c.step = step;
    }
    c.opened = opened;
    c.opened_human = opened_human;
    c.opens = opens;
    c.opens_human = opens_human;
    c.clicked = clicked;
    c.clicks = clicks;
    c.unsubscribed = unsub;
    c.complained = complained;
}
