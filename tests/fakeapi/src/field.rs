//! Field errors as `k8s.io/apimachinery/pkg/util/validation/field` words them, and the 422
//! `Invalid` status `errors.NewInvalid` builds from a list of them: each error is a cause
//! (`reason`, `field`, `message` = the error's body) and the message is
//! `Kind.group "name" is invalid: <field>: <body>` (several errors in `[a, b]`).

use serde_json::{Value, json};

use crate::error::ApiError;

/// The kind of a field error (its `reason` in a `Status` cause).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Required,
    Invalid,
    TypeInvalid,
    NotSupported,
    Duplicate,
    Forbidden,
    TooLong,
    TooMany,
}

impl Kind {
    /// The cause's reason, e.g. `FieldValueInvalid`.
    pub(crate) fn reason(self) -> &'static str {
        match self {
            Kind::Required => "FieldValueRequired",
            Kind::Invalid => "FieldValueInvalid",
            Kind::TypeInvalid => "FieldValueTypeInvalid",
            Kind::NotSupported => "FieldValueNotSupported",
            Kind::Duplicate => "FieldValueDuplicate",
            Kind::Forbidden => "FieldValueForbidden",
            Kind::TooLong => "FieldValueTooLong",
            Kind::TooMany => "FieldValueTooMany",
        }
    }

    fn words(self) -> &'static str {
        match self {
            Kind::Required => "Required value",
            Kind::Invalid | Kind::TypeInvalid => "Invalid value",
            Kind::NotSupported => "Unsupported value",
            Kind::Duplicate => "Duplicate value",
            Kind::Forbidden => "Forbidden",
            Kind::TooLong => "Too long",
            Kind::TooMany => "Too many",
        }
    }
}

/// One field error.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct FieldError {
    pub(crate) kind: Kind,
    /// The field path, e.g. `spec.models[0].name` (`<nil>` for the object's root).
    pub(crate) field: String,
    /// The bad value; None when the message omits it.
    pub(crate) value: Option<Value>,
    pub(crate) detail: String,
}

impl FieldError {
    pub(crate) fn new(kind: Kind, field: &str, value: Option<Value>, detail: &str) -> Self {
        FieldError {
            kind,
            field: if field.is_empty() { "<nil>" } else { field }.to_string(),
            value,
            detail: detail.to_string(),
        }
    }

    pub(crate) fn required(field: &str, detail: &str) -> Self {
        Self::new(Kind::Required, field, None, detail)
    }

    pub(crate) fn invalid(field: &str, value: Value, detail: &str) -> Self {
        Self::new(Kind::Invalid, field, Some(value), detail)
    }

    pub(crate) fn type_invalid(field: &str, value: Value, detail: &str) -> Self {
        Self::new(Kind::TypeInvalid, field, Some(value), detail)
    }

    pub(crate) fn not_supported(field: &str, value: Value, supported: &[String]) -> Self {
        let quoted: Vec<String> = supported.iter().map(|s| format!("{s:?}")).collect();
        let detail = if quoted.is_empty() {
            String::new()
        } else {
            format!("supported values: {}", quoted.join(", "))
        };
        Self::new(Kind::NotSupported, field, Some(value), &detail)
    }

    pub(crate) fn duplicate(field: &str, value: Value) -> Self {
        Self::new(Kind::Duplicate, field, Some(value), "")
    }

    pub(crate) fn forbidden(field: &str, detail: &str) -> Self {
        Self::new(Kind::Forbidden, field, None, detail)
    }

    /// `Too long: may not be more than N bytes`.
    pub(crate) fn too_long(field: &str, max: i64) -> Self {
        let unit = if max == 1 { "byte" } else { "bytes" };
        let detail = format!("may not be more than {max} {unit}");
        Self::new(Kind::TooLong, field, None, &detail)
    }

    /// `Too many: 4: must have at most 3 items`.
    pub(crate) fn too_many(field: &str, actual: usize, max: i64) -> Self {
        let unit = if max == 1 { "item" } else { "items" };
        let detail = format!("must have at most {max} {unit}");
        Self::new(Kind::TooMany, field, Some(json!(actual)), &detail)
    }

