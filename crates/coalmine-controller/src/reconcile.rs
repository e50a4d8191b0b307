//! One reconcile of one Canary: observe the cluster, let
//! `coalmine_core::rollout::decide` decide, store the status, then carry
//! out the actions.
//!
//! The order is what makes a crash harmless: the status is written (with
//! the object's resourceVersion, so a concurrent writer makes it 409 and
//! the whole reconcile starts again from a fresh read) before any action,
//! and every action is level-triggered, so the next reconcile repeats
//! whatever a dead controller left undone. Nothing about a rollout lives in
//! memory except the judge's evidence (see [`crate::analysis`]).
//!
//! Every write (status, finalizer, each cluster operation) first checks
//! that this replica's Lease is still valid ([`crate::leader::Leadership`]):
//! a reconcile that outlives its replica's leadership stops before its next
//! write and fails with [`Error::NotLeader`], so two replicas never both
//! act, even for the length of one reconcile.

use std::sync::Arc;
use std::time::Duration as StdDuration;

use coalmine_core::capability::Capability;
use coalmine_core::rollout::{Decision, Event, Observation};
use coalmine_core::status::{CanaryStatus, ConditionStatus};
use coalmine_core::{Duration, Time};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event as KubeEvent, EventType};
use kube::runtime::finalizer::{Error as FinalizerError, Event as FinalizerEvent, finalizer};
use kube::{Resource, ResourceExt};

use crate::resource::{
    APPLIED_CONDITION, CanaryResource, Checked, FINALIZER, ROUTE_CONDITION, Reason,
    STUCK_CONDITION, TRAFFIC_CONDITION, VALID_CONDITION,
};
use crate::router::{self, RouteTarget, TrafficRouter, proxy};
use crate::workload;
use crate::{CONFLICT_RETRIES, Context, Error, apply};

/// How often a Canary is looked at while a rollout waits on the cluster
/// (readiness, promotion, scale-down), besides the Deployment watch.
const ACTIVE_RESYNC: StdDuration = StdDuration::from_secs(5);
/// How often a settled Canary is looked at anyway.
const IDLE_RESYNC: StdDuration = StdDuration::from_secs(300);
/// How often a rollout waiting for a person (`pause: {}`, a person's pause)
/// is looked at anyway: the command that ends the wait is an annotation on
/// the Canary, so its watch event reconciles at once; this is only a
/// safety net (a missed watch event), and keeps a thousand paused rollouts
/// from costing hundreds of reconciles a second.
const PAUSED_RESYNC: StdDuration = StdDuration::from_secs(300);

/// Reconciles one Canary (the `kube::runtime::Controller` callback).
/// `obj` is the watch cache's copy, which names the Canary and no more
/// ([`crate::resource::trim_for_cache`]): the Canary is read afresh.
pub async fn reconcile(obj: Arc<CanaryResource>, ctx: Arc<Context>) -> Result<Action, Error> {
    if !ctx.is_leader() {
        // Another replica acts; look again once leadership may have moved.
        return Ok(Action::requeue(StdDuration::from_secs(2)));
    }
    let started = std::time::Instant::now();
    let namespace = obj.namespace().to_owned();
    let name = obj.name().to_owned();
    let result = reconcile_fresh(&namespace, &name, &ctx).await;
    ctx.metrics
        .reconciled(started.elapsed(), result.as_ref().err());
    if let Err(Error::NotLeader) = &result {
        tracing::info!(canary = %name, namespace = %namespace, "leadership lost mid-reconcile; abandoned before its next write");
    } else if let Err(e) = &result {
        tracing::warn!(canary = %name, namespace = %namespace, error = %e, "reconcile failed");
        // Something the user can fix (an object the spec names is missing,
        // the API server refuses a write: RBAC, validation, a quota) is
        // told where they look: a condition, shown by `kubectl get`, and an
        // Event when it changes.
        if let Some((reason, message)) = refusal(e) {
            match applied(&ctx, &namespace, &name, Some((reason, &message))).await {
                Ok(true) => {
                    let event = Event {
                        warning: true,
                        reason: reason.as_str(),
                        message,
                    };
                    ctx.publish(&obj, &event).await;
                }
                Ok(false) => {}
                Err(err) => {
                    tracing::warn!(canary = %name, error = %err, "could not record the refusal in the status");
                }
            }
        }
    }
    result
}

/// The reason and message for [`APPLIED_CONDITION`] when `e` is something
/// a person can act on; `None` for what retrying fixes (a conflict, a
/// connection lost, leadership moving).
fn refusal(e: &Error) -> Option<(Reason, String)> {
    let reason = match e {
        Error::Missing { .. } => Reason::ReconcileFailed,
        Error::Kube(kube::Error::Api(s)) => match s.code {
            403 if s.message.contains("exceeded quota") => Reason::QuotaExceeded,
            403 => Reason::Forbidden,
            422 => Reason::Invalid,
            400 => Reason::BadRequest,
            404 => Reason::NotFound,
            409 | 429 | 500.. => return None,
            _ => Reason::Refused,
        },
        _ => return None,
    };
    Some((
        reason,
        format!("the cluster has not applied what the status says: {e}"),
    ))
}

/// Sets [`APPLIED_CONDITION`] on the stored Canary: `False` with the
/// refusal, or `True`. Returns whether it changed (and was written).
async fn applied(
    ctx: &Context,
    namespace: &str,
    name: &str,
    refused: Option<(Reason, &str)>,
) -> Result<bool, Error> {
    let api: Api<CanaryResource> = Api::namespaced(ctx.client.clone(), namespace);
    let Some(c) = api.get_opt(name).await? else {
        return Ok(false);
    };
    let mut status = c.core_status();
    let before = status.conditions.clone();
    let (value, reason, message) = match refused {
        Some((reason, message)) => (ConditionStatus::False, reason, message),
        None => (ConditionStatus::True, Reason::Applied, ""),
    };
    status.conditions.set(
        APPLIED_CONDITION,
        value,
        reason.as_str(),
        message,
        Time::now(),
    );
    if status.conditions == before {
        return Ok(false);
    }
    write_status(&api, &c, ctx, &status).await?;
    Ok(true)
}

