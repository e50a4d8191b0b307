//! coalmine's decision logic: the `Canary` resource, its validation, and the
//! rollout state machine. No I/O happens here.
//!
//! How the crate is laid out, in the order data flows through it:
//!
//! - [`spec`]: the resource as users write it (serde types, `JsonSchema`
//!   for the CRD), with [`status`] for what coalmine writes back;
//! - [`load`]: YAML/JSON text → [`Canary`], every structural problem at once;
//! - [`validate`]: [`Canary`] → [`Plan`], every semantic problem at once,
//!   each with a field path and a hint ([`problem`]);
//! - [`rollout`]: the state machine. Given the plan, the status, what was
//!   observed and the time, it returns the next status and the actions to
//!   carry out. The Kubernetes controller and `coalmine run` both drive it;
//! - [`routes`]: the route table the data plane applies;
//! - [`counters`]: the proxy's counter schema (class labels, series names,
//!   per-version snapshots), shared by the proxy and the `builtin` provider;
//! - [`capability`]: what each router can do, the one table validation,
//!   the CRD's rules and the controller read;
//! - [`crd`]: the CustomResourceDefinition, generated from [`spec`] and
//!   [`status`] (`coalmine crd`), with its names for the controller;
//! - [`duration`], [`time`], [`revision`], [`percent`]: small value types;
//! - [`human`]: figures rounded for messages people read.
//!
//! Time is always passed in (see [`Time`]), so every decision can be
//! replayed and tested without sleeping.

#![forbid(unsafe_code)]

pub mod capability;
pub mod counters;
pub mod crd;
pub mod duration;
pub mod human;
pub mod load;
pub mod percent;
pub mod plan;
pub mod problem;
pub mod revision;
pub mod rollout;
pub mod routes;
pub mod spec;
pub mod status;
pub mod time;
pub mod validate;

pub use duration::Duration;
pub use percent::Percent;
pub use plan::Plan;
pub use problem::{Problem, Severity};
pub use spec::Canary;
pub use status::CanaryStatus;
pub use time::Time;
