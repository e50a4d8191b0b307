//! Traffic routers: how a route table ([`Routes`]) is put in effect in a
//! cluster. One small trait, [`TrafficRouter`], and five routers:
//!
//! - [`replicas`]: no router object; the canary's share of the pods behind
//!   one Service is the split, so the replica counts follow the weight;
//! - [`gateway`]: weights on the backendRefs of the user's HTTPRoute, and
//!   header routes as an extra rule placed first;
//! - [`nginx`]: a managed `NAME-canary` Ingress with ingress-nginx's canary
//!   annotations, copying the user's Ingress rules;
//! - [`istio`]: weights on the destinations of the user's VirtualService
//!   (Services or DestinationRule subsets), header routes as an extra HTTP
//!   route placed before the weighed one, and its mirror;
//! - [`proxy`]: coalmine's own proxy as a Deployment `NAME-proxy` in front
//!   of both versions, its routes in the ConfigMap `NAME-proxy`.
//!
//! Every `apply` is level-triggered and idempotent: it reads the object,
//! computes the wanted one with a pure function (unit-tested), and writes
//! only when they differ; a 409 is retried from a fresh read.

pub mod gateway;
pub mod istio;
pub mod nginx;
pub mod proxy;
pub mod replicas;

use coalmine_core::plan::Router;
use coalmine_core::routes::Routes;
use futures_util::future::BoxFuture;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Client;

use crate::Error;

/// Where a router acts: the Canary's objects.
#[derive(Clone)]
pub struct RouteTarget {
    /// The API client.
    pub client: Client,
    /// The Canary's namespace.
    pub namespace: String,
    /// The Canary's name, also the stable Service's.
    pub name: String,
    /// The canary Service's name.
    pub canary_service: String,
    /// The Services' port.
    pub port: i32,
    /// An owner reference to the Canary, for objects the router creates.
    pub owner: OwnerReference,
}

/// One way of splitting traffic between the stable and canary pods.
pub trait TrafficRouter: Send + Sync {
    /// Whether the canary needs its own Service `NAME-canary` (and the
    /// stable Service selects only stable pods).
    fn canary_service(&self) -> bool;

    /// Replicas of (stable, canary) at this weight, for `total` wanted.
    fn replicas(&self, total: i32, weight: u8) -> (i32, i32) {
        let _ = weight;
        (total, total)
    }

    /// The canary's share of real requests at this weight.
    fn share(&self, total: i32, weight: u8) -> f64 {
        let _ = total;
        f64::from(weight) / 100.0
    }

    /// Puts `routes` in effect.
    fn apply<'a>(
        &'a self,
        target: &'a RouteTarget,
        routes: &'a Routes,
    ) -> BoxFuture<'a, Result<(), Error>>;

    /// Why the router's object is refused by whoever serves it (a
    /// Gateway's `Accepted`/`ResolvedRefs` conditions on an HTTPRoute),
    /// when it is; `None` when it is accepted or nothing says.
    fn refused<'a>(
        &'a self,
        target: &'a RouteTarget,
    ) -> BoxFuture<'a, Result<Option<String>, Error>> {
        let _ = target;
        Box::pin(async { Ok(None) })
    }

    /// Removes what the router added to objects the Canary does not own
    /// (the Canary is being deleted): all traffic to stable.
    fn cleanup<'a>(&'a self, target: &'a RouteTarget) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            let all = Routes::all_stable();
            self.apply(target, &all).await
        })
    }

    /// The proxy router's settings and state, for the objects it runs
    /// beside its routes ([`crate::apply::operations`]); `None` for the
    /// others.
    fn proxy(&self) -> Option<&proxy::Proxy> {
        None
    }
}

/// The router a plan names. The proxy router gets the default settings
/// and no Ready endpoint (what a deleted Canary's cleanup needs); a
/// reconcile builds it from the spec with [`proxy::Proxy::new`].
pub fn for_plan(router: &Router) -> Box<dyn TrafficRouter> {
    match router {
        Router::GatewayApi { http_route } => Box::new(gateway::GatewayApi {
            http_route: http_route.clone(),
        }),
        Router::Nginx { ingress } => Box::new(nginx::Nginx {
            ingress: ingress.clone(),
        }),
        Router::Istio {
            virtual_service,
            route,
            destination_rule,
        } => Box::new(istio::Istio {
            virtual_service: virtual_service.clone(),
            route: route.clone(),
            subsets: destination_rule
                .as_ref()
                .map(|d| (d.stable_subset_name.clone(), d.canary_subset_name.clone())),
        }),
        Router::Proxy => Box::new(proxy::Proxy::new(
            &coalmine_core::spec::ProxyRouting::default(),
            &proxy::default_image(),
            0,
        )),
        Router::Replicas => Box::new(replicas::Replicas),
    }
}
