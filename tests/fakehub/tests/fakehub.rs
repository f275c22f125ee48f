//! The fake Hub over real HTTP: revisions, paged trees, resolve with ranges, the CDN redirect,
//! auth, every fault knob, hostile names, counters.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use coldstart_fakehub::hashing::{git_blob_oid, sha256_hex};
use coldstart_fakehub::{Endpoint, FakeHub, Options};
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, LINK, LOCATION};
use serde_json::Value;

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .unwrap()
}

fn h<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .map(|v| v.to_str().unwrap())
        .unwrap_or_default()
}

/// Deterministic bytes that are not all alike.
fn data(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[2] ^ seed)
        .collect()
}

async fn start() -> FakeHub {
    FakeHub::start(Options::default()).await.unwrap()
}

async fn get_json(url: &str) -> (StatusCode, HeaderMap, Value) {
    let resp = client().get(url).send().await.unwrap();
    let (status, headers) = (resp.status(), resp.headers().clone());
    (status, headers, resp.json().await.unwrap())
}

#[tokio::test]
async fn revisions_resolve_to_commits() {
    let hub = start().await;
    let c1 = hub.add_repo_files(
        "org/m",
        "main",
        vec![("config.json".into(), b"{}".to_vec())],
    );
    let c2 = hub.add_repo_files(
        "org/m",
        "main",
        vec![("config.json".into(), b"{\"a\":1}".to_vec())],
    );
    assert_ne!(c1.id, c2.id);
    hub.set_ref("org/m", "v1", &c1.id).unwrap();
    let single = hub.add_repo_files("gpt2", "main", vec![("x.txt".into(), b"x".to_vec())]);
    let u = hub.url();

    let (status, _, info) = get_json(&format!("{u}/api/models/org/m/revision/main")).await;
    assert_eq!(status, 200);
    assert_eq!(info["id"], "org/m");
    assert_eq!(info["sha"], c2.id.as_str());
    assert_eq!(
        info["siblings"],
        serde_json::json!([{"rfilename": "config.json"}])
    );
    for (rev, want) in [
        (c1.id.as_str(), &c1.id),
        ("v1", &c1.id),
        (c2.id.as_str(), &c2.id),
    ] {
        let (_, _, info) = get_json(&format!("{u}/api/models/org/m/revision/{rev}")).await;
        assert_eq!(info["sha"], want.as_str(), "{rev}");
    }
    let (_, _, info) = get_json(&format!("{u}/api/models/gpt2/revision/main")).await;
    assert_eq!(info["sha"], single.id.as_str());

    let (status, headers, body) = get_json(&format!("{u}/api/models/org/nope/revision/main")).await;
    assert_eq!(
        (status, h(&headers, "x-error-code")),
        (StatusCode::NOT_FOUND, "RepoNotFound")
    );
    assert!(body["error"].is_string());
    let (status, headers, _) = get_json(&format!("{u}/api/models/org/m/revision/nope")).await;
    assert_eq!(
        (status, h(&headers, "x-error-code")),
        (StatusCode::NOT_FOUND, "RevisionNotFound")
    );

    // Resolve by branch and by commit; old commits stay served.
    let r = client()
        .get(format!("{u}/org/m/resolve/v1/config.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(h(r.headers(), "x-repo-commit"), c1.id);
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"{}");
    let r = client()
        .head(format!("{u}/org/m/resolve/main/missing.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        (r.status(), h(r.headers(), "x-error-code")),
        (StatusCode::NOT_FOUND, "EntryNotFound")
    );
    assert_eq!(hub.requests(Endpoint::Revision), 7);
}

#[tokio::test]
async fn tree_is_paged_with_link_headers() {
    let hub = start().await;
    let files: Vec<(String, Vec<u8>)> = (0..7)
        .map(|i| (format!("d{}/sub/f{i}.json", i % 2), vec![b'a' + i as u8]))
        .chain([("model.safetensors".to_string(), data(1000, 1))])
        .collect();
    let c = hub.add_repo_files("org/m", "main", files);
    hub.set_tree_page_size(3);
    let mut url = format!("{}/api/models/org/m/tree/main?recursive=true", hub.url());
    let (mut all, mut pages) = (Vec::new(), 0);
    loop {
        let (status, headers, page) = get_json(&url).await;
        assert_eq!(status, 200);
        pages += 1;
        all.extend(page.as_array().unwrap().clone());
        let Some(link) = headers.get(LINK) else { break };
        let link = link.to_str().unwrap();
        let prefix = format!(
            "<{}/api/models/org/m/tree/main?recursive=true&cursor=",
            hub.url()
        );
        assert!(
            link.starts_with(&prefix) && link.ends_with(">; rel=\"next\""),
            "{link}"
        );
        url = link[1..link.find('>').unwrap()].to_string();
    }
    // 8 files + d0, d0/sub, d1, d1/sub.
    assert_eq!((all.len(), pages), (12, 4));
    let paths: Vec<&str> = all.iter().map(|v| v["path"].as_str().unwrap()).collect();
    assert_eq!(&paths[..3], ["d0", "d0/sub", "d0/sub/f0.json"]);
    let dirs = all.iter().filter(|v| v["type"] == "directory").count();
    assert_eq!(dirs, 4);
    let st = all
        .iter()
        .find(|v| v["path"] == "model.safetensors")
        .unwrap();
    let sha = sha256_hex(&data(1000, 1));
    assert_eq!(st["lfs"]["oid"], sha.as_str());
    assert_eq!(st["lfs"]["size"], 1000);
    assert!(st["lfs"]["pointerSize"].as_u64().unwrap() > 100);
    let f0 = all.iter().find(|v| v["path"] == "d0/sub/f0.json").unwrap();
    assert_eq!(f0["oid"], git_blob_oid(b"a").as_str());
    assert!(f0.get("lfs").is_none());

    // One page when it fits; `recursive=1` works; by commit too; non-recursive lists one level.
    hub.set_tree_page_size(1000);
    let (_, headers, page) = get_json(&format!(
        "{}/api/models/org/m/tree/{}?recursive=1",
        hub.url(),
        c.id
    ))
    .await;
    assert!(headers.get(LINK).is_none());
    assert_eq!(page.as_array().unwrap().len(), 12);
    let (_, _, top) = get_json(&format!("{}/api/models/org/m/tree/main", hub.url())).await;
    assert_eq!(top.as_array().unwrap().len(), 3);
    let (_, _, sub) = get_json(&format!("{}/api/models/org/m/tree/main/d1/sub", hub.url())).await;
    assert_eq!(sub.as_array().unwrap().len(), 3);
    assert_eq!(hub.counters().tree, 7);
}

#[tokio::test]
async fn hostile_names_are_listed_verbatim() {
    let hub = start().await;
    let names = ["../evil", "/abs", "a\\b", "ok/../../x", "./dot"];
    hub.add_repo_files(
        "org/bad",
        "main",
        names
            .iter()
            .map(|n| (n.to_string(), b"x".to_vec()))
            .collect(),
    );
    let (_, _, tree) = get_json(&format!(
        "{}/api/models/org/bad/tree/main?recursive=true",
        hub.url()
    ))
    .await;
    let files: Vec<&str> = tree
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["type"] == "file")
        .map(|v| v["path"].as_str().unwrap())
        .collect();
    for n in names {
        assert!(files.contains(&n), "{n} missing from {files:?}");
    }
    let (_, _, info) = get_json(&format!("{}/api/models/org/bad/revision/main", hub.url())).await;
    let siblings: Vec<&str> = info["siblings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["rfilename"].as_str().unwrap())
        .collect();
    assert!(siblings.contains(&"../evil") && siblings.contains(&"a\\b"));
}

/// A repo on disk: a config, an LFS weight file, a nested tokenizer.
fn disk_repo() -> (tempfile::TempDir, Vec<u8>) {
    let d = tempfile::tempdir().unwrap();
    let weights = data(3 * 1024 * 1024 + 17, 7);
    std::fs::write(
        d.path().join("config.json"),
        b"{\"model_type\":\"llama\"}\n",
    )
    .unwrap();
    std::fs::write(d.path().join("model.safetensors"), &weights).unwrap();
    std::fs::create_dir_all(d.path().join("sub/dir")).unwrap();
    std::fs::write(d.path().join("sub/dir/tok.json"), b"{}").unwrap();
    (d, weights)
}

#[tokio::test]
async fn resolve_serves_headers_and_ranges() {
    let hub = start().await;
    let (dir, weights) = disk_repo();
    let c = hub.add_repo_from_dir("org/m", dir.path(), "main").unwrap();
    let (u, n) = (hub.url(), weights.len() as u64);
    let sha = sha256_hex(&weights);

    let r = client()
        .head(format!("{u}/org/m/resolve/main/config.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let hd = r.headers();
    assert_eq!(
        h(hd, "etag"),
        format!("\"{}\"", git_blob_oid(b"{\"model_type\":\"llama\"}\n"))
    );
    assert_eq!(
        (h(hd, "content-length"), h(hd, "accept-ranges")),
        ("23", "bytes")
    );
    assert_eq!(h(hd, "x-repo-commit"), c.id);
    assert!(hd.get("x-linked-etag").is_none());

    let url = format!("{u}/org/m/resolve/{}/model.safetensors", c.id);
    let r = client().head(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(h(r.headers(), "x-linked-etag"), format!("\"{sha}\""));
    assert_eq!(h(r.headers(), "x-linked-size"), n.to_string());
    assert_eq!(h(r.headers(), "content-length"), n.to_string());

    let r = client()
        .get(&url)
        .header("range", "bytes=10-19")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(h(r.headers(), "content-range"), format!("bytes 10-19/{n}"));
    assert_eq!(r.bytes().await.unwrap().as_ref(), &weights[10..20]);
    let r = client()
        .get(&url)
        .header("range", format!("bytes={}-", n - 5))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.bytes().await.unwrap().as_ref(),
        &weights[weights.len() - 5..]
    );
    let r = client()
        .get(&url)
        .header("range", format!("bytes={n}-"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(h(r.headers(), "content-range"), format!("bytes */{n}"));

    // Eight ranges at once, over several connections, reassembled.
    let part = n.div_ceil(8);
    let tasks: Vec<_> = (0..8u64)
        .map(|i| {
            let (url, c) = (url.clone(), client());
            tokio::spawn(async move {
                let (a, b) = (i * part, ((i + 1) * part).min(n) - 1);
                let r = c
                    .get(&url)
                    .header("range", format!("bytes={a}-{b}"))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 206);
                r.bytes().await.unwrap()
            })
        })
        .collect();
    let mut joined = Vec::new();
    for t in tasks {
        joined.extend_from_slice(&t.await.unwrap());
    }
    assert_eq!(sha256_hex(&joined), sha);
    assert!(hub.max_connections() >= 2, "{:?}", hub.counters());
    assert_eq!(hub.ranges_seen().len(), 11);
    assert!(hub.ranges_seen()[0].range == "bytes=10-19");
    let nested = client()
        .get(format!("{u}/org/m/resolve/main/sub/dir/tok.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(nested.bytes().await.unwrap().as_ref(), b"{}");
    assert!(hub.bytes_served() >= n + 10);
}

#[tokio::test]
async fn lfs_redirects_to_a_cdn_host_that_gets_no_token() {
    let hub = FakeHub::start(Options {
        token: Some("hf_secret".into()),
        redirect_lfs_to: Some(SocketAddr::from(([127, 0, 0, 2], 0))),
        ..Options::default()
    })
    .await
    .unwrap();
    let (dir, weights) = disk_repo();
    hub.add_repo_from_dir("org/m", dir.path(), "main").unwrap();
    let u = hub.url();
    let auth = "Bearer hf_secret";

    let r = client()
        .get(format!("{u}/api/models/org/m/revision/main"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = client()
        .get(format!("{u}/api/models/org/m/revision/main"))
        .header("authorization", "Bearer wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(hub.counters().unauthorized, 2);

    let r = client()
        .head(format!("{u}/org/m/resolve/main/model.safetensors"))
        .header("authorization", auth)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FOUND);
    assert_eq!(h(r.headers(), "x-linked-size"), weights.len().to_string());
    let location = h(r.headers(), LOCATION.as_str()).to_string();
    assert!(location.starts_with(&hub.cdn_url().unwrap()), "{location}");
    assert!(location.starts_with("http://127.0.0.2:"), "{location}");

    // The plain file is served directly.
    let r = client()
        .get(format!("{u}/org/m/resolve/main/config.json"))
        .header("authorization", auth)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // The CDN serves without the token, with ranges, and records what it got.
    let r = client().head(&location).send().await.unwrap();
    assert_eq!(h(r.headers(), "content-length"), weights.len().to_string());
    let body = client()
        .get(&location)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(sha256_hex(&body), sha256_hex(&weights));
    let r = client()
        .get(&location)
        .header("range", "bytes=5-9")
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap().as_ref(), &weights[5..10]);
    assert!(!hub.cdn_saw_auth());
    let c = hub.counters();
    assert_eq!(
        (c.cdn_head, c.cdn_get, c.resolve_head, c.resolve_get),
        (1, 2, 1, 1)
    );

    client()
        .get(&location)
        .header("authorization", auth)
        .send()
        .await
        .unwrap();
    assert!(hub.cdn_saw_auth());

    // Redirects off: LFS files come from the main host.
    hub.set_redirect_lfs(false);
    let r = client()
        .get(format!("{u}/org/m/resolve/main/model.safetensors"))
        .header("authorization", auth)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().len(), weights.len());
}

async fn lfs_hub() -> (FakeHub, String, Vec<u8>) {
    let hub = start().await;
    let weights = data(512 * 1024, 3);
    hub.add_repo_files(
        "org/m",
        "main",
        vec![("model.safetensors".into(), weights.clone())],
    );
    let url = format!("{}/org/m/resolve/main/model.safetensors", hub.url());
    (hub, url, weights)
}

#[tokio::test]
async fn ignore_range_answers_the_whole_body() {
    let (hub, url, weights) = lfs_hub().await;
    hub.set_ignore_range(true);
    let r = client()
        .get(&url)
        .header("range", "bytes=100-199")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("content-range").is_none());
    assert_eq!(r.bytes().await.unwrap().len(), weights.len());
    assert_eq!(hub.ranges_seen()[0].range, "bytes=100-199");
    hub.set_ignore_range(false);
    let r = client()
        .get(&url)
        .header("range", "bytes=100-199")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
}

/// Reads a whole body; `Err` when the connection was cut.
async fn fetch(url: &str) -> Result<Vec<u8>, String> {
    let r = client().get(url).send().await.map_err(|e| e.to_string())?;
    r.bytes()
        .await
        .map(|b| b.to_vec())
        .map_err(|e| e.to_string())
}

#[tokio::test]
async fn truncation_cuts_bodies_and_closes_the_connection() {
    let (hub, url, weights) = lfs_hub().await;
    hub.truncate_next(1000);
    assert!(fetch(&url).await.is_err());
    assert_eq!(fetch(&url).await.unwrap(), weights);
    hub.truncate_every(2, 10);
    let got: Vec<bool> = futures_seq(&url, 4).await;
    assert_eq!(got, [true, false, true, false]);
    hub.truncate_every(0, 0);
    assert!(fetch(&url).await.is_ok());
}

async fn futures_seq(url: &str, n: usize) -> Vec<bool> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(fetch(url).await.is_ok());
    }
    out
}

#[tokio::test]
async fn corruption_flips_one_byte_of_the_next_body() {
    let (hub, url, weights) = lfs_hub().await;
    hub.corrupt_next();
    let bad = fetch(&url).await.unwrap();
    assert_eq!(bad.len(), weights.len());
    let diff: Vec<usize> = (0..bad.len()).filter(|&i| bad[i] != weights[i]).collect();
    assert_eq!(diff, [0]);
    assert_eq!(fetch(&url).await.unwrap(), weights);
}

#[tokio::test]
async fn statuses_are_injected_with_retry_after() {
    let (hub, url, weights) = lfs_hub().await;
    hub.status_next(429, Some(1), 2);
    for _ in 0..2 {
        let r = client().get(&url).send().await.unwrap();
        assert_eq!(
            (r.status().as_u16(), h(r.headers(), "retry-after")),
            (429, "1")
        );
    }
    // The API is not affected by resolve faults.
    hub.status_next(500, None, 1);
    let api = format!("{}/api/models/org/m/revision/main", hub.url());
    assert_eq!(client().get(&api).send().await.unwrap().status(), 200);
    let r = client().head(&url).send().await.unwrap();
    assert_eq!(r.status(), 500);
    assert!(r.headers().get("retry-after").is_none());
    assert_eq!(fetch(&url).await.unwrap(), weights);
    hub.status_next_api(503, Some(2), 1);
    let r = client().get(&api).send().await.unwrap();
    assert_eq!(
        (r.status().as_u16(), h(r.headers(), "retry-after")),
        (503, "2")
    );
    assert_eq!(client().get(&api).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn stalls_hold_the_body_until_released() {
    let (hub, url, weights) = lfs_hub().await;
    hub.stall_next();
    let mut r = client().get(&url).send().await.unwrap();
    let mut got = Vec::new();
    while got.len() < 64 * 1024 {
        got.extend_from_slice(&r.chunk().await.unwrap().unwrap());
    }
    assert_eq!(got.len(), 64 * 1024);
    let stalled = tokio::time::timeout(Duration::from_millis(300), r.chunk()).await;
    assert!(stalled.is_err(), "the body went on");
    assert_eq!(hub.open_connections(), 1);
    hub.release_stalls();
    while let Some(c) = r.chunk().await.unwrap() {
        got.extend_from_slice(&c);
    }
    assert_eq!(got, weights);
}

#[tokio::test]
async fn stalls_end_at_the_timeout() {
    let hub = FakeHub::start(Options {
        stall_timeout: Duration::from_millis(300),
        ..Options::default()
    })
    .await
    .unwrap();
    hub.add_repo_files("o/m", "main", vec![("w.bin".into(), data(1000, 0))]);
    hub.stall_next();
    let t = Instant::now();
    let body = fetch(&format!("{}/o/m/resolve/main/w.bin", hub.url()))
        .await
        .unwrap();
    assert_eq!(body, data(1000, 0));
    assert!(t.elapsed() >= Duration::from_millis(290));
}

#[tokio::test]
async fn rate_limit_paces_bodies() {
    let (hub, url, weights) = lfs_hub().await;
    hub.set_rate_limit_per_connection(Some(2 * 1024 * 1024));
    let t = Instant::now();
    assert_eq!(fetch(&url).await.unwrap(), weights);
    let took = t.elapsed();
    // 512 KiB at 2 MiB/s: 250 ms.
    assert!(took >= Duration::from_millis(240), "{took:?}");
    hub.clear_faults();
    let t = Instant::now();
    fetch(&url).await.unwrap();
    assert!(t.elapsed() < took);
}

#[tokio::test]
async fn only_loopback_addresses_are_served() {
    let err = FakeHub::start(Options {
        addr: SocketAddr::from(([0, 0, 0, 0], 0)),
        ..Options::default()
    })
    .await
    .unwrap_err();
    assert!(err.to_string().contains("loopback"), "{err}");
    let err = FakeHub::start(Options {
        redirect_lfs_to: Some(SocketAddr::from(([10, 1, 2, 3], 0))),
        ..Options::default()
    })
    .await
    .unwrap_err();
    assert!(err.to_string().contains("loopback"), "{err}");
}

#[test]
fn start_blocking_serves_synchronous_callers() {
    let hub = FakeHub::start_blocking(Options::default()).unwrap();
    let c = hub.add_repo_files("o/m", "main", vec![("a.txt".into(), b"hi".to_vec())]);
    let mut s = std::net::TcpStream::connect(hub.addr()).unwrap();
    write!(
        s,
        "GET /api/models/o/m/revision/main HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.contains(&c.id));
    let addr = hub.addr();
    hub.shutdown();
    assert!(std::net::TcpStream::connect(addr).is_err());
}
