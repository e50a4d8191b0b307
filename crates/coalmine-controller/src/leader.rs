//! Leader election with a `coordination.k8s.io/v1` Lease, so that of several
//! controller replicas exactly one acts (kube-runtime has none of its own).
//!
//! Each replica tries every `duration / 3`: it takes the Lease when it is
//! free or its holder has not renewed for `duration`, and renews it while it
//! holds it. Every write carries the resourceVersion read, so of two
//! replicas racing for the Lease one gets 409 and stays a follower. A
//! leader that cannot renew (API server unreachable, 409) steps down at
//! once, before its Lease can expire and another replica take over; a
//! follower waits a whole `duration` after it last saw the Lease change,
//! measured on its own monotonic clock ([`free_for`]), so the replicas'
//! wall clocks need not agree. That gap is what keeps two replicas from
//! acting at the same time.
//!
//! Stepping down "at once" is only as quick as the loop notices, and a
//! reconcile that started as leader may still be running. So the loop also
//! keeps a [`Leadership`]: the local instant until which this replica's
//! Lease is valid — the start of the last successful renewal plus
//! `duration − duration/3` (the renew deadline). Every write a reconcile
//! makes checks it first ([`Leadership::check`], an atomic load, no API
//! call): a replica whose renewals stall stops writing a third of a Lease
//! before any other replica may take the Lease, a margin for clock skew
//! between the replicas and for a write already on the wire.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

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

/// Until when this replica may write, as the Lease loop last established
/// it (shared by the loop and every reconcile).
#[derive(Debug)]
pub struct Leadership {
    /// The instant the millisecond counts start from.
    origin: Instant,
    /// Milliseconds after `origin` before which writes are allowed: 0 never
    /// (a follower), `u64::MAX` always (no leader election).
    until_ms: AtomicU64,
}

impl Leadership {
    /// No leader election: this replica always acts.
    pub fn always() -> Leadership {
        Leadership {
            origin: Instant::now(),
            until_ms: AtomicU64::new(u64::MAX),
        }
    }

    /// A follower until [`Leadership::hold_until`] says otherwise.
    pub fn follower() -> Leadership {
        Leadership {
            origin: Instant::now(),
            until_ms: AtomicU64::new(0),
        }
    }

    fn ms(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.origin).as_millis()).unwrap_or(u64::MAX - 1)
    }

    /// This replica holds a valid Lease until `until` (local clock).
    pub fn hold_until(&self, until: Instant) {
        if self.until_ms.load(Ordering::SeqCst) != u64::MAX {
            self.until_ms.store(self.ms(until), Ordering::SeqCst);
        }
    }

    /// This replica does not hold the Lease (any more).
    pub fn revoke(&self) {
        if self.until_ms.load(Ordering::SeqCst) != u64::MAX {
            self.until_ms.store(0, Ordering::SeqCst);
        }
    }

    /// Whether this replica may write at `t`.
    pub fn valid_at(&self, t: Instant) -> bool {
        let until = self.until_ms.load(Ordering::SeqCst);
        until == u64::MAX || self.ms(t) < until
    }

    /// Whether this replica may write now.
    pub fn is_valid(&self) -> bool {
        self.valid_at(Instant::now())
    }

    /// `Ok` while this replica may write; [`crate::Error::NotLeader`] once
    /// its Lease is lost or past its renew deadline.
    pub fn check(&self) -> Result<(), crate::Error> {
        if self.is_valid() {
            Ok(())
        } else {
            Err(crate::Error::NotLeader)
        }
    }
}

/// What one attempt decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// This replica holds the Lease.
    Leader,
    /// Another replica holds it.
    Follower,
}

/// What this replica last saw of a Lease another replica holds, and when
/// by its own monotonic clock. Expiry is measured from that local
/// observation, as client-go's leader election does, never from the
/// holder's `renewTime`: that is the holder's wall clock, and a holder
/// whose clock runs behind would look expired while it still acts.
#[derive(Debug, Default, Clone)]
pub struct Observed {
    /// Holder, renewTime and resourceVersion of the Lease last seen.
    record: Option<(String, String, String)>,
    /// When that record was first seen.
    at: Option<Instant>,
}

/// Whether `lease` is free for `identity` at local instant `now`: unheld,
/// held by `identity`, or unchanged (holder, renewTime, resourceVersion)
/// for longer than its duration since `observed` first saw it as it is.
/// Updates `observed`.
pub fn free_for(
    lease: &Lease,
    identity: &str,
    observed: &mut Observed,
    now: Instant,
    duration: Duration,
) -> bool {
    let Some(spec) = &lease.spec else {
        return true;
    };
    match spec.holder_identity.as_deref() {
        None | Some("") => true,
        Some(h) if h == identity => true,
        Some(h) => {
            let secs = spec
                .lease_duration_seconds
                .map_or(duration.as_secs(), |s| u64::try_from(s).unwrap_or(0));
            let renewed = spec
                .renew_time
                .as_ref()
                .or(spec.acquire_time.as_ref())
                .map(|t| t.0.to_string())
                .unwrap_or_default();
            let record = (
                h.to_owned(),
                renewed,
                lease.metadata.resource_version.clone().unwrap_or_default(),
            );
            if observed.record.as_ref() != Some(&record) {
                observed.record = Some(record);
                observed.at = Some(now);
                return false;
            }
            let since = observed.at.unwrap_or(now);
            now.saturating_duration_since(since) > Duration::from_secs(secs)
        }
    }
}

