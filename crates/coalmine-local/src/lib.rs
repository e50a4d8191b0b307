//! coalmine's local mode: a canary rollout in front of two HTTP servers
//! that already run, in one process, without Kubernetes. The binary's
//! `coalmine run`, `coalmine demo` and `coalmine sample-app` parse their
//! flags, call in here and print the outcome.
//!
//! - [`run`]: the local controller: the proxy, the rollout loop (a
//!   `coalmine_driver::turn` per pass over its `LocalActuator`), the
//!   progress display, and the admin API and `--state` / `--report`
//!   files it keeps (private modules `admin` and `state`).
//! - [`health`]: the upstreams' health checks, which tell the loop whether
//!   the canary is ready or down and whether stable is down.
//! - [`view`]: what a run shows on a terminal or in a log.
//! - [`dashboard`]: the web dashboard's page and series, served on a
//!   run's admin address; `coalmine dashboard` serves the same page for a
//!   Canary in Kubernetes.
//! - [`demo`]: the demo's runtime: two sample apps, a Canary file naming
//!   them, a run in front of them and load through it.
//! - [`sample_app`]: the small HTTP server the demo and the tests put
//!   behind the proxy.
//! - [`load`]: the demo's open-loop load generator.
//! - [`http`]: a minimal HTTP/1.1 client (the load generator's, and the
//!   binary's control commands against a run's admin API).

#![forbid(unsafe_code)]

mod admin;
pub mod dashboard;
pub mod demo;
pub mod health;
pub mod http;
pub mod load;
pub mod run;
pub mod sample_app;
mod state;
pub mod view;
