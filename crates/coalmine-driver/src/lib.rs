//! coalmine's rollout driver, shared by the local runner (`coalmine run`)
//! and the Kubernetes controller:
//!
//! - [`session`]: the judging session, one rollout's judge fed by its
//!   metric sources once per interval, with one schedule (missed intervals
//!   are skipped) and one rule for when a new judge is due;
//! - [`turn`]: one pass of the loop (observe → decide → persist → act)
//!   over an [`Actuator`], the platform that stores the status and carries
//!   out the actions.
//!
//! Time is passed in, so both are tested without sleeping.

#![forbid(unsafe_code)]

pub mod session;
pub mod turn;

pub use session::{Judged, Session, Source};
pub use turn::{Actuator, Turn, Turned, turn};

#[cfg(test)]
mod tests;
