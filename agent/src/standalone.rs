//! Standalone mode, for nodes outside Kubernetes: the same pass as cluster mode (the planner
//! decides, the [`Warmer`] does the local work) with the desired state read from a TOML file
//! (reloaded on change; [`ModelsFile`] edits it atomically, so the file stays the one source
//! of truth), the status written to `<state dir>/status.json`, and a unix-socket API
//! ([`socket`]) that `coldctl --node` reaches through [`client::NodeClient`]. There is no
//! Kubernetes surface: no taint, labels, conditions or events.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::agent::{self, Reconcile};
use crate::api::{ColdModel, ColdNodeStatus};
use crate::gpu;
use crate::images::{DockerConfig, ImageRef, Images, RegistryAuth};
use crate::plan::Limits;
use crate::warmer::{CredentialError, Credentials, PassInputs, Warmer};
use crate::weights::Weights;

pub mod client;
mod compile;
mod edit;
mod live;
mod models;
pub mod socket;
mod source;
mod status;
#[cfg(test)]
mod tests;

pub use client::{ClientError, NodeClient};
pub use edit::{ModelsFile, Put};
pub use live::Shared;
pub use models::{Desired, ModelEntry, NamedModel, parse};
pub use socket::{ApiError, ApiState, NodeStatus};
pub use source::DesiredSource;
pub use status::{STATUS_FILE, StatusFile};

/// An unchanged status file is rewritten this often, so readers can tell the agent is live.
pub const STATUS_REFRESH: Duration = Duration::from_secs(60);

/// Why the models file cannot be read, used or edited.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file does not parse or holds an invalid entry.
    #[error("models file {}: {reason}", path.display())]
    Invalid {
        /// The models file (or its lock file).
        path: PathBuf,
        /// What is wrong, on one line.
        reason: String,
    },
    /// An entry given to an edit is refused.
    #[error("invalid model: {0}")]
    Entry(String),
    /// No entry has this name or repo id.
    #[error("no model {0:?} in the models file")]
    NotFound(String),
    /// Reading, locking or writing failed.
    #[error("models file {}: {reason}", path.display())]
    Io {
        /// The file (or its lock file).
        path: PathBuf,
        /// What failed, with the cause.
        reason: String,
    },
}

impl Error {
    /// Stable label for metrics and the API.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Invalid { .. } => "invalid_file",
            Error::Entry(_) => "invalid_model",
            Error::NotFound(_) => "not_found",
            Error::Io { .. } => "io",
        }
    }
}

/// Settings of standalone mode.
#[derive(Debug, Clone)]
pub struct Settings {
    /// This node's name (reported; nothing is selected by it).
    pub node: String,
    /// The desired-state file.
    pub models_file: PathBuf,
    /// Where `status.json` goes (the agent's state directory).
    pub state_dir: PathBuf,
    /// Concurrency and removal limits.
    pub limits: Limits,
    /// Registry credentials used when a model names no pull secret.
    pub pull_secret: Option<PathBuf>,
    /// Compile caches: where, and their budget.
    pub compile: crate::caches::runner::Settings,
}

/// Credentials from the files the models name, else the agent's defaults. The Hub token
/// default (`--hub-token-file`) is already in the warmer's settings.
#[derive(Debug, Default)]
struct FileCredentials {
    entries: BTreeMap<String, ModelEntry>,
    pull_secret: Option<PathBuf>,
}

impl Credentials for FileCredentials {
    async fn hub_token(&self, model: &ColdModel) -> Result<Option<String>, CredentialError> {
        let name = model.metadata.name.as_deref().unwrap_or_default();
        let Some(path) = self.entries.get(name).and_then(|e| e.token_file.as_ref()) else {
            return Ok(None);
        };
        let text = tokio::fs::read_to_string(path)
            .await
            .map_err(|e| CredentialError(format!("reading {}: {e}", path.display())))?;
        Ok(Some(text.trim().to_string()).filter(|t| !t.is_empty()))
    }

    async fn pull_auth(
        &self,
        model: &ColdModel,
        image: &ImageRef,
    ) -> Result<Option<RegistryAuth>, CredentialError> {
        let name = model.metadata.name.as_deref().unwrap_or_default();
        let own = self.entries.get(name).and_then(|e| e.pull_secret.as_ref());
        let Some(path) = own.or(self.pull_secret.as_ref()) else {
            return Ok(None);
        };
        let cfg = DockerConfig::load(path).map_err(|e| CredentialError(e.to_string()))?;
        Ok(cfg.lookup(image))
    }
}

