//! The unix-socket API of standalone mode (what `coldctl --node` talks to), JSON over HTTP/1:
//!
//! - `GET /v1/status`: node name, the last pass's [`ColdNodeStatus`], the models in the file
//! - `GET /v1/models`: the models in the file, with their names
//! - `PUT /v1/models`: add or replace one model (body: a [`ModelEntry`]); 201 when new
//! - `DELETE /v1/models/{name or repo id}`: remove one; 404 when absent
//!
//! Errors answer `{"error": "...", "kind": "..."}` (400 bad input, 404, 409 when the file on
//! disk does not parse, 500). Edits go to the file, never around it: the reload path applies
//! them like a hand edit, and the loop is woken so that happens at once.
//!
//! The socket is created mode 0660 in a 0755 directory. A socket file left by a crash is
//! replaced; one another agent still answers on is not.

use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use serde::{Deserialize, Serialize};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::Error;
use super::edit::ModelsFile;
use super::live::Shared;
use super::models::{ModelEntry, NamedModel};
use crate::api::ColdNodeStatus;

/// Mode of the socket: root and the socket's group may talk to the agent.
const SOCKET_MODE: u32 = 0o660;
/// Largest request body accepted.
const MAX_BODY: usize = 64 << 10;

/// What `GET /v1/status` answers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeStatus {
    /// This node's name.
    pub node: String,
    /// What the last pass found (empty before the first).
    pub status: ColdNodeStatus,
    /// The models in the file now (what the next pass applies); while the file is invalid,
    /// the last good models, which the agent keeps warming.
    #[serde(default)]
    pub models: Vec<NamedModel>,
    /// Why the file on disk is not applied, while it is not (the last good models stay).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub models_error: Option<String>,
    /// The agent's version (absent from agents before 0.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// The body of every error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    /// One line for people.
    pub error: String,
    /// A stable label for scripts and metrics (`not_found`, `invalid_model`, ...).
    pub kind: String,
}

/// What the handlers share with the pass.
#[derive(Debug, Clone)]
pub struct ApiState {
    /// This node's name.
    pub node: String,
    /// The models file.
    pub file: ModelsFile,
    /// What the pass shares: its status, the models in force, the running tasks.
    pub shared: Shared,
    /// Wakes the loop after an edit.
    pub wake: Arc<Notify>,
}

/// The routes.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/v1/status", get(status))
        .route("/v1/models", get(models).put(put_model))
        .route("/v1/models/{*key}", delete(remove_model))
        .fallback(|| async { reply_error(StatusCode::NOT_FOUND, "no such endpoint", "not_found") })
        .with_state(state)
}

/// Binds the socket at `path`: creates the parent directory (0755), replaces a stale socket
/// file (refusing when an agent still answers on it) and sets mode 0660.
pub async fn bind(path: &Path) -> anyhow::Result<UnixListener> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
            .with_context(|| format!("creating the socket directory {}", dir.display()))?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            if UnixStream::connect(path).await.is_ok() {
                anyhow::bail!(
                    "another agent is listening at {}; stop it first",
                    path.display()
                );
            }
            info!(socket = %path.display(), "removing a stale socket file");
            std::fs::remove_file(path)
                .with_context(|| format!("removing the stale socket {}", path.display()))?;
        }
        Ok(_) => anyhow::bail!("{} exists and is not a socket", path.display()),
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("checking {}", path.display())),
    }
    let listener =
        UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(SOCKET_MODE))
        .with_context(|| format!("setting the mode of {}", path.display()))?;
    Ok(listener)
}

/// Serves until `shutdown` is cancelled, then finishes in-flight requests and removes the
/// socket file.
pub async fn serve(
    listener: UnixListener,
    path: PathBuf,
    state: ApiState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let served = axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await;
    if let Err(e) = std::fs::remove_file(&path)
        && e.kind() != ErrorKind::NotFound
    {
        warn!(socket = %path.display(), error = %e, "cannot remove the socket file");
    }
    served
}

/// A JSON answer (axum's `Json` needs a feature this workspace leaves off).
fn json<T: Serialize>(code: StatusCode, body: &T) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => (code, [(header::CONTENT_TYPE, "application/json")], bytes).into_response(),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "cannot encode the answer\n",
        )
            .into_response(),
    }
}

