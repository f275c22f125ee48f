//! `coldstart-agent run`: wires the validated [`Config`] to the loop and the admin server, and
//! shuts both down in order on SIGTERM or SIGINT: the loop first (its pass in progress returns
//! at a safe point; `/readyz` turns 503 at once), then the admin server, bounded by
//! `shutdown_timeout`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::admin::{self, AdminState};
use crate::agent::{self, LoopConfig};
use crate::cluster::{self, Clients, Cluster};
use crate::config::Config;
use crate::gpu;
use crate::health::Heartbeat;
use crate::images::{ContainerdConfig, ContainerdImages, DockerConfig};
use crate::metrics::Metrics;
use crate::node;
use crate::plan::Limits;
use crate::prepull;
use crate::standalone::{self, ApiState, ModelsFile, Standalone};
use crate::warmer::Warmer;
use crate::weights::cache::HubCache;
use crate::weights::{HubWeights, SyncSettings};

/// How long the startup probe of the API server may take before the agent goes on without it.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs the daemon until a termination signal; `Ok` after a clean shutdown.
pub async fn run(cfg: Config) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    watch_signals(shutdown.clone())?;
    info!(
        node = cfg.node_name.as_deref().unwrap_or("-"),
        standalone = cfg.standalone,
        cache_root = %cfg.cache_root.display(),
        "coldstart-agent starting"
    );
    let metrics = Arc::new(Metrics::new());
    let loop_cfg = LoopConfig::new(cfg.tick_interval);
    let pass = if cfg.standalone {
        let warmer = build_warmer(&cfg, metrics.clone(), loop_cfg.wake.clone())?;
        let settings = standalone_settings(&cfg);
        let pass = Standalone::new(settings, warmer, loop_cfg.wake.clone())
            .with_gpu(Arc::new(gpu_monitor(&cfg)?));
        Pass::Standalone(Box::new(pass))
    } else {
        let clients = Clients::infer()
            .await
            .context("cannot configure the Kubernetes client (in-cluster or kubeconfig)")?;
        probe_cluster(&clients.request).await;
        let warmer = build_warmer(&cfg, metrics.clone(), loop_cfg.wake.clone())?;
        let gpu = gpu_monitor(&cfg)?;
        Pass::Cluster(Box::new(Cluster::new(
            clients,
            cluster_settings(&cfg)?,
            warmer,
            Arc::new(gpu),
            loop_cfg.wake.clone(),
        )))
    };
    let api_stop = CancellationToken::new();
    let api_task = match &pass {
        Pass::Standalone(p) => {
            let listener = standalone::socket::bind(&cfg.socket).await?;
            info!(socket = %cfg.socket.display(), "local API listening");
            let state = ApiState {
                node: standalone_node(&cfg),
                file: ModelsFile::new(cfg.models_file.clone()),
                shared: p.shared(),
                wake: loop_cfg.wake.clone(),
            };
            Some(tokio::spawn(standalone::socket::serve(
                listener,
                cfg.socket.clone(),
                state,
                api_stop.clone(),
            )))
        }
        Pass::Cluster(_) => None,
    };

    let heartbeat = Heartbeat::new();
    let listener = TcpListener::bind(cfg.admin_addr)
        .await
        .with_context(|| format!("cannot bind the admin address {}", cfg.admin_addr))?;
    let addr = listener.local_addr().context("admin address")?;
    info!(addr = %addr, "admin server listening");
    let admin_stop = CancellationToken::new();
    let admin_task = tokio::spawn(admin::serve(
        listener,
        AdminState {
            heartbeat: heartbeat.clone(),
            ready_timeout: cfg.ready_timeout,
            metrics: metrics.clone(),
        },
        admin_stop.clone(),
    ));

    let mut loop_task = match pass {
        Pass::Cluster(c) => tokio::spawn(agent::run(
            *c,
            loop_cfg,
            heartbeat,
            metrics,
            shutdown.clone(),
        )),
        Pass::Standalone(s) => tokio::spawn(agent::run(
            *s,
            loop_cfg,
            heartbeat,
            metrics,
            shutdown.clone(),
        )),
    };

    let finished_early = tokio::select! {
        () = shutdown.cancelled() => None,
        joined = &mut loop_task => Some(joined),
    };
    let stopped = match finished_early {
        // The loop only returns once the token is cancelled; both may be ready at once.
        Some(joined) if shutdown.is_cancelled() => Ok(joined),
        Some(joined) => {
            admin_stop.cancel();
            api_stop.cancel();
            joined.context("agent loop panicked")?;
            anyhow::bail!("agent loop stopped without a shutdown signal");
        }
        None => {
            info!(timeout_s = cfg.shutdown_timeout.as_secs(), "shutting down");
            tokio::time::timeout(cfg.shutdown_timeout, loop_task).await
        }
    };
    admin_stop.cancel();
    api_stop.cancel();
    match stopped {
        Ok(joined) => joined.context("agent loop panicked")?,
        Err(_) => anyhow::bail!(
            "agent loop did not stop within {}s of the shutdown signal",
            cfg.shutdown_timeout.as_secs()
        ),
    }
    match tokio::time::timeout(Duration::from_secs(5), admin_task).await {
        Ok(Ok(served)) => served.context("admin server")?,
        Ok(Err(e)) => return Err(e).context("admin server panicked"),
        Err(_) => warn!("admin server did not stop within 5s; exiting anyway"),
    }
    if let Some(task) = api_task {
        match tokio::time::timeout(Duration::from_secs(5), task).await {
            Ok(Ok(served)) => served.context("local API server")?,
            Ok(Err(e)) => return Err(e).context("local API server panicked"),
            Err(_) => warn!("local API server did not stop within 5s; exiting anyway"),
        }
    }
    info!("coldstart-agent stopped");
    Ok(())
}

