//! End to end on one machine: the real `coldstart-agent run` binary, through a kubeconfig,
//! against the fake API server (no kube-apiserver is installable here), with real containerd,
//! a real registry (Debian's docker-registry) reached through hosts.toml, and the fake Hub.
//!
//! `coldctl warm --wait` creates the ColdModel and follows the node while the agent warms it:
//! the image is pulled through CRI and pinned, the weights land in the Hub cache, the ColdNode
//! reports Ready with byte counts, the model label comes, the startup taint goes (another
//! manager's taint stays), the conditions turn True and Events are recorded; `coldctl status`
//! shows it; `coldctl unwarm` undoes it (label, pin, weights after the grace). An API outage
//! does not stop local work, and the status catches up when the server returns. A GPU the node
//! advertises but NVML does not show keeps the startup taint.
//!
//! The fake enforces authentication, RBAC and admission from the rendered Karpenter overlay
//! (deploy/ as shipped): the agent runs with its service account's token (node-name claim
//! included) and coldctl with an operator's token, so every call they make is one deploy/
//! allows.
//!
//! They need root and `scripts/test-env.sh`; CI runs them with `--include-ignored`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "cluster/compile.rs"]
mod compile;
#[path = "cluster/snapshot.rs"]
mod snapshot;
mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use coldstart_fakeapi::{FakeApi, Outage};
use coldstart_fakehub::FakeHub;
use serde_json::{Value, json};
use support::nvml::NvmlStub;
use support::{
    Containerd, ContainerdOpts, Registry, TestEnv, build_image, push, wait_for, write_hosts_toml,
};

const MIB: usize = 1 << 20;
const NODE: &str = "gpu-1";
/// A second node, for what travels between nodes (compile caches).
const NODE_2: &str = "gpu-2";
const REPO: &str = "acme/tiny-model";
const MODEL: &str = "acme--tiny-model";
const IMAGE: &str = "registry.coldstart.test/serving/vllm:v1";
const WARM: Duration = Duration::from_secs(180);
const TAINT: &str = "coldstart.dev/warming";
const OTHER_TAINT: &str = "example.com/maintenance";

/// Everything the agent talks to, on loopback.
struct World {
    hosts: tempfile::TempDir,
    _images: tempfile::TempDir,
    registry: Registry,
    ctd: Containerd,
    hub: FakeHub,
    api: FakeApi,
    nvml: NvmlStub,
    dir: tempfile::TempDir,
}

impl World {
    fn new() -> World {
        World::new_with(|_| {})
    }

    /// As [`World::new`], with containerd's options changed by `tune` (pods and CRIU for the
    /// snapshot tests).
    fn new_with(tune: impl FnOnce(&mut ContainerdOpts)) -> World {
        support::require_root();
        let env = TestEnv::load();
        let images = tempfile::tempdir().unwrap();
        let layout = build_image(images.path(), &[2 * MIB, MIB], 11).unwrap();
        let registry = Registry::start_plain().unwrap();
        push(&layout, &registry.host(), "serving/vllm:v1", false).unwrap();
        let hosts = tempfile::tempdir().unwrap();
        write_hosts_toml(
            hosts.path(),
            "registry.coldstart.test",
            &registry.url(),
            None,
        );
        let mut opts = ContainerdOpts {
            root: None,
            hosts_dir: hosts.path().to_path_buf(),
            ..Default::default()
        };
        tune(&mut opts);
        let ctd = Containerd::start(env.newest(), opts).unwrap();
        let hub = FakeHub::start_blocking(coldstart_fakehub::Options::default()).unwrap();
        hub.add_repo_files(REPO, "main", model_files());
        // The Hub wants a token, which the agent finds only in its own namespace's secret.
        hub.set_token(Some("hub-s3cret"));
        let api = common::fake_api();
        let dir = tempfile::tempdir().unwrap();
        api.kubeconfig_with_token(
            &dir.path().join("kubeconfig"),
            &common::security::agent_token(NODE),
        )
        .unwrap();
        api.kubeconfig_with_token(
            &dir.path().join("kubeconfig-operator"),
            common::security::OPERATOR,
        )
        .unwrap();
        let manifests = common::security::render("deploy/overlays/karpenter");
        common::security::secure(&api, &manifests, &[NODE, NODE_2]);
        api.create(node()).unwrap();
        api.create(secret("coldstart-system", "hub-s3cret\n"))
            .unwrap();
        api.create(secret("default", "wrong-namespace")).unwrap();
        // The node advertises one GPU; the stand-in NVML library shows one, healthy.
        let nvml = NvmlStub::build(dir.path(), 1);
        World {
            nvml,
            hosts,
            _images: images,
            registry,
            ctd,
            hub,
            api,
            dir,
        }
    }

