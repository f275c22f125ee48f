//! Local OCI registries (Debian `docker-registry`) on 127.0.0.1.

use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, bail};

use super::tls::Ca;
use super::{file_tail, free_port, kill_child, require_tool, run_checked, wait_for};

/// How long to wait for `/v2/` to answer.
pub const REGISTRY_START_TIMEOUT: Duration = Duration::from_secs(20);

/// A `docker-registry serve config.yml` on 127.0.0.1:<free port>, storing under a temp dir.
/// Killed on drop.
pub struct Registry {
    child: Child,
    tmp: tempfile::TempDir,
    addr: SocketAddr,
    tls: bool,
    ca: Option<PathBuf>,
    creds: Option<(String, String)>,
}

enum Mode<'a> {
    Plain,
    Tls(&'a Ca),
    Htpasswd(&'a str, &'a str),
}

impl Registry {
    /// Plain-HTTP registry, anonymous push and pull.
    pub fn start_plain() -> anyhow::Result<Registry> {
        Self::start(Mode::Plain)
    }

    /// HTTPS registry with a certificate for 127.0.0.1 and localhost signed by `ca`.
    pub fn start_tls(ca: &Ca) -> anyhow::Result<Registry> {
        Self::start(Mode::Tls(ca))
    }

    /// Plain-HTTP registry requiring basic auth (bcrypt htpasswd via `htpasswd -B`).
    pub fn start_with_htpasswd(user: &str, password: &str) -> anyhow::Result<Registry> {
        Self::start(Mode::Htpasswd(user, password))
    }

    fn start(mode: Mode<'_>) -> anyhow::Result<Registry> {
        let bin = require_tool("docker-registry");
        let tmp = tempfile::Builder::new()
            .prefix("coldstart-registry-")
            .tempdir()?;
        let t = tmp.path().to_path_buf();
        let data = t.join("data");
        std::fs::create_dir_all(&data)?;
        let mut extra = String::new();
        let (mut tls, mut ca, mut creds) = (false, None, None);
        match mode {
            Mode::Plain => {}
            Mode::Tls(c) => {
                let (cert, key) = c.issue(&["localhost"], &t.join("tls"));
                extra.push_str(&format!(
                    "  tls:\n    certificate: {}\n    key: {}\n",
                    yaml_str(&cert),
                    yaml_str(&key)
                ));
                tls = true;
                ca = Some(c.cert_path().to_path_buf());
            }
            Mode::Htpasswd(user, password) => {
                let htpasswd = require_tool("htpasswd");
                let file = t.join("htpasswd");
                let out = run_checked(
                    Command::new(htpasswd).args(["-nbB", user, password]),
                    Duration::from_secs(30),
                )?;
                std::fs::write(&file, &out.stdout)?;
                creds = Some((user.to_string(), password.to_string()));
                extra = format!(
                    "auth:\n  htpasswd:\n    realm: coldstart-test\n    path: {}\n",
                    yaml_str(&file)
                );
            }
        }
        // A free port can be taken between probing and binding: retry on "address in use".
        let log_path = t.join("registry.log");
        let mut attempt = 0;
        loop {
            attempt += 1;
            let port = free_port();
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
            let (http_extra, top_extra) = if tls {
                (extra.as_str(), "")
            } else {
                ("", extra.as_str())
            };
            let config = format!(
                "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\n\
                 storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
                 http:\n  addr: {addr}\n  secret: coldstart-test-secret\n{http_extra}{top_extra}",
                yaml_str(&data)
            );
            let config_path = t.join("config.yml");
            std::fs::write(&config_path, config)?;
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log_path)?;
            let mut child = Command::new(&bin)
                .arg("serve")
                .arg(&config_path)
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
                .with_context(|| format!("cannot start {}", bin.display()))?;
            match wait_ready(&mut child, addr, tls, ca.as_deref()) {
                Ok(()) => {
                    return Ok(Registry {
                        child,
                        tmp,
                        addr,
                        tls,
                        ca,
                        creds,
                    });
                }
                Err(e) => {
                    kill_child(&mut child);
                    let log_text = file_tail(&log_path, 4096);
                    if attempt < 5 && log_text.contains("address already in use") {
                        continue;
                    }
                    bail!("{e}; registry log:\n{log_text}");
                }
            }
        }
    }

    /// The listening address (127.0.0.1:port).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `127.0.0.1:port`, the host part for `docker://` references and pushes.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// `http://127.0.0.1:port` or `https://127.0.0.1:port`.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// Whether it serves HTTPS.
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// The CA that signed its certificate (TLS registries only).
    pub fn ca_path(&self) -> Option<&Path> {
        self.ca.as_deref()
    }

    /// The credentials it requires (htpasswd registries only).
    pub fn creds(&self) -> Option<(&str, &str)> {
        self.creds.as_ref().map(|(u, p)| (u.as_str(), p.as_str()))
    }

    /// The storage root (`docker/registry/v2/...` below it).
    pub fn data_dir(&self) -> PathBuf {
        self.tmp.path().join("data")
    }

    /// HTTP status of an anonymous GET of `path` (e.g. `/v2/`); uses curl for TLS.
    pub fn get_status(&self, path: &str) -> anyhow::Result<u16> {
        if self.tls {
            curl_status(&self.url(), path, self.ca.as_deref())
        } else {
            http_status(self.addr, path)
        }
    }

    /// The registry's log.
    pub fn log_tail(&self) -> String {
        file_tail(&self.tmp.path().join("registry.log"), 8 * 1024)
    }
}

