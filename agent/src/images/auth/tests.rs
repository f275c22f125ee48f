use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::json;

use super::*;

fn b64(s: &str) -> String {
    STANDARD.encode(s)
}

fn image(s: &str) -> ImageRef {
    ImageRef::parse(s).unwrap_or_else(|e| panic!("{s:?}: {e}"))
}

fn config(v: serde_json::Value) -> DockerConfig {
    DockerConfig::from_json(v.to_string().as_bytes()).unwrap_or_else(|e| panic!("{e}"))
}

/// A config whose every key carries basic auth with the key itself as user name.
fn keyed(keys: &[&str]) -> DockerConfig {
    let auths: serde_json::Map<_, _> = keys
        .iter()
        .map(|k| (k.to_string(), json!({ "username": k, "password": "pw" })))
        .collect();
    config(json!({ "auths": auths }))
}

/// The key whose credentials `lookup` picks for `img`, if any.
fn picked(cfg: &DockerConfig, img: &str) -> Option<String> {
    cfg.lookup(&image(img)).map(|a| a.username)
}

fn cred_error(bytes: &[u8]) -> String {
    match DockerConfig::from_json(bytes) {
        Err(Error::Credentials(msg)) => msg,
        other => panic!("expected a credentials error, got {other:?}"),
    }
}

#[test]
fn matching_rules() {
    // (keys in the file, image, key expected to win)
    let cases: &[(&[&str], &str, Option<&str>)] = &[
        // bare host
        (
            &["registry.example.com"],
            "registry.example.com/a/b",
            Some("registry.example.com"),
        ),
        (&["registry.example.com"], "other.example.com/a", None),
        (&["registry.example.com"], "nginx", None),
        // host:port must match exactly, both ways
        (
            &["localhost:5000"],
            "localhost:5000/app",
            Some("localhost:5000"),
        ),
        (&["localhost:5000"], "localhost/app", None),
        (&["localhost"], "localhost:5000/app", None),
        (
            &["registry.example.com:443"],
            "registry.example.com/app",
            None,
        ),
        (&["[::1]:5000"], "[::1]:5000/app", Some("[::1]:5000")),
        // URLs, with scheme, API version path, and trailing junk
        (
            &["https://registry.example.com"],
            "registry.example.com/a",
            Some("https://registry.example.com"),
        ),
        (
            &["http://registry.example.com/v2/"],
            "registry.example.com/a",
            Some("http://registry.example.com/v2/"),
        ),
        (
            &["HTTPS://Registry.Example.com/"],
            "registry.example.com/a",
            Some("HTTPS://Registry.Example.com/"),
        ),
        (
            &["https://r.example.com/v1"],
            "r.example.com/a",
            Some("https://r.example.com/v1"),
        ),
        (
            &["https://r.example.com?x=1"],
            "r.example.com/a",
            Some("https://r.example.com?x=1"),
        ),
        (
            &["https://user@r.example.com"],
            "r.example.com/a",
            Some("https://user@r.example.com"),
        ),
        // Docker Hub under each of its names
        (
            &["https://index.docker.io/v1/"],
            "nginx",
            Some("https://index.docker.io/v1/"),
        ),
        (&["index.docker.io"], "user/app", Some("index.docker.io")),
        (&["docker.io"], "docker.io/library/nginx", Some("docker.io")),
        (
            &["registry-1.docker.io"],
            "nginx",
            Some("registry-1.docker.io"),
        ),
        (&["https://index.docker.io/v1/"], "quay.io/a/b", None),
        (&["https://index.docker.io/v1/"], "localhost/a", None),
        // the kubelet prefers docker.io over index.docker.io
        (
            &["https://index.docker.io/v1/", "docker.io"],
            "nginx",
            Some("docker.io"),
        ),
        (
            &["registry-1.docker.io", "https://index.docker.io/v1/"],
            "nginx",
            Some("https://index.docker.io/v1/"),
        ),
        // path prefixes, at component boundaries, longest wins
        (
            &["registry.example.com/team"],
            "registry.example.com/team/app",
            Some("registry.example.com/team"),
        ),
        (
            &["registry.example.com/team"],
            "registry.example.com/team",
            Some("registry.example.com/team"),
        ),
        (
            &["registry.example.com/team"],
            "registry.example.com/other/app",
            None,
        ),
        (
            &["registry.example.com/team"],
            "registry.example.com/teammates/app",
            None,
        ),
        (
            &[
                "registry.example.com",
                "registry.example.com/team",
                "registry.example.com/team/sub",
            ],
            "registry.example.com/team/sub/app",
            Some("registry.example.com/team/sub"),
        ),
        (
            &["registry.example.com", "registry.example.com/team/sub"],
            "registry.example.com/team/app",
            Some("registry.example.com"),
        ),
        (
            &["https://registry.example.com/v2/team/"],
            "registry.example.com/team/x",
            Some("https://registry.example.com/v2/team/"),
        ),
        (&["docker.io/myorg"], "myorg/app", Some("docker.io/myorg")),
        (&["docker.io/myorg"], "nginx", None),
        (&["docker.io/library"], "nginx", Some("docker.io/library")),
        // globs, one label per star, exact host preferred
        (
            &["*.example.com"],
            "registry.example.com/a",
            Some("*.example.com"),
        ),
        (&["*.example.com"], "example.com/a", None),
        (&["*.example.com"], "a.b.example.com/a", None),
        (
            &["*.*.example.com"],
            "a.b.example.com/a",
            Some("*.*.example.com"),
        ),
        (
            &["reg-*.example.com"],
            "reg-eu.example.com/a",
            Some("reg-*.example.com"),
        ),
        // `?` starts a URL query, as in the kubelet, so it is no glob
        (&["reg-?.example.com"], "reg-1.example.com/a", None),
        (
            &["*.example.com", "registry.example.com"],
            "registry.example.com/a",
            Some("registry.example.com"),
        ),
        (
            &["*.example.com/team", "registry.example.com"],
            "registry.example.com/team/a",
            Some("*.example.com/team"),
        ),
        (
            &["*.example.com:5000"],
            "r.example.com:5000/a",
            Some("*.example.com:5000"),
        ),
        (&["*.example.com:5000"], "r.example.com/a", None),
        // a host name is case-insensitive
        (
            &["REGISTRY.example.com"],
            "Registry.Example.com/a",
            Some("REGISTRY.example.com"),
        ),
    ];
    for (keys, img, want) in cases {
        let got = picked(&keyed(keys), img);
        // The user name is "<key>", as `keyed` encodes it.
        assert_eq!(got.as_deref(), *want, "keys {keys:?}, image {img:?}");
    }
}