fn reply_error(code: StatusCode, error: impl Into<String>, kind: &str) -> Response {
    let body = ApiError {
        error: error.into(),
        kind: kind.to_string(),
    };
    json(code, &body)
}

fn error_response(e: &Error) -> Response {
    let code = match e {
        Error::Entry(_) => StatusCode::BAD_REQUEST,
        Error::NotFound(_) => StatusCode::NOT_FOUND,
        Error::Invalid { .. } => StatusCode::CONFLICT,
        Error::Io { .. } => StatusCode::INTERNAL_SERVER_ERROR,
    };
    reply_error(code, e.to_string(), e.kind())
}

/// Runs a file operation on the blocking pool (the flock may wait for another editor).
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Response> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(error_response(&e)),
        Err(_) => Err(reply_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "file operation panicked",
            "internal",
        )),
    }
}

fn entries(file: &ModelsFile) -> Result<Vec<NamedModel>, Error> {
    Ok(file.load()?.map(|d| d.entries).unwrap_or_default())
}

/// The status as of now: the last pass's, with the running tasks' bytes laid over.
async fn status(State(state): State<ApiState>) -> Response {
    let file = state.file.clone();
    let (models, models_error) = match tokio::task::spawn_blocking(move || entries(&file)).await {
        Ok(Ok(m)) => (m, None),
        // The agent keeps warming the last good models: report those, and why.
        Ok(Err(e)) => (state.shared.in_force(), Some(e.to_string())),
        Err(_) => (
            state.shared.in_force(),
            Some("file operation panicked".to_string()),
        ),
    };
    let body = NodeStatus {
        node: state.node.clone(),
        status: state.shared.status_now(&models),
        models,
        models_error,
        version: Some(env!("CARGO_PKG_VERSION").to_string()),
    };
    json(StatusCode::OK, &body)
}

async fn models(State(state): State<ApiState>) -> Response {
    let file = state.file.clone();
    match blocking(move || entries(&file)).await {
        Ok(m) => json(StatusCode::OK, &m),
        Err(r) => r,
    }
}

async fn put_model(State(state): State<ApiState>, body: Bytes) -> Response {
    if body.len() > MAX_BODY {
        return reply_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("body over {MAX_BODY} bytes"),
            "too_large",
        );
    }
    let entry: ModelEntry = match serde_json::from_slice(&body) {
        Ok(e) => e,
        Err(e) => {
            return reply_error(
                StatusCode::BAD_REQUEST,
                format!("invalid model: {e}"),
                "invalid_model",
            );
        }
    };
    if let Err(why) = credentials_allowed(&state.file, &entry) {
        return reply_error(StatusCode::BAD_REQUEST, why, "invalid_model");
    }
    let file = state.file.clone();
    match blocking(move || file.put_model(entry)).await {
        Ok(put) => {
            info!(model = %put.model.name, created = put.created, "model put through the socket");
            state.wake.notify_one();
            let code = if put.created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            json(code, &put.model)
        }
        Err(r) => r,
    }
}

/// The agent reads credential files as root: through the socket, an entry may name them only
/// in the models file's own directory (root's to fill), never anywhere the agent can read.
/// Hand edits of the file, by root, may name any path.
fn credentials_allowed(file: &ModelsFile, entry: &ModelEntry) -> Result<(), String> {
    let dir = file.path().parent();
    for (key, path) in [
        ("token-file", &entry.token_file),
        ("pull-secret", &entry.pull_secret),
    ] {
        let Some(path) = path else { continue };
        let plain = path
            .components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
        if !plain || path.parent() != dir {
            let dir = dir.map(|d| d.display().to_string()).unwrap_or_default();
            return Err(format!(
                "invalid model: {key} {} must be a file directly in {dir} when set through the agent's socket",
                path.display()
            ));
        }
    }
    Ok(())
}

async fn remove_model(State(state): State<ApiState>, UrlPath(key): UrlPath<String>) -> Response {
    let file = state.file.clone();
    match blocking(move || file.remove_model(&key)).await {
        Ok(removed) => {
            info!(model = %removed.name, "model removed through the socket");
            state.wake.notify_one();
            json(StatusCode::OK, &removed)
        }
        Err(r) => r,
    }
}
