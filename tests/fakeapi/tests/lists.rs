//! Conformance rows: field selectors per kind for list and watch, paging with `limit` and
//! `continue`, and garbage collection by owner references.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use coldstart_fakeapi::{FakeApi, Options};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Node, Secret};
use kube::api::{
    Api, DeleteParams, ListParams, PostParams, PropagationPolicy, WatchEvent, WatchParams,
};
use kube::{Client, Config};
use serde_json::{Value, json};

async fn start() -> (FakeApi, Client) {
    let api = FakeApi::start(Options::default()).await.unwrap();
    let client = Client::try_from(Config::new(api.url().parse().unwrap())).unwrap();
    (api, client)
}

fn api_error<T: std::fmt::Debug>(r: kube::Result<T>) -> (u16, String, String) {
    match r {
        Err(kube::Error::Api(s)) => (s.code, s.reason.clone(), s.message.clone()),
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn names<T: kube::Resource>(items: &[T]) -> Vec<String> {
    items
        .iter()
        .map(|o| o.meta().name.clone().unwrap())
        .collect()
}

#[tokio::test]
async fn field_selectors_only_where_the_server_supports_them() {
    let (_fake, client) = start().await;
    let nodes: Api<Node> = Api::all(client.clone());
    let n: Node = serde_json::from_value(json!({"metadata": {"name": "gpu-1"},
        "spec": {"unschedulable": true}}))
    .unwrap();
    nodes.create(&PostParams::default(), &n).await.unwrap();
    let listed = nodes
        .list(&ListParams::default().fields("spec.unschedulable=true,metadata.name=gpu-1"))
        .await
        .unwrap();
    assert_eq!(names(&listed.items), ["gpu-1"]);
    let bad = ListParams::default().fields("status.phase=Ready");
    assert_eq!(
        api_error(nodes.list(&bad).await),
        (
            400,
            "BadRequest".into(),
            "field label not supported: status.phase".into()
        )
    );
    let wp = WatchParams::default().fields("metadata.namespace=x");
    let r = nodes.watch(&wp, "0").await;
    let (code, _, message) = match r {
        Err(kube::Error::Api(s)) => (s.code, s.reason, s.message),
        Ok(stream) => {
            let first = stream.boxed().try_next().await;
            panic!("expected a refusal, got {first:?}")
        }
        Err(e) => panic!("{e}"),
    };
    assert_eq!(
        (code, message.as_str()),
        (400, "field label not supported: metadata.namespace")
    );
    let secrets: Api<Secret> = Api::namespaced(client, "default");
    let s: Secret = serde_json::from_value(json!({"metadata": {"name": "s"}})).unwrap();
    let s = secrets.create(&PostParams::default(), &s).await.unwrap();
    assert_eq!(s.type_.as_deref(), Some("Opaque"));
    let listed = secrets
        .list(&ListParams::default().fields("type=Opaque"))
        .await
        .unwrap();
    assert_eq!(names(&listed.items), ["s"]);
}

fn secret(name: &str, owners: Value) -> Secret {
    serde_json::from_value(json!({"metadata": {"name": name, "namespace": "default",
        "ownerReferences": owners}}))
    .unwrap()
}

#[tokio::test]
async fn paging_is_consistent_with_the_first_page_and_tokens_expire() {
    let (fake, client) = start().await;
    let secrets: Api<Secret> = Api::namespaced(client, "default");
    let pp = PostParams::default();
    for i in 1..=7 {
        secrets
            .create(&pp, &secret(&format!("s{i}"), json!([])))
            .await
            .unwrap();
    }
    let first = secrets.list(&ListParams::default().limit(3)).await.unwrap();
    assert_eq!(names(&first.items), ["s1", "s2", "s3"]);
    assert_eq!(first.metadata.remaining_item_count, Some(4));
    let token = first.metadata.continue_.clone().unwrap();
    // Writes between pages: the next pages show the first page's state.
    secrets
        .delete("s5", &DeleteParams::default())
        .await
        .unwrap();
    secrets
        .create(&pp, &secret("s45", json!([])))
        .await
        .unwrap();
    let second = secrets
        .list(&ListParams::default().limit(3).continue_token(&token))
        .await
        .unwrap();
    assert_eq!(names(&second.items), ["s4", "s5", "s6"]);
    assert_eq!(
        second.metadata.resource_version,
        first.metadata.resource_version
    );
    let third = secrets
        .list(
            &ListParams::default()
                .limit(3)
                .continue_token(second.metadata.continue_.as_deref().unwrap()),
        )
        .await
        .unwrap();
    assert_eq!(names(&third.items), ["s7"]);
    assert_eq!(third.metadata.continue_, None);
    // A token older than the history: 410 Expired.
    fake.compact();
    secrets.create(&pp, &secret("s8", json!([]))).await.unwrap();
    let (code, reason, message) = api_error(
        secrets
            .list(&ListParams::default().limit(3).continue_token(&token))
            .await,
    );
    assert_eq!((code, reason.as_str()), (410, "Expired"));
    assert!(message.starts_with(
        "The provided continue parameter is too old to display a consistent list result."
    ));
}

async fn deleted_names(
    stream: &mut (impl futures::Stream<Item = kube::Result<WatchEvent<Secret>>> + Unpin),
    n: usize,
) -> Vec<String> {
    let mut out = Vec::new();
    while out.len() < n {
        let ev = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let WatchEvent::Deleted(s) = ev {
            out.push(s.metadata.name.unwrap());
        }
    }
    out
}

#[tokio::test]
async fn garbage_collection_by_owner_references() {
    let (fake, client) = start().await;
    let nodes: Api<Node> = Api::all(client.clone());
    let secrets: Api<Secret> = Api::namespaced(client, "default");
    let pp = PostParams::default();
    let owner = |name: &str| -> Node {
        serde_json::from_value(json!({"metadata": {"name": name}})).unwrap()
    };
    let n1 = nodes.create(&pp, &owner("n1")).await.unwrap();
    let n2 = nodes.create(&pp, &owner("n2")).await.unwrap();
    let by = |n: &Node| {
        json!([{"apiVersion": "v1", "kind": "Node", "name": n.metadata.name,
            "uid": n.metadata.uid}])
    };
    secrets.create(&pp, &secret("d1", by(&n1))).await.unwrap();
    let d1_child = json!([{"apiVersion": "v1", "kind": "Secret", "name": "d1",
        "uid": fake.get("secrets", "default", "d1").unwrap()["metadata"]["uid"]}]);
    secrets
        .create(&pp, &secret("d1-child", d1_child))
        .await
        .unwrap();
    secrets.create(&pp, &secret("d2", by(&n2))).await.unwrap();
    let mut watch = secrets
        .watch(&WatchParams::default(), "0")
        .await
        .unwrap()
        .boxed();
    // Background (the default): the dependent and its own dependent go.
    nodes.delete("n1", &DeleteParams::default()).await.unwrap();
    let mut gone = deleted_names(&mut watch, 2).await;
    gone.sort();
    assert_eq!(gone, ["d1", "d1-child"]);
    // Orphan: the dependent stays, without the reference.
    nodes
        .delete(
            "n2",
            &DeleteParams {
                propagation_policy: Some(PropagationPolicy::Orphan),
                ..DeleteParams::default()
            },
        )
        .await
        .unwrap();
    let d2 = secrets.get("d2").await.unwrap();
    assert_eq!(d2.metadata.owner_references, None);
    // Foreground: the dependent goes first, then the owner.
    let n3 = nodes.create(&pp, &owner("n3")).await.unwrap();
    secrets.create(&pp, &secret("d3", by(&n3))).await.unwrap();
    let foreground = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Foreground),
        ..DeleteParams::default()
    };
    nodes.delete("n3", &foreground).await.unwrap();
    assert_eq!(deleted_names(&mut watch, 1).await, ["d3"]);
    assert!(fake.get("nodes", "", "n3").is_none());
    // A reference to an owner that does not exist: collected right after the create.
    let ghost = json!([{"apiVersion": "v1", "kind": "Node", "name": "ghost",
        "uid": "00000000-0000-4000-8000-00000000dead"}]);
    secrets
        .create(&pp, &secret("orphaned", ghost))
        .await
        .unwrap();
    assert_eq!(deleted_names(&mut watch, 1).await, ["orphaned"]);
    assert!(fake.get("secrets", "default", "orphaned").is_none());
}
