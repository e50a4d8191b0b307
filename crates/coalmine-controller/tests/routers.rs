//! End to end with the `gatewayAPI` and `nginx` routers: the weights,
//! header routes and canary Ingress are observed on the objects themselves.

mod common;

use coalmine_controller::Config;
use coalmine_controller::router::gateway::{HEADER_RULE, http_route_resource};
use common::{
    TestResult, cluster, controller, create, deployment, eventually, phase, set_image, shape, spec,
};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{Api, DynamicObject, PostParams};
use serde_json::{Value, json};

fn user_route() -> Value {
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "parentRefs": [{"name": "gateway"}],
            "rules": [
                {"matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                 "backendRefs": [{"name": "web", "port": 80}]},
                {"matches": [{"path": {"type": "PathPrefix", "value": "/admin"}}],
                 "backendRefs": [{"name": "admin", "port": 80}]}
            ]
        }
    })
}

#[tokio::test]
async fn gateway_api_weights_and_header_routes_on_the_http_route() -> TestResult {
    let (_server, client) = cluster().await?;
    let routes: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), "default", &http_route_resource());
    let route: DynamicObject = serde_json::from_value(user_route())?;
    routes.create(&PostParams::default(), &route).await?;
    let ctl = controller(&client, Config::default());
    let mut s = spec(
        "web:1",
        3,
        json!([
            {"setWeight": 20}, {"pause": {"duration": "1s"}},
            {"setHeaderRoute": {"match": [{"header": "x-canary", "value": "always"}]}},
            {"setWeight": 60}, {"pause": {"duration": "1s"}}
        ]),
    );
    s["trafficRouting"] = json!({"gatewayAPI": {"httpRoute": "web"}});
    create(&client, "web", s).await?;
    phase(&client, "web", "Idle", 20).await?;
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let stable_svc = eventually(10, "Service web", || async {
        Ok(services.get_opt("web").await?)
    })
    .await?;
    let sel = stable_svc.spec.and_then(|s| s.selector).unwrap_or_default();
    assert_eq!(
        sel.get("coalmine.dev/track").map(String::as_str),
        Some("stable"),
        "the stable Service selects stable pods only"
    );

    set_image(&client, "web", "web:2").await?;
    let rules = |o: &DynamicObject| o.data["spec"]["rules"].clone();
    let at20 = eventually(20, "weights 80/20", || async {
        let r = routes.get("web").await?;
        Ok((rules(&r)[0]["backendRefs"]
            == json!([{"name": "web", "port": 80, "weight": 80}, {"name": "web-canary", "port": 80, "weight": 20}]))
        .then_some(r))
    })
    .await?;
    assert_eq!(
        rules(&at20)[1],
        user_route()["spec"]["rules"][1],
        "other rules untouched"
    );
    let canary_svc = services.get("web-canary").await?;
    let sel = canary_svc.spec.and_then(|s| s.selector).unwrap_or_default();
    assert_eq!(
        sel.get("coalmine.dev/track").map(String::as_str),
        Some("canary")
    );
    let canary = deployment(&client, "web-canary")
        .await?
        .ok_or("no canary")?;
    assert_eq!(
        shape(&canary),
        (3, "web:2".to_owned()),
        "full replicas behind a router"
    );

    let at60 = eventually(20, "header rule and 40/60", || async {
        let r = routes.get("web").await?;
        let rs = rules(&r);
        Ok((rs[0]["name"] == HEADER_RULE && rs[1]["backendRefs"][1]["weight"] == 60).then_some(rs))
    })
    .await?;
    assert_eq!(
        at60[0]["matches"][0]["headers"],
        json!([{"type": "Exact", "name": "x-canary", "value": "always"}])
    );
    assert_eq!(at60[0]["backendRefs"][0]["name"], "web-canary");

    phase(&client, "web", "Promoted", 30).await?;
    eventually(10, "the route as the user wrote it", || async {
        let r = routes.get("web").await?;
        Ok((r.data["spec"] == user_route()["spec"]).then_some(()))
    })
    .await?;
    let stable = deployment(&client, "web").await?.ok_or("no stable")?;
    assert_eq!(shape(&stable), (3, "web:2".to_owned()));
    ctl.stop().await;
    Ok(())
}

