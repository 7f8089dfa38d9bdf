//! The delivery rules of a send pass, apart from the plumbing that applies
//! them:
//!
//! - what a failed send becomes ([`failure`]): a permanent reply is a bounce
//!   (the [`Reply`] decides whether it is hard), a local error fails for good,
//!   anything else is retried with backoff until `max_attempts`;
//! - when a retry comes due ([`backoff`]);
//! - when a pass stops early ([`StopRule`]): the relay refused the sender
//!   [`SENDER_REFUSALS_TO_STOP`] times in a row, or the pass's first
//!   [`FIRST_FAILURES_TO_STOP`] messages all failed for good;
//! - how many deliveries a pass claims at a time ([`claim_size`]).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

use super::super::EngineError;
use crate::clock::Millis;
use crate::mailer::{Reply, SendError};
use crate::quantity::{Rate, Span};
use crate::store::deliveries::Outcome;

/// Consecutive replies blaming the sender (5.7.x) that stop a pass.
pub(crate) const SENDER_REFUSALS_TO_STOP: u32 = 5;
/// A pass whose first this many messages all fail for good stops: something
/// wrong for every message (a template, the relay's settings, a full disk)
/// is reported once instead of failing the whole audience.
pub(crate) const FIRST_FAILURES_TO_STOP: u32 = 10;

/// How many times a delivery may be tried, and how long retries wait.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Retries {
    pub max_attempts: u32,
    pub backoff: Span,
}

/// What a failed send of `delivery_id` (its `attempts`-th try) becomes.
pub(crate) fn failure(
    e: SendError,
    delivery_id: i64,
    attempts: u32,
    retries: Retries,
    now: Millis,
) -> Outcome {
    match e {
        SendError::Permanent(reply) => Outcome::Bounced { reply },
        SendError::Local(error) => Outcome::Failed { error },
        e if attempts < retries.max_attempts => Outcome::Retry {
            at: now + backoff(retries.backoff, delivery_id, attempts),
            unknown: matches!(e, SendError::Unknown(_)),
            error: e.to_string(),
        },
        e => Outcome::Failed {
            error: format!("gave up after {attempts} attempts: {e}"),
        },
    }
}

/// `base × 2^(attempt-1)`, at most an hour, ±20 % jitter derived from the
/// delivery so retries of one burst spread out.
pub(crate) fn backoff(base: Span, delivery_id: i64, attempt: u32) -> Millis {
    let base = base.as_millis().max(1);
    let exp = base
        .saturating_mul(1i64 << attempt.saturating_sub(1).min(20))
        .min(3_600_000);
    let mut z = (delivery_id as u64) ^ (u64::from(attempt) << 32) ^ 0x9E37_79B9_7F4A_7C15;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z ^= z >> 27;
    let per_mille = (z % 401) as i64 - 200; // -200..=200 ‰ = ±20 %
    exp + exp * per_mille / 1000
}

/// Deliveries claimed at a time: enough to keep `concurrency` senders busy,
/// and no more than about a second's worth at the slowest rate that applies.
/// What a pass holds, another worker cannot take: a rate-limited run claimed
/// in large batches would be sent by one worker alone, however many share it.
pub(crate) fn claim_size(concurrency: usize, rates: [Option<Rate>; 2]) -> usize {
    let busy = (concurrency * 64).clamp(64, 1000);
    let per_second = rates
        .into_iter()
        .flatten()
        .map(|r| r.per_second().ceil() as usize)
        .min();
    match per_second {
        Some(n) => n.clamp(concurrency, busy),
        None => busy,
    }
}

/// Watches a pass's outcomes for the reasons to stop it early. Shared by the
/// pass's senders.
pub(crate) struct StopRule {
    campaign: String,
    /// Replies blaming the sender since the last message sent.
    refusals: AtomicU32,
    /// The first outcomes of the pass: how many, and the first failure while
    /// every one of them failed for good.
    opening: Mutex<(u32, Option<String>)>,
}

impl StopRule {
    pub(crate) fn new(campaign: &str) -> StopRule {
        StopRule {
            campaign: campaign.to_string(),
            refusals: AtomicU32::new(0),
            opening: Mutex::new((0, None)),
        }
    }

    /// Takes one outcome into account; returns why the pass must stop, when
    /// this outcome is the one that says so.
    pub(crate) fn observe(&self, outcome: &Outcome) -> Option<EngineError> {
        let refused = match outcome {
            Outcome::Sent { .. } => {
                self.refusals.store(0, Ordering::Relaxed);
                None
            }
            Outcome::Bounced { reply } if reply.blames_sender() => {
                let n = self.refusals.fetch_add(1, Ordering::Relaxed) + 1;
                (n >= SENDER_REFUSALS_TO_STOP).then(|| self.refused(reply, n))
            }
            _ => None,
        };
        // Both rules see every outcome; the first reason stands.
        let opening = self.opening(outcome);
        refused.or(opening)
    }

    fn refused(&self, reply: &Reply, count: u32) -> EngineError {
        EngineError::SenderRefused {
            campaign: self.campaign.clone(),
            reply: reply.to_string(),
            count,
        }
    }

