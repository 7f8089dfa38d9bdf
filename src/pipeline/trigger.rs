//! Event-triggered campaigns: what the store needs to enter customers into
//! them as their interactions arrive ([`crate::store::triggers`]).

use crate::campaign::{Campaign, CampaignKind};
use crate::store::triggers::TriggerRule;

/// The rules of the campaigns that have a `trigger:`: the API's writer and
/// `herald import` enter customers by them.
pub fn trigger_rules(campaigns: &[Campaign]) -> Vec<TriggerRule> {
    campaigns
        .iter()
        .filter_map(|c| {
            let trigger = c.trigger.as_ref()?;
            let first = c.steps.first()?;
            Some(TriggerRule {
                campaign: c.name.clone(),
                event: trigger.event.clone(),
                filter: trigger.filter.clone(),
                audience: c.audience.clone(),
                reentry: super::reentry(c.reentry),
                transactional: c.kind == CampaignKind::Transactional,
                // A first step that waits is queued by the worker's advance
                // when its time comes. (A first step has no `when:`.)
                first_step: (!first.waits()).then(|| first.id.clone()),
            })
        })
        .collect()
}
