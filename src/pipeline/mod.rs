//! Orchestration: the only module that knows store, render, message and mailer.
//!
//! A run is planned in set-based statements (`store::plan_run`), then sent by
//! [`Engine::send_run`]: claim a batch under a lease, check each customer again,
//! render and build each message, send it at the allowed rate, and record every
//! outcome — in batched transactions, but before a sender takes its next
//! message, so a crash can repeat at most the messages in flight.

pub mod send;

use lettre::message::Mailbox;

use crate::quantity::Rate;

pub use send::{Engine, EngineError, RunSummary};

/// One step of a campaign as the sender needs it.
#[derive(Debug, Clone)]
pub struct StepSpec {
    pub id: String,
    /// Key of the compiled subject template (see `Templates::add_subject`).
    pub subject_key: String,
    pub template: String,
    /// Interaction kinds the template gets as `events.KIND`, with how many.
    pub events: Vec<(String, u32)>,
}

/// A campaign as the sender needs it.
#[derive(Debug, Clone)]
pub struct CampaignSpec {
    pub name: String,
    pub from: Mailbox,
    pub reply_to: Option<Mailbox>,
    pub tracking: bool,
    pub rate: Option<Rate>,
    pub steps: Vec<StepSpec>,
}

impl CampaignSpec {
    pub fn step(&self, id: &str) -> Option<&StepSpec> {
        self.steps.iter().find(|s| s.id == id)
    }
}
