//! `coldctl snapshot`: process snapshots. `capture` and `support` work on this node by hand
//! (`--here`); `create`, `list`, `delete` and `restore-spec` are the managed policy's verbs
//! ([`managed`]).
//!
//! - `capture NS/POD/CONTAINER --name NAME [--capture-via kubelet|cri] [--image REF]`:
//!   checkpoints the running container (through the kubelet API with a bearer token, or CRI on
//!   this node's containerd), validates the archive while streaming it into the root-only
//!   snapshot directory, removes the archive, and with `--image` imports the checkpoint image
//!   into containerd's `k8s.io`, pinned. A pod naming that image restores from it.
//! - `support`: whether this node's containerd can restore, and why not (exit 1 when not).
//!
//! `-o json|yaml`: capture `{"name", "dir", "containerName", "baseImage", "layerDigest",
//! "layerBytes", "archiveBytes", "checkpointSeconds", "key", "image", "manifestDigest"}`;
//! support `{"containerd", "restoreViaCreate", "criu", "canRestore", "reason"}`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use coldstart_agent::config::{
    DEFAULT_CACHE_ROOT, DEFAULT_CONTAINERD_CONFIG, DEFAULT_CONTAINERD_SOCKET,
};
use coldstart_agent::snapshots::{
    self, CaptureRequest, CaptureVia, Capturer, ContainerdSnapshots, KubeletClient, KubeletConfig,
    Limits, NodeFacts, RuntimeConfig, SnapshotStore, restore_support,
};
use serde_json::json;

use crate::report::{CliError, Output};
use crate::{Backend, Cli};

pub mod managed;

/// Arguments of `coldctl snapshot`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    verb: Verb,
}

#[derive(Debug, clap::Subcommand)]
enum Verb {
    /// Checkpoint a running container on this node into a snapshot (--here).
    Capture(Box<CaptureArgs>),
    /// Whether this node's containerd can restore a checkpoint, and why not (--here).
    Support(NodeArgs),
    /// Ask the model's nodes for a snapshot now (cluster), or take one here (--here --pod).
    Create(Box<managed::CreateArgs>),
    /// The model's snapshots per node: key, size, age, restorable here or why not.
    List(Box<managed::ListArgs>),
    /// Delete a snapshot on this node (--here): image, compile-cache lease, files.
    Delete(Box<managed::DeleteArgs>),
    /// Print the pod patch that restores from the model's snapshot (image + node affinity).
    RestoreSpec(Box<managed::RestoreSpecArgs>),
}

/// This node's containerd.
#[derive(Debug, Clone, clap::Args)]
pub struct NodeArgs {
    /// containerd's socket.
    #[arg(long, env = "COLDSTART_CONTAINERD_SOCKET", default_value = DEFAULT_CONTAINERD_SOCKET)]
    pub containerd_socket: PathBuf,
    /// containerd's config file (read for enable_experimental_restore_via_create).
    #[arg(long, env = "COLDSTART_CONTAINERD_CONFIG", default_value = DEFAULT_CONTAINERD_CONFIG)]
    pub containerd_config: PathBuf,
    /// Directories searched for `criu` (containerd's PATH), `:`-separated.
    #[arg(long, value_name = "PATH", default_value = snapshots::runtime::DEFAULT_CRIU_SEARCH)]
    pub criu_path: String,
    /// The host's root as this process sees it: --criu-path is looked up under it, and a host
    /// CRIU is run through the host's dynamic loader (`/host` inside the agent's pod).
    #[arg(long, value_name = "DIR")]
    pub criu_root: Option<PathBuf>,
    /// containerd's root (the checkpoint layer's blob there is made readable by root only).
    #[arg(long, env = "COLDSTART_CONTAINERD_ROOT", default_value = coldstart_agent::config::DEFAULT_CONTAINERD_ROOT)]
    pub containerd_root: PathBuf,
}

impl NodeArgs {
    pub(crate) fn runtime(&self) -> ContainerdSnapshots {
        let mut cfg = RuntimeConfig::new(self.containerd_socket.clone());
        cfg.config_file = self.containerd_config.clone();
        cfg.criu_search = std::env::split_paths(&self.criu_path).collect();
        cfg.criu_root = self.criu_root.clone();
        cfg.containerd_root = Some(self.containerd_root.clone());
        ContainerdSnapshots::new(cfg)
    }
}

/// Arguments of `coldctl snapshot capture`.
#[derive(Debug, clap::Args)]
pub struct CaptureArgs {
    /// The container: NAMESPACE/POD/CONTAINER.
    #[arg(value_name = "NS/POD/CONTAINER")]
    pub target: String,
    /// The snapshot's name on this node.
    #[arg(long)]
    pub name: String,
    /// How to checkpoint: the kubelet API (needs `nodes/checkpoint`) or CRI on this node's
    /// containerd (needs no API right).
    #[arg(long, default_value = "cri", value_parser = ["kubelet", "cri"])]
    pub capture_via: String,
    /// Import the checkpoint image under this reference (pinned, in `k8s.io`).
    #[arg(long, value_name = "REF")]
    pub image: Option<String>,
    /// The checkpoint's timeout.
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    pub timeout: u64,
    /// Where snapshots live (root only).
    #[arg(long, value_name = "DIR", default_value_t = format!("{DEFAULT_CACHE_ROOT}/snapshots"))]
    pub snapshot_dir: String,
    /// The kubelet's API (`--capture-via kubelet`).
    #[arg(long, value_name = "URL", default_value = "https://127.0.0.1:10250")]
    pub kubelet: String,
    /// File holding the bearer token for the kubelet.
    #[arg(
        long,
        value_name = "FILE",
        default_value = "/var/run/secrets/kubernetes.io/serviceaccount/token"
    )]
    pub kubelet_token_file: PathBuf,
    /// PEM bundle of the CAs that sign the kubelet's serving certificate (self-signed by
    /// default unless serverTLSBootstrap is on).
    #[arg(long, value_name = "FILE")]
    pub kubelet_ca: Option<PathBuf>,
    /// Do not verify the kubelet's serving certificate (warns: the token goes to whoever answers).
    #[arg(long)]
    pub kubelet_insecure_skip_verify: bool,
    /// Model commit the process has loaded (part of the compatibility key).
    #[arg(long, default_value = "")]
    pub model_commit: String,
    #[command(flatten)]
    pub node: NodeArgs,
}