#[test]
fn unusable_keys_are_skipped() {
    let cfg = keyed(&["", "https://", "/path-only", "registry.example.com"]);
    assert_eq!(
        picked(&cfg, "registry.example.com/a").as_deref(),
        Some("registry.example.com")
    );
    assert_eq!(picked(&cfg, "nginx"), None);
}

#[test]
fn auth_field_decodes_and_explicit_fields_win() {
    let cases = [
        (json!({ "auth": b64("user:pass") }), ("user", "pass")),
        // split at the first colon only
        (json!({ "auth": b64("user:pa:ss") }), ("user", "pa:ss")),
        (json!({ "auth": b64("user:") }), ("user", "")),
        // unpadded base64 and surrounding whitespace are tolerated
        (
            json!({ "auth": b64("ab:c").trim_end_matches('=') }),
            ("ab", "c"),
        ),
        (json!({ "auth": format!(" {}\n", b64("u:p")) }), ("u", "p")),
        (json!({ "username": "u", "password": "p" }), ("u", "p")),
        (
            json!({ "auth": b64("a:b"), "username": "u", "password": "p" }),
            ("u", "p"),
        ),
        (json!({ "auth": b64("a:b"), "username": "u" }), ("u", "b")),
        (json!({ "auth": b64("a:b"), "password": "" }), ("a", "b")),
        (
            json!({ "auth": "", "username": "u", "password": "p" }),
            ("u", "p"),
        ),
        (
            json!({ "Username": "u", "PASSWORD": "p", "email": "x@y" }),
            ("u", "p"),
        ),
    ];
    for (entry, (user, pass)) in cases {
        let cfg = config(json!({ "auths": { "r.example.com": entry.clone() } }));
        let auth = cfg.lookup(&image("r.example.com/a"));
        let got = auth.and_then(|a| a.basic());
        assert_eq!(
            got,
            Some((user.to_owned(), pass.to_owned())),
            "entry {entry}"
        );
    }
}

