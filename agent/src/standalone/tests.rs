use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::agent::Reconcile;
use crate::api::Phase;

const GOOD: &str = r#"
[[model]]
repo = "org/alpha"
revision = "main"
include = ["*.json"]

[[model]]
repo = "Org/Beta_2"
image = "registry.example.test/vllm:v1"
token-file = "/etc/coldstart/token"
"#;

fn write(path: &Path, text: &str) {
    // Replace by rename, as editors and our own edits do.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

fn names(d: &Desired) -> Vec<&str> {
    d.entries.iter().map(|e| e.name.as_str()).collect()
}

#[test]
fn a_good_file_becomes_cold_models_selected_everywhere() {
    let d = parse(Path::new("/m.toml"), GOOD).expect("valid");
    assert_eq!(names(&d), ["org--alpha", "org--beta-2"]);
    let m = &d.models[1];
    assert_eq!(m.metadata.name.as_deref(), Some("org--beta-2"));
    assert_eq!(m.spec.repo, "Org/Beta_2");
    assert_eq!(
        m.spec.image.as_deref(),
        Some("registry.example.test/vllm:v1")
    );
    assert!(m.spec.node_selector.is_none() && m.spec.token_secret_ref.is_none());
    assert_eq!(d.models[0].spec.include, ["*.json"]);
    assert_eq!(
        parse(Path::new("/m.toml"), "").expect("empty"),
        Desired::default()
    );
}

#[test]
fn bad_files_are_refused_on_one_line_naming_the_file() {
    let cases = [
        ("[[model]]\nrepo = \"a/b/c\"\n", "a/b/c"),
        (
            "[[model]]\nrepo = \"org/x\"\nimage = \"UPPER/Case:tag\"\n",
            "model org/x",
        ),
        (
            "[[model]]\nrepo = \"org/x\"\n[[model]]\nrepo = \"ORG/X\"\n",
            "listed twice",
        ),
        (
            "[[model]]\nrepo = \"org/x\"\ncolor = \"red\"\n",
            "unknown field",
        ),
        ("[[model]\n", "line 1"),
        (
            "[[model]]\nrepo = \"org/x\"\ntoken-file = \"relative\"\n",
            "not absolute",
        ),
        (
            "[[model]]\nrepo = \"org/x\"\nrevision = \"a b\"\n",
            "invalid revision",
        ),
    ];
    for (text, want) in cases {
        let err = parse(Path::new("/etc/coldstart/models.toml"), text).expect_err(text);
        let msg = err.to_string();
        assert!(
            msg.starts_with("models file /etc/coldstart/models.toml: "),
            "{msg}"
        );
        assert!(msg.contains(want), "{text:?}: {msg}");
        assert!(!msg.contains('\n'), "{msg}");
        assert_eq!(err.kind(), "invalid_file");
    }
}

#[test]
fn put_adds_or_replaces_in_place_and_keeps_the_other_entries() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("models.toml");
    write(&path, GOOD);
    let file = ModelsFile::new(&path);
    let mut gamma = ModelEntry::new("org/gamma");
    gamma.exclude = vec!["*.bin".into()];
    let put = file.put_model(gamma.clone()).expect("put");
    assert!(put.created);
    assert_eq!(put.model.name, "org--gamma");
    let mut alpha = ModelEntry::new("org/alpha");
    alpha.revision = Some("v2".into());
    assert!(!file.put_model(alpha.clone()).expect("replace").created);
    let d = file.load().expect("valid").expect("present");
    assert_eq!(names(&d), ["org--alpha", "org--beta-2", "org--gamma"]);
    assert_eq!(d.entries[0].model, alpha);
    assert_eq!(
        d.entries[1].model.token_file.as_deref(),
        Some(Path::new("/etc/coldstart/token"))
    );
    assert_eq!(d.entries[2].model, gamma);
    // Nothing but the file and its lock file is left in the directory.
    let mut left: Vec<String> = std::fs::read_dir(dir.path())
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["models.toml", "models.toml.lock"]);
}

#[test]
fn put_refuses_a_bad_entry_and_remove_by_name_or_repo() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("models.toml");
    let file = ModelsFile::new(&path);
    let err = file
        .put_model(ModelEntry::new("not a repo"))
        .expect_err("bad");
    assert_eq!(err.kind(), "invalid_model");
    assert!(!path.exists(), "a refused put writes nothing");
    file.put_model(ModelEntry::new("org/alpha")).expect("put");
    file.put_model(ModelEntry::new("org/beta")).expect("put");
    assert_eq!(
        file.remove_model("org/alpha").expect("by repo").name,
        "org--alpha"
    );
    assert_eq!(
        file.remove_model("org--beta").expect("by name").model.repo,
        "org/beta"
    );
    let err = file.remove_model("org/beta").expect_err("gone");
    assert_eq!(err.kind(), "not_found");
    assert_eq!(
        file.load().expect("valid").expect("present"),
        Desired::default()
    );
}

