//! The `replicas` router: one Service over both tracks, the split set by
//! how many pods each track runs. Coarse (with 4 replicas, 5% is one pod,
//! 25%), no header routes, no mirror: validation refuses those steps.

use coalmine_core::routes::Routes;
use futures_util::future::BoxFuture;

use super::{RouteTarget, TrafficRouter};
use crate::Error;

/// The replica-ratio router.
#[derive(Debug, Clone, Copy, Default)]
pub struct Replicas;

/// Canary pods for `weight` percent of `total`: rounded up, so any weight
/// above zero runs at least one pod, and never more than `total`.
pub fn canary_replicas(total: i32, weight: u8) -> i32 {
    if weight == 0 || total <= 0 {
        return 0;
    }
    let total = i64::from(total);
    let c = (total * i64::from(weight) + 99) / 100;
    i32::try_from(c.clamp(1, total)).unwrap_or(1)
}

impl TrafficRouter for Replicas {
    fn canary_service(&self) -> bool {
        false
    }

    fn replicas(&self, total: i32, weight: u8) -> (i32, i32) {
        let canary = canary_replicas(total, weight);
        ((total - canary).max(0), canary)
    }

    fn share(&self, total: i32, weight: u8) -> f64 {
        if total <= 0 {
            return 0.0;
        }
        f64::from(canary_replicas(total, weight)) / f64::from(total)
    }

    // The replica counts are the routes; the reconciler sets them.
    fn apply<'a>(&'a self, _: &'a RouteTarget, _: &'a Routes) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async { Ok(()) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canary_pods_follow_the_weight_rounded_up() {
        let r = Replicas;
        assert_eq!(r.replicas(4, 0), (4, 0));
        assert_eq!(r.replicas(4, 5), (3, 1));
        assert_eq!(r.replicas(4, 25), (3, 1));
        assert_eq!(r.replicas(4, 50), (2, 2));
        assert_eq!(r.replicas(4, 100), (0, 4));
        assert_eq!(r.replicas(10, 10), (9, 1));
        assert_eq!(r.replicas(0, 50), (0, 0));
        assert!((r.share(4, 5) - 0.25).abs() < 1e-9);
    }
}
