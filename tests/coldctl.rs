//! System tests of `coldctl`'s cluster mode (the default): the real binary, with `KUBECONFIG`
//! pointing at the in-repo fake API server on loopback. An agent is played by the test, which
//! creates Nodes and ColdNodes and writes ColdNode statuses (from a thread, with delays, while
//! `coldctl warm --wait` follows them). No root, no daemon; every wait is bounded. The `--node`
//! verbs, against a real standalone agent, are in [`node`].

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "coldctl/cache.rs"]
mod cache;
#[path = "coldctl/check.rs"]
mod check;
mod common;
#[path = "coldctl/kinds.rs"]
mod kinds;
#[path = "coldctl/node.rs"]
mod node;
#[path = "coldctl/owners.rs"]
mod owners;
mod support;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use coldstart_fakeapi::{FakeApi, Outage};
use serde_json::{Value, json};

/// Bound on any one `coldctl` run (the waits below ask for far less).
const LIMIT: Duration = Duration::from_secs(90);
const MODEL: &str = "Org/Model-X";
const NAME: &str = "org--model-x";

struct Cluster {
    api: FakeApi,
    _dir: tempfile::TempDir,
    kubeconfig: PathBuf,
}

fn cluster() -> Cluster {
    let api = common::fake_api();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    api.kubeconfig(&kubeconfig).unwrap();
    Cluster {
        api,
        _dir: dir,
        kubeconfig,
    }
}

impl Cluster {
    /// Runs `coldctl ARGS` against this cluster as the login `alice`, bounded.
    fn ctl(&self, args: &[&str]) -> common::Run {
        self.ctl_as("alice", args)
    }

    /// Runs `coldctl ARGS` against this cluster as the login `user`, bounded.
    fn ctl_as(&self, user: &str, args: &[&str]) -> common::Run {
        let mut cmd = Command::new(common::coldctl_bin());
        cmd.args(args)
            .env("USER", user)
            .env_remove("LOGNAME")
            .env("KUBECONFIG", &self.kubeconfig)
            .env("COLDSTART_LOG", "warn")
            .env_remove("COLDSTART_PULL_SECRET");
        let out = support::run_bounded(&mut cmd, LIMIT).expect("coldctl ran");
        common::Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// A Node with `labels` and, when `agent`, its (empty) ColdNode.
    fn node(&self, name: &str, labels: Value, agent: bool) {
        self.api
            .create(json!({"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": name, "labels": labels}}))
            .unwrap();
        if agent {
            self.api
                .create(
                    json!({"apiVersion": "coldstart.dev/v1alpha1", "kind": "ColdNode",
                    "metadata": {"name": name}, "spec": {}}),
                )
                .unwrap();
        }
    }

    /// Writes a ColdNode's status, as its agent would.
    fn report(&self, node: &str, status: Value) {
        self.api
            .modify("coldnodes", "", node, |o| o["status"] = status)
            .unwrap();
    }

    fn coldmodel(&self, name: &str) -> Option<Value> {
        self.api.get("coldmodels", "", name)
    }
}

fn now() -> String {
    k8s_openapi::jiff::Timestamp::now().to_string()
}

/// A ColdNode status reporting one model in `phase`.
fn reporting(model: &str, phase: &str, weights: Value) -> Value {
    json!({"phase": phase, "updatedAt": now(),
        "models": [{"name": model, "phase": phase, "weights": weights}]})
}

fn syncing(done: u64, total: u64) -> Value {
    json!({"phase": "Syncing", "bytesDone": done, "bytesTotal": total, "bytesPerSecond": 1 << 20})
}

fn ready(total: u64) -> Value {
    json!({"phase": "Ready", "bytesDone": total, "bytesTotal": total})
}

