use std::time::Duration;

use clap::Parser;

use super::*;

#[derive(Debug, Parser)]
struct Cli {
    #[command(flatten)]
    args: RunArgs,
}

// Flags only: the environment is never read by these tests' assertions because every setting
// they check is given explicitly (env precedence is covered by the daemon system test).
fn args(flags: &[&str]) -> RunArgs {
    let mut argv = vec!["coldstart-agent"];
    argv.extend_from_slice(flags);
    Cli::try_parse_from(argv).expect("flags parse").args
}

fn file(text: &str) -> FileConfig {
    toml::from_str(text).expect("toml parses")
}

#[test]
fn defaults_apply_when_nothing_is_set() {
    let cfg = args(&["--node-name", "n1"])
        .resolve(FileConfig::default())
        .expect("valid");
    assert_eq!(cfg.admin_addr.to_string(), DEFAULT_ADMIN_ADDR);
    assert_eq!(cfg.tick_interval, Duration::from_secs(10));
    assert_eq!(cfg.ready_timeout, Duration::from_secs(30));
    assert_eq!(cfg.cache_root, std::path::PathBuf::from(DEFAULT_CACHE_ROOT));
    assert!(!cfg.standalone);
}

#[test]
fn flags_beat_the_file_and_the_file_beats_defaults() {
    let f = file(
        r#"
        node-name = "from-file"
        admin-addr = "127.0.0.1:1"
        tick-interval = 20
        cache-root = "/nvme/coldstart"
        "#,
    );
    let cfg = args(&["--node-name", "from-flag", "--admin-addr", "127.0.0.1:2"])
        .resolve(f)
        .expect("valid");
    assert_eq!(cfg.node_name.as_deref(), Some("from-flag"));
    assert_eq!(cfg.admin_addr.to_string(), "127.0.0.1:2");
    assert_eq!(cfg.tick_interval, Duration::from_secs(20));
    assert_eq!(cfg.ready_timeout, Duration::from_secs(60));
    assert_eq!(cfg.cache_root, std::path::PathBuf::from("/nvme/coldstart"));
}

#[test]
fn unknown_file_keys_are_refused() {
    let err = toml::from_str::<FileConfig>("nodename = \"x\"").expect_err("unknown key");
    assert!(err.to_string().contains("unknown field"), "{err}");
}

#[test]
fn load_reports_a_bad_file_on_one_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("agent.toml");
    std::fs::write(&path, "tick-interval = \"soon\"\n").expect("write");
    let mut a = args(&["--node-name", "n1"]);
    a.config_file = Some(path.clone());
    let err = a.load().expect_err("bad type");
    assert_eq!(err.metric_label(), "config_parse");
    assert!(!err.to_string().contains('\n'), "{err}");
    let mut a = args(&["--node-name", "n1"]);
    a.config_file = Some(dir.path().join("missing.toml"));
    assert_eq!(a.load().expect_err("missing").metric_label(), "config_read");
}

#[test]
fn node_name_is_required_unless_standalone() {
    let err = args(&[])
        .resolve(FileConfig::default())
        .expect_err("no node");
    assert_eq!(
        err.to_string(),
        "invalid node-name: required unless --standalone"
    );
    let cfg = args(&["--standalone"])
        .resolve(FileConfig::default())
        .expect("standalone");
    assert!(cfg.standalone && cfg.node_name.is_none());
    let cfg = args(&[])
        .resolve(file("standalone = true"))
        .expect("standalone from file");
    assert!(cfg.standalone);
}

#[test]
fn bad_values_are_refused() {
    let cases: &[(&[&str], &str)] = &[
        (&["--node-name", "Bad_Node"], "node-name"),
        (&["--standalone", "--namespace", "a.b"], "namespace"),
        (&["--standalone", "--cache-root", "relative"], "cache-root"),
        (&["--standalone", "--tick-interval", "0"], "tick-interval"),
        (
            &[
                "--standalone",
                "--tick-interval",
                "30",
                "--ready-timeout",
                "30",
            ],
            "ready-timeout",
        ),
        (
            &["--standalone", "--shutdown-timeout", "0"],
            "shutdown-timeout",
        ),
    ];
    for (flags, setting) in cases {
        let err = args(flags)
            .resolve(FileConfig::default())
            .expect_err("refused");
        assert!(
            err.to_string().starts_with(&format!("invalid {setting}:")),
            "{flags:?}: {err}"
        );
    }
}

#[test]
fn dns_names() {
    assert!(is_dns_subdomain("ip-10-0-1-2.ec2.internal"));
    assert!(!is_dns_subdomain("a..b"));
    assert!(!is_dns_label("-a"));
    assert!(is_dns_label("coldstart-system"));
}

#[test]
fn standalone_paths_default_and_resolve() {
    let cfg = args(&["--standalone"])
        .resolve(FileConfig::default())
        .expect("valid");
    assert_eq!(
        cfg.models_file,
        std::path::PathBuf::from(crate::standalone::DEFAULT_MODELS_FILE)
    );
    assert_eq!(
        cfg.socket,
        std::path::PathBuf::from(crate::standalone::DEFAULT_SOCKET)
    );
    let f = file(
        r#"
        models-file = "/srv/models.toml"
        socket = "/run/a.sock"
        "#,
    );
    let cfg = args(&["--standalone", "--socket", "/run/b.sock"])
        .resolve(f)
        .expect("valid");
    assert_eq!(
        cfg.models_file,
        std::path::PathBuf::from("/srv/models.toml")
    );
    assert_eq!(cfg.socket, std::path::PathBuf::from("/run/b.sock"));
}

#[test]
fn standalone_paths_are_checked() {
    let long = format!("/{}", "s".repeat(120));
    let cases: &[(&[&str], &str)] = &[
        (
            &["--standalone", "--models-file", "models.toml"],
            "models-file",
        ),
        (&["--standalone", "--socket", "agent.sock"], "socket"),
        (&["--standalone", "--socket", &long], "socket"),
    ];
    for (flags, setting) in cases {
        let err = args(flags)
            .resolve(FileConfig::default())
            .expect_err("refused");
        assert!(
            err.to_string().starts_with(&format!("invalid {setting}:")),
            "{flags:?}: {err}"
        );
    }
}
