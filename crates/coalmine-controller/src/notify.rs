//! Notifications in the cluster: each Canary's `spec.notifications` get a
//! `coalmine_notify::Notifier` (one sending task per webhook), kept while
//! the list stays the same and replaced when it is edited. Sending never
//! blocks a reconcile.
//!
//! A webhook with `urlFrom.secretKeyRef` has its URL read from the Secret
//! in the Canary's namespace before each message (a rotated Secret takes
//! effect at the next one). Logs, Events and the status name it as
//! `Secret NAMESPACE/NAME, key KEY`, never by its URL. Reading needs `get`
//! on that Secret, which the user grants per namespace (see
//! `docs/notifications.md`); the controller's ClusterRole has no access
//! to Secrets.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use coalmine_core::Time;
use coalmine_core::rollout::Event;
use coalmine_core::spec::NotificationSpec;
use coalmine_core::status::{CanaryStatus, NotificationStatus};
use coalmine_notify::{Notifier, Target, UrlFuture, UrlSource, notice_for};
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};

/// The notifiers of every Canary this replica reconciles, by
/// `namespace/name`.
pub struct Notifiers {
    client: Client,
    all: Mutex<HashMap<String, (Vec<NotificationSpec>, Notifier)>>,
}

/// A URL kept in a Secret's key.
struct SecretUrl {
    api: Api<Secret>,
    namespace: String,
    name: String,
    key: String,
}

impl UrlSource for SecretUrl {
    fn url(&self) -> UrlFuture<'_> {
        Box::pin(async move {
            let what = format!("Secret {}/{}", self.namespace, self.name);
            let secret = self.api.get_opt(&self.name).await.map_err(|e| match e {
                kube::Error::Api(s) if s.code == 403 => format!(
                    "{what} may not be read by the controller: grant it `get` on that Secret (docs/notifications.md)"
                ),
                other => format!("reading {what}: {other}"),
            })?;
            let secret = secret.ok_or_else(|| format!("{what} not found"))?;
            let value = secret
                .data
                .as_ref()
                .and_then(|d| d.get(&self.key))
                .ok_or_else(|| format!("{what} has no key `{}`", self.key))?;
            let url = String::from_utf8(value.0.clone())
                .map_err(|_| format!("{what}, key `{}`: not UTF-8 text", self.key))?;
            Ok(url.trim().to_owned())
        })
    }
}

impl Notifiers {
    /// No notifiers yet; Secrets are read with `client`.
    pub fn new(client: Client) -> Notifiers {
        Notifiers {
            client,
            all: Mutex::new(HashMap::new()),
        }
    }

    /// The webhooks of `specs`, for a Canary in `namespace`.
    fn targets(&self, namespace: &str, specs: &[NotificationSpec]) -> Vec<Target> {
        specs
            .iter()
            .filter_map(|spec| {
                if let Some(t) = Target::written(spec) {
                    return Some(t);
                }
                let r = &spec.url_from.as_ref()?.secret_key_ref;
                Some(Target {
                    label: format!("Secret {namespace}/{}, key {}", r.name, r.key()),
                    url: Arc::new(SecretUrl {
                        api: Api::namespaced(self.client.clone(), namespace),
                        namespace: namespace.to_owned(),
                        name: r.name.clone(),
                        key: r.key().to_owned(),
                    }),
                    format: spec.format.unwrap_or_default(),
                    on: spec.on.clone(),
                })
            })
            .collect()
    }

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
        let Ok(mut all) = self.all.lock() else {
            return;
        };
        if specs.is_empty() {
            all.remove(&key);
            return;
        }
        let stale = all.get(&key).is_none_or(|(known, _)| known != specs);
        if stale {
            let counts = Arc::new(metrics.notification_counts(namespace, name));
            let targets = self.targets(namespace, specs);
            all.insert(
                key.clone(),
                (specs.to_vec(), Notifier::with_targets(targets, counts)),
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
        let all = self.all.lock().ok()?;
        all.get(&format!("{namespace}/{name}"))
            .map(|(_, n)| n.status())
    }

    /// Forgets a deleted Canary's webhooks.
    pub fn forget(&self, name: &str, namespace: &str) {
        if let Ok(mut all) = self.all.lock() {
            all.remove(&format!("{namespace}/{name}"));
        }
    }
}
