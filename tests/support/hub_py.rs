//! The Hub's Python side, from the test environment's venv: `huggingface_hub` 2.4 (the oracle for
//! the cache layout, through `tests/oracle/check_snapshot.py`, and `hf download`, the baseline of
//! the benchmarks) and `olah`, an independent Hub server that serves local git repositories
//! offline.
//!
//! olah 0.5 quirks our client must cope with (see `tests/olah_smoke.rs`, which records them):
//! `GET /api/models/R/tree/C?recursive=true` answers 307 to the same path with a trailing slash
//! and lists directories too; `HEAD .../resolve/...` carries `etag` (the git blob sha1, unquoted),
//! `x-repo-commit` and `content-length` but no `X-Linked-*`; Range is ignored (200, chunked, the
//! whole file); a missing file answers 404 to HEAD but 500 to GET; an unknown revision answers 401.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use anyhow::{Context as _, bail};

use super::containerd::DEFAULT_TESTENV;
use super::{
    SETUP_HINT, file_tail, free_port, kill_child, require_tool, run_bounded, run_checked,
    toml_path, toml_str, wait_for,
};

/// How long `Olah::start` waits for the server to answer.
pub const OLAH_START_TIMEOUT: Duration = Duration::from_secs(30);

/// How long one `check_snapshot.py` run may take (it hashes every selected file).
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(600);

/// How long one `hf download` may take (benchmarks download large repos).
pub const HF_DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(1800);

/// How long one git command may take (committing a large repo compresses nothing, see below).
const GIT_TIMEOUT: Duration = Duration::from_secs(600);

/// How long one HTTP request made through curl may take.
const HTTP_TIMEOUT: Duration = Duration::from_secs(120);

/// The oracle script, in this repository.
const CHECK_SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/oracle/check_snapshot.py"
);

/// The last `<kind> <path>` line of `$COLDSTART_TESTENV/env` (default
/// `/opt/coldstart-testenv/env`), as `scripts/test-env.sh` writes it for the venv (`python`)
/// and the torch tree (`torch`). Panics with the setup hint when the file or the line is
/// missing; `what` says what the line is for.
pub fn testenv_path(kind: &str, what: &str) -> PathBuf {
    let base = std::env::var_os("COLDSTART_TESTENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_TESTENV));
    let env_file = base.join("env");
    let text = std::fs::read_to_string(&env_file)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}; {SETUP_HINT}", env_file.display()));
    let prefix = format!("{kind} ");
    text.lines()
        .filter_map(|l| l.trim().strip_prefix(prefix.as_str()))
        .map(|p| PathBuf::from(p.trim()))
        .next_back()
        .unwrap_or_else(|| {
            panic!(
                "{} has no `{kind}` line ({what}); {SETUP_HINT}",
                env_file.display()
            )
        })
}

/// The venv's Python interpreter, from the `python <path>` line of `$COLDSTART_TESTENV/env`.
/// Panics with the setup hint when absent.
pub fn python() -> PathBuf {
    let python = testenv_path("python", "the venv with huggingface_hub and olah");
    if !python.is_file() {
        panic!("{} missing; {SETUP_HINT}", python.display());
    }
    python
}

/// An executable installed in the venv (`hf`, `olah-cli`); panics with the setup hint if absent.
pub fn venv_bin(name: &str) -> PathBuf {
    let py = python();
    let bin = py.parent().map(|d| d.join(name)).unwrap_or_default();
    if !bin.is_file() {
        panic!("{} missing from the venv; {SETUP_HINT}", bin.display());
    }
    bin
}

