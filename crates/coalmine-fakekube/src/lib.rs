//! A fake Kubernetes API server for coalmine's tests. The crate's
//! `README.md` has the same list of what is faithful and what is not, in
//! more detail.
//!
//! [`FakeApiServer::start`] serves plain HTTP on loopback what kube-rs and
//! `kubectl` 1.32 need of an API server: discovery, the REST verbs on
//! built-in and custom resources, watches, patches, subresources, tables,
//! and a stand-in for the Deployment controller. Write a kubeconfig with
//! [`FakeApiServer::write_kubeconfig`] and point a client at it.
//!
//! # Faithful
//!
//! - One global, monotonically increasing `resourceVersion`; `uid`,
//!   `creationTimestamp`, `generation` bumped on changes outside
//!   `metadata` (and outside `status` where there is a status subresource).
//! - create (201, 409 AlreadyExists, `generateName`, 404 in a missing
//!   namespace, 403 in a terminating one), get, list (label selectors `=`,
//!   `==`, `!=`, `in`, `notin`, exists, `!`; field selectors on any dotted
//!   path; `limit`/`continue`), update (409 Conflict on a stale
//!   `resourceVersion`, unconditional when it is empty, 404 or create for
//!   leases, events and endpoints), delete (with preconditions), and
//!   deletecollection. `dryRun=All` everywhere.
//! - Status subresource: `/status` writes change only `status`; writes to
//!   the main resource keep the old `status`; create drops `status`.
//!   Scale subresource for Deployments, ReplicaSets and CRDs declaring it.
//! - Finalizers: delete sets `deletionTimestamp` and keeps the object until
//!   its finalizers are gone (then one DELETED event); no new finalizers
//!   while deleting (422). Background garbage collection of objects whose
//!   `ownerReferences` name a removed uid. Deleting a namespace deletes its
//!   content and the namespace goes when it is empty; deleting a CRD
//!   deletes its instances and unregisters it.
//! - Watches: `resourceVersion` (events after it; an ERROR event with a 410
//!   Expired `Status` when it is older than the kept history), unset or
//!   `"0"` (synthetic ADDED for what exists), `sendInitialEvents=true`
//!   (with the `k8s.io/initial-events-end` bookmark), periodic BOOKMARKs
//!   when `allowWatchBookmarks=true`, `timeoutSeconds`, selector semantics
//!   (an object leaving the selection is DELETED for that watch).
//! - Errors are `Status` objects with reason and code (400, 403, 404, 405,
//!   409, 410, 413, 415, 422).
//! - CRDs register their plural, kind, short names, categories, scope,
//!   served versions, status and scale subresources and printer columns,
//!   and are marked `NamesAccepted` and `Established` at once.
//! - `events.k8s.io/v1` Events are core Events seen through a second
//!   version (fields renamed as the real conversion does), so recorder
//!   events show in `kubectl get events`.
//! - Tables (`Accept: application/json;as=Table;v=v1;g=meta.k8s.io`) with
//!   the columns of `kubectl get` for namespaces, services, configmaps,
//!   secrets, deployments, replicasets, pods, leases, ingresses, events,
//!   CRDs, Gateway API routes, and printer columns of custom resources.
//! - Defaults the controller sees: Deployment `replicas`, `strategy`,
//!   `revisionHistoryLimit`, `progressDeadlineSeconds` and pod template
//!   defaults; Service `type`, `clusterIP` (allocated from 10.96.0.0/16),
//!   `sessionAffinity`, port `protocol` and `targetPort`.
//! - Validation of names, labels, Deployment selectors and templates,
//!   Service ports and immutable fields.
//!
//! # Approximated
//!
//! - Strategic merge patch merges the lists of built-in types by their
//!   merge keys (containers, env, volumes, ports, conditions, …) by field
//!   name, not by schema; custom resources take it as a merge patch (a real
//!   server answers 415 — see [`Options::strict_strategic_merge`]).
//! - Server-side apply merges the applied configuration (strategic-merge
//!   style for built-ins, lists replaced for custom resources), removes the
//!   fields the same manager applied before and no longer does, and reports
//!   conflicts only between appliers (not with fields set by updates).
//!   `managedFields` are not kept.
//! - No OpenAPI schema validation, pruning or defaulting of custom
//!   resources; no conversion between versions (objects are stored once and
//!   read through any served version); no admission, RBAC or auth.
//! - No ReplicaSets or Pods are made: the Deployment stand-in only writes
//!   Deployment status (see [`deployments`]).
//! - Deletion is immediate (grace periods are ignored); propagation
//!   policies other than orphaning all act as background deletion.
//! - Discovery is the legacy kind (no aggregated discovery). `/openapi/v3`
//!   lists operations without schemas (see the `openapi` module), enough
//!   for kubectl to use server-side field validation; `/openapi/v2` is 404.
//!   The server does not reject unknown fields (`fieldValidation` is
//!   accepted and ignored).

