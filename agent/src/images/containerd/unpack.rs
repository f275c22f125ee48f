//! Whether an image is unpacked: its top layer's chain id exists as a committed snapshot in the
//! snapshotter CRI uses. Computed from the image config's `rootfs.diff_ids`, as containerd does.

use containerd_client::services::v1 as ctd;
use containerd_client::services::v1::snapshots as snap;
use sha2::{Digest, Sha256};
use tonic::Code;

use super::super::Error;
use super::{ContainerdImages, rpc};

/// Image configs are small; a larger one is not an image config.
const MAX_CONFIG_BYTES: usize = 8 << 20;

impl ContainerdImages {
    /// Whether every layer of the image whose config digest is `config_digest` is unpacked.
    pub(super) async fn is_unpacked(
        &self,
        snapshotter: &str,
        config_digest: &str,
    ) -> Result<bool, Error> {
        let config = match self.read_blob(config_digest).await? {
            Some(bytes) => bytes,
            None => return Ok(false),
        };
        let diff_ids = diff_ids(&config)?;
        let Some(top) = chain_ids(&diff_ids).pop() else {
            return Ok(true);
        };
        let mut client = snap::snapshots_client::SnapshotsClient::new(self.channel.clone());
        let stat = client
            .stat(self.ns(snap::StatSnapshotRequest {
                snapshotter: snapshotter.to_string(),
                key: top,
            }))
            .await;
        match stat {
            Ok(_) => Ok(true),
            Err(s) if s.code() == Code::NotFound => Ok(false),
            Err(s) => Err(rpc(&self.cfg.socket, "stat snapshot", s)),
        }
    }

    /// A whole blob from the content store, `None` when absent.
    async fn read_blob(&self, digest: &str) -> Result<Option<Vec<u8>>, Error> {
        let mut client = ctd::content_client::ContentClient::new(self.channel.clone());
        let stream = client
            .read(self.ns(ctd::ReadContentRequest {
                digest: digest.to_string(),
                offset: 0,
                size: 0,
            }))
            .await;
        let mut stream = match stream {
            Ok(s) => s.into_inner(),
            Err(s) if s.code() == Code::NotFound => return Ok(None),
            Err(s) => return Err(rpc(&self.cfg.socket, "read content", s)),
        };
        let mut out = Vec::new();
        loop {
            match stream.message().await {
                Ok(Some(chunk)) => {
                    out.extend_from_slice(&chunk.data);
                    if out.len() > MAX_CONFIG_BYTES {
                        return Err(Error::Runtime {
                            op: "read content",
                            reason: format!("image config {digest} larger than 8 MiB"),
                        });
                    }
                }
                Ok(None) => return Ok(Some(out)),
                Err(s) if s.code() == Code::NotFound => return Ok(None),
                Err(s) => return Err(rpc(&self.cfg.socket, "read content", s)),
            }
        }
    }
}

/// `rootfs.diff_ids` of an image config.
pub(crate) fn diff_ids(config: &[u8]) -> Result<Vec<String>, Error> {
    #[derive(serde::Deserialize)]
    struct Config {
        rootfs: RootFs,
    }
    #[derive(serde::Deserialize)]
    struct RootFs {
        diff_ids: Vec<String>,
    }
    let cfg: Config = serde_json::from_slice(config).map_err(|e| Error::Runtime {
        op: "read image config",
        reason: e.to_string(),
    })?;
    Ok(cfg.rootfs.diff_ids)
}

/// Chain ids as the OCI image spec defines them: `chain(0) = diff(0)`,
/// `chain(n) = sha256(chain(n-1) + " " + diff(n))`.
pub(crate) fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for diff in diff_ids {
        let next = match out.last() {
            None => diff.clone(),
            Some(parent) => {
                let sum = Sha256::digest(format!("{parent} {diff}").as_bytes());
                format!("sha256:{}", hex(&sum))
            }
        };
        out.push(next);
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_ids_follow_the_spec() {
        let a = format!("sha256:{}", "a".repeat(64));
        let b = format!("sha256:{}", "b".repeat(64));
        let ids = chain_ids(&[a.clone(), b.clone()]);
        assert_eq!(ids[0], a);
        let want = hex(&Sha256::digest(format!("{a} {b}").as_bytes()));
        assert_eq!(ids[1], format!("sha256:{want}"));
        assert!(chain_ids(&[]).is_empty());
    }

    #[test]
    fn diff_ids_from_config() {
        let cfg = br#"{"architecture":"amd64","rootfs":{"type":"layers","diff_ids":["sha256:1"]}}"#;
        assert_eq!(diff_ids(cfg).unwrap(), vec!["sha256:1".to_string()]);
        assert!(diff_ids(b"{}").is_err());
    }
}
