//! Leader election with a `coordination.k8s.io/v1` Lease, so that of several
//! controller replicas exactly one acts (kube-runtime has none of its own).
//!
//! Each replica tries every `duration / 3`: it takes the Lease when it is
//! free or its holder has not renewed for `duration`, and renews it while it
//! holds it. Every write carries the resourceVersion read, so of two
//! replicas racing for the Lease one gets 409 and stays a follower. A
//! leader that cannot renew (API server unreachable, 409) steps down at
//! once, before its Lease can expire and another replica take over; a
//! follower waits a whole `duration` after the last renewal. That gap is
//! what keeps two replicas from acting at the same time.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, PostParams};

use crate::ops::Metrics;

/// Where and as whom to hold the Lease.
#[derive(Debug, Clone)]
pub struct Election {
    /// The Lease's namespace.
    pub namespace: String,
    /// The Lease's name.
    pub name: String,
    /// This replica's identity (e.g. its pod name).
    pub identity: String,
    /// How long a Lease holds without renewal.
    pub duration: Duration,
}

/// What one attempt decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// This replica holds the Lease.
    Leader,
    /// Another replica holds it.
    Follower,
}

/// Whether `lease` is free for `identity` at `now` (pure).
pub fn free_for(lease: &Lease, identity: &str, now: Timestamp, duration: Duration) -> bool {
    let Some(spec) = &lease.spec else {
        return true;
    };
    match spec.holder_identity.as_deref() {
        None | Some("") => true,
        Some(h) if h == identity => true,
        Some(_) => {
            let secs = spec
                .lease_duration_seconds
                .map_or(duration.as_secs(), |s| u64::try_from(s).unwrap_or(0));
            let Some(renewed) = spec.renew_time.as_ref().or(spec.acquire_time.as_ref()) else {
                return true;
            };
            let age = now.as_millisecond() - renewed.0.as_millisecond();
            age > i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX)
        }
    }
}

impl Election {
    /// One attempt to take or renew the Lease.
    pub async fn attempt(&self, client: &Client) -> Result<Outcome, kube::Error> {
        let api: Api<Lease> = Api::namespaced(client.clone(), &self.namespace);
        let now = Timestamp::now();
        let secs = i32::try_from(self.duration.as_secs().max(1)).unwrap_or(15);
        match api.get_opt(&self.name).await? {
            None => {
                let mut lease = Lease::default();
                lease.metadata.name = Some(self.name.clone());
                lease.spec = Some(k8s_openapi::api::coordination::v1::LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(secs),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(0),
                    ..Default::default()
                });
                match api.create(&PostParams::default(), &lease).await {
                    Ok(_) => Ok(Outcome::Leader),
                    Err(kube::Error::Api(s)) if s.code == 409 => Ok(Outcome::Follower),
                    Err(e) => Err(e),
                }
            }
            Some(mut lease) => {
                if !free_for(&lease, &self.identity, now, self.duration) {
                    return Ok(Outcome::Follower);
                }
                let spec = lease.spec.get_or_insert_with(Default::default);
                if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
                    spec.holder_identity = Some(self.identity.clone());
                    spec.acquire_time = Some(MicroTime(now));
                    spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
                }
                spec.renew_time = Some(MicroTime(now));
                spec.lease_duration_seconds = Some(secs);
                match api
                    .replace(&self.name, &PostParams::default(), &lease)
                    .await
                {
                    Ok(_) => Ok(Outcome::Leader),
                    Err(kube::Error::Api(s)) if s.code == 409 => Ok(Outcome::Follower),
                    Err(e) => Err(e),
                }
            }
        }
    }

    /// Keeps `leader` true exactly while this replica holds the Lease, until
    /// `stop`; then releases the Lease if it holds it.
    pub async fn run(
        self,
        client: Client,
        leader: Arc<AtomicBool>,
        metrics: Arc<Metrics>,
        stop: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(stop);
        let period = (self.duration / 3).max(Duration::from_millis(100));
        loop {
            // An attempt that hangs must not keep a leader acting past its
            // Lease: it counts as a failure after one period.
            let outcome = tokio::time::timeout(period, self.attempt(&client)).await;
            let is = matches!(outcome, Ok(Ok(Outcome::Leader)));
            match &outcome {
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, lease = %self.name, "leader election: cannot reach the Lease; not acting");
                }
                Err(_) => {
                    tracing::warn!(lease = %self.name, "leader election: no answer within {period:?}; not acting");
                }
                Ok(Ok(_)) => {}
            }
            if leader.swap(is, Ordering::SeqCst) != is {
                tracing::info!(identity = %self.identity, leader = is, "leadership changed");
            }
            metrics.set_leader(is);
            tokio::select! {
                _ = tokio::time::sleep(period) => {}
                _ = &mut stop => break,
            }
        }
        if leader.swap(false, Ordering::SeqCst) {
            metrics.set_leader(false);
            self.release(&client).await;
        }
    }

    /// Gives the Lease up so another replica takes over without waiting.
    async fn release(&self, client: &Client) {
        let api: Api<Lease> = Api::namespaced(client.clone(), &self.namespace);
        if let Ok(Some(mut lease)) = api.get_opt(&self.name).await
            && let Some(spec) = lease.spec.as_mut()
            && spec.holder_identity.as_deref() == Some(self.identity.as_str())
        {
            spec.holder_identity = None;
            let _ = api
                .replace(&self.name, &PostParams::default(), &lease)
                .await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_is_free_when_unheld_ours_or_expired() {
        let now = Timestamp::from_second(1_000).expect("a time");
        let d = Duration::from_secs(15);
        let mut lease = Lease::default();
        assert!(free_for(&lease, "a", now, d));
        lease.spec = Some(k8s_openapi::api::coordination::v1::LeaseSpec {
            holder_identity: Some("b".into()),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime(Timestamp::from_second(990).expect("a time"))),
            ..Default::default()
        });
        assert!(!free_for(&lease, "a", now, d), "b renewed 10s ago");
        assert!(free_for(&lease, "b", now, d), "b's own");
        let later = Timestamp::from_second(1_006).expect("a time");
        assert!(free_for(&lease, "a", later, d), "16s without renewal");
    }
}
