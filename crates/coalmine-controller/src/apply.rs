//! From a decision's actions to operations on the cluster: first a pure
//! translation ([`operations`], unit-tested without a cluster), then their
//! execution ([`execute`]), in order.
//!
//! The translation is where the Kubernetes meaning of each action lives:
//! which template each Deployment gets, how many replicas the router wants
//! per track, which Services exist. Execution only creates, patches and
//! scales, and checks before each operation that this replica still holds
//! its Lease ([`Leadership::check`]): a leader that lost its Lease midway
//! stops there, leaving the rest to whoever leads now.

use std::collections::BTreeMap;

use coalmine_core::rollout::{Action, Decision, Event};
use coalmine_core::routes::Routes;
use coalmine_core::spec::CanarySpec;
use coalmine_core::status::{CanaryStatus, Phase};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::Api;
use serde_json::Value;

use crate::Error;
use crate::leader::Leadership;
use crate::router::{RouteTarget, TrafficRouter, proxy};
use crate::workload::{self, Serving, Track};

/// One thing to do to the cluster.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// Create the Deployment, or set its replicas (and its template when
    /// `template` is true and the revision differs).
    Deployment {
        /// The wanted object, as JSON (see [`workload::deployment`]).
        object: Box<Value>,
        /// Whether an existing Deployment's template is replaced.
        template: bool,
    },
    /// Create the Service, or set its selector and port.
    Service(Box<Service>),
    /// Scale an existing Deployment.
    Scale {
        /// Its name.
        name: String,
        /// Replicas.
        replicas: i32,
    },
    /// Create the object (a ServiceAccount, Role or RoleBinding) if it is
    /// missing (read first); an existing one is left as it is.
    Ensure(Box<Value>),
    /// Create the proxy's Secret `NAME-proxy` with a fresh sticky-cookie
    /// key unless one of its name exists (the controller never reads it).
    StickySecret,
    /// Put routes in effect through the router.
    Routes(Routes),
    /// Record an event.
    Event(Event),
}

/// What the translation needs besides the decision.
#[derive(Debug, Clone)]
pub struct Inputs<'a> {
    /// The Canary's name.
    pub name: &'a str,
    /// Its namespace.
    pub namespace: &'a str,
    /// Its spec.
    pub spec: &'a CanarySpec,
    /// The revision the spec asks for.
    pub desired: &'a str,
    /// An owner reference to the Canary.
    pub owner: &'a OwnerReference,
    /// The canary Deployment's pod template as it is now, if it exists.
    pub canary_template: Option<Value>,
    /// The labels the Deployments and the Service select
    /// ([`workload::selector_for`]).
    pub selector: BTreeMap<String, String>,
    /// The replicas the (stable, canary) Deployments ask for now (0 for a
    /// missing one).
    pub current: (i32, i32),
    /// The Ready endpoints behind Service `NAME` per track, when it
    /// selects both (the `replicas` router); `None` elsewhere.
    pub serving: Option<Serving>,
    /// Whether traffic left the canary less than the scale-down delay ago:
    /// a canary no route sends to keeps its pods until then.
    pub hold_canary: bool,
    /// The replicas Deployment `NAME-proxy` asks for, when this Canary's
    /// exists (the proxy router is on, or was).
    pub proxy_replicas: Option<i32>,
    /// Whether Deployment `NAME-proxy` has fewer available pods than it
    /// asks for (a pod that cannot mount a deleted Secret is one).
    pub proxy_short: bool,
}

/// The replicas each track runs for `decision`, and whether stable's
/// template may be promoted now.
///
/// Behind a router with its own canary Service the router says (every
/// track at `spec.replicas`); a canary without traffic keeps its pods while
/// `hold_canary` says so, then goes to zero.
///
/// Under the `replicas` router the pods *are* the split, so capacity is
/// kept by surging first: a track grows at once to its share, and the other
/// shrinks only as far as the grown track's Ready endpoints cover, so the
/// Ready endpoints behind the Service never fall below `spec.replicas`
/// (when they were there to begin with). Promotion first runs every
/// replica on the canary, and changes stable's template only once those
/// are Ready endpoints, so stable's own rolling update happens behind a
/// full canary; after it (or a rollback), the canary shrinks as stable's
/// endpoints become Ready.
pub fn split(
    router: &dyn TrafficRouter,
    total: i32,
    decision: &Decision,
    inputs: &Inputs<'_>,
) -> (i32, i32, bool) {
    let weight = decision.routes().map_or(0, |r| r.canary_weight);
    let (stable, canary) = router.replicas(total, weight);
    let (stable_now, canary_now) = inputs.current;
    let phase = decision.status.phase;
    let Some(ready) = inputs.serving else {
        let canary = match (phase.canary_live(), inputs.hold_canary) {
            (true, _) => canary,
            (false, true) => canary_now,
            (false, false) => 0,
        };
        return (stable, canary, true);
    };
    if phase == Phase::Promoting {
        let promote = ready.canary >= total;
        let stable = if promote {
            total
        } else {
            stable_now.max(stable)
        };
        return (stable, total, promote);
    }
    let at_most = |now: i32, cover: i32| now.min(cover.max(0));
    if phase.canary_live() {
        let stable = stable.max(at_most(stable_now, total - ready.canary));
        let canary = canary.max(at_most(canary_now, total - ready.stable));
        (stable, canary, true)
    } else {
        (total, at_most(canary_now, total - ready.stable), true)
    }
}

