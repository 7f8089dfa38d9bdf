//! Composing one customer's message: render the step's templates with the
//! customer's context, track (or neutralise) links, build the MIME message
//! with its headers, and sign it with DKIM. No I/O: what it needs from the
//! database (the claim, recent events) is handed in.
//!
//! A panic in a library while composing is that message's failure, never the
//! run's: it comes back as [`BuildError::Panic`].

use std::borrow::Cow;
use std::collections::HashMap;

use lettre::message::Mailbox;
use serde_json::{Map, Value};

use super::subject_key;
use crate::campaign::Campaign;
use crate::clock::Millis;
use crate::config::Settings;
use crate::message::{self, Dkim, Envelope};
use crate::render::links::{self, Tracking};
use crate::render::{self, RenderError, Templates};
use crate::store::deliveries::Claimed;
use crate::token::Signer;

pub use crate::render::Rendered;

/// What a batch's templates see besides the customer.
#[derive(Debug, Clone, Default)]
pub struct Events {
    /// `events.KIND`: (customer, kind) → the template's event values.
    pub by_kind: HashMap<(i64, String), Vec<Value>>,
    /// Per entry, the keys its own context adds: `trigger` (the interaction
    /// that entered it into a triggered campaign), `data` (what a
    /// transactional send handed in).
    pub entries: HashMap<i64, Map<String, Value>>,
    /// The same for a preview (no entry), per customer: examples.
    pub previews: HashMap<i64, Map<String, Value>>,
}

impl Events {
    /// The keys a claim's context adds.
    fn extra(&self, c: &Claimed) -> Option<&Map<String, Value>> {
        if c.entry_id == 0 {
            self.previews.get(&c.customer_id)
        } else {
            self.entries.get(&c.entry_id)
        }
    }
}

/// Why one customer's message could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("step {step} is no longer in the campaign")]
    StepRemoved { step: String },
    #[error("template: {0}")]
    Render(#[from] RenderError),
    #[error("invalid recipient {email:?}: {message}")]
    Recipient { email: String, message: String },
    #[error("{0}")]
    Message(String),
    #[error("internal error while building the message: {0}")]
    Panic(String),
}

/// One message as it goes on the wire.
pub struct Composed {
    /// The parts as sent (links tracked).
    pub rendered: Rendered,
    /// The formatted message, DKIM-signed when configured.
    pub bytes: Vec<u8>,
    /// The recipient's address, parsed once for the header and the envelope.
    pub to: lettre::Address,
}

/// What composing needs, fixed for the life of the process.
pub(crate) struct Composer {
    templates: Templates,
    signer: Signer,
    dkim: Option<Dkim>,
    public_url: String,
    postal_address: Option<String>,
    /// The `mailto:` of List-Unsubscribe, when an address is configured.
    unsubscribe_mailto: Option<String>,
    feedback_tag: String,
}

impl Composer {
    pub(crate) fn new(
        templates: Templates,
        signer: Signer,
        dkim: Option<Dkim>,
        settings: &Settings,
    ) -> Composer {
        Composer {
            templates,
            signer,
            dkim,
            public_url: settings.public_url.clone(),
            postal_address: settings.postal_address.clone(),
            unsubscribe_mailto: settings
                .unsubscribe_mailto
                .as_ref()
                .map(|a| format!("mailto:{a}?subject=unsubscribe")),
            feedback_tag: settings.feedback_tag.clone(),
        }
    }

    /// Renders one customer's message and builds it, for a relay that takes
    /// 8-bit bodies or not.
    pub(crate) fn compose(
        &self,
        campaign: &Campaign,
        c: &Claimed,
        message_id: &str,
        events: &Events,
        now: Millis,
        eight_bit: bool,
    ) -> Result<Composed, BuildError> {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.compose_unguarded(campaign, c, message_id, events, now, eight_bit)
        }))
        .unwrap_or_else(|panic| Err(BuildError::Panic(panic_text(&*panic))))
    }

    fn compose_unguarded(
        &self,
        campaign: &Campaign,
        c: &Claimed,
        message_id: &str,
        events: &Events,
        now: Millis,
        eight_bit: bool,
    ) -> Result<Composed, BuildError> {
        let step = campaign
            .step(&c.step)
            .ok_or_else(|| BuildError::StepRemoved {
                step: c.step.clone(),
            })?;
        let to: lettre::Address =
            c.email
                .as_str()
                .parse()
                .map_err(|e: lettre::address::AddressError| BuildError::Recipient {
                    email: c.email.to_string(),
                    message: e.to_string(),
                })?;
        let tracking = Tracking {
            signer: &self.signer,
            base_url: &self.public_url,
            delivery_id: c.delivery_id as u64,
            customer_id: c.customer_id as u64,
        };
        let unsubscribe = tracking.unsubscribe_url();
        let customer = render::customer_context(
            c.customer_id,
            c.email.as_str(),
            c.external_id.as_deref(),
            c.first_name.as_deref(),
            c.last_name.as_deref(),
            c.timezone.as_deref(),
            c.created_at,
            &c.attributes,
        );
        let mut kinds = Map::new();
        for (kind, _) in &step.events {
            let list = events
                .by_kind
                .get(&(c.customer_id, kind.clone()))
                .cloned()
                .unwrap_or_default();
            kinds.insert(kind.clone(), Value::Array(list));
        }
        let mut context = render::message_context(
            customer,
            &campaign.name,
            &step.id,
            kinds,
            &unsubscribe,
            self.postal_address.as_deref(),
            now,
        );
        if let (Some(extra), Value::Object(m)) = (events.extra(c), &mut context) {
            m.extend(extra.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        let mut rendered = self.templates.render(
            &step.template,
            &subject_key(&campaign.name, &step.id),
            context,
        )?;
        if campaign.tracking {
            rendered.html = tracking.apply(&rendered.html, &unsubscribe);
        } else if let Cow::Owned(safe) = links::neutralise_script_links(&rendered.html) {
            rendered.html = safe;
        }
        let name = message::display_name(c.first_name.as_deref(), c.last_name.as_deref());
        let list_id = message::list_id(
            &campaign.name,
            campaign.description.as_deref(),
            &campaign.from,
        );
        let feedback_id =
            message::feedback_id(&campaign.name, &step.id, &self.feedback_tag, &campaign.from);
        let env = Envelope {
            eight_bit,
            list_id: &list_id,
            feedback_id: &feedback_id,
            from: &campaign.from,
            reply_to: campaign.reply_to.as_ref(),
            to: Mailbox::new(name, to.clone()),
            message_id: message_id.to_string(),
            unsubscribe_url: &unsubscribe,
            unsubscribe_mailto: self.unsubscribe_mailto.as_deref(),
        };
        let msg = message::build(&rendered, &env)
            .map_err(|e| BuildError::Message(e.to_string()))?
            .formatted();
        let bytes = match &self.dkim {
            Some(dkim) => dkim
                .sign(&msg)
                .map_err(|e| BuildError::Message(e.to_string()))?,
            None => msg,
        };
        Ok(Composed {
            rendered,
            bytes,
            to,
        })
    }
}

/// What a caught panic said.
pub(crate) fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_string())
}