    /// Counts one of the pass's first outcomes (given-back ones aside);
    /// when the first [`FIRST_FAILURES_TO_STOP`] all failed for good, says so.
    fn opening(&self, outcome: &Outcome) -> Option<EngineError> {
        let Ok(mut opening) = self.opening.lock() else {
            return None;
        };
        let (seen, first_failure) = &mut *opening;
        if *seen >= FIRST_FAILURES_TO_STOP || matches!(outcome, Outcome::Deferred { .. }) {
            return None;
        }
        *seen += 1;
        match (outcome, *seen) {
            (Outcome::Failed { error }, 1) => *first_failure = Some(error.clone()),
            (Outcome::Failed { .. }, _) => {}
            _ => *first_failure = None,
        }
        if *seen < FIRST_FAILURES_TO_STOP {
            return None;
        }
        let error = first_failure.take()?;
        Some(EngineError::EveryMessageFails {
            campaign: self.campaign.clone(),
            error,
            count: *seen,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn retries() -> Retries {
        Retries {
            max_attempts: 3,
            backoff: Span::from_secs(60),
        }
    }

    fn bounce(code: u16, text: &str) -> Outcome {
        Outcome::Bounced {
            reply: Reply::parse(code, text),
        }
    }

    #[test]
    fn a_failure_is_a_bounce_a_retry_or_a_failure_for_good() {
        let permanent = SendError::Permanent(Reply::parse(550, "5.1.1 no such user"));
        assert!(matches!(
            failure(permanent, 1, 1, retries(), 0),
            Outcome::Bounced { reply } if reply.is_hard_bounce()
        ));
        let local = SendError::Local("no SMTPUTF8".into());
        assert!(matches!(
            failure(local, 1, 1, retries(), 0),
            Outcome::Failed { .. }
        ));
        let lost = SendError::Unknown("connection reset".into());
        match failure(lost, 7, 2, retries(), 1_000) {
            Outcome::Retry { at, unknown, .. } => {
                assert!(unknown);
                assert_eq!(at, 1_000 + backoff(retries().backoff, 7, 2));
            }
            other => panic!("expected a retry, got {other:?}"),
        }
        let busy = SendError::Transient("421 try later".into());
        match failure(busy, 7, 3, retries(), 0) {
            Outcome::Failed { error } => assert!(error.starts_with("gave up after 3 attempts")),
            other => panic!("expected a failure, got {other:?}"),
        }
    }

    #[test]
    fn backoff_doubles_within_its_jitter_and_stops_at_an_hour() {
        for attempt in 1..=6u32 {
            let exact = 60_000i64 << (attempt - 1);
            let b = backoff(retries().backoff, 42, attempt);
            assert!(
                b >= exact * 8 / 10 && b <= exact * 12 / 10,
                "attempt {attempt}: {b}"
            );
        }
        assert!(backoff(retries().backoff, 42, 30) <= 3_600_000 * 12 / 10);
        // The jitter spreads one burst.
        let spread: std::collections::HashSet<_> = (0..50)
            .map(|id| backoff(retries().backoff, id, 1))
            .collect();
        assert!(spread.len() > 25);
    }

    #[test]
    fn five_refusals_in_a_row_stop_the_pass_and_a_sent_message_resets_them() {
        let rule = StopRule::new("c");
        let refusal = bounce(550, " 5.7.1 sender not authorised"); // padded, as servers may
        for _ in 0..4 {
            assert!(rule.observe(&refusal).is_none());
        }
        assert!(
            rule.observe(&Outcome::Sent {
                message_id: "m".into()
            })
            .is_none()
        );
        for _ in 0..4 {
            assert!(rule.observe(&refusal).is_none());
        }
        match rule.observe(&refusal) {
            Some(EngineError::SenderRefused { count, reply, .. }) => {
                assert_eq!(count, 5);
                assert_eq!(reply, "550 5.7.1 sender not authorised");
            }
            other => panic!("expected a stop, got {other:?}"),
        }
        // A hard bounce does not blame the sender.
        let rule = StopRule::new("c");
        for _ in 0..9 {
            assert!(rule.observe(&bounce(550, "5.1.1 no such user")).is_none());
        }
    }

    #[test]
    fn ten_failures_first_stop_the_pass_with_the_first_error() {
        let rule = StopRule::new("c");
        let failed = |n: u32| Outcome::Failed {
            error: format!("template error {n}"),
        };
        for n in 1..10 {
            assert!(rule.observe(&failed(n)).is_none());
            // Given-back messages do not count.
            assert!(rule.observe(&Outcome::Deferred { at: 0 }).is_none());
        }
        match rule.observe(&failed(10)) {
            Some(EngineError::EveryMessageFails { error, count, .. }) => {
                assert_eq!((error.as_str(), count), ("template error 1", 10));
            }
            other => panic!("expected a stop, got {other:?}"),
        }
        // One success among the first ten, and failures never stop the pass.
        let rule = StopRule::new("c");
        assert!(
            rule.observe(&Outcome::Sent {
                message_id: "m".into()
            })
            .is_none()
        );
        for n in 0..20 {
            assert!(rule.observe(&failed(n)).is_none());
        }
    }

    #[test]
    fn a_pass_claims_about_a_seconds_worth_at_its_slowest_rate() {
        let rate = |s: &str| Some(s.parse::<Rate>().expect("a rate"));
        assert_eq!(claim_size(128, [None, None]), 1000);
        assert_eq!(claim_size(4, [None, None]), 256);
        assert_eq!(claim_size(16, [rate("100/s"), rate("20/s")]), 20);
        assert_eq!(claim_size(16, [rate("1/s"), None]), 16);
    }
}