/// The standalone pass.
pub struct Standalone<I, W> {
    settings: Settings,
    warmer: Warmer<I, W>,
    source: DesiredSource,
    status_file: StatusFile,
    shared: Shared,
    current: Option<ColdNodeStatus>,
    gpu: Option<Arc<gpu::Monitor>>,
    compile: compile::CompileCaches,
}

impl<I, W> std::fmt::Debug for Standalone<I, W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Standalone")
            .field("settings", &self.settings)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl<I, W> Standalone<I, W> {
    /// The pass over `warmer`; `wake` is notified when the models file changes.
    pub fn new(settings: Settings, warmer: Warmer<I, W>, wake: Arc<Notify>) -> Standalone<I, W> {
        let source = DesiredSource::new(ModelsFile::new(settings.models_file.clone()), wake);
        let compile =
            compile::CompileCaches::new(settings.compile.clone(), &settings.node, "/proc".into());
        Standalone {
            compile,
            status_file: StatusFile::new(settings.state_dir.clone(), STATUS_REFRESH),
            settings,
            warmer,
            source,
            shared: Shared::default(),
            current: None,
            gpu: None,
        }
    }

    /// Reports GPU health from `monitor` in the status (and gates nothing: there is no
    /// scheduler to tell; the status file and `coldctl --node nodes` show it).
    pub fn with_gpu(mut self, monitor: Arc<gpu::Monitor>) -> Standalone<I, W> {
        self.gpu = Some(monitor);
        self
    }

    /// What each pass shares with the socket API: its status, the models in force, the
    /// running tasks.
    pub fn shared(&self) -> Shared {
        self.shared.clone()
    }

    fn credentials(&self) -> FileCredentials {
        FileCredentials {
            entries: self
                .source
                .desired()
                .entries
                .iter()
                .map(|e| (e.name.clone(), e.model.clone()))
                .collect(),
            pull_secret: self.settings.pull_secret.clone(),
        }
    }
}

impl<I: Images + Send + Sync + 'static, W: Weights> Reconcile for Standalone<I, W> {
    async fn reconcile(&mut self, _shutdown: &CancellationToken) -> Result<(), agent::Error> {
        // A bad file keeps the last good models in force: the pass goes on with them and
        // reports the error at the end.
        let refreshed = self.source.refresh();
        let now = Timestamp::now();
        let models = self.source.desired().models.clone();
        let gpu = match &self.gpu {
            Some(m) => Some(m.snapshot_async(None, false).await),
            None => None,
        };
        let creds = self.credentials();
        let labels = BTreeMap::new();
        let inputs = PassInputs {
            labels: &labels,
            models: &models,
            current: self.current.as_ref(),
            gpu: gpu.as_ref(),
            warming_deadline: None,
            now,
        };
        let mut plan = self
            .warmer
            .pass(inputs, &self.settings.limits, &creds)
            .await;
        let metrics = self.warmer.metrics();
        plan.status.compile_caches = self
            .compile
            .pass(
                &self.source.desired().entries,
                crate::caches::runner::PassContext {
                    models: &models,
                    plan: &plan,
                    now,
                    metrics,
                    creds: &creds,
                },
                gpu.as_ref(),
                self.warmer.images().registry_client(),
            )
            .await;
        plan.status.updated_at = Some(Time(now));
        debug!(
            selected = plan.selected.len(),
            phase = ?plan.status.phase,
            syncs = plan.sync_weights.len(),
            pulls = plan.pull_images.len(),
            "planned"
        );
        let written = self.status_file.write(&plan.status).await;
        self.shared.publish(
            plan.status.clone(),
            self.source.desired().entries.clone(),
            self.warmer.live(),
        );
        self.current = Some(plan.status);
        if let Err(e) = written {
            let file = self.status_file.path();
            warn!(error = %crate::errors::chain(&e), file = %file.display(), "cannot write the status file");
            return Err(agent::Error::StatusFile(e));
        }
        refreshed.map_err(|e| agent::Error::Desired(crate::errors::chain(&e)))
    }

    async fn shutdown(&mut self) {
        info!("stopping transfers");
        self.warmer.shutdown().await;
    }
}
