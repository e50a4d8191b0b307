//! The `istio` router against a real API server (`scripts/kube-env.sh`)
//! with Istio's own CRDs (from the `istio.io/api` module): the Canary of
//! `examples/kubernetes/istio.yaml` and its VirtualService
//! (`examples/kubernetes/istio/virtual-service.yaml`), unchanged but for
//! their namespace, through a whole rollout, checked after every step; a
//! user's edit mid-rollout that coalmine keeps; DestinationRule subsets,
//! with the Canary deleted mid-rollout; and a Canary naming a
//! VirtualService that does not exist. A 403 in the controller's log
//! fails the test (`deploy/rbac.yaml` must grant what the router does).

mod kube_env;

use kube::Client;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube_env::{BoxError, Controller, TestResult, env, eventually, namespace, phase};
use serde_json::{Value, json};

fn virtual_services(client: &Client, ns: &str) -> Api<DynamicObject> {
    Api::namespaced_with(
        client.clone(),
        ns,
        &coalmine_controller::router::istio::virtual_service_resource(),
    )
}

/// The example's VirtualService and Canary, moved to `ns`.
fn example(ns: &str) -> Result<(Value, Value), BoxError> {
    let read = |file: &str| -> Result<Value, BoxError> {
        let path = format!(
            "{}/../../examples/kubernetes/{file}",
            env!("CARGO_MANIFEST_DIR")
        );
        // The namespace is also in the VirtualService's host names.
        let text = std::fs::read_to_string(path)?.replace(".shop.svc", &format!(".{ns}.svc"));
        let mut doc: Value = serde_saphyr::from_str(&text)?;
        doc["metadata"]["namespace"] = json!(ns);
        Ok(doc)
    };
    Ok((read("istio/virtual-service.yaml")?, read("istio.yaml")?))
}

