//! The compatibility key: what a process snapshot depends on, recorded beside it (and on its
//! image as annotations) and compared with the node before a restore. A field that differs
//! refuses the restore by name.
//!
//! Facts (section B, CRIU CUDA plugin): the same GPU type and count are required; the driver,
//! the kernel and CRIU itself shape the images CRIU writes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::archive::ArchiveFacts;
use super::{Error, KEY_ANNOTATION_PREFIX};

/// What a snapshot was taken on. Empty strings mean "not known" (a node without GPUs has an
/// empty product and a count of 0, which is a value).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CompatKey {
    /// The base image's digest (`sha256:...`), from `config.dump`'s `rootfsImageRef`.
    pub image_digest: String,
    /// GPU product name (NVML), empty on a node without GPUs.
    pub gpu_product: String,
    /// Number of GPUs the container had.
    pub gpu_count: u32,
    /// NVIDIA driver version.
    pub driver: String,
    /// Kernel release (`uname -r`).
    pub kernel: String,
    /// CRIU version, from the archive's `dump.log`.
    pub criu: String,
    /// Model commit the process had loaded (empty when none).
    pub model_commit: String,
    /// Runtime handler, from `config.dump`.
    pub runtime: String,
}

/// What the node reports for the fields the archive cannot tell.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeFacts {
    /// GPU product name, empty without GPUs.
    pub gpu_product: String,
    /// GPUs given to the container.
    pub gpu_count: u32,
    /// Driver version, empty without GPUs.
    pub driver: String,
    /// Kernel release.
    pub kernel: String,
    /// Model commit, empty when none.
    pub model_commit: String,
    /// CRIU version on this node, empty when unknown (then it is not compared).
    pub criu: String,
}

impl CompatKey {
    /// The key of a snapshot just validated on a node with `node`'s facts.
    pub fn new(facts: &ArchiveFacts, node: &NodeFacts) -> CompatKey {
        CompatKey {
            image_digest: digest_of(&facts.config.rootfs_image_ref),
            gpu_product: node.gpu_product.clone(),
            gpu_count: node.gpu_count,
            driver: node.driver.clone(),
            kernel: node.kernel.clone(),
            criu: facts.criu_version.clone().unwrap_or_default(),
            model_commit: node.model_commit.clone(),
            runtime: facts.config.runtime.clone(),
        }
    }

    /// This node's key for a restore onto base image `image_digest` with runtime `runtime`.
    pub fn here(node: &NodeFacts, image_digest: &str, runtime: &str) -> CompatKey {
        CompatKey {
            image_digest: digest_of(image_digest),
            gpu_product: node.gpu_product.clone(),
            gpu_count: node.gpu_count,
            driver: node.driver.clone(),
            kernel: node.kernel.clone(),
            criu: node.criu.clone(),
            model_commit: node.model_commit.clone(),
            runtime: runtime.to_string(),
        }
    }

