//! A throw-away certificate authority made with the openssl CLI.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::{require_tool, run_checked};

const OPENSSL_TIMEOUT: Duration = Duration::from_secs(60);

/// A test CA (EC P-256 key, self-signed, valid 10 days).
#[derive(Debug, Clone)]
pub struct Ca {
    cert: PathBuf,
    key: PathBuf,
}

static SERIAL: AtomicU64 = AtomicU64::new(1);

fn openssl(args: &[&str], dir: &Path) {
    let bin = require_tool("openssl");
    if let Err(e) = run_checked(
        Command::new(bin).args(args).current_dir(dir),
        OPENSSL_TIMEOUT,
    ) {
        panic!("openssl failed: {e:#}");
    }
}

fn s(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

impl Ca {
    /// Generates `ca.key` and `ca.crt` in `dir` (created if needed). Panics on failure.
    pub fn generate(dir: &Path) -> Ca {
        if let Err(e) = std::fs::create_dir_all(dir) {
            panic!("mkdir {}: {e}", dir.display());
        }
        let cert = dir.join("ca.crt");
        let key = dir.join("ca.key");
        openssl(
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                &s(&key),
                "-out",
                &s(&cert),
                "-days",
                "10",
                "-subj",
                "/CN=coldstart test CA",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
            dir,
        );
        Ca { cert, key }
    }

    /// The CA certificate (PEM), for hosts.toml `ca = ...` or `--cacert`.
    pub fn cert_path(&self) -> &Path {
        &self.cert
    }

    /// Issues a server certificate into `dir` for `IP:127.0.0.1`, `DNS:localhost` and `names`
    /// (each an IP address or a DNS name). Returns `(cert, key)` paths (PEM). Panics on failure.
    pub fn issue(&self, names: &[&str], dir: &Path) -> (PathBuf, PathBuf) {
        if let Err(e) = std::fs::create_dir_all(dir) {
            panic!("mkdir {}: {e}", dir.display());
        }
        let n = SERIAL.fetch_add(1, Ordering::Relaxed);
        let stem = format!("server-{}-{n}", std::process::id());
        let key = dir.join(format!("{stem}.key"));
        let csr = dir.join(format!("{stem}.csr"));
        let cert = dir.join(format!("{stem}.crt"));
        let ext = dir.join(format!("{stem}.ext"));
        let mut sans = vec!["IP:127.0.0.1".to_string(), "DNS:localhost".to_string()];
        for name in names {
            let san = if name.parse::<std::net::IpAddr>().is_ok() {
                format!("IP:{name}")
            } else {
                format!("DNS:{name}")
            };
            if !sans.contains(&san) {
                sans.push(san);
            }
        }
        let ext_text = format!(
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n\
             extendedKeyUsage=serverAuth\nsubjectAltName={}\n",
            sans.join(",")
        );
        if let Err(e) = std::fs::write(&ext, ext_text) {
            panic!("write {}: {e}", ext.display());
        }
        openssl(
            &[
                "req",
                "-new",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                &s(&key),
                "-out",
                &s(&csr),
                "-subj",
                &format!("/CN={}", names.first().copied().unwrap_or("localhost")),
            ],
            dir,
        );
        openssl(
            &[
                "x509",
                "-req",
                "-in",
                &s(&csr),
                "-CA",
                &s(&self.cert),
                "-CAkey",
                &s(&self.key),
                "-set_serial",
                &format!("{}", 1000 + n),
                "-days",
                "10",
                "-sha256",
                "-extfile",
                &s(&ext),
                "-out",
                &s(&cert),
            ],
            dir,
        );
        (cert, key)
    }
}