/// Runs `tests/oracle/check_snapshot.py` on `cache` (a Hub cache dir, holding `models--*`) and
/// returns its JSON document: `{"ok", "snapshot", "files", "error", "exception"}`, plus `stderr`
/// (its tail) for diagnostics. `allow` empty means every file; `source` is a plain directory
/// with the repo's files. Panics if the script cannot run or breaks its contract.
pub fn check_snapshot(
    cache: &Path,
    repo: &str,
    revision: &str,
    allow: &[String],
    source: &Path,
    config_file: &str,
    expect_incomplete: bool,
) -> serde_json::Value {
    let mut cmd = Command::new(python());
    cmd.arg(CHECK_SCRIPT)
        .arg("--cache-dir")
        .arg(cache)
        .args(["--repo", repo, "--revision", revision])
        .arg("--source")
        .arg(source)
        .args(["--config-file", config_file])
        .env_remove("HF_ENDPOINT")
        .env_remove("HF_HUB_CACHE");
    for pattern in allow {
        cmd.args(["--allow", pattern]);
    }
    if expect_incomplete {
        cmd.arg("--expect-incomplete");
    }
    let out = run_bounded(&mut cmd, CHECK_TIMEOUT).unwrap_or_else(|e| panic!("{e:#}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let mut doc: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "check_snapshot.py printed no JSON document ({e}; {}):\nstdout: {stdout}\nstderr: {stderr}",
            out.status
        )
    });
    let ok = doc["ok"].as_bool();
    if ok != Some(out.status.success()) {
        panic!(
            "check_snapshot.py: ok={ok:?} but {}:\n{stdout}\nstderr: {stderr}",
            out.status
        );
    }
    let tail_start = stderr.len().saturating_sub(4096);
    let tail = stderr.get(tail_start..).unwrap_or_default().to_string();
    doc["stderr"] = serde_json::Value::String(tail);
    doc
}

/// The scan script, in this repository.
const SCAN_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/oracle/scan_cache.py");