impl Election {
    /// How long after the start of a successful renewal this replica may
    /// write: the Lease's duration less a third, the margin that covers
    /// clock skew and writes in flight before a follower may take over.
    pub fn renew_deadline(&self) -> Duration {
        self.duration - self.duration / 3
    }

    /// One attempt to take or renew the Lease; `observed` is what this
    /// replica saw of another holder before ([`free_for`]).
    pub async fn attempt(
        &self,
        client: &Client,
        observed: &mut Observed,
    ) -> Result<Outcome, kube::Error> {
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
                if !free_for(
                    &lease,
                    &self.identity,
                    observed,
                    Instant::now(),
                    self.duration,
                ) {
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

    /// Keeps `leadership` valid exactly while this replica holds the Lease
    /// (and at most [`Election::renew_deadline`] past each successful
    /// renewal), until `stop`; then releases the Lease if it holds it.
    pub async fn run(
        self,
        client: Client,
        leadership: Arc<Leadership>,
        metrics: Arc<Metrics>,
        stop: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(stop);
        let period = (self.duration / 3).max(Duration::from_millis(100));
        let mut was = false;
        let mut observed = Observed::default();
        loop {
            // Measured before the request: the Lease's renewTime is written
            // no earlier than this, so the deadline counts from no later
            // than the instant other replicas count from.
            let started = Instant::now();
            // An attempt that hangs must not keep a leader acting past its
            // Lease: it counts as a failure after one period.
            let outcome = tokio::time::timeout(period, self.attempt(&client, &mut observed)).await;
            let is = matches!(outcome, Ok(Ok(Outcome::Leader)));
            if is {
                leadership.hold_until(started + self.renew_deadline());
            } else {
                leadership.revoke();
            }
            match &outcome {
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, lease = %self.name, "leader election: cannot reach the Lease; not acting");
                }
                Err(_) => {
                    tracing::warn!(lease = %self.name, "leader election: no answer within {period:?}; not acting");
                }
                Ok(Ok(_)) => {}
            }
            if was != is {
                tracing::info!(identity = %self.identity, leader = is, "leadership changed");
            }
            was = is;
            metrics.set_leader(is);
            tokio::select! {
                _ = tokio::time::sleep(period) => {}
                _ = &mut stop => break,
            }
        }
        leadership.revoke();
        if was {
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
    fn leadership_is_valid_until_its_deadline_or_until_revoked() {
        let l = Leadership::follower();
        let now = Instant::now();
        assert!(!l.valid_at(now), "a follower never writes");
        assert!(l.check().is_err());
        l.hold_until(now + Duration::from_secs(10));
        assert!(l.valid_at(now + Duration::from_secs(9)));
        assert!(
            !l.valid_at(now + Duration::from_secs(10)),
            "not at the deadline"
        );
        assert!(l.check().is_ok());
        l.revoke();
        assert!(!l.valid_at(now));
        assert!(matches!(l.check(), Err(crate::Error::NotLeader)));
        // Without an election nothing takes the right to write away.
        let always = Leadership::always();
        always.revoke();
        always.hold_until(now);
        assert!(always.valid_at(now + Duration::from_secs(3600)));
        let e = Election {
            namespace: "ns".into(),
            name: "lease".into(),
            identity: "a".into(),
            duration: Duration::from_secs(15),
        };
        assert_eq!(e.renew_deadline(), Duration::from_secs(10));
    }

    #[test]
    fn a_lease_expires_by_the_local_clock_not_the_holders() {
        let d = Duration::from_secs(15);
        let t0 = Instant::now();
        let mut seen = Observed::default();
        let mut lease = Lease::default();
        assert!(free_for(&lease, "a", &mut seen, t0, d));
        let held = |renewed: i64, rv: &str| {
            let mut l = Lease::default();
            l.metadata.resource_version = Some(rv.into());
            l.spec = Some(k8s_openapi::api::coordination::v1::LeaseSpec {
                holder_identity: Some("b".into()),
                lease_duration_seconds: Some(15),
                renew_time: Some(MicroTime(Timestamp::from_second(renewed).expect("a time"))),
                ..Default::default()
            });
            l
        };
        // b's clock runs an hour behind: its renewTime looks long expired,
        // but it was just seen, so it holds for a whole duration.
        lease = held(1_000, "1");
        assert!(!free_for(&lease, "a", &mut seen, t0, d), "first seen now");
        let t10 = t0 + Duration::from_secs(10);
        assert!(!free_for(&lease, "a", &mut seen, t10, d), "10s unchanged");
        assert!(free_for(&lease, "b", &mut seen, t10, d), "b's own");
        // Renewed (a new record): the wait starts again.
        lease = held(1_005, "2");
        let t14 = t0 + Duration::from_secs(14);
        assert!(!free_for(&lease, "a", &mut seen, t14, d));
        let t29 = t14 + Duration::from_secs(15);
        assert!(!free_for(&lease, "a", &mut seen, t29, d), "exactly 15s");
        let t30 = t14 + Duration::from_secs(16);
        assert!(free_for(&lease, "a", &mut seen, t30, d), "16s unchanged");
        // A renewTime in the future (b's clock ahead) expires the same way.
        let mut seen = Observed::default();
        lease = held(99_999_999, "3");
        assert!(!free_for(&lease, "a", &mut seen, t0, d));
        assert!(free_for(
            &lease,
            "a",
            &mut seen,
            t0 + Duration::from_secs(16),
            d
        ));
    }
}
