//! `crdgen`: writes the CustomResourceDefinitions generated from `coldstart_agent::api` into
//! `deploy/crds/` (or the directory given as the only argument). The output is committed; the
//! root package's `manifests` test fails when it drifts from the types.
//!
//! ```sh
//! cargo run -p coldstart-agent --bin crdgen
//! ```

use std::path::PathBuf;

use anyhow::Context;

fn main() -> anyhow::Result<()> {
    let dir = match std::env::args_os().nth(1) {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/crds"),
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    for file in coldstart_agent::api::crd_files().context("serialise the CRDs")? {
        let path = dir.join(&file.name);
        std::fs::write(&path, &file.yaml).with_context(|| format!("write {}", path.display()))?;
        println!("{}", path.display());
    }
    Ok(())
}