/// The operations that carry out `decision` (pure).
pub fn operations(
    inputs: &Inputs<'_>,
    router: &dyn TrafficRouter,
    decision: &Decision,
) -> Result<Vec<Op>, Error> {
    let spec = inputs.spec;
    let name = inputs.name;
    let owner = inputs.owner;
    let canary_name = workload::canary_name(name);
    let selector = inputs.selector.clone();
    let total = spec
        .replicas
        .and_then(|r| i32::try_from(r).ok())
        .unwrap_or(1);
    let (stable_replicas, canary_replicas, promote_now) = split(router, total, decision, inputs);
    let template = spec.template.clone().unwrap_or_default();
    let port = workload::service_port(spec);
    let desired = inputs.desired;
    let mut ops = Vec::new();

    // Stable exists before any rollout. Its template comes from the spec
    // while the spec *is* stable's revision (the first deploy, or a
    // Deployment someone deleted), else from the template the status
    // remembers for stable's revision (a Deployment deleted mid-rollout);
    // either only creates a missing stable. Otherwise only a promotion
    // writes stable's template.
    let stable_template = if decision.status.stable_revision.as_deref() == Some(desired) {
        Some(workload::pod_template(&template, Track::Stable, desired))
    } else {
        remembered_stable_template(&decision.status).map(|t| workload::retrack(&t, Track::Stable))
    };
    if let Some(t) = stable_template {
        let d = workload::deployment(name, owner, &selector, t, Track::Stable, stable_replicas)?;
        ops.push(Op::Deployment {
            object: Box::new(d),
            template: false,
        });
    }
    let stable_track = router.canary_service().then_some(Track::Stable);
    let front = match router.proxy() {
        Some(p) if p.switched() => proxy::front_service(name, owner, &selector, port.0)?,
        _ => workload::service(name, owner, &selector, stable_track, port.clone())?,
    };
    ops.push(Op::Service(Box::new(front)));
    match router.proxy() {
        Some(p) => ops.extend(proxy_objects(inputs, p, port.clone())?),
        // The proxy router was turned off: Service `NAME` (above) selects
        // the stable pods again before the proxies go.
        None if inputs.proxy_replicas.is_some_and(|r| r > 0) => ops.push(Op::Scale {
            name: proxy::proxy_name(name),
            replicas: 0,
        }),
        None => {}
    }

    for action in &decision.actions {
        match action {
            Action::EnsureCanary { revision } => {
                let t = if revision == desired {
                    Some(workload::pod_template(&template, Track::Canary, revision))
                } else {
                    // A newer spec arrived during promotion: the canary
                    // keeps the template of the revision being promoted.
                    inputs
                        .canary_template
                        .clone()
                        .filter(|t| workload::template_revision(t) == Some(revision.as_str()))
                };
                let Some(t) = t else { continue };
                let d = workload::deployment(
                    &canary_name,
                    owner,
                    &selector,
                    t,
                    Track::Canary,
                    canary_replicas,
                )?;
                ops.push(Op::Deployment {
                    object: Box::new(d),
                    template: true,
                });
                if router.canary_service() {
                    ops.push(Op::Service(Box::new(workload::service(
                        &canary_name,
                        owner,
                        &selector,
                        Some(Track::Canary),
                        port.clone(),
                    )?)));
                }
            }
            Action::SetRoutes(routes) => {
                // A promotion writes stable's replicas with its template.
                if !(promote_now && decision.status.phase == Phase::Promoting) {
                    ops.push(Op::Scale {
                        name: name.to_owned(),
                        replicas: stable_replicas,
                    });
                }
                ops.push(Op::Routes(routes.clone()));
            }
            Action::PromoteStable { .. } if !promote_now => {}
            Action::PromoteStable { revision } => {
                let from_canary = inputs
                    .canary_template
                    .clone()
                    .filter(|t| workload::template_revision(t) == Some(revision.as_str()));
                let t = match from_canary {
                    Some(t) => workload::retrack(&t, Track::Stable),
                    None if revision == desired => {
                        workload::pod_template(&template, Track::Stable, revision)
                    }
                    None => continue,
                };
                let d = workload::deployment(
                    name,
                    owner,
                    &selector,
                    t,
                    Track::Stable,
                    stable_replicas,
                )?;
                ops.push(Op::Deployment {
                    object: Box::new(d),
                    template: true,
                });
            }
            Action::ScaleDownCanary => ops.push(Op::Scale {
                name: canary_name.clone(),
                replicas: canary_replicas,
            }),
            Action::Event(e) => ops.push(Op::Event(e.clone())),
        }
    }
    Ok(ops)
}

