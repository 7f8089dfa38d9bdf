//! Every route Herald serves. `GET /metrics` ([`metrics`]) so far; the
//! tracking service merges it into its router.

pub mod metrics;
