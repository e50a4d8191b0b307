//! kube-rs against the fake API server: CRUD, patches, conflicts, status
//! isolation, finalizers, selectors, watchers, leases, custom resources and
//! the Deployment stand-in.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{TestResult, bounded, code, fast_options, raw, start};
use futures_util::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Service};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::runtime::{WatchStreamExt, conditions, wait::await_condition, watcher};
use kube::{CustomResource, CustomResourceExt, Resource, ResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

fn deployment(name: &str, replicas: i32, image: &str) -> Result<Deployment, serde_json::Error> {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": image, "ports": [{"containerPort": 8080}]}]}
            }
        }
    }))
}

fn configmap(name: &str, labels: &[(&str, &str)]) -> ConfigMap {
    let mut cm = ConfigMap::default();
    cm.metadata.name = Some(name.to_owned());
    cm.metadata.labels = Some(
        labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    );
    cm.data = Some(BTreeMap::from([("k".to_owned(), "v".to_owned())]));
    cm
}

#[tokio::test]
async fn deployments_crud_patches_and_conflicts() -> TestResult {
    bounded(30, async {
        let (server, client) = start(fast_options()).await?;
        let api: Api<Deployment> = Api::namespaced(client, "default");
        let created = api.create(&PostParams::default(), &deployment("web", 2, "app:1")?).await?;
        assert_eq!(created.metadata.generation, Some(1));
        assert!(created.metadata.uid.is_some());
        assert!(created.metadata.creation_timestamp.is_some());
        let rv1 = created.resource_version().ok_or("no resourceVersion")?;

        // Create again: 409 AlreadyExists.
        let err = api.create(&PostParams::default(), &deployment("web", 2, "app:1")?).await.err().ok_or("duplicate create succeeded")?;
        assert_eq!(code(&err), Some(409));
        assert!(matches!(&err, kube::Error::Api(s) if s.reason == "AlreadyExists"), "{err:?}");

        // Get and list.
        let got = api.get("web").await?;
        assert_eq!(got.spec.as_ref().and_then(|s| s.replicas), Some(2));
        let listed = api.list(&ListParams::default().labels("app=web")).await?;
        assert_eq!(listed.items.len(), 1);
        assert!(listed.metadata.resource_version.is_some());
        assert!(api.list(&ListParams::default().labels("app=other")).await?.items.is_empty());

        // Replace with the current resourceVersion works and bumps generation.
        let mut d = got.clone();
        if let Some(s) = d.spec.as_mut() {
            s.replicas = Some(3);
        }
        let replaced = api.replace("web", &PostParams::default(), &d).await?;
        assert_eq!(replaced.metadata.generation, Some(2));
        assert_ne!(replaced.resource_version().as_deref(), Some(rv1.as_str()));

        // Replace with the stale one: 409 Conflict.
        let err = api.replace("web", &PostParams::default(), &d).await.err().ok_or("stale replace succeeded")?;
        assert_eq!(code(&err), Some(409));
        assert!(matches!(&err, kube::Error::Api(s) if s.reason == "Conflict"), "{err:?}");

        // Empty resourceVersion: unconditional.
        d.metadata.resource_version = None;
        if let Some(s) = d.spec.as_mut() {
            s.replicas = Some(4);
        }
        let forced = api.replace("web", &PostParams::default(), &d).await?;
        assert_eq!(forced.spec.as_ref().and_then(|s| s.replicas), Some(4));

        // Merge patch of metadata only: generation unchanged.
        let gen_before = forced.metadata.generation;
        let p = api
            .patch("web", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"labels": {"tier": "front"}}})))
            .await?;
        assert_eq!(p.metadata.generation, gen_before);
        assert_eq!(p.labels().get("tier").map(String::as_str), Some("front"));

        // Merge patch carrying a stale resourceVersion: 409.
        let err = api
            .patch("web", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"resourceVersion": rv1}, "spec": {"replicas": 1}})))
            .await
            .err()
            .ok_or("stale merge patch succeeded")?;
        assert_eq!(code(&err), Some(409));

        // JSON patch.
        let jp: json_patch::Patch = serde_json::from_value(json!([
            {"op": "test", "path": "/spec/replicas", "value": 4},
            {"op": "replace", "path": "/spec/replicas", "value": 5}
        ]))?;
        let p = api.patch("web", &PatchParams::default(), &Patch::Json::<()>(jp)).await?;
        assert_eq!(p.spec.as_ref().and_then(|s| s.replicas), Some(5));
        let failing: json_patch::Patch = serde_json::from_value(json!([{"op": "test", "path": "/spec/replicas", "value": 99}]))?;
        let err = api.patch("web", &PatchParams::default(), &Patch::Json::<()>(failing)).await.err().ok_or("failed test op succeeded")?;
        assert_eq!(code(&err), Some(422));

        // Strategic merge patch merges containers by name.
        let p = api
            .patch("web", &PatchParams::default(), &Patch::Strategic(json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "app:2"}]}}}})))
            .await?;
        let c = &p.spec.as_ref().ok_or("no spec")?.template.spec.as_ref().ok_or("no pod spec")?.containers[0];
        assert_eq!(c.image.as_deref(), Some("app:2"));
        assert_eq!(c.ports.as_ref().map(Vec::len), Some(1), "ports kept by the strategic merge");

        // Server-side apply: create-or-merge with a field manager.
        let ssa = PatchParams::apply("coalmine-test");
        let applied = api
            .patch("api", &ssa, &Patch::Apply(deployment("api", 1, "api:1")?))
            .await?;
        assert_eq!(applied.metadata.generation, Some(1));
        let applied = api.patch("api", &ssa, &Patch::Apply(deployment("api", 2, "api:1")?)).await?;
        assert_eq!(applied.spec.as_ref().and_then(|s| s.replicas), Some(2));
        assert_eq!(applied.metadata.generation, Some(2));
        // Another manager applying a different value conflicts unless forced.
        let other = PatchParams::apply("someone-else");
        let err = api.patch("api", &other, &Patch::Apply(deployment("api", 7, "api:1")?)).await.err().ok_or("conflicting apply succeeded")?;
        assert_eq!(code(&err), Some(409));
        let forced = api.patch("api", &other.force(), &Patch::Apply(deployment("api", 7, "api:1")?)).await?;
        assert_eq!(forced.spec.as_ref().and_then(|s| s.replicas), Some(7));

        // Validation: selector must match the template.
        let mut bad = deployment("bad", 1, "x:1")?;
        if let Some(s) = bad.spec.as_mut() {
            s.selector.match_labels = Some(BTreeMap::from([("app".to_owned(), "other".to_owned())]));
        }
        let err = api.create(&PostParams::default(), &bad).await.err().ok_or("invalid deployment accepted")?;
        assert_eq!(code(&err), Some(422));

        // Scale subresource.
        let scale = api.get_scale("web").await?;
        assert_eq!(scale.spec.as_ref().and_then(|s| s.replicas), Some(5));
        api.patch_scale("web", &PatchParams::default(), &Patch::Merge(json!({"spec": {"replicas": 2}}))).await?;
        assert_eq!(api.get("web").await?.spec.and_then(|s| s.replicas), Some(2));

        // Delete: gone.
        api.delete("web", &DeleteParams::default()).await?;
        let err = api.get("web").await.err().ok_or("deleted object still there")?;
        assert_eq!(code(&err), Some(404));
        server.shutdown().await;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn services_get_defaults_and_strategic_port_merges() -> TestResult {
    bounded(30, async {
        let (_server, client) = start(fast_options()).await?;
        let api: Api<Service> = Api::namespaced(client, "default");
        let svc: Service = serde_json::from_value(json!({
            "metadata": {"name": "web"},
            "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}
        }))?;
        let created = api.create(&PostParams::default(), &svc).await?;
        let spec = created.spec.ok_or("no spec")?;
        assert_eq!(spec.type_.as_deref(), Some("ClusterIP"));
        assert!(spec.cluster_ip.as_deref().is_some_and(|ip| ip.starts_with("10.96.")));
        let p = api
            .patch("web", &PatchParams::default(), &Patch::Strategic(json!({"spec": {"ports": [{"name": "metrics", "port": 9090}]}})))
            .await?;
        let ports = p.spec.and_then(|s| s.ports).ok_or("no ports")?;
        assert_eq!(ports.len(), 2, "merged by port");
        // The clusterIP is immutable.
        let err = api
            .patch("web", &PatchParams::default(), &Patch::Merge(json!({"spec": {"clusterIP": "10.0.0.1"}})))
            .await
            .err()
            .ok_or("clusterIP changed")?;
        assert_eq!(code(&err), Some(422));
        api.delete("web", &DeleteParams::default()).await?;
        assert!(api.get_opt("web").await?.is_none());
        Ok(())
    })
    .await
}

