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
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: String) -> Self {
        ApiError {
            code,
            reason,
            message,
            details: None,
        }
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
            "metadata": {},
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