#[test]
fn an_edit_never_overwrites_a_file_that_does_not_parse() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("models.toml");
    let broken = "[[model]]\nrepo = \"org/x\"\n# half-typed\nrevision =\n";
    write(&path, broken);
    let file = ModelsFile::new(&path);
    let err = file
        .put_model(ModelEntry::new("org/y"))
        .expect_err("refused");
    assert_eq!(err.kind(), "invalid_file");
    assert_eq!(std::fs::read_to_string(&path).expect("read"), broken);
}

#[test]
fn concurrent_edits_are_serialised_and_none_is_lost() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("models.toml");
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let file = ModelsFile::new(&path);
            std::thread::spawn(move || {
                for j in 0..5 {
                    file.put_model(ModelEntry::new(format!("org/m{i}-{j}")))
                        .expect("put");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("thread");
    }
    let d = ModelsFile::new(&path)
        .load()
        .expect("valid")
        .expect("present");
    assert_eq!(d.entries.len(), 40);
}

#[test]
fn a_broken_reload_keeps_the_last_good_models() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("models.toml");
    let mut source = DesiredSource::new(ModelsFile::new(&path), Arc::new(Notify::new()));
    source.refresh().expect("absent is fine");
    assert!(source.desired().entries.is_empty());
    write(&path, GOOD);
    source.refresh().expect("good");
    assert_eq!(names(source.desired()), ["org--alpha", "org--beta-2"]);
    write(&path, "[[model]]\nrepo = \"org/alpha\"\nrepo = \"twice\"\n");
    let err = source.refresh().expect_err("broken");
    assert!(err.to_string().contains("models.toml"), "{err}");
    assert_eq!(names(source.desired()), ["org--alpha", "org--beta-2"]);
    assert!(source.error().is_some());
    // Still broken, still reported, still the last good models.
    source.refresh().expect_err("still broken");
    assert_eq!(source.desired().entries.len(), 2);
    write(&path, "[[model]]\nrepo = \"org/gamma\"\n");
    source.refresh().expect("fixed");
    assert_eq!(names(source.desired()), ["org--gamma"]);
    assert!(source.error().is_none());
    std::fs::remove_file(&path).expect("remove");
    source.refresh().expect("absent again");
    assert!(source.desired().entries.is_empty());
}

#[tokio::test]
async fn a_change_wakes_the_loop() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("models.toml");
    let wake = Arc::new(Notify::new());
    let mut source = DesiredSource::new(ModelsFile::new(&path), wake.clone());
    source.refresh().expect("absent");
    let woken = wake.notified();
    ModelsFile::new(&path)
        .put_model(ModelEntry::new("org/alpha"))
        .expect("put");
    tokio::time::timeout(Duration::from_secs(20), woken)
        .await
        .expect("an inotify event wakes the loop");
    source.refresh().expect("good");
    assert_eq!(names(source.desired()), ["org--alpha"]);
}

#[tokio::test]
async fn the_status_file_is_written_when_it_changes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut f = StatusFile::new(dir.path().join("state"), Duration::from_secs(3600));
    let mut s = ColdNodeStatus::default();
    assert!(f.write(&s).await.expect("first"));
    s.updated_at = Some(Time(Timestamp::now()));
    assert!(!f.write(&s).await.expect("only the time changed"));
    s.phase = Phase::Ready;
    assert!(f.write(&s).await.expect("changed"));
    let read: ColdNodeStatus =
        serde_json::from_slice(&std::fs::read(f.path()).expect("read")).expect("json");
    // Kubernetes times serialise to whole seconds.
    assert_eq!(read.phase, Phase::Ready);
    assert!(read.updated_at.is_some());
}

mod status;

struct Api {
    socket: PathBuf,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    file: ModelsFile,
    shared: Shared,
}

async fn api(dir: &Path) -> Api {
    let socket = dir.join("run/agent.sock");
    let file = ModelsFile::new(dir.join("models.toml"));
    let listener = socket::bind(&socket).await.expect("bind");
    let stop = CancellationToken::new();
    let state = ApiState {
        node: "n1".into(),
        file: file.clone(),
        shared: Shared::default(),
        wake: Arc::new(Notify::new()),
    };
    let shared = state.shared.clone();
    let task = tokio::spawn(socket::serve(listener, socket.clone(), state, stop.clone()));
    Api {
        socket,
        stop,
        task,
        file,
        shared,
    }
}

