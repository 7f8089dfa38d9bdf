//! Herald: marketing-campaign automation.
//!
//! Data flows one way: campaign files → segment → plan (deliveries) → render →
//! send → interactions. See `docs/architecture.md` for the module map.

pub mod api_key;
pub mod campaign;
pub mod clock;
pub mod config;
pub mod customer;
pub mod dialect;
pub mod http;
pub mod import;
pub mod ingest;
pub mod json;
pub mod mailer;
pub mod message;
pub mod metrics;
pub mod outbound;
pub mod pipeline;
pub mod profile;
pub mod quantity;
pub mod render;
pub mod report;
pub mod seed;
pub mod segment;
pub mod status;
pub mod store;
pub mod token;
pub mod tracking;