    /// Refuses, naming the first field that differs, when this snapshot does not fit a node
    /// with `node`'s facts running `image_digest` with `runtime`. A CRIU version unknown on
    /// either side is not compared (containerd's PATH is not ours to search).
    pub fn check(&self, here: &CompatKey) -> Result<(), Error> {
        let fields: [(&'static str, String, String); 8] = [
            (
                "image digest",
                self.image_digest.clone(),
                here.image_digest.clone(),
            ),
            (
                "gpu product",
                self.gpu_product.clone(),
                here.gpu_product.clone(),
            ),
            (
                "gpu count",
                self.gpu_count.to_string(),
                here.gpu_count.to_string(),
            ),
            ("driver", self.driver.clone(), here.driver.clone()),
            ("kernel", self.kernel.clone(), here.kernel.clone()),
            ("criu", self.criu.clone(), here.criu.clone()),
            (
                "model commit",
                self.model_commit.clone(),
                here.model_commit.clone(),
            ),
            ("runtime", self.runtime.clone(), here.runtime.clone()),
        ];
        for (field, recorded, node) in fields {
            if field == "criu" && (recorded.is_empty() || node.is_empty()) {
                continue;
            }
            if recorded != node {
                return Err(Error::Mismatch {
                    field,
                    recorded,
                    node,
                });
            }
        }
        Ok(())
    }

    /// The key as image annotations (`dev.coldstart.snapshot.<field>`).
    pub fn annotations(&self) -> BTreeMap<String, String> {
        self.fields()
            .into_iter()
            .map(|(k, v)| (format!("{KEY_ANNOTATION_PREFIX}{k}"), v))
            .collect()
    }

    /// The key's fields by their JSON names (`imageDigest`, `gpuCount`, ...), as strings.
    pub fn fields(&self) -> BTreeMap<String, String> {
        let value = serde_json::to_value(self).unwrap_or_default();
        let mut out = BTreeMap::new();
        if let Some(map) = value.as_object() {
            for (k, v) in map {
                let v = match v {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                out.insert(k.clone(), v);
            }
        }
        out
    }

    /// The key back from [`fields`](Self::fields) (a ColdNode's status); `None` when a field
    /// is missing or does not parse.
    pub fn from_fields(f: &BTreeMap<String, String>) -> Option<CompatKey> {
        let get = |k: &str| f.get(k).cloned();
        Some(CompatKey {
            image_digest: get("imageDigest")?,
            gpu_product: get("gpuProduct")?,
            gpu_count: get("gpuCount")?.parse().ok()?,
            driver: get("driver")?,
            kernel: get("kernel")?,
            criu: get("criu")?,
            model_commit: get("modelCommit")?,
            runtime: get("runtime")?,
        })
    }

    /// The first 16 hex digits of sha256 over the fields (sorted `name=value` lines): the node
    /// label's value and the checkpoint image's tag. Equal keys hash equal on every node.
    pub fn hash(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        for (k, v) in self.fields() {
            h.update(k.as_bytes());
            h.update(b"=");
            h.update(v.as_bytes());
            h.update(b"\n");
        }
        h.finalize()
            .iter()
            .take(8)
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

/// `sha256:...` from `name@sha256:...`; the whole string when it has no `@`.
pub fn digest_of(reference: &str) -> String {
    match reference.rsplit_once('@') {
        Some((_, d)) => d.to_string(),
        None => reference.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> CompatKey {
        CompatKey {
            image_digest: "sha256:aa".into(),
            gpu_product: "NVIDIA H200".into(),
            gpu_count: 1,
            driver: "570.1".into(),
            kernel: "6.1.0".into(),
            criu: "4.2.1".into(),
            model_commit: "abc".into(),
            runtime: "io.containerd.runc.v2".into(),
        }
    }

    #[test]
    fn a_differing_field_is_named() {
        let k = key();
        k.check(&k.clone()).unwrap();
        let mut here = k.clone();
        here.gpu_count = 2;
        let err = k.check(&here).unwrap_err().to_string();
        assert!(
            err.contains("gpu count is \"1\" in the snapshot, \"2\" here"),
            "{err}"
        );
        let mut here = k.clone();
        here.driver = "580.0".into();
        assert!(k.check(&here).unwrap_err().to_string().contains("driver"));
        let mut here = k.clone();
        here.criu = String::new();
        k.check(&here).unwrap();
    }

    #[test]
    fn annotations_carry_every_field() {
        let a = key().annotations();
        assert_eq!(a["dev.coldstart.snapshot.gpuCount"], "1");
        assert_eq!(a["dev.coldstart.snapshot.imageDigest"], "sha256:aa");
        assert_eq!(a.len(), 8);
        let h = key().hash();
        assert_eq!(h.len(), 16);
        assert_eq!(h, key().hash(), "stable");
        let mut other = key();
        other.kernel = "6.2.0".into();
        assert_ne!(other.hash(), h);
        assert_eq!(CompatKey::from_fields(&key().fields()), Some(key()));
        let mut partial = key().fields();
        partial.remove("driver");
        assert_eq!(CompatKey::from_fields(&partial), None);
        assert_eq!(digest_of("127.0.0.1:5000/a/b@sha256:ff"), "sha256:ff");
    }
}
