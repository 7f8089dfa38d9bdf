//! Who of a claimed batch is sent now, skipped (and why), or deferred to the
//! send window: the checks made again at send time, because a customer may
//! have left, bounced or hit the frequency cap since the run was planned.
//!
//! Pure: the claims carry what the checks need (status, suppression, recent
//! sends), and the time is handed in.

use crate::campaign::{Campaign, CampaignKind};
use crate::clock::Millis;
use crate::quantity::FrequencyCap;
use crate::status::SkipReason;
use crate::store::deliveries::Claimed;

/// Claims sorted by [`triage`].
#[derive(Debug, Default)]
pub(crate) struct Triage {
    pub send: Vec<Claimed>,
    /// (delivery, why it is skipped).
    pub skip: Vec<(i64, SkipReason)>,
    /// With the time the window opens for them.
    pub defer: Vec<(Claimed, Millis)>,
}

/// Why `c` is not sent at all, if it is not: the first rule that applies, in
/// this order: the customer left (unsubscribed, bounced, complained), the
/// address is suppressed, the frequency cap is reached, the step is gone.
///
/// A transactional campaign's message (a receipt, a password reset) goes to
/// a customer who unsubscribed from marketing and is not held by the
/// frequency cap; a bounced or complaining customer and a suppressed address
/// get nothing, whatever the campaign.
pub(crate) fn skip_reason(
    campaign: &Campaign,
    c: &Claimed,
    cap: Option<FrequencyCap>,
) -> Option<SkipReason> {
    let transactional = campaign.kind == CampaignKind::Transactional;
    let left = SkipReason::for_customer(c.status)
        .filter(|r| !(transactional && *r == SkipReason::Unsubscribed));
    if let Some(left) = left {
        Some(left)
    } else if c.suppressed {
        Some(SkipReason::Suppressed)
    } else if !transactional && cap.is_some_and(|cap| c.recent_sends >= i64::from(cap.count)) {
        Some(SkipReason::FrequencyCap)
    } else if campaign.step(&c.step).is_none() {
        Some(SkipReason::StepRemoved)
    } else {
        None
    }
}