fn wait_ready(
    child: &mut Child,
    addr: SocketAddr,
    tls: bool,
    ca: Option<&Path>,
) -> anyhow::Result<()> {
    let url = format!("https://{addr}");
    let res = wait_for(
        &format!("docker-registry on {addr} to answer /v2/"),
        REGISTRY_START_TIMEOUT,
        || {
            if let Ok(Some(st)) = child.try_wait() {
                return Some(Err(anyhow::anyhow!("docker-registry exited: {st}")));
            }
            let code = if tls {
                curl_status(&url, "/v2/", ca).ok()
            } else {
                http_status(addr, "/v2/").ok()
            };
            matches!(code, Some(200) | Some(401)).then_some(Ok(()))
        },
    );
    res.and_then(|r| r)
}

/// Status code of a GET of `base_url` + `path` with curl (trusting `ca` if given).
pub fn curl_status(base_url: &str, path: &str, ca: Option<&Path>) -> anyhow::Result<u16> {
    let curl = require_tool("curl");
    let mut cmd = Command::new(curl);
    cmd.args([
        "-sS",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "--max-time",
        "5",
    ]);
    if let Some(ca) = ca {
        cmd.arg("--cacert").arg(ca);
    }
    cmd.arg(format!("{base_url}{path}"));
    let out = run_checked(&mut cmd, Duration::from_secs(10))?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().parse()?)
}

impl Drop for Registry {
    fn drop(&mut self) {
        kill_child(&mut self.child);
    }
}

fn yaml_str(p: &Path) -> String {
    // Single-quoted YAML scalar: only ' needs escaping (doubled).
    format!("'{}'", p.to_string_lossy().replace('\'', "''"))
}

/// Status code of a plain-HTTP GET (HTTP/1.0, no keep-alive), bounded by 5 s timeouts.
pub fn http_status(addr: SocketAddr, path: &str) -> anyhow::Result<u16> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut buf = [0u8; 64];
    let mut n = 0;
    while n < 12 {
        let k = s.read(&mut buf[n..])?;
        if k == 0 {
            break;
        }
        n += k;
    }
    let head = String::from_utf8_lossy(&buf[..n]);
    let code = head
        .split_whitespace()
        .nth(1)
        .context("no HTTP status line")?
        .parse()?;
    Ok(code)
}
