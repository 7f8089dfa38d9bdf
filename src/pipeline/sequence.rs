//! Follow-up steps: on each tick, move every due customer of a campaign to its
//! next step, in set-based statements (see [`crate::store::sequence`]).

use crate::campaign::{Campaign, Step};
use crate::store::deliveries::Trigger;
use crate::store::sequence::{Moved, Transition};

use super::{Engine, EngineError};

/// What one advance of a campaign did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Advanced {
    /// The sequence run holding the follow-ups queued now, if any.
    pub run_id: Option<i64>,
    pub moved: Moved,
    pub completed: u64,
    /// Entries ended because their last message failed, bounced or was skipped.
    pub ended: u64,
}

/// Advances `campaign` as of the engine's clock: completes entries whose last
/// step was sent, ends those whose message will never go, and for each step
/// after the first queues it for the customers whose previous step was sent
/// at least its `wait` ago (for the first step of a triggered campaign, that
/// entered at least its `wait` ago) — unless they reached the goal since entering, or
/// the step's `when:` does not hold for them (they leave the sequence, with
/// the reason). `tick` names the advance: several workers advancing with the
/// same tick queue one run between them.
pub async fn advance(
    engine: &Engine,
    campaign: &Campaign,
    tick: i64,
) -> Result<Advanced, EngineError> {
    let mut out = Advanced::default();
    let Some(last) = campaign.steps.last() else {
        return Ok(out);
    };
    let store = engine.store();
    let now = engine.now();
    // A triggered campaign whose first step waits: entries move to it from
    // the entry itself (one that does not wait was queued with the entry).
    let first = campaign
        .steps
        .first()
        .filter(|s| campaign.trigger.is_some() && s.waits());
    let moves: Vec<(Option<&Step>, &Step)> = first
        .map(|s| (None, s))
        .into_iter()
        .chain(campaign.steps.windows(2).map(|p| (Some(&p[0]), &p[1])))
        .collect();
    if !moves.is_empty() {
        let Some(run_id) = store
            .create_run(&campaign.name, Trigger::Sequence, Some(tick), now)
            .await?
        else {
            return Ok(out);
        };
        for (from, to) in moves {
            let moved = store
                .advance(
                    &Transition {
                        campaign: &campaign.name,
                        from_step: from.map(|s| s.id.as_str()),
                        to_step: &to.id,
                        cutoff: now - to.wait.map(|w| w.as_millis()).unwrap_or(0),
                        when: to.when.as_ref(),
                        goal: campaign.goal.as_ref(),
                    },
                    run_id,
                    now,
                )
                .await?;
            out.moved.goal += moved.goal;
            out.moved.exited += moved.exited;
            out.moved.queued += moved.queued;
        }
        // Each transition opened the run in the transaction that queued into it.
        if out.moved.queued > 0 {
            out.run_id = Some(run_id);
        } else {
            store.discard_empty_run(run_id).await?;
        }
    }
    let settled = store.settle_entries(&campaign.name, &last.id, now).await?;
    out.completed = settled.completed;
    out.ended = settled.exited;
    Ok(out)
}
