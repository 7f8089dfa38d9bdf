//! Data in, as it happens: Segment's HTTP Tracking API (`identify`, `track`,
//! `page`, `screen`, `group`, `alias`, `batch`), read by [`spec`], resolved
//! to customers and visitors by [`resolve`], and stored in group commits by
//! [`writer`].
//!
//! A call flows: HTTP body → [`spec::read`] (one [`spec::Event`] or a
//! [`spec::Refusal`] naming the field) → [`writer::Ingest::submit`] → a
//! writer task groups the calls of many requests, locks and loads what they
//! name, resolves them in order ([`resolve::resolve`]), writes customers
//! through [`crate::store::Store::write_customers`] (the import's own write,
//! with its erasure check) and the rest in one transaction, and only then
//! answers each request. An answered call is stored.
//!
//! Retrying a call or a batch adds nothing: events carry their `messageId`
//! as the interaction's external id, and identify merges to the same result.
//!
//! Transactional send calls (`POST /v1/send`) take the same road in
//! [`sends`]: checked by the route, accepted in group commits.

pub mod resolve;
pub mod sends;
pub mod spec;
pub mod writer;

/// Largest body of one call (`/v1/track`, `/v1/identify`, …), and of one
/// item of a batch: Segment's own limit of 32 KB per call.
pub const EVENT_LIMIT: usize = 32 * 1024;
/// Largest body of `/v1/batch`: Segment's own limit of 500 KB per batch.
pub const BATCH_LIMIT: usize = 500 * 1024;