#[test]
fn warm_creates_the_coldmodel_then_updates_it() {
    let c = cluster();
    let run = c.ctl(&[
        "warm",
        MODEL,
        "--image",
        "vllm/vllm-openai:v0.11.0",
        "--revision",
        "v1",
        "--include",
        "*.json",
        "--include",
        "*.safetensors",
        "--selector",
        "pool=gpu,zone in (a,b),!cordoned",
        "--token-secret",
        "hf:HF_TOKEN",
        "--pull-secret",
        "regcred",
        "-o",
        "json",
    ]);
    assert_eq!(run.code, 0, "{run:?}");
    let doc = run.json();
    assert_eq!(
        (doc["name"].as_str(), doc["created"].as_bool()),
        (Some(NAME), Some(true))
    );

    let obj = c
        .coldmodel(NAME)
        .expect("ColdModel created under the derived name");
    let spec = &obj["spec"];
    assert_eq!(spec["repo"], "Org/Model-X");
    assert_eq!(spec["revision"], "v1");
    assert_eq!(spec["image"], "vllm/vllm-openai:v0.11.0");
    assert_eq!(spec["include"], json!(["*.json", "*.safetensors"]));
    assert_eq!(
        spec["tokenSecretRef"],
        json!({"name": "hf", "key": "HF_TOKEN"})
    );
    assert_eq!(spec["imagePullSecretRef"], json!({"name": "regcred"}));
    assert_eq!(
        spec["nodeSelector"],
        json!({"matchLabels": {"pool": "gpu"}, "matchExpressions": [
            {"key": "zone", "operator": "In", "values": ["a", "b"]},
            {"key": "cordoned", "operator": "DoesNotExist"}]})
    );
    let applies: Vec<_> = c
        .api
        .requests()
        .into_iter()
        .filter(|r| r.verb == "patch" && r.resource == "coldmodels")
        .collect();
    assert_eq!(applies.len(), 1, "{applies:?}");
    assert_eq!(applies[0].field_manager.as_deref(), Some("coldctl-alice"));
    assert_eq!(
        applies[0].patch_type.as_deref(),
        Some("application/apply-patch+yaml")
    );

    // Again, by name: what is given changes (a merge patch of those fields only), the rest
    // stays; the selector is replaced whole, not merged with the old one.
    c.api.clear_requests();
    let run = c.ctl(&[
        "warm",
        NAME,
        "--revision",
        "v2",
        "--selector",
        "pool=big,zone notin (c)",
    ]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("configured"), "{run:?}");
    let patches: Vec<_> = c
        .api
        .requests()
        .into_iter()
        .filter(|r| r.verb == "patch" && r.resource == "coldmodels")
        .map(|r| r.patch_type.unwrap_or_default())
        .collect();
    assert_eq!(patches, ["application/merge-patch+json"]);
    // The same again changes nothing and says so, as kubectl does.
    let run = c.ctl(&["warm", NAME, "--revision", "v2", "-o", "json"]);
    assert_eq!(
        (run.json()["created"].clone(), run.json()["changed"].clone()),
        (json!(false), json!(false)),
        "{run:?}"
    );
    let run = c.ctl(&["warm", NAME]);
    assert!(run.stdout.contains("unchanged"), "{run:?}");
    let spec = c.coldmodel(NAME).unwrap()["spec"].clone();
    assert_eq!(spec["revision"], "v2");
    assert_eq!(spec["image"], "vllm/vllm-openai:v0.11.0");
    assert_eq!(
        spec["nodeSelector"],
        json!({"matchLabels": {"pool": "big"}, "matchExpressions": [
            {"key": "zone", "operator": "NotIn", "values": ["c"]}]})
    );

    // A name that is no ColdModel cannot be created: it has no repo.
    let run = c.ctl(&["warm", "no-such-model"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.error_line()
            .contains("no ColdModel named no-such-model"),
        "{run:?}"
    );
}

#[test]
fn wait_exits_0_once_every_selected_node_is_ready() {
    let c = cluster();
    c.node("gpu-1", json!({"pool": "gpu"}), true);
    c.node("gpu-2", json!({"pool": "gpu"}), true);
    c.node("cpu-1", json!({"pool": "cpu"}), true); // not selected: never reports
    c.node("gpu-3", json!({"pool": "gpu"}), false); // no agent: not selected
    let gib = 1u64 << 30;
    let api = c.api.clone();
    let agents = std::thread::spawn(move || {
        let write = |node: &str, status: Value| {
            api.modify("coldnodes", "", node, |o| o["status"] = status)
                .unwrap();
        };
        std::thread::sleep(Duration::from_millis(1500));
        write("gpu-1", reporting(NAME, "Warming", syncing(gib, 4 * gib)));
        std::thread::sleep(Duration::from_millis(1500));
        write("gpu-1", reporting(NAME, "Ready", ready(4 * gib)));
        write("gpu-2", reporting(NAME, "Warming", syncing(gib, 4 * gib)));
        std::thread::sleep(Duration::from_millis(1500));
        write("gpu-2", reporting(NAME, "Ready", ready(4 * gib)));
    });
    let run = c.ctl(&[
        "warm",
        MODEL,
        "--selector",
        "pool=gpu",
        "--wait",
        "--timeout",
        "60s",
        "-o",
        "json",
    ]);
    agents.join().unwrap();
    assert_eq!(run.code, 0, "{run:?}");
    let doc = run.json();
    assert_eq!(doc["outcome"], "ready");
    assert_eq!(
        (
            doc["model"]["selected"].as_u64(),
            doc["model"]["ready"].as_u64()
        ),
        (Some(2), Some(2))
    );
    let nodes: Vec<&str> = doc["model"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["node"].as_str().unwrap())
        .collect();
    assert_eq!(nodes, ["gpu-1", "gpu-2"]);
}

#[test]
fn wait_exits_1_naming_the_node_that_failed() {
    let c = cluster();
    c.node("gpu-1", json!({"pool": "gpu"}), true);
    c.node("gpu-2", json!({"pool": "gpu"}), true);
    c.report("gpu-1", reporting(NAME, "Ready", ready(10)));
    let api = c.api.clone();
    let agent = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1500));
        let failed = json!({"phase": "Failed", "bytesDone": 0, "reason": "disk_full",
            "message": "no space left on /var/lib/coldstart"});
        api.modify("coldnodes", "", "gpu-2", |o| {
            o["status"] = reporting(NAME, "Failed", failed)
        })
        .unwrap();
    });
    let run = c.ctl(&["warm", MODEL, "--wait", "--timeout", "60s"]);
    agent.join().unwrap();
    assert_eq!(run.code, 1, "{run:?}");
    let line = run.error_line();
    assert!(
        line.contains("gpu-2") && line.contains("disk_full"),
        "{run:?}"
    );
    assert!(run.stdout.contains("1/2 nodes ready, 1 failed"), "{run:?}");
}