/// The reconcile pass of the mode the agent runs in.
enum Pass {
    Cluster(Box<Cluster<ContainerdImages, HubWeights>>),
    Standalone(Box<Standalone<ContainerdImages, HubWeights>>),
}

/// Cancels `token` on the first SIGTERM (kubelet) or SIGINT (terminal).
fn watch_signals(token: CancellationToken) -> anyhow::Result<()> {
    let mut term = signal(SignalKind::terminate()).context("install the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("install the SIGINT handler")?;
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        info!(signal = name, "shutdown requested");
        token.cancel();
    });
    Ok(())
}

/// Asks the API server its version once. An API server that does not answer yet is not fatal
/// (the loop retries), so it only warns.
async fn probe_cluster(client: &kube::Client) {
    match tokio::time::timeout(PROBE_TIMEOUT, client.apiserver_version()).await {
        Ok(Ok(v)) => info!(version = %v.git_version, "connected to the Kubernetes API server"),
        Ok(Err(e)) => warn!(error = %e, "Kubernetes API server not reachable yet"),
        Err(_) => warn!("Kubernetes API server did not answer within 5s"),
    }
}

/// The Hub cache under the cache root (what pods mount as `HF_HUB_CACHE`).
pub fn hub_cache_dir(cfg: &Config) -> std::path::PathBuf {
    cfg.cache_root.join("hub")
}

/// The agent's own state (journals, fingerprints, pinned images): a sibling of the Hub cache.
pub fn state_dir(cfg: &Config) -> std::path::PathBuf {
    cfg.cache_root.join("state")
}

/// The warmer the daemon runs: containerd and the Hub cache.
pub type RealWarmer = Warmer<ContainerdImages, HubWeights>;

