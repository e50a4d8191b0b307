//! coalmine's Kubernetes controller: watches `Canary` objects
//! (`coalmine.dev/v1alpha1`) and drives each through the shared rollout
//! state machine, `coalmine_core::rollout::decide`.
//!
//! How the crate is laid out, in the order a reconcile uses it:
//!
//! - [`resource`]: the `Canary` kube resource (spec kept as raw JSON so an
//!   invalid one still reaches the reconciler), its checks, and the labels,
//!   annotations and finalizer the controller uses;
//! - [`reconcile`]: one reconcile — fresh read, finalizer, validation,
//!   observation, decision, status write (conflicts retried from a fresh
//!   read), actions, events;
//! - [`apply`]: a decision's actions as cluster operations (pure), then
//!   carried out;
//! - [`workload`]: the stable and canary Deployments and Services;
//! - [`cache`]: the watch caches of what coalmine manages, which the
//!   reconciles read instead of the API server;
//! - [`router`]: the [`router::TrafficRouter`] trait and the `replicas`,
//!   `gatewayAPI`, `nginx`, `istio` and `proxy` routers;
//! - [`analysis`]: each rollout's judge, fed by the providers;
//! - [`leader`]: leader election over a Lease, and the deadline
//!   ([`leader::Leadership`]) every write checks;
//! - [`ops`]: `/metrics`, `/healthz`, `/readyz`; [`logs`]: JSON logs;
//! - [`run`] ties them together. `docs/controller.md` is the design.

#![forbid(unsafe_code)]

pub mod analysis;
pub mod apply;
pub mod cache;
pub mod leader;
pub mod logs;
pub mod notify;
pub mod ops;
pub mod reconcile;
pub mod resource;
pub mod router;
pub mod workload;

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Client;
use kube::api::{Api, DynamicObject};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::{Controller, WatchStreamExt, reflector, watcher};
use tokio_util::sync::CancellationToken;

pub use crate::resource::CanaryResource;

/// How many times a write that meets a 409 is retried from a fresh read.
pub const CONFLICT_RETRIES: usize = 5;

/// Why a reconcile failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API server refused or could not be reached.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// An object could not be encoded or decoded.
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// Something the spec names does not exist.
    #[error("{field}: {what}")]
    Missing {
        /// The spec field naming it.
        field: &'static str,
        /// What is missing.
        what: String,
    },
    /// Writes kept conflicting with other writers.
    #[error("{0}: still conflicting after {CONFLICT_RETRIES} fresh reads")]
    Conflict(String),
    /// The analysis could not be set up.
    #[error("{0}")]
    Analysis(String),
    /// This replica's Lease is lost or past its renew deadline: it must
    /// not write (another replica may be acting).
    #[error("not the leader any more (Lease lost or past its renew deadline); not writing")]
    NotLeader,
}

impl Error {
    /// A short label for the errors metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Json(_) => "json",
            Error::Missing { .. } => "missing",
            Error::Conflict(_) => "conflict",
            Error::Analysis(_) => "analysis",
            Error::NotLeader => "leadership",
        }
    }
}

/// What every reconcile shares.
pub struct Context {
    /// The API client.
    pub client: Client,
    /// Publishes Events on Canaries.
    pub recorder: Recorder,
    /// The judges of the rollouts under way.
    pub analyses: analysis::Analyses,
    /// The metrics.
    pub metrics: Arc<ops::Metrics>,
    /// Until when this replica may act (the leader, or no election); every
    /// write checks it.
    pub leadership: Arc<leader::Leadership>,
    /// The webhooks of `spec.notifications`, per Canary.
    pub notifiers: notify::Notifiers,
    /// The watch caches of the Deployments, Services and EndpointSlices
    /// coalmine manages.
    pub caches: cache::Caches,
    /// The image of the proxy router's Deployments (`--proxy-image`).
    pub proxy_image: String,
}

impl Context {
    /// Whether this replica may act now.
    pub fn is_leader(&self) -> bool {
        self.leadership.is_valid()
    }
}

/// How the controller runs.
#[derive(Debug, Clone)]
pub struct Config {
    /// Watch only this namespace; all namespaces when `None`.
    pub namespace: Option<String>,
    /// Leader election; `None` acts at once (a single replica).
    pub election: Option<leader::Election>,
    /// The name Events are reported under.
    pub reporter: String,
    /// How many Canaries are reconciled at once (each reconcile is a few
    /// API calls; a bound keeps a burst of changes from opening a
    /// connection per Canary and from the API server's 429s).
    pub concurrency: u16,
    /// The image the proxy router's Deployments run.
    pub proxy_image: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            namespace: None,
            election: None,
            reporter: resource::MANAGER.to_owned(),
            concurrency: DEFAULT_CONCURRENCY,
            proxy_image: router::proxy::default_image(),
        }
    }
}

