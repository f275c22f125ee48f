//! The README's table of exit codes and error kinds, verb by verb: each row runs the real
//! binary under `-o json` and checks the exit code and the kind (the error document's `kind`,
//! or the result's `outcome` where the verb has a result). Usage errors (64) print no
//! document: one `error:` line, in every format.

use std::process::Command;

use serde_json::Value;

use crate::{LIMIT, cluster, common, support};

/// Where a row's `coldctl` looks for a cluster.
#[derive(Clone, Copy, Debug)]
enum Env {
    /// The fake API server, through `KUBECONFIG`.
    Cluster,
    /// No kubeconfig anywhere and not in a pod.
    NoCluster,
}

struct Row {
    args: &'static [&'static str],
    env: Env,
    code: i32,
    /// The error document's `kind`, the result's `outcome`, or nothing to check (usage, and
    /// successes).
    kind: Option<&'static str>,
}

const fn row(
    args: &'static [&'static str],
    env: Env,
    code: i32,
    kind: Option<&'static str>,
) -> Row {
    Row {
        args,
        env,
        code,
        kind,
    }
}

/// `{CACHE}` in a row's arguments: an empty cache root; `{NOSOCK}`: a socket nobody serves.
const TABLE: &[Row] = &[
    // warm
    row(&["warm"], Env::Cluster, 64, None),
    row(&["warm", "--here"], Env::Cluster, 64, None),
    row(&["warm", "org/x", "--here"], Env::Cluster, 64, None),
    row(&["warm", "org/bad name"], Env::Cluster, 64, None),
    row(
        &["warm", "no-such-name"],
        Env::Cluster,
        1,
        Some("not_found"),
    ),
    row(&["warm", "org/x"], Env::NoCluster, 1, Some("no_cluster")),
    row(
        &["warm", "org/x", "--node={NOSOCK}"],
        Env::Cluster,
        1,
        Some("no_agent"),
    ),
    row(
        &["warm", "org/x", "--wait", "--timeout", "1s"],
        Env::Cluster,
        3,
        Some("timeout"),
    ),
    // verify
    row(&["verify", "org/x"], Env::Cluster, 64, None),
    row(&["verify", "org/x", "--here"], Env::Cluster, 64, None),
    row(
        &["verify", "org/x", "--node={NOSOCK}"],
        Env::Cluster,
        64,
        None,
    ),
    row(
        &["verify", "org/x", "--here", "--cache-root", "{CACHE}"],
        Env::Cluster,
        1,
        Some("not_found"),
    ),
    // status
    row(&["status"], Env::Cluster, 0, None),
    row(&["status", "--here"], Env::Cluster, 64, None),
    row(
        &["status", "org/absent"],
        Env::Cluster,
        1,
        Some("not_found"),
    ),
    row(&["status"], Env::NoCluster, 1, Some("no_cluster")),
    row(
        &["status", "--node={NOSOCK}"],
        Env::Cluster,
        1,
        Some("no_agent"),
    ),
    // unwarm
    row(&["unwarm", "org/x", "--here"], Env::Cluster, 64, None),
    row(
        &["unwarm", "org/absent"],
        Env::Cluster,
        1,
        Some("not_found"),
    ),
    row(
        &["unwarm", "org/absent", "--ignore-not-found"],
        Env::Cluster,
        0,
        None,
    ),
    row(
        &["unwarm", "org/x", "--node={NOSOCK}"],
        Env::Cluster,
        1,
        Some("no_agent"),
    ),
    // nodes
    row(&["nodes"], Env::Cluster, 0, None),
    row(&["nodes", "--here"], Env::Cluster, 64, None),
    row(&["nodes"], Env::NoCluster, 1, Some("no_cluster")),
    // cache (`cache_disabled` needs a ColdModel: tests/coldctl/cache.rs)
    row(
        &["cache", "env", "org/absent"],
        Env::Cluster,
        1,
        Some("not_found"),
    ),
    row(
        &["cache", "env", "org/x"],
        Env::NoCluster,
        1,
        Some("no_cluster"),
    ),
    row(
        &["cache", "env", "m", "--node={NOSOCK}"],
        Env::Cluster,
        1,
        Some("no_agent"),
    ),
    row(&["cache", "list"], Env::Cluster, 0, None),
    row(
        &["cache", "list", "--node={NOSOCK}"],
        Env::Cluster,
        1,
        Some("no_agent"),
    ),
    row(
        &["cache", "list", "--here", "--cache-root", "{CACHE}"],
        Env::Cluster,
        0,
        None,
    ),
    row(&["cache", "gc", "--budget", "1G"], Env::Cluster, 64, None),
    row(
        &["cache", "gc", "--here", "--budget", "1x"],
        Env::Cluster,
        64,
        None,
    ),
    row(
        &[
            "cache",
            "gc",
            "--here",
            "--budget",
            "1G",
            "--cache-root",
            "{CACHE}",
        ],
        Env::Cluster,
        0,
        None,
    ),
    // snapshot (the managed verbs; capture and support: tests/snapshots.rs)
    row(&["snapshot", "delete", "x"], Env::Cluster, 64, None),
    row(
        &["snapshot", "create", "org/x", "--pod", "a/b"],
        Env::Cluster,
        64,
        None,
    ),
    row(
        &["snapshot", "capture", "a/b/c", "--name", "n"],
        Env::Cluster,
        64,
        None,
    ),
    row(
        &["snapshot", "restore-spec", "org/x"],
        Env::Cluster,
        1,
        Some("no_snapshot"),
    ),
    row(&["snapshot", "list"], Env::Cluster, 0, None),
    // completion, version
    row(&["completion", "bash"], Env::Cluster, 0, None),
    row(&["completion", "tcsh"], Env::Cluster, 64, None),
    row(&["version", "--node={NOSOCK}"], Env::Cluster, 0, None),
];

