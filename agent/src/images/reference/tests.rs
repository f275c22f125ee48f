use super::*;

const SHA: &str = "sha256:7cc4b5aefd1d0cadf8d97d4350462ba51c694ebca145b08d7d41b41acc8db5aa";

fn ok(s: &str) -> ImageRef {
    match ImageRef::parse(s) {
        Ok(r) => r,
        Err(e) => panic!("{s:?} should parse: {e}"),
    }
}

fn reason(s: &str) -> String {
    match ImageRef::parse(s) {
        Ok(r) => panic!("{s:?} should not parse, got {r}"),
        Err(Error::InvalidReference { reason, .. }) => reason,
        Err(e) => panic!("{s:?}: wrong error {e:?}"),
    }
}

#[test]
fn normalises_like_the_kubelet() {
    let d = SHA;
    let cases: &[(&str, &str)] = &[
        ("nginx", "docker.io/library/nginx:latest"),
        ("nginx:1.27", "docker.io/library/nginx:1.27"),
        ("user/app", "docker.io/user/app:latest"),
        ("user/app:v2", "docker.io/user/app:v2"),
        ("docker.io/nginx", "docker.io/library/nginx:latest"),
        ("docker.io/library/nginx", "docker.io/library/nginx:latest"),
        ("index.docker.io/nginx", "docker.io/library/nginx:latest"),
        ("index.docker.io/user/app:1", "docker.io/user/app:1"),
        (
            "registry-1.docker.io/user/app",
            "registry-1.docker.io/user/app:latest",
        ),
        ("localhost/app", "localhost/app:latest"),
        ("localhost:5000/a/b", "localhost:5000/a/b:latest"),
        ("localhost:5000/a/b:tag", "localhost:5000/a/b:tag"),
        ("example.com/app", "example.com/app:latest"),
        ("example:5000/app", "example:5000/app:latest"),
        ("127.0.0.1:5000/a", "127.0.0.1:5000/a:latest"),
        ("[::1]/a", "[::1]/a:latest"),
        ("[::1]:5000/a:t", "[::1]:5000/a:t"),
        ("[2001:db8::1]:443/ns/a", "[2001:db8::1]:443/ns/a:latest"),
        (
            "Registry.Example.COM/app",
            "Registry.Example.COM/app:latest",
        ),
        ("MyHost/app", "MyHost/app:latest"),
        (
            "nvcr.io/nvidia/pytorch:24.05-py3",
            "nvcr.io/nvidia/pytorch:24.05-py3",
        ),
        ("ghcr.io/a/b/c/d:v1.2.3", "ghcr.io/a/b/c/d:v1.2.3"),
        ("a", "docker.io/library/a:latest"),
        ("localhost", "docker.io/library/localhost:latest"),
        ("localhost:5000", "docker.io/library/localhost:5000"),
        ("example.com", "docker.io/library/example.com:latest"),
        ("a__b/c--d/e.f_g", "docker.io/a__b/c--d/e.f_g:latest"),
        ("a---b", "docker.io/library/a---b:latest"),
        ("x:TAG_1.0-rc", "docker.io/library/x:TAG_1.0-rc"),
        ("x:_", "docker.io/library/x:_"),
    ];
    for (input, want) in cases {
        assert_eq!(ok(input).to_string(), *want, "input {input:?}");
    }
    // Digests, with and without a tag (both are kept).
    let cases: &[(String, String)] = &[
        (format!("nginx@{d}"), format!("docker.io/library/nginx@{d}")),
        (
            format!("nginx:1.27@{d}"),
            format!("docker.io/library/nginx:1.27@{d}"),
        ),
        (
            format!("localhost:5000/a@{d}"),
            format!("localhost:5000/a@{d}"),
        ),
    ];
    for (input, want) in cases {
        assert_eq!(ok(input).to_string(), *want, "input {input:?}");
    }
}

#[test]
fn accessors() {
    let r = ok("nginx");
    assert_eq!(r.domain(), "docker.io");
    assert_eq!(r.repository(), "library/nginx");
    assert_eq!(r.tag(), Some("latest"));
    assert_eq!(r.digest(), None);
    assert_eq!(r.name(), "docker.io/library/nginx");
    assert_eq!(r.registry_api_host(), "registry-1.docker.io");
    assert_eq!(r.manifest_reference(), "latest");

    let r = ok(&format!("localhost:5000/team/app:v1@{SHA}"));
    assert_eq!(r.domain(), "localhost:5000");
    assert_eq!(r.repository(), "team/app");
    assert_eq!(r.tag(), Some("v1"));
    assert_eq!(r.digest(), Some(SHA));
    assert_eq!(r.name(), "localhost:5000/team/app");
    assert_eq!(r.registry_api_host(), "localhost:5000");
    assert_eq!(r.manifest_reference(), SHA);

    let r = ok(&format!("quay.io/a/b@{SHA}"));
    assert_eq!(r.tag(), None);
    assert_eq!(r.manifest_reference(), SHA);
}

#[test]
fn other_digest_algorithms() {
    let sha384 = format!("sha384:{}", "a".repeat(96));
    let sha512 = format!("sha512:{}", "0".repeat(128));
    for digest in [sha384, sha512] {
        assert_eq!(ok(&format!("a@{digest}")).digest(), Some(digest.as_str()));
    }
}

