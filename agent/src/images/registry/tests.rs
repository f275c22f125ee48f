// Test helpers (the server, fixtures) panic on setup failure like the tests themselves.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use super::manifest::*;
use super::token::parse_challenges;
use super::*;

mod ranged_reads;

// ---------------------------------------------------------------------------------------------
// A tiny HTTP/1.1 server on 127.0.0.1: one request per connection, answered by a closure.

/// A request the test server received.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: String,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or_default()
    }

    fn query(&self) -> &str {
        self.target.split_once('?').map_or("", |(_, q)| q)
    }
}

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn status(status: u16) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    fn body(status: u16, content_type: &str, body: &[u8]) -> Reply {
        Reply::status(status)
            .with("Content-Type", content_type)
            .with_body(body)
    }

    fn with(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    fn with_body(mut self, body: &[u8]) -> Reply {
        self.body = body.to_vec();
        self
    }
}

type Handler = Arc<dyn Fn(&Seen) -> Reply + Send + Sync>;

struct Server {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Server {
    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

async fn serve(handler: impl Fn(&Seen) -> Reply + Send + Sync + 'static) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let handler: Handler = Arc::new(handler);
    let log = seen.clone();
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (handler, log) = (handler.clone(), log.clone());
            tokio::spawn(async move {
                let _ = answer(stream, handler, log).await;
            });
        }
    });
    Server { addr, seen, task }
}

async fn answer(
    stream: TcpStream,
    handler: Handler,
    log: Arc<Mutex<Vec<Seen>>>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).await?;
    let mut words = line.split_whitespace();
    let method = words.next().unwrap_or_default().to_owned();
    let target = words.next().unwrap_or_default().to_owned();
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).await?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.push((k.trim().to_owned(), v.trim().to_owned()));
        }
    }
    let mut seen = Seen {
        method,
        target,
        headers,
        body: String::new(),
    };
    let len: usize = seen
        .header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    reader.read_exact(&mut body).await?;
    seen.body = String::from_utf8_lossy(&body).into_owned();
    log.lock().unwrap().push(seen.clone());
    let reply = handler(&seen);
    let mut head = format!(
        "HTTP/1.1 {} X\r\nContent-Length: {}\r\nConnection: close\r\n",
        reply.status,
        reply.body.len()
    );
    for (k, v) in &reply.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let mut stream = reader.into_inner();
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(&reply.body).await?;
    stream.shutdown().await
}

/// An address nothing listens on.
async fn dead_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

// ---------------------------------------------------------------------------------------------
// Fixtures.

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
        .map(|(i, size)| {
            serde_json::json!({
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": blob_digest(i as u8 + 1),
                "size": size,
            })
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": blob_digest(0),
            "size": 7,
        },
        "layers": layers,
    }))
    .unwrap()
}

fn index_body(entries: &[(&str, &str, Option<&str>, &[u8])]) -> Vec<u8> {
    let manifests: Vec<_> = entries
        .iter()
        .map(|(os, arch, variant, body)| {
            let mut platform = serde_json::json!({"os": os, "architecture": arch});
            if let Some(v) = variant {
                platform["variant"] = serde_json::json!(v);
            }
            serde_json::json!({
                "mediaType": OCI_MANIFEST,
                "digest": sha(body),
                "size": body.len(),
                "platform": platform,
            })
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": manifests,
    }))
    .unwrap()
}

fn image(s: &str) -> ImageRef {
    ImageRef::parse(s).unwrap()
}

fn client(hosts_dir: Option<&Path>) -> RegistryClient {
    RegistryClient::new(hosts_dir.map(Path::to_path_buf), Duration::from_secs(5))
}

/// A hosts directory with one `hosts.toml` for `domain`.
fn hosts_dir(domain: &str, toml: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join(domain)).unwrap();
    std::fs::write(dir.path().join(domain).join("hosts.toml"), toml).unwrap();
    dir
}

