//! Autoscalers on a real API server (`scripts/kube-env.sh`, whose
//! controller-manager runs the HorizontalPodAutoscaler controller): one on
//! a Deployment coalmine sizes is reported on the Canary and not fought;
//! pointed at the Canary, as the report says, it sizes both tracks.

mod kube_env;

use k8s_openapi::api::apps::v1::Deployment;
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube_env::{BoxError, Controller, TestResult, create, env, eventually, namespace, phase, spec};
use serde_json::{Value, json};

async fn replicas(client: &Client, ns: &str, name: &str) -> Result<Option<i32>, BoxError> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
    Ok(api
        .get_opt(name)
        .await?
        .and_then(|d| d.spec.and_then(|s| s.replicas)))
}

fn valid(status: &Value) -> Option<Value> {
    status["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Valid")
        .cloned()
}

#[tokio::test]
async fn an_autoscaler_on_a_deployment_is_reported_not_fought_then_sizes_the_canary() -> TestResult
{
    let env = env()?;
    // The RBAC of the tree (listing HPAs), also on a cluster started before it.
    env.apply_deploy()?;
    let client = env.admin().await?;
    let ns = namespace(&client, "hpa").await?;
    let ctl = Controller::start(env, &ns)?;
    create(
        &client,
        &ns,
        "web",
        spec("web:1", 2, json!([{"setWeight": 50}, {"pause": {}}])),
    )
    .await?;
    phase(&client, &ns, "web", "Idle", 60).await?;
    assert_eq!(replicas(&client, &ns, "web").await?, Some(2));

    // Below its minimum the autoscaler scales up without any metrics.
    let hpas: Api<k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler> =
        Api::namespaced(client.clone(), &ns);
    let hpa = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
            "minReplicas": 4, "maxReplicas": 4,
            "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}]
        }
    }))?;
    hpas.create(&PostParams::default(), &hpa).await?;
    let refused = eventually(90, "Valid=False AutoscaledDeployment", || async {
        let s = kube_env::status(&client, &ns, "web").await?;
        Ok(valid(&s).filter(|c| c["reason"] == "AutoscaledDeployment"))
    })
    .await?;
    let message = refused["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("HorizontalPodAutoscaler web scales Deployment web")
            && message.contains("\"kind\":\"Canary\""),
        "{refused}"
    );
    // Not fought: the autoscaler's 4 stay.
    for _ in 0..50 {
        assert_eq!(replicas(&client, &ns, "web").await?, Some(4), "fought");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }

    // The fix the message gives.
    let to_canary = json!({"spec": {"scaleTargetRef": {
        "apiVersion": "coalmine.dev/v1alpha1", "kind": "Canary", "name": "web"}}});
    hpas.patch("web", &PatchParams::default(), &Patch::Merge(to_canary))
        .await?;
    eventually(90, "Valid=True again", || async {
        let s = kube_env::status(&client, &ns, "web").await?;
        Ok(valid(&s).filter(|c| c["status"] == "True"))
    })
    .await?;
    eventually(90, "the Canary at the autoscaler's 4", || async {
        let api: Api<coalmine_controller::resource::CanaryResource> =
            Api::namespaced(client.clone(), &ns);
        let c = api.get("web").await?;
        let spec = serde_json::to_value(&c.spec)?;
        Ok((spec["replicas"] == 4).then_some(()))
    })
    .await?;
    eventually(60, "stable at 4 pods, set by coalmine", || async {
        Ok((replicas(&client, &ns, "web").await? == Some(4)).then_some(()))
    })
    .await?;
    ctl.finish()?;
    Ok(())
}
