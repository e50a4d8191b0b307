//! Notifications in the cluster: each Canary's `spec.notifications` get a
//! `coalmine_notify::Notifier` (one sending task per webhook), kept while
//! the list stays the same and replaced when it is edited. Sending never
//! blocks a reconcile.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use coalmine_core::Time;
use coalmine_core::rollout::Event;
use coalmine_core::spec::NotificationSpec;
use coalmine_core::status::{CanaryStatus, NotificationStatus};
use coalmine_notify::{Notifier, notice_for};

/// The notifiers of every Canary this replica reconciles, by
/// `namespace/name`.
#[derive(Default)]
pub struct Notifiers(Mutex<HashMap<String, (Vec<NotificationSpec>, Notifier)>>);

impl Notifiers {
    /// Tells the Canary's webhooks about an event, if it is a transition
    /// people are told about; `status` is the one the decision left.
    pub fn tell(
        &self,
        metrics: &crate::ops::Metrics,
        name: &str,
        namespace: &str,
        specs: &[NotificationSpec],
        event: &Event,
        status: &CanaryStatus,
    ) {
        let key = format!("{namespace}/{name}");
        let Ok(mut all) = self.0.lock() else {
            return;
        };
        if specs.is_empty() {
            all.remove(&key);
            return;
        }
        let stale = all.get(&key).is_none_or(|(known, _)| known != specs);
        if stale {
            let counts = Arc::new(metrics.notification_counts(namespace, name));
            all.insert(
                key.clone(),
                (specs.to_vec(), Notifier::with_counts(specs, counts)),
            );
        }
        let Some((_, notifier)) = all.get(&key) else {
            return;
        };
        if let Some(notice) = notice_for(
            name,
            Some(namespace),
            event.reason,
            &event.message,
            event.warning,
            status,
            Time::now(),
        ) {
            notifier.notify(notice);
        }
    }

    /// What became of a Canary's notifications, for its status; `None`
    /// while it has sent none.
    pub fn status(&self, name: &str, namespace: &str) -> Option<NotificationStatus> {
        let all = self.0.lock().ok()?;
        all.get(&format!("{namespace}/{name}"))
            .map(|(_, n)| n.status())
    }

    /// Forgets a deleted Canary's webhooks.
    pub fn forget(&self, name: &str, namespace: &str) {
        if let Ok(mut all) = self.0.lock() {
            all.remove(&format!("{namespace}/{name}"));
        }
    }
}