/// Requeue on an error: soon, and again the next time anything changes.
pub fn error_policy(_obj: Arc<CanaryResource>, _e: &Error, _ctx: Arc<Context>) -> Action {
    Action::requeue(StdDuration::from_secs(2))
}

async fn reconcile_fresh(namespace: &str, name: &str, ctx: &Context) -> Result<Action, Error> {
    let api: Api<CanaryResource> = Api::namespaced(ctx.client.clone(), namespace);
    let key = format!("{namespace}/{name}");
    for _ in 0..CONFLICT_RETRIES {
        // Always from a fresh read: the watch cache may be behind our own
        // last status write.
        let Some(canary) = api.get_opt(name).await? else {
            ctx.analyses.forget(&key);
            ctx.metrics.forget(namespace, name);
            ctx.notifiers.forget(name, namespace);
            return Ok(Action::await_change());
        };
        // Adding the finalizer to a live Canary and removing it once a
        // deleted one is cleaned up are kube-runtime's `finalizer`; each of
        // its writes is preceded by the Lease check (here for the add, at
        // the end of `finalize` for the removal).
        let deleting = canary.metadata.deletion_timestamp.is_some();
        let has_finalizer = canary.finalizers().iter().any(|f| f == FINALIZER);
        if !deleting && !has_finalizer {
            ctx.leadership.check()?;
        }
        let r = finalizer(&api, FINALIZER, Arc::new(canary), |event| async {
            match event {
                FinalizerEvent::Apply(c) => step(&api, &c, ctx, &key).await,
                FinalizerEvent::Cleanup(c) => finalize(&c, ctx).await,
            }
        })
        .await;
        match r {
            // The helper added the finalizer: read again and take the step
            // in this same reconcile.
            Ok(_) if !deleting && !has_finalizer => {}
            Ok(action) => return Ok(action),
            Err(FinalizerError::ApplyFailed(e) | FinalizerError::CleanupFailed(e)) => match e {
                Error::Kube(kube::Error::Api(s)) if s.code == 409 => {}
                e => return Err(e),
            },
            // The helper's own patch found the finalizers changed under it.
            Err(FinalizerError::AddFinalizer(kube::Error::Api(s)))
            | Err(FinalizerError::RemoveFinalizer(kube::Error::Api(s)))
                if s.code == 409 || s.code == 422 => {}
            Err(FinalizerError::AddFinalizer(e) | FinalizerError::RemoveFinalizer(e)) => {
                return Err(Error::Kube(e));
            }
            Err(e) => {
                return Err(Error::Missing {
                    field: "metadata",
                    what: e.to_string(),
                });
            }
        }
    }
    Err(Error::Conflict(format!("Canary {key}")))
}

/// The Canary is being deleted: all traffic to stable, the canary scaled
/// down, then the finalizer goes (and with the Canary, by garbage
/// collection, everything it owns).
async fn finalize(c: &CanaryResource, ctx: &Context) -> Result<Action, Error> {
    // Read leniently: a Canary whose spec became invalid may still have
    // traffic on its canary, through the router its spec last named.
    let router = router::for_plan(&c.router_hint());
    let target = RouteTarget {
        client: ctx.client.clone(),
        namespace: c.namespace().to_owned(),
        name: c.name().to_owned(),
        canary_service: workload::canary_name(c.name()),
        port: c
            .spec
            .pointer("/service/port")
            .and_then(serde_json::Value::as_i64)
            .and_then(|p| i32::try_from(p).ok())
            .unwrap_or(80),
        owner: owner_of(c)?,
    };
    ctx.leadership.check()?;
    match router.cleanup(&target).await {
        Err(Error::Missing { .. }) | Ok(()) => {}
        Err(e) => return Err(e),
    }
    let deploys: Api<Deployment> = Api::namespaced(ctx.client.clone(), c.namespace());
    let total = c
        .spec
        .get("replicas")
        .and_then(serde_json::Value::as_i64)
        .and_then(|r| i32::try_from(r).ok())
        .unwrap_or(1);
    ctx.leadership.check()?;
    let canary = workload::scale(&deploys, &workload::canary_name(c.name()), 0, None).await?;
    canary.iter().for_each(|d| ctx.caches.wrote(d));
    ctx.leadership.check()?;
    let stable = workload::scale(&deploys, c.name(), router.replicas(total, 0).0, None).await?;
    stable.iter().for_each(|d| ctx.caches.wrote(d));
    let key = format!("{}/{}", c.namespace(), c.name());
    ctx.analyses.forget(&key);
    ctx.metrics.forget(c.namespace(), c.name());
    tracing::info!(
        canary = c.name(),
        namespace = c.namespace(),
        "deleted: traffic on stable; the finalizer goes next"
    );
    // The finalizer helper removes the finalizer right after this returns.
    ctx.leadership.check()?;
    Ok(Action::await_change())
}

/// The Ready endpoints of Service `NAME-proxy` (`proxy_name`): from the
/// EndpointSlice cache, or listed when the cache has none yet.
async fn proxy_ready(ctx: &Context, namespace: &str, proxy_name: &str) -> Result<usize, Error> {
    if let Some(slices) = ctx.caches.endpoint_slices(namespace, proxy_name) {
        return Ok(proxy::ready_endpoints(&slices));
    }
    let api: Api<k8s_openapi::api::discovery::v1::EndpointSlice> =
        Api::namespaced(ctx.client.clone(), namespace);
    let lp = kube::api::ListParams::default().labels(&format!(
        "{}={proxy_name}",
        crate::cache::SERVICE_NAME_LABEL
    ));
    Ok(proxy::ready_endpoints(&api.list(&lp).await?.items))
}

fn replicas_wanted(checked: &Checked) -> i32 {
    checked
        .canary
        .spec
        .replicas
        .and_then(|r| i32::try_from(r).ok())
        .unwrap_or(1)
}