#[test]
fn tokens_are_read() {
    let cfg = config(json!({ "auths": { "r.example.com": {
        "identitytoken": "id-tok", "registrytoken": "reg-tok"
    } } }));
    let auth = cfg.lookup(&image("r.example.com/a")).unwrap_or_default();
    assert_eq!(auth.identity_token, "id-tok");
    assert_eq!(auth.registry_token, "reg-tok");
    assert_eq!(auth.basic(), None);
}

#[test]
fn entries_without_credentials_do_not_shadow_others() {
    let cfg = config(json!({ "auths": {
        "r.example.com/team": { "email": "x@y" },
        "r.example.com": { "auth": b64("u:p") },
    } }));
    let auth = cfg
        .lookup(&image("r.example.com/team/a"))
        .unwrap_or_default();
    assert_eq!(auth.username, "u");
}

#[test]
fn legacy_dockercfg_shape() {
    let cfg = config(json!({
        "https://index.docker.io/v1/": { "auth": b64("hub:pw"), "email": "a@b" },
        "quay.io": { "username": "q", "password": "pw" },
        // settings a config.json without `auths` may hold
        "credsStore": "desktop",
        "HttpHeaders": { "User-Agent": "x" },
        "credHelpers": { "gcr.io": "gcloud" },
    }));
    assert_eq!(picked(&cfg, "nginx").as_deref(), Some("hub"));
    assert_eq!(picked(&cfg, "quay.io/a/b").as_deref(), Some("q"));
    assert_eq!(picked(&cfg, "gcr.io/a/b"), None);
}

#[test]
fn empty_configs() {
    for text in ["{}", r#"{"auths": {}}"#, r#"{"credsStore": "desktop"}"#] {
        let cfg = DockerConfig::from_json(text.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cfg.lookup(&image("nginx")), None, "{text}");
    }
    assert_eq!(DockerConfig::default().lookup(&image("nginx")), None);
}

