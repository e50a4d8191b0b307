//! The `gatewayAPI` router at a steady step, on a real API server with the
//! newest Gateway API CRDs and with v1.2's (which prune `rules[].name`):
//! header rules copy each stable rule's paths and filters, and once the
//! step's routes are in place the HTTPRoute is not written again.

mod kube_env;

use std::time::Duration;

use kube_env::{
    Controller, TestResult, create, create_http_route, env, env_gateway_api_1_2, eventually,
    http_routes, namespace, phase, set_image, spec,
};
use serde_json::json;

async fn steady_step_writes_nothing(env: &kube_env::Env) -> TestResult {
    let client = env.admin().await?;
    let ns = namespace(&client, "gw-steady").await?;
    let routes = http_routes(&client, &ns);
    let header_modifier = json!([{"type": "RequestHeaderModifier",
        "requestHeaderModifier": {"set": [{"name": "x-tier", "value": "api"}]}}]);
    create_http_route(
        &client,
        &ns,
        "web",
        json!([
            {"matches": [{"path": {"type": "PathPrefix", "value": "/api"}}],
             "filters": header_modifier,
             "backendRefs": [{"name": "web", "port": 80}]},
            {"matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
             "backendRefs": [{"name": "web", "port": 80}]}
        ]),
    )
    .await?;
    let ctl = Controller::start(env, &ns)?;
    let mut s = spec(
        "web:1",
        2,
        json!([
            {"setHeaderRoute": {"match": [{"header": "x-canary", "value": "always"}]}},
            {"setWeight": 20}, {"pause": {}}
        ]),
    );
    s["trafficRouting"] = json!({"gatewayAPI": {"httpRoute": "web"}});
    create(&client, &ns, "web", s).await?;
    phase(&client, &ns, "web", "Idle", 60).await?;
    set_image(&client, &ns, "web", "web:2").await?;
    phase(&client, &ns, "web", "Paused", 120).await?;
    let route = eventually(60, "two header rules and 80/20", || async {
        let r = routes.get("web").await?;
        let rules = r.data["spec"]["rules"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let weighted = rules
            .get(2)
            .map(|r| r["backendRefs"][1]["weight"] == 20)
            .unwrap_or(false);
        Ok((rules.len() == 4 && weighted).then_some(r))
    })
    .await?;
    let rules = &route.data["spec"]["rules"];
    assert_eq!(rules[0]["matches"][0]["path"]["value"], "/api", "{rules}");
    assert_eq!(rules[0]["matches"][0]["headers"][0]["name"], "x-canary");
    assert_eq!(
        rules[0]["filters"], header_modifier,
        "the stable rule's filters: {rules}"
    );
    assert_eq!(rules[0]["backendRefs"][0]["name"], "web-canary");
    assert_eq!(rules[1]["matches"][0]["path"]["value"], "/");

    // A minute at the step: no write, whatever the API server defaulted
    // or pruned.
    let before = route.metadata.resource_version.clone();
    tokio::time::sleep(Duration::from_secs(60)).await;
    let after = routes.get("web").await?;
    assert_eq!(
        before, after.metadata.resource_version,
        "the HTTPRoute was written at a steady step: {}",
        after.data["spec"]
    );
    assert_eq!(
        kube_env::status(&client, &ns, "web").await?["phase"],
        "Paused"
    );
    ctl.finish()?;
    Ok(())
}

#[tokio::test]
async fn a_steady_step_writes_the_http_route_no_more() -> TestResult {
    steady_step_writes_nothing(env()?).await
}

#[tokio::test]
async fn a_steady_step_writes_the_http_route_no_more_with_the_1_2_crds() -> TestResult {
    steady_step_writes_nothing(env_gateway_api_1_2()?).await
}
