//! Managed snapshots in cluster mode, end to end (issue 18): the real agent on the strict fake
//! API server (RBAC and admission from deploy/), real containerd 2.1.9 running a real pod
//! through CRI, real CRIU. The ColdModel's image is the counter program (scripts/spike); a pod
//! of it runs through CRI and is reported Ready by the fake API server, as a kubelet would.
//!
//! The policy captures once the pod has been Ready for its period (quiesce hooks called around
//! the checkpoint), imports the checkpoint image, holds the compile-cache scope by a retention
//! lease and labels the node with the key hash; a second snapshot (`coldctl snapshot create`)
//! with `keep: 1` evicts the first and its lease; `coldctl snapshot restore-spec` prints a
//! patch whose node affinity, evaluated with the project's selector code, matches only the
//! labelled node, and the patched container restores through CRI there, its count going on;
//! a new image digest for the model drops the label first, with the reason in status and an
//! Event, and the running pod is not captured again.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use coldstart_agent::api::matches;
use coldstart_agent::snapshots::{ContainerdSnapshots, RestoreTarget, RuntimeConfig};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use serde_json::{Value, json};

use super::support::cri::Cri;
use super::support::criu::{
    assert_resumed, build_images, criu_dir, field, frozen_log, run, wait_line,
};
use super::support::{wait_for, write_hosts_toml};
use super::{IMAGE, MODEL, NODE, NODE_2, WARM, World, cold_model, node_named};

const PAUSE: &str = "coldstart.test/snapshots/pause:1";
const LABEL: &str = "coldstart.dev/snapshot.acme--tiny-model";

/// A loopback HTTP server that answers 200 to everything and records request lines, bounded by
/// a deadline and a request count.
struct Hooks {
    port: u16,
    seen: Arc<Mutex<Vec<(String, Instant)>>>,
    stop: Arc<AtomicBool>,
}

impl Hooks {
    fn start() -> Hooks {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (seen.clone(), stop.clone());
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(900);
            let mut served = 0;
            while !st.load(Ordering::Relaxed) && Instant::now() < deadline && served < 64 {
                let Ok((mut c, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                };
                served += 1;
                c.set_nonblocking(false).unwrap();
                c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let mut buf = [0u8; 4096];
                let n = c.read(&mut buf).unwrap_or(0);
                let text = String::from_utf8_lossy(&buf[..n]);
                let line = text.lines().next().unwrap_or("").to_string();
                s.lock().unwrap().push((line, Instant::now()));
                let _ = c.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
            }
        });
        Hooks { port, seen, stop }
    }

    fn lines(&self) -> Vec<String> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .map(|(l, _)| l.clone())
            .collect()
    }
}

impl Drop for Hooks {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn pod(image: &str) -> Value {
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "vllm-0", "namespace": "default", "uid": "uid-vllm-0",
            "labels": {"coldstart.dev/model": MODEL}},
        "spec": {"nodeName": NODE, "containers": [{"name": "counter", "image": image}]},
        "status": {"phase": "Running", "podIP": "127.0.0.1", "conditions": [
            {"type": "Ready", "status": "True", "lastTransitionTime": now}]}})
}

fn snapshots(w: &World) -> Vec<Value> {
    w.coldnode()
        .and_then(|c| c["status"]["snapshots"].as_array().cloned())
        .unwrap_or_default()
}

fn label(w: &World, node: &str) -> Option<String> {
    w.api.get("nodes", "", node)?["metadata"]["labels"][LABEL]
        .as_str()
        .map(str::to_string)
}

