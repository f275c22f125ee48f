//! A client of the standalone agent's unix-socket API, for `coldctl --node`: one HTTP/1
//! connection per call (hyper's connection API over a `UnixStream`), every call bounded by a
//! timeout, errors on one line that say what to do.

use std::path::{Path, PathBuf};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1;
use hyper::header::{CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use tokio::net::UnixStream;

use super::edit::Put;
use super::models::{ModelEntry, NamedModel};
use super::socket::{ApiError, NodeStatus};

/// Default bound on one call, connection included.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing listens at the socket (no file, or a stale one).
    #[error("no agent listening at {}", path.display())]
    NoAgent {
        /// The agent's socket path.
        path: PathBuf,
    },
    /// The socket exists but this user may not connect.
    #[error(
        "permission denied on {}: run as root or as a member of the socket's group",
        path.display()
    )]
    PermissionDenied {
        /// The agent's socket path.
        path: PathBuf,
    },
    /// Connecting or talking failed.
    #[error("talking to the agent at {}: {reason}", path.display())]
    Transport {
        /// The agent's socket path.
        path: PathBuf,
        /// What failed, with the cause.
        reason: String,
    },
    /// No answer in time.
    #[error("the agent at {} did not answer within {}s", path.display(), timeout.as_secs())]
    Timeout {
        /// The agent's socket path.
        path: PathBuf,
        /// The bound.
        timeout: Duration,
    },
    /// The agent refused the request.
    #[error("{message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// The agent's stable label (`invalid_model`, `not_found`, ...).
        kind: String,
        /// The agent's message.
        message: String,
    },
}

impl ClientError {
    /// A stable label for scripts and metrics (`not_found`, `invalid_model`, ...).
    pub fn kind(&self) -> &str {
        match self {
            ClientError::NoAgent { .. } => "no_agent",
            ClientError::PermissionDenied { .. } => "permission_denied",
            ClientError::Transport { .. } => "transport",
            ClientError::Timeout { .. } => "timeout",
            ClientError::Api { kind, .. } => kind.as_str(),
        }
    }
}

/// A client of one agent's socket.
#[derive(Debug, Clone)]
pub struct NodeClient {
    socket: PathBuf,
    timeout: Duration,
}

impl NodeClient {
    /// A client of the agent listening at `socket`, with [`DEFAULT_TIMEOUT`].
    pub fn new(socket: impl Into<PathBuf>) -> NodeClient {
        NodeClient {
            socket: socket.into(),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// The same client with another bound per call.
    pub fn with_timeout(mut self, timeout: Duration) -> NodeClient {
        self.timeout = timeout;
        self
    }

    /// The socket path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// `GET /v1/status`: the node's name, status and models.
    pub async fn status(&self) -> Result<NodeStatus, ClientError> {
        self.call(Method::GET, "/v1/status", None).await
    }

    /// `GET /v1/models`: the models in the agent's file, with their names.
    pub async fn models(&self) -> Result<Vec<NamedModel>, ClientError> {
        self.call(Method::GET, "/v1/models", None).await
    }

    /// `PUT /v1/models`: adds `entry` (`created`) or replaces the model of the same name.
    pub async fn put_model(&self, entry: &ModelEntry) -> Result<Put, ClientError> {
        let body = serde_json::to_vec(entry).map_err(|e| self.transport(e))?;
        let (status, model) = self
            .call_status(Method::PUT, "/v1/models", Some(body))
            .await?;
        Ok(Put {
            model,
            created: status == StatusCode::CREATED,
        })
    }

    /// `DELETE /v1/models/{name_or_repo}`: removes the model; [`ClientError::Api`] with kind
    /// `not_found` when the file has no such model.
    pub async fn remove_model(&self, name_or_repo: &str) -> Result<NamedModel, ClientError> {
        // Names and repo ids are `[A-Za-z0-9._-]` with at most one `/`: nothing to escape;
        // anything else is refused here rather than sent as a different path.
        if name_or_repo.is_empty()
            || !name_or_repo
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/'))
        {
            return Err(ClientError::Api {
                status: 400,
                kind: "invalid_model".into(),
                message: format!("invalid model name or repo id {name_or_repo:?}"),
            });
        }
        let path = format!("/v1/models/{name_or_repo}");
        self.call(Method::DELETE, &path, None).await
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<T, ClientError> {
        Ok(self.call_status(method, path, body).await?.1)
    }

    async fn call_status<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, T), ClientError> {
        let exchange = self.exchange(method, path, body);
        let (status, bytes) = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| ClientError::Timeout {
                path: self.socket.clone(),
                timeout: self.timeout,
            })??;
        if !status.is_success() {
            let (kind, message) = match serde_json::from_slice::<ApiError>(&bytes) {
                Ok(e) => (e.kind, e.error),
                Err(_) => (
                    "http".to_string(),
                    format!(
                        "agent answered {status}: {}",
                        String::from_utf8_lossy(&bytes)
                    ),
                ),
            };
            return Err(ClientError::Api {
                status: status.as_u16(),
                kind,
                message,
            });
        }
        let value = serde_json::from_slice(&bytes)
            .map_err(|e| self.transport(format!("bad answer: {e}")))?;
        Ok((status, value))
    }

    async fn exchange(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let stream = UnixStream::connect(&self.socket)
            .await
            .map_err(|e| self.connect_error(e))?;
        let (mut sender, conn) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| self.transport(e))?;
        let conn = tokio::spawn(conn);
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, "localhost")
            .header(CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| self.transport(e))?;
        let result = async {
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| self.transport(e))?;
            let status = response.status();
            let bytes = response
                .into_body()
                .collect()
                .await
                .map_err(|e| self.transport(e))?
                .to_bytes();
            Ok((status, bytes))
        }
        .await;
        drop(sender);
        conn.abort();
        result
    }

    fn connect_error(&self, e: std::io::Error) -> ClientError {
        let path = self.socket.clone();
        match e.kind() {
            std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
                ClientError::NoAgent { path }
            }
            std::io::ErrorKind::PermissionDenied => ClientError::PermissionDenied { path },
            _ => ClientError::Transport {
                path,
                reason: e.to_string(),
            },
        }
    }

    fn transport(&self, e: impl std::fmt::Display) -> ClientError {
        ClientError::Transport {
            path: self.socket.clone(),
            reason: e.to_string(),
        }
    }
}