/// Runs the controller until `shutdown` completes.
pub async fn run(
    client: Client,
    config: Config,
    metrics: Arc<ops::Metrics>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let leadership = Arc::new(if config.election.is_none() {
        leader::Leadership::always()
    } else {
        leader::Leadership::follower()
    });
    metrics.set_leader(config.election.is_none());
    // `down`: the caller's shutdown came, the reconcilers wind down;
    // `stop`: they are done, leader election releases the Lease.
    let down = CancellationToken::new();
    let stop = CancellationToken::new();
    // `stop` is cancelled however this ends, also when the task running it
    // is aborted: a dead controller's election must not keep renewing.
    let _stop_when_dropped = stop.clone().drop_guard();
    let election = config.election.clone().map(|e| {
        tracing::info!(identity = %e.identity, lease = %e.name, "leader election started");
        tokio::spawn(e.run(
            client.clone(),
            leadership.clone(),
            metrics.clone(),
            stop.clone().cancelled_owned(),
        ))
    });
    let instance = config.election.as_ref().map(|e| e.identity.clone());
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: config.reporter.clone(),
            instance,
        },
    );
    let (caches, writers) = cache::Caches::new();
    let ctx = Arc::new(Context {
        client: client.clone(),
        recorder,
        analyses: analysis::Analyses::default(),
        metrics: metrics.clone(),
        leadership,
        notifiers: notify::Notifiers::new(client.clone()),
        caches,
        proxy_image: config.proxy_image.clone(),
    });
    let ar = cache::deployment_resource();
    let (canaries, deployments, services, slices): (
        Api<CanaryResource>,
        Api<DynamicObject>,
        Api<Service>,
        Api<EndpointSlice>,
    ) = match &config.namespace {
        Some(ns) => (
            Api::namespaced(client.clone(), ns),
            Api::namespaced_with(client.clone(), ns, &ar),
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client.clone(), ns),
        ),
        None => (
            Api::all(client.clone()),
            Api::all_with(client.clone(), &ar),
            Api::all(client.clone()),
            Api::all(client.clone()),
        ),
    };
    let wc = watcher::Config::default();
    // What coalmine manages, cached for the reconciles (`cache`), each
    // change a trigger: a Deployment's or Service's for the Canary that
    // owns it, an EndpointSlice's for the Canary that owns its Service.
    let owned = watcher::Config::default().labels(&cache::selector());
    let deployment_changes = watcher(deployments, owned.clone())
        .modify(cache::trim_deployment)
        .reflect(writers.deployments)
        .touched_objects();
    let service_changes = watcher(services, owned.clone())
        .modify(|s| cache::trim_meta(&mut s.metadata))
        .reflect(writers.services)
        .touched_objects();
    let slice_changes = watcher(slices, owned)
        .modify(|s| cache::trim_meta(&mut s.metadata))
        .reflect(writers.slices)
        .touched_objects();
    let slice_owner = {
        let ctx = ctx.clone();
        move |slice: EndpointSlice| {
            let namespace = slice.metadata.namespace.clone().unwrap_or_default();
            let service = slice
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(cache::SERVICE_NAME_LABEL))
                .cloned()
                .unwrap_or_default();
            ctx.caches
                .owner_of_service(&namespace, &service)
                .map(|canary| reflector::ObjectRef::new(&canary).within(&namespace))
        }
    };
    // Every reconcile reads its Canary afresh, so the watch's cache only
    // has to name the objects it triggers for: it keeps metadata without
    // managedFields or the last-applied annotation, not spec or status
    // (as JSON trees, those took most of the controller's memory).
    let (reader, writer) = reflector::store();
    let trigger = watcher(canaries.clone(), wc)
        .modify(resource::trim_for_cache)
        .reflect(writer)
        .applied_objects();
    let controller = Controller::for_stream(trigger, reader)
        .with_config(kube::runtime::controller::Config::default().concurrency(config.concurrency))
        .owns_stream_with(deployment_changes, ar)
        .owns_stream(service_changes)
        .watches_stream(slice_changes, slice_owner);
    // Ready once Canaries can be listed: a missing CRD or a missing
    // permission keeps the controller unready, which `/readyz` shows.
    let ready = tokio::spawn({
        let metrics = metrics.clone();
        let api = canaries.clone();
        async move {
            let lp = kube::api::ListParams::default().limit(1);
            while api.list(&lp).await.is_err() {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            metrics.set_ready(true);
        }
    });
    tokio::spawn({
        let down = down.clone();
        async move {
            shutdown.await;
            down.cancel();
        }
    });
    let running = controller
        .graceful_shutdown_on(down.clone().cancelled_owned())
        .run(reconcile::reconcile, reconcile::error_policy, ctx)
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "controller stream");
            }
        });
    // kube-runtime's graceful shutdown waits for the Canary watch to be
    // ready before it lets the reconcilers go, so a controller whose watch
    // never lists (no CRD, no permission) would never stop: it is dropped
    // at once instead; a ready one gets `SHUTDOWN_GRACE` to finish.
    let deadline = {
        let metrics = metrics.clone();
        let down = down.clone();
        async move {
            down.cancelled().await;
            if metrics.is_ready() {
                tokio::time::sleep(SHUTDOWN_GRACE).await;
            }
        }
    };
    tokio::select! {
        () = running => {}
        () = deadline => tracing::warn!("stopping without waiting for the reconciles"),
    }
    ready.abort();
    metrics.set_ready(false);
    stop.cancel();
    if let Some(task) = election {
        let _ = task.await;
    }
}

/// Canaries reconciled at once by default (Argo Rollouts' default
/// `--rollout-threads` is 10 too).
pub const DEFAULT_CONCURRENCY: u16 = 10;

/// How long a stopping controller waits for running reconciles.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);
