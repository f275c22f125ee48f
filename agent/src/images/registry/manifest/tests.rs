// Test setup panics on failure like the tests themselves.
#![allow(clippy::unwrap_used)]

use super::*;

fn sha(body: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(body)))
}

fn blob_digest(n: u8) -> String {
    format!("sha256:{}", format!("{n:02x}").repeat(32))
}

fn manifest_body(media_type: &str, layers: &[u64]) -> Vec<u8> {
    let layers: Vec<_> = layers
        .iter()
        .enumerate()
        .map(|(i, size)| serde_json::json!({"digest": blob_digest(i as u8 + 1), "size": size}))
        .collect();
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": {"digest": blob_digest(0), "size": 7},
        "layers": layers,
    }))
    .unwrap()
}

fn descriptor(os: &str, arch: &str, variant: Option<&str>, n: u8) -> Descriptor {
    Descriptor {
        media_type: OCI_MANIFEST.to_owned(),
        digest: blob_digest(n),
        size: 1,
        platform: Some(DescriptorPlatform {
            architecture: arch.to_owned(),
            os: os.to_owned(),
            variant: variant.map(str::to_owned),
        }),
    }
}

#[test]
fn platform_selection() {
    let platform = |arch: &str| Platform {
        os: "linux".into(),
        architecture: arch.into(),
    };
    let index = [
        descriptor("windows", "amd64", None, 1),
        descriptor("linux", "arm", Some("v7"), 2),
        descriptor("linux", "amd64", Some("v3"), 3),
        descriptor("linux", "amd64", None, 4),
        descriptor("linux", "arm64", Some("v8"), 5),
        descriptor("unknown", "unknown", None, 6),
    ];
    let pick = |arch: &str| select_manifest(&index, &platform(arch)).map(|d| d.digest.clone());
    assert_eq!(
        pick("amd64"),
        Some(blob_digest(4)),
        "variant-less preferred"
    );
    assert_eq!(
        pick("arm64"),
        Some(blob_digest(5)),
        "arm64/v8 is plain arm64"
    );
    assert_eq!(
        pick("arm"),
        Some(blob_digest(2)),
        "a variant when nothing else"
    );
    assert_eq!(pick("s390x"), None);
    let aliases = [descriptor("linux", "x86_64", None, 7)];
    assert_eq!(
        select_manifest(&aliases, &platform("amd64")).map(|d| d.size),
        Some(1)
    );
    let host = Platform::host();
    assert_eq!(host.os, "linux");
    if cfg!(target_arch = "x86_64") {
        assert_eq!(host.architecture, "amd64");
    }
    if cfg!(target_arch = "aarch64") {
        assert_eq!(host.architecture, "arm64");
    }
}

#[test]
fn manifest_kinds() {
    let body = manifest_body(DOCKER_MANIFEST, &[10, 20]);
    let Parsed::Manifest { config, layers } = parse(&body, Some(DOCKER_MANIFEST)).unwrap() else {
        panic!("not a manifest");
    };
    assert_eq!(config.size, 7);
    assert_eq!(layers.len(), 2);
    // No usable content type: the body's mediaType, then the shape decides.
    assert!(matches!(
        parse(&body, Some("application/json")),
        Ok(Parsed::Manifest { .. })
    ));
    let index = br#"{"schemaVersion":2,"manifests":[]}"#;
    assert_eq!(parse(index, None).unwrap(), Parsed::Index(Vec::new()));
    let schema1 = br#"{"schemaVersion":1,"name":"a","fsLayers":[]}"#;
    let err = parse(
        schema1,
        Some("application/vnd.docker.distribution.manifest.v1+prettyjws"),
    );
    assert!(matches!(err, Err(Error::Registry(m)) if m.contains("schema 1")));
    let evil = br#"{"schemaVersion":2,"manifests":[{"digest":"sha256:../../x","size":1}]}"#;
    assert!(matches!(
        parse(evil, Some(OCI_INDEX)),
        Err(Error::Registry(_))
    ));
    assert!(matches!(parse(b"<html>", None), Err(Error::Registry(_))));
}

#[test]
fn digests_and_sizes_are_verified() {
    let body = b"{}";
    assert!(verify(&sha(body), Some(2), body).is_ok());
    assert!(verify(&sha(body), Some(3), body).is_err());
    assert!(verify(&sha(b"other"), None, body).is_err());
    assert!(verify("md5:abc", None, body).is_err());
}
