//! Where a campaign's customers stand in its sequence (`herald status`): per
//! step of the campaign file, the active entries whose current message is
//! queued, being sent or sent (waiting for the next step), when the next sends
//! fall due, and how finished entries ended.
//!
//! The database groups the entries ([`Store::sequence_status`]); this module
//! puts the groups in the campaign file's order and adds the steps' waits.

use std::collections::BTreeMap;

use super::ReportError;
use crate::campaign::Campaign;
use crate::clock::Millis;
use crate::status::{DeliveryStatus, EntryState};
use crate::store::Store;
use crate::store::sequence::StepState;

/// A campaign's entries by where they stand.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SequenceStatus {
    /// Every entry, active or finished.
    pub entries: i64,
    /// Active entries per step, in the campaign file's order.
    pub steps: Vec<StepStatus>,
    /// Active entries at a step the campaign file no longer has (`step` empty).
    pub unknown_step: StepStatus,
    pub completed: i64,
    pub reached_goal: i64,
    pub exited: i64,
    /// Exited entries by reason (`unknown` when none was recorded), in
    /// reason order.
    pub exits: Vec<(String, i64)>,
}

/// Active entries whose current step is one step.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StepStatus {
    pub step: String,
    /// The step's message is queued (or will not be sent and the entry is
    /// not settled yet).
    pub queued: i64,
    pub sending: i64,
    /// Sent, waiting for the next step.
    pub waiting: i64,
    /// The earliest time a queued message of this step is due.
    pub sends_due: Option<Millis>,
    /// The earliest time a waiting entry is due for the next step (its send
    /// plus the next step's `wait`); `None` for the last step.
    pub next_step_due: Option<Millis>,
}

impl StepStatus {
    fn add(&mut self, row: &StepState, next_wait: Option<Millis>) {
        match row.delivery {
            Some(DeliveryStatus::Queued) => {
                self.queued += row.entries;
                self.sends_due = earliest(self.sends_due, row.earliest_due);
            }
            Some(DeliveryStatus::Sending) => self.sending += row.entries,
            Some(DeliveryStatus::Sent) => {
                self.waiting += row.entries;
                if let Some(wait) = next_wait {
                    let due = row.earliest_sent.map(|t| t + wait);
                    self.next_step_due = earliest(self.next_step_due, due);
                }
            }
            _ => self.queued += row.entries,
        }
    }
}

/// Where `campaign`'s customers stand now.
pub async fn sequence_status(
    store: &Store,
    campaign: &Campaign,
) -> Result<SequenceStatus, ReportError> {
    let rows = store.sequence_status(&campaign.name).await?;
    Ok(aggregate(campaign, &rows))
}

/// The database's groups in the campaign file's terms.
fn aggregate(campaign: &Campaign, rows: &[StepState]) -> SequenceStatus {
    let mut out = SequenceStatus {
        steps: campaign
            .steps
            .iter()
            .map(|s| StepStatus {
                step: s.id.clone(),
                ..StepStatus::default()
            })
            .collect(),
        ..SequenceStatus::default()
    };
    let mut exits: BTreeMap<String, i64> = BTreeMap::new();
    for r in rows {
        out.entries += r.entries;
        match r.state {
            EntryState::Active => {}
            EntryState::Completed => {
                out.completed += r.entries;
                continue;
            }
            EntryState::Goal => {
                out.reached_goal += r.entries;
                continue;
            }
            EntryState::Exited => {
                out.exited += r.entries;
                let reason = r.reason.clone().unwrap_or_else(|| "unknown".into());
                *exits.entry(reason).or_default() += r.entries;
                continue;
            }
        }
        let index = r
            .step
            .as_deref()
            .and_then(|s| campaign.steps.iter().position(|x| x.id == s));
        match index {
            Some(i) => {
                // Entries at the last step wait for nothing.
                let next_wait = campaign
                    .steps
                    .get(i + 1)
                    .map(|s| s.wait.map_or(0, |w| w.as_millis()));
                out.steps[i].add(r, next_wait);
            }
            None => out.unknown_step.add(r, None),
        }
    }
    out.exits = exits.into_iter().collect();
    out
}

