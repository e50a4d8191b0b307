//! Pod templates on a real API server (`scripts/kube-env.sh`): every field
//! the cluster knows reaches the Deployments, also fields newer than the
//! Kubernetes types compiled into coalmine, and a field the cluster does
//! not know is refused by the API server and shown on the Canary.

mod kube_env;

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, Patch, PatchParams};
use kube_env::{BoxError, Controller, TestResult, create, env, eventually, namespace, phase};
use serde_json::{Value, json};

/// A container with two fields of Kubernetes releases after the one the
/// compiled types describe: an environment variable read from a file
/// (`fileKeyRef`) and restart rules.
fn container(image: &str) -> Value {
    json!({
        "name": "web", "image": image, "ports": [{"containerPort": 8080}],
        "restartPolicy": "Always",
        "restartPolicyRules": [{"action": "Restart", "exitCodes": {"operator": "In", "values": [42]}}],
        "volumeMounts": [{"name": "config", "mountPath": "/config"}],
        "env": [{"name": "MODE", "valueFrom": {"fileKeyRef": {"volumeName": "config", "path": "app.env", "key": "MODE"}}}]
    })
}

fn template(container: Value) -> Value {
    json!({
        "metadata": {"labels": {"app": "web"}},
        "spec": {"containers": [container], "volumes": [{"name": "config", "emptyDir": {}}]}
    })
}

/// The Deployment's first container, as the API server stores it.
async fn stored_container(client: &kube::Client, ns: &str, name: &str) -> Result<Value, BoxError> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
    // Read as JSON: the compiled types would drop the fields under test.
    let raw: Value = client
        .request(
            kube::core::Request::new(api.resource_url())
                .get(name, &Default::default())
                .map_err(kube::Error::BuildRequest)?,
        )
        .await?;
    Ok(raw["spec"]["template"]["spec"]["containers"][0].clone())
}

fn assert_newer_fields(c: &Value, what: &str) {
    assert_eq!(
        c["env"][0]["valueFrom"]["fileKeyRef"]["key"], "MODE",
        "{what}: {c}"
    );
    assert_eq!(
        c["restartPolicyRules"][0]["action"], "Restart",
        "{what}: {c}"
    );
}

#[tokio::test]
async fn fields_newer_than_the_compiled_types_reach_stable_canary_and_promotion() -> TestResult {
    let env = env()?;
    let client = env.admin().await?;
    let ns = namespace(&client, "newer-fields").await?;
    let ctl = Controller::start(env, &ns)?;
    let mut spec = kube_env::spec("web:1", 2, json!([{"setWeight": 50}, {"pause": {}}]));
    spec["template"] = template(container("web:1"));
    create(&client, &ns, "web", spec).await?;
    phase(&client, &ns, "web", "Idle", 60).await?;
    let stable = eventually(60, "Deployment web", || async {
        Ok(stored_container(&client, &ns, "web").await.ok())
    })
    .await?;
    assert_newer_fields(&stable, "stable");

    let canaries: Api<coalmine_controller::resource::CanaryResource> =
        Api::namespaced(client.clone(), &ns);
    let patch = json!({"spec": {"template": template(container("web:2"))}});
    canaries
        .patch("web", &PatchParams::default(), &Patch::Merge(patch))
        .await?;
    phase(&client, &ns, "web", "Paused", 90).await?;
    let canary = eventually(60, "Deployment web-canary", || async {
        Ok(stored_container(&client, &ns, "web-canary").await.ok())
    })
    .await?;
    assert_eq!(canary["image"], "web:2");
    assert_newer_fields(&canary, "canary");

    let promote = json!({"metadata": {"annotations": {"coalmine.dev/command": "promote-full/1"}}});
    canaries
        .patch("web", &PatchParams::default(), &Patch::Merge(promote))
        .await?;
    eventually(120, "stable on web:2", || async {
        let c = stored_container(&client, &ns, "web").await?;
        Ok((c["image"] == "web:2").then_some(c))
    })
    .await
    .map(|c| assert_newer_fields(&c, "stable after promotion"))?;
    ctl.finish()?;
    Ok(())
}

#[tokio::test]
async fn a_field_the_cluster_does_not_know_is_refused_with_its_path() -> TestResult {
    let env = env()?;
    let client = env.admin().await?;
    let ns = namespace(&client, "typo").await?;
    let ctl = Controller::start(env, &ns)?;
    let mut spec = kube_env::spec("web:1", 1, json!([{"setWeight": 50}, {"pause": {}}]));
    spec["template"]["spec"]["containers"][0]["imagePullPolicyy"] = json!("Always");
    create(&client, &ns, "web", spec).await?;
    let applied = eventually(60, "Applied=False", || async {
        let s = kube_env::status(&client, &ns, "web").await?;
        let c = s["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == "Applied").cloned());
        Ok(c.filter(|c| c["status"] == "False"))
    })
    .await?;
    assert_eq!(applied["reason"], "BadRequest", "{applied}");
    assert!(
        applied["message"]
            .as_str()
            .is_some_and(|m| m.contains("spec.template.spec.containers[0].imagePullPolicyy")),
        "the message names the field: {applied}"
    );
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    assert!(
        deployments.get_opt("web").await?.is_none(),
        "nothing half-applied: no Deployment without the field"
    );
    ctl.finish()?;
    Ok(())
}