    /// The message without the field: `Invalid value: "x": detail`.
    pub(crate) fn body(&self) -> String {
        let mut s = match (&self.value, self.kind) {
            (_, Kind::Required | Kind::Forbidden | Kind::TooLong) | (None, _) => {
                self.kind.words().to_string()
            }
            (Some(v), _) => format!("{}: {}", self.kind.words(), render(v)),
        };
        if !self.detail.is_empty() {
            s.push_str(": ");
            s.push_str(&self.detail);
        }
        s
    }

    /// `field: body`.
    pub(crate) fn message(&self) -> String {
        format!("{}: {}", self.field, self.body())
    }

    /// Whether later validation (CEL rules) is skipped because of this error, as
    /// `hasBlockingErr` decides in the apiextensions strategy.
    pub(crate) fn blocks_rules(&self) -> bool {
        matches!(
            self.kind,
            Kind::NotSupported | Kind::Required | Kind::TooLong | Kind::TooMany | Kind::TypeInvalid
        )
    }
}

/// A bad value as Go's `ErrorBody` prints it: strings quoted, numbers and booleans bare,
/// anything else as JSON.
fn render(v: &Value) -> String {
    match v {
        Value::String(s) => go_quote(s),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        other => other.to_string(),
    }
}

/// `%q` for the strings this fake sees: JSON string escaping matches Go's for them.
pub(crate) fn go_quote(s: &str) -> String {
    Value::String(s.to_string()).to_string()
}

/// The 422 for a list of field errors on object `name` of `kind` in `group`.
pub(crate) fn invalid(group: &str, kind: &str, name: &str, errs: &[FieldError]) -> ApiError {
    let qualified = if group.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}.{group}")
    };
    let mut seen: Vec<String> = Vec::new();
    for e in errs {
        let m = e.message();
        if !seen.contains(&m) {
            seen.push(m);
        }
    }
    let all = match seen.len() {
        0 => String::new(),
        1 => format!(": {}", seen[0]),
        _ => format!(": [{}]", seen.join(", ")),
    };
    let causes: Vec<Value> = errs
        .iter()
        .map(|e| json!({"reason": e.kind.reason(), "message": e.body(), "field": e.field}))
        .collect();
    ApiError::invalid(format!("{qualified} {} is invalid{all}", go_quote(name)))
        .with_details(json!({"name": name, "group": group, "kind": kind, "causes": causes}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_read_as_the_apiserver_writes_them() {
        let e = FieldError::invalid("spec.revision", json!("a b"), "bad");
        assert_eq!(e.message(), r#"spec.revision: Invalid value: "a b": bad"#);
        assert_eq!(
            FieldError::required("spec.repo", "").message(),
            "spec.repo: Required value"
        );
        assert_eq!(
            FieldError::not_supported("spec.phase", json!("X"), &["A".into(), "B".into()]).body(),
            r#"Unsupported value: "X": supported values: "A", "B""#
        );
        assert_eq!(
            FieldError::too_long("spec.x", 5).body(),
            "Too long: may not be more than 5 bytes"
        );
        assert_eq!(
            FieldError::too_many("spec.l", 4, 3).body(),
            "Too many: 4: must have at most 3 items"
        );
        assert_eq!(
            FieldError::duplicate("spec.l[1]", json!({"name": "a"})).body(),
            r#"Duplicate value: {"name":"a"}"#
        );
        assert_eq!(
            FieldError::new(Kind::Invalid, "", None, "failed rule: x").message(),
            "<nil>: Invalid value: failed rule: x"
        );
    }

    #[test]
    fn the_status_aggregates_the_errors() {
        let one = invalid(
            "coldstart.dev",
            "ColdModel",
            "m",
            &[FieldError::required("spec.repo", "")],
        );
        assert_eq!(
            one.message,
            r#"ColdModel.coldstart.dev "m" is invalid: spec.repo: Required value"#
        );
        let two = invalid(
            "",
            "Node",
            "n",
            &[FieldError::required("a", ""), FieldError::required("b", "")],
        );
        assert_eq!(
            two.message,
            r#"Node "n" is invalid: [a: Required value, b: Required value]"#
        );
        assert_eq!(two.status()["details"]["causes"][1]["field"], "b");
    }
}
