//! coalmine's judge: decides, with anytime-valid guarantees, when a canary
//! is worse than stable. Pure code: it is fed numbers and never fetches them.
//!
//! Layout:
//! - [`eprocess`]: the e-process for the canary/stable rate ratio of a count
//!   metric (errors, slow requests), with its anytime-valid confidence
//!   interval and PASS test;
//! - [`dispersion`]: the guard that tempers the evidence when bad events
//!   come in clumps;
//! - [`latency`]: the sequential distribution-shift check on histograms;
//! - [`judge`]: per-metric and overall verdicts (Running, Pass, Fail,
//!   NoData; Inconclusive comes from the gate's timeout) for the rollout;
//! - [`simulate`]: seeded traffic and the peers' rules, for
//!   `coalmine simulate`.

#![forbid(unsafe_code)]

pub mod dispersion;
pub mod eprocess;
pub mod judge;
pub mod latency;
#[cfg(feature = "simulate")]
pub mod simulate;
