//! Herald's own outbound HTTP: where it may send requests (webhook steps,
//! event forwarding) and how it signs them.
//!
//! - [`allow`]: the allow-list. A campaign file names a URL; only hosts the
//!   operator listed are reached, and an address in a private, loopback or
//!   link-local range only when that range itself is listed — so a campaign
//!   cannot be used to reach the machine's own services or a cloud metadata
//!   endpoint, whatever its host name resolves to.
//! - [`sign`]: Standard Webhooks signatures (`webhook-id`, `webhook-timestamp`,
//!   `webhook-signature`), through the specification's own Rust library.
//!
//! Pure of HTTP clients and of the store: the sender that uses these pins the
//! connection to the addresses [`allow::AllowList::resolve`] returned.

pub mod allow;
pub mod sign;
