// Test setup panics on failure like the tests themselves.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::super::host::{CAP_PULL, CAP_RESOLVE};
use super::super::hosts_toml;
use super::*;

const DIGEST: &str = "sha256:0101010101010101010101010101010101010101010101010101010101010101";

const HOSTS_TOML: &str = r#"
server = "https://registry.coldstart.test"
ca = "root.pem"

# mirrors first, in file order
[host."https://zz-mirror.example.com:8443"]
  capabilities = ["pull", "resolve"]
  ca = ["a.pem", "/abs/b.pem"]
  skip_verify = false

[host."https://zz-mirror.example.com:8443".header]
  x-custom = "1"
  x-multi = ["a", "b"]

[ host . 'http://aa-mirror.local/prefix/' ]
  capabilities = ["pull"]
  dial_timeout = "1m30s"

[host."plain.example.com"]
  override_path = true
  client = [["c.cert", "c.key"]]
"#;

#[test]
fn hosts_come_in_file_order_then_server() {
    let keys = hosts_toml::ordered_host_keys(HOSTS_TOML);
    assert_eq!(
        keys,
        [
            "https://zz-mirror.example.com:8443",
            "http://aa-mirror.local/prefix/",
            "plain.example.com"
        ]
    );
    let base = Path::new("/etc/containerd/certs.d/registry.coldstart.test");
    let hosts = hosts_toml::parse(HOSTS_TOML, base).unwrap();
    let urls: Vec<_> = hosts
        .iter()
        .map(|h| format!("{}{}", h.origin(), h.path))
        .collect();
    assert_eq!(
        urls,
        [
            "https://zz-mirror.example.com:8443/v2",
            "http://aa-mirror.local/prefix/v2",
            "https://plain.example.com",
            "https://registry.coldstart.test/v2",
        ]
    );
    assert_eq!(hosts[0].capabilities, CAP_PULL | CAP_RESOLVE);
    assert_eq!(
        hosts[0].ca,
        [base.join("a.pem"), PathBuf::from("/abs/b.pem")]
    );
    assert_eq!(hosts[0].skip_verify, Some(false));
    assert_eq!(
        hosts[0].header,
        [
            ("x-custom".to_owned(), "1".to_owned()),
            ("x-multi".to_owned(), "a".to_owned()),
            ("x-multi".to_owned(), "b".to_owned())
        ]
    );
    assert!(!hosts[1].can_resolve());
    assert_eq!(hosts[1].dial_timeout, Some(Duration::from_secs(90)));
    assert_eq!(
        hosts[2].client,
        [(base.join("c.cert"), Some(base.join("c.key")))]
    );
    assert!(hosts[3].can_resolve());
    assert_eq!(hosts[3].ca, [base.join("root.pem")]);
}

#[test]
fn header_lookalikes_inside_strings_are_not_hosts() {
    let text = "[host.\"http://a\"]\nx = '''\n[host.\"http://fake\"]\n'''\n";
    let hosts = hosts_toml::parse(text, Path::new("/")).unwrap();
    assert_eq!(hosts.len(), 2);
    assert_eq!(hosts[0].authority, "a");
    assert_eq!(hosts[1].authority, "", "no server: left for the default");
}

#[test]
fn malformed_hosts_toml_is_an_error() {
    for bad in [
        "[host.\"http://a\"]\ncapabilities = [\"fly\"]",
        "skip_verify = \"yes\"",
        "server = 3",
        "[host.\"http://a\"]\nca = 3",
        "not toml",
    ] {
        assert!(hosts_toml::parse(bad, Path::new("/")).is_err(), "{bad}");
    }
}

#[test]
fn default_host_without_configuration() {
    let hosts = resolve(None, "registry.example.com", "registry.example.com").unwrap();
    assert_eq!(hosts.len(), 1);
    assert_eq!(hosts[0].origin(), "https://registry.example.com");
    assert_eq!(hosts[0].path, "/v2");
    assert!(hosts[0].can_resolve());
    assert_eq!(hosts[0].skip_verify, None);

    let hub = resolve(None, "docker.io", "registry-1.docker.io").unwrap();
    assert_eq!(hub[0].origin(), "https://registry-1.docker.io");
    assert!(!hub[0].is_mirror("docker.io"));

    // containerd: loopback registries are plain HTTP (TLS only on 443 or no port), unverified.
    let local = resolve(None, "127.0.0.1:5000", "127.0.0.1:5000").unwrap();
    assert_eq!(local[0].origin(), "http://127.0.0.1:5000");
    assert_eq!(local[0].skip_verify, Some(true));
    let local = resolve(None, "localhost", "localhost").unwrap();
    assert_eq!(local[0].origin(), "https://localhost");
    assert!(is_localhost("[::1]:5000"));
    assert!(!is_localhost("registry.example.com:5000"));
}