#[test]
fn wait_exits_3_on_timeout_and_hints_when_no_node_is_selected() {
    let c = cluster();
    c.node("gpu-1", json!({"pool": "gpu"}), true);
    c.report("gpu-1", reporting(NAME, "Warming", syncing(1, 10)));
    let run = c.ctl(&["warm", MODEL, "--wait", "--timeout", "2s"]);
    assert_eq!(run.code, 3, "{run:?}");
    assert!(run.error_line().contains("timed out"), "{run:?}");
    assert!(
        run.stderr.contains("gpu-1"),
        "progress lines name the node: {run:?}"
    );

    let run = c.ctl(&[
        "warm",
        MODEL,
        "-l",
        "pool=none",
        "--wait",
        "--timeout",
        "1s",
        "-o",
        "json",
    ]);
    assert_eq!(run.code, 3, "{run:?}");
    assert!(run.stderr.contains("no node with an agent"), "{run:?}");
    let doc = run.json();
    assert_eq!(
        (doc["outcome"].as_str(), doc["model"]["selected"].as_u64()),
        (Some("timeout"), Some(0))
    );
}

/// Two models over three nodes with agents, in several states.
fn seeded() -> Cluster {
    let c = cluster();
    c.node("gpu-1", json!({"pool": "gpu"}), true);
    c.node("gpu-2", json!({"pool": "gpu"}), true);
    c.node("cpu-1", json!({"pool": "cpu"}), true);
    assert_eq!(c.ctl(&["warm", MODEL, "-l", "pool=gpu"]).code, 0);
    assert_eq!(c.ctl(&["warm", "org/small"]).code, 0);
    let gib = 1u64 << 30;
    c.report(
        "gpu-1",
        json!({"phase": "Ready", "updatedAt": now(), "gpu": {"healthy": true},
            "models": [{"name": NAME, "phase": "Ready", "weights": ready(16 * gib)},
                       {"name": "org--small", "phase": "Ready", "weights": ready(gib)}]}),
    );
    c.report(
        "gpu-2",
        json!({"phase": "Warming", "updatedAt": now(),
            "gpu": {"healthy": false, "reason": "xid 79"},
            "models": [{"name": NAME, "phase": "Warming", "weights": syncing(3 * gib, 16 * gib)}]}),
    );
    c.report(
        "cpu-1",
        json!({"phase": "Pending", "updatedAt": "2020-01-01T00:00:00Z"}),
    );
    c
}