fn owner_of(c: &CanaryResource) -> Result<OwnerReference, Error> {
    let mut owner = c.controller_owner_ref(&()).ok_or_else(|| Error::Missing {
        field: "metadata.uid",
        what: "the Canary has no uid yet".into(),
    })?;
    owner.block_owner_deletion = Some(true);
    Ok(owner)
}

fn route_target(
    ctx: &Context,
    c: &CanaryResource,
    checked: &Checked,
) -> Result<RouteTarget, Error> {
    Ok(RouteTarget {
        client: ctx.client.clone(),
        namespace: c.namespace().to_owned(),
        name: c.name().to_owned(),
        canary_service: workload::canary_name(c.name()),
        port: workload::service_port(&checked.canary.spec).0,
        owner: owner_of(c)?,
    })
}

/// Writes `status` with the object's resourceVersion (409 if it moved),
/// if this replica still leads.
async fn write_status(
    api: &Api<CanaryResource>,
    c: &CanaryResource,
    ctx: &Context,
    status: &CanaryStatus,
) -> Result<(), Error> {
    ctx.leadership.check()?;
    let mut obj = c.clone();
    obj.status = Some(serde_json::to_value(status)?);
    api.replace_status(c.name(), &PostParams::default(), &obj)
        .await?;
    Ok(())
}

/// An invalid spec: a `Valid=False` condition naming the fields, a
/// warning event when the message changes, and nothing else.
async fn invalid(
    api: &Api<CanaryResource>,
    c: &CanaryResource,
    ctx: &Context,
    problems: &[coalmine_core::Problem],
) -> Result<Action, Error> {
    refuse(api, c, ctx, Reason::InvalidSpec, problems).await
}

/// A Canary the controller will not act on (`reason`): a `Valid=False`
/// condition naming the fields and the fix, a warning event when the
/// message changes, and nothing else.
async fn refuse(
    api: &Api<CanaryResource>,
    c: &CanaryResource,
    ctx: &Context,
    reason: Reason,
    problems: &[coalmine_core::Problem],
) -> Result<Action, Error> {
    let mut status = c.core_status();
    let message: Vec<String> = problems.iter().map(ToString::to_string).collect();
    let message = message.join("; ");
    let before = status.conditions.clone();
    status.conditions.set(
        VALID_CONDITION,
        ConditionStatus::False,
        reason.as_str(),
        &message,
        Time::now(),
    );
    if status.conditions != before {
        write_status(api, c, ctx, &status).await?;
        ctx.publish(
            c,
            &Event {
                warning: true,
                reason: reason.as_str(),
                message: message.clone(),
            },
        )
        .await;
        tracing::warn!(canary = c.name(), namespace = c.namespace(), %message, "invalid spec; nothing changed");
    }
    // An edit of the Canary fixes a spec, and its watch event reconciles;
    // objects in the way are fixed elsewhere (a label, a deletion), which
    // no watch of the controller sees.
    if reason == Reason::NotOwned {
        return Ok(Action::requeue(ACTIVE_RESYNC));
    }
    Ok(Action::await_change())
}

/// What the cluster says about the two Deployments.
///
/// Where the router has no canary Service of its own (`replicas`), the
/// canary's pods are the weight's share: it is ready at the stored weight
/// once it asks for at least that share and all of it is rolled out, and
/// the observation says which weight that was.
fn observe(
    status: &CanaryStatus,
    desired: &str,
    (router, total): (&dyn TrafficRouter, i32),
    stable: Option<&Deployment>,
    canary: Option<&Deployment>,
) -> Observation {
    let by_weight = !router.canary_service();
    let wanted = if by_weight {
        router.replicas(total, status.weight.get()).1
    } else {
        0
    };
    let canary_ready = canary.is_some_and(|d| {
        workload::replicas_of(d) >= wanted
            && workload::ready_revision(d)
                .is_some_and(|r| Some(&r) == status.canary_revision.as_ref())
    });
    Observation {
        desired_revision: desired.to_owned(),
        canary_ready,
        canary_ready_at: by_weight.then_some(status.weight),
        canary_gone: workload::scaled_down(canary),
        canary_down: None,
        stable_ready_revision: stable.and_then(workload::ready_revision),
        analysis: None,
        command: None,
    }
}

