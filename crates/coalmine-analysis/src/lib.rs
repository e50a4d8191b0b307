//! coalmine's judge: decides, with anytime-valid guarantees, when a canary
//! is worse than stable. Pure code: it is fed numbers and never fetches them.
//!
//! Layout (issue 4 builds the rest):
//! - [`eprocess`]: the e-process for the canary/stable rate ratio of a count
//!   metric (errors, slow requests), from `shared/brief/analysis.md`, with
//!   its anytime-valid confidence interval for the ratio;
//! - [`judge`]: per-metric and overall verdicts (Running, Pass, Fail,
//!   Inconclusive comes from the gate's timeout, NoData) for the rollout.

#![forbid(unsafe_code)]

pub mod dispersion;
pub mod eprocess;
pub mod judge;
pub mod latency;
pub mod simulate;
