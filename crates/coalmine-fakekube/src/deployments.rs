//! A stand-in for the Deployment controller: no ReplicaSets or Pods, only
//! the status a real cluster would end up with. After a delay it reports
//! every replica of the current generation updated, ready and available;
//! a Deployment annotated `fakekube.coalmine.dev/never-ready: "true"`, or
//! whose pod template has an image containing `never-ready`, instead stays
//! unavailable and, once `progressDeadlineSeconds` pass, gets
//! `Progressing=False` with reason `ProgressDeadlineExceeded`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;

use crate::server::Shared;
use crate::store::{EventType, Sub};
use crate::time::now_rfc3339;

/// The annotation that keeps a Deployment from becoming ready.
pub const NEVER_READY_ANNOTATION: &str = "fakekube.coalmine.dev/never-ready";

type Key = (String, String, String, i64);

/// When each (uid, namespace, name, generation) started progressing.
#[derive(Default)]
struct Progress {
    started: HashMap<Key, Instant>,
}

fn never_ready(d: &Value) -> bool {
    d.pointer("/metadata/annotations")
        .and_then(|a| a.get(NEVER_READY_ANNOTATION))
        .and_then(Value::as_str)
        == Some("true")
        || d.pointer("/spec/template/spec/containers")
            .and_then(Value::as_array)
            .is_some_and(|cs| {
                cs.iter().any(|c| {
                    c.get("image")
                        .and_then(Value::as_str)
                        .is_some_and(|i| i.contains("never-ready"))
                })
            })
}

/// The `pod-template-hash` a ReplicaSet of this template would get.
fn template_hash(d: &Value) -> String {
    let t = d
        .pointer("/spec/template")
        .map(Value::to_string)
        .unwrap_or_default();
    let mut h: u64 = t.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut s = String::new();
    for _ in 0..10 {
        s.push(char::from(ALPHABET[(h % 27) as usize]));
        h /= 27;
    }
    s
}

fn condition(typ: &str, status: &str, reason: &str, message: &str, prev: Option<&Value>) -> Value {
    let now = now_rfc3339();
    let same = prev.and_then(|p| p.get("status")).and_then(Value::as_str) == Some(status);
    let transition = prev
        .filter(|_| same)
        .and_then(|p| p.get("lastTransitionTime"))
        .cloned()
        .unwrap_or(json!(now));
    let same_reason =
        same && prev.and_then(|p| p.get("reason")).and_then(Value::as_str) == Some(reason);
    let update = prev
        .filter(|_| same_reason)
        .and_then(|p| p.get("lastUpdateTime"))
        .cloned()
        .unwrap_or(json!(now));
    json!({"type": typ, "status": status, "lastUpdateTime": update,
           "lastTransitionTime": transition, "reason": reason, "message": message})
}

fn prev_condition<'a>(d: &'a Value, typ: &str) -> Option<&'a Value> {
    d.pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|cs| {
            cs.iter()
                .find(|c| c.get("type").and_then(Value::as_str) == Some(typ))
        })
}

/// The status the stand-in wants for a Deployment, given whether its
/// progress deadline has passed.
fn desired_status(d: &Value, deadline_passed: bool) -> Value {
    let generation = d
        .pointer("/metadata/generation")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let replicas = d
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    let name = d
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let rs = format!("{name}-{}", template_hash(d));
    let mut status = serde_json::Map::new();
    status.insert("observedGeneration".into(), json!(generation));
    let mut put = |k: &str, v: i64| {
        if v != 0 {
            status.insert(k.into(), json!(v));
        }
    };
    let paused = d.pointer("/spec/paused").and_then(Value::as_bool) == Some(true);
    let (available, progressing) = if never_ready(d) && replicas > 0 {
        put("replicas", replicas);
        put("updatedReplicas", replicas);
        put("unavailableReplicas", replicas);
        let avail = condition(
            "Available",
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.",
            prev_condition(d, "Available"),
        );
        let prog = if paused {
            condition(
                "Progressing",
                "Unknown",
                "DeploymentPaused",
                "Deployment is paused",
                prev_condition(d, "Progressing"),
            )
        } else if deadline_passed {
            condition(
                "Progressing",
                "False",
                "ProgressDeadlineExceeded",
                &format!("ReplicaSet \"{rs}\" has timed out progressing."),
                prev_condition(d, "Progressing"),
            )
        } else {
            condition(
                "Progressing",
                "True",
                "ReplicaSetUpdated",
                &format!("ReplicaSet \"{rs}\" is progressing."),
                prev_condition(d, "Progressing"),
            )
        };
        (avail, prog)
    } else {
        put("replicas", replicas);
        put("updatedReplicas", replicas);
        put("readyReplicas", replicas);
        put("availableReplicas", replicas);
        let avail = condition(
            "Available",
            "True",
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.",
            prev_condition(d, "Available"),
        );
        let prog = if paused {
            condition(
                "Progressing",
                "Unknown",
                "DeploymentPaused",
                "Deployment is paused",
                prev_condition(d, "Progressing"),
            )
        } else {
            condition(
                "Progressing",
                "True",
                "NewReplicaSetAvailable",
                &format!("ReplicaSet \"{rs}\" has successfully progressed."),
                prev_condition(d, "Progressing"),
            )
        };
        (avail, prog)
    };
    status.insert("conditions".into(), json!([available, progressing]));
    Value::Object(status)
}