async fn step(
    api: &Api<CanaryResource>,
    c: &CanaryResource,
    ctx: &Context,
    key: &str,
) -> Result<Action, Error> {
    let checked = match c.check() {
        Ok(checked) => checked,
        Err(problems) => return invalid(api, c, ctx, &problems).await,
    };
    let status = c.core_status();
    let spec = &checked.canary.spec;
    let plan = &checked.plan;
    let total = replicas_wanted(&checked);
    let deploys: Api<Deployment> = Api::namespaced(ctx.client.clone(), c.namespace());
    let canary_name = workload::canary_name(c.name());
    let (stable_d, stable_raw) = ctx
        .caches
        .deployment(&deploys, c.name())
        .await?
        .map(|f| (f.deployment, f.template))
        .unzip();
    let (canary_d, canary_raw) = ctx
        .caches
        .deployment(&deploys, &canary_name)
        .await?
        .map(|f| (f.deployment, f.template))
        .unzip();
    // Deployment `NAME-proxy`: run under the proxy router, scaled to zero
    // once the router is turned off.
    let proxy_name = proxy::proxy_name(c.name());
    let proxy_d = ctx
        .caches
        .deployment(&deploys, &proxy_name)
        .await?
        .map(|f| f.deployment);
    let uid = c.metadata.uid.as_deref().unwrap_or_default();
    let services: Api<k8s_openapi::api::core::v1::Service> =
        Api::namespaced(ctx.client.clone(), c.namespace());
    let service = ctx.caches.service(&services, c.name()).await?;
    let proxy_on = checked.router == coalmine_core::plan::Router::Proxy;
    let router: Box<dyn TrafficRouter> = if proxy_on {
        let ready = proxy_ready(ctx, c.namespace(), &proxy_name).await?;
        let settings = spec
            .traffic_routing
            .as_ref()
            .and_then(|t| t.proxy.clone())
            .unwrap_or_default();
        Box::new(proxy::Proxy::new(&settings, &ctx.proxy_image, ready))
    } else {
        router::for_plan(&checked.router)
    };
    let mut named: Vec<(
        &str,
        String,
        Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>,
    )> = vec![
        (
            "Deployment",
            c.name().to_owned(),
            stable_d.as_ref().map(|d| d.metadata.clone()),
        ),
        (
            "Deployment",
            canary_name.clone(),
            canary_d.as_ref().map(|d| d.metadata.clone()),
        ),
        (
            "Service",
            c.name().to_owned(),
            service.as_ref().map(|s| s.metadata.clone()),
        ),
    ];
    if proxy_on {
        named.push((
            "Deployment",
            proxy_name.clone(),
            proxy_d.as_ref().map(|d| d.metadata.clone()),
        ));
        for svc in [proxy::stable_name(c.name()), proxy_name.clone()] {
            let found = ctx.caches.service(&services, &svc).await?;
            named.push(("Service", svc, found.map(|s| s.metadata)));
        }
    }
    let foreign: Vec<coalmine_core::Problem> = named
        .iter()
        .filter(|(_, _, meta)| meta.as_ref().is_some_and(|m| !workload::ours(m, uid)))
        .map(|(kind, name, _)| workload::not_ours(kind, name))
        .collect();
    if !foreign.is_empty() {
        return refuse(api, c, ctx, Reason::NotOwned, &foreign).await;
    }
    // Another's `NAME-proxy` is never scaled.
    let proxy_d = proxy_d.filter(|d| workload::ours(&d.metadata, uid));
    let ours: Vec<&Deployment> = stable_d.iter().chain(canary_d.iter()).collect();
    let autoscaled = workload::autoscaled(&ctx.client, c.namespace(), c.name(), &ours).await?;
    if !autoscaled.is_empty() {
        return refuse(api, c, ctx, Reason::AutoscaledDeployment, &autoscaled).await;
    }
    let selector = match workload::selector_for(spec, c.name(), stable_d.as_ref()) {
        Ok(s) => s,
        Err(p) => return invalid(api, c, ctx, &[p]).await,
    };
    let desired = spec.desired_revision();
    let mut obs = observe(
        &status,
        &desired,
        (router.as_ref(), total),
        stable_d.as_ref(),
        canary_d.as_ref(),
    );

    obs.command = c.command();
    // A route its Gateway refuses sends nothing anywhere: the rollout
    // waits, as for an unready canary (and rolls back at
    // progressDeadline), saying why.
    let route_refused = router.refused(&route_target(ctx, c, &checked)?).await?;
    if route_refused.is_some() {
        obs.canary_ready = false;
    }

    let now = Time::now();
    let clock = tokio::time::Instant::now();
    let analysis_ctx = coalmine_providers::Context {
        name: c.name().to_owned(),
        namespace: c.namespace().to_owned(),
        interval: plan
            .analysis
            .as_ref()
            .map_or(StdDuration::from_secs(10), |a| a.interval.to_std()),
    };
    let slot = ctx.analyses.slot(key);
    let mut session = slot.lock().await;
    // `builtin` metrics read the proxy router's replicas.
    let builtin = checked
        .router
        .can(Capability::BuiltinMetrics)
        .then(|| crate::analysis::proxy_replicas(&ctx.caches, c.namespace(), c.name()));
    let build = |analysis: &coalmine_core::plan::AnalysisPlan| {
        coalmine_providers::sources(analysis, builtin.as_ref())
            .map_err(|e| format!("spec.analysis: {e}"))
    };
    // A new session's scraped counters take their baseline now, so that
    // its first interval has counts rather than NoData.
    let mut primed = None;
    if builtin.is_some()
        && let Some(analysis) = plan.analysis.as_ref().filter(|a| {
            coalmine_driver::session::judged_phase(status.phase)
                && !session.as_ref().is_some_and(|s| s.judges(a, &status))
        })
    {
        let mut sources = build(analysis).map_err(Error::Analysis)?;
        for s in &mut sources {
            s.prime().await;
        }
        primed = Some(sources);
    }
    coalmine_driver::session::refresh(
        &mut session,
        plan,
        &status,
        router.share(total, status.weight.get()),
        now,
        clock,
        key,
        |analysis| primed.map_or_else(|| build(analysis), Ok),
    )
    .map_err(Error::Analysis)?;
    let refused_before = status
        .conditions
        .iter()
        .any(|c| c.type_ == APPLIED_CONDITION && c.status != ConditionStatus::True);
    let mut kube = KubeActuator {
        api,
        c,
        ctx,
        checked: &checked,
        router: router.as_ref(),
        total,
        desired: &desired,
        stable_d,
        canary_d,
        stable_template: stable_raw.flatten(),
        canary_template: canary_raw.flatten(),
        service,
        proxy_d,
        route_refused,
        selector,
        refused_before,
        hold: None,
        current: (0, 0),
    };
    let turned = coalmine_driver::turn(
        coalmine_driver::Turn {
            plan,
            status: &status,
            observation: obs,
            ctx: &analysis_ctx,
            now,
            clock,
        },
        &mut session,
        &mut kube,
    )
    .await?;
    drop(session);
    let decision = turned.decision;
    let next_in = turned
        .next_collection
        .map(|t| t.saturating_duration_since(tokio::time::Instant::now()));
    let mut next = next_look(&decision, next_in);
    if let Some(left) = kube.hold {
        next = next.min(left + StdDuration::from_millis(50));
    }
    // A canary still shrinking after a promotion or a rollback (its pods
    // go as stable's become Ready endpoints) is watched closely, though
    // the rollout itself is over.
    if kube.current.1 > 0 && !decision.status.phase.canary_live() {
        next = next.min(ACTIVE_RESYNC);
    }
    Ok(Action::requeue(next))
}

