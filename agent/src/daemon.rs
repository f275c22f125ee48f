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
use crate::agent::{self, Idle, LoopConfig};
use crate::config::Config;
use crate::health::Heartbeat;
use crate::metrics::Metrics;

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
    if !cfg.standalone {
        probe_cluster().await?;
    }

    let metrics = Arc::new(Metrics::new());
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

    let loop_cfg = LoopConfig {
        tick_interval: cfg.tick_interval,
    };
    let mut loop_task = tokio::spawn(agent::run(
        Idle,
        loop_cfg,
        heartbeat,
        metrics,
        shutdown.clone(),
    ));

    let finished_early = tokio::select! {
        () = shutdown.cancelled() => None,
        joined = &mut loop_task => Some(joined),
    };
    let stopped = match finished_early {
        // The loop only returns once the token is cancelled; both may be ready at once.
        Some(joined) if shutdown.is_cancelled() => Ok(joined),
        Some(joined) => {
            admin_stop.cancel();
            joined.context("agent loop panicked")?;
            anyhow::bail!("agent loop stopped without a shutdown signal");
        }
        None => {
            info!(timeout_s = cfg.shutdown_timeout.as_secs(), "shutting down");
            tokio::time::timeout(cfg.shutdown_timeout, loop_task).await
        }
    };
    admin_stop.cancel();
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
    info!("coldstart-agent stopped");
    Ok(())
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

/// Builds the Kubernetes client (in-cluster service account, else kubeconfig) and asks the API
/// server its version once. A client that cannot be configured is fatal; an API server that
/// does not answer yet is not (the loop retries), so it only warns.
async fn probe_cluster() -> anyhow::Result<()> {
    let client = kube::Client::try_default()
        .await
        .context("cannot configure the Kubernetes client (in-cluster or kubeconfig)")?;
    match tokio::time::timeout(PROBE_TIMEOUT, client.apiserver_version()).await {
        Ok(Ok(v)) => info!(version = %v.git_version, "connected to the Kubernetes API server"),
        Ok(Err(e)) => warn!(error = %e, "Kubernetes API server not reachable yet"),
        Err(_) => warn!("Kubernetes API server did not answer within 5s"),
    }
    Ok(())
}