#[tokio::test]
async fn status_subresource_is_isolated() -> TestResult {
    bounded(30, async {
        let mut opts = fast_options();
        opts.deployment_controller = false;
        let (_server, client) = start(opts).await?;
        let api: Api<Deployment> = Api::namespaced(client, "default");
        let mut d = deployment("iso", 1, "x:1")?;
        d.status = Some(serde_json::from_value(json!({"replicas": 9}))?);
        let created = api.create(&PostParams::default(), &d).await?;
        assert_eq!(
            created.status.as_ref().and_then(|s| s.replicas),
            None,
            "status dropped on create"
        );

        // Writing status through the main resource is ignored.
        let p = api
            .patch(
                "iso",
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"replicas": 3}})),
            )
            .await?;
        assert_eq!(p.status.as_ref().and_then(|s| s.replicas), None);
        assert_eq!(
            p.resource_version(),
            created.resource_version(),
            "a no-op write changes nothing"
        );

        // Writing spec through /status is ignored; status changes.
        let p = api
            .patch_status(
                "iso",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"replicas": 5}, "status": {"replicas": 3}})),
            )
            .await?;
        assert_eq!(p.status.as_ref().and_then(|s| s.replicas), Some(3));
        assert_eq!(p.spec.as_ref().and_then(|s| s.replicas), Some(1));
        assert_eq!(
            p.metadata.generation,
            Some(1),
            "status writes keep the generation"
        );

        // replace_status with a stale resourceVersion: 409.
        let mut stale = created.clone();
        stale.status = Some(serde_json::from_value(json!({"replicas": 4}))?);
        let err = api
            .replace_status("iso", &PostParams::default(), &stale)
            .await
            .err()
            .ok_or("stale status replace succeeded")?;
        assert_eq!(code(&err), Some(409));
        Ok(())
    })
    .await
}