/// The objects the proxy router runs besides Service `NAME`: the stable
/// Service it sends to, the proxy's identity and rights, its sticky-cookie
/// key (made while Deployment `NAME-proxy` does not exist or is short of
/// pods: the controller may create the Secret, never read it), its
/// Deployment and the headless Service listing its replicas. The route
/// table's ConfigMap is the router's `apply`.
fn proxy_objects(
    inputs: &Inputs<'_>,
    p: &proxy::Proxy,
    port: (i32, Value),
) -> Result<Vec<Op>, Error> {
    let (name, namespace, owner) = (inputs.name, inputs.namespace, inputs.owner);
    let mut ops = vec![
        Op::Service(Box::new(workload::service(
            &proxy::stable_name(name),
            owner,
            &inputs.selector,
            Some(Track::Stable),
            port.clone(),
        )?)),
        Op::Ensure(Box::new(proxy::service_account(name, owner)?)),
        Op::Ensure(Box::new(proxy::role(name, owner)?)),
        Op::Ensure(Box::new(proxy::role_binding(name, namespace, owner)?)),
    ];
    // Made while the proxies' Deployment is missing, and tried again
    // (created blind, "already exists" taken as done) while it is short of
    // pods: the controller may not read Secrets, and a proxy pod whose
    // Secret was deleted never starts. A Secret made again has a new key,
    // so cookies signed before are ignored by the pods that read it.
    if inputs.proxy_replicas.is_none() || inputs.proxy_short {
        ops.push(Op::StickySecret);
    }
    ops.push(Op::Deployment {
        object: Box::new(proxy::deployment(name, namespace, owner, p, port.0)?),
        template: true,
    });
    ops.push(Op::Service(Box::new(proxy::headless_service(name, owner)?)));
    Ok(ops)
}

/// `status.stableTemplate`, if it is the template of `status.stableRevision`.
pub fn remembered_stable_template(status: &CanaryStatus) -> Option<Value> {
    let t = Value::Object(status.stable_template.clone()?);
    (workload::template_revision(&t) == status.stable_revision.as_deref()).then_some(t)
}

/// The Deployments and Services as this reconcile read them: an operation
/// on one acts on that copy instead of reading it again, and keeps the
/// copy its write returned for the next operation on it.
#[derive(Debug, Default)]
pub struct Seen {
    deployments: std::sync::Mutex<std::collections::HashMap<String, Option<Deployment>>>,
    services: std::sync::Mutex<std::collections::HashMap<String, Option<Service>>>,
}

impl Seen {
    /// Records Deployment `name` as read (`None`: it does not exist).
    pub fn deployment(&self, name: &str, d: Option<Deployment>) {
        if let Ok(mut m) = self.deployments.lock() {
            m.insert(name.to_owned(), d);
        }
    }

    /// Records Service `name` as read (`None`: it does not exist).
    pub fn service(&self, name: &str, s: Option<Service>) {
        if let Ok(mut m) = self.services.lock() {
            m.insert(name.to_owned(), s);
        }
    }

    /// Deployment `name` as read, if it was.
    pub fn known_deployment(&self, name: &str) -> Option<Option<Deployment>> {
        self.deployments.lock().ok()?.get(name).cloned()
    }

    /// Service `name` as read, if it was.
    pub fn known_service(&self, name: &str) -> Option<Option<Service>> {
        self.services.lock().ok()?.get(name).cloned()
    }
}

/// Where [`execute`] acts.
pub struct Cluster<'a> {
    /// Deployments of the Canary's namespace.
    pub deployments: Api<Deployment>,
    /// Services of the Canary's namespace.
    pub services: Api<Service>,
    /// The router and its target.
    pub router: &'a dyn TrafficRouter,
    /// The router's target.
    pub target: RouteTarget,
    /// Whether this replica may still write.
    pub leadership: &'a Leadership,
    /// The objects this reconcile read already.
    pub seen: Seen,
    /// The watch caches, told of every Deployment written.
    pub caches: &'a crate::cache::Caches,
}

