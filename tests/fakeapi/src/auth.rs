//! Identities: bearer tokens mapped to user info, as the apiserver's token authenticators do
//! (service-account tokens carry the pod's node in `extra`), and the 401 for anything else.

use std::collections::{BTreeMap, HashMap};

use axum::http::{HeaderMap, header};
use serde_json::{Value, json};

use crate::error::ApiError;

/// The `extra` key of a pod-bound service-account token naming the pod's node.
pub const NODE_NAME_CLAIM: &str = "authentication.kubernetes.io/node-name";

/// Who a request comes from, as an authenticator reports it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserInfo {
    /// `username`, e.g. `system:serviceaccount:coldstart-system:coldstart-agent`.
    pub username: String,
    /// `uid` (may be empty).
    pub uid: String,
    /// Groups; `system:authenticated` is added when the request is authenticated.
    pub groups: Vec<String>,
    /// `extra`, e.g. [`NODE_NAME_CLAIM`].
    pub extra: BTreeMap<String, Vec<String>>,
}

impl UserInfo {
    /// A plain user with no groups.
    pub fn user(name: &str) -> UserInfo {
        UserInfo {
            username: name.to_string(),
            ..UserInfo::default()
        }
    }

    /// A service account's identity as its token authenticates: the username
    /// `system:serviceaccount:NS:NAME` and the groups `system:serviceaccounts` and
    /// `system:serviceaccounts:NS`.
    pub fn service_account(namespace: &str, name: &str) -> UserInfo {
        UserInfo {
            username: format!("system:serviceaccount:{namespace}:{name}"),
            groups: vec![
                "system:serviceaccounts".to_string(),
                format!("system:serviceaccounts:{namespace}"),
            ],
            ..UserInfo::default()
        }
    }

    /// Adds the node-name claim a pod-bound token carries (Kubernetes 1.32+).
    pub fn on_node(mut self, node: &str) -> UserInfo {
        self.extra
            .insert(NODE_NAME_CLAIM.to_string(), vec![node.to_string()]);
        self
    }

    /// Adds a group.
    pub fn in_group(mut self, group: &str) -> UserInfo {
        self.groups.push(group.to_string());
        self
    }

    /// `request.userInfo` as admission sees it (`extra` left out when empty, so `has()` on it
    /// is false, as for the apiserver's typed request).
    pub(crate) fn to_json(&self) -> Value {
        let mut v = json!({"username": self.username, "groups": self.groups});
        if !self.uid.is_empty() {
            v["uid"] = json!(self.uid);
        }
        if !self.extra.is_empty() {
            v["extra"] = json!(self.extra);
        }
        v
    }
}

/// Tokens the fake accepts, and whether it checks them at all.
#[derive(Debug, Default)]
pub(crate) struct Identities {
    tokens: HashMap<String, UserInfo>,
    /// When false (the default), every request is served as before: no authentication, no
    /// authorization, no admission.
    pub(crate) enforcing: bool,
}

impl Identities {
    pub(crate) fn add(&mut self, token: &str, user: UserInfo) {
        self.tokens.insert(token.to_string(), user);
    }

    /// The user a request's `Authorization: Bearer` token maps to, `system:authenticated`
    /// added; 401 for a missing or unknown token.
    pub(crate) fn authenticate(&self, headers: &HeaderMap) -> Result<UserInfo, ApiError> {
        let token = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or_else(ApiError::unauthorized)?;
        let mut user = self
            .tokens
            .get(token)
            .cloned()
            .ok_or_else(ApiError::unauthorized)?;
        if !user.groups.iter().any(|g| g == "system:authenticated") {
            user.groups.push("system:authenticated".to_string());
        }
        Ok(user)
    }
}
