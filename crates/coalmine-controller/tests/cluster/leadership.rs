//! A replica that loses its Lease while a reconcile runs makes no write
//! after the loss — neither the status write nor any later cluster
//! operation — so two replicas never both act. The loss is forced in the
//! test (`Leadership::revoke`) at the moment that matters; two controllers
//! electing a leader through the real Lease API are tested with the
//! `coalmine controller` process
//! (`of_two_controller_processes_one_leads_and_the_other_takes_over`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use coalmine_controller::apply::{self, Op};
use coalmine_controller::leader::Leadership;
use coalmine_controller::resource::CanaryResource;
use coalmine_controller::router::{RouteTarget, TrafficRouter};
use coalmine_controller::workload::{self, Track};
use coalmine_controller::{Context, Error, analysis, ops::Metrics, reconcile};
use coalmine_core::routes::Routes;
use futures_util::future::BoxFuture;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Client;
use kube::api::Api;
use kube::runtime::events::{Recorder, Reporter};
use serde_json::{Map, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::kube_env::{
    BoxError, TestResult, create, deployment, env, eventually, namespace, set_image, shape, spec,
};

/// A leader for an hour, unless revoked.
fn leading() -> Arc<Leadership> {
    let l = Leadership::follower();
    l.hold_until(Instant::now() + Duration::from_secs(3600));
    Arc::new(l)
}

fn context(client: &Client, leadership: Arc<Leadership>) -> Arc<Context> {
    Arc::new(Context {
        client: client.clone(),
        recorder: Recorder::new(
            client.clone(),
            Reporter {
                controller: "coalmine".into(),
                instance: None,
            },
        ),
        analyses: analysis::Analyses::default(),
        metrics: Arc::new(Metrics::new()),
        leadership,
        notifiers: coalmine_controller::notify::Notifiers::new(client.clone()),
        caches: coalmine_controller::cache::Caches::empty(),
        proxy_image: coalmine_controller::router::proxy::default_image(),
    })
}

/// A threshold-metric webhook answering 0.1 that, once armed, revokes the
/// leadership while it answers: the Lease is lost in the middle of the
/// reconcile that asks it, after its leader check and before its writes.
async fn revoking_webhook(
    leadership: Arc<Leadership>,
    armed: Arc<AtomicBool>,
    fired: Arc<AtomicUsize>,
) -> Result<String, BoxError> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            if armed.swap(false, Ordering::SeqCst) {
                leadership.revoke();
                fired.fetch_add(1, Ordering::SeqCst);
            }
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let body = "{\"value\": 0.1}";
                let resp = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
            });
        }
    });
    Ok(url)
}

#[tokio::test]
async fn a_reconcile_that_loses_the_lease_midway_writes_no_status() -> TestResult {
    let env = env()?;
    let admin = env.admin().await?;
    let ns = namespace(&admin, "midway").await?;
    let client = env.controller_client().await?;
    let leadership = leading();
    let armed = Arc::new(AtomicBool::new(false));
    let fired = Arc::new(AtomicUsize::new(0));
    let url = revoking_webhook(leadership.clone(), armed.clone(), fired.clone()).await?;
    let ctx = context(&client, leadership.clone());
    let mut s = spec("web:1", 2, json!([{"setWeight": 50}, {"pause": {}}]));
    s["analysis"] = json!({"interval": "1s", "metrics": [{
        "name": "p99-latency",
        "webhook": {"url": format!("{url}/p99"), "value": "$.value"},
        "threshold": {"max": 0.5}
    }]});
    create(&admin, &ns, "web", s).await?;
    let api: Api<CanaryResource> = Api::namespaced(client.clone(), &ns);
    let once = || async {
        let c = api.get("web").await?;
        let r = reconcile::reconcile(Arc::new(c), ctx.clone()).await;
        Ok::<_, BoxError>(r)
    };
    // Walk the rollout to its `pause: {}` by hand, one reconcile at a time
    // (the real Deployment controller makes the pods meanwhile).
    eventually(60, "the first revision stable", || async {
        once().await??;
        let st = api.get("web").await?.status.unwrap_or_default();
        Ok((st["phase"] == "Idle").then_some(()))
    })
    .await?;
    set_image(&admin, &ns, "web", "web:2").await?;
    eventually(60, "the rollout paused at 50%", || async {
        once().await??;
        let st = api.get("web").await?.status.unwrap_or_default();
        Ok((st["phase"] == "Paused" && st["weight"] == 50).then_some(()))
    })
    .await?;
    // The judge's next collection is at most an interval away: arm the
    // webhook, wait for it, and reconcile once more. Leadership holds at
    // the reconcile's start and is lost while the judge collects.
    armed.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let before = api.get("web").await?;
    let canary_before = deployment(&admin, &ns, "web-canary")
        .await?
        .ok_or("no canary")?;
    assert!(leadership.is_valid(), "leader when the reconcile starts");
    let r = once().await?;
    assert_eq!(fired.load(Ordering::SeqCst), 1, "the judge collected");
    assert!(matches!(r, Err(Error::NotLeader)), "{r:?}");
    let after = api.get("web").await?;
    assert_eq!(
        after.metadata.resource_version, before.metadata.resource_version,
        "the Canary was not written"
    );
    assert_eq!(after.status, before.status);
    // The Deployment controller writes the Deployment's status: its spec
    // (generation) is what the reconcile would have written.
    let canary_after = deployment(&admin, &ns, "web-canary")
        .await?
        .ok_or("no canary")?;
    assert_eq!(
        canary_after.metadata.generation,
        canary_before.metadata.generation
    );
    // A replica that is not the leader does nothing at all.
    let r = once().await?;
    assert!(r.is_ok(), "a follower requeues quietly: {r:?}");
    assert_eq!(
        api.get("web").await?.metadata.resource_version,
        before.metadata.resource_version
    );
    Ok(())
}