#[test]
fn every_verb_exits_and_names_its_kind_as_the_readme_table_says() {
    let c = cluster();
    let dir = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let nosock = dir.path().join("nowhere.sock");
    for r in TABLE {
        let args: Vec<String> = r
            .args
            .iter()
            .map(|a| {
                a.replace("{CACHE}", cache.to_str().unwrap())
                    .replace("{NOSOCK}", nosock.to_str().unwrap())
            })
            .chain(["-o".to_string(), "json".to_string()])
            .collect();
        let mut cmd = Command::new(common::coldctl_bin());
        cmd.args(&args)
            .env("COLDSTART_LOG", "warn")
            .env("HOME", home.path())
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env_remove("COLDSTART_CACHE_ROOT")
            .env_remove("COLDSTART_CACHE_DIR")
            .env_remove("COLDSTART_PULL_SECRET");
        match r.env {
            Env::Cluster => cmd.env("KUBECONFIG", &c.kubeconfig),
            Env::NoCluster => cmd.env_remove("KUBECONFIG"),
        };
        let out = support::run_bounded(&mut cmd, LIMIT).expect("coldctl ran");
        let run = common::Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        assert_eq!(run.code, r.code, "{args:?}: {run:?}");
        if r.code == 64 {
            run.error_line();
            assert_eq!(run.stdout, "", "{args:?}: no document for bad usage");
            continue;
        }
        if r.args[0] == "completion" {
            continue;
        }
        let doc = run.json();
        if let Some(kind) = r.kind {
            let said = if doc["kind"].is_null() {
                &doc["outcome"]
            } else {
                &doc["kind"]
            };
            assert_eq!(said, &Value::from(kind), "{args:?}: {doc}");
        }
    }
}

#[test]
fn no_cluster_is_one_short_line_naming_the_other_backends() {
    let home = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(common::coldctl_bin());
    cmd.args(["status"])
        .env("HOME", home.path())
        .env_remove("KUBECONFIG")
        .env_remove("KUBERNETES_SERVICE_HOST");
    let out = support::run_bounded(&mut cmd, LIMIT).expect("coldctl ran");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    let line = stderr.trim_end();
    assert!(line.starts_with("error: no cluster configured"), "{line}");
    assert!(line.contains("--node") && line.contains("--here"), "{line}");
    assert!(line.len() < 250, "{} characters: {line}", line.len());
}