#[test]
fn malformed_input_is_rejected_without_echoing_secrets() {
    let secret = "hunter2-s3cret";
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"".to_vec(), "unexpected end of input"),
        (
            format!("{{\"auths\": {{\"r\": {{\"auth\": \"{secret}").into_bytes(),
            "malformed json",
        ),
        (
            format!("{{\"auths\": {{\"r\": {{\"password\": {secret}}}}}}}").into_bytes(),
            "syntax error",
        ),
        (vec![0xff, 0xfe, b'{'], "malformed json"),
        (b"[1, 2]".to_vec(), "top level is not a json object"),
        (
            format!("\"{secret}\"").into_bytes(),
            "top level is not a json object",
        ),
        (
            format!(r#"{{"auths": "{secret}"}}"#).into_bytes(),
            "\"auths\" is not a json object",
        ),
        (
            format!(r#"{{"auths": {{"r": "{secret}"}}}}"#).into_bytes(),
            "entry \"r\" is not a json object",
        ),
        (
            format!(r#"{{"auths": {{"r": {{"password": ["{secret}"]}}}}}}"#).into_bytes(),
            "entry \"r\": field \"password\" is not a string",
        ),
        (
            br#"{"auths": {"r": {"auth": 12345678}}}"#.to_vec(),
            "field \"auth\" is not a string",
        ),
        (
            format!(r#"{{"auths": {{"r": {{"auth": "{secret}!"}}}}}}"#).into_bytes(),
            "field \"auth\" is not valid base64",
        ),
        (
            format!(r#"{{"auths": {{"r": {{"auth": "{}"}}}}}}"#, b64(secret)).into_bytes(),
            "must be base64 of username:password",
        ),
        (
            format!(
                r#"{{"auths": {{"r": {{"auth": "{}"}}}}}}"#,
                STANDARD.encode([0xff, b':', 0xfe])
            )
            .into_bytes(),
            "does not decode to utf-8",
        ),
        (
            format!(r#"{{"r": {{"identitytoken": {{"t": "{secret}"}}}}}}"#).into_bytes(),
            "field \"identitytoken\" is not a string",
        ),
    ];
    for (bytes, want) in &cases {
        let msg = cred_error(bytes);
        assert!(msg.contains(want), "{msg:?} lacks {want:?}");
        assert!(
            !msg.contains(secret) && !msg.contains("hunter2"),
            "{msg:?} leaks the secret"
        );
        assert!(!msg.contains("12345678"), "{msg:?} quotes a value");
        assert_eq!(msg, msg.to_lowercase(), "messages are lowercase");
    }
}

#[test]
fn long_keys_are_cut_in_errors() {
    let key = "k".repeat(10_000);
    let msg = cred_error(format!(r#"{{"auths": {{"{key}": 1}}}}"#).as_bytes());
    assert!(msg.len() < 300, "{} bytes", msg.len());
}

#[test]
fn debug_redacts_secrets() {
    let auth = RegistryAuth {
        username: "alice".into(),
        password: "hunter2".into(),
        identity_token: "idtok-secret".into(),
        registry_token: String::new(),
    };
    let shown = format!("{auth:?}");
    assert!(shown.contains("alice"), "{shown}");
    assert!(shown.contains("<redacted>"), "{shown}");
    for secret in ["hunter2", "idtok-secret"] {
        assert!(!shown.contains(secret), "{shown}");
    }
    let cfg = config(json!({ "auths": { "r": { "auth": b64("bob:hunter2") } } }));
    let shown = format!("{cfg:?} {:#?}", cfg);
    assert!(!shown.contains("hunter2"), "{shown}");
}

#[test]
fn basic_needs_a_user_name_or_password() {
    assert_eq!(RegistryAuth::default().basic(), None);
    let token_only = RegistryAuth {
        registry_token: "t".into(),
        ..Default::default()
    };
    assert_eq!(token_only.basic(), None);
}

#[test]
fn load_reads_a_file_and_reports_io_errors() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("config.json");
    let body = json!({ "auths": { "r.example.com": { "auth": b64("u:p") } } });
    std::fs::write(&path, body.to_string()).unwrap_or_else(|e| panic!("{e}"));
    let cfg = DockerConfig::load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(picked(&cfg, "r.example.com/a").as_deref(), Some("u"));

    let missing = dir.path().join("absent.json");
    match DockerConfig::load(&missing) {
        Err(Error::Io { op, path, .. }) => {
            assert_eq!(op, "read credentials");
            assert_eq!(path, missing);
        }
        other => panic!("expected an i/o error, got {other:?}"),
    }

    std::fs::write(&path, "{").unwrap_or_else(|e| panic!("{e}"));
    match DockerConfig::load(&path) {
        Err(Error::Credentials(msg)) => assert!(msg.contains("config.json"), "{msg}"),
        other => panic!("expected a credentials error, got {other:?}"),
    }
}

#[test]
fn glob_matcher() {
    let cases = [
        ("*", "", true),
        ("*", "abc", true),
        ("a*c", "abbbc", true),
        ("a*c", "abbb", false),
        ("*b*", "abc", true),
        ("a?c", "abc", false),
        ("a?c", "a?c", true),
        ("**", "x", true),
        ("abc", "abc", true),
        ("abc", "abd", false),
        ("", "", true),
        ("", "a", false),
    ];
    for (pattern, label, want) in cases {
        assert_eq!(glob_match(pattern, label), want, "{pattern:?} vs {label:?}");
    }
    // A hostile pattern stays fast.
    let pattern = "*a".repeat(500);
    let label = "a".repeat(5000) + "b";
    assert!(!glob_match(&pattern, &label));
}