/// (host, weight) of each destination of HTTP route `i`.
fn weights(vs: &DynamicObject, i: usize) -> Vec<(String, i64)> {
    vs.data["spec"]["http"][i]["route"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| {
            (
                d["destination"]["host"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                d["weight"].as_i64().unwrap_or(100),
            )
        })
        .collect()
}

fn names(vs: &DynamicObject) -> Vec<String> {
    vs.data["spec"]["http"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| r["name"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test]
async fn the_istio_example_rolls_out_through_its_virtual_service() -> TestResult {
    let env = env()?;
    env.apply_deploy()?;
    let client = env.admin().await?;
    let ns = namespace(&client, "istio").await?;
    let (vs, canary) = example(&ns)?;
    let vss = virtual_services(&client, &ns);
    let stored = vss
        .create(&PostParams::default(), &serde_json::from_value(vs)?)
        .await?;
    let ctl = Controller::start(env, &ns)?;
    let canaries: Api<coalmine_controller::resource::CanaryResource> =
        Api::namespaced(client.clone(), &ns);
    canaries
        .create(&PostParams::default(), &serde_json::from_value(canary)?)
        .await?;
    phase(&client, &ns, "myapp", "Idle", 60).await?;
    // The first deployment is no rollout: the VirtualService is untouched.
    assert_eq!(
        vss.get("myapp").await?.metadata.resource_version,
        stored.metadata.resource_version,
        "written with nothing to change"
    );
    let patch = json!({"spec": {"template": {"spec": {"containers": [
        {"name": "myapp", "image": "myapp:2.1", "ports": [{"containerPort": 8080}]}]}}}});
    canaries
        .patch("myapp", &PatchParams::default(), &Patch::Merge(patch))
        .await?;
    let stable = format!("myapp.{ns}.svc.cluster.local");
    let canary_host = format!("myapp-canary.{ns}.svc.cluster.local");

    // setWeight 20: the primary route only.
    let at20 = eventually(60, "80/20 on the primary route", || async {
        let v = vss.get("myapp").await?;
        Ok((weights(&v, 1) == [(stable.clone(), 80), (canary_host.clone(), 20)]).then_some(v))
    })
    .await?;
    assert_eq!(
        at20.data["spec"]["http"][0], stored.data["spec"]["http"][0],
        "the admin route is the user's"
    );
    for field in ["match", "timeout", "retries"] {
        assert_eq!(
            at20.data["spec"]["http"][1][field], stored.data["spec"]["http"][1][field],
            "{field}"
        );
    }
    assert_eq!(
        at20.data["spec"]["http"][1]["route"][1]["destination"]["port"],
        json!({"number": 80})
    );
    // A steady step writes nothing.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let still = vss.get("myapp").await?;
    assert_eq!(
        still.metadata.resource_version, at20.metadata.resource_version,
        "the VirtualService was rewritten with nothing to change"
    );
    // The user edits the VirtualService mid-rollout: a new route and a
    // longer timeout. coalmine keeps both.
    let mut edited = still.data["spec"].clone();
    if let Some(http) = edited["http"].as_array_mut() {
        http.insert(
            0,
            json!({"name": "docs", "match": [{"uri": {"prefix": "/docs"}}],
                   "route": [{"destination": {"host": "docs"}}]}),
        );
    }
    edited["http"][2]["timeout"] = json!("9s");
    vss.patch(
        "myapp",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": edited})),
    )
    .await?;

    // setHeaderRoute: a copy of the primary route placed before it.
    let headers = eventually(60, "the header route", || async {
        let v = vss.get("myapp").await?;
        Ok(names(&v)
            .contains(&"coalmine-canary-headers".to_owned())
            .then_some(v))
    })
    .await?;
    assert_eq!(
        names(&headers),
        ["docs", "admin", "coalmine-canary-headers", "primary"],
        "{}",
        headers.data
    );
    let h = &headers.data["spec"]["http"][2];
    assert_eq!(h["timeout"], "9s", "the user's edit is carried: {h}");
    assert_eq!(h["retries"], stored.data["spec"]["http"][1]["retries"]);
    assert_eq!(
        h["match"][0]["headers"]["x-canary"]["exact"], "always",
        "{h}"
    );
    assert_eq!(
        h["match"][1]["headers"]["cookie"]["regex"], "^(.*;\\s*)?beta=yes(;.*)?$",
        "{h}"
    );
    assert_eq!(weights(&headers, 2), [(canary_host.clone(), 100)]);
    assert_eq!(headers.data["spec"]["http"][3]["timeout"], "9s");

    // setMirror 20.
    let mirrored = eventually(60, "the mirror", || async {
        let v = vss.get("myapp").await?;
        Ok((!v.data["spec"]["http"][3]["mirror"].is_null()).then_some(v))
    })
    .await?;
    let p = &mirrored.data["spec"]["http"][3];
    assert_eq!(p["mirror"]["host"], canary_host.as_str(), "{p}");
    assert_eq!(p["mirrorPercentage"]["value"].as_f64(), Some(20.0), "{p}");

    // setWeight 50.
    eventually(60, "50/50", || async {
        let v = vss.get("myapp").await?;
        Ok((weights(&v, 3) == [(stable.clone(), 50), (canary_host.clone(), 50)]).then_some(()))
    })
    .await?;

    // Promoted: every trace gone, the user's edits kept.
    phase(&client, &ns, "myapp", "Promoted", 120).await?;
    let done = eventually(30, "the VirtualService without coalmine's", || async {
        let v = vss.get("myapp").await?;
        Ok((names(&v) == ["docs", "admin", "primary"]
            && v.data["spec"]["http"][2]["mirror"].is_null()
            && weights(&v, 2) == [(stable.clone(), 100)])
        .then_some(v))
    })
    .await?;
    let mut want = stored.data["spec"].clone();
    want["http"][1]["timeout"] = json!("9s");
    let http = done.data["spec"]["http"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(json!(http[1..]), want["http"], "{}", done.data);
    ctl.finish()?;
    Ok(())
}

#[tokio::test]
async fn a_missing_virtual_service_is_reported_and_nothing_breaks() -> TestResult {
    let env = env()?;
    env.apply_deploy()?;
    let client = env.admin().await?;
    let ns = namespace(&client, "istio-missing").await?;
    let ctl = Controller::start(env, &ns)?;
    let mut s = kube_env::spec("web:1", 2, json!([{"setWeight": 30}, {"pause": {}}]));
    s["trafficRouting"] = json!({"istio": {"virtualService": "nowhere"}});
    kube_env::create(&client, &ns, "web", s).await?;
    phase(&client, &ns, "web", "Idle", 60).await?;
    kube_env::set_image(&client, &ns, "web", "web:2").await?;
    let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(client.clone(), &ns);
    let message = eventually(60, "an Event naming the VirtualService", || async {
        let list = events.list(&ListParams::default()).await?;
        Ok(list
            .items
            .iter()
            .filter(|e| e.reason.as_deref() == Some("ReconcileFailed"))
            .filter_map(|e| e.message.clone())
            .find(|m| m.contains("VirtualService")))
    })
    .await?;
    assert!(
        message.contains("spec.trafficRouting.istio.virtualService")
            && message.contains(&format!("VirtualService {ns}/nowhere does not exist")),
        "{message}"
    );
    // Creating it lets the rollout go on: the controller kept running.
    let vss = virtual_services(&client, &ns);
    vss.create(
        &PostParams::default(),
        &serde_json::from_value(json!({
            "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": "nowhere", "namespace": ns},
            "spec": {"hosts": ["web"], "http": [{"route": [{"destination": {"host": "web"}}]}]}
        }))?,
    )
    .await?;
    eventually(60, "70/30 once the VirtualService exists", || async {
        let v = vss.get("nowhere").await?;
        Ok(
            (weights(&v, 0) == [("web".to_owned(), 70), ("web-canary".to_owned(), 30)])
                .then_some(()),
        )
    })
    .await?;
    // Abort: all back on stable, nothing of coalmine's left.
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
    eventually(30, "all on stable", || async {
        let v = vss.get("nowhere").await?;
        Ok(
            (v.data["spec"]["http"][0]["route"] == json!([{"destination": {"host": "web"}}]))
                .then_some(()),
        )
    })
    .await?;
    ctl.finish()?;
    Ok(())
}

#[tokio::test]
async fn destination_rule_subsets_split_one_service() -> TestResult {
    let env = env()?;
    env.apply_deploy()?;
    let client = env.admin().await?;
    let ns = namespace(&client, "istio-subsets").await?;
    let vss = virtual_services(&client, &ns);
    vss.create(
        &PostParams::default(),
        &serde_json::from_value(json!({
            "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": "web", "namespace": ns},
            "spec": {"hosts": ["web"], "http": [
                {"route": [{"destination": {"host": "web", "port": {"number": 80}}}]}]}
        }))?,
    )
    .await?;
    let rules: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        &ns,
        &kube::api::ApiResource::from_gvk_with_plural(
            &kube::api::GroupVersionKind::gvk("networking.istio.io", "v1", "DestinationRule"),
            "destinationrules",
        ),
    );
    rules
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
                "metadata": {"name": "web", "namespace": ns},
                "spec": {"host": "web", "subsets": [
                    {"name": "stable", "labels": {"coalmine.dev/track": "stable"}},
                    {"name": "canary", "labels": {"coalmine.dev/track": "canary"}}]}
            }))?,
        )
        .await?;
    let ctl = Controller::start(env, &ns)?;
    let mut s = kube_env::spec("web:1", 2, json!([{"setWeight": 40}, {"pause": {}}]));
    s["trafficRouting"] = json!({"istio": {"virtualService": "web", "destinationRule": {
        "name": "web", "stableSubsetName": "stable", "canarySubsetName": "canary"}}});
    kube_env::create(&client, &ns, "web", s).await?;
    phase(&client, &ns, "web", "Idle", 60).await?;
    kube_env::set_image(&client, &ns, "web", "web:2").await?;
    let live = eventually(60, "60/40 on the two subsets", || async {
        let v = vss.get("web").await?;
        Ok((weights(&v, 0) == [("web".to_owned(), 60), ("web".to_owned(), 40)]).then_some(v))
    })
    .await?;
    let route = &live.data["spec"]["http"][0]["route"];
    assert_eq!(route[0]["destination"]["subset"], "stable", "{route}");
    assert_eq!(route[1]["destination"]["subset"], "canary", "{route}");
    assert_eq!(route[1]["destination"]["port"]["number"], 80, "{route}");
    // One Service in front of both versions; no canary Service.
    let services: Api<k8s_openapi::api::core::v1::Service> = Api::namespaced(client.clone(), &ns);
    let svc = services.get("web").await?;
    let selector = svc.spec.and_then(|s| s.selector).unwrap_or_default();
    assert!(!selector.contains_key("coalmine.dev/track"), "{selector:?}");
    assert!(services.get_opt("web-canary").await?.is_none());
    // Deleting the Canary mid-rollout puts everything back on stable
    // before it goes (its finalizer).
    let canaries: Api<coalmine_controller::resource::CanaryResource> =
        Api::namespaced(client.clone(), &ns);
    canaries
        .delete("web", &kube::api::DeleteParams::default())
        .await?;
    eventually(60, "the Canary gone", || async {
        Ok(canaries.get_opt("web").await?.is_none().then_some(()))
    })
    .await?;
    eventually(30, "all on the stable subset", || async {
        let v = vss.get("web").await?;
        Ok((v.data["spec"]["http"][0]["route"]
            == json!([{"destination": {"host": "web", "port": {"number": 80}, "subset": "stable"}}]))
        .then_some(()))
    })
    .await?;
    ctl.finish()?;
    Ok(())
}