#[test]
fn status_rolls_up_per_model_in_every_format() {
    let c = seeded();
    let run = c.ctl(&["status", "-o", "json"]);
    assert_eq!(run.code, 0, "{run:?}");
    let doc = run.json();
    let models = doc["models"].as_array().unwrap();
    let names: Vec<&str> = models.iter().map(|m| m["name"].as_str().unwrap()).collect();
    assert_eq!(names, [NAME, "org--small"]);
    assert_eq!(models[0]["repo"], MODEL);
    assert_eq!(
        (models[0]["selected"].as_u64(), models[0]["ready"].as_u64()),
        (Some(2), Some(1))
    );
    assert_eq!(
        (models[1]["selected"].as_u64(), models[1]["ready"].as_u64()),
        (Some(3), Some(1))
    );
    let gpu2 = &models[0]["nodes"][1];
    assert_eq!(
        (gpu2["node"].as_str(), gpu2["phase"].as_str()),
        (Some("gpu-2"), Some("Warming"))
    );
    assert_eq!(gpu2["weights"]["bytesDone"], json!(3u64 << 30));

    let yaml = c.ctl(&["status", "-o", "yaml"]);
    assert_eq!(yaml.code, 0, "{yaml:?}");
    let from_yaml: Value = serde_yaml::from_str(&yaml.stdout).unwrap();
    assert_eq!(from_yaml, doc);

    let text = c.ctl(&["status"]);
    assert_eq!(text.code, 0, "{text:?}");
    let header = text.stdout.lines().next().unwrap();
    for col in [
        "NODE", "MODEL", "PHASE", "PROGRESS", "RATE", "AGE", "REASON",
    ] {
        assert!(header.contains(col), "{text:?}");
    }
    let row = |node: &str, model: &str| {
        text.stdout
            .lines()
            .find(|l| l.starts_with(node) && l.contains(model))
            .unwrap_or_else(|| panic!("no row for {node} {model}: {text:?}"))
            .to_string()
    };
    assert!(row("gpu-2", NAME).contains("3.0/16.0 GiB 18%"), "{text:?}");
    assert!(row("gpu-1", NAME).contains("Ready"), "{text:?}");
    assert!(
        row("cpu-1", "org--small").contains("not reported"),
        "{text:?}"
    );
    assert!(
        text.stdout
            .contains(&format!("{NAME} ({MODEL}): 1/2 nodes ready")),
        "{text:?}"
    );
    assert!(
        text.stdout
            .contains("org--small (org/small): 1/3 nodes ready"),
        "{text:?}"
    );

    // One model, by repo id; a missing one is an error.
    let one = c.ctl(&["status", MODEL, "-o", "json"]).json();
    assert_eq!(one["models"].as_array().unwrap().len(), 1);
    let missing = c.ctl(&["status", "org/nothing"]);
    assert_eq!(missing.code, 1, "{missing:?}");
    assert!(
        missing
            .error_line()
            .contains("no ColdModel named org--nothing")
    );
}