/// The Kubernetes platform of a turn: the Canary's status subresource is
/// where the status is stored, the Deployments, Services and the router
/// are where actions are carried out.
struct KubeActuator<'a> {
    api: &'a Api<CanaryResource>,
    c: &'a CanaryResource,
    ctx: &'a Context,
    checked: &'a Checked,
    router: &'a dyn TrafficRouter,
    total: i32,
    desired: &'a str,
    stable_d: Option<Deployment>,
    canary_d: Option<Deployment>,
    /// The Deployments' pod templates as the API server returned them,
    /// with the fields the compiled types lack ([`workload::Fetched`]).
    stable_template: Option<serde_json::Value>,
    canary_template: Option<serde_json::Value>,
    /// Service `NAME` as read at the start, if it exists.
    service: Option<k8s_openapi::api::core::v1::Service>,
    /// Deployment `NAME-proxy` as read at the start, if this Canary's exists.
    proxy_d: Option<Deployment>,
    route_refused: Option<String>,
    selector: std::collections::BTreeMap<String, String>,
    /// Whether the status read at the start had a refusal recorded.
    refused_before: bool,
    /// How much of the scale-down delay is left (set by `amend`, kept by
    /// `act` when the canary's pods still serve).
    hold: Option<StdDuration>,
    /// Stable's and the canary's replicas as read (set by `act`).
    current: (i32, i32),
}

impl coalmine_driver::Actuator for KubeActuator<'_> {
    type Error = Error;

    fn share(&self, weight: coalmine_core::Percent) -> f64 {
        self.router.share(self.total, weight.get())
    }

    /// Routes propagate and pods start after the actions: the interval
    /// after a step is left out.
    fn shifts_at_once(&self) -> bool {
        false
    }

    fn amend(&mut self, decision: &mut Decision, now: Time) {
        let (c, ctx, checked, router, total) =
            (self.c, self.ctx, self.checked, self.router, self.total);
        let (stable_d, canary_d, desired) =
            (self.stable_d.as_ref(), self.canary_d.as_ref(), self.desired);
        let plan = &checked.plan;
        let spec = &checked.canary.spec;
        decision.status.conditions.set(
            VALID_CONDITION,
            ConditionStatus::True,
            Reason::Valid.as_str(),
            "",
            now,
        );
        self.hold = traffic_condition(&mut decision.status, now, checked.scale_down_delay);
        match &self.route_refused {
            Some(why) => decision.status.conditions.set(
                ROUTE_CONDITION,
                ConditionStatus::False,
                Reason::RouteNotAccepted.as_str(),
                why,
                now,
            ),
            None if decision
                .status
                .conditions
                .iter()
                .any(|c| c.type_ == ROUTE_CONDITION) =>
            {
                decision.status.conditions.set(
                    ROUTE_CONDITION,
                    ConditionStatus::True,
                    Reason::Accepted.as_str(),
                    "",
                    now,
                );
            }
            None => {}
        }
        // What the canary really gets when the split is in whole pods.
        if !router.canary_service() && decision.status.phase.canary_live() {
            let w = decision.status.weight.get();
            let (_, pods) = router.replicas(total, w);
            let real = (router.share(total, w) * 100.0).round();
            decision.status.conditions.set(
                TRAFFIC_CONDITION,
                ConditionStatus::True,
                Reason::Routed.as_str(),
                &format!(
                    "weight {w}% runs {pods} of {total} pods: the canary gets {real}% of requests"
                ),
                now,
            );
        }
        if let Some(e) = stuck(
            &mut decision.status,
            now,
            plan.progress_deadline,
            stable_d,
            canary_d,
        ) {
            decision
                .actions
                .push(coalmine_core::rollout::Action::Event(e));
        }
        // The template stable is (re)created with while the spec is stable's
        // revision: remembered in the same status write, rather than in one
        // more write once the Deployment is seen.
        let from_spec = (decision.status.stable_revision.as_deref() == Some(desired))
            .then(|| {
                spec.template
                    .as_ref()
                    .map(|t| workload::pod_template(t, workload::Track::Stable, desired))
            })
            .flatten();
        remember_stable_template(&mut decision.status, self.stable_template.take(), from_spec);
        // Counted as of this reconcile; sending goes on in the background.
        if let Some(counts) = ctx.notifiers.status(c.name(), c.namespace()) {
            decision.status.notifications = Some(counts);
        }
        // The scale subresource: what `kubectl scale` and a
        // HorizontalPodAutoscaler read. Its `spec.replicas` is the Canary's,
        // which both tracks follow.
        let pods = |d: Option<&Deployment>| {
            d.and_then(|d| d.status.as_ref())
                .and_then(|s| s.replicas)
                .unwrap_or(0)
        };
        decision.status.replicas = Some(i64::from(pods(stable_d) + pods(canary_d)));
        decision.status.selector = Some(
            self.selector
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(","),
        );
    }

    async fn persist(&mut self, status: &CanaryStatus, changed: bool) -> Result<(), Error> {
        if changed {
            write_status(self.api, self.c, self.ctx, status).await?;
        }
        Ok(())
    }

    async fn act(&mut self, decision: &Decision) -> Result<(), Error> {
        let (c, ctx, router) = (self.c, self.ctx, self.router);
        // Under the replicas router the Service's endpoints are the split:
        // what the capacity rule of `apply::split` counts.
        let serving = if router.canary_service() {
            None
        } else {
            let slices = Api::namespaced(ctx.client.clone(), c.namespace());
            let cached = ctx.caches.endpoint_slices(c.namespace(), c.name());
            let counted = match cached {
                Some(slices) => Ok(workload::count_serving(&slices, c.name())),
                None => workload::serving(&slices, c.name()).await,
            };
            match counted {
                Ok(s) => Some(s),
                // An API server without EndpointSlices (not a real cluster's):
                // the Deployments' available pods are the nearest count.
                Err(Error::Kube(kube::Error::Api(s))) if s.code == 404 => Some(workload::Serving {
                    stable: self.stable_d.as_ref().map_or(0, workload::available),
                    canary: self.canary_d.as_ref().map_or(0, workload::available),
                }),
                Err(e) => return Err(e),
            }
        };
        let current = (
            self.stable_d.as_ref().map_or(0, workload::replicas_of),
            self.canary_d.as_ref().map_or(0, workload::replicas_of),
        );
        self.current = current;
        // The delay is for routers that switch traffic away from running
        // pods; under the replicas router traffic leaves a pod when it is
        // removed.
        self.hold = self.hold.filter(|_| serving.is_none() && current.1 > 0);
        let seen = apply::Seen::default();
        seen.deployment(c.name(), self.stable_d.clone());
        seen.deployment(&workload::canary_name(c.name()), self.canary_d.clone());
        seen.service(c.name(), self.service.take());
        let proxy_replicas = self.proxy_d.as_ref().map(workload::replicas_of);
        let proxy_short = self
            .proxy_d
            .as_ref()
            .is_some_and(|d| workload::available(d) < workload::replicas_of(d));
        seen.deployment(&proxy::proxy_name(c.name()), self.proxy_d.take());
        let state = Now {
            proxy_replicas,
            proxy_short,
            canary_template: self.canary_template.take(),
            seen,
            selector: self.selector.clone(),
            current,
            serving,
            hold_canary: self.hold.is_some(),
        };
        carry_out(c, ctx, self.checked, router, decision, self.desired, state).await?;
        ctx.metrics
            .observe_canary(c.namespace(), c.name(), &decision.status);
        // Everything was accepted: a refusal recorded earlier is over.
        // (Checked against the status read at the start, so a healthy
        // Canary costs no extra read.)
        if self.refused_before
            || !decision
                .status
                .conditions
                .iter()
                .any(|c| c.type_ == APPLIED_CONDITION)
        {
            applied(ctx, c.namespace(), c.name(), None).await?;
        }
        Ok(())
    }
}

