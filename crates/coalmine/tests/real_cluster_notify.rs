//! Notifications whose webhook URL is kept in a Secret, against a real API
//! server (`scripts/kube-env.sh`): the controller, with the RBAC of
//! `deploy/` plus a per-Secret Role in the Canary's namespace, reads the
//! URL and posts to a webhook on loopback; the URL appears in no status,
//! log or Event.

mod kube_env;

use coalmine_notify::testing::Recorder;
use k8s_openapi::api::core::v1::Event;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube_env::{Controller, TestResult, create, env, eventually, namespace, phase, set_image};
use serde_json::json;

#[tokio::test]
async fn a_webhook_url_from_a_secret_is_used_and_never_shown() -> TestResult {
    let env = env()?;
    env.apply_deploy()?;
    let client = env.admin().await?;
    let ns = namespace(&client, "notify-secret").await?;
    let hook = Recorder::start().await?;
    // The secret part: a token in the query.
    let url = format!("{}?token=s3cr3t-token", hook.url);
    let objects = json!({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "Secret",
         "metadata": {"name": "hooks", "namespace": ns},
         "stringData": {"address": url}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
         "metadata": {"name": "coalmine-notifications", "namespace": ns},
         "rules": [{"apiGroups": [""], "resources": ["secrets"],
                    "resourceNames": ["hooks"], "verbs": ["get"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
         "metadata": {"name": "coalmine-notifications", "namespace": ns},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                     "name": "coalmine-notifications"},
         "subjects": [{"kind": "ServiceAccount", "name": "coalmine-controller",
                       "namespace": "coalmine-system"}]}
    ]});
    env.apply(&objects)?;
    let ctl = Controller::start(env, &ns)?;
    let mut s = kube_env::spec("web:1", 2, json!([{"setWeight": 50}, {"pause": {}}]));
    s["notifications"] = json!([{
        "urlFrom": {"secretKeyRef": {"name": "hooks"}},
        "on": ["started", "rolledBack"]
    }]);
    create(&client, &ns, "web", s).await?;
    phase(&client, &ns, "web", "Idle", 60).await?;
    set_image(&client, &ns, "web", "web:2").await?;
    phase(&client, &ns, "web", "Paused", 60).await?;
    let canaries: Api<coalmine_controller::resource::CanaryResource> =
        Api::namespaced(client.clone(), &ns);
    canaries
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {
                coalmine_controller::resource::COMMAND_ANNOTATION: "abort/test-1"}}})),
        )
        .await?;
    phase(&client, &ns, "web", "RolledBack", 60).await?;
    let bodies = eventually(30, "two notifications", || async {
        let b = hook.json();
        Ok((b.len() >= 2).then_some(b))
    })
    .await?;
    let transitions: Vec<&str> = bodies
        .iter()
        .map(|b| b["transition"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(transitions, ["started", "rolledBack"], "{bodies:?}");
    let status = eventually(30, "status.notifications", || async {
        let st = kube_env::status(&client, &ns, "web").await?;
        Ok((st["notifications"]["sent"].as_u64() >= Some(2)).then_some(st))
    })
    .await?;
    let events = Api::<Event>::namespaced(client.clone(), &ns)
        .list(&ListParams::default())
        .await?;
    let events = serde_json::to_string(&events.items)?;
    let log = ctl.finish()?;
    for (what, text) in [
        ("status", status.to_string()),
        ("Events", events),
        ("log", log),
    ] {
        assert!(!text.contains("s3cr3t"), "the URL is in the {what}: {text}");
    }
    Ok(())
}

#[tokio::test]
async fn a_secret_the_controller_may_not_read_is_a_counted_failure() -> TestResult {
    let env = env()?;
    env.apply_deploy()?;
    let client = env.admin().await?;
    let ns = namespace(&client, "notify-denied").await?;
    let secret = json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "hooks", "namespace": ns},
        "stringData": {"url": "http://127.0.0.1:9/s3cr3t"}});
    env.apply(&secret)?;
    let ctl = Controller::start(env, &ns)?;
    let mut s = kube_env::spec("web:1", 2, json!([{"setWeight": 50}, {"pause": {}}]));
    s["notifications"] = json!([{
        "urlFrom": {"secretKeyRef": {"name": "hooks", "key": "url"}},
        "on": ["started"]
    }]);
    create(&client, &ns, "web", s).await?;
    phase(&client, &ns, "web", "Idle", 60).await?;
    set_image(&client, &ns, "web", "web:2").await?;
    let status = eventually(60, "the refusal on the status", || async {
        let st = kube_env::status(&client, &ns, "web").await?;
        Ok(st["notifications"]["lastError"]
            .as_str()
            .is_some_and(|e| e.contains("may not be read"))
            .then_some(st))
    })
    .await?;
    let last = status["notifications"]["lastError"]
        .as_str()
        .unwrap_or_default();
    assert!(
        last.starts_with(&format!("Secret {ns}/hooks, key url: ")),
        "{last}"
    );
    assert!(!status.to_string().contains("s3cr3t"), "{status}");
    // The refusal is expected here: the log has it, so no 403 check.
    drop(ctl);
    Ok(())
}
