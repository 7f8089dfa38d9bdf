//! Rendering without sending: `herald preview` (one customer, one step, every
//! part kept) and the template check of `herald validate` (every step for a
//! sample of customers, every error kept). Neither writes to the database.

use std::collections::BTreeMap;

use crate::campaign::Campaign;
use crate::clock::Millis;
use crate::customer::Email;
use crate::message;
use crate::segment::{self, Condition, Predicate};
use crate::store::{Store, StoreError};

use super::compose::BuildError;
use super::engine::Engine;
use super::triage::Triage;

/// One customer's message for one step, as it would be sent.
#[derive(Debug, Clone)]
pub struct Preview {
    pub step: String,
    pub email: String,
    pub subject: String,
    pub html: String,
    pub text: String,
    /// The whole message (RFC 5322), signed when DKIM is configured.
    pub eml: Vec<u8>,
    /// Why a real send would skip this customer (unsubscribed, suppressed, …).
    pub would_skip: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum PreviewError {
    #[error("campaign {campaign} has no step {step:?}; its steps are: {}", .known.join(", "))]
    NoStep {
        campaign: String,
        step: String,
        known: Vec<String>,
    },
    #[error("campaign {campaign} has no steps")]
    NoSteps { campaign: String },
    #[error("no customer with email {email:?}")]
    NoCustomer { email: String },
    #[error("the audience of {campaign} is empty now; name a customer with --customer EMAIL")]
    EmptyAudience { campaign: String },
    #[error("{email}: {source}")]
    Build {
        email: String,
        #[source]
        source: BuildError,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Renders `step` (default: the first) of `campaign` for the customer with
/// `email`, or for one random member of the audience.
pub async fn preview(
    engine: &Engine,
    campaign: &Campaign,
    step: Option<&str>,
    email: Option<&str>,
) -> Result<Preview, PreviewError> {
    let step = match step {
        Some(id) => {
            campaign
                .steps
                .iter()
                .find(|s| s.id == id)
                .ok_or_else(|| PreviewError::NoStep {
                    campaign: campaign.name.clone(),
                    step: id.to_string(),
                    known: campaign.steps.iter().map(|s| s.id.clone()).collect(),
                })?
        }
        None => campaign
            .steps
            .first()
            .ok_or_else(|| PreviewError::NoSteps {
                campaign: campaign.name.clone(),
            })?,
    };
    let store = engine.store();
    let customer_id = match email {
        Some(raw) => {
            let no_customer = || PreviewError::NoCustomer {
                email: raw.to_string(),
            };
            // Stored addresses are normalised; look up the same form.
            let normalised = Email::parse(raw).map_err(|_| no_customer())?;
            store
                .customer_by_email(normalised.as_str())
                .await?
                .ok_or_else(no_customer)?
                .id
        }
        None => {
            let audience = campaign.audience_sql(store.backend(), engine.now());
            store
                .audience_sample(&audience, 1)
                .await?
                .first()
                .map(|m| m.id)
                .ok_or_else(|| PreviewError::EmptyAudience {
                    campaign: campaign.name.clone(),
                })?
        }
    };
    let cap_since = engine.cap_since(engine.now());
    let claims = store
        .customers_as_claims(&[customer_id], &step.id, cap_since)
        .await?;
    let Triage { send, skip, .. } = engine.triage(campaign, claims.clone());
    let sendable = send;
    let would_skip = skip
        .into_iter()
        .next()
        .map(|(_, reason)| reason.to_string());
    let Some(claim) = sendable
        .into_iter()
        .next()
        .or_else(|| claims.into_iter().next())
    else {
        return Err(PreviewError::NoCustomer {
            email: email.unwrap_or_default().to_string(),
        });
    };
    let events = engine
        .events(campaign, std::slice::from_ref(&claim))
        .await?;
    let unique = crate::store::random_hex::<16>("drawing a preview's Message-ID")?;
    let message_id = message::message_id(&unique, &campaign.name, &campaign.from);
    let composed = engine
        .compose(campaign, &claim, &message_id, &events)
        .map_err(|source| PreviewError::Build {
            email: claim.email.to_string(),
            source,
        })?;
    Ok(Preview {
        step: step.id.clone(),
        email: claim.email.to_string(),
        subject: composed.rendered.subject,
        html: composed.rendered.html,
        text: composed.rendered.text,
        eml: composed.bytes,
        would_skip,
    })
}

/// One distinct template error and the customers who hit it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateFailure {
    pub step: String,
    pub template: String,
    /// The error: for a render error `FILE:LINE:COLUMN: message` naming the variable.
    pub error: String,
    /// The first customer who hit it, and how many did.
    pub email: String,
    pub customers: u64,
}

/// What rendering every step for a sample of customers found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TemplateCheck {
    /// Messages rendered and built without error.
    pub rendered: u64,
    pub failures: Vec<TemplateFailure>,
}

/// Customers rendered per batch in a template check.
const CHECK_BATCH: usize = 500;

/// Renders and builds every step of `campaign` for each of `customer_ids`
/// (whatever their status: a template must work for anyone it may reach).
pub async fn check_templates(
    engine: &Engine,
    campaign: &Campaign,
    customer_ids: &[i64],
) -> Result<TemplateCheck, StoreError> {
    let mut check = TemplateCheck::default();
    // (step, error) → index in failures: one line per distinct error.
    let mut seen: BTreeMap<(String, String), usize> = BTreeMap::new();
    for step in &campaign.steps {
        for chunk in customer_ids.chunks(CHECK_BATCH) {
            let claims = engine
                .store()
                .customers_as_claims(chunk, &step.id, None)
                .await?;
            let events = engine.events(campaign, &claims).await?;
            for c in &claims {
                let error = match engine.compose(campaign, c, "check@localhost", &events) {
                    Ok(_) => {
                        check.rendered += 1;
                        continue;
                    }
                    Err(BuildError::Render(e)) => e.to_string(),
                    Err(e) => e.to_string(),
                };
                match seen.get(&(step.id.clone(), error.clone())) {
                    Some(&i) => check.failures[i].customers += 1,
                    None => {
                        seen.insert((step.id.clone(), error.clone()), check.failures.len());
                        check.failures.push(TemplateFailure {
                            step: step.id.clone(),
                            template: step.template.clone(),
                            error,
                            email: c.email.to_string(),
                            customers: 1,
                        });
                    }
                }
            }
        }
    }
    Ok(check)
}

/// Whom a template check renders for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SampleOf {
    Audience,
    /// The audience is empty now: any customers instead.
    AllCustomers,
}

/// Up to `limit` random customers to check `campaign`'s templates with: members
/// of its audience at `now`, or any customers when the audience is empty.
pub async fn check_sample(
    store: &Store,
    campaign: &Campaign,
    now: Millis,
    limit: usize,
) -> Result<(Vec<i64>, SampleOf), StoreError> {
    let audience = campaign.audience_sql(store.backend(), now);
    let members = store.audience_sample(&audience, limit).await?;
    if !members.is_empty() {
        return Ok((
            members.into_iter().map(|m| m.id).collect(),
            SampleOf::Audience,
        ));
    }
    let everyone = segment::compile(
        Predicate::Audience(&Condition::All(Vec::new())),
        &segment::Context::new(store.backend(), now, &campaign.name),
    );
    let any = store.audience_sample(&everyone, limit).await?;
    Ok((
        any.into_iter().map(|m| m.id).collect(),
        SampleOf::AllCustomers,
    ))
}