#![forbid(unsafe_code)]

pub mod deployments;
mod error;
mod events;
mod jsonpath;
mod openapi;
mod patch;
mod registry;
mod selector;
mod server;
mod store;
mod table;
mod time;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use crate::server::Shared;
use crate::store::Store;

/// How a fake server behaves.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Options {
    /// Where to listen; port 0 picks a free one.
    pub listen: SocketAddr,
    /// Run the Deployment controller stand-in.
    pub deployment_controller: bool,
    /// How long the stand-in waits before writing a Deployment's status.
    pub deployment_ready_delay: Duration,
    /// How often watches with `allowWatchBookmarks=true` get a BOOKMARK.
    pub bookmark_interval: Duration,
    /// How many events are kept for watches that resume from a
    /// resourceVersion; older ones get 410 Expired.
    pub watch_history: usize,
    /// Namespaces that exist from the start.
    pub namespaces: Vec<String>,
    /// Answer strategic merge patches of custom resources with 415, as a
    /// real server does, instead of taking them as merge patches.
    pub strict_strategic_merge: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            deployment_controller: true,
            deployment_ready_delay: Duration::from_millis(200),
            bookmark_interval: Duration::from_secs(5),
            watch_history: 10_000,
            namespaces: ["default", "kube-system", "kube-public", "kube-node-lease"]
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
            strict_strategic_merge: false,
        }
    }
}

/// A running fake API server. Dropping it stops it too.
pub struct FakeApiServer {
    addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl FakeApiServer {
    /// Binds and starts serving.
    pub async fn start(opts: Options) -> std::io::Result<Self> {
        let listener = TcpListener::bind(opts.listen).await?;
        let addr = listener.local_addr()?;
        let (shutdown, shutdown_rx) = watch::channel(false);
        let store = Store::new(opts.watch_history, &opts.namespaces);
        let controller = opts.deployment_controller;
        let shared = Arc::new(Shared {
            store: Mutex::new(store),
            opts,
            shutdown: shutdown_rx.clone(),
            addr,
        });
        if controller {
            tokio::spawn(deployments::run(shared.clone()));
        }
        let task = tokio::spawn(accept_loop(listener, shared, shutdown_rx));
        tracing::info!(%addr, "fake Kubernetes API server listening");
        Ok(Self {
            addr,
            shutdown,
            task: Some(task),
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kubeconfig for this server: cluster, user and context `fakekube`,
    /// namespace `default`, no credentials.
    pub fn kubeconfig(&self) -> String {
        kubeconfig_for(&self.url())
    }

    /// Writes [`Self::kubeconfig`] to a file.
    pub fn write_kubeconfig(&self, path: impl AsRef<Path>) -> std::io::Result<()> {
        std::fs::write(path, self.kubeconfig())
    }

    /// Stops serving: ends watches and connections and waits for the
    /// accept loop.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

/// A kubeconfig pointing at `url` without credentials.
pub fn kubeconfig_for(url: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: fakekube\n  cluster:\n    server: {url}\n\
         contexts:\n- name: fakekube\n  context:\n    cluster: fakekube\n    user: fakekube\n    namespace: default\n\
         current-context: fakekube\nusers:\n- name: fakekube\n  user: {{}}\npreferences: {{}}\n"
    )
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut conns = JoinSet::new();
    loop {
        while conns.try_join_next().is_some() {}
        tokio::select! {
            _ = shutdown.changed() => break,
            accepted = listener.accept() => {
                let (stream, _) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let shared = shared.clone();
                conns.spawn(async move {
                    let svc = hyper::service::service_fn(move |req| server::handle(shared.clone(), req));
                    if let Err(e) = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await
                    {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                });
            }
        }
    }
    conns.abort_all();
    while conns.join_next().await.is_some() {}
}