#[test]
fn host_directory_lookup_order() {
    let root = Path::new("/certs.d");
    assert_eq!(
        candidate_dirs(root, "host:5000"),
        [
            root.join("host_5000_"),
            root.join("host:5000"),
            root.join("_default")
        ]
    );
    assert_eq!(
        candidate_dirs(root, "docker.io"),
        [root.join("docker.io"), root.join("_default")]
    );

    let dir = tempfile::tempdir().unwrap();
    let write = |sub: &str, server: &str| {
        std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        std::fs::write(
            dir.path().join(sub).join("hosts.toml"),
            format!("server = \"{server}\""),
        )
        .unwrap();
    };
    write("_default", "https://default.example.com");
    write("host:5000", "https://colon.example.com");
    let origin = |domain: &str| resolve(Some(dir.path()), domain, domain).unwrap()[0].origin();
    assert_eq!(origin("host:5000"), "https://colon.example.com");
    assert_eq!(origin("other.example.com"), "https://default.example.com");
    write("host_5000_", "https://underscore.example.com");
    assert_eq!(origin("host:5000"), "https://underscore.example.com");
}

#[test]
fn directory_without_hosts_toml_uses_its_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("registry.example.com");
    std::fs::create_dir_all(&d).unwrap();
    for f in ["b.crt", "a.crt", "client.cert", "client.key", "notes.txt"] {
        std::fs::write(d.join(f), "").unwrap();
    }
    let hosts = resolve(
        Some(dir.path()),
        "registry.example.com",
        "registry.example.com",
    )
    .unwrap();
    assert_eq!(hosts.len(), 1);
    assert_eq!(hosts[0].origin(), "https://registry.example.com");
    assert_eq!(hosts[0].ca, [d.join("a.crt"), d.join("b.crt")]);
    assert_eq!(
        hosts[0].client,
        [(d.join("client.cert"), Some(d.join("client.key")))]
    );

    // A hosts.toml containerd cannot parse is ignored the same way.
    std::fs::write(d.join("hosts.toml"), "capabilities = [\"fly\"]").unwrap();
    let hosts = resolve(
        Some(dir.path()),
        "registry.example.com",
        "registry.example.com",
    )
    .unwrap();
    assert_eq!(hosts.len(), 1);
    assert_eq!(hosts[0].ca.len(), 2);
}

#[test]
fn manifest_urls_mark_mirrors_with_ns() {
    let mirror = RegistryHost {
        scheme: "https".into(),
        authority: "mirror.local:5000".into(),
        path: "/v2".into(),
        ..RegistryHost::default()
    };
    let url = mirror
        .manifest_url("registry.example.com", "team/app", "1.0")
        .unwrap();
    assert_eq!(
        url.as_str(),
        "https://mirror.local:5000/v2/team/app/manifests/1.0?ns=registry.example.com"
    );
    let upstream = RegistryHost {
        authority: "registry-1.docker.io".into(),
        ..mirror.clone()
    };
    let url = upstream
        .manifest_url("docker.io", "library/nginx", "latest")
        .unwrap();
    assert_eq!(
        url.as_str(),
        "https://registry-1.docker.io/v2/library/nginx/manifests/latest"
    );
    let overridden = RegistryHost {
        path: "/custom/api".into(),
        ..mirror
    };
    let url = overridden
        .manifest_url("mirror.local:5000", "app", DIGEST)
        .unwrap();
    assert_eq!(
        url.as_str(),
        format!(
            "https://mirror.local:5000/custom/api/app/manifests/{}",
            DIGEST
        )
    );
}

#[test]
fn go_durations() {
    let d = hosts_toml::parse_go_duration;
    assert_eq!(d("30s"), Some(Duration::from_secs(30)));
    assert_eq!(d("1m30s"), Some(Duration::from_secs(90)));
    assert_eq!(d("500ms"), Some(Duration::from_millis(500)));
    assert_eq!(d("1.5h"), Some(Duration::from_secs(5400)));
    assert_eq!(d("0"), Some(Duration::ZERO));
    for bad in ["", "10", "s", "5 s", "-1s", "1d"] {
        assert_eq!(d(bad), None, "{bad}");
    }
}