/// Carries out `ops` in order; events go to `publish`. Stops with
/// [`Error::NotLeader`] before the first cluster operation this replica's
/// Lease no longer covers (events are only recorded after the operations
/// before them succeeded, so they need no check of their own).
pub async fn execute<F, Fut>(
    cluster: &Cluster<'_>,
    ops: Vec<Op>,
    mut publish: F,
) -> Result<(), Error>
where
    F: FnMut(Event) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    for op in ops {
        if !matches!(op, Op::Event(_)) {
            cluster.leadership.check()?;
        }
        match op {
            Op::Deployment { object, template } => {
                let name = object
                    .pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                let known = cluster.seen.known_deployment(&name);
                let creates = matches!(known, Some(None));
                let d = workload::ensure_deployment(&cluster.deployments, &object, template, known)
                    .await;
                if creates {
                    let ns = cluster.deployments.namespace().unwrap_or_default();
                    cluster.caches.may_exist(ns, &name);
                }
                let d = d?;
                cluster.caches.wrote(&d);
                cluster.seen.deployment(&name, Some(d));
            }
            Op::Service(s) => {
                let name = s.metadata.name.clone().unwrap_or_default();
                let known = cluster.seen.known_service(&name);
                let s = workload::ensure_service(&cluster.services, &s, known).await?;
                cluster.seen.service(&name, Some(s));
            }
            Op::Scale { name, replicas } => {
                let known = cluster.seen.known_deployment(&name);
                let d = workload::scale(&cluster.deployments, &name, replicas, known).await?;
                d.iter().for_each(|d| cluster.caches.wrote(d));
                cluster.seen.deployment(&name, d);
            }
            Op::Ensure(object) => ensure_object(cluster, &object, false).await?,
            Op::StickySecret => {
                let t = &cluster.target;
                let secret = proxy::secret(&t.name, &t.owner, &proxy::new_key()?)?;
                ensure_object(cluster, &secret, true).await?;
            }
            Op::Routes(r) => cluster.router.apply(&cluster.target, &r).await?,
            Op::Event(e) => publish(e).await,
        }
    }
    Ok(())
}