#[test]
fn rejects_malformed_input() {
    let hex64 = "a".repeat(64);
    let long_path = format!("a/{}", "b".repeat(254));
    let long_tag = format!("a:{}", "t".repeat(129));
    let cases: Vec<(String, &str)> = vec![
        (String::new(), "empty reference"),
        (hex64.clone(), "hex identifier"),
        ("Nginx".into(), "must be lowercase"),
        ("docker.io/User/app".into(), "must be lowercase"),
        ("user/App".into(), "must be lowercase"),
        ("localhost:5000/A".into(), "must be lowercase"),
        ("nginx:".into(), "invalid tag"),
        ("nginx:-x".into(), "invalid tag"),
        ("nginx:.x".into(), "invalid tag"),
        ("nginx:a:b".into(), "invalid tag"),
        ("nginx:a/b".into(), "invalid registry domain"),
        ("nginx:t@".into(), "invalid digest"),
        ("nginx@".into(), "invalid digest"),
        ("nginx@sha256".into(), "invalid digest"),
        ("nginx@sha256:".into(), "invalid digest"),
        ("nginx@sha256:abc".into(), "invalid digest"),
        (format!("nginx@sha256:{}", "A".repeat(64)), "invalid digest"),
        (format!("nginx@sha256:{}", "a".repeat(63)), "invalid digest"),
        (format!("nginx@sha256:{}", "a".repeat(65)), "invalid digest"),
        (format!("nginx@sha256:{}", "g".repeat(64)), "invalid digest"),
        (
            format!("nginx@md5:{}", "a".repeat(32)),
            "unsupported algorithm",
        ),
        (format!("nginx@1sha:{}", "a".repeat(64)), "invalid digest"),
        (format!("nginx@{SHA}@{SHA}"), "invalid digest"),
        (format!("nginx@{SHA}:tag"), "invalid digest"),
        (long_path, "255"),
        (long_tag, "invalid tag"),
        ("/nginx".into(), "invalid repository name"),
        ("nginx/".into(), "invalid repository name"),
        ("a//b".into(), "invalid repository name"),
        ("-a".into(), "invalid repository name"),
        ("a-".into(), "invalid repository name"),
        ("a..b".into(), "invalid repository name"),
        ("a___b".into(), "invalid repository name"),
        ("a._b".into(), "invalid repository name"),
        ("a b".into(), "invalid repository name"),
        (" nginx".into(), "invalid repository name"),
        ("nginx\n".into(), "invalid repository name"),
        ("ngi\0nx".into(), "invalid repository name"),
        ("caf\u{e9}".into(), "invalid repository name"),
        ("example.com/".into(), "invalid repository name"),
        (
            "example.com".to_owned() + "/a/../b",
            "invalid repository name",
        ),
        ("foo_bar.com/x".into(), "invalid registry domain"),
        ("-a.com/x".into(), "invalid registry domain"),
        ("a..com/x".into(), "invalid registry domain"),
        (".com/x".into(), "invalid registry domain"),
        ("a.com:/x".into(), "invalid registry domain"),
        ("a.com:port/x".into(), "invalid registry domain"),
        ("a.com:1:2/x".into(), "invalid registry domain"),
        ("::1/x".into(), "invalid registry domain"),
        ("[]/x".into(), "invalid repository name"),
        ("[]:5000/x".into(), "invalid registry domain"),
        ("[::1/x".into(), "invalid registry domain"),
        ("[::1]x/y".into(), "invalid registry domain"),
        ("[::1]:/y".into(), "invalid registry domain"),
        ("[fe80::1%eth0]/y".into(), "invalid registry domain"),
        ("https://example.com/x".into(), "invalid registry domain"),
        ("user@example.com/x".into(), "invalid registry domain"),
        ("@sha256:abc".into(), "invalid repository name"),
        (":tag".into(), "invalid repository name"),
    ];
    for (input, want) in &cases {
        let got = reason(input);
        assert!(
            got.contains(want),
            "{input:?}: reason {got:?} lacks {want:?}"
        );
        assert_eq!(got, got.to_lowercase(), "reasons are lowercase");
    }
}

#[test]
fn length_limits_are_inclusive() {
    let path = format!("a/{}", "b".repeat(253));
    assert_eq!(ok(&path).repository().len(), 255);
    let tag = "t".repeat(128);
    assert_eq!(ok(&format!("a:{tag}")).tag(), Some(tag.as_str()));
}

#[test]
fn huge_input_is_rejected_and_not_echoed_whole() {
    let huge = format!("{}!", "a".repeat(1 << 20));
    let err = ImageRef::parse(&huge)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("invalid repository name"), "{err}");
    assert!(err.len() < 1024, "error is {} bytes", err.len());
    // A multi-byte character straddling the cut does not panic.
    let wide = "é".repeat(1000);
    assert!(ImageRef::parse(&wide).is_err());
}

#[test]
fn error_names_the_reference() {
    let err = ImageRef::parse("Bad")
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert_eq!(
        err,
        "invalid image reference \"Bad\": repository name must be lowercase"
    );
}

#[test]
fn from_str_display_and_serde_round_trip() {
    let r: ImageRef = "user/app:v1".parse().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r, ok("docker.io/user/app:v1"));
    assert_eq!(ok(&r.to_string()), r, "display form parses to itself");
    let json = serde_json::to_string(&r).unwrap_or_default();
    assert_eq!(json, "\"docker.io/user/app:v1\"");
    assert!("".parse::<ImageRef>().is_err());
}

#[test]
fn normalised_forms_are_fixed_points() {
    for input in [
        "nginx",
        "index.docker.io/a",
        "[::1]:5000/a/b:c",
        "localhost",
    ] {
        let once = ok(input);
        assert_eq!(ok(&once.to_string()), once, "{input:?}");
    }
    let d = ok(&format!("a:b@{SHA}"));
    assert_eq!(ok(&d.to_string()), d);
}

#[test]
fn equal_references_hash_equal() {
    use std::collections::HashSet;
    let set: HashSet<ImageRef> = [
        "nginx",
        "docker.io/library/nginx:latest",
        "index.docker.io/nginx",
    ]
    .into_iter()
    .map(ok)
    .collect();
    assert_eq!(set.len(), 1);
}