#[tokio::test]
async fn the_socket_api_edits_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = api(dir.path()).await;
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&a.socket).expect("socket").permissions(),
    );
    assert_eq!(mode & 0o777, 0o660);
    let c = NodeClient::new(&a.socket).with_timeout(Duration::from_secs(20));
    let put = c
        .put_model(&ModelEntry::new("org/alpha"))
        .await
        .expect("put");
    assert!(put.created);
    let put = put.model;
    assert_eq!(put.name, "org--alpha");
    let again = c
        .put_model(&ModelEntry::new("org/alpha"))
        .await
        .expect("put again");
    assert!(!again.created && again.model == put);
    let listed = c.models().await.expect("models");
    assert_eq!(listed, std::slice::from_ref(&put));
    assert_eq!(
        a.file.load().expect("valid").expect("present").entries,
        std::slice::from_ref(&put)
    );
    let st = c.status().await.expect("status");
    assert_eq!(st.node, "n1");
    assert_eq!(st.models, std::slice::from_ref(&put));
    let err = c
        .put_model(&ModelEntry::new("bad repo"))
        .await
        .expect_err("bad");
    assert!(
        matches!(&err, ClientError::Api { status: 400, kind, .. } if kind == "invalid_model"),
        "{err:?}"
    );
    // Credential files only from the models file's directory through the socket.
    let mut sneaky = ModelEntry::new("org/beta");
    sneaky.token_file = Some("/etc/shadow".into());
    let err = c.put_model(&sneaky).await.expect_err("outside");
    assert!(
        matches!(&err, ClientError::Api { status: 400, kind, .. } if kind == "invalid_model"),
        "{err:?}"
    );
    sneaky.token_file = Some(dir.path().join("../x/../hf-token"));
    c.put_model(&sneaky).await.expect_err("dot-dot");
    sneaky.token_file = Some(dir.path().join("hf-token"));
    c.put_model(&sneaky).await.expect("beside the models file");
    c.remove_model("org/beta").await.expect("delete beta");
    let removed = c.remove_model("org/alpha").await.expect("delete");
    assert_eq!(removed, put);
    let err = c.remove_model("org/alpha").await.expect_err("absent");
    assert!(
        matches!(&err, ClientError::Api { status: 404, .. }),
        "{err:?}"
    );
    // A second agent on the same socket is refused.
    let again = socket::bind(&a.socket).await.expect_err("in use");
    assert!(again.to_string().contains("another agent"), "{again}");
    a.stop.cancel();
    a.task.await.expect("join").expect("served");
    assert!(!a.socket.exists(), "the socket file is removed on shutdown");
    let err = c.status().await.expect_err("gone");
    assert_eq!(
        err.to_string(),
        format!("no agent listening at {}", a.socket.display())
    );
}

#[tokio::test]
async fn bad_json_is_a_400_and_a_stale_socket_is_replaced() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("run/agent.sock");
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    // A socket file nobody listens on: what a crash leaves.
    drop(std::os::unix::net::UnixListener::bind(&path).expect("stale"));
    let a = api(dir.path()).await;
    let stream = tokio::net::UnixStream::connect(&a.socket)
        .await
        .expect("connect");
    let (mut tx, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .expect("handshake");
    tokio::spawn(conn);
    let req = hyper::Request::put("/v1/models")
        .header("host", "localhost")
        .body(http_body_util::Full::new(hyper::body::Bytes::from_static(
            b"{\"repo\": 1}",
        )))
        .expect("request");
    let resp = tx.send_request(req).await.expect("send");
    assert_eq!(resp.status(), 400);
    let body = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .expect("body")
        .to_bytes();
    let e: ApiError = serde_json::from_slice(&body).expect("error json");
    assert_eq!(e.kind, "invalid_model");
    a.stop.cancel();
    a.task.await.expect("join").expect("served");
}