/// Runs `tests/oracle/scan_cache.py` (`huggingface_hub.scan_cache_dir`, what `hf cache scan`
/// runs) on `cache` and returns its JSON document: `{"warnings": [..], "repos": [{"repo_id",
/// "revisions", "refs"}]}`. Panics if the script cannot run or prints no document.
pub fn scan_cache(cache: &Path) -> serde_json::Value {
    let mut cmd = Command::new(python());
    cmd.arg(SCAN_SCRIPT)
        .arg(cache)
        .env_remove("HF_ENDPOINT")
        .env_remove("HF_HUB_CACHE");
    let out = run_bounded(&mut cmd, CHECK_TIMEOUT).unwrap_or_else(|e| panic!("{e:#}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "scan_cache.py printed no JSON document ({e}; {}):\nstdout: {stdout}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// Runs the venv's `hf download REPO --revision REV --cache-dir DIR` against `endpoint`
/// (`HF_ENDPOINT`), bounded by [`HF_DOWNLOAD_TIMEOUT`], whatever its exit status. Panics only if
/// it cannot start or times out.
pub fn hf_download(endpoint: &str, repo: &str, revision: &str, local_cache: &Path) -> Output {
    let mut cmd = Command::new(venv_bin("hf"));
    cmd.args(["download", repo, "--revision", revision, "--cache-dir"])
        .arg(local_cache)
        .env("HF_ENDPOINT", endpoint)
        .env("HF_HUB_DISABLE_TELEMETRY", "1")
        .env("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        .env("HF_HUB_DISABLE_IMPLICIT_TOKEN", "1")
        .env_remove("HF_HUB_OFFLINE")
        .env_remove("HF_TOKEN")
        .env_remove("HF_HUB_CACHE");
    run_bounded(&mut cmd, HF_DOWNLOAD_TIMEOUT).unwrap_or_else(|e| panic!("{e:#}"))
}

/// One HTTP answer, as curl saw it.
#[derive(Debug, Clone)]
pub struct HttpReply {
    /// Status code.
    pub status: u16,
    /// Headers of the final response, names lowercased, in order.
    pub headers: Vec<(String, String)>,
    /// The body (empty for HEAD).
    pub body: Vec<u8>,
}

impl HttpReply {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    pub fn json(&self) -> anyhow::Result<serde_json::Value> {
        serde_json::from_slice(&self.body).with_context(|| {
            format!(
                "body is not JSON (status {}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// One request through curl, without following redirects: `method` `HEAD` sends a real HEAD
/// (`curl -I`). `headers` are extra request headers.
pub fn http(method: &str, url: &str, headers: &[(&str, &str)]) -> anyhow::Result<HttpReply> {
    let curl = require_tool("curl");
    let tmp = tempfile::Builder::new()
        .prefix("coldstart-curl-")
        .tempdir()?;
    let (head_file, body_file) = (tmp.path().join("head"), tmp.path().join("body"));
    let mut cmd = Command::new(curl);
    cmd.args(["-sS", "--max-time", &HTTP_TIMEOUT.as_secs().to_string()])
        .args(["-w", "%{http_code}", "-D"])
        .arg(&head_file)
        .arg("-o")
        .arg(&body_file);
    if method == "HEAD" {
        cmd.arg("-I");
    } else {
        cmd.args(["-X", method]);
    }
    for (name, value) in headers {
        cmd.args(["-H", &format!("{name}: {value}")]);
    }
    cmd.arg(url);
    let out = run_checked(&mut cmd, HTTP_TIMEOUT + Duration::from_secs(5))?;
    let status: u16 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .with_context(|| format!("curl {url}: no status"))?;
    let raw = std::fs::read(&head_file).unwrap_or_default();
    // With -I curl writes the headers where the body would go: a HEAD answer has no body.
    let body = match method {
        "HEAD" => Vec::new(),
        _ => std::fs::read(&body_file).unwrap_or_default(),
    };
    Ok(HttpReply {
        status,
        headers: parse_headers(&String::from_utf8_lossy(&raw)),
        body,
    })
}

/// Headers of the last response block in curl's `-D` dump.
fn parse_headers(raw: &str) -> Vec<(String, String)> {
    let last = raw
        .split("\r\n\r\n")
        .filter(|b| !b.trim().is_empty())
        .last()
        .unwrap_or_default();
    last.lines()
        .skip(1) // status line
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect()
}

/// An `olah-cli` on 127.0.0.1:<free port>, offline, serving local git repositories (one commit
/// each, branch `main`) from a temporary mirrors directory. Killed on drop.
pub struct Olah {
    child: Child,
    tmp: tempfile::TempDir,
    port: u16,
    commits: BTreeMap<String, String>,
}

impl Olah {
    /// Commits each `(repo id, directory of files)` into a git repository where olah looks for
    /// it (`<mirrors-path>/models/<org>/<name>`, see olah's `server_mirror.py`), then starts
    /// olah and waits until `GET /api/models/<repo>/revision/main` answers 200.
    pub fn start(repos: &[(&str, &Path)]) -> anyhow::Result<Olah> {
        let olah_cli = venv_bin("olah-cli");
        let tmp = tempfile::Builder::new()
            .prefix("coldstart-olah-")
            .tempdir()?;
        let mirrors = tmp.path().join("mirrors");
        let mut commits = BTreeMap::new();
        for (repo, dir) in repos {
            let sha = commit_mirror(&mirrors, repo, dir)
                .with_context(|| format!("mirroring {repo} from {}", dir.display()))?;
            commits.insert(repo.to_string(), sha);
        }
        let probe = match repos.first() {
            Some((repo, _)) => format!("/api/models/{repo}/revision/main"),
            None => "/".to_string(),
        };
        for attempt in 1..=5 {
            let port = free_port();
            let mut child = spawn(&olah_cli, tmp.path(), &mirrors, port)?;
            match wait_ready(&mut child, port, &probe) {
                Ok(()) => {
                    return Ok(Olah {
                        child,
                        tmp,
                        port,
                        commits,
                    });
                }
                Err(e) => {
                    kill_child(&mut child);
                    let log = file_tail(&tmp.path().join("olah.log"), 8 * 1024);
                    if attempt < 5 && log.contains("address already in use") {
                        continue;
                    }
                    bail!("{e:#}; olah log:\n{log}");
                }
            }
        }
        bail!("olah did not start")
    }

    /// `http://127.0.0.1:PORT`, the `HF_ENDPOINT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The commit (git sha1, 40 hex) that `repo`'s `main` points at; panics for an unknown repo.
    pub fn commit(&self, repo: &str) -> String {
        self.commits
            .get(repo)
            .cloned()
            .unwrap_or_else(|| panic!("olah serves no repo {repo}"))
    }

    /// The git repository olah serves `repo` from.
    pub fn git_dir(&self, repo: &str) -> PathBuf {
        mirror_path(&self.tmp.path().join("mirrors"), repo)
    }

    /// The server's combined stdout and stderr.
    pub fn log_tail(&self) -> String {
        file_tail(&self.tmp.path().join("olah.log"), 8 * 1024)
    }
}

impl Drop for Olah {
    fn drop(&mut self) {
        kill_child(&mut self.child);
    }
}

/// `<mirrors>/models/<org>/<name>` (or `<mirrors>/models/<name>` for a repo without an org).
fn mirror_path(mirrors: &Path, repo: &str) -> PathBuf {
    repo.split('/')
        .fold(mirrors.join("models"), |p, part| p.join(part))
}

/// Creates the mirror git repository of `repo` holding exactly `dir`'s files in one commit on
/// `main`, and returns the commit sha. The files are committed as plain blobs (no LFS: olah
/// reads contents through GitPython) with compression off, so large repos commit quickly.
fn commit_mirror(mirrors: &Path, repo: &str, dir: &Path) -> anyhow::Result<String> {
    let parts: Vec<&str> = repo.split('/').collect();
    if parts.is_empty() || parts.len() > 2 || parts.iter().any(|p| p.is_empty()) {
        bail!("repo id {repo:?} is not `org/name` or `name`");
    }
    let git_dir = mirror_path(mirrors, repo);
    std::fs::create_dir_all(&git_dir)?;
    git(&git_dir, &["init", "-q", "-b", "main"])?;
    for (key, value) in [
        ("user.name", "coldstart tests"),
        ("user.email", "tests@coldstart.invalid"),
        ("core.compression", "0"),
        ("core.autocrlf", "false"),
        ("commit.gpgsign", "false"),
    ] {
        git(&git_dir, &["config", key, value])?;
    }
    // The work tree is the source directory itself: nothing is copied but the git objects.
    let dot_git = git_dir.join(".git");
    let with_tree = |args: &[&str]| -> anyhow::Result<Output> {
        let mut cmd = git_cmd(dir);
        cmd.arg("--git-dir")
            .arg(&dot_git)
            .arg("--work-tree")
            .arg(dir);
        cmd.args(args);
        run_checked(&mut cmd, GIT_TIMEOUT)
    };
    with_tree(&["add", "-A", "-f", "."])?;
    with_tree(&[
        "commit",
        "-q",
        "--no-verify",
        "-m",
        "coldstart test snapshot",
    ])?;
    let out = git(&git_dir, &["rev-parse", "HEAD"])?;
    let sha = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if sha.len() != 40 {
        bail!("git rev-parse HEAD printed {sha:?}");
    }
    Ok(sha)
}

/// `git -C dir ARGS`, isolated from the user's and system's git configuration.
fn git(dir: &Path, args: &[&str]) -> anyhow::Result<Output> {
    let mut cmd = git_cmd(dir);
    cmd.args(args);
    run_checked(&mut cmd, GIT_TIMEOUT)
}

fn git_cmd(dir: &Path) -> Command {
    let mut cmd = Command::new(require_tool("git"));
    cmd.current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE")
        .env_remove("GIT_INDEX_FILE");
    cmd
}

/// Writes olah's config (offline, 127.0.0.1:`port`) and starts it, logging to `olah.log`.
fn spawn(olah_cli: &Path, tmp: &Path, mirrors: &Path, port: u16) -> anyhow::Result<Child> {
    let config = format!(
        "[basic]\nhost = {host}\nport = {port}\nrepos-path = {repos}\nmirrors-path = [{mirrors}]\n\
         \n[accessibility]\noffline = true\n",
        host = toml_str("127.0.0.1"),
        repos = toml_path(&tmp.join("repos")),
        mirrors = toml_path(mirrors),
    );
    let config_path = tmp.join("olah.toml");
    std::fs::write(&config_path, config)?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(tmp.join("olah.log"))?;
    Command::new(olah_cli)
        .arg("-c")
        .arg(&config_path)
        .arg("--log-path")
        .arg(tmp.join("logs"))
        .current_dir(tmp)
        .env("HF_HUB_OFFLINE", "1")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("cannot start {}", olah_cli.display()))
}

/// Polls `probe` until it answers 200, failing early if olah exits.
fn wait_ready(child: &mut Child, port: u16, probe: &str) -> anyhow::Result<()> {
    let url = format!("http://127.0.0.1:{port}{probe}");
    let mut exited = None;
    let res = wait_for(&format!("olah to answer {url}"), OLAH_START_TIMEOUT, || {
        if let Ok(Some(status)) = child.try_wait() {
            exited = Some(status);
            return Some(());
        }
        let mut cmd = Command::new(require_tool("curl"));
        cmd.args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "2",
            &url,
        ]);
        let out = run_bounded(&mut cmd, Duration::from_secs(5)).ok()?;
        (String::from_utf8_lossy(&out.stdout).trim() == "200").then_some(())
    });
    if let Some(status) = exited {
        bail!("olah exited ({status}) before answering");
    }
    res
}