/// Keeps [`STUCK_CONDITION`]: `True` once a promotion or a rollback has
/// waited longer than `deadline` (the plan's `progressDeadline`) for the
/// Deployments, with what it waits for; returns the `Stuck` warning Event
/// the moment it turns `True`.
fn stuck(
    status: &mut CanaryStatus,
    now: Time,
    deadline: Duration,
    stable: Option<&Deployment>,
    canary: Option<&Deployment>,
) -> Option<Event> {
    use coalmine_core::status::Phase;
    let since = match status.phase {
        Phase::Promoting => status.step_started_at,
        Phase::RollingBack => status.rollback.as_ref().map(|r| r.at),
        _ => None,
    };
    let late = since.filter(|t| now.since(*t) >= deadline);
    let Some(since) = late else {
        if status.conditions.iter().any(|c| c.type_ == STUCK_CONDITION) {
            status.conditions.set(
                STUCK_CONDITION,
                ConditionStatus::False,
                Reason::Converged.as_str(),
                "",
                now,
            );
        }
        return None;
    };
    let pods = |d: Option<&Deployment>, name: &str| match d {
        None => format!("Deployment {name} is missing"),
        Some(d) => {
            let st = d.status.clone().unwrap_or_default();
            format!(
                "Deployment {name} wants {} pods: {} updated, {} available, {} in all",
                workload::replicas_of(d),
                st.updated_replicas.unwrap_or(0),
                st.available_replicas.unwrap_or(0),
                st.replicas.unwrap_or(0),
            )
        }
    };
    let name = |d: Option<&Deployment>| {
        d.and_then(|d| d.metadata.name.clone())
            .unwrap_or_else(|| "?".into())
    };
    let waiting = if status.phase == Phase::Promoting {
        format!(
            "promoting since {since}, longer than progressDeadline {deadline}: {}; {}",
            pods(stable, &name(stable)),
            pods(canary, &name(canary))
        )
    } else {
        format!(
            "rolling back since {since}, longer than progressDeadline {deadline}: the canary is not gone yet ({})",
            pods(canary, &name(canary))
        )
    };
    let was = status
        .conditions
        .iter()
        .any(|c| c.type_ == STUCK_CONDITION && c.status == ConditionStatus::True);
    status.conditions.set(
        STUCK_CONDITION,
        ConditionStatus::True,
        Reason::DeadlineExceeded.as_str(),
        &waiting,
        now,
    );
    (!was).then_some(Event {
        warning: true,
        reason: "Stuck",
        message: waiting,
    })
}

/// What the cluster runs now, for [`apply::split`].
struct Now {
    /// The canary Deployment's pod template, whole.
    canary_template: Option<serde_json::Value>,
    /// The Deployments and the Service as this reconcile read them.
    seen: apply::Seen,
    selector: std::collections::BTreeMap<String, String>,
    current: (i32, i32),
    serving: Option<workload::Serving>,
    hold_canary: bool,
    /// Deployment `NAME-proxy`'s replicas, when this Canary's exists.
    proxy_replicas: Option<i32>,
    /// Whether it has fewer available pods than it asks for.
    proxy_short: bool,
}

/// Keeps [`TRAFFIC_CONDITION`] on whether the routes send the canary
/// traffic, and returns how much of the scale-down delay is left when they
/// stopped less than `delay` ago.
fn traffic_condition(status: &mut CanaryStatus, now: Time, delay: Duration) -> Option<StdDuration> {
    let live = status.phase.canary_live();
    let (value, reason, message) = if live {
        (ConditionStatus::True, Reason::Routed, String::new())
    } else {
        (
            ConditionStatus::False,
            Reason::AllOnStable,
            format!("the canary's pods stay {delay} after traffic left them"),
        )
    };
    status
        .conditions
        .set(TRAFFIC_CONDITION, value, reason.as_str(), &message, now);
    if live {
        return None;
    }
    let since = status
        .conditions
        .iter()
        .find(|c| c.type_ == TRAFFIC_CONDITION)
        .map(|c| c.last_transition_time)?;
    let gone = now.since(since);
    (gone < delay).then(|| delay.to_std().saturating_sub(gone.to_std()))
}