/// Runs passes (bounded) until `done` holds for the shared status.
async fn passes_until(
    pass: &mut Standalone<crate::images::Fake, crate::weights::HubWeights>,
    what: &str,
    done: impl Fn(&ColdNodeStatus) -> bool,
) {
    let token = CancellationToken::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let outcome = pass.reconcile(&token).await;
        let status = pass.shared().status.lock().expect("status").clone();
        if done(&status) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} not reached; last pass: {outcome:?}; status: {status:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pass_pulls_pins_and_syncs_with_the_files_credentials_and_lets_go_of_removed_models() {
    use crate::images::{Fake, RegistryAuth};
    use crate::weights::cache::HubCache;

    const IMAGE: &str = "registry.example.test/org/vllm:v1";
    let hub = coldstart_fakehub::FakeHub::start(coldstart_fakehub::Options::default())
        .await
        .expect("fake hub");
    hub.add_repo_files(
        "org/alpha",
        "main",
        vec![
            ("config.json".into(), b"{}".to_vec()),
            ("model.safetensors".into(), vec![7u8; 50_000]),
        ],
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let images = Arc::new(Fake::new());
    images.publish(IMAGE, &[1000, 2000]);
    let auth = RegistryAuth {
        username: "u".into(),
        password: "p".into(),
        ..RegistryAuth::default()
    };
    for img in images.state().registry.values_mut() {
        img.requires = Some(auth.clone());
    }
    let secret = dir.path().join("docker.json");
    std::fs::write(
        &secret,
        r#"{"auths":{"registry.example.test":{"username":"u","password":"p"}}}"#,
    )
    .expect("secret");
    let cache =
        HubCache::open(&dir.path().join("hub"), Some(&dir.path().join("state"))).expect("cache");
    let wake = Arc::new(Notify::new());
    let weights = crate::weights::HubWeights::new(
        Arc::new(cache),
        crate::weights::SyncSettings::new(&hub.url()),
    );
    let warmer = Warmer::new(
        images.clone(),
        Arc::new(weights),
        &dir.path().join("state"),
        crate::prepull::Options::default(),
        Arc::new(crate::metrics::Metrics::new()),
        wake.clone(),
    )
    .expect("warmer");
    let models = dir.path().join("models.toml");
    let mut entry = ModelEntry::new("org/alpha");
    entry.image = Some(IMAGE.into());
    entry.pull_secret = Some(secret);
    ModelsFile::new(&models).put_model(entry).expect("put");
    let settings = Settings {
        node: "n1".into(),
        models_file: models.clone(),
        state_dir: dir.path().join("state"),
        limits: Limits::default(),
        pull_secret: None,
        compile: crate::caches::runner::Settings {
            cache_root: dir.path().join("cache"),
            budget: 1 << 30,
            import_only: false,
        },
    };
    let mut pass = Standalone::new(settings, warmer, wake);

    passes_until(&mut pass, "org--alpha ready", |s| {
        s.phase == Phase::Ready
            && s.models.len() == 1
            && s.models[0]
                .image
                .as_ref()
                .is_some_and(|p| p.phase == crate::api::PartPhase::Ready)
    })
    .await;
    assert!(images.pinned(IMAGE), "the image is pinned against GC");
    let on_disk: ColdNodeStatus = serde_json::from_slice(
        &std::fs::read(dir.path().join("state").join(STATUS_FILE)).expect("status file"),
    )
    .expect("json");
    assert_eq!(on_disk.phase, Phase::Ready);

    ModelsFile::new(&models)
        .remove_model("org/alpha")
        .expect("remove");
    passes_until(&mut pass, "org--alpha let go", |s| s.models.is_empty()).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while images.pinned(IMAGE) {
        assert!(tokio::time::Instant::now() < deadline, "image still pinned");
        pass.reconcile(&CancellationToken::new())
            .await
            .expect("pass");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    pass.shutdown().await;
}

#[test]
fn an_edit_waits_for_another_process_holding_the_lock() {
    use nix::fcntl::{Flock, FlockArg};
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("models.toml");
    // Another open file description on the lock file: what a second process holds.
    let lock_file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.path().join("models.toml.lock"))
        .expect("lock file");
    let held = Flock::lock(lock_file, FlockArg::LockExclusive).expect("flock");
    let (tx, rx) = std::sync::mpsc::channel();
    let file = ModelsFile::new(&path);
    let editor = std::thread::spawn(move || {
        let r = file.put_model(ModelEntry::new("org/alpha"));
        let _ = tx.send(());
        r
    });
    // While the lock is held the edit cannot finish (a wait, not a timing claim: it would
    // only pass wrongly if the edit ignored the lock and was also slow).
    assert!(
        rx.recv_timeout(Duration::from_millis(300)).is_err(),
        "edit ignored the flock"
    );
    assert!(!path.exists());
    drop(held);
    editor
        .join()
        .expect("thread")
        .expect("put after the lock is released");
    assert_eq!(
        ModelsFile::new(&path)
            .load()
            .expect("valid")
            .expect("present")
            .entries
            .len(),
        1
    );
}
