//! The Kubernetes side of `coalmine get | promote | abort | pause | resume |
//! retry NAME`, through the current kubeconfig (`KUBECONFIG`,
//! `~/.kube/config`, or the pod's service account), also as `kubectl
//! coalmine …` when the binary is installed as `kubectl-coalmine`.
//!
//! A command is the annotation `coalmine.dev/command: KIND/ID` on the
//! Canary (a merge patch, so nothing else changes); the controller hands it
//! to the rollout, whose status records `lastCommand: KIND/ID` once it has
//! been handled, so it acts once however often the object is reconciled.
//! The client waits for that, then tells whether the rollout ignored it:
//! the controller's `CommandIgnored` Events for the object, counted before
//! and after (Event times come from another clock; counts do not).

use std::time::Duration;

use k8s_openapi::api::core::v1::Event;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::json;

use coalmine_controller::resource::{COMMAND_ANNOTATION, CanaryResource};
use coalmine_core::Time;
use coalmine_core::rollout::CommandKind;
use coalmine_core::status::CanaryStatus;

use super::status_text::{Output, headline, render};

/// How long a command may wait for the controller.
const HANDLED_WITHIN: Duration = Duration::from_secs(30);
/// `get --watch` polls this often.
const WATCH_EVERY: Duration = Duration::from_secs(1);

/// A Canary addressed by name, in a namespace or the kubeconfig's.
pub struct Addressed {
    api: Api<CanaryResource>,
    events: Api<Event>,
    name: String,
    namespace: String,
}

impl Addressed {
    /// Connects and addresses `name` in `namespace` (default: the
    /// kubeconfig context's namespace).
    pub async fn connect(name: &str, namespace: Option<&str>) -> Result<Addressed, String> {
        let client = kube::Client::try_default().await.map_err(|e| {
            format!("no cluster found ({e}); set KUBECONFIG, or pass --admin URL for a running `coalmine run`")
        })?;
        let namespace = namespace.map_or_else(
            || client.default_namespace().to_string(),
            ToString::to_string,
        );
        Ok(Addressed {
            api: Api::namespaced(client.clone(), &namespace),
            events: Api::namespaced(client, &namespace),
            name: name.to_string(),
            namespace,
        })
    }

    async fn fetch(&self) -> Result<CanaryResource, String> {
        self.api.get(&self.name).await.map_err(|e| match e {
            kube::Error::Api(s) if s.code == 404 => format!(
                "Canary {}/{} not found (kubectl get canaries -n {})",
                self.namespace, self.name, self.namespace
            ),
            other => format!("Canary {}/{}: {other}", self.namespace, self.name),
        })
    }

    /// How many times the controller has said it ignored a command here.
    async fn ignored(&self) -> Result<(i64, Option<String>), String> {
        let selector = format!("involvedObject.name={},reason=CommandIgnored", self.name);
        let list = self
            .events
            .list(&ListParams::default().fields(&selector))
            .await
            .map_err(|e| format!("listing Events: {e}"))?;
        let count = list
            .items
            .iter()
            .map(|e| i64::from(e.count.unwrap_or(1).max(1)))
            .sum();
        let latest = list
            .items
            .iter()
            .max_by(|a, b| a.last_timestamp.cmp(&b.last_timestamp))
            .and_then(|e| e.message.clone());
        Ok((count, latest))
    }

    /// `coalmine get NAME`.
    pub async fn get(&self, watch: bool, output: Output) -> Result<(), String> {
        let mut last = String::new();
        loop {
            let object = self.fetch().await?;
            let status = object.core_status();
            let shown = match output {
                Output::Text => {
                    format!("{}/{}: {}", self.namespace, self.name, render(&status))
                }
                Output::Json => serde_json::to_string(&status).unwrap_or_default() + "\n",
            };
            if shown != last {
                if watch && output == Output::Text {
                    println!("--- {}", Time::now());
                }
                print!("{shown}");
                last = shown;
            }
            if !watch {
                return Ok(());
            }
            tokio::time::sleep(WATCH_EVERY).await;
        }
    }

    /// `coalmine promote|abort|pause|resume|retry NAME`.
    pub async fn send(&self, kind: CommandKind) -> Result<(), String> {
        self.fetch().await?;
        let (ignored_before, _) = self.ignored().await?;
        let id = format!(
            "{}/{}-{}",
            kind.as_str(),
            Time::now().unix_millis(),
            std::process::id()
        );
        let patch = json!({"metadata": {"annotations": {COMMAND_ANNOTATION: id}}});
        self.api
            .patch(&self.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|e| format!("Canary {}/{}: {e}", self.namespace, self.name))?;
        let deadline = tokio::time::Instant::now() + HANDLED_WITHIN;
        let status: CanaryStatus = loop {
            let status = self.fetch().await?.core_status();
            if status.last_command.as_deref() == Some(id.as_str()) {
                break status;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(format!(
                    "annotated, but the controller did not handle it within {}s; is `coalmine controller` running? (kubectl get pods -n coalmine-system)",
                    HANDLED_WITHIN.as_secs()
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        // The Event is published right after the status; give it a moment.
        let mut ignored = (ignored_before, None);
        for _ in 0..5 {
            ignored = self.ignored().await?;
            if ignored.0 > ignored_before {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if ignored.0 > ignored_before {
            return Err(format!(
                "ignored: {}",
                ignored.1.unwrap_or_else(|| "see kubectl describe".into())
            ));
        }
        println!("{}: done", kind.name());
        println!("  now: {}", headline(&status));
        Ok(())
    }
}