/// Keeps `status.stableTemplate` on the pod template of `stableRevision`:
/// the stable Deployment's own once it carries that revision (after a
/// promotion the spec may already hold a newer template, and the canary's
/// template was moved to the stable track), else `from_spec`, the spec's
/// template while the spec is stable's revision. It is what recreates
/// stable if it is deleted mid-rollout. Updated only when the revision it
/// holds is not stable's, so the API server's defaulting causes no status
/// writes.
fn remember_stable_template(
    status: &mut CanaryStatus,
    stable: Option<serde_json::Value>,
    from_spec: Option<serde_json::Value>,
) {
    let Some(rev) = status.stable_revision.as_deref() else {
        return;
    };
    let remembered = status
        .stable_template
        .as_ref()
        .map(|t| serde_json::Value::Object(t.clone()));
    if remembered.as_ref().and_then(workload::template_revision) == Some(rev) {
        return;
    }
    let found = stable
        .into_iter()
        .chain(from_spec)
        .find(|t| workload::template_revision(t) == Some(rev));
    if let Some(serde_json::Value::Object(t)) = found {
        status.stable_template = Some(t);
    }
}

/// When to reconcile again without a watch event: the earliest of the
/// decision's timer, the judge's next collection, and a resync that
/// depends on what the rollout waits for (short while Deployments
/// converge, long when only a person or a spec edit can move it).
fn next_look(decision: &Decision, next_collection: Option<StdDuration>) -> StdDuration {
    let mut next = if decision.status.phase.is_terminal() {
        IDLE_RESYNC
    } else if decision.waits_for_a_person() {
        PAUSED_RESYNC
    } else {
        ACTIVE_RESYNC
    };
    if let Some(after) = decision.requeue_after {
        next = next.min(after.to_std() + StdDuration::from_millis(50));
    }
    if let Some(after) = next_collection {
        next = next.min(after + StdDuration::from_millis(10));
    }
    next
}

/// Carries out a decision's actions, in order, after the status is stored.
async fn carry_out(
    c: &CanaryResource,
    ctx: &Context,
    checked: &Checked,
    router: &dyn TrafficRouter,
    decision: &Decision,
    desired: &str,
    now: Now,
) -> Result<(), Error> {
    let owner = owner_of(c)?;
    let inputs = apply::Inputs {
        name: c.name(),
        namespace: c.namespace(),
        spec: &checked.canary.spec,
        desired,
        owner: &owner,
        canary_template: now.canary_template,
        selector: now.selector,
        current: now.current,
        serving: now.serving,
        hold_canary: now.hold_canary,
        proxy_replicas: now.proxy_replicas,
        proxy_short: now.proxy_short,
    };
    let ops = apply::operations(&inputs, router, decision)?;
    let cluster = apply::Cluster {
        deployments: Api::namespaced(ctx.client.clone(), c.namespace()),
        services: Api::namespaced(ctx.client.clone(), c.namespace()),
        router,
        target: route_target(ctx, c, checked)?,
        leadership: &ctx.leadership,
        seen: now.seen,
        caches: &ctx.caches,
    };
    // `act` recorded stable's Deployment as this reconcile read it.
    let stable_missing = cluster.seen.known_deployment(c.name()).flatten().is_none();
    if decision.status.stable_revision.as_deref() != Some(desired) && stable_missing {
        if apply::remembered_stable_template(&decision.status).is_some() {
            tracing::warn!(
                canary = c.name(),
                namespace = c.namespace(),
                "stable Deployment missing; recreating it from status.stableTemplate"
            );
        } else {
            tracing::warn!(
                canary = c.name(),
                namespace = c.namespace(),
                "stable Deployment missing and its template neither in the spec nor in the status; a promotion will recreate it"
            );
        }
    }
    apply::execute(&cluster, ops, |e| async move {
        tracing::info!(
            canary = c.name(),
            namespace = c.namespace(),
            reason = e.reason,
            warning = e.warning,
            "{}",
            e.message
        );
        ctx.notifiers.tell(
            &ctx.metrics,
            c.name(),
            c.namespace(),
            &checked.canary.spec.notifications,
            &e,
            &decision.status,
        );
        ctx.publish(c, &e).await;
    })
    .await
}

impl Context {
    /// Records an event on the Canary; a failure is logged, never fatal
    /// (the status already says what happened).
    pub async fn publish(&self, c: &CanaryResource, e: &Event) {
        let ev = KubeEvent {
            type_: if e.warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: e.reason.to_owned(),
            note: Some(truncate(&e.message, 1000)),
            action: "Rollout".to_owned(),
            secondary: (e.reason == "CommandIgnored").then(|| command_ref(c)),
        };
        if let Err(err) = self.recorder.publish(&ev, &c.object_ref(&())).await {
            tracing::warn!(canary = c.name(), error = %err, "could not record event {}", e.reason);
        }
    }
}