fn auth(username: &str, password: &str) -> RegistryAuth {
    RegistryAuth {
        username: username.to_owned(),
        password: password.to_owned(),
        ..RegistryAuth::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Pure parsing.

#[test]
fn challenges_parse() {
    let c = parse_challenges(
        r#"Bearer realm="https://auth.example.com/token",service="registry.example.com",scope="repository:a/b:pull,push""#,
    );
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].scheme, "bearer");
    assert_eq!(c[0].param("realm"), Some("https://auth.example.com/token"));
    assert_eq!(c[0].param("service"), Some("registry.example.com"));
    assert_eq!(c[0].param("scope"), Some("repository:a/b:pull,push"));

    let c = parse_challenges(r#"Basic realm="x \"y\"", Bearer realm=https://a/t, scope=s"#);
    assert_eq!(c.len(), 2);
    assert_eq!(c[0].scheme, "basic");
    assert_eq!(c[0].param("realm"), Some("x \"y\""));
    assert_eq!(c[1].param("realm"), Some("https://a/t"));
    assert_eq!(c[1].param("scope"), Some("s"));
    assert!(parse_challenges("").is_empty());
}

#[test]
fn sizes_add_up() {
    let m = ImageManifest {
        digest: blob_digest(9),
        config: Blob {
            digest: blob_digest(0),
            size: 7,
            media_type: "c".into(),
        },
        layers: vec![
            Blob {
                digest: blob_digest(1),
                size: 10,
                media_type: "l".into(),
            },
            Blob {
                digest: blob_digest(2),
                size: 20,
                media_type: "l".into(),
            },
        ],
    };
    assert_eq!(m.compressed_size(), 37);
    let digests: Vec<_> = m.blobs().into_iter().map(|b| b.digest).collect();
    assert_eq!(digests, [blob_digest(0), blob_digest(1), blob_digest(2)]);
}

// ---------------------------------------------------------------------------------------------
// Against a test registry.

/// A registry serving `body` at `path` (content type `ct`) and 404 elsewhere.
async fn registry(path: &'static str, ct: &'static str, body: Vec<u8>) -> Server {
    serve(move |req| {
        if req.path() == path {
            Reply::body(200, ct, &body)
        } else {
            Reply::status(404)
        }
    })
    .await
}

#[tokio::test]
async fn plain_manifest() {
    let body = manifest_body(DOCKER_MANIFEST, &[100, 200]);
    let server = registry("/v2/team/app/manifests/1.0", DOCKER_MANIFEST, body.clone()).await;
    let img = image(&format!("{}/team/app:1.0", server.addr));
    let m = client(None).manifest(&img, None).await.unwrap();
    assert_eq!(m.digest, sha(&body));
    assert_eq!(m.compressed_size(), 307);
    assert_eq!(m.config.digest, blob_digest(0));
    assert_eq!(m.layers[1].size, 200);
    assert_eq!(
        m.layers[1].media_type,
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
    let seen = server.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].method, "GET");
    assert_eq!(seen[0].query(), "", "the registry itself gets no ns");
    let accept = seen[0].header("accept").unwrap();
    for t in [OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST] {
        assert!(accept.contains(t), "{accept}");
    }
    assert!(seen[0].header("authorization").is_none());
}

#[tokio::test]
async fn digest_reference_is_verified() {
    let body = manifest_body(OCI_MANIFEST, &[1]);
    let digest = sha(&body);
    let path: &'static str = format!("/v2/app/manifests/{digest}").leak();
    let server = registry(path, OCI_MANIFEST, body).await;
    let img = image(&format!("{}/app@{digest}", server.addr));
    let m = client(None).manifest(&img, None).await.unwrap();
    assert_eq!(m.digest, digest);

    let tampered = manifest_body(OCI_MANIFEST, &[2]);
    let server = registry(path, OCI_MANIFEST, tampered).await;
    let img = image(&format!("{}/app@{digest}", server.addr));
    let err = client(None).manifest(&img, None).await.unwrap_err();
    assert!(
        matches!(&err, Error::Registry(m) if m.contains("mismatch")),
        "{err}"
    );
}

