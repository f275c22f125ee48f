//! `coldctl --node`: the real binary against the real `coldstart-agent run --standalone`
//! (tempdir cache, models file and socket) syncing from the in-repo fake Hub on loopback. No
//! root, no containerd (no model names an image); every wait is bounded and the agent gets
//! SIGTERM at the end.

use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use coldstart_fakehub::{FakeHub, Options};

use crate::common;
use crate::common::agent::AgentProcess;

const BOUND: Duration = Duration::from_secs(60);
const REPO: &str = "org/model";
const NAME: &str = "org--model";

/// A running standalone agent, its files in a tempdir.
struct Agent {
    process: AgentProcess,
    dir: tempfile::TempDir,
}

impl Agent {
    fn start(hub: &FakeHub) -> Agent {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        let mut cmd = common::agent_command();
        cmd.args(common::agent::standalone_args(dir.path(), &hub.url()));
        let agent = Agent {
            process: AgentProcess::spawn(cmd),
            dir,
        };
        let deadline = Instant::now() + BOUND;
        while UnixStream::connect(agent.socket()).is_err() {
            assert!(
                Instant::now() < deadline,
                "no socket within {BOUND:?}:\n{}",
                agent.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        agent
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("run/agent.sock")
    }

    fn models_file(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("etc/models.toml")).unwrap_or_default()
    }

    fn log(&self) -> String {
        self.process.log()
    }

    /// `coldctl --node=SOCK ARGS`, bounded.
    fn ctl(&self, args: &[&str]) -> common::Run {
        let node = format!("--node={}", self.socket().display());
        node_ctl(&node, args)
    }

    /// SIGTERM, then the exit code (bounded).
    fn terminate(&mut self) -> i32 {
        self.process.terminate(BOUND)
    }
}

fn node_ctl(node: &str, args: &[&str]) -> common::Run {
    let mut cmd = Command::new(common::coldctl_bin());
    cmd.arg(node)
        .args(args)
        .env("COLDSTART_LOG", "warn")
        .env_remove("COLDSTART_PULL_SECRET")
        .env_remove("KUBECONFIG");
    let out = crate::support::run_bounded(&mut cmd, BOUND + BOUND).expect("coldctl ran");
    common::Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn seeded_hub() -> FakeHub {
    let hub = FakeHub::start_blocking(Options::default()).expect("fake hub");
    let weights: Vec<u8> = (0..200_000u32)
        .map(|i| (i as u8).wrapping_mul(31))
        .collect();
    hub.add_repo_files(
        REPO,
        "main",
        vec![
            ("config.json".into(), br#"{"model_type":"llama"}"#.to_vec()),
            ("model.safetensors".into(), weights),
        ],
    );
    hub
}

#[test]
fn node_verbs_edit_the_agents_models_file_and_report_its_status() {
    let hub = seeded_hub();
    let mut agent = Agent::start(&hub);

    // warm --wait: the entry lands in the file and the model becomes Ready.
    let run = agent.ctl(&["warm", REPO, "--wait", "--timeout", "60s", "-o", "json"]);
    assert_eq!(run.code, 0, "{run:?}\nagent log:\n{}", agent.log());
    let doc = run.json();
    assert_eq!(doc["name"], NAME, "{doc}");
    assert_eq!(doc["created"], true, "{doc}");
    assert_eq!(doc["outcome"], "ready", "{doc}");
    assert_eq!(doc["spec"]["repo"], REPO, "{doc}");
    assert_eq!(doc["model"]["ready"], 1, "{doc}");
    assert_eq!(doc["model"]["nodes"][0]["node"], "edge-1", "{doc}");
    assert_eq!(doc["model"]["nodes"][0]["phase"], "Ready", "{doc}");
    let file = agent.models_file();
    assert!(file.contains(&format!("repo = \"{REPO}\"")), "{file}");

    // A second warm changes nothing and says so.
    let run = agent.ctl(&["warm", NAME, "-o", "json"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.json()["created"], false, "{run:?}");

    // A changed entry is judged on passes that saw it: a missing revision fails (exit 1)
    // rather than passing for the old revision's Ready; back to main, Ready again.
    let run = agent.ctl(&[
        "warm",
        NAME,
        "--revision",
        "nope",
        "--wait",
        "--timeout",
        "60s",
    ]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.error_line().contains("nope"), "{run:?}");
    assert!(agent.models_file().contains("revision = \"nope\""));
    let run = agent.ctl(&[
        "warm",
        NAME,
        "--revision",
        "main",
        "--wait",
        "--timeout",
        "60s",
    ]);
    assert_eq!(run.code, 0, "{run:?}");

    // status: the table names the node and the model, Ready; YAML parses to the same shape.
    let run = agent.ctl(&["status"]);
    assert_eq!(run.code, 0, "{run:?}");
    let row = run
        .stdout
        .lines()
        .find(|l| l.starts_with("edge-1"))
        .unwrap_or_else(|| panic!("no row for edge-1: {run:?}"));
    assert!(row.contains(NAME) && row.contains("Ready"), "{row}");
    assert!(
        run.stdout
            .contains(&format!("{NAME} ({REPO}): 1/1 nodes ready")),
        "{run:?}"
    );
    let run = agent.ctl(&["status", REPO, "-o", "yaml"]);
    assert_eq!(run.code, 0, "{run:?}");
    let doc: serde_json::Value = serde_yaml::from_str(&run.stdout).unwrap();
    assert_eq!(doc["models"][0]["name"], NAME, "{doc}");
    assert_eq!(doc["models"][0]["ready"], 1, "{doc}");
    let run = agent.ctl(&["status", "org/absent"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.error_line().contains("org/absent"), "{run:?}");

    // nodes: one row.
    let run = agent.ctl(&["nodes"]);
    assert_eq!(run.code, 0, "{run:?}");
    let rows: Vec<&str> = run.stdout.lines().skip(1).collect();
    assert_eq!(rows.len(), 1, "{run:?}");
    assert!(
        rows[0].starts_with("edge-1") && rows[0].contains("1/1"),
        "{run:?}"
    );
    let run = agent.ctl(&["nodes", "-o", "json"]);
    assert_eq!(run.json()["nodes"][0]["modelsReady"], 1, "{run:?}");

    // unwarm removes the entry from the file; a second one finds nothing.
    let run = agent.ctl(&["unwarm", REPO, "-o", "json"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(
        run.json(),
        serde_json::json!({"name": NAME, "deleted": true})
    );
    let file = agent.models_file();
    assert!(!file.contains(REPO), "{file}");
    let run = agent.ctl(&["unwarm", REPO]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.error_line().contains("--ignore-not-found"), "{run:?}");
    let run = agent.ctl(&["unwarm", REPO, "--ignore-not-found"]);
    assert_eq!(run.code, 0, "{run:?}");
    let run = agent.ctl(&["unwarm", REPO, "-o", "json"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(run.json()["ok"], false, "{run:?}");

    assert_eq!(agent.terminate(), 0, "{}", agent.log());
}

#[test]
fn a_missing_agent_is_one_error_line_and_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let node = format!("--node={}", dir.path().join("nowhere.sock").display());
    for args in [
        &["status"][..],
        &["nodes"],
        &["warm", REPO],
        &["warm", REPO, "--wait", "--timeout", "5s"],
        &["unwarm", REPO],
    ] {
        let run = node_ctl(&node, args);
        assert_eq!(run.code, 1, "{args:?}: {run:?}");
        assert!(
            run.error_line().contains("no agent listening at"),
            "{run:?}"
        );
        assert_eq!(run.stderr.lines().count(), 1, "{args:?}: {run:?}");
    }
    let run = node_ctl(&node, &["status", "-o", "json"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(run.json()["kind"], "no_agent", "{run:?}");
}

#[test]
fn cluster_flags_and_verify_are_usage_errors_on_a_node() {
    let dir = tempfile::tempdir().unwrap();
    let node = format!("--node={}", dir.path().join("nowhere.sock").display());
    for args in [
        &["warm", REPO, "--selector", "x=y"][..],
        &["warm", REPO, "--token-secret", "hf"],
        &["warm", "org/bad name"],
        &["warm"],
        &["verify", REPO],
    ] {
        let run = node_ctl(&node, args);
        assert_eq!(run.code, 64, "{args:?}: {run:?}");
        run.error_line();
    }
    let run = node_ctl(&node, &["verify", REPO]);
    assert!(run.error_line().contains("verify --here"), "{run:?}");
}

#[test]
fn node_mode_speaks_of_the_node_and_shows_what_is_in_force() {
    let hub = seeded_hub();
    let mut agent = Agent::start(&hub);
    let sock = agent.socket().display().to_string();

    // `--node PATH` with a space, before or after the verb: this agent, never another socket.
    for args in [
        &["--node", sock.as_str(), "status"][..],
        &["status", "--node", sock.as_str()],
    ] {
        let run = node_ctl(args[0], &args[1..]);
        assert_eq!(run.code, 0, "{args:?}: {run:?}");
        assert!(run.stdout.contains("--node warm"), "node words: {run:?}");
        assert!(!run.stdout.contains("ColdModel"), "{run:?}");
    }

    let run = agent.ctl(&["warm", REPO, "--wait", "--timeout", "60s"]);
    assert_eq!(run.code, 0, "{run:?}\n{}", agent.log());
    assert!(
        agent.models_file().ends_with('\n'),
        "{:?}",
        agent.models_file()
    );
    let run = agent.ctl(&["warm", REPO]);
    assert!(run.stdout.contains("unchanged"), "{run:?}");

    // A broken file: the status still shows the model the agent keeps warm, and why.
    std::fs::write(
        agent.dir.path().join("etc/models.toml"),
        "[[model]\nrepo = ",
    )
    .unwrap();
    let run = agent.ctl(&["status", "-o", "json"]);
    assert_eq!(run.code, 0, "{run:?}");
    let doc = run.json();
    assert_eq!(doc["models"][0]["name"], NAME, "{doc}");
    assert!(
        doc["modelsError"].as_str().unwrap().contains("models.toml"),
        "{doc}"
    );
    let run = agent.ctl(&["status"]);
    assert!(
        run.stdout.contains(NAME) && run.stdout.contains("last good models"),
        "{run:?}"
    );

    // --watch: a document per line, until --watch-for.
    let run = agent.ctl(&["status", "--watch", "--watch-for", "2s", "-o", "json"]);
    assert_eq!(run.code, 0, "{run:?}");
    for line in run.stdout.lines() {
        let doc: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(doc["models"][0]["name"], NAME, "{doc}");
    }

    // version: the client's and the agent's.
    let run = agent.ctl(&["version", "-o", "json"]);
    assert_eq!(run.code, 0, "{run:?}");
    let doc = run.json();
    assert_eq!(doc["client"], doc["agent"]["version"], "{doc}");
    assert_eq!(doc["agent"]["node"], "edge-1", "{doc}");

    assert_eq!(agent.terminate(), 0, "{}", agent.log());
}

#[test]
fn cache_env_and_list_read_the_standalone_agent() {
    let hub = seeded_hub();
    let mut agent = Agent::start(&hub);
    std::fs::write(
        agent.dir.path().join("etc/models.toml"),
        "[[model]]\nrepo = \"org/alpha\"\nhealth-url = \"http://127.0.0.1:9/health\"\n\
         [model.compile-cache]\nuid = 1000\ngid = 1000\n\n\
         [[model]]\nrepo = \"org/beta\"\n[model.compile-cache]\nenabled = false\n",
    )
    .unwrap();
    // The agent picks the file up on its next pass.
    let deadline = Instant::now() + BOUND;
    let env = loop {
        let run = agent.ctl(&["cache", "env", "org/alpha", "-o", "json"]);
        if run.code == 0 {
            break run.json();
        }
        assert!(Instant::now() < deadline, "{run:?}\n{}", agent.log());
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(env["volumeMount"]["mountPath"], "/coldstart/compile-cache");
    assert!(
        env["volume"]["hostPath"]["path"]
            .as_str()
            .unwrap()
            .ends_with("/compile/models/org--alpha"),
        "{env}"
    );
    let run = agent.ctl(&["cache", "env", "org/beta", "-o", "json"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(run.json()["kind"], "cache_disabled", "{run:?}");
    let run = agent.ctl(&["cache", "env", "org/gamma", "-o", "json"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(run.json()["kind"], "not_found", "{run:?}");
    // No image, so no scope: the agent reports none.
    let run = agent.ctl(&["cache", "list", "-o", "json"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.json()["caches"], serde_json::json!([]), "{run:?}");
    assert_eq!(agent.terminate(), 0);
}