/// The Canary at the resourceVersion that carried the command, as an
/// ignored command's related object. The event recorder folds repeats of
/// one (reason, object, related object) into a series, one Event whose
/// `series.count` grows; `coalmine promote` and the other commands count
/// `CommandIgnored` Events to tell a person their command was ignored, so
/// each command gets an Event of its own. (A command is an annotation
/// write, so two commands never share a resourceVersion.)
fn command_ref(c: &CanaryResource) -> k8s_openapi::api::core::v1::ObjectReference {
    let mut r = c.object_ref(&());
    r.resource_version = c.metadata.resource_version.clone();
    r.field_path = Some(format!(
        "metadata.annotations[{}]",
        crate::resource::COMMAND_ANNOTATION
    ));
    r
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use coalmine_core::rollout::decide;
    use serde_json::json;

    fn deployment(rev: &str, generation: i64, observed: i64, ready: i32) -> Deployment {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "generation": generation},
            "spec": {"replicas": 2, "selector": {}, "template": {"metadata": {"annotations": {crate::resource::REVISION_ANNOTATION: rev}}}},
            "status": {"observedGeneration": observed, "replicas": 2, "updatedReplicas": ready, "availableReplicas": ready}
        }))
        .expect("a deployment")
    }

    #[test]
    fn the_canary_is_ready_only_at_the_rollouts_revision() {
        let status = CanaryStatus {
            canary_revision: Some("new".into()),
            ..CanaryStatus::default()
        };
        let nginx = crate::router::nginx::Nginx {
            ingress: "web".into(),
        };
        let at = (&nginx as &dyn TrafficRouter, 2);
        let stable = deployment("old", 1, 1, 2);
        let canary = deployment("new", 2, 2, 2);
        let o = observe(&status, "new", at, Some(&stable), Some(&canary));
        assert!(o.canary_ready);
        assert_eq!(o.canary_ready_at, None, "its own Service serves any weight");
        assert!(!o.canary_gone);
        assert_eq!(o.stable_ready_revision.as_deref(), Some("old"));
        let behind = deployment("new", 3, 2, 2);
        assert!(!observe(&status, "new", at, None, Some(&behind)).canary_ready);
        let other = deployment("older", 1, 1, 2);
        assert!(!observe(&status, "new", at, None, Some(&other)).canary_ready);
        let o = observe(&status, "new", at, None, None);
        assert!(!o.canary_ready && o.canary_gone);
        assert_eq!(o.stable_ready_revision, None);
    }

    /// Under the `replicas` router the canary is ready at a weight once it
    /// asks for that weight's share of the pods and all are available.
    #[test]
    fn under_the_replicas_router_readiness_is_at_the_stored_weight() {
        let mut status = CanaryStatus {
            canary_revision: Some("new".into()),
            weight: coalmine_core::Percent::new(25).expect("a percent"),
            ..CanaryStatus::default()
        };
        let replicas = crate::router::replicas::Replicas;
        let at = (&replicas as &dyn TrafficRouter, 4);
        // Two pods, both available: enough for 25% and 50% of four.
        let canary = deployment("new", 2, 2, 2);
        let o = observe(&status, "new", at, None, Some(&canary));
        assert!(o.canary_ready);
        assert_eq!(o.canary_ready_at, Some(status.weight));
        status.weight = coalmine_core::Percent::new(75).expect("a percent");
        let o = observe(&status, "new", at, None, Some(&canary));
        assert!(!o.canary_ready, "two pods are not 75% of four");
    }

    #[test]
    fn a_rollout_waiting_for_a_person_is_not_polled() {
        let doc = json!({
            "apiVersion": "coalmine.dev/v1alpha1", "kind": "Canary",
            "metadata": {"name": "web"},
            "spec": {
                "replicas": 2,
                "template": {"metadata": {"labels": {"app": "web"}},
                             "spec": {"containers": [{"name": "web", "image": "web:2"}]}},
                "steps": [{"setWeight": 25}, {"pause": {}}]
            }
        });
        let (_, plan, _) = coalmine_core::validate::load(&doc.to_string()).expect("valid");
        let status = CanaryStatus {
            phase: coalmine_core::status::Phase::Progressing,
            stable_revision: Some("old".into()),
            canary_revision: Some("new".into()),
            rollout_started_at: Some(Time::from_unix_millis(0)),
            step_started_at: Some(Time::from_unix_millis(0)),
            ..CanaryStatus::default()
        };
        let obs = |ready: bool| Observation {
            desired_revision: "new".into(),
            canary_ready: ready,
            canary_ready_at: None,
            canary_gone: false,
            canary_down: None,
            stable_ready_revision: Some("old".into()),
            analysis: None,
            command: None,
        };
        let now = Time::from_unix_millis(1000);
        let paused = decide(&plan, &status, &obs(true), now);
        assert_eq!(paused.status.phase, coalmine_core::status::Phase::Paused);
        assert_eq!(next_look(&paused, None), PAUSED_RESYNC);
        // The judge keeps its own schedule while paused.
        let soon = StdDuration::from_secs(10);
        assert_eq!(
            next_look(&paused, Some(soon)),
            soon + StdDuration::from_millis(10)
        );
        // Waiting for the canary's pods is a wait on the cluster.
        let unready = decide(&plan, &status, &obs(false), now);
        assert_eq!(next_look(&unready, None), ACTIVE_RESYNC);
        let promoting = CanaryStatus {
            phase: coalmine_core::status::Phase::Promoting,
            step: 2,
            ..status.clone()
        };
        let d = decide(&plan, &promoting, &obs(true), now);
        assert_eq!(d.status.phase, coalmine_core::status::Phase::Promoting);
        assert_eq!(next_look(&d, None), ACTIVE_RESYNC);
    }

    #[test]
    fn the_status_remembers_the_template_stable_runs_at_its_revision() {
        let mut status = CanaryStatus {
            stable_revision: Some("old".into()),
            ..CanaryStatus::default()
        };
        let rev_of = |s: &CanaryStatus| {
            let t = serde_json::Value::Object(s.stable_template.clone()?);
            workload::template_revision(&t).map(str::to_owned)
        };
        remember_stable_template(&mut status, None, None);
        assert_eq!(status.stable_template, None);
        // A stable Deployment at another revision (mid-promotion) is not it.
        remember_stable_template(
            &mut status,
            workload::template_of(&deployment("new", 1, 1, 2)),
            None,
        );
        assert_eq!(status.stable_template, None);
        remember_stable_template(
            &mut status,
            workload::template_of(&deployment("old", 1, 1, 2)),
            None,
        );
        assert_eq!(rev_of(&status).as_deref(), Some("old"));
        // Promoted: the next revision's template replaces it.
        status.stable_revision = Some("new".into());
        remember_stable_template(
            &mut status,
            workload::template_of(&deployment("new", 2, 2, 2)),
            None,
        );
        assert_eq!(rev_of(&status).as_deref(), Some("new"));
        // The first deploy: no Deployment yet, the spec's template.
        let mut first = CanaryStatus {
            stable_revision: Some("one".into()),
            ..CanaryStatus::default()
        };
        let spec_t =
            json!({"metadata": {"annotations": {crate::resource::REVISION_ANNOTATION: "one"}}});
        remember_stable_template(&mut first, None, Some(spec_t));
        assert_eq!(rev_of(&first).as_deref(), Some("one"));
    }

    #[test]
    fn long_messages_are_cut_on_a_character_boundary() {
        let s = "é".repeat(600);
        let t = truncate(&s, 1000);
        assert!(t.len() <= 1004);
        assert_eq!(truncate("short", 10), "short");
    }
}