#[tokio::test]
async fn index_resolves_to_this_platform() {
    let host = Platform::host();
    let ours = manifest_body(OCI_MANIFEST, &[1000]);
    let other = manifest_body(OCI_MANIFEST, &[5]);
    let other_arch = if host.architecture == "s390x" {
        "amd64"
    } else {
        "s390x"
    };
    let index = index_body(&[
        ("linux", other_arch, None, &other),
        ("linux", &host.architecture, None, &ours),
    ]);
    let ours_path = format!("/v2/app/manifests/{}", sha(&ours));
    let (i, o) = (index.clone(), ours.clone());
    let server = serve(move |req| match req.path() {
        "/v2/app/manifests/latest" => Reply::body(200, OCI_INDEX, &i),
        p if p == ours_path => Reply::body(200, OCI_MANIFEST, &o),
        _ => Reply::status(404),
    })
    .await;
    let img = image(&format!("{}/app", server.addr));
    let m = client(None).manifest(&img, None).await.unwrap();
    assert_eq!(
        m.digest,
        sha(&ours),
        "the platform manifest's digest, not the index's"
    );
    assert_eq!(m.layers[0].size, 1000);
    let paths: Vec<_> = server.seen().iter().map(|s| s.path().to_owned()).collect();
    assert_eq!(
        paths,
        [
            "/v2/app/manifests/latest".to_owned(),
            format!("/v2/app/manifests/{}", sha(&ours))
        ]
    );
}

#[tokio::test]
async fn index_without_this_platform_is_not_found() {
    let other = manifest_body(OCI_MANIFEST, &[5]);
    let index = index_body(&[("windows", "amd64", None, &other)]);
    let server = registry("/v2/app/manifests/1", DOCKER_LIST, index).await;
    let img = image(&format!("{}/app:1", server.addr));
    let err = client(None).manifest(&img, None).await.unwrap_err();
    assert!(
        matches!(&err, Error::NotFound { reason, .. } if reason.contains("linux/")),
        "{err}"
    );
}

/// A registry demanding a bearer token from its own `/token` endpoint; `token_ok` judges the
/// token request.
async fn token_registry(
    body: Vec<u8>,
    token_ok: impl Fn(&Seen) -> bool + Send + Sync + 'static,
) -> Server {
    serve(move |req| match req.path() {
        "/token" if token_ok(req) => Reply::body(200, "application/json", br#"{"access_token":"tok"}"#),
        "/token" => Reply::status(401),
        "/v2/team/app/manifests/1" if req.header("authorization") == Some("Bearer tok") => {
            Reply::body(200, OCI_MANIFEST, &body)
        }
        "/v2/team/app/manifests/1" => {
            let host = req.header("host").unwrap_or_default();
            let challenge = format!(
                r#"Bearer realm="http://{host}/token",service="test-registry",scope="repository:team/app:pull""#
            );
            Reply::status(401).with("WWW-Authenticate", &challenge)
        }
        _ => Reply::status(404),
    })
    .await
}

#[tokio::test]
async fn bearer_token_flow_with_basic_credentials() {
    let body = manifest_body(OCI_MANIFEST, &[1]);
    let server = token_registry(body.clone(), |req| {
        req.header("authorization") == Some(&token::basic_header("user", "secret"))
    })
    .await;
    let img = image(&format!("{}/team/app:1", server.addr));
    let m = client(None)
        .manifest(&img, Some(&auth("user", "secret")))
        .await
        .unwrap();
    assert_eq!(m.digest, sha(&body));
    let seen = server.seen();
    assert_eq!(seen.len(), 3, "challenge, token, retry");
    assert_eq!(seen[1].path(), "/token");
    assert_eq!(
        seen[1].query(),
        "service=test-registry&scope=repository%3Ateam%2Fapp%3Apull"
    );
    assert_eq!(seen[2].header("authorization"), Some("Bearer tok"));
}

#[tokio::test]
async fn anonymous_bearer_token() {
    let body = manifest_body(OCI_MANIFEST, &[1]);
    let server = token_registry(body, |req| req.header("authorization").is_none()).await;
    let img = image(&format!("{}/team/app:1", server.addr));
    assert!(client(None).manifest(&img, None).await.is_ok());
}

#[tokio::test]
async fn identity_token_is_a_refresh_token() {
    let body = manifest_body(OCI_MANIFEST, &[1]);
    let server = token_registry(body, |req| {
        req.method == "POST"
            && req.body.contains("grant_type=refresh_token")
            && req.body.contains("refresh_token=refresh-me")
            && req.body.contains("service=test-registry")
    })
    .await;
    let img = image(&format!("{}/team/app:1", server.addr));
    let creds = RegistryAuth {
        identity_token: "refresh-me".into(),
        ..RegistryAuth::default()
    };
    client(None).manifest(&img, Some(&creds)).await.unwrap();
}

#[tokio::test]
async fn registry_token_is_sent_as_bearer() {
    let body = manifest_body(OCI_MANIFEST, &[1]);
    let server = token_registry(body, |_| false).await;
    let img = image(&format!("{}/team/app:1", server.addr));
    let creds = RegistryAuth {
        registry_token: "tok".into(),
        ..RegistryAuth::default()
    };
    client(None).manifest(&img, Some(&creds)).await.unwrap();
    assert_eq!(server.seen().len(), 1, "no challenge needed");
}

#[tokio::test]
async fn basic_challenge() {
    let body = manifest_body(OCI_MANIFEST, &[1]);
    let expected = token::basic_header("user", "pw");
    let b = body.clone();
    let server = serve(move |req| {
        if req.header("authorization") == Some(expected.as_str()) {
            Reply::body(200, OCI_MANIFEST, &b)
        } else {
            Reply::status(401).with("WWW-Authenticate", r#"Basic realm="registry""#)
        }
    })
    .await;
    let img = image(&format!("{}/app:1", server.addr));
    client(None)
        .manifest(&img, Some(&auth("user", "pw")))
        .await
        .unwrap();
    let err = client(None).manifest(&img, None).await.unwrap_err();
    assert!(matches!(err, Error::Unauthorized { .. }), "{err}");
}

#[tokio::test]
async fn rejected_credentials_are_unauthorized() {
    // The token server hands out a token the registry then refuses.
    let server = serve(|req| match req.path() {
        "/token" => Reply::body(200, "application/json", br#"{"token":"bad"}"#),
        _ => {
            let host = req.header("host").unwrap_or_default();
            Reply::status(401).with(
                "WWW-Authenticate",
                &format!(r#"Bearer realm="http://{host}/token""#),
            )
        }
    })
    .await;
    let img = image(&format!("{}/team/app:1", server.addr));
    let err = client(None)
        .manifest(&img, Some(&auth("user", "wrong")))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unauthorized { .. }), "{err}");
    assert_eq!(err.metric_label(), "unauthorized");
    assert_eq!(server.seen().len(), 3, "one challenge answered, no loop");

    // The token server refuses the credentials.
    let body = manifest_body(OCI_MANIFEST, &[1]);
    let server = token_registry(body, |_| false).await;
    let img = image(&format!("{}/team/app:1", server.addr));
    let err = client(None)
        .manifest(&img, Some(&auth("user", "wrong")))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unauthorized { .. }), "{err}");

    let server = serve(|_| Reply::status(403)).await;
    let img = image(&format!("{}/team/app:1", server.addr));
    let err = client(None).manifest(&img, None).await.unwrap_err();
    assert!(matches!(err, Error::Unauthorized { .. }), "{err}");
}

