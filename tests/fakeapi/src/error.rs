//! Errors as the API server sends them: `Status` objects with a reason and a code.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::registry::ResourceType;

/// A failed request, answered as a `kind: Status` object.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ApiError {
    pub(crate) code: u16,
    pub(crate) reason: &'static str,
    pub(crate) message: String,
    details: Option<Value>,
    /// The Status's list metadata (a `continue` token with a 410 for an expired one).
    metadata: Option<Value>,
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: String) -> Self {
        ApiError {
            code,
            reason,
            message,
            details: None,
            metadata: None,
        }
    }

    /// Replaces the details (field errors' causes, see `field::invalid`).
    pub(crate) fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    /// Sets the Status's `metadata` (e.g. `{"continue": token}`).
    pub(crate) fn with_metadata(mut self, metadata: Value) -> Self {
        self.metadata = Some(metadata);
        self
    }

    fn about(mut self, t: &ResourceType, name: &str) -> Self {
        self.details = Some(json!({"name": name, "group": t.group, "kind": t.plural}));
        self
    }

    pub(crate) fn not_found(t: &ResourceType, name: &str) -> Self {
        let m = format!("{} \"{name}\" not found", t.group_resource());
        Self::new(404, "NotFound", m).about(t, name)
    }

    pub(crate) fn already_exists(t: &ResourceType, name: &str) -> Self {
        let m = format!("{} \"{name}\" already exists", t.group_resource());
        Self::new(409, "AlreadyExists", m).about(t, name)
    }

    pub(crate) fn conflict(t: &ResourceType, name: &str) -> Self {
        let m = format!(
            "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; \
             please apply your changes to the latest version and try again",
            t.group_resource()
        );
        Self::new(409, "Conflict", m).about(t, name)
    }

    /// A server-side apply conflict: 409 with one `FieldManagerConflict` cause per field.
    pub(crate) fn apply_conflict(message: String, causes: Vec<Value>) -> Self {
        let mut e = Self::new(409, "Conflict", message);
        e.details = Some(json!({"causes": causes}));
        e
    }

    pub(crate) fn invalid(message: String) -> Self {
        Self::new(422, "Invalid", message)
    }

    pub(crate) fn bad_request(message: String) -> Self {
        Self::new(400, "BadRequest", message)
    }

    pub(crate) fn not_found_path(path: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("the server could not find the requested resource ({path})"),
        )
    }

    pub(crate) fn method_not_allowed(method: &str) -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            format!("the server does not allow this method on the requested resource ({method})"),
        )
    }

    pub(crate) fn unsupported_media(ct: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format ({ct:?}): this fake accepts \
                 application/json bodies, and for PATCH application/json-patch+json, \
                 application/merge-patch+json, application/strategic-merge-patch+json (built-in \
                 resources) and application/apply-patch+yaml"
            ),
        )
    }

    /// 401 for a request without a known token, as the apiserver answers it.
    pub(crate) fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized".to_string())
    }

    /// 403 from the authorizer: `nodes "x" is forbidden: User "u" cannot patch resource
    /// "nodes/status" in API group "" at the cluster scope` (the apiserver's wording).
    pub(crate) fn forbidden(group: &str, resource: &str, name: &str, why: &str) -> Self {
        let gr = if group.is_empty() {
            resource.to_string()
        } else {
            format!("{resource}.{group}")
        };
        let message = if name.is_empty() {
            format!("{gr} is forbidden: {why}")
        } else {
            format!("{gr} \"{name}\" is forbidden: {why}")
        };
        let mut e = Self::new(403, "Forbidden", message);
        e.details = Some(json!({"name": name, "group": group, "kind": resource}));
        e
    }

    /// An admission denial: `forbidden`'s message and details with the policy's reason and
    /// its code (Forbidden 403, Unauthorized 401, RequestEntityTooLarge 413, else 422), and
    /// the message repeated as a cause.
    pub(crate) fn denied(group: &str, resource: &str, name: &str, why: &str, reason: &str) -> Self {
        let mut e = Self::forbidden(group, resource, name, why);
        let (code, reason) = match reason {
            "Forbidden" => (403, "Forbidden"),
            "Unauthorized" => (401, "Unauthorized"),
            "RequestEntityTooLarge" => (413, "RequestEntityTooLarge"),
            _ => (422, "Invalid"),
        };
        e.code = code;
        e.reason = reason;
        if let Some(d) = e.details.as_mut() {
            d["causes"] = json!([{"message": why}]);
        }
        e
    }

    pub(crate) fn gone(message: String) -> Self {
        Self::new(410, "Expired", message)
    }

    pub(crate) fn unavailable() -> Self {
        Self::new(
            503,
            "ServiceUnavailable",
            "the server is currently unable to handle the request (fake outage)".to_string(),
        )
    }

    /// The `Status` object.
    pub(crate) fn status(&self) -> Value {
        let mut s = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": self.metadata.clone().unwrap_or_else(|| json!({})),
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(d) = &self.details {
            s["details"] = d.clone();
        }
        s
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        crate::routes::json_response(code, &self.status())
    }
}