    fn cache_root(&self) -> PathBuf {
        self.dir.path().join("cache")
    }

    fn snapshot_dir(&self) -> PathBuf {
        self.cache_root()
            .join("hub/models--acme--tiny-model/snapshots")
    }

    /// Starts the agent for node `gpu-1` with the stand-in NVML library; `extra` flags last.
    fn agent(&self, extra: &[&str]) -> Agent {
        let lib = self.nvml.lib.to_str().unwrap().to_string();
        self.agent_with_nvml(&["--nvml-library", &lib], extra)
    }

    /// Starts the agent for node `gpu-1` with `nvml` as its NVML flags; `extra` flags last.
    fn agent_with_nvml(&self, nvml: &[&str], extra: &[&str]) -> Agent {
        self.agent_on(NODE, &self.cache_root(), nvml, extra)
    }

    /// Starts an agent for `node` (its own token: [`NODE`] or [`NODE_2`]) with the cache root
    /// `cache_root` and `nvml` as its NVML flags; `extra` flags last. Its log is
    /// `agent.log` for [`NODE`], `agent-<node>.log` for another.
    fn agent_on(&self, node: &str, cache_root: &Path, nvml: &[&str], extra: &[&str]) -> Agent {
        let (log, kubeconfig) = if node == NODE {
            (
                self.dir.path().join("agent.log"),
                self.dir.path().join("kubeconfig"),
            )
        } else {
            let kubeconfig = self.dir.path().join(format!("kubeconfig-{node}"));
            self.api
                .kubeconfig_with_token(&kubeconfig, &common::security::agent_token(node))
                .unwrap();
            (
                self.dir.path().join(format!("agent-{node}.log")),
                kubeconfig,
            )
        };
        let out = std::fs::File::create(&log).unwrap();
        let mut cmd = common::agent_command();
        cmd.args([
            "run",
            "--node-name",
            node,
            "--namespace",
            "coldstart-system",
        ])
        .args(["--admin-addr", "127.0.0.1:0", "--tick-interval", "1"])
        .arg("--containerd-socket")
        .arg(self.ctd.socket())
        .arg("--containerd-root")
        .arg(self.ctd.root())
        .arg("--containerd-config")
        .arg(self.ctd.config_path())
        .arg("--registry-config-dir")
        .arg(self.hosts.path())
        .arg("--cache-root")
        .arg(cache_root)
        .args(["--hub-endpoint", &self.hub.url()])
        .args(nvml)
        .args(extra)
        .env("KUBECONFIG", kubeconfig)
        .env("COLDSTART_LOG", "info,coldstart_agent=debug")
        .env("COLDSTART_LOG_FORMAT", "text")
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out);
        Agent {
            child: cmd.spawn().unwrap(),
            log,
        }
    }

    /// Runs `coldctl ARGS` against the fake API server (cluster mode), bounded.
    fn coldctl(&self, args: &[&str]) -> common::Run {
        let mut cmd = Command::new(common::coldctl_bin());
        cmd.args(args)
            .env("KUBECONFIG", self.dir.path().join("kubeconfig-operator"))
            .env("COLDSTART_LOG", "warn")
            .env_remove("KUBERNETES_SERVICE_HOST");
        let out = support::run_bounded(&mut cmd, Duration::from_secs(240)).expect("coldctl ran");
        common::Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    fn coldnode(&self) -> Option<Value> {
        self.api.get("coldnodes", "", NODE)
    }

    fn coldnode_of(&self, node: &str) -> Option<Value> {
        self.api.get("coldnodes", "", node)
    }

    fn node(&self) -> Value {
        self.api.get("nodes", "", NODE).unwrap()
    }

    /// The ColdNode's entry for our model, once its phase is `phase`.
    fn wait_model_phase(&self, agent: &mut Agent, phase: &str) -> Value {
        wait_for(&format!("model {phase}"), WARM, || {
            agent.check_alive();
            let cn = self.coldnode()?;
            let m = cn["status"]["models"]
                .as_array()?
                .iter()
                .find(|m| m["name"] == MODEL)?
                .clone();
            (m["phase"] == phase).then_some(m)
        })
        .unwrap_or_else(|e| panic!("{e}\n{}", agent.log_tail()))
    }
}