#[tokio::test]
async fn missing_image_is_not_found() {
    let server = serve(|_| {
        Reply::body(
            404,
            "application/json",
            br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#,
        )
    })
    .await;
    let img = image(&format!("{}/team/app:nope", server.addr));
    let err = client(None).manifest(&img, None).await.unwrap_err();
    assert!(
        matches!(&err, Error::NotFound { reason, .. } if reason.contains("manifest_unknown")),
        "{err}"
    );
    assert!(!err.is_transient());
}

#[tokio::test]
async fn unreachable_host_falls_back_to_the_next() {
    let body = manifest_body(OCI_MANIFEST, &[1]);
    let good = registry("/v2/team/app/manifests/1", OCI_MANIFEST, body.clone()).await;
    let dead = dead_addr().await;
    let dir = hosts_dir(
        "registry.coldstart.test",
        &format!(
            "[host.\"http://{dead}\"]\n[host.\"http://{}\"]\n",
            good.addr
        ),
    );
    let img = image("registry.coldstart.test/team/app:1");
    let m = client(Some(dir.path())).manifest(&img, None).await.unwrap();
    assert_eq!(m.digest, sha(&body));
    assert_eq!(good.seen().len(), 1);

    // Nothing reachable: unreachable, transient. The default host (registry.coldstart.test,
    // resolving nowhere) is tried last and fails too.
    let dir = hosts_dir(
        "registry.coldstart.test",
        &format!("server = \"http://{dead}\"\n"),
    );
    let err = client(Some(dir.path()))
        .manifest(&img, None)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::RegistryUnreachable { .. }), "{err}");
    assert!(err.is_transient());
}