fn earliest(a: Option<Millis>, b: Option<Millis>) -> Option<Millis> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Millis = 86_400_000;

    fn campaign() -> Campaign {
        let yaml = "name: seq\nfrom: Shop <shop@example.com>\naudience: {all: []}\n\
                    steps:\n  - {id: offer, subject: Hi, template: t}\n  \
                    - {id: reminder, subject: Hi, template: t, wait: 3d}\n  \
                    - {id: last, subject: Hi, template: t, wait: 1d}\n";
        crate::campaign::parse("seq.yaml", yaml).unwrap()
    }

    fn row(
        state: EntryState,
        step: Option<&str>,
        delivery: Option<DeliveryStatus>,
        entries: i64,
    ) -> StepState {
        StepState {
            state,
            step: step.map(Into::into),
            delivery,
            reason: None,
            entries,
            earliest_sent: None,
            earliest_due: None,
        }
    }

    #[test]
    fn active_entries_by_step_in_file_order_and_finished_by_how() {
        let rows = [
            StepState {
                earliest_sent: Some(10 * DAY),
                ..row(
                    EntryState::Active,
                    Some("reminder"),
                    Some(DeliveryStatus::Sent),
                    4,
                )
            },
            StepState {
                earliest_sent: Some(9 * DAY),
                ..row(
                    EntryState::Active,
                    Some("reminder"),
                    Some(DeliveryStatus::Sent),
                    1,
                )
            },
            StepState {
                earliest_due: Some(12 * DAY),
                ..row(
                    EntryState::Active,
                    Some("offer"),
                    Some(DeliveryStatus::Queued),
                    2,
                )
            },
            row(
                EntryState::Active,
                Some("offer"),
                Some(DeliveryStatus::Sending),
                3,
            ),
            row(
                EntryState::Active,
                Some("offer"),
                Some(DeliveryStatus::Failed),
                1,
            ),
            StepState {
                earliest_sent: Some(DAY),
                ..row(
                    EntryState::Active,
                    Some("last"),
                    Some(DeliveryStatus::Sent),
                    6,
                )
            },
            row(
                EntryState::Active,
                Some("gone"),
                Some(DeliveryStatus::Sent),
                7,
            ),
            row(EntryState::Completed, Some("last"), None, 8),
            row(EntryState::Goal, Some("offer"), None, 9),
            StepState {
                reason: Some("when: reminder".into()),
                ..row(EntryState::Exited, Some("offer"), None, 10)
            },
            row(EntryState::Exited, Some("offer"), None, 11),
        ];
        let s = aggregate(&campaign(), &rows);
        assert_eq!(s.entries, 62);
        let steps: Vec<(&str, i64, i64, i64)> = s
            .steps
            .iter()
            .map(|x| (x.step.as_str(), x.queued, x.sending, x.waiting))
            .collect();
        assert_eq!(
            steps,
            [("offer", 3, 3, 0), ("reminder", 0, 0, 5), ("last", 0, 0, 6)]
        );
        assert_eq!(s.steps[0].sends_due, Some(12 * DAY));
        // The earliest send plus the next step's wait.
        assert_eq!(s.steps[1].next_step_due, Some(10 * DAY));
        assert_eq!(s.steps[2].next_step_due, None);
        assert_eq!(
            (s.unknown_step.waiting, s.unknown_step.next_step_due),
            (7, None)
        );
        assert_eq!((s.completed, s.reached_goal, s.exited), (8, 9, 21));
        assert_eq!(
            s.exits,
            [
                ("unknown".to_string(), 11),
                ("when: reminder".to_string(), 10)
            ]
        );
    }
}