#[test]
fn nodes_lists_each_agent_and_flags_stale_ones() {
    let c = seeded();
    let run = c.ctl(&["nodes", "-o", "json"]);
    assert_eq!(run.code, 0, "{run:?}");
    let doc = run.json();
    let rows = doc["nodes"].as_array().unwrap();
    let names: Vec<&str> = rows.iter().map(|r| r["node"].as_str().unwrap()).collect();
    assert_eq!(names, ["cpu-1", "gpu-1", "gpu-2"]);
    assert_eq!(
        (rows[0]["stale"].as_bool(), rows[0]["gpu"].as_str()),
        (Some(true), Some("unknown"))
    );
    assert_eq!(
        (
            rows[1]["modelsReady"].as_u64(),
            rows[1]["modelsTotal"].as_u64()
        ),
        (Some(2), Some(2))
    );
    assert_eq!(
        (rows[1]["stale"].as_bool(), rows[1]["gpu"].as_str()),
        (Some(false), Some("healthy"))
    );
    assert_eq!(rows[2]["gpu"], "unhealthy");

    let text = c.ctl(&["nodes"]);
    assert_eq!(text.code, 0, "{text:?}");
    let line = |n: &str| {
        text.stdout
            .lines()
            .find(|l| l.starts_with(n))
            .unwrap()
            .to_string()
    };
    assert!(line("cpu-1").contains("(stale)"), "{text:?}");
    assert!(
        !line("gpu-1").contains("stale") && line("gpu-1").contains("2/2"),
        "{text:?}"
    );
    assert!(line("gpu-2").contains("unhealthy: xid 79"), "{text:?}");
}