struct Agent {
    child: Child,
    log: PathBuf,
}

impl Agent {
    fn log_tail(&self) -> String {
        support::file_tail(&self.log, 8000)
    }

    fn check_alive(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("agent exited with {status}:\n{}", self.log_tail());
        }
    }

    /// SIGTERM, then the exit code (bounded).
    fn terminate(mut self) -> i32 {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        let status = wait_for("agent exit", Duration::from_secs(40), || {
            self.child.try_wait().unwrap()
        })
        .unwrap_or_else(|e| panic!("{e}\n{}", self.log_tail()));
        status.code().unwrap_or(-1)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn model_files() -> Vec<(String, Vec<u8>)> {
    let bytes = |n: usize, seed: u8| -> Vec<u8> {
        (0..n)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    };
    vec![
        ("config.json".into(), br#"{"model_type":"llama"}"#.to_vec()),
        ("tokenizer.json".into(), bytes(200_000, 1)),
        ("model.safetensors".into(), bytes(3 * MIB + 5, 2)),
        (
            "README.md".into(),
            b"not selected by the vLLM rules".to_vec(),
        ),
    ]
}

fn node() -> Value {
    node_named(NODE)
}

fn node_named(name: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"pool": "gpu", "kubernetes.io/hostname": name}},
        "spec": {"taints": [
            {"key": TAINT, "value": "true", "effect": "NoSchedule"},
            {"key": OTHER_TAINT, "effect": "NoSchedule"}
        ]},
        "status": {"capacity": {"nvidia.com/gpu": "1"}}
    })
}

fn secret(namespace: &str, token: &str) -> Value {
    use base64::Engine as _;
    let data = base64::engine::general_purpose::STANDARD.encode(token);
    json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "hub-token", "namespace": namespace},
        "data": {"token": data}
    })
}

fn cold_model(selector_pool: &str) -> Value {
    json!({
        "apiVersion": "coldstart.dev/v1alpha1", "kind": "ColdModel",
        "metadata": {"name": MODEL},
        "spec": {
            "repo": REPO,
            "image": IMAGE,
            "tokenSecretRef": {"name": "hub-token"},
            "nodeSelector": {"matchLabels": {"pool": selector_pool}}
        }
    })
}