/// A router whose `apply` loses the Lease: the slowest operation of a
/// reconcile, the one a lost renewal is most likely to overlap.
struct LosesTheLease(Arc<Leadership>);

impl TrafficRouter for LosesTheLease {
    fn canary_service(&self) -> bool {
        false
    }

    fn apply<'a>(&'a self, _: &'a RouteTarget, _: &'a Routes) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            self.0.revoke();
            Ok(())
        })
    }
}

#[tokio::test]
async fn operations_stop_at_the_first_one_after_the_lease_is_lost() -> TestResult {
    let env = env()?;
    let admin = env.admin().await?;
    let ns = namespace(&admin, "lost").await?;
    let client = env.controller_client().await?;
    // The owner of the Deployments: a Canary no controller reconciles.
    create(
        &admin,
        &ns,
        "web",
        spec("web:1", 3, json!([{"setWeight": 50}])),
    )
    .await?;
    let canaries: Api<CanaryResource> = Api::namespaced(admin.clone(), &ns);
    let uid = canaries.get("web").await?.metadata.uid.ok_or("no uid")?;
    let leadership = leading();
    let router = LosesTheLease(leadership.clone());
    let owner = OwnerReference {
        api_version: "coalmine.dev/v1alpha1".into(),
        kind: "Canary".into(),
        name: "web".into(),
        uid,
        ..OwnerReference::default()
    };
    let selector = BTreeMap::from([("app".to_owned(), "web".to_owned())]);
    let mut template = Map::new();
    template.insert("metadata".into(), json!({"labels": {"app": "web"}}));
    template.insert(
        "spec".into(),
        json!({"containers": [{"name": "web", "image": "web:1"}]}),
    );
    let deploy = |name: &str, track: Track, replicas: i32| {
        workload::deployment(
            name,
            &owner,
            &selector,
            workload::pod_template(&template, track, "r1"),
            track,
            replicas,
        )
        .map(|d| Op::Deployment {
            object: Box::new(d),
            template: true,
        })
    };
    let cluster_ops = apply::Cluster {
        deployments: Api::namespaced(client.clone(), &ns),
        services: Api::namespaced(client.clone(), &ns),
        router: &router,
        target: RouteTarget {
            client: client.clone(),
            namespace: ns.to_string(),
            name: "web".into(),
            canary_service: "web-canary".into(),
            port: 80,
            owner: owner.clone(),
        },
        leadership: &leadership,
        seen: apply::Seen::default(),
        caches: &coalmine_controller::cache::Caches::empty(),
    };
    let setup = vec![
        deploy("web", Track::Stable, 3)?,
        deploy("web-canary", Track::Canary, 1)?,
    ];
    apply::execute(&cluster_ops, setup, |_| async {}).await?;
    // A rollback: stable to all replicas, routes to stable, canary to 0 —
    // the Lease is lost during the routes.
    let rollback = vec![
        Op::Scale {
            name: "web".into(),
            replicas: 4,
        },
        Op::Routes(Routes::all_stable()),
        Op::Scale {
            name: "web-canary".into(),
            replicas: 0,
        },
    ];
    let r = apply::execute(&cluster_ops, rollback, |_| async {}).await;
    assert!(matches!(r, Err(Error::NotLeader)), "{r:?}");
    let stable = deployment(&admin, &ns, "web").await?.ok_or("no stable")?;
    assert_eq!(shape(&stable).0, 4, "before the loss: done");
    let canary = deployment(&admin, &ns, "web-canary")
        .await?
        .ok_or("no canary")?;
    assert_eq!(shape(&canary).0, 1, "after the loss: not done");
    Ok(())
}
