//! coalmine's judge: decides, with anytime-valid guarantees, when a canary
//! is worse than stable. Pure code: it is fed numbers and never fetches them.
//!
//! Layout (issue 4 builds the rest):
//! - [`eprocess`]: the e-process for the canary/stable rate ratio of a count
//!   metric (errors, slow requests), from `shared/brief/analysis.md`, with
//!   its anytime-valid confidence interval for the ratio.

#![forbid(unsafe_code)]

pub mod eprocess;