fn taint_keys(node: &Value) -> Vec<String> {
    node["spec"]["taints"]
        .as_array()
        .map(|ts| {
            ts.iter()
                .map(|t| t["key"].as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn condition(node: &Value, type_: &str) -> Option<Value> {
    node["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
        .cloned()
}

fn ctr_labels(ctd: &Containerd, image: &str) -> String {
    let out = ctd.ctr(&["images", "ls"]).unwrap();
    out.lines()
        .find(|l| l.split_whitespace().next() == Some(image))
        .map(|l| l.split_whitespace().last().unwrap_or_default().to_string())
        .unwrap_or_default()
}

fn snapshots(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

#[test]
#[ignore = "needs root and scripts/test-env.sh (real containerd and registry)"]
fn the_agent_warms_its_node_and_undoes_it_when_the_model_goes() {
    let w = World::new();
    // Another model selecting other nodes only: never on this node.
    let mut other = cold_model("cpu");
    other["metadata"]["name"] = json!("acme--elsewhere");
    other["spec"]["repo"] = json!("acme/elsewhere");
    w.api.create(other).unwrap();
    // The taint patch meets conflicts first: the agent reads again and keeps other taints.
    w.api.conflict_next_writes("nodes", 2);
    let mut agent = w.agent(&["--eviction-grace", "2"]);

    // The operator's command: create the ColdModel and wait for the node.
    let warm = w.coldctl(&[
        "warm",
        REPO,
        "--image",
        IMAGE,
        "--selector",
        "pool=gpu",
        "--token-secret",
        "hub-token",
        "--wait",
        "--timeout",
        "3m",
        "-o",
        "json",
    ]);
    assert_eq!(warm.code, 0, "{warm:?}\n{}", agent.log_tail());
    let doc = warm.json();
    assert_eq!(doc["name"], MODEL);
    assert_eq!(doc["outcome"], "ready", "{doc}");
    assert_eq!(doc["model"]["ready"], 1, "{doc}");
    let m = w.wait_model_phase(&mut agent, "Ready");
    let weights = &m["weights"];
    assert_eq!(weights["phase"], "Ready", "{m}");
    let total = weights["bytesTotal"].as_u64().unwrap();
    assert_eq!(weights["bytesDone"].as_u64(), Some(total), "{m}");
    let expected = (200_000 + 3 * MIB + 5 + br#"{"model_type":"llama"}"#.len()) as u64;
    assert_eq!(
        total, expected,
        "config + tokenizer + safetensors, no README: {m}"
    );
    let commit = w.hub.commit(REPO, "main").unwrap();
    assert_eq!(weights["resolved"], json!(commit.id), "{m}");
    assert_eq!(m["image"]["phase"], "Ready", "{m}");
    assert!(
        m["image"]["bytesTotal"].as_u64().unwrap() > 3 * MIB as u64,
        "{m}"
    );
    assert!(
        m["image"]["resolved"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );

    // The snapshot is published where pods read it, the image is pinned as CRI sees it.
    assert!(
        w.snapshot_dir()
            .join(&commit.id)
            .join("model.safetensors")
            .is_file()
    );
    let cri = common::cri_image_status(w.ctd.socket(), IMAGE).expect("image present");
    if w.ctd.bin().version_at_least("1.7.3") {
        assert!(cri.pinned, "pinned for kubelet GC: {cri:?}");
    }
    assert!(ctr_labels(&w.ctd, IMAGE).contains("io.cri-containerd.pinned=pinned"));

    // The node surface: label, condition, taint gone, the other manager's taint kept.
    let node = wait_for("taint removed", WARM, || {
        let n = w.node();
        (!taint_keys(&n).contains(&TAINT.to_string())).then_some(n)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", agent.log_tail()));
    assert_eq!(taint_keys(&node), vec![OTHER_TAINT.to_string()], "{node}");
    assert_eq!(
        node["metadata"]["labels"][format!("coldstart.dev/model.{MODEL}")],
        "ready"
    );
    let cond = condition(&node, "ColdstartModelsWarm").expect("condition");
    assert_eq!(cond["status"], "True", "{cond}");
    assert_eq!(cond["reason"], "ModelsWarm");
    let gpu = condition(&node, "ColdstartGPUHealthy").expect("GPU condition");
    assert_eq!(gpu["status"], "True", "{gpu}");
    let cn = w.coldnode().unwrap();
    assert_eq!(cn["status"]["phase"], "Ready", "{cn}");
    assert_eq!(cn["status"]["gpu"]["healthy"], true, "{cn}");
    assert_eq!(
        cn["status"]["gpu"]["devices"].as_array().map(Vec::len),
        Some(1),
        "{cn}"
    );
    assert_eq!(
        cn["status"]["models"].as_array().unwrap().len(),
        1,
        "only ours: {cn}"
    );
    let reasons: Vec<String> = wait_for("events", Duration::from_secs(30), || {
        let evs = w.api.list("events.events.k8s.io").ok()?;
        let rs: Vec<String> = evs
            .iter()
            .map(|e| e["reason"].as_str().unwrap_or_default().to_string())
            .collect();
        rs.contains(&"NodeWarm".to_string()).then_some(rs)
    })
    .unwrap();
    assert!(reasons.contains(&"ModelReady".to_string()), "{reasons:?}");

    // `coldctl status` shows the node Ready for the model, with its bytes.
    let status = w.coldctl(&["status", "-o", "json"]);
    assert_eq!(status.code, 0, "{status:?}");
    let doc = status.json();
    let model = doc["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == MODEL)
        .unwrap_or_else(|| panic!("{doc}"));
    assert_eq!(
        (model["name"].as_str(), model["selected"].as_u64()),
        (Some(MODEL), Some(1))
    );
    assert_eq!(model["ready"], 1, "{doc}");
    assert_eq!(model["nodes"][0]["node"], NODE);
    assert_eq!(model["nodes"][0]["weights"]["bytesDone"], json!(total));
    let text = w.coldctl(&["status"]);
    assert!(
        text.stdout
            .lines()
            .any(|l| l.contains(NODE) && l.contains(MODEL) && l.contains("Ready")),
        "{text:?}"
    );

    // Unwarm: the label goes, the pin goes, the weights go after the grace period.
    let unwarm = w.coldctl(&["unwarm", REPO]);
    assert_eq!(unwarm.code, 0, "{unwarm:?}");
    assert!(w.api.get("coldmodels", "", MODEL).is_none());
    wait_for("label removed", WARM, || {
        let n = w.node();
        n["metadata"]["labels"]
            .get(format!("coldstart.dev/model.{MODEL}"))
            .is_none()
            .then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", agent.log_tail()));
    wait_for("image unpinned", WARM, || {
        (!ctr_labels(&w.ctd, IMAGE).contains("pinned=pinned")).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", agent.log_tail()));
    wait_for("weights evicted", WARM, || {
        (snapshots(&w.snapshot_dir()) == 0).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", agent.log_tail()));
    let cn = wait_for("status without the model", WARM, || {
        let cn = w.coldnode()?;
        let models = cn["status"]["models"].as_array().map_or(0, Vec::len);
        (models == 0).then_some(cn)
    })
    .unwrap();
    assert_eq!(
        cn["status"]["phase"], "Ready",
        "nothing selected is nothing missing: {cn}"
    );
    // The image itself stays: unpinned, it is the kubelet's GC's to collect.
    assert!(common::cri_image_status(w.ctd.socket(), IMAGE).is_some());
    assert_eq!(agent.terminate(), 0);
    // deploy/ as shipped allowed every call the agent and coldctl made.
    let refused: Vec<_> = w
        .api
        .requests()
        .into_iter()
        .filter(|r| matches!(r.status, 401 | 403 | 422))
        .collect();
    assert!(refused.is_empty(), "{refused:#?}");
}

#[test]
#[ignore = "needs root and scripts/test-env.sh (real containerd and registry)"]
fn local_work_goes_on_while_the_api_server_is_down_and_status_catches_up() {
    let w = World::new();
    w.api.create(cold_model("gpu")).unwrap();
    // Slow the Hub so the sync is still running when the API server goes away.
    w.hub.set_rate_limit_per_connection(Some(400_000));
    let mut agent = w.agent(&[]);
    wait_for("sync started", WARM, || {
        agent.check_alive();
        let cn = w.coldnode()?;
        (cn["status"]["models"][0]["weights"]["phase"] == "Syncing").then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", agent.log_tail()));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(w.api.outage(Outage::Status503));
    w.hub.set_rate_limit_per_connection(None);
    // While the API server answers 503 to everything, the weights still arrive and publish.
    wait_for("snapshot published during the outage", WARM, || {
        agent.check_alive();
        (snapshots(&w.snapshot_dir()) == 1).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", agent.log_tail()));
    let during = w.coldnode().unwrap();
    assert_ne!(
        during["status"]["phase"], "Ready",
        "no write got through: {during}"
    );
    assert!(taint_keys(&w.node()).contains(&TAINT.to_string()));
    std::thread::sleep(Duration::from_secs(3));
    w.api.restore().unwrap();
    w.wait_model_phase(&mut agent, "Ready");
    wait_for("taint removed after the outage", WARM, || {
        (!taint_keys(&w.node()).contains(&TAINT.to_string())).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", agent.log_tail()));
    assert_eq!(agent.terminate(), 0);
}

#[test]
#[ignore = "needs root and scripts/test-env.sh (real containerd and registry)"]
fn a_missing_gpu_keeps_the_startup_taint_until_the_agent_sees_it() {
    let w = World::new();
    w.api.create(cold_model("gpu")).unwrap();
    // The node advertises one GPU, NVML shows none: warm models, but not schedulable.
    w.nvml.set_gpus(0);
    let mut agent = w.agent(&[]);
    w.wait_model_phase(&mut agent, "Ready");
    let node = wait_for("GPU condition", WARM, || {
        let n = w.node();
        condition(&n, "ColdstartGPUHealthy").map(|c| (n, c))
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", agent.log_tail()));
    let (node, gpu) = node;
    assert_eq!(gpu["status"], "False", "{gpu}");
    assert_eq!(gpu["reason"], "GPUMissing", "{gpu}");
    // A few more passes: the taint stays while the GPU is missing.
    std::thread::sleep(Duration::from_secs(3));
    assert!(taint_keys(&w.node()).contains(&TAINT.to_string()), "{node}");
    let cn = w.coldnode().unwrap();
    assert_eq!(cn["status"]["gpu"]["healthy"], false, "{cn}");
    assert_eq!(agent.terminate(), 0);

    // The GPU is back (a driver reload, a reseated card): the restarted agent removes the taint.
    w.nvml.set_gpus(1);
    let mut agent = w.agent(&[]);
    wait_for("taint removed once the GPU is seen", WARM, || {
        agent.check_alive();
        (!taint_keys(&w.node()).contains(&TAINT.to_string())).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", agent.log_tail()));
    let gpu = condition(&w.node(), "ColdstartGPUHealthy").unwrap();
    assert_eq!(gpu["status"], "True", "{gpu}");
    assert_eq!(agent.terminate(), 0);
}

#[test]
#[ignore = "needs root and scripts/test-env.sh (real containerd and registry)"]
fn without_nvml_the_taint_stays_until_the_driver_appears_on_a_searched_path() {
    let w = World::new();
    w.api.create(cold_model("gpu")).unwrap();
    // No --nvml-library: NVML is searched for where the GPU Operator's driver root would be.
    let driver = w.dir.path().join("host/run/nvidia/driver/usr/lib64");
    std::fs::create_dir_all(&driver).unwrap();
    let search = driver.to_str().unwrap().to_string();
    let mut agent = w.agent_with_nvml(&["--nvml-search-path", &search], &[]);
    w.wait_model_phase(&mut agent, "Ready");
    let gpu = wait_for("NVMLNotFound", WARM, || {
        condition(&w.node(), "ColdstartGPUHealthy").filter(|c| c["reason"] == "NVMLNotFound")
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", agent.log_tail()));
    assert_eq!(gpu["status"], "False", "{gpu}");
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        taint_keys(&w.node()).contains(&TAINT.to_string()),
        "the taint stays while no NVML is found"
    );
    // The driver container publishes its root: the same agent finds the library and lets go.
    std::fs::copy(&w.nvml.lib, driver.join("libnvidia-ml.so.1")).unwrap();
    wait_for("taint removed once NVML loads", WARM, || {
        agent.check_alive();
        (!taint_keys(&w.node()).contains(&TAINT.to_string())).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", agent.log_tail()));
    let gpu = condition(&w.node(), "ColdstartGPUHealthy").unwrap();
    assert_eq!(gpu["status"], "True", "{gpu}");
    assert!(taint_keys(&w.node()).contains(&OTHER_TAINT.to_string()));
    assert_eq!(agent.terminate(), 0);
}

fn nodeclaim(name: &str, node: &str) -> Value {
    json!({
        "apiVersion": "karpenter.sh/v1", "kind": "NodeClaim",
        "metadata": {"name": name},
        "spec": {"nodeClassRef": {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": "gpu"}},
        "status": {"nodeName": node}
    })
}

#[test]
#[ignore = "needs root and scripts/test-env.sh (real containerd and registry)"]
fn past_the_deadline_replace_deletes_only_this_nodes_nodeclaim() {
    let w = World::new();
    // A model that cannot warm: its repository is not on the Hub.
    let mut model = cold_model("gpu");
    model["spec"]["repo"] = json!("acme/absent");
    w.api.create(model).unwrap();
    w.api.create(nodeclaim("gpu-a1b2c", NODE)).unwrap();
    w.api.create(nodeclaim("gpu-x9y8z", "gpu-2")).unwrap();
    let mut agent = w.agent(&["--warming-deadline", "1", "--deadline-action", "replace"]);
    wait_for("our NodeClaim deleted", WARM, || {
        agent.check_alive();
        w.api
            .get("nodeclaims", "", "gpu-a1b2c")
            .is_none()
            .then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", agent.log_tail()));
    assert!(
        w.api.get("nodeclaims", "", "gpu-x9y8z").is_some(),
        "another node's NodeClaim is left alone"
    );
    let reasons: Vec<String> = wait_for("the ReplacingNode event", Duration::from_secs(30), || {
        let evs = w.api.list("events.events.k8s.io").ok()?;
        let rs: Vec<String> = evs
            .iter()
            .map(|e| e["reason"].as_str().unwrap_or_default().to_string())
            .collect();
        rs.contains(&"ReplacingNode".to_string()).then_some(rs)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", agent.log_tail()));
    assert!(
        reasons.contains(&"WarmingDeadlineExceeded".to_string()),
        "{reasons:?}"
    );
    // Once: a NodeClaim for this node made again later (Karpenter's replacement is another
    // node) is not deleted by this agent.
    w.api.create(nodeclaim("gpu-again", NODE)).unwrap();
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        w.api.get("nodeclaims", "", "gpu-again").is_some(),
        "deleted once only"
    );
    assert!(
        taint_keys(&w.node()).contains(&TAINT.to_string()),
        "the taint stays"
    );
    assert_eq!(agent.terminate(), 0);
}
