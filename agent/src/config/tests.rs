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
fn standalone_serves_the_admin_endpoints_on_loopback_unless_told_otherwise() {
    let cfg = args(&["--standalone"])
        .resolve(FileConfig::default())
        .expect("valid");
    assert_eq!(cfg.admin_addr.to_string(), DEFAULT_STANDALONE_ADMIN_ADDR);
    assert!(cfg.admin_addr.ip().is_loopback());
    let cfg = args(&["--standalone"])
        .resolve(file("admin-addr = \"0.0.0.0:9464\""))
        .expect("valid");
    assert_eq!(cfg.admin_addr.to_string(), "0.0.0.0:9464");
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
fn gpu_settings_default_to_auto_and_the_device_plugin_xid_set() {
    let cfg = args(&["--node-name", "n1"])
        .resolve(FileConfig::default())
        .expect("valid");
    assert_eq!(cfg.gpus_expected, GpusExpected::Auto);
    assert_eq!(cfg.nvml_library, None);
    assert_eq!(
        cfg.xid_ignore.iter().copied().collect::<Vec<_>>(),
        vec![13, 31, 43, 45, 68, 109]
    );
}

#[test]
fn gpu_flags_beat_the_file() {
    let f = file(
        r#"
        gpus-expected = "none"
        nvml-library = "/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1"
        xid-ignore = [13]
        "#,
    );
    let cfg = args(&["--node-name", "n1"])
        .resolve(f.clone())
        .expect("valid");
    assert_eq!(cfg.gpus_expected, GpusExpected::None);
    assert_eq!(cfg.xid_ignore.iter().copied().collect::<Vec<_>>(), vec![13]);
    let flags = [
        "--node-name",
        "n1",
        "--gpus-expected",
        "8",
        "--nvml-library",
        "/opt/nvml/libnvidia-ml.so.1",
        "--xid-ignore",
        "31, 43",
    ];
    let cfg = args(&flags).resolve(f).expect("valid");
    assert_eq!(cfg.gpus_expected, GpusExpected::Count(8));
    assert_eq!(
        cfg.nvml_library,
        Some(std::path::PathBuf::from("/opt/nvml/libnvidia-ml.so.1"))
    );
    assert_eq!(
        cfg.xid_ignore.iter().copied().collect::<Vec<_>>(),
        vec![31, 43]
    );
    // An empty list ignores nothing: every XID is critical.
    let cfg = args(&["--node-name", "n1", "--xid-ignore", ""])
        .resolve(FileConfig::default())
        .expect("valid");
    assert!(cfg.xid_ignore.is_empty());
}

#[test]
fn bad_gpu_settings_are_refused_with_the_setting_named() {
    let bad_xid = args(&["--node-name", "n1", "--xid-ignore", "13,x"])
        .resolve(FileConfig::default())
        .expect_err("bad list");
    assert!(bad_xid.to_string().contains("xid-ignore"), "{bad_xid}");
    let bad_count = args(&["--node-name", "n1"])
        .resolve(file(r#"gpus-expected = "many""#))
        .expect_err("bad count");
    assert!(
        bad_count.to_string().contains("gpus-expected"),
        "{bad_count}"
    );
    let bad_flag = Cli::try_parse_from(["coldstart-agent", "--gpus-expected", "-1"]);
    assert!(bad_flag.is_err());
    // clap refuses an empty path on the command line; the file can still hold one.
    let empty_lib = args(&["--node-name", "n1"])
        .resolve(file(r#"nvml-library = """#))
        .expect_err("empty path");
    assert!(
        empty_lib.to_string().contains("nvml-library"),
        "{empty_lib}"
    );
}

#[test]
fn standalone_paths_default_and_resolve() {
    let cfg = args(&["--standalone"])
        .resolve(FileConfig::default())
        .expect("valid");
    assert_eq!(
        cfg.models_file,
        std::path::PathBuf::from(crate::config::DEFAULT_MODELS_FILE)
    );
    assert_eq!(
        cfg.socket,
        std::path::PathBuf::from(crate::config::DEFAULT_SOCKET)
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

#[test]
fn an_unreadable_config_file_names_the_file_and_the_cause_once() {
    let e = crate::config::Error::Read {
        path: "/etc/coldstart/agent.toml".into(),
        source: std::io::ErrorKind::PermissionDenied.into(),
    };
    crate::errors::assert_no_repeated_cause(&e);
}

#[test]
fn the_ranged_fetch_takes_flags_over_the_file_table_over_defaults() {
    let cfg = args(&["--node-name", "n1"])
        .resolve(FileConfig::default())
        .expect("valid");
    assert_eq!(cfg.fetch, crate::images::FetchOptions::default());
    assert!(cfg.fetch.enabled && cfg.fetch.in_place);
    let table = "[fetch]\nconnections = 4\nchunk-mib = 16\nbuffer-mib = 256\nfast-mbps = 0\n\
                 via-api = true\nlease-ttl = 600\n";
    let cfg = args(&["--node-name", "n1", "--fetch-connections", "12"])
        .resolve(file(table))
        .expect("valid");
    assert_eq!(cfg.fetch.connections, 12, "the flag beats the file");
    assert_eq!(cfg.fetch.chunk_bytes, 16 << 20);
    assert_eq!(cfg.fetch.buffer_bytes, 256 << 20);
    assert_eq!(cfg.fetch.fast_bytes_per_sec, 0);
    assert!(!cfg.fetch.in_place);
    assert_eq!(cfg.fetch.lease_ttl, Duration::from_secs(600));
    let off = args(&["--node-name", "n1", "--no-ranged-fetch"])
        .resolve(file("[fetch]\nenabled = true\n"))
        .expect("valid");
    assert!(!off.fetch.enabled);
    assert!(
        !args(&["--node-name", "n1"])
            .resolve(file("[fetch]\nenabled = false\n"))
            .expect("valid")
            .fetch
            .enabled
    );
}

#[test]
fn bad_ranged_fetch_settings_are_refused_with_the_setting_named() {
    for (flags, table) in [
        (vec!["--fetch-connections", "0"], ""),
        (vec!["--fetch-connections", "65"], ""),
        (vec![], "[fetch]\nchunk-mib = 2048\n"),
        (
            vec!["--fetch-chunk-mib", "16", "--fetch-buffer-mib", "8"],
            "",
        ),
        (vec!["--fetch-lease-ttl", "0"], ""),
        (vec!["--fetch-buffer-mib", "18446744073709551615"], ""),
    ] {
        let mut all = vec!["--node-name", "n1"];
        all.extend(flags.iter().copied());
        let err = args(&all).resolve(file(table)).expect_err("refused");
        assert!(
            err.to_string().contains("fetch"),
            "{flags:?} {table:?}: {err}"
        );
    }
    assert!(toml::from_str::<FileConfig>("[fetch]\nconnection = 3\n").is_err());
}