/// The images port, the weights port over the Hub cache, and the warmer, from the
/// configuration.
pub fn build_warmer(
    cfg: &Config,
    metrics: Arc<Metrics>,
    wake: Arc<tokio::sync::Notify>,
) -> anyhow::Result<RealWarmer> {
    let mut cc = ContainerdConfig::new(cfg.containerd_socket.clone());
    cc.root = cfg.containerd_root.clone();
    cc.hosts_dir = cfg.registry_config_dir.clone();
    cc.config_file = cfg.containerd_config.clone();
    let images = ContainerdImages::new(cc).context("containerd client")?;
    let cache = HubCache::open(&hub_cache_dir(cfg), Some(&state_dir(cfg)))
        .with_context(|| format!("opening the Hub cache under {}", cfg.cache_root.display()))?;
    let mut sync = SyncSettings::new(&cfg.hub_endpoint);
    sync.budget_bytes = cfg.cache_budget;
    if let Some(path) = &cfg.hub_token_file {
        let token = std::fs::read_to_string(path)
            .with_context(|| format!("reading the Hub token file {}", path.display()))?;
        sync.hub.token = Some(token.trim().to_string()).filter(|t| !t.is_empty());
    }
    let weights = HubWeights::new(Arc::new(cache), sync);
    let warmer = Warmer::new(
        Arc::new(images),
        Arc::new(weights),
        &state_dir(cfg),
        prepull::Options {
            fetch: cfg.fetch.clone(),
            ..prepull::Options::default()
        },
        metrics,
        wake,
    )
    .context("reading the agent's state")?;
    Ok(warmer)
}

/// NVML (or the reason it is missing) and the XID thread.
fn gpu_monitor(cfg: &Config) -> anyhow::Result<gpu::Monitor> {
    gpu::Monitor::start(
        gpu::open(cfg.nvml_library.as_deref(), &cfg.nvml_search_path),
        gpu::Settings {
            gpus_expected: cfg.gpus_expected,
            xid_ignore: cfg.xid_ignore.clone(),
            ..gpu::Settings::default()
        },
    )
    .context("starting the GPU monitor")
}

fn cluster_settings(cfg: &Config) -> anyhow::Result<cluster::Settings> {
    let node = cfg
        .node_name
        .clone()
        .context("node name required in cluster mode")?;
    let pull_secret = match &cfg.pull_secret {
        Some(path) => Some(DockerConfig::load(path).context("reading --pull-secret")?),
        None => None,
    };
    Ok(cluster::Settings {
        surface: node::Settings::new(&node),
        node,
        namespace: cfg.namespace.clone(),
        limits: Limits {
            weight_syncs: cfg.weight_syncs,
            eviction_grace: cfg.eviction_grace,
            ..Limits::default()
        },
        warming_deadline: cfg.warming_deadline,
        pull_secret,
        deadline_action: cfg.deadline_action,
        compile: cluster::CompileSettings {
            cache_root: cfg.cache_root.clone(),
            budget: cfg.compile_cache_budget,
            import_only: cfg.compile_cache_import_only,
        },
        snapshots: cluster::SnapshotSettings {
            dir: cfg.cache_root.join("snapshots"),
            runtime: snapshots_runtime(cfg),
            cache_root: cfg.cache_root.clone(),
        },
    })
}

/// containerd as the snapshots port reaches it.
fn snapshots_runtime(cfg: &Config) -> crate::snapshots::RuntimeConfig {
    let mut rt = crate::snapshots::RuntimeConfig::new(cfg.containerd_socket.clone());
    rt.config_file = cfg.containerd_config.clone();
    rt.criu_search = cfg.criu_search.clone();
    rt.criu_root = cfg.criu_root.clone();
    rt.containerd_root = Some(cfg.containerd_root.clone());
    rt
}

fn standalone_settings(cfg: &Config) -> standalone::Settings {
    standalone::Settings {
        node: standalone_node(cfg),
        models_file: cfg.models_file.clone(),
        state_dir: state_dir(cfg),
        limits: Limits {
            weight_syncs: cfg.weight_syncs,
            eviction_grace: cfg.eviction_grace,
            ..Limits::default()
        },
        pull_secret: cfg.pull_secret.clone(),
        compile: crate::caches::runner::Settings {
            cache_root: cfg.cache_root.clone(),
            budget: cfg.compile_cache_budget,
            import_only: cfg.compile_cache_import_only,
        },
    }
}

/// The node's name in standalone mode: `--node-name`, else the kernel's host name.
fn standalone_node(cfg: &Config) -> String {
    cfg.node_name.clone().unwrap_or_else(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "localhost".to_string())
    })
}
