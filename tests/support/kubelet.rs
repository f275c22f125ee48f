//! A test kubelet endpoint: HTTPS on 127.0.0.1 with a certificate from a test CA, serving only
//! `POST /checkpoint/{ns}/{pod}/{container}?timeout=S` the way the kubelet does
//! (pkg/kubelet/server/server.go `checkpoint`): it checks the bearer token, parses the timeout
//! (one that does not parse is a 404), calls CRI `CheckpointContainer` on the real containerd
//! with a fresh archive path, and answers `{"items":["<path>"]}`; a CRI error is a 500.
//! Every request is recorded so a test can check what was asked.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls;

use super::cri::Cri;

/// One request as the endpoint saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// Method and path with query.
    pub line: String,
    /// The status answered.
    pub status: u16,
}

/// A running test kubelet.
pub struct Kubelet {
    /// `https://127.0.0.1:PORT`.
    pub url: String,
    /// Requests seen.
    pub seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct State {
    token: String,
    socket: PathBuf,
    /// `ns/pod/container` -> container id.
    containers: HashMap<String, String>,
    dir: PathBuf,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Kubelet {
    /// Serves with `cert`/`key` (PEM), accepting `token`, checkpointing through `socket`, writing
    /// archives under `dir`; `containers` maps `ns/pod/container` to a container id.
    pub async fn start(
        cert: &Path,
        key: &Path,
        token: &str,
        socket: &Path,
        containers: HashMap<String, String>,
        dir: &Path,
    ) -> anyhow::Result<Kubelet> {
        let certs = CertificateDer::pem_file_iter(cert)?.collect::<Result<Vec<_>, _>>()?;
        let key = PrivateKeyDer::from_pem_file(key)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(certs, key)?;
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("https://{}", listener.local_addr()?);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let state = Arc::new(State {
            token: token.to_string(),
            socket: socket.to_path_buf(),
            containers,
            dir: dir.to_path_buf(),
            seen: seen.clone(),
        });
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (acceptor, state) = (acceptor.clone(), state.clone());
                tokio::spawn(async move {
                    if let Ok(tls) = acceptor.accept(tcp).await {
                        let _ = serve(tls, &state).await;
                    }
                });
            }
        });
        Ok(Kubelet { url, seen, task })
    }
}

async fn serve<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut s: S,
    st: &State,
) -> anyhow::Result<()> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk)).await??;
        if n == 0 || buf.len() > 64 << 10 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&buf).to_string();
    let mut lines = head.split("\r\n");
    let line = lines.next().unwrap_or("").to_string();
    let auth = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.eq_ignore_ascii_case("authorization"))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_default();
    let (status, body) = answer(&line, &auth, st).await;
    st.seen
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(Seen {
            line: line.clone(),
            status,
        });
    let reply = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(reply.as_bytes()).await?;
    s.shutdown().await?;
    Ok(())
}

async fn answer(line: &str, auth: &str, st: &State) -> (u16, String) {
    if auth != format!("Bearer {}", st.token) {
        return (401, "Unauthorized".into());
    }
    let mut parts = line.split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let ["checkpoint", ns, pod, ctr] = segs.as_slice() else {
        return (404, "404 page not found".into());
    };
    if method != "POST" {
        return (405, "Method Not Allowed".into());
    }
    // As the kubelet: a timeout that does not parse is a 404.
    let timeout = query
        .strip_prefix("timeout=")
        .and_then(|t| t.parse::<u64>().ok());
    let Some(timeout) = timeout.filter(|_| !query.contains('&')) else {
        return (404, "404 page not found".into());
    };
    let key = format!("{ns}/{pod}/{ctr}");
    let Some(id) = st.containers.get(&key) else {
        return (404, format!("container {key} not found"));
    };
    let location = st.dir.join(format!(
        "checkpoint-{pod}_{ns}-{ctr}-{}.tar",
        st.seen.lock().unwrap_or_else(|e| e.into_inner()).len()
    ));
    let mut cri = Cri::connect(&st.socket);
    let _ = timeout; // containerd reads only the gRPC deadline, which Cri sets
    match cri.checkpoint(id, &location).await {
        Ok(()) => (200, format!("{{\"items\":[\"{}\"]}}", location.display())),
        Err(e) => (500, format!("checkpointing of {key} failed ({e:#})")),
    }
}