#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, JsonSchema, PartialEq)]
#[kube(
    group = "test.coalmine.dev",
    version = "v1",
    kind = "Widget",
    namespaced,
    status = "WidgetStatus",
    shortname = "wd",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas"
    ),
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#
)]
struct WidgetSpec {
    replicas: i32,
    color: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    size: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, JsonSchema, PartialEq, Default)]
struct WidgetStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    phase: Option<String>,
    #[serde(default)]
    replicas: i32,
}

#[tokio::test]
async fn custom_resources_from_a_crd() -> TestResult {
    bounded(30, async {
        let (_server, client) = start(fast_options()).await?;
        let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
        crds.create(&PostParams::default(), &Widget::crd()).await?;
        let established = await_condition(crds.clone(), "widgets.test.coalmine.dev", conditions::is_crd_established());
        tokio::time::timeout(Duration::from_secs(5), established).await??;

        // Discovery sees it.
        let discovery = kube::discovery::Discovery::new(client.clone()).run().await?;
        let (ar, caps) = discovery
            .groups()
            .flat_map(|g| g.recommended_resources())
            .find(|(ar, _)| ar.kind == "Widget")
            .ok_or("Widget not discovered")?;
        assert_eq!(ar.plural, "widgets");
        assert!(caps.subresources.iter().any(|(s, _)| s.plural == "status"));

        let api: Api<Widget> = Api::namespaced(client.clone(), "default");
        let w = Widget::new("w1", WidgetSpec { replicas: 1, color: "red".into(), size: Some("L".into()) });
        let created = api.create(&PostParams::default(), &w).await?;
        assert_eq!(created.metadata.generation, Some(1));
        assert!(api.list(&ListParams::default()).await?.items.len() == 1);

        // Merge patch.
        let p = api.patch("w1", &PatchParams::default(), &Patch::Merge(json!({"spec": {"color": "blue"}}))).await?;
        assert_eq!(p.spec.color, "blue");
        assert_eq!(p.metadata.generation, Some(2));

        // Strategic merge on a custom resource is taken as a merge patch.
        let p = api.patch("w1", &PatchParams::default(), &Patch::Strategic(json!({"spec": {"color": "green"}}))).await?;
        assert_eq!(p.spec.color, "green");

        // Server-side apply drops a field the manager stops applying.
        let ssa = PatchParams::apply("widget-mgr");
        let a = api
            .patch("w2", &ssa, &Patch::Apply(json!({"apiVersion": "test.coalmine.dev/v1", "kind": "Widget", "spec": {"replicas": 1, "color": "red", "size": "S"}})))
            .await?;
        assert_eq!(a.spec.size.as_deref(), Some("S"));
        let a = api
            .patch("w2", &ssa, &Patch::Apply(json!({"apiVersion": "test.coalmine.dev/v1", "kind": "Widget", "spec": {"replicas": 1, "color": "red"}})))
            .await?;
        assert_eq!(a.spec.size, None);

        // Status subresource.
        let s = api
            .patch_status("w1", &PatchParams::default(), &Patch::Merge(json!({"status": {"phase": "Ready", "replicas": 1}})))
            .await?;
        assert_eq!(s.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Ready"));
        assert_eq!(s.metadata.generation, Some(2 + 1), "spec patches bumped it, status did not");
        // Server-side apply of status, as controllers do.
        let s = api
            .patch_status(
                "w1",
                &PatchParams::apply("widget-ctl").force(),
                &Patch::Apply(json!({"apiVersion": "test.coalmine.dev/v1", "kind": "Widget", "status": {"phase": "Promoting", "replicas": 1}})),
            )
            .await?;
        assert_eq!(s.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Promoting"));
        assert_eq!(s.spec.color, "green");
        let p = api.patch("w1", &PatchParams::default(), &Patch::Merge(json!({"status": {"phase": "Hacked"}}))).await?;
        assert_eq!(p.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Promoting"));

        // Scale subresource from the CRD.
        let scale = api.get_scale("w1").await?;
        assert_eq!(scale.spec.and_then(|s| s.replicas), Some(1));
        api.patch_scale("w1", &PatchParams::default(), &Patch::Merge(json!({"spec": {"replicas": 4}}))).await?;
        assert_eq!(api.get("w1").await?.spec.replicas, 4);

        // Deleting the CRD deletes its instances and the resource.
        crds.delete("widgets.test.coalmine.dev", &DeleteParams::default()).await?;
        let err = api.list(&ListParams::default()).await.err().ok_or("widgets still served")?;
        assert_eq!(code(&err), Some(404));
        Ok(())
    })
    .await
}

#[tokio::test]
async fn finalizers_hold_deletion() -> TestResult {
    bounded(30, async {
        let (_server, client) = start(fast_options()).await?;
        let api: Api<ConfigMap> = Api::namespaced(client, "default");
        let mut cm = configmap("held", &[("app", "x")]);
        cm.metadata.finalizers = Some(vec!["coalmine.dev/cleanup".into()]);
        api.create(&PostParams::default(), &cm).await?;

        let mut events = watcher(
            api.clone(),
            watcher::Config::default().fields("metadata.name=held"),
        )
        .default_backoff()
        .boxed();
        // Watchers are lazy: wait until this one has listed.
        while let Some(ev) = events.try_next().await? {
            if matches!(ev, watcher::Event::InitDone) {
                break;
            }
        }

        api.delete("held", &DeleteParams::default()).await?;
        let held = api.get("held").await?;
        assert!(held.metadata.deletion_timestamp.is_some());
        assert_eq!(held.finalizers(), ["coalmine.dev/cleanup"]);

        // No new finalizers while deleting.
        let err = api
            .patch(
                "held",
                &PatchParams::default(),
                &Patch::Merge(
                    json!({"metadata": {"finalizers": ["coalmine.dev/cleanup", "more"]}}),
                ),
            )
            .await
            .err()
            .ok_or("finalizer added while deleting")?;
        assert_eq!(code(&err), Some(422));

        // Other updates still work.
        api.patch(
            "held",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"k": "w"}})),
        )
        .await?;

        // Removing the last finalizer removes the object.
        api.patch(
            "held",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await?;
        assert!(api.get_opt("held").await?.is_none());

        let mut saw_delete = false;
        while let Some(ev) = events.try_next().await? {
            if let watcher::Event::Delete(o) = ev {
                assert_eq!(o.name_any(), "held");
                saw_delete = true;
                break;
            }
        }
        assert!(saw_delete);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn label_and_field_selectors() -> TestResult {
    bounded(30, async {
        let (_server, client) = start(fast_options()).await?;
        let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
        for (name, track, tier) in [
            ("a", "stable", Some("web")),
            ("b", "canary", Some("web")),
            ("c", "canary", None),
        ] {
            let mut labels = vec![("track", track)];
            if let Some(t) = tier {
                labels.push(("tier", t));
            }
            api.create(&PostParams::default(), &configmap(name, &labels))
                .await?;
        }
        let names = |sel: &'static str| {
            let api = api.clone();
            async move {
                let l = api.list(&ListParams::default().labels(sel)).await?;
                Ok::<Vec<String>, kube::Error>(l.items.iter().map(ResourceExt::name_any).collect())
            }
        };
        assert_eq!(names("track=canary").await?, ["b", "c"]);
        assert_eq!(names("track!=canary").await?, ["a"]);
        assert_eq!(names("track in (stable,canary),tier").await?, ["a", "b"]);
        assert_eq!(names("track notin (stable)").await?, ["b", "c"]);
        assert_eq!(names("!tier").await?, ["c"]);
        let by_field = api
            .list(&ListParams::default().fields("metadata.name=b"))
            .await?;
        assert_eq!(by_field.items.len(), 1);
        // Pagination.
        let page = api.list(&ListParams::default().limit(2)).await?;
        assert_eq!(page.items.len(), 2);
        let token = page.metadata.continue_.clone().ok_or("no continue token")?;
        let rest = api
            .list(&ListParams::default().limit(2).continue_token(&token))
            .await?;
        assert_eq!(rest.items.len(), 1);
        assert!(rest.metadata.continue_.as_deref().is_none_or(str::is_empty));
        // All namespaces.
        let all: Api<ConfigMap> = Api::all(client);
        assert_eq!(all.list(&ListParams::default()).await?.items.len(), 3);
        // A malformed selector is a 400.
        let err = api
            .list(&ListParams::default().labels("a in (b"))
            .await
            .err()
            .ok_or("bad selector accepted")?;
        assert_eq!(code(&err), Some(400));
        Ok(())
    })
    .await
}

#[tokio::test]
async fn watcher_sees_changes_through_bookmarks() -> TestResult {
    bounded(30, async {
        for streaming in [false, true] {
            let (_server, client) = start(fast_options()).await?;
            let api: Api<ConfigMap> = Api::namespaced(client, "default");
            api.create(&PostParams::default(), &configmap("before", &[("w", "1")]))
                .await?;
            let mut cfg = watcher::Config::default().labels("w=1");
            if streaming {
                cfg = cfg.streaming_lists();
            }
            let mut stream = watcher(api.clone(), cfg).boxed();
            let (mut init_done, mut added, mut modified, mut deleted) =
                (false, false, false, false);
            let started = Instant::now();
            let writer = {
                let api = api.clone();
                tokio::spawn(async move {
                    // Leave time for some bookmarks first.
                    tokio::time::sleep(Duration::from_millis(700)).await;
                    api.create(&PostParams::default(), &configmap("w", &[("w", "1")]))
                        .await?;
                    api.patch(
                        "w",
                        &PatchParams::default(),
                        &Patch::Merge(json!({"data": {"k": "changed"}})),
                    )
                    .await?;
                    // Not matching: never seen.
                    api.create(&PostParams::default(), &configmap("other", &[("w", "2")]))
                        .await?;
                    api.delete("w", &DeleteParams::default()).await?;
                    Ok::<(), kube::Error>(())
                })
            };
            while let Some(ev) = stream.try_next().await? {
                match ev {
                    watcher::Event::InitDone => init_done = true,
                    watcher::Event::InitApply(o) => assert_eq!(o.name_any(), "before"),
                    watcher::Event::Apply(o) if o.name_any() == "w" => {
                        if o.data.as_ref().and_then(|d| d.get("k")).map(String::as_str)
                            == Some("changed")
                        {
                            modified = true;
                        } else {
                            added = true;
                        }
                    }
                    watcher::Event::Apply(o) => {
                        return Err(format!("unexpected {}", o.name_any()).into());
                    }
                    watcher::Event::Delete(o) => {
                        assert_eq!(o.name_any(), "w");
                        deleted = true;
                        break;
                    }
                    watcher::Event::Init => {}
                }
            }
            writer.await??;
            assert!(
                init_done && added && modified && deleted,
                "streaming={streaming}"
            );
            assert!(started.elapsed() >= Duration::from_millis(700));
        }
        Ok(())
    })
    .await
}

#[tokio::test]
async fn raw_watch_resumes_and_expires() -> TestResult {
    bounded(30, async {
        let mut opts = fast_options();
        opts.watch_history = 5;
        let (_server, client) = start(opts).await?;
        let api: Api<ConfigMap> = Api::namespaced(client, "default");
        let first = api
            .create(&PostParams::default(), &configmap("c0", &[]))
            .await?;
        let rv0 = first.resource_version().ok_or("no rv")?;
        api.create(&PostParams::default(), &configmap("c1", &[]))
            .await?;

        // Resuming from rv0 replays what came after it.
        let list_rv = api
            .list(&ListParams::default())
            .await?
            .metadata
            .resource_version
            .ok_or("no list rv")?;
        let mut s = api
            .watch(&WatchParams::default().timeout(5), &rv0)
            .await?
            .boxed();
        match s.try_next().await? {
            Some(WatchEvent::Added(o)) => assert_eq!(o.name_any(), "c1"),
            other => return Err(format!("expected c1 ADDED, got {other:?}").into()),
        }
        // Then bookmarks at or after the list's resourceVersion.
        match s.try_next().await? {
            Some(WatchEvent::Bookmark(b)) => {
                assert!(b.metadata.resource_version.parse::<u64>()? >= list_rv.parse::<u64>()?);
            }
            other => return Err(format!("expected a bookmark, got {other:?}").into()),
        }
        drop(s);

        // Enough writes to push rv0 out of the kept history: 410 Expired.
        for i in 2..10 {
            api.create(&PostParams::default(), &configmap(&format!("c{i}"), &[]))
                .await?;
        }
        let mut s = api
            .watch(&WatchParams::default().timeout(5), &rv0)
            .await?
            .boxed();
        match s.try_next().await? {
            Some(WatchEvent::Error(e)) => assert_eq!(e.code, 410),
            other => return Err(format!("expected 410, got {other:?}").into()),
        }
        // The watch timeout ends the stream.
        let t = Instant::now();
        let mut s = api
            .watch(&WatchParams::default().timeout(1), &list_rv)
            .await?
            .boxed();
        while s.try_next().await?.is_some() {}
        assert!(t.elapsed() < Duration::from_secs(3));
        Ok(())
    })
    .await
}

#[tokio::test]
async fn lease_races_have_one_winner() -> TestResult {
    bounded(30, async {
        let (_server, client) = start(fast_options()).await?;
        let api: Api<Lease> = Api::namespaced(client, "default");
        let lease: Lease = serde_json::from_value(json!({
            "metadata": {"name": "leader"},
            "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15, "leaseTransitions": 0}
        }))?;
        let created = api.create(&PostParams::default(), &lease).await?;

        // Two candidates read the same version; only one update wins.
        let mut b = created.clone();
        let mut c = created.clone();
        if let Some(s) = b.spec.as_mut() {
            s.holder_identity = Some("b".into());
        }
        if let Some(s) = c.spec.as_mut() {
            s.holder_identity = Some("c".into());
        }
        api.replace("leader", &PostParams::default(), &b).await?;
        let err = api
            .replace("leader", &PostParams::default(), &c)
            .await
            .err()
            .ok_or("both won")?;
        assert_eq!(code(&err), Some(409));

        // Many concurrent read-modify-write loops never lose an update.
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let api = api.clone();
            tasks.push(tokio::spawn(async move {
                for _ in 0..5 {
                    loop {
                        let mut l = api.get("leader").await?;
                        if let Some(s) = l.spec.as_mut() {
                            s.lease_transitions = Some(s.lease_transitions.unwrap_or(0) + 1);
                        }
                        match api.replace("leader", &PostParams::default(), &l).await {
                            Ok(_) => break,
                            Err(kube::Error::Api(s)) if s.code == 409 => continue,
                            Err(e) => return Err(e),
                        }
                    }
                }
                Ok::<(), kube::Error>(())
            }));
        }
        for t in tasks {
            t.await??;
        }
        let l = api.get("leader").await?;
        assert_eq!(l.spec.and_then(|s| s.lease_transitions), Some(40));

        // PUT of a missing lease creates it (as the real server does).
        let mut fresh = lease.clone();
        fresh.metadata.name = Some("other".into());
        api.replace("other", &PostParams::default(), &fresh).await?;
        assert!(api.get_opt("other").await?.is_some());
        Ok(())
    })
    .await
}

#[tokio::test]
async fn deployment_stand_in_reports_ready_after_the_delay() -> TestResult {
    bounded(30, async {
        let mut opts = fast_options();
        opts.deployment_ready_delay = Duration::from_millis(300);
        let (_server, client) = start(opts).await?;
        let api: Api<Deployment> = Api::namespaced(client, "default");
        let t = Instant::now();
        let created = api
            .create(&PostParams::default(), &deployment("ready", 3, "app:1")?)
            .await?;
        assert_eq!(created.status.as_ref().and_then(|s| s.ready_replicas), None);
        let done = await_condition(api.clone(), "ready", conditions::is_deployment_completed());
        let d = tokio::time::timeout(Duration::from_secs(5), done)
            .await??
            .ok_or("deployment gone")?;
        assert!(
            t.elapsed() >= Duration::from_millis(300),
            "ready too soon: {:?}",
            t.elapsed()
        );
        let st = d.status.ok_or("no status")?;
        assert_eq!(st.ready_replicas, Some(3));
        assert_eq!(st.available_replicas, Some(3));
        assert_eq!(st.updated_replicas, Some(3));
        assert_eq!(st.observed_generation, Some(1));

        // A new generation is observed again.
        api.patch(
            "ready",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 1}})),
        )
        .await?;
        let cond = |d: Option<&Deployment>| {
            d.and_then(|d| d.status.as_ref())
                .is_some_and(|s| s.observed_generation == Some(2) && s.ready_replicas == Some(1))
        };
        tokio::time::timeout(
            Duration::from_secs(5),
            await_condition(api.clone(), "ready", cond),
        )
        .await??;

        // A never-ready deployment stays unavailable and exceeds its deadline.
        let mut nr = deployment("stuck", 2, "app:never-ready")?;
        if let Some(s) = nr.spec.as_mut() {
            s.progress_deadline_seconds = Some(1);
        }
        api.create(&PostParams::default(), &nr).await?;
        let exceeded = |d: Option<&Deployment>| {
            d.and_then(|d| d.status.as_ref())
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| {
                    cs.iter().any(|c| {
                        c.type_ == "Progressing"
                            && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
                    })
                })
        };
        let d = tokio::time::timeout(
            Duration::from_secs(5),
            await_condition(api.clone(), "stuck", exceeded),
        )
        .await??
        .ok_or("deployment gone")?;
        let st = d.status.ok_or("no status")?;
        assert_eq!(st.ready_replicas, None);
        assert_eq!(st.unavailable_replicas, Some(2));

        // The annotation works too.
        let mut ann = deployment("held", 1, "app:1")?;
        ann.metadata.annotations = Some(BTreeMap::from([(
            coalmine_fakekube::deployments::NEVER_READY_ANNOTATION.to_owned(),
            "true".to_owned(),
        )]));
        api.create(&PostParams::default(), &ann).await?;
        tokio::time::sleep(Duration::from_millis(600)).await;
        let st = api.get("held").await?.status.ok_or("no status")?;
        assert_eq!(st.observed_generation, Some(1));
        assert_eq!(st.ready_replicas, None);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn namespaces_and_owner_references_clean_up() -> TestResult {
    bounded(30, async {
        let (_server, client) = start(fast_options()).await?;
        let nss: Api<Namespace> = Api::all(client.clone());
        let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "team"}}))?;
        nss.create(&PostParams::default(), &ns).await?;
        let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "team");
        let owner = cms.create(&PostParams::default(), &configmap("owner", &[])).await?;
        let mut dep = configmap("dependent", &[]);
        dep.metadata.owner_references = Some(vec![serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.uid().ok_or("no uid")?
        }))?]);
        cms.create(&PostParams::default(), &dep).await?;
        cms.delete("owner", &DeleteParams::default()).await?;
        assert!(cms.get_opt("dependent").await?.is_none(), "garbage collected");

        // Creating in a missing namespace: 404.
        let nowhere: Api<ConfigMap> = Api::namespaced(client.clone(), "nowhere");
        let err = nowhere.create(&PostParams::default(), &configmap("x", &[])).await.err().ok_or("created in a missing namespace")?;
        assert_eq!(code(&err), Some(404));

        // Deleting a namespace waits for its content's finalizers.
        let mut held = configmap("held", &[]);
        held.metadata.finalizers = Some(vec!["x/y".into()]);
        cms.create(&PostParams::default(), &held).await?;
        nss.delete("team", &DeleteParams::default()).await?;
        let terminating = nss.get("team").await?;
        assert_eq!(terminating.status.and_then(|s| s.phase).as_deref(), Some("Terminating"));
        let err = cms.create(&PostParams::default(), &configmap("late", &[])).await.err().ok_or("created in a terminating namespace")?;
        assert_eq!(code(&err), Some(403));
        cms.patch("held", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"finalizers": null}}))).await?;
        assert!(nss.get_opt("team").await?.is_none());
        Ok(())
    })
    .await
}

