//! kube-rs (client and runtime watcher) against the fake API server.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use coldstart_fakeapi::{FakeApi, Options, Outage};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Node;
use kube::api::{
    Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams, WatchEvent,
    WatchParams,
};
use kube::core::{ApiResource, GroupVersionKind};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Config};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(20);

async fn start() -> (FakeApi, Client) {
    let api = FakeApi::start(Options::default()).await.unwrap();
    let client = Client::try_from(Config::new(api.url().parse().unwrap())).unwrap();
    (api, client)
}

fn node(name: &str, labels: Value) -> Node {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": labels},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]}
    }))
    .unwrap()
}

/// The `Status` a failed call answered: (code, reason).
fn api_error<T: std::fmt::Debug>(r: kube::Result<T>) -> (u16, String) {
    match r {
        Err(kube::Error::Api(s)) => (s.code, s.reason.clone()),
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn condition_types(n: &Node) -> Vec<(String, String)> {
    n.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .map(|cs| {
            cs.iter()
                .map(|c| (c.type_.clone(), c.status.clone()))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn nodes_create_get_list_replace_delete() {
    let (fake, client) = start().await;
    let nodes: Api<Node> = Api::all(client);
    let pp = PostParams::default();
    let n1 = nodes
        .create(&pp, &node("n1", json!({"pool": "a"})))
        .await
        .unwrap();
    nodes
        .create(&pp, &node("n2", json!({"pool": "b"})))
        .await
        .unwrap();
    assert_eq!(
        api_error(nodes.create(&pp, &node("n1", json!({}))).await),
        (409, "AlreadyExists".into())
    );
    let meta = &n1.metadata;
    assert!(meta.uid.is_some() && meta.creation_timestamp.is_some());
    assert_eq!(meta.generation, Some(1));
    assert_eq!(condition_types(&n1), [("Ready".into(), "True".into())]);

    let got = nodes.get("n1").await.unwrap();
    assert_eq!(got.metadata.resource_version, meta.resource_version);
    assert_eq!(api_error(nodes.get("nope").await), (404, "NotFound".into()));

    let all = nodes.list(&ListParams::default()).await.unwrap();
    assert_eq!(all.items.len(), 2);
    assert_eq!(
        all.metadata.resource_version,
        Some(fake.resource_version().to_string())
    );
    let a = nodes
        .list(&ListParams::default().labels("pool=a"))
        .await
        .unwrap();
    assert_eq!(a.items.len(), 1);
    let b = nodes
        .list(&ListParams::default().labels("pool in (b,c),!gpu"))
        .await
        .unwrap();
    assert_eq!(b.items[0].metadata.name.as_deref(), Some("n2"));
    let by_name = nodes
        .list(&ListParams::default().fields("metadata.name=n2"))
        .await
        .unwrap();
    assert_eq!(by_name.items.len(), 1);

    // Replace: fine with the current resourceVersion, 409 with a stale one.
    let mut edited = got.clone();
    edited.spec = Some(serde_json::from_value(json!({"unschedulable": true})).unwrap());
    let replaced = nodes.replace("n1", &pp, &edited).await.unwrap();
    assert_eq!(replaced.metadata.generation, Some(2));
    assert_ne!(
        replaced.metadata.resource_version,
        got.metadata.resource_version
    );
    assert_eq!(
        api_error(nodes.replace("n1", &pp, &edited).await),
        (409, "Conflict".into())
    );

    nodes.delete("n1", &DeleteParams::default()).await.unwrap();
    assert_eq!(api_error(nodes.get("n1").await).0, 404);
    assert_eq!(
        api_error(nodes.delete("n1", &DeleteParams::default()).await).0,
        404
    );
    assert_eq!(fake.count("create", "nodes"), 3);
    assert_eq!(fake.count("delete", "nodes"), 2);
}

#[tokio::test]
async fn json_patch_test_on_resource_version_fails_after_another_writer() {
    let (fake, client) = start().await;
    let nodes: Api<Node> = Api::all(client);
    nodes
        .create(&PostParams::default(), &node("n1", json!({})))
        .await
        .unwrap();
    let seen = nodes.get("n1").await.unwrap();
    let rv = seen.metadata.resource_version.clone().unwrap();
    // Another manager adds a taint between our read and our write.
    fake.modify("nodes", "", "n1", |n| {
        n["spec"]["taints"] = json!([{"key": "other", "effect": "NoExecute"}]);
    })
    .unwrap();
    let ours = |rv: &str, taints: Value| -> json_patch::Patch {
        serde_json::from_value(json!([
            {"op": "test", "path": "/metadata/resourceVersion", "value": rv},
            {"op": "add", "path": "/spec/taints", "value": taints}
        ]))
        .unwrap()
    };
    let taint = json!({"key": "coldstart.dev/warming", "value": "true", "effect": "NoSchedule"});
    let pp = PatchParams::default();
    let stale = nodes
        .patch("n1", &pp, &Patch::Json::<()>(ours(&rv, json!([taint]))))
        .await;
    assert_eq!(api_error(stale), (422, "Invalid".into()));

    // Retry from a fresh read keeps the other manager's taint.
    let fresh = nodes.get("n1").await.unwrap();
    let mut taints = serde_json::to_value(fresh.spec.unwrap().taints.unwrap()).unwrap();
    taints.as_array_mut().unwrap().push(taint);
    let rv = fresh.metadata.resource_version.unwrap();
    let patched = nodes
        .patch("n1", &pp, &Patch::Json::<()>(ours(&rv, taints)))
        .await
        .unwrap();
    let keys: Vec<_> = patched
        .spec
        .unwrap()
        .taints
        .unwrap()
        .into_iter()
        .map(|t| t.key)
        .collect();
    assert_eq!(keys, ["other", "coldstart.dev/warming"]);
    assert_eq!(fake.count("patch", "nodes"), 2);
    let r = fake.requests().pop().unwrap();
    assert_eq!(r.patch_type.as_deref(), Some("application/json-patch+json"));
}

#[tokio::test]
async fn merge_patch_on_labels() {
    let (_fake, client) = start().await;
    let nodes: Api<Node> = Api::all(client);
    nodes
        .create(
            &PostParams::default(),
            &node("n1", json!({"a": "1", "b": "2"})),
        )
        .await
        .unwrap();
    let patch = json!({"metadata": {"labels": {"a": null, "coldstart.dev/model.m": "ready"}}});
    let n = nodes
        .patch("n1", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let labels = n.metadata.labels.unwrap();
    assert_eq!(labels.len(), 2);
    assert_eq!(labels["coldstart.dev/model.m"], "ready");
    // A merge patch carrying a stale resourceVersion is a conditional update.
    let stale = json!({"metadata": {"resourceVersion": "1", "labels": {"x": "y"}}});
    let r = nodes
        .patch("n1", &PatchParams::default(), &Patch::Merge(&stale))
        .await;
    assert_eq!(api_error(r), (409, "Conflict".into()));
    // Strategic merge: conditions by type.
    let smp = json!({"status": {"conditions": [{"type": "X", "status": "False"}]}});
    let n = nodes
        .patch_status("n1", &PatchParams::default(), &Patch::Strategic(&smp))
        .await
        .unwrap();
    assert_eq!(condition_types(&n).len(), 2);
}

fn conditions_patch(conds: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Node", "status": {"conditions": conds}})
}

#[tokio::test]
async fn apply_node_conditions_merges_by_type() {
    let (fake, client) = start().await;
    let nodes: Api<Node> = Api::all(client);
    nodes
        .create(&PostParams::default(), &node("n1", json!({})))
        .await
        .unwrap();
    // Two managers' conditions merge by type; each owns its own.
    let pp = PatchParams::apply("coldstart-agent").force();
    let other = PatchParams::apply("gpu-monitor").force();
    let gpu = json!([{"type": "ColdstartGPUHealthy", "status": "True", "reason": "Healthy"}]);
    nodes
        .patch_status("n1", &other, &Patch::Apply(conditions_patch(gpu)))
        .await
        .unwrap();
    let warm = json!([{"type": "ColdstartModelsWarm", "status": "False", "reason": "Warming"}]);
    let n = nodes
        .patch_status("n1", &pp, &Patch::Apply(conditions_patch(warm)))
        .await
        .unwrap();
    assert_eq!(
        condition_types(&n),
        [
            ("Ready".into(), "True".into()),
            ("ColdstartGPUHealthy".into(), "True".into()),
            ("ColdstartModelsWarm".into(), "False".into())
        ]
    );
    let rv = n.metadata.resource_version.clone();
    let warm = json!([{"type": "ColdstartModelsWarm", "status": "True", "reason": "Warm"}]);
    let n = nodes
        .patch_status("n1", &pp, &Patch::Apply(conditions_patch(warm.clone())))
        .await
        .unwrap();
    assert_eq!(
        condition_types(&n)[2],
        ("ColdstartModelsWarm".into(), "True".into())
    );
    // The same apply again changes nothing: same resourceVersion.
    let again = nodes
        .patch_status("n1", &pp, &Patch::Apply(conditions_patch(warm)))
        .await
        .unwrap();
    assert_ne!(n.metadata.resource_version, rv);
    assert_eq!(again.metadata.resource_version, n.metadata.resource_version);
    let r = fake.requests().pop().unwrap();
    assert_eq!(
        (r.resource.as_str(), r.field_manager.as_deref()),
        ("nodes/status", Some("coldstart-agent"))
    );
    // A manager that stops applying its condition removes it, and only it.
    let n = nodes
        .patch_status("n1", &other, &Patch::Apply(conditions_patch(json!([]))))
        .await
        .unwrap();
    assert_eq!(
        condition_types(&n),
        [
            ("Ready".into(), "True".into()),
            ("ColdstartModelsWarm".into(), "True".into())
        ]
    );
    // Apply needs apiVersion and kind, as on the real server.
    let r = nodes
        .patch_status("n1", &pp, &Patch::Apply(json!({"status": {}})))
        .await;
    assert_eq!(api_error(r).0, 400);
}

#[tokio::test]
async fn status_subresource_is_isolated() {
    let (_fake, client) = start().await;
    let nodes: Api<Node> = Api::all(client.clone());
    let n = nodes
        .create(&PostParams::default(), &node("n1", json!({})))
        .await
        .unwrap();
    // Main resource writes keep the stored status.
    let mut edited = n.clone();
    edited.status = None;
    edited.metadata.labels = Some([("k".to_string(), "v".to_string())].into());
    let n = nodes
        .replace("n1", &PostParams::default(), &edited)
        .await
        .unwrap();
    assert_eq!(condition_types(&n).len(), 1);
    assert!(n.metadata.labels.is_some());
    // Status writes keep everything else.
    let p = json!({"metadata": {"labels": {"k": "changed"}},
        "status": {"conditions": [{"type": "Ready", "status": "False"}]}});
    let n = nodes
        .patch_status("n1", &PatchParams::default(), &Patch::Merge(&p))
        .await
        .unwrap();
    assert_eq!(n.metadata.labels.as_ref().unwrap()["k"], "v");
    assert_eq!(condition_types(&n), [("Ready".into(), "False".into())]);

    // A CRD with a status subresource drops status on create.
    let ar = coldnode_resource();
    let coldnodes: Api<DynamicObject> = Api::all_with(client, &ar);
    let obj: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "coldstart.dev/v1alpha1", "kind": "ColdNode",
        "metadata": {"name": "n1"}, "spec": {}, "status": {"phase": "Ready"}
    }))
    .unwrap();
    let created = coldnodes
        .create(&PostParams::default(), &obj)
        .await
        .unwrap();
    assert!(created.data.get("status").is_none());
    let st = json!({"apiVersion": "coldstart.dev/v1alpha1", "kind": "ColdNode",
        "status": {"phase": "Warming"}});
    let pp = PatchParams::apply("coldstart-agent");
    let cn = coldnodes
        .patch_status("n1", &pp, &Patch::Apply(st))
        .await
        .unwrap();
    assert_eq!(cn.data["status"]["phase"], "Warming");
}

fn coldnode_resource() -> ApiResource {
    let gvk = GroupVersionKind::gvk("coldstart.dev", "v1alpha1", "ColdNode");
    ApiResource::from_gvk_with_plural(&gvk, "coldnodes")
}

#[tokio::test]
async fn dynamic_coldmodel_crud_and_apply() {
    let (fake, client) = start().await;
    let gvk = GroupVersionKind::gvk("coldstart.dev", "v1alpha1", "ColdModel");
    let ar = ApiResource::from_gvk_with_plural(&gvk, "coldmodels");
    let models: Api<DynamicObject> = Api::all_with(client, &ar);
    let pp = PatchParams::apply("coldctl");
    let m = json!({"apiVersion": "coldstart.dev/v1alpha1", "kind": "ColdModel",
        "metadata": {"name": "org--model"}, "spec": {"repo": "org/model", "revision": "main"}});
    let created = models
        .patch("org--model", &pp, &Patch::Apply(&m))
        .await
        .unwrap();
    assert_eq!(created.data["spec"]["repo"], "org/model");
    // The manager's apply that omits `repo` (which it owned alone) removes it.
    let patch = json!({"apiVersion": "coldstart.dev/v1alpha1", "kind": "ColdModel",
        "spec": {"revision": "abc"}});
    let applied = models
        .patch("org--model", &pp, &Patch::Apply(&patch))
        .await
        .unwrap();
    assert_eq!(applied.data["spec"], json!({"revision": "abc"}));
    assert_eq!(applied.metadata.generation, Some(2));
    assert_eq!(
        models
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len(),
        1
    );
    assert!(
        fake.get("coldmodels.coldstart.dev", "", "org--model")
            .is_some()
    );
    // Strategic merge is not served for custom resources (415), as on the real server.
    let r = models
        .patch(
            "org--model",
            &PatchParams::default(),
            &Patch::Strategic(json!({})),
        )
        .await;
    assert_eq!(api_error(r).0, 415);
    models
        .delete("org--model", &DeleteParams::default())
        .await
        .unwrap();
    assert!(fake.list("coldmodels").unwrap().is_empty());
}

#[tokio::test]
async fn injected_conflicts_and_503_outage() {
    let (fake, client) = start().await;
    let nodes: Api<Node> = Api::all(client);
    nodes
        .create(&PostParams::default(), &node("n1", json!({})))
        .await
        .unwrap();
    fake.conflict_next_writes("nodes", 2);
    let p = Patch::Merge(json!({"metadata": {"labels": {"a": "b"}}}));
    let pp = PatchParams::default();
    for _ in 0..2 {
        assert_eq!(
            api_error(nodes.patch("n1", &pp, &p).await),
            (409, "Conflict".into())
        );
    }
    nodes.patch("n1", &pp, &p).await.unwrap();
    assert_eq!(fake.count("patch", "nodes"), 3);

    fake.outage(Outage::Status503).await;
    // kube retries 429/503/504 by default; a client without retries sees the Status.
    let mut cfg = Config::new(fake.url().parse().unwrap());
    cfg.default_retry = false;
    let no_retry: Api<Node> = Api::all(Client::try_from(cfg).unwrap());
    assert_eq!(
        api_error(no_retry.get("n1").await),
        (503, "ServiceUnavailable".into())
    );
    // The default client retries through a short outage.
    let f = fake.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        f.restore().unwrap();
    });
    tokio::time::timeout(WAIT, nodes.get("n1"))
        .await
        .unwrap()
        .unwrap();
    let retried = fake.requests().iter().filter(|r| r.status == 503).count();
    assert!(retried >= 3, "{retried} answers were 503");

    fake.outage(Outage::Refuse).await;
    match nodes.get("n1").await {
        Err(kube::Error::Api(s)) => panic!("expected a connection error, got {s:?}"),
        Err(_) => {}
        Ok(_) => panic!("expected a connection error"),
    }
    fake.restore().unwrap();
    nodes.get("n1").await.unwrap();
}

#[tokio::test]
async fn raw_watch_selectors_bookmarks_and_gone() {
    let (fake, client) = start().await;
    let nodes: Api<Node> = Api::all(client);
    nodes
        .create(&PostParams::default(), &node("n1", json!({"w": "1"})))
        .await
        .unwrap();
    let mut wp = WatchParams::default().labels("w=1").timeout(30);
    wp.bookmarks = true;
    let mut stream = nodes.watch(&wp, "0").await.unwrap().boxed();
    let mut next = async || {
        tokio::time::timeout(WAIT, stream.try_next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
    };
    assert!(
        matches!(next().await, WatchEvent::Added(n) if n.metadata.name.as_deref() == Some("n1"))
    );
    fake.modify("nodes", "", "n1", |n| {
        n["metadata"]["labels"]["w"] = json!("2")
    })
    .unwrap();
    // Leaving the selector reads as a deletion; bookmarks may come in between.
    loop {
        match next().await {
            WatchEvent::Bookmark(_) => continue,
            WatchEvent::Deleted(n) => {
                assert_eq!(n.metadata.name.as_deref(), Some("n1"));
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    loop {
        if let WatchEvent::Bookmark(b) = next().await {
            assert_eq!(
                b.metadata.resource_version,
                fake.resource_version().to_string()
            );
            break;
        }
    }

    let old = fake.resource_version();
    fake.modify("nodes", "", "n1", |n| {
        n["metadata"]["labels"]["x"] = json!("1")
    })
    .unwrap();
    fake.compact();
    let mut stream = nodes
        .watch(&WatchParams::default(), &old.to_string())
        .await
        .unwrap()
        .boxed();
    let ev = tokio::time::timeout(WAIT, stream.try_next()).await.unwrap();
    match ev.unwrap().unwrap() {
        WatchEvent::Error(e) => assert_eq!(e.code, 410),
        other => panic!("expected 410, got {other:?}"),
    }
}

/// Waits until the watcher has reported an event for which `want` holds.
async fn wait_for(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<watcher::Event<Node>>,
    what: &str,
    want: impl Fn(&watcher::Event<Node>) -> bool,
) {
    tokio::time::timeout(WAIT, async {
        while let Some(ev) = rx.recv().await {
            if want(&ev) {
                return;
            }
        }
        panic!("watcher ended");
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
}

fn named(ev: &watcher::Event<Node>, kind: &str, name: &str) -> bool {
    let (k, n) = match ev {
        watcher::Event::Apply(n) => ("apply", n),
        watcher::Event::InitApply(n) => ("init", n),
        watcher::Event::Delete(n) => ("delete", n),
        _ => return false,
    };
    (k == kind || (kind == "apply" && k == "init")) && n.metadata.name.as_deref() == Some(name)
}

#[tokio::test]
async fn runtime_watcher_recovers_from_outage_and_gone() {
    let (fake, client) = start().await;
    let nodes: Api<Node> = Api::all(client);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let cfg = watcher::Config::default().fields("metadata.name!=ignored");
    let task = tokio::spawn(async move {
        let mut s = watcher(nodes, cfg).default_backoff().boxed();
        while let Some(ev) = s.next().await {
            if let Ok(ev) = ev
                && tx.send(ev).is_err()
            {
                return;
            }
        }
    });
    wait_for(&mut rx, "init done", |e| {
        matches!(e, watcher::Event::InitDone)
    })
    .await;
    fake.create(json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}}))
        .unwrap();
    fake.create(json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "ignored"}}))
        .unwrap();
    wait_for(&mut rx, "n1 added", |e| named(e, "apply", "n1")).await;
    fake.modify("nodes", "", "n1", |n| {
        n["spec"]["unschedulable"] = json!(true)
    })
    .unwrap();
    wait_for(&mut rx, "n1 modified", |e| {
        matches!(e, watcher::Event::Apply(n) if n.spec.as_ref().and_then(|s| s.unschedulable) == Some(true))
    })
    .await;
    fake.delete("nodes", "", "n1").unwrap();
    wait_for(&mut rx, "n1 deleted", |e| named(e, "delete", "n1")).await;

    // Outage: the watch is cut and new connections are refused; a change made meanwhile is
    // seen once the server is back.
    fake.outage(Outage::Refuse).await;
    fake.create(json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n2"}}))
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    fake.restore().unwrap();
    wait_for(&mut rx, "n2 after the outage", |e| named(e, "apply", "n2")).await;

    // 410: the history the watcher would resume from is gone; it relists.
    let lists = fake.count("list", "nodes");
    fake.outage(Outage::Refuse).await;
    fake.create(json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n3"}}))
        .unwrap();
    fake.compact();
    fake.restore().unwrap();
    wait_for(&mut rx, "n3 after 410", |e| named(e, "apply", "n3")).await;
    assert!(fake.count("list", "nodes") > lists, "the watcher relisted");
    assert!(
        fake.requests()
            .iter()
            .all(|r| r.resource != "nodes" || r.name.is_none()),
        "the watcher only lists and watches"
    );
    task.abort();
}

#[tokio::test]
async fn kubeconfig_drives_a_client() {
    let (fake, _) = start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig");
    fake.kubeconfig(&path).unwrap();
    let kc = kube::config::Kubeconfig::read_from(&path).unwrap();
    let cfg = Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    assert_eq!(cfg.default_namespace, "default");
    let client = Client::try_from(cfg).unwrap();
    let v = client.apiserver_version().await.unwrap();
    assert_eq!(v.minor, "33");
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::default_namespaced(client);
    let s = json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"generateName": "hf-token-"}, "stringData": {"token": "x"}});
    let created = secrets
        .create(&PostParams::default(), &serde_json::from_value(s).unwrap())
        .await
        .unwrap();
    let name = created.metadata.name.unwrap();
    assert!(name.starts_with("hf-token-") && name.len() == "hf-token-".len() + 5);
    assert_eq!(created.metadata.namespace.as_deref(), Some("default"));
    assert_eq!(fake.list("secrets").unwrap().len(), 1);
}

#[tokio::test]
async fn binary_loads_objects_and_writes_a_kubeconfig() {
    use tokio::io::AsyncBufReadExt as _;
    let dir = tempfile::tempdir().unwrap();
    let objects = dir.path().join("nodes.json");
    let list = json!({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "gpu-1"},
         "status": {"conditions": [{"type": "Ready", "status": "True"}]}}
    ]});
    std::fs::write(&objects, list.to_string()).unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_fake-apiserver"))
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .arg("--load")
        .arg(&objects)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(WAIT, lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let url = first.strip_prefix("listening ").unwrap();
    assert!(url.starts_with("http://127.0.0.1:"), "{first}");
    let kc = kube::config::Kubeconfig::read_from(&kubeconfig).unwrap();
    let cfg = Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    assert_eq!(cfg.cluster_url.to_string().trim_end_matches('/'), url);
    let nodes: Api<Node> = Api::all(Client::try_from(cfg).unwrap());
    let n = nodes.get("gpu-1").await.unwrap();
    assert_eq!(condition_types(&n), [("Ready".into(), "True".into())]);
    child.start_kill().unwrap();
    tokio::time::timeout(WAIT, child.wait())
        .await
        .unwrap()
        .unwrap();
}