/// Runs the verb.
pub async fn run(cli: &Cli, args: &Args) -> Result<Output, CliError> {
    let here_only = || {
        if cli.backend() == Backend::Here {
            Ok(())
        } else {
            Err(CliError::usage(
                "`coldctl snapshot capture|support` work on this node's containerd: run them on \
                 the node with --here",
            ))
        }
    };
    match &args.verb {
        Verb::Create(a) => managed::create(cli, a).await,
        Verb::List(a) => managed::list(cli, a).await,
        Verb::Delete(a) => managed::delete(cli, a).await,
        Verb::RestoreSpec(a) => managed::restore_spec(cli, a).await,
        Verb::Capture(a) => {
            here_only()?;
            capture(a).await
        }
        Verb::Support(a) => {
            here_only()?;
            support(a).await
        }
    }
}

async fn support(args: &NodeArgs) -> Result<Output, CliError> {
    let s = args.runtime().support().await.context("containerd")?;
    let verdict = restore_support(&s);
    let reason = verdict.as_ref().err().map(|e| e.to_string());
    let doc = json!({
        "containerd": s.containerd,
        "restoreViaCreate": s.restore_via_create,
        "criu": s.criu,
        "canRestore": verdict.is_ok(),
        "reason": reason,
    });
    match reason {
        None => {
            let line = format!(
                "this node can restore: containerd {}, criu {}",
                s.containerd,
                s.criu.as_deref().unwrap_or("?")
            );
            Ok(Output::line(doc, line))
        }
        // Exit 1: scripts can test the answer.
        Some(r) => Err(CliError::Outcome {
            code: crate::report::EXIT_FAILURE,
            kind: "cannot_restore",
            output: Output::line(doc, r),
            errors: Vec::new(),
        }),
    }
}

async fn capture(args: &CaptureArgs) -> Result<Output, CliError> {
    let parts: Vec<&str> = args.target.split('/').collect();
    let [ns, pod, container] = parts.as_slice() else {
        return Err(CliError::usage(format!(
            "{:?} is not NS/POD/CONTAINER",
            args.target
        )));
    };
    let via: CaptureVia = args.capture_via.parse().map_err(CliError::usage)?;
    let runtime = args.node.runtime();
    let store = SnapshotStore::open(&args.snapshot_dir).context("snapshot directory")?;
    let capturer = match via {
        CaptureVia::Cri => Capturer::Cri {
            runtime: runtime.clone(),
            spool: PathBuf::from(&args.snapshot_dir).join(".spool"),
        },
        CaptureVia::Kubelet => {
            let token = std::fs::read_to_string(&args.kubelet_token_file)
                .with_context(|| format!("kubelet token {}", args.kubelet_token_file.display()))?;
            Capturer::Kubelet(
                KubeletClient::new(KubeletConfig {
                    endpoint: args.kubelet.clone(),
                    token: token.trim().to_string(),
                    ca_bundle: args.kubelet_ca.clone(),
                    insecure_skip_verify: args.kubelet_insecure_skip_verify,
                    request_timeout: Duration::from_secs(args.timeout + 60),
                })
                .context("kubelet client")?,
            )
        }
    };
    let node = NodeFacts {
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_default(),
        model_commit: args.model_commit.clone(),
        ..NodeFacts::default()
    };
    let req = CaptureRequest {
        namespace: ns.to_string(),
        pod: pod.to_string(),
        container: container.to_string(),
        name: args.name.clone(),
        timeout: Duration::from_secs(args.timeout),
        meta: Default::default(),
    };
    let got = snapshots::capture(
        &capturer,
        &store,
        &req,
        &Limits::default(),
        &node,
        Instant::now,
    )
    .await
    .with_context(|| format!("capture of {}", args.target))?;
    let mut manifest = None;
    if let Some(image) = &args.image {
        manifest = Some(
            runtime
                .import(&got.snapshot, image)
                .await
                .with_context(|| format!("import of {image}"))?,
        );
        // Recorded, so `snapshot list --here` and `delete` know the image.
        let mut meta = got.snapshot.record.meta.clone();
        meta.image = Some(image.clone());
        store
            .set_meta(&got.snapshot.record.name, &meta)
            .context("recording the image")?;
    }
    let r = &got.snapshot.record;
    let doc = json!({
        "name": r.name,
        "dir": got.snapshot.dir,
        "containerName": r.container_name,
        "baseImage": r.base_image,
        "layerDigest": r.layer_digest,
        "layerBytes": r.layer_size,
        "archiveBytes": got.archive_bytes,
        "checkpointSeconds": got.checkpoint.as_secs_f64(),
        "key": r.key,
        "image": args.image,
        "manifestDigest": manifest,
    });
    let line = format!(
        "snapshot {} of {} in {:.1} s: {} MiB at {}{}",
        r.name,
        args.target,
        got.checkpoint.as_secs_f64(),
        r.layer_size >> 20,
        got.snapshot.dir.display(),
        match &args.image {
            Some(i) => format!("; image {i} (pinned)"),
            None => String::new(),
        }
    );
    Ok(Output::line(doc, line))
}