/// method, path, headers, body, expected code, expected reason.
type Case<'a> = (
    &'a str,
    &'a str,
    Vec<(&'a str, &'a str)>,
    &'a [u8],
    u16,
    &'a str,
);

#[tokio::test]
async fn bad_requests_get_status_objects() -> TestResult {
    bounded(30, async {
        let (server, _client) = start(fast_options()).await?;
        let a = server.addr();
        let json = [("Content-Type", "application/json")];
        let cases: Vec<Case> = vec![
            (
                "GET",
                "/apis/nope.dev/v1/things",
                vec![],
                b"",
                404,
                "NotFound",
            ),
            (
                "GET",
                "/api/v1/namespaces/default/configmaps/missing",
                vec![],
                b"",
                404,
                "NotFound",
            ),
            (
                "POST",
                "/api/v1/namespaces/default/configmaps",
                json.to_vec(),
                b"{not json",
                400,
                "BadRequest",
            ),
            (
                "POST",
                "/api/v1/namespaces/default/configmaps",
                json.to_vec(),
                b"[1,2]",
                400,
                "BadRequest",
            ),
            (
                "POST",
                "/api/v1/namespaces/default/configmaps",
                vec![("Content-Type", "application/vnd.kubernetes.protobuf")],
                b"\x00",
                415,
                "UnsupportedMediaType",
            ),
            (
                "POST",
                "/api/v1/namespaces/default/configmaps",
                json.to_vec(),
                br#"{"metadata":{"name":"Bad_Name"}}"#,
                422,
                "Invalid",
            ),
            (
                "POST",
                "/api/v1/namespaces/default/configmaps",
                json.to_vec(),
                br#"{"apiVersion":"v2","metadata":{"name":"x"}}"#,
                400,
                "BadRequest",
            ),
            (
                "PATCH",
                "/api/v1/namespaces/default/configmaps/x",
                vec![("Content-Type", "text/plain")],
                b"x",
                415,
                "UnsupportedMediaType",
            ),
            ("POST", "/version", vec![], b"", 405, "MethodNotAllowed"),
            (
                "GET",
                "/api/v1/namespaces/default/configmaps?labelSelector=a%20in%20(",
                vec![],
                b"",
                400,
                "BadRequest",
            ),
            (
                "GET",
                "/api/v1/namespaces/default/configmaps?continue=zz",
                vec![],
                b"",
                400,
                "BadRequest",
            ),
            (
                "PATCH",
                "/api/v1/namespaces/default/configmaps/x?fieldManager=",
                vec![("Content-Type", "application/apply-patch+yaml")],
                b"{}",
                400,
                "BadRequest",
            ),
        ];
        for (method, path, headers, body, want, reason) in cases {
            let (status, text) = raw(a, method, path, &headers, body).await?;
            assert_eq!(status, want, "{method} {path}: {text}");
            let v: serde_json::Value = serde_json::from_str(&text)?;
            assert_eq!(v["kind"], "Status", "{method} {path}");
            assert_eq!(v["reason"], reason, "{method} {path}: {text}");
            assert_eq!(v["code"], want);
        }
        // The server survived all of it.
        let (status, _) = raw(a, "GET", "/version", &[], b"").await?;
        assert_eq!(status, 200);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn recorder_events_are_core_events_too() -> TestResult {
    bounded(30, async {
        use k8s_openapi::api::core::v1::Event as CoreEvent;
        use kube::runtime::events::{Event, EventType, Recorder, Reporter};
        let (_server, client) = start(fast_options()).await?;
        let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
        let cm = cms
            .create(&PostParams::default(), &configmap("subject", &[]))
            .await?;
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: "coalmine".into(),
                instance: None,
            },
        );
        let ev = Event {
            type_: EventType::Normal,
            reason: "Promoted".into(),
            note: Some("weight 25".into()),
            action: "Promote".into(),
            secondary: None,
        };
        let reference = cm.object_ref(&());
        recorder.publish(&ev, &reference).await?;
        // The same event again becomes a series (a patch of the first).
        recorder.publish(&ev, &reference).await?;
        let core: Api<CoreEvent> = Api::namespaced(client.clone(), "default");
        let list = core.list(&ListParams::default()).await?;
        assert_eq!(list.items.len(), 1);
        let e = &list.items[0];
        assert_eq!(e.message.as_deref(), Some("weight 25"));
        assert_eq!(e.involved_object.name.as_deref(), Some("subject"));
        assert_eq!(e.reason.as_deref(), Some("Promoted"));
        assert!(
            e.series.as_ref().is_some_and(|s| s.count == Some(2)),
            "{e:?}"
        );
        Ok(())
    })
    .await
}