/// Creates `object` in the Canary's namespace if it is missing: read
/// first, or, with `blind`, created at once and a conflict taken as "it
/// exists" (for a Secret, which the controller may not read).
async fn ensure_object(cluster: &Cluster<'_>, object: &Value, blind: bool) -> Result<(), Error> {
    use kube::api::{DynamicObject, PostParams};
    let Some(ar) = proxy::api_resource(object) else {
        return Err(Error::Missing {
            field: "kind",
            what: format!("no API resource for {}", object["kind"]),
        });
    };
    let namespace = cluster.target.namespace.as_str();
    let api: Api<DynamicObject> =
        Api::namespaced_with(cluster.target.client.clone(), namespace, &ar);
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if !blind && api.get_opt(name).await?.is_some() {
        return Ok(());
    }
    let desired: DynamicObject = serde_json::from_value(object.clone())?;
    match api.create(&PostParams::default(), &desired).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::gateway::GatewayApi;
    use crate::router::replicas::Replicas;
    use coalmine_core::rollout::{Observation, decide};
    use coalmine_core::{Time, validate};
    use serde_json::json;

    fn owner() -> OwnerReference {
        OwnerReference {
            api_version: "coalmine.dev/v1alpha1".into(),
            kind: "Canary".into(),
            name: "web".into(),
            uid: "u".into(),
            ..OwnerReference::default()
        }
    }

    fn canary(image: &str) -> (coalmine_core::Canary, coalmine_core::Plan) {
        let doc = json!({
            "apiVersion": "coalmine.dev/v1alpha1", "kind": "Canary",
            "metadata": {"name": "web"},
            "spec": {
                "replicas": 4,
                "template": {"metadata": {"labels": {"app": "web"}},
                             "spec": {"containers": [{"name": "web", "image": image}]}},
                "steps": [{"setWeight": 25}, {"pause": {}}]
            }
        });
        let (c, p, _) = validate::load(&doc.to_string()).expect("valid");
        (c, p)
    }

    /// The inputs for the Canary `web` with no canary Deployment yet.
    fn web<'a>(
        c: &'a coalmine_core::Canary,
        desired: &'a str,
        owner: &'a OwnerReference,
    ) -> Inputs<'a> {
        Inputs {
            name: "web",
            namespace: "shop",
            spec: &c.spec,
            desired,
            owner,
            canary_template: None,
            selector: workload::selector_labels(&c.spec),
            current: (0, 0),
            serving: None,
            hold_canary: false,
            proxy_replicas: None,
            proxy_short: false,
        }
    }

    fn obs(desired: &str, canary_ready: bool, stable: Option<&str>) -> Observation {
        Observation {
            desired_revision: desired.to_owned(),
            canary_ready,
            canary_ready_at: None,
            canary_gone: !canary_ready,
            canary_down: None,
            stable_ready_revision: stable.map(str::to_owned),
            analysis: None,
            command: None,
        }
    }

    /// A built Deployment through the compiled types, to read in tests.
    fn typed(object: &Value) -> Deployment {
        serde_json::from_value(object.clone()).expect("a Deployment")
    }

    fn replicas_of(ops: &[Op], name: &str) -> Vec<i32> {
        ops.iter()
            .filter_map(|o| match o {
                Op::Deployment { object, .. }
                    if typed(object).metadata.name.as_deref() == Some(name) =>
                {
                    typed(object).spec.as_ref().and_then(|s| s.replicas)
                }
                Op::Scale { name: n, replicas } if n == name => Some(*replicas),
                _ => None,
            })
            .collect()
    }

    fn image_of(ops: &[Op], name: &str) -> Option<String> {
        ops.iter().find_map(|o| match o {
            Op::Deployment { object, template }
                if typed(object).metadata.name.as_deref() == Some(name) && *template =>
            {
                typed(object)
                    .spec
                    .as_ref()?
                    .template
                    .spec
                    .as_ref()?
                    .containers[0]
                    .image
                    .clone()
            }
            _ => None,
        })
    }

    fn at(phase: Phase, weight: u8) -> Decision {
        Decision {
            status: CanaryStatus {
                phase,
                weight: coalmine_core::Percent::new(weight).expect("a percent"),
                ..CanaryStatus::default()
            },
            actions: vec![Action::SetRoutes(Routes {
                canary_weight: weight,
                ..Routes::all_stable()
            })],
            requeue_after: None,
        }
    }

    #[test]
    fn the_replicas_router_grows_one_track_before_it_shrinks_the_other() {
        let (c, _) = canary("web:2");
        let owner = owner();
        let with = |current: (i32, i32), stable: i32, canary: i32| Inputs {
            current,
            serving: Some(Serving { stable, canary }),
            ..web(&c, "r", &owner)
        };
        let split = |d: &Decision, i: &Inputs<'_>| split(&Replicas, 4, d, i);
        // 25%: the canary pod starts; stable keeps 4 until it is Ready.
        let d = at(Phase::Progressing, 25);
        assert_eq!(split(&d, &with((4, 0), 4, 0)), (4, 1, true));
        assert_eq!(split(&d, &with((4, 1), 4, 1)), (3, 1, true));
        // 100%: stable shrinks pod by pod as canary pods become Ready.
        let d = at(Phase::Paused, 100);
        assert_eq!(split(&d, &with((3, 1), 3, 1)), (3, 4, true));
        assert_eq!(split(&d, &with((3, 4), 3, 3)), (1, 4, true));
        assert_eq!(split(&d, &with((1, 4), 1, 4)), (0, 4, true));
        // Back down to 25%: the canary waits for stable's pods.
        let d = at(Phase::Progressing, 25);
        assert_eq!(split(&d, &with((0, 4), 0, 4)), (3, 4, true));
        assert_eq!(split(&d, &with((3, 4), 2, 4)), (3, 2, true));
        // Promotion: every replica on the canary first, then stable's template.
        let d = at(Phase::Promoting, 25);
        assert_eq!(split(&d, &with((3, 1), 3, 1)), (3, 4, false));
        assert_eq!(split(&d, &with((3, 4), 3, 4)), (4, 4, true));
        // Promoted or rolled back: the canary goes as stable serves.
        for phase in [Phase::Promoted, Phase::RollingBack] {
            let d = at(phase, 0);
            assert_eq!(split(&d, &with((4, 4), 1, 4)), (4, 3, true));
            assert_eq!(split(&d, &with((4, 3), 4, 3)), (4, 0, true));
            // Never grown back up for a stable pod that died later.
            assert_eq!(split(&d, &with((4, 0), 2, 0)), (4, 0, true));
        }
    }

    #[test]
    fn behind_a_router_the_canary_keeps_its_pods_for_the_scale_down_delay() {
        let (c, _) = canary("web:2");
        let owner = owner();
        let gw = GatewayApi {
            http_route: "web".into(),
        };
        let d = at(Phase::RolledBack, 0);
        let held = Inputs {
            current: (4, 4),
            hold_canary: true,
            ..web(&c, "r", &owner)
        };
        assert_eq!(split(&gw, 4, &d, &held), (4, 4, true));
        let due = Inputs {
            hold_canary: false,
            ..held.clone()
        };
        assert_eq!(split(&gw, 4, &d, &due), (4, 0, true));
        // While traffic is on the canary the delay does not apply.
        assert_eq!(split(&gw, 4, &at(Phase::Paused, 50), &held), (4, 4, true));
    }

    #[test]
    fn a_first_deploy_creates_stable_and_its_service() {
        let (c, plan) = canary("web:1");
        let desired = c.spec.desired_revision();
        let d = decide(
            &plan,
            &CanaryStatus::default(),
            &obs(&desired, false, None),
            Time::from_unix_millis(0),
        );
        let owner = owner();
        let inputs = web(&c, &desired, &owner);
        let ops = operations(&inputs, &Replicas, &d).expect("ops");
        assert_eq!(replicas_of(&ops, "web"), vec![4, 4]);
        assert!(replicas_of(&ops, "web-canary").iter().all(|r| *r == 0));
        assert!(
            ops.iter()
                .any(|o| matches!(o, Op::Service(s) if s.metadata.name.as_deref() == Some("web")))
        );
        assert!(
            ops.iter()
                .any(|o| matches!(o, Op::Event(e) if e.reason == "Initialized"))
        );
    }

    #[test]
    fn a_new_revision_runs_the_canary_at_its_weight_and_leaves_stable_alone() {
        let (old, plan) = canary("web:1");
        let stable_rev = old.spec.desired_revision();
        let (c, _) = canary("web:2");
        let desired = c.spec.desired_revision();
        let status = CanaryStatus {
            stable_revision: Some(stable_rev.clone()),
            ..CanaryStatus::default()
        };
        let t0 = Time::from_unix_millis(0);
        let started = decide(&plan, &status, &obs(&desired, false, Some(&stable_rev)), t0);
        assert_eq!(started.status.phase, Phase::Progressing);
        let stepped = decide(
            &plan,
            &started.status,
            &obs(&desired, true, Some(&stable_rev)),
            t0,
        );
        assert_eq!(stepped.status.weight, 25);
        let owner = owner();
        let inputs = web(&c, &desired, &owner);
        let ops = operations(&inputs, &Replicas, &stepped).expect("ops");
        assert_eq!(image_of(&ops, "web-canary").as_deref(), Some("web:2"));
        assert_eq!(replicas_of(&ops, "web-canary"), vec![1], "25% of 4");
        assert_eq!(replicas_of(&ops, "web"), vec![3], "stable scaled to match");
        assert_eq!(image_of(&ops, "web"), None, "stable's template untouched");
        // Behind a router the canary runs every replica and gets a Service.
        let gw = GatewayApi {
            http_route: "web".into(),
        };
        let ops = operations(&inputs, &gw, &stepped).expect("ops");
        assert_eq!(replicas_of(&ops, "web-canary"), vec![4]);
        assert!(ops.iter().any(
            |o| matches!(o, Op::Service(s) if s.metadata.name.as_deref() == Some("web-canary"))
        ));
        assert!(
            ops.iter()
                .any(|o| matches!(o, Op::Routes(r) if r.canary_weight == 25))
        );
    }

    #[test]
    fn mid_rollout_stable_comes_back_from_the_remembered_template() {
        let (old, plan) = canary("web:1");
        let stable_rev = old.spec.desired_revision();
        let (c, _) = canary("web:2");
        let desired = c.spec.desired_revision();
        let remembered = workload::pod_template(
            old.spec.template.as_ref().expect("template"),
            Track::Stable,
            &stable_rev,
        );
        let status = CanaryStatus {
            phase: Phase::Paused,
            step: 1,
            weight: coalmine_core::Percent::new(25).expect("a percent"),
            stable_revision: Some(stable_rev.clone()),
            canary_revision: Some(desired.clone()),
            ..CanaryStatus::default()
        };
        let owner = owner();
        let inputs = web(&c, &desired, &owner);
        let stable_op = |d: &Decision| {
            operations(&inputs, &Replicas, d)
                .expect("ops")
                .into_iter()
                .find_map(|o| match o {
                    Op::Deployment { object, template }
                        if typed(&object).metadata.name.as_deref() == Some("web") =>
                    {
                        Some((typed(&object), template))
                    }
                    _ => None,
                })
        };
        let t0 = Time::from_unix_millis(0);
        let without = decide(&plan, &status, &obs(&desired, true, Some(&stable_rev)), t0);
        assert!(stable_op(&without).is_none(), "nothing to recreate it from");
        let with = CanaryStatus {
            stable_template: remembered.as_object().cloned(),
            ..status.clone()
        };
        let d = decide(&plan, &with, &obs(&desired, true, Some(&stable_rev)), t0);
        let (object, template) = stable_op(&d).expect("stable ensured");
        assert!(!template, "only created when missing, never rewritten");
        let spec = object.spec.expect("spec");
        assert_eq!(spec.replicas, Some(3), "at the rollout's split");
        let image = spec.template.spec.expect("pod spec").containers[0]
            .image
            .clone();
        assert_eq!(image.as_deref(), Some("web:1"), "stable's, not the spec's");
        // A remembered template of another revision is not stable's.
        let stale = CanaryStatus {
            stable_template: remembered.as_object().cloned(),
            stable_revision: Some("other".into()),
            ..status
        };
        let d = decide(&plan, &stale, &obs(&desired, true, Some("other")), t0);
        assert!(stable_op(&d).is_none());
    }

    #[test]
    fn promotion_gives_stable_the_canarys_template_even_after_a_newer_edit() {
        let (old, plan) = canary("web:1");
        let stable_rev = old.spec.desired_revision();
        let (two, _) = canary("web:2");
        let rev2 = two.spec.desired_revision();
        let status = CanaryStatus {
            phase: Phase::Promoting,
            stable_revision: Some(stable_rev.clone()),
            canary_revision: Some(rev2.clone()),
            step: 2,
            weight: coalmine_core::Percent::new(25).expect("a percent"),
            ..CanaryStatus::default()
        };
        // The spec moved on to web:3 while web:2 is being promoted.
        let (three, _) = canary("web:3");
        let rev3 = three.spec.desired_revision();
        let d = decide(
            &plan,
            &status,
            &obs(&rev3, true, Some(&stable_rev)),
            Time::from_unix_millis(0),
        );
        assert_eq!(d.status.phase, Phase::Promoting);
        let canary_t = workload::pod_template(
            two.spec.template.as_ref().expect("template"),
            Track::Canary,
            &rev2,
        );
        let owner = owner();
        let inputs = Inputs {
            canary_template: Some(canary_t),
            ..web(&three, &rev3, &owner)
        };
        let ops = operations(&inputs, &Replicas, &d).expect("ops");
        assert_eq!(image_of(&ops, "web").as_deref(), Some("web:2"));
        assert_eq!(image_of(&ops, "web-canary").as_deref(), Some("web:2"));
    }

    #[test]
    fn a_rollback_routes_everything_to_stable_before_scaling_the_canary_down() {
        let (old, plan) = canary("web:1");
        let stable_rev = old.spec.desired_revision();
        let (c, _) = canary("web:2");
        let desired = c.spec.desired_revision();
        let status = CanaryStatus {
            phase: Phase::RollingBack,
            stable_revision: Some(stable_rev.clone()),
            canary_revision: Some(desired.clone()),
            ..CanaryStatus::default()
        };
        let d = decide(
            &plan,
            &status,
            &obs(&desired, true, Some(&stable_rev)),
            Time::from_unix_millis(0),
        );
        let owner = owner();
        let inputs = web(&c, &desired, &owner);
        let ops = operations(&inputs, &Replicas, &d).expect("ops");
        let routes = ops
            .iter()
            .position(|o| matches!(o, Op::Routes(r) if *r == Routes::all_stable()));
        let down = ops
            .iter()
            .position(|o| matches!(o, Op::Scale { name, replicas: 0 } if name == "web-canary"));
        assert!(
            routes.is_some() && down.is_some() && routes < down,
            "{ops:?}"
        );
        assert_eq!(replicas_of(&ops, "web"), vec![4]);
    }

    fn service_of(ops: &[Op], name: &str) -> Option<Value> {
        ops.iter().find_map(|o| match o {
            Op::Service(s) if s.metadata.name.as_deref() == Some(name) => {
                serde_json::to_value(s).ok()
            }
            _ => None,
        })
    }

    fn first_deploy() -> (coalmine_core::Canary, String, Decision) {
        let (c, plan) = canary("web:1");
        let desired = c.spec.desired_revision();
        let d = decide(
            &plan,
            &CanaryStatus::default(),
            &obs(&desired, false, None),
            Time::from_unix_millis(0),
        );
        (c, desired, d)
    }

    #[test]
    fn the_proxy_router_switches_service_name_only_once_a_proxy_is_ready() {
        use crate::router::proxy::Proxy;
        use coalmine_core::spec::ProxyRouting;
        let (c, desired, d) = first_deploy();
        let owner = owner();
        let inputs = web(&c, &desired, &owner);
        let unready = Proxy::new(&ProxyRouting::default(), "img", 0);
        let ops = operations(&inputs, &unready, &d).expect("ops");
        let front = service_of(&ops, "web").expect("Service web");
        assert_eq!(
            front["spec"]["selector"],
            json!({"app": "web", "coalmine.dev/track": "stable"}),
            "no proxy Ready: stable pods"
        );
        assert_eq!(front["spec"]["ports"][0]["targetPort"], 80);
        let stable = service_of(&ops, "web-stable").expect("Service web-stable");
        assert_eq!(stable["spec"]["selector"], front["spec"]["selector"]);
        assert_eq!(stable["spec"]["ports"], front["spec"]["ports"]);
        assert_eq!(
            service_of(&ops, "web-proxy").expect("headless")["spec"]["clusterIP"],
            "None"
        );
        let kinds: Vec<String> = ops
            .iter()
            .filter_map(|o| match o {
                Op::Ensure(v) => v["kind"].as_str().map(str::to_owned),
                Op::StickySecret => Some("Secret".into()),
                Op::Deployment { object, template }
                    if object["metadata"]["name"] == "web-proxy" =>
                {
                    assert!(template, "the proxy's template is kept in shape");
                    Some("Deployment".into())
                }
                _ => None,
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "ServiceAccount",
                "Role",
                "RoleBinding",
                "Secret",
                "Deployment"
            ]
        );
        assert!(
            ops.iter()
                .any(|o| matches!(o, Op::Routes(r) if *r == Routes::all_stable()))
        );

        let ready = Proxy {
            ready: 1,
            ..unready.clone()
        };
        let ops = operations(&inputs, &ready, &d).expect("ops");
        let front = service_of(&ops, "web").expect("Service web");
        assert_eq!(
            front["spec"]["selector"],
            json!({"coalmine.dev/proxy": "web"})
        );
        assert_eq!(front["spec"]["ports"][0]["port"], 80);
        assert_eq!(front["spec"]["ports"][0]["targetPort"], 8080);
        // The Secret is made while the proxy's Deployment is missing, not
        // at every step of a running one.
        let running = Inputs {
            proxy_replicas: Some(2),
            ..inputs.clone()
        };
        let ops = operations(&running, &ready, &d).expect("ops");
        assert!(!ops.iter().any(|o| matches!(o, Op::StickySecret)));
        // Tried again while the proxies are short of pods: a pod whose
        // Secret was deleted by hand cannot start.
        let short = Inputs {
            proxy_replicas: Some(2),
            proxy_short: true,
            ..inputs.clone()
        };
        let ops = operations(&short, &ready, &d).expect("ops");
        let secret = ops.iter().position(|o| matches!(o, Op::StickySecret));
        let deployment = ops.iter().position(
            |o| matches!(o, Op::Deployment { object, .. } if object["metadata"]["name"] == "web-proxy"),
        );
        assert!(secret.is_some() && secret < deployment, "{ops:?}");
        assert!(
            !ops.iter()
                .any(|o| matches!(o, Op::Scale { name, .. } if name == "web-proxy"))
        );
    }

    #[test]
    fn turning_the_proxy_router_off_points_service_name_at_stable_before_the_proxies_go() {
        let (c, desired, d) = first_deploy();
        let owner = owner();
        let inputs = Inputs {
            proxy_replicas: Some(2),
            ..web(&c, &desired, &owner)
        };
        let gw = GatewayApi {
            http_route: "web".into(),
        };
        for router in [&Replicas as &dyn TrafficRouter, &gw] {
            let ops = operations(&inputs, router, &d).expect("ops");
            let front = ops.iter().position(
                |o| matches!(o, Op::Service(s) if s.metadata.name.as_deref() == Some("web")),
            );
            let down = ops
                .iter()
                .position(|o| matches!(o, Op::Scale { name, replicas: 0 } if name == "web-proxy"));
            assert!(front.is_some() && down.is_some() && front < down, "{ops:?}");
            let sel = &service_of(&ops, "web").expect("web")["spec"]["selector"];
            assert!(sel.get("coalmine.dev/proxy").is_none());
            assert!(
                !ops.iter()
                    .any(|o| matches!(o, Op::Ensure(_) | Op::StickySecret))
            );
        }
        // Once at zero, nothing more.
        let off = Inputs {
            proxy_replicas: Some(0),
            ..inputs.clone()
        };
        let ops = operations(&off, &Replicas, &d).expect("ops");
        assert!(
            !ops.iter()
                .any(|o| matches!(o, Op::Scale { name, .. } if name == "web-proxy"))
        );
    }
}