/// Sorts claims: those to send now; those to skip ([`skip_reason`]); and those
/// to defer to the next opening of the campaign's send window, in the
/// customer's time zone (else the campaign's).
pub(crate) fn triage(
    campaign: &Campaign,
    claimed: Vec<Claimed>,
    now: Millis,
    cap: Option<FrequencyCap>,
) -> Triage {
    let mut t = Triage {
        send: Vec::with_capacity(claimed.len()),
        ..Triage::default()
    };
    for c in claimed {
        if let Some(reason) = skip_reason(campaign, &c, cap) {
            t.skip.push((c.delivery_id, reason));
            continue;
        }
        // A transactional message goes at once, whatever the send window.
        if let Some(window) = campaign
            .send_window
            .as_ref()
            .filter(|_| campaign.kind != CampaignKind::Transactional)
        {
            let tz = c
                .timezone
                .as_deref()
                .and_then(|z| z.parse::<chrono_tz::Tz>().ok())
                .unwrap_or(campaign.timezone);
            let open = window.next_open(now, tz);
            if open > now {
                t.defer.push((c, open));
                continue;
            }
        }
        t.send.push(c);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::customer::{CustomerStatus, Email};
    use serde_json::Map;

    /// 2026-12-07 (a Monday) 08:00 UTC.
    const MONDAY_8_UTC: Millis = 1_796_630_400_000;

    fn campaign(extra: &str) -> Campaign {
        let yaml = format!(
            "name: c\nfrom: \"Shop <shop@example.com>\"\naudience:\n  all: []\n{extra}\
             steps:\n  - id: first\n    subject: Hi\n    template: newsletter\n"
        );
        match crate::campaign::parse("c.yaml", &yaml) {
            Ok(c) => c,
            Err(problems) => panic!("test campaign: {problems:?}"),
        }
    }

    fn claim(id: i64) -> Claimed {
        Claimed {
            delivery_id: id,
            entry_id: id,
            step: "first".into(),
            attempts: 1,
            message_id: String::new(),
            customer_id: id,
            email: Email::parse(&format!("c{id}@example.com")).expect("a valid address"),
            external_id: None,
            first_name: None,
            last_name: None,
            timezone: None,
            created_at: 0,
            attributes: Map::new(),
            status: CustomerStatus::Subscribed,
            suppressed: false,
            recent_sends: 0,
        }
    }

    fn cap(count: u32) -> Option<FrequencyCap> {
        Some(format!("{count}/7d").parse().expect("a valid cap"))
    }

    #[test]
    fn everyone_subscribed_and_under_the_cap_is_sent() {
        let t = triage(
            &campaign(""),
            vec![claim(1), claim(2)],
            MONDAY_8_UTC,
            cap(3),
        );
        let sent: Vec<i64> = t.send.iter().map(|c| c.delivery_id).collect();
        assert_eq!(sent, [1, 2]);
        assert!(t.skip.is_empty() && t.defer.is_empty());
    }

    #[test]
    fn the_first_rule_that_applies_names_the_skip() {
        let mut left = claim(1);
        left.status = CustomerStatus::Unsubscribed;
        left.suppressed = true; // leaving comes first
        let mut suppressed = claim(2);
        suppressed.suppressed = true;
        suppressed.recent_sends = 9;
        let mut capped = claim(3);
        capped.recent_sends = 3;
        let mut removed = claim(4);
        removed.step = "gone".into();
        let mut complained = claim(5);
        complained.status = CustomerStatus::Complained;
        let t = triage(
            &campaign(""),
            vec![left, suppressed, capped, removed, complained, claim(6)],
            MONDAY_8_UTC,
            cap(3),
        );
        assert_eq!(
            t.skip,
            [
                (1, SkipReason::Unsubscribed),
                (2, SkipReason::Suppressed),
                (3, SkipReason::FrequencyCap),
                (4, SkipReason::StepRemoved),
                (5, SkipReason::Complained),
            ]
        );
        assert_eq!(t.send.len(), 1);
    }

    #[test]
    fn no_cap_means_recent_sends_do_not_matter() {
        let mut busy = claim(1);
        busy.recent_sends = 1_000;
        let t = triage(&campaign(""), vec![busy], MONDAY_8_UTC, None);
        assert_eq!(t.send.len(), 1);
    }

    #[test]
    fn outside_the_window_waits_for_its_opening_in_the_customers_zone() {
        // 09:00–17:00 on weekdays; at 08:00 UTC it is 09:00 in Berlin (open)
        // and 03:00 in New York (opens at 09:00 there, 14:00 UTC).
        let c = campaign(
            "timezone: UTC\nsend_window:\n  days: [MON, TUE, WED, THU, FRI]\n  from: \"09:00\"\n  to: \"17:00\"\n",
        );
        let mut berlin = claim(1);
        berlin.timezone = Some("Europe/Berlin".into());
        let mut new_york = claim(2);
        new_york.timezone = Some("America/New_York".into());
        let mut unknown_zone = claim(3);
        unknown_zone.timezone = Some("Mars/Olympus".into());
        let t = triage(&c, vec![berlin, new_york, unknown_zone], MONDAY_8_UTC, None);
        let sent: Vec<i64> = t.send.iter().map(|c| c.delivery_id).collect();
        assert_eq!(sent, [1]);
        let deferred: Vec<(i64, Millis)> =
            t.defer.iter().map(|(c, at)| (c.delivery_id, *at)).collect();
        const HOUR: Millis = 3_600_000;
        // New York opens at 14:00 UTC; an unknown zone falls back to the
        // campaign's (UTC), which opens at 09:00.
        assert_eq!(
            deferred,
            [(2, MONDAY_8_UTC + 6 * HOUR), (3, MONDAY_8_UTC + HOUR)]
        );
    }

    #[test]
    fn a_skipped_customer_is_not_deferred() {
        let c = campaign(
            "timezone: UTC\nsend_window:\n  days: [SAT]\n  from: \"09:00\"\n  to: \"17:00\"\n",
        );
        let mut left = claim(1);
        left.status = CustomerStatus::Bounced;
        let t = triage(&c, vec![left, claim(2)], MONDAY_8_UTC, None);
        assert_eq!(t.skip, [(1, SkipReason::Bounced)]);
        assert_eq!(t.defer.len(), 1);
        assert!(t.send.is_empty());
    }
}
