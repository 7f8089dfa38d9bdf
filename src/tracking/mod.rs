//! What comes back from a message after it is sent, as Herald records it:
//! opens and clicks batched into interactions by one writer ([`writer`]),
//! the rule that tells a machine's open from a person's ([`machine`]), bounce
//! and complaint reports and what they change ([`webhook`]), and whose name
//! an unsubscribe stops ([`Senders`]).
//!
//! Nothing here speaks HTTP: `http` verifies tokens, parses requests and
//! answers them, and hands this module plain values.

pub mod machine;
mod senders;
pub mod webhook;
pub mod writer;

pub use senders::Senders;
pub use writer::Totals;