#[test]
fn unwarm_deletes_the_coldmodel() {
    let c = cluster();
    assert_eq!(c.ctl(&["warm", MODEL]).code, 0);
    assert!(c.coldmodel(NAME).is_some());
    let run = c.ctl(&["unwarm", MODEL]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(c.coldmodel(NAME).is_none());
    let again = c.ctl(&["unwarm", NAME]);
    assert_eq!(again.code, 1, "{again:?}");
    assert!(
        again.error_line().contains("no ColdModel named"),
        "{again:?}"
    );
    let ignored = c.ctl(&["unwarm", NAME, "--ignore-not-found", "-o", "json"]);
    assert_eq!(ignored.code, 0, "{ignored:?}");
    assert_eq!(ignored.json(), json!({"name": NAME, "deleted": false}));
}

#[test]
fn bad_usage_exits_64_before_touching_the_cluster() {
    let c = cluster();
    for args in [
        &["warm", MODEL, "--selector", "zone in (a"][..],
        &["warm", MODEL, "--selector", "a=b,,c"],
        &["warm", MODEL, "--wait", "--timeout", "ten minutes"],
        &["warm", MODEL, "--token-secret", "Bad_Name"],
        &["warm", "org/bad name"],
        &["warm"],
    ] {
        let run = c.ctl(args);
        assert_eq!(run.code, 64, "{args:?}: {run:?}");
    }
    let run = c.ctl(&["warm", MODEL, "--selector", "zone in (a"]);
    assert!(
        run.error_line().contains("invalid label selector"),
        "{run:?}"
    );
    // `--here` keeps its own rules: something to warm, and no cluster-only flags.
    for args in [
        &["warm", "--here"][..],
        &["warm", MODEL, "--here", "--selector", "a=b"],
        &["status", "--here"],
    ] {
        let run = c.ctl(args);
        assert_eq!(run.code, 64, "{args:?}: {run:?}");
    }
    assert_eq!(c.api.count("patch", "coldmodels"), 0);
}

#[test]
fn an_unreachable_api_server_is_one_error_line_and_exit_1() {
    let c = cluster();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(c.api.outage(Outage::Status503));
    for args in [&["status"][..], &["warm", MODEL]] {
        let run = c.ctl(args);
        assert_eq!(run.code, 1, "{args:?}: {run:?}");
        run.error_line();
        assert_eq!(
            run.stderr.lines().count(),
            1,
            "one line, no log noise: {run:?}"
        );
    }
    // 503 is answered once per command: kube's own retries are off.
    assert!(c.api.count("get", "coldmodels") + c.api.count("list", "coldmodels") <= 2);
    rt.block_on(c.api.outage(Outage::Refuse));
    for args in [
        &["nodes"][..],
        &["unwarm", MODEL],
        &["warm", MODEL, "--wait", "--timeout", "5s"],
    ] {
        let run = c.ctl(args);
        assert_eq!(run.code, 1, "{args:?}: {run:?}");
        run.error_line();
        assert_eq!(
            run.stderr.lines().count(),
            1,
            "one line, no log noise: {run:?}"
        );
    }
}

/// A failure is said once: one `error:` line in text (the whole cause chain on it), the error
/// document alone under `-o json|yaml`; no log line repeats it from the library functions it
/// passed through (the Hub client and syncer here, kube's client below).
#[test]
fn a_failing_verb_says_so_once_and_nothing_else() {
    let c = cluster();
    let hub =
        coldstart_fakehub::FakeHub::start_blocking(coldstart_fakehub::Options::default()).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let (dir, url) = (cache.path().display().to_string(), hub.url());
    // The Hub has no such model: a 404, which is not retried.
    let here = [
        "warm",
        "org/absent",
        "--here",
        "--cache-root",
        &dir,
        "--hub-endpoint",
        &url,
    ];
    let run = c.ctl(&here);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.error_line().contains("not found"), "{run:?}");
    assert_eq!(run.stderr.lines().count(), 1, "{run:?}");
    let run = c.ctl(&[&here[..], &["-o", "json"]].concat());
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(run.json()["kind"], "not_found", "{run:?}");
    assert_eq!(run.stderr, "", "{run:?}");

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(c.api.outage(Outage::Refuse));
    for args in [&["status"][..], &["warm", MODEL], &["nodes"]] {
        let run = c.ctl(args);
        assert_eq!(run.code, 1, "{args:?}: {run:?}");
        run.error_line();
        assert_eq!(run.stderr.lines().count(), 1, "{args:?}: {run:?}");
        for format in ["json", "yaml"] {
            let run = c.ctl(&[args, &["-o", format]].concat());
            assert_eq!(run.code, 1, "{args:?} -o {format}: {run:?}");
            let doc: Value = serde_yaml::from_str(&run.stdout).unwrap();
            assert_eq!(doc["ok"], false, "{args:?} -o {format}: {run:?}");
            assert_eq!(run.stderr, "", "{args:?} -o {format}: {run:?}");
        }
    }
}

#[test]
fn a_reader_that_closes_the_pipe_ends_coldctl_quietly() {
    let c = seeded();
    for args in [&["status"][..], &["status", "-o", "yaml"], &["nodes"]] {
        // The read end is closed before coldctl writes: its write fails with EPIPE.
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let log = tempfile::NamedTempFile::new().unwrap();
        let mut child = Command::new(common::coldctl_bin())
            .args(args)
            .env("KUBECONFIG", &c.kubeconfig)
            .env("COLDSTART_LOG", "warn")
            .stdin(std::process::Stdio::null())
            .stdout(writer)
            .stderr(log.reopen().unwrap())
            .spawn()
            .unwrap();
        let status = support::wait_for("coldctl exit", LIMIT, || child.try_wait().unwrap())
            .unwrap_or_else(|e| {
                let _ = child.kill();
                panic!("{e}")
            });
        let stderr = std::fs::read_to_string(log.path()).unwrap();
        assert_eq!(status.code(), Some(141), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}
