//! System tests of standalone mode, the real `coldstart-agent run --standalone` binary against
//! the in-repo fake Hub on loopback: models put through the socket API ([`NodeClient`]) and
//! by hand in the TOML file are synced into the Hub cache and reported; a broken file keeps
//! the last good models; SIGTERM exits 0 and removes the socket. No root, no containerd (no
//! model names an image, and the containerd client connects lazily). Every wait is bounded.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use coldstart_agent::api::{ColdNodeStatus, PartPhase, Phase};
use coldstart_agent::standalone::{ClientError, ModelEntry, NodeClient, NodeStatus};
use coldstart_fakehub::{FakeHub, Options};

const BOUND: Duration = Duration::from_secs(60);

fn agent_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_coldstart-agent"))
}

/// A model small enough to sync in a blink: a config and one LFS weights file.
fn seed(hub: &FakeHub, repo: &str, seed: u8) -> String {
    let weights: Vec<u8> = (0..200_000u32)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect();
    let commit = hub.add_repo_files(
        repo,
        "main",
        vec![
            ("config.json".into(), br#"{"model_type":"llama"}"#.to_vec()),
            ("model.safetensors".into(), weights),
        ],
    );
    commit.id.clone()
}

#[path = "../../tests/common/agent.rs"]
mod agent_process;

use agent_process::AgentProcess;

/// The standalone agent with its files under `dir`.
struct Agent(AgentProcess);

impl Agent {
    fn start(dir: &Path, hub: &FakeHub) -> Agent {
        let mut cmd = agent_process::scrubbed(&agent_bin());
        cmd.args(agent_process::standalone_args(dir, &hub.url()));
        Agent(AgentProcess::spawn(cmd))
    }

    fn log(&self) -> String {
        self.0.log()
    }

    /// SIGTERM, then the exit code (bounded).
    fn terminate(&mut self) -> i32 {
        self.0.terminate(BOUND)
    }
}

/// Polls `GET /v1/status` until `done` holds (bounded), returning the last answer.
async fn wait_status(
    client: &NodeClient,
    agent: &Agent,
    what: &str,
    done: impl Fn(&NodeStatus) -> bool,
) -> NodeStatus {
    let deadline = Instant::now() + BOUND;
    loop {
        let last = match client.status().await {
            Ok(s) if done(&s) => return s,
            Ok(s) => format!("{s:#?}"),
            Err(e @ ClientError::NoAgent { .. }) => e.to_string(),
            Err(e) => panic!("status: {e}\n{}", agent.log()),
        };
        assert!(
            Instant::now() < deadline,
            "{what} not reached within {BOUND:?}; last status: {last}\nagent log:\n{}",
            agent.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn ready(status: &ColdNodeStatus, name: &str) -> bool {
    status.models.iter().any(|m| {
        m.name == name
            && m.phase == Phase::Ready
            && m.weights.as_ref().is_some_and(|w| {
                w.phase == PartPhase::Ready && w.bytes_done > 0 && w.resolved.is_some()
            })
    })
}

fn listed(status: &ColdNodeStatus, name: &str) -> bool {
    status.models.iter().any(|m| m.name == name)
}

/// Replaces the file by rename, as an editor does.
fn hand_edit(path: &Path, text: &str) {
    let tmp = path.with_file_name("models.toml.edit");
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_agent_warms_what_the_file_says() {
    let hub = FakeHub::start_blocking(Options::default()).expect("fake hub");
    let alpha_commit = seed(&hub, "org/alpha", 1);
    seed(&hub, "org/beta", 2);
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("etc")).expect("etc");
    let models = dir.path().join("etc/models.toml");
    let socket = dir.path().join("run/agent.sock");
    let mut agent = Agent::start(dir.path(), &hub);
    let client = NodeClient::new(&socket).with_timeout(Duration::from_secs(20));

    // No file yet: no models, and the agent says so.
    let st = wait_status(&client, &agent, "first pass", |s| {
        s.status.updated_at.is_some()
    })
    .await;
    assert_eq!(st.node, "edge-1");
    assert!(
        st.models.is_empty() && st.status.models.is_empty(),
        "{st:?}"
    );

    // A model put through the socket lands in the file and gets synced.
    let put = client
        .put_model(&ModelEntry::new("org/alpha"))
        .await
        .expect("put");
    assert!(put.created);
    assert_eq!(put.model.name, "org--alpha");
    let text = std::fs::read_to_string(&models).expect("models file");
    assert!(text.contains("repo = \"org/alpha\""), "{text}");
    let st = wait_status(&client, &agent, "org--alpha ready", |s| {
        ready(&s.status, "org--alpha")
    })
    .await;
    let w = st.status.models[0].weights.clone().expect("weights part");
    assert_eq!(w.resolved.as_deref(), Some(alpha_commit.as_str()));
    let snapshot = dir
        .path()
        .join("cache/hub/models--org--alpha/snapshots")
        .join(&alpha_commit);
    assert!(snapshot.join("config.json").is_file(), "no snapshot");
    assert!(snapshot.join("model.safetensors").is_file(), "no weights");

    // The status file says the same.
    let status_file = dir.path().join("cache/state/status.json");
    let on_disk: ColdNodeStatus =
        serde_json::from_slice(&std::fs::read(&status_file).expect("status.json")).expect("json");
    assert!(ready(&on_disk, "org--alpha") || listed(&on_disk, "org--alpha"));

    // A hand edit adding a model is picked up.
    let mut text = std::fs::read_to_string(&models).expect("read");
    text.push_str("\n[[model]]\nrepo = \"org/beta\"\ninclude = [\"*.json\", \"*.safetensors\"]\n");
    hand_edit(&models, &text);
    wait_status(&client, &agent, "org--beta ready", |s| {
        ready(&s.status, "org--beta") && ready(&s.status, "org--alpha")
    })
    .await;

    // A broken hand edit keeps the last good models and says why.
    hand_edit(&models, "[[model]]\nrepo = \"org/alpha\"\nrevision =\n");
    let st = wait_status(&client, &agent, "models error reported", |s| {
        s.models_error.is_some()
    })
    .await;
    assert!(
        st.models_error
            .as_deref()
            .unwrap_or_default()
            .contains("models.toml"),
        "{st:?}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let st = client.status().await.expect("status");
    assert!(
        ready(&st.status, "org--alpha") && ready(&st.status, "org--beta"),
        "the last good models must stay: {st:#?}"
    );
    // While the file is broken, edits through the socket are refused and change nothing.
    let err = client
        .put_model(&ModelEntry::new("org/gamma"))
        .await
        .expect_err("broken file");
    assert!(
        matches!(&err, ClientError::Api { status: 409, kind, .. } if kind == "invalid_file"),
        "{err:?}"
    );
    hand_edit(&models, &text);

    // DELETE removes it from the file; the agent stops reporting it.
    let removed = client.remove_model("org/alpha").await.expect("delete");
    assert_eq!(removed.name, "org--alpha");
    let text = std::fs::read_to_string(&models).expect("read");
    assert!(
        !text.contains("org/alpha") && text.contains("org/beta"),
        "{text}"
    );
    wait_status(&client, &agent, "org--alpha gone", |s| {
        !listed(&s.status, "org--alpha") && ready(&s.status, "org--beta")
    })
    .await;
    let err = client.remove_model("org/alpha").await.expect_err("absent");
    assert!(
        matches!(&err, ClientError::Api { status: 404, .. }),
        "{err:?}"
    );

    // Bad input is a 400 with a kind, and the file is untouched.
    let err = client
        .put_model(&ModelEntry::new("../etc/passwd"))
        .await
        .expect_err("bad repo");
    assert!(
        matches!(&err, ClientError::Api { status: 400, kind, .. } if kind == "invalid_model"),
        "{err:?}"
    );
    assert_eq!(std::fs::read_to_string(&models).expect("read"), text);

    let code = agent.terminate();
    assert_eq!(code, 0, "agent log:\n{}", agent.log());
    assert!(!socket.exists(), "the socket file is removed on shutdown");
    let err = client.status().await.expect_err("stopped");
    assert!(matches!(err, ClientError::NoAgent { .. }), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_agent_on_the_same_socket_is_refused() {
    let hub = FakeHub::start_blocking(Options::default()).expect("fake hub");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut first = Agent::start(dir.path(), &hub);
    let client = NodeClient::new(dir.path().join("run/agent.sock"));
    wait_status(&client, &first, "first agent serving", |_| true).await;
    let mut second = Agent::start(dir.path(), &hub);
    let deadline = Instant::now() + BOUND;
    let code = loop {
        if let Some(code) = second.0.exit_code() {
            break code;
        }
        assert!(Instant::now() < deadline, "second agent kept running");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(code, 1, "{}", second.log());
    assert!(
        second.log().contains("another agent is listening"),
        "{}",
        second.log()
    );
    // The first one still serves.
    client.status().await.expect("first agent still answers");
    assert_eq!(first.terminate(), 0, "{}", first.log());
}

/// The unit file runs the binary this package builds, in standalone mode, with the runtime
/// and state directories the agent's defaults use, and gives it longer to stop than the agent
/// gives itself.
#[test]
fn the_systemd_unit_matches_the_agent() {
    let unit = Path::new(env!("CARGO_MANIFEST_DIR")).join("../systemd/coldstart-agent.service");
    let text = std::fs::read_to_string(&unit).expect("unit file");
    let values = |key: &str| -> Vec<String> {
        text.lines()
            .filter_map(|l| l.trim().strip_prefix(&format!("{key}=")))
            .map(str::to_string)
            .collect()
    };
    let one = |key: &str| -> String {
        let v = values(key);
        assert_eq!(v.len(), 1, "{key}: {v:?}");
        v[0].clone()
    };
    let exec = one("ExecStart");
    let mut words = exec.split_whitespace();
    let bin = words.next().expect("binary");
    assert!(bin.starts_with('/'), "{exec}");
    assert_eq!(
        Path::new(bin).file_name(),
        agent_bin().file_name(),
        "{exec}"
    );
    assert_eq!(words.collect::<Vec<_>>(), ["run", "--standalone"], "{exec}");
    let socket = Path::new(coldstart_agent::config::DEFAULT_SOCKET);
    assert_eq!(
        Path::new("/run").join(one("RuntimeDirectory")),
        socket.parent().expect("socket dir")
    );
    assert_eq!(
        Path::new("/var/lib").join(one("StateDirectory")),
        Path::new(coldstart_agent::config::DEFAULT_CACHE_ROOT)
    );
    let models = Path::new(coldstart_agent::config::DEFAULT_MODELS_FILE);
    let etc = Path::new("/etc").join(one("ConfigurationDirectory"));
    assert_eq!(etc, models.parent().expect("models dir"));
    assert!(values("ReadWritePaths").contains(&etc.display().to_string()));
    let stop: u64 = one("TimeoutStopSec")
        .trim_end_matches('s')
        .parse()
        .expect("seconds");
    assert!(stop > 25 + 5 + 5, "TimeoutStopSec={stop}");
    for key in [
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "Restart=on-failure",
        "KillSignal=SIGTERM",
        "EnvironmentFile=-/etc/default/coldstart-agent",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK",
    ] {
        assert!(text.lines().any(|l| l.trim() == key), "{key} missing");
    }
}