#[tokio::test]
async fn server_errors_and_mirror_misses_fall_back() {
    let body = manifest_body(OCI_MANIFEST, &[1]);
    let good = registry("/v2/team/app/manifests/1", OCI_MANIFEST, body).await;
    let failing = serve(|_| Reply::status(503)).await;
    let missing = serve(|_| Reply::status(404)).await;
    let dir = hosts_dir(
        "registry.coldstart.test",
        &format!(
            "server = \"{}\"\n[host.\"{}\"]\n[host.\"{}\"]\n",
            good.url(),
            failing.url(),
            missing.url()
        ),
    );
    let img = image("registry.coldstart.test/team/app:1");
    client(Some(dir.path())).manifest(&img, None).await.unwrap();
    assert_eq!(failing.seen().len(), 1);
    assert_eq!(missing.seen().len(), 1);

    // Only failures: the first that is not a 404 is reported.
    let dir = hosts_dir(
        "registry.coldstart.test",
        &format!(
            "server = \"{}\"\n[host.\"{}\"]\n",
            failing.url(),
            missing.url()
        ),
    );
    let err = client(Some(dir.path()))
        .manifest(&img, None)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::RegistryUnreachable { .. }), "{err}");
}

#[tokio::test]
async fn mirrors_get_ns_and_no_credentials() {
    let body = manifest_body(OCI_MANIFEST, &[1]);
    let mirror = registry("/v2/team/app/manifests/1", OCI_MANIFEST, body).await;
    let dir = hosts_dir(
        "registry.coldstart.test",
        &format!("server = \"{}\"\n", mirror.url()),
    );
    let img = image("registry.coldstart.test/team/app:1");
    let creds = RegistryAuth {
        registry_token: "secret".into(),
        ..auth("user", "pw")
    };
    client(Some(dir.path()))
        .manifest(&img, Some(&creds))
        .await
        .unwrap();
    let seen = mirror.seen();
    assert_eq!(seen[0].query(), "ns=registry.coldstart.test");
    assert!(seen[0].header("authorization").is_none());
}

#[tokio::test]
async fn host_settings_apply() {
    let body = manifest_body(OCI_MANIFEST, &[1]);
    let server = registry("/custom/team/app/manifests/1", OCI_MANIFEST, body).await;
    let never = serve(|_| Reply::status(500)).await;
    let dir = hosts_dir(
        "registry.coldstart.test",
        &format!(
            "[host.\"{}\"]\ncapabilities = [\"pull\"]\n\
             [host.\"{}/custom\"]\noverride_path = true\nheader = {{ x-mirror-key = \"k\" }}\n",
            never.url(),
            server.url()
        ),
    );
    let img = image("registry.coldstart.test/team/app:1");
    client(Some(dir.path())).manifest(&img, None).await.unwrap();
    assert!(never.seen().is_empty(), "a pull-only host never resolves");
    assert_eq!(server.seen()[0].header("x-mirror-key"), Some("k"));
}

#[tokio::test]
async fn oversized_manifest_is_refused() {
    let huge = vec![b' '; MAX_MANIFEST_BYTES + 1];
    let server = registry("/v2/app/manifests/1", OCI_MANIFEST, huge).await;
    let img = image(&format!("{}/app:1", server.addr));
    let err = client(None).manifest(&img, None).await.unwrap_err();
    assert!(
        matches!(&err, Error::Registry(m) if m.contains("exceeds")),
        "{err}"
    );
}

#[tokio::test]
async fn silent_registry_times_out() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    let img = image(&format!("{addr}/app:1"));
    let client = RegistryClient::new(None, Duration::from_millis(300));
    let started = std::time::Instant::now();
    let err = client.manifest(&img, None).await.unwrap_err();
    task.abort();
    assert!(matches!(err, Error::RegistryUnreachable { .. }), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn redirects_are_bounded() {
    let server = serve(|req| {
        let host = req.header("host").unwrap_or_default().to_owned();
        Reply::status(307).with("Location", &format!("http://{host}{}x", req.path()))
    })
    .await;
    let img = image(&format!("{}/app:1", server.addr));
    let err = client(None).manifest(&img, None).await.unwrap_err();
    assert!(matches!(err, Error::Registry(_)), "{err}");
    assert_eq!(server.seen().len(), MAX_REDIRECTS + 1);
}