fn event_reasons(w: &World) -> Vec<String> {
    w.api
        .list("events.events.k8s.io")
        .unwrap_or_default()
        .iter()
        .map(|e| e["reason"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn lease_ids(w: &World) -> Vec<String> {
    let path = w.cache_root().join("compile/state/leases.json");
    let Ok(bytes) = std::fs::read(path) else {
        return Vec::new();
    };
    let doc: Value = serde_json::from_slice(&bytes).unwrap();
    doc["leases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["id"].as_str().unwrap().to_string())
        .collect()
}

/// The patch's required node affinity as a label selector (`In` is the same operator).
fn affinity_selector(patch: &Value) -> LabelSelector {
    let terms = &patch["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        ["nodeSelectorTerms"];
    assert_eq!(terms.as_array().unwrap().len(), 1, "{patch}");
    let exprs: Vec<LabelSelectorRequirement> =
        serde_json::from_value(terms[0]["matchExpressions"].clone()).unwrap();
    LabelSelector {
        match_expressions: Some(exprs),
        match_labels: None,
    }
}

/// The fake API server, the agent's world and containerd 2.1.9 able to run pods with CRIU.
struct Setup {
    w: World,
    rt: tokio::runtime::Runtime,
    criu: std::path::PathBuf,
    counter: String,
}

fn setup() -> Setup {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let criu = criu_dir();
    let w = World::new_with(|o| {
        o.path_first = Some(criu.clone());
        o.sandbox_image = Some(PAUSE.to_string());
        o.run_pods = true;
    });
    // The counter image on the loopback registry (restore on 2.1.9 pulls the base image by
    // name@digest ignoring hosts.toml, so it is named by 127.0.0.1), the pause image imported.
    let counter = format!("{}/snapshots/counter:1", w.registry.host());
    let (pause_tar, counter_tar) = build_images(&w.dir.path().join("img"), PAUSE, &counter);
    run(std::process::Command::new("skopeo")
        .args(["copy", "-q", "--dest-tls-verify=false"])
        .arg(format!("oci-archive:{}", counter_tar.display()))
        .arg(format!("docker://{counter}")));
    write_hosts_toml(
        w.hosts.path(),
        &w.registry.host(),
        &format!("http://{}", w.registry.host()),
        None,
    );
    w.ctd
        .ctr_ns("k8s.io", &["images", "import", pause_tar.to_str().unwrap()])
        .unwrap();
    Setup {
        w,
        rt,
        criu,
        counter,
    }
}

/// The model's pod on [`NODE`]: the counter in a real CRI pod, and Ready in the API.
fn run_counter_pod(
    w: &World,
    rt: &tokio::runtime::Runtime,
    counter: &str,
) -> (Cri, super::support::cri::Pod) {
    let mut cri = rt.block_on(async { Cri::connect(w.ctd.socket()) });
    let logs = w.dir.path().join("logs/vllm-0");
    let env = [
        ("SPIKE_MIB", "16".to_string()),
        ("SPIKE_LOAD_MS", "200".to_string()),
        ("SPIKE_TICK_MS", "100".to_string()),
    ];
    let original = rt.block_on(async {
        let p = cri.run_pod("vllm-0", "default", &logs).await.unwrap();
        cri.run_container(&p, "counter", counter, &env)
            .await
            .unwrap();
        wait_line(&logs.join("counter.log"), 0, "count=3 ").await;
        p
    });
    w.api.create(pod(counter)).unwrap();
    (cri, original)
}

#[test]
#[ignore = "needs root and scripts/test-env.sh (containerd 2.1.9, CRIU 4.2.1)"]
fn a_snapshot_pushed_by_one_node_is_pulled_and_offered_by_another_of_the_same_key() {
    let Setup {
        w,
        rt,
        criu,
        counter,
    } = setup();
    let repository = format!("{}/coldstart/snapshots", w.registry.host());
    let mut model = cold_model("gpu");
    model["spec"]["image"] = json!(counter);
    model["spec"]["snapshot"] = json!({"enabled": true, "readySeconds": 1, "registry": repository});
    w.api.create(model).unwrap();
    let lib = w.nvml.lib.to_str().unwrap().to_string();
    let flags = ["--criu-path", criu.to_str().unwrap()];
    let nvml = ["--nvml-library", lib.as_str()];
    let mut a = w.agent_on(NODE, &w.cache_root(), &nvml, &flags);
    w.wait_model_phase(&mut a, "Ready");
    let (_cri, _pod) = run_counter_pod(&w, &rt, &counter);
    let pushed = wait_for("pushed from node 1", WARM, || {
        a.check_alive();
        snapshots(&w).first()?["pushed"]
            .as_str()
            .map(str::to_string)
    })
    .unwrap_or_else(|e| panic!("{e}\n{:?}\n{}", w.coldnode(), a.log_tail()));
    assert!(
        pushed.starts_with(&format!("{repository}@sha256:")),
        "{pushed}"
    );
    let hash = label(&w, NODE).unwrap();

    // Node 2: same model, image, GPU product, kernel and CRIU, no pod of the model: it pulls
    // what node 1 recorded, validates and imports it, and offers restores too.
    w.api.create(node_named(NODE_2)).ok();
    let root_b = w.dir.path().join("cache-2");
    let mut b = w.agent_on(NODE_2, &root_b, &nvml, &flags);
    let got = wait_for("the label on node 2", WARM, || {
        b.check_alive();
        label(&w, NODE_2)
    })
    .unwrap_or_else(|e| panic!("{e}\n{:?}\n{}", w.coldnode_of(NODE_2), b.log_tail()));
    assert_eq!(got, hash);
    let st = wait_for("node 2's snapshot in status", WARM, || {
        let cn = w.coldnode_of(NODE_2)?;
        cn["status"]["snapshots"].as_array()?.first().cloned()
    })
    .unwrap();
    assert_eq!(st["pushed"], pushed.as_str(), "{st}");
    assert_eq!(st["restorable"], true, "{st}");
    assert!(
        root_b
            .join("snapshots")
            .join(st["name"].as_str().unwrap())
            .join("layer.tar")
            .is_file()
    );
    wait_for("the pull's event", Duration::from_secs(30), || {
        event_reasons(&w)
            .contains(&"SnapshotPulled".to_string())
            .then_some(())
    })
    .unwrap();
    assert_eq!(a.terminate(), 0);
    assert_eq!(b.terminate(), 0);
}

#[test]
#[ignore = "needs root and scripts/test-env.sh (containerd 2.1.9, CRIU 4.2.1)"]
fn the_policy_captures_labels_evicts_restores_and_withdraws_on_a_new_image() {
    let Setup {
        w,
        rt,
        criu,
        counter,
    } = setup();
    let hooks = Hooks::start();
    let mut model = cold_model("gpu");
    model["spec"]["image"] = json!(counter);
    model["spec"]["snapshot"] = json!({"enabled": true, "readySeconds": 2, "keep": 1,
        "quiesce": {"port": hooks.port}});
    w.api.create(model).unwrap();
    w.api.create(node_named(NODE_2)).unwrap();
    let mut agent = w.agent(&["--criu-path", criu.to_str().unwrap()]);
    w.wait_model_phase(&mut agent, "Ready");
    assert_eq!(label(&w, NODE), None, "no snapshot yet, no label");

    // The model's pod: a real container through CRI, Ready in the API.
    let (mut cri, original) = run_counter_pod(&w, &rt, &counter);
    // Captured after the period: the label carries the key hash, status and Events say so.
    let hash = wait_for("the snapshot label", WARM, || {
        agent.check_alive();
        label(&w, NODE)
    })
    .unwrap_or_else(|e| panic!("{e}\n{:?}\n{}", w.coldnode(), agent.log_tail()));
    // The label is written before the status.
    let snaps = wait_for("the snapshot in status", WARM, || {
        let s = snapshots(&w);
        (!s.is_empty()).then_some(s)
    })
    .unwrap();
    assert_eq!(snaps.len(), 1, "{snaps:?}");
    let first = snaps[0].clone();
    assert_eq!(first["restorable"], true, "{first}");
    assert_eq!(first["keyHash"], hash.as_str(), "{first}");
    assert_eq!(first["container"], "counter", "{first}");
    assert_eq!(first["key"]["criu"], "4.2.1", "{first}");
    let first_name = first["name"].as_str().unwrap().to_string();
    let capture = &w.coldnode().unwrap()["status"]["snapshotCaptures"][0];
    assert_eq!(capture["state"], "captured", "{capture}");
    assert_eq!(
        hooks.lines(),
        ["POST /sleep?level=1 HTTP/1.1", "POST /wake_up HTTP/1.1"],
        "quiesce hooks around the checkpoint"
    );
    assert!(
        lease_ids(&w).contains(&format!("snapshot:{first_name}")),
        "the compile-cache scope is held: {:?}",
        lease_ids(&w)
    );
    let reasons = wait_for("events", Duration::from_secs(30), || {
        let r = event_reasons(&w);
        r.contains(&"SnapshotOffered".to_string()).then_some(r)
    })
    .unwrap();
    assert!(
        reasons.contains(&"SnapshotCaptured".to_string()),
        "{reasons:?}"
    );

    // Another on request; keep 1 evicts the first, and its lease goes with it.
    let run = w.coldctl(&["snapshot", "create", MODEL]);
    assert_eq!(run.code, 0, "{run:?}");
    let second = wait_for("the second snapshot, the first evicted", WARM, || {
        agent.check_alive();
        let s = snapshots(&w);
        (s.len() == 1 && s[0]["name"] != first_name.as_str()).then(|| s[0].clone())
    })
    .unwrap_or_else(|e| panic!("{e}\n{:?}\n{}", w.coldnode(), agent.log_tail()));
    let second_name = second["name"].as_str().unwrap().to_string();
    assert_eq!(second["keyHash"], hash.as_str(), "same key, same hash");
    assert!(!w.cache_root().join("snapshots").join(&first_name).exists());
    let leases = lease_ids(&w);
    assert!(
        !leases.contains(&format!("snapshot:{first_name}")),
        "{leases:?}"
    );
    assert!(
        leases.contains(&format!("snapshot:{second_name}")),
        "{leases:?}"
    );
    wait_for("the eviction's event", Duration::from_secs(30), || {
        event_reasons(&w)
            .contains(&"SnapshotEvicted".to_string())
            .then_some(())
    })
    .unwrap();
    // The lease keeps the scope the snapshot's process had mounted through a GC to nothing.
    let scope = w.coldnode().unwrap()["status"]["compileCaches"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["model"] == MODEL && c["current"] == true)
        .map(|c| c["scope"].as_str().unwrap().to_string())
        .expect("the model's compile-cache scope");
    let root = w.cache_root();
    let run = w.coldctl(&[
        "cache",
        "gc",
        "--here",
        "--budget",
        "0",
        "--dry-run",
        "-o",
        "json",
        "--cache-root",
        root.to_str().unwrap(),
    ]);
    assert_eq!(run.code, 0, "{run:?}");
    let gc = run.json();
    let kept = gc["kept"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["scope"] == scope.as_str())
        .cloned()
        .unwrap_or_else(|| panic!("scope {scope} not kept: {gc}"));
    assert_eq!(kept["reason"], "leased", "{gc}");
    assert_eq!(
        kept["leases"],
        json!([format!("snapshot:{second_name}")]),
        "{gc}"
    );
    let run = w.coldctl(&["snapshot", "list", MODEL, "-o", "json"]);
    assert_eq!(run.code, 0, "{run:?}");
    let listed = run.json();
    assert_eq!(listed["snapshots"][0]["node"], NODE, "{listed}");
    assert_eq!(listed["snapshots"][0]["restorable"], true, "{listed}");

    // The restore patch: its affinity matches only the labelled node.
    let run = w.coldctl(&["snapshot", "restore-spec", MODEL, "-o", "json"]);
    assert_eq!(run.code, 0, "{run:?}");
    let doc = run.json();
    let patch = doc["patch"].clone();
    let selector = affinity_selector(&patch);
    let matching: Vec<String> = w
        .api
        .list("nodes")
        .unwrap()
        .iter()
        .filter(|n| {
            let labels: BTreeMap<String, String> =
                serde_json::from_value(n["metadata"]["labels"].clone()).unwrap_or_default();
            matches(Some(&selector), &labels)
        })
        .map(|n| n["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(matching, [NODE], "{patch}");
    let container = &patch["spec"]["containers"][0];
    assert_eq!(container["name"], "counter", "{patch}");
    assert_eq!(container["imagePullPolicy"], "Never", "{patch}");
    let image = container["image"].as_str().unwrap().to_string();

    // The patched container restores through CRI on that node, its count going on.
    let layer = w
        .cache_root()
        .join("snapshots")
        .join(&second_name)
        .join("layer.tar");
    let frozen = frozen_log(&layer);
    let last: u64 = frozen
        .iter()
        .rev()
        .find_map(|l| field(l, "count="))
        .unwrap()
        .parse()
        .unwrap();
    rt.block_on(async {
        cri.remove_pod(&original).await;
        let logs = w.dir.path().join("logs/restored");
        let p = cri.run_pod("restored", "default", &logs).await.unwrap();
        let mut cfg = RuntimeConfig::new(w.ctd.socket().to_path_buf());
        cfg.config_file = w.ctd.config_path().to_path_buf();
        let target = RestoreTarget {
            sandbox_id: p.id.clone(),
            pod: p.name.clone(),
            namespace: p.namespace.clone(),
            uid: p.uid.clone(),
            log_directory: logs.clone(),
            container: "counter".into(),
            log_path: "counter.log".into(),
        };
        ContainerdSnapshots::new(cfg)
            .restore(&target, &image)
            .await
            .unwrap();
        let lines = wait_line(&logs.join("counter.log"), frozen.len(), "count=").await;
        assert_resumed(&lines, last, 3);
        cri.remove_pod(&p).await;
    });

    // The model moves to another image: the label goes, status and an Event say why, and the
    // pod (still Ready in the API) is not captured again.
    w.api
        .modify("coldmodels", "", MODEL, |m| {
            m["spec"]["image"] = json!(IMAGE)
        })
        .unwrap();
    wait_for("the label dropped", WARM, || {
        agent.check_alive();
        label(&w, NODE).is_none().then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", agent.log_tail()));
    // While the new image is pulled the model is not warm here (also a "no"); once it is, the
    // key's image digest differs.
    let snaps = wait_for("the reason in status", WARM, || {
        let s = snapshots(&w);
        let why = s.first()?["reason"].as_str()?.to_string();
        why.contains("image digest is").then_some(s)
    })
    .unwrap_or_else(|e| panic!("{e}\n{:?}", snapshots(&w)));
    assert_eq!(snaps.len(), 1, "{snaps:?}");
    let reason = snaps[0]["reason"].as_str().unwrap();
    assert!(reason.contains("image digest is"), "{reason}");
    wait_for("the withdrawal event", Duration::from_secs(30), || {
        event_reasons(&w)
            .contains(&"SnapshotWithdrawn".to_string())
            .then_some(())
    })
    .unwrap();
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(snapshots(&w).len(), 1, "the pod was captured again");
    let run = w.coldctl(&["snapshot", "restore-spec", MODEL]);
    assert_eq!(run.code, 1, "nothing to restore from: {run:?}");
    assert_eq!(agent.terminate(), 0);
}