/// Status without condition timestamps, for comparison.
fn comparable(status: Option<&Value>) -> Value {
    let mut s = status.cloned().unwrap_or(json!({}));
    if let Some(cs) = s.get_mut("conditions").and_then(Value::as_array_mut) {
        for c in cs {
            if let Some(m) = c.as_object_mut() {
                m.remove("lastUpdateTime");
                m.remove("lastTransitionTime");
            }
        }
    }
    s
}

fn key_of(d: &Value) -> Key {
    let s = |p: &str| {
        d.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    (
        s("/metadata/uid"),
        s("/metadata/namespace"),
        s("/metadata/name"),
        d.pointer("/metadata/generation")
            .and_then(Value::as_i64)
            .unwrap_or(0),
    )
}

fn deadline_passed(progress: &Mutex<Progress>, d: &Value) -> (bool, Option<Duration>) {
    let secs = d
        .pointer("/spec/progressDeadlineSeconds")
        .and_then(Value::as_u64)
        .unwrap_or(600);
    let mut p = progress
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let started = *p.started.entry(key_of(d)).or_insert_with(Instant::now);
    let limit = Duration::from_secs(secs);
    let elapsed = started.elapsed();
    if elapsed >= limit {
        (true, None)
    } else {
        (false, Some(limit - elapsed))
    }
}

/// Looks at one Deployment and, if its status is not what it should be,
/// writes it after the delay.
fn consider(shared: &Arc<Shared>, progress: &Arc<Mutex<Progress>>, d: &Value) {
    let (passed, remaining) = deadline_passed(progress, d);
    let want = desired_status(d, passed);
    if comparable(Some(&want)) != comparable(d.get("status")) {
        let delay = shared.opts.deployment_ready_delay;
        let (shared, progress, key) = (shared.clone(), progress.clone(), key_of(d));
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            write_status(&shared, &progress, &key);
        });
    }
    if never_ready(d)
        && !passed
        && let Some(rem) = remaining
    {
        let (shared, progress, key) = (shared.clone(), progress.clone(), key_of(d));
        tokio::spawn(async move {
            tokio::time::sleep(rem + Duration::from_millis(5)).await;
            write_status(&shared, &progress, &key);
        });
    }
}

fn write_status(shared: &Arc<Shared>, progress: &Mutex<Progress>, key: &Key) {
    let mut store = shared.lock();
    let Some(def) = store.registry.get("apps", "v1", "deployments").cloned() else {
        return;
    };
    let Ok(cur) = store.get(&def, &key.1, &key.2) else {
        return;
    };
    if key_of(&cur) != *key || cur.pointer("/metadata/deletionTimestamp").is_some() {
        return;
    }
    let (passed, _) = deadline_passed(progress, &cur);
    let want = desired_status(&cur, passed);
    if comparable(Some(&want)) == comparable(cur.get("status")) {
        return;
    }
    let mut new = cur;
    new["status"] = want;
    if let Err(e) = store.update(&def, &key.1, &key.2, new, Sub::Status, false) {
        tracing::debug!(error = %e.message, "deployment stand-in: status write failed");
    }
}

/// Runs the stand-in until shutdown.
pub(crate) async fn run(shared: Arc<Shared>) {
    let progress = Arc::new(Mutex::new(Progress::default()));
    let mut shutdown = shared.shutdown.clone();
    let key = ("apps".to_owned(), "deployments".to_owned());
    let scan = |shared: &Arc<Shared>| -> Vec<Value> {
        let store = shared.lock();
        let Some(def) = store.registry.get("apps", "v1", "deployments") else {
            return Vec::new();
        };
        store
            .list(
                def,
                None,
                &Default::default(),
                &Default::default(),
                None,
                None,
            )
            .items
    };
    let mut rx = {
        let store = shared.lock();
        store.subscribe()
    };
    for d in scan(&shared) {
        consider(&shared, &progress, &d);
    }
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            ev = rx.recv() => match ev {
                Ok(ev) if ev.key == key && ev.typ != EventType::Deleted => {
                    consider(&shared, &progress, &ev.object);
                }
                Ok(ev) if ev.key == key => {
                    let gone = key_of(&ev.object);
                    progress
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .started
                        .retain(|k, _| k.0 != gone.0);
                }
                Ok(_) => {}
                Err(RecvError::Lagged(_)) => {
                    for d in scan(&shared) {
                        consider(&shared, &progress, &d);
                    }
                }
                Err(RecvError::Closed) => return,
            },
        }
    }
}