#[tokio::test]
async fn nginx_gets_a_managed_canary_ingress() -> TestResult {
    let (_server, client) = cluster().await?;
    let ingresses: Api<Ingress> = Api::namespaced(client.clone(), "default");
    let user: Ingress = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"ingressClassName": "nginx", "rules": [{"host": "shop.example", "http": {"paths": [
            {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "web", "port": {"number": 80}}}}
        ]}}]}
    }))?;
    ingresses.create(&PostParams::default(), &user).await?;
    let ctl = controller(&client, Config::default());
    let mut s = spec(
        "web:1",
        2,
        json!([
            {"setWeight": 10}, {"pause": {"duration": "1s"}},
            {"setHeaderRoute": {"match": [{"header": "x-canary", "value": "always"}]}},
            {"setWeight": 40}, {"pause": {"duration": "1s"}}
        ]),
    );
    s["trafficRouting"] = json!({"nginx": {"ingress": "web"}});
    create(&client, "web", s).await?;
    phase(&client, "web", "Idle", 20).await?;
    set_image(&client, "web", "web:2").await?;
    let annotation = |i: &Ingress, k: &str| {
        i.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(&format!("nginx.ingress.kubernetes.io/{k}")).cloned())
    };
    let first = eventually(20, "canary Ingress at 10%", || async {
        Ok(ingresses
            .get_opt("web-canary")
            .await?
            .filter(|i| annotation(i, "canary-weight").as_deref() == Some("10")))
    })
    .await?;
    assert_eq!(annotation(&first, "canary").as_deref(), Some("true"));
    let spec = serde_json::to_value(first.spec.clone())?;
    assert_eq!(spec["ingressClassName"], "nginx");
    assert_eq!(spec["rules"][0]["host"], "shop.example");
    assert_eq!(
        spec["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"],
        "web-canary"
    );
    let second = eventually(20, "canary Ingress at 40% with a header", || async {
        Ok(ingresses
            .get_opt("web-canary")
            .await?
            .filter(|i| annotation(i, "canary-weight").as_deref() == Some("40")))
    })
    .await?;
    assert_eq!(
        annotation(&second, "canary-by-header").as_deref(),
        Some("x-canary")
    );
    assert_eq!(
        annotation(&second, "canary-by-header-value").as_deref(),
        Some("always")
    );
    phase(&client, "web", "Promoted", 30).await?;
    eventually(10, "canary Ingress deleted", || async {
        Ok(ingresses
            .get_opt("web-canary")
            .await?
            .is_none()
            .then_some(()))
    })
    .await?;
    let kept = ingresses.get("web").await?;
    assert_eq!(
        serde_json::to_value(kept.spec)?,
        serde_json::to_value(user.spec)?,
        "the user's Ingress is never changed"
    );
    ctl.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_missing_http_route_is_reported_as_an_event() -> TestResult {
    let (_server, client) = cluster().await?;
    let ctl = controller(&client, Config::default());
    let mut s = spec("web:1", 1, json!([{"setWeight": 20}]));
    s["trafficRouting"] = json!({"gatewayAPI": {"httpRoute": "nowhere"}});
    create(&client, "web", s).await?;
    let events: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(client.clone(), "default");
    let note = eventually(20, "a ReconcileFailed event", || async {
        Ok(events
            .list(&Default::default())
            .await?
            .items
            .into_iter()
            .find(|e| e.reason.as_deref() == Some("ReconcileFailed"))
            .and_then(|e| e.note))
    })
    .await?;
    assert!(
        note.contains("spec.trafficRouting.gatewayAPI.httpRoute"),
        "{note}"
    );
    assert!(note.contains("nowhere"), "{note}");
    ctl.stop().await;
    Ok(())
}
