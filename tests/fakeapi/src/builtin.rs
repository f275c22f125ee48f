//! The checks the apiserver makes on every write whatever the kind: object names (a DNS-1123
//! subdomain for most kinds, a path segment for RBAC objects and core/v1 Events, as each
//! kind's `ValidateXName` says), namespace names, label keys and values
//! (`apimachinery/pkg/api/validation/objectmeta.go`), and the Event rules of
//! `pkg/apis/core/validation/events.go` (see [`events`]); plus the built-in defaults this
//! fake needs (a Secret's `type`).

mod events;

use serde_json::{Value, json};

use crate::field::FieldError;
use crate::registry::ResourceType;

const LABEL_KEY_RE: &str = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";
const LABEL_KEY_MSG: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const LABEL_VALUE_RE: &str = "(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?";
const LABEL_VALUE_MSG: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const DNS_LABEL_RE: &str = "[a-z0-9]([-a-z0-9]*[a-z0-9])?";
const DNS_LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character";
const DNS_SUBDOMAIN_RE: &str = "[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*";
const DNS_SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character";

fn full_match(re: &str, s: &str) -> bool {
    regex::Regex::new(&format!("^{re}$")).is_ok_and(|r| r.is_match(s))
}

/// `RegexError`: `msg (e.g. 'a',  or 'b', regex used for validation is 're')` (the double
/// space is the apiserver's).
fn regex_error(msg: &str, re: &str, examples: &[&str]) -> String {
    let mut s = format!("{msg} (e.g. ");
    for (i, e) in examples.iter().enumerate() {
        if i > 0 {
            s.push_str(" or ");
        }
        s.push_str(&format!("'{e}', "));
    }
    s.push_str(&format!("regex used for validation is '{re}')"));
    s
}

fn max_len(n: usize) -> String {
    format!("must be no more than {n} characters")
}

/// `IsDNS1123Subdomain`.
pub(crate) fn dns_subdomain(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > 253 {
        errs.push(max_len(253));
    }
    if !full_match(DNS_SUBDOMAIN_RE, s) {
        errs.push(regex_error(
            DNS_SUBDOMAIN_MSG,
            DNS_SUBDOMAIN_RE,
            &["example.com"],
        ));
    }
    errs
}

/// `IsDNS1123Label`.
pub(crate) fn dns_label(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > 63 {
        errs.push(max_len(63));
    }
    if !full_match(DNS_LABEL_RE, s) {
        if full_match(DNS_SUBDOMAIN_RE, s) {
            errs.push("must not contain dots".to_string());
        } else {
            errs.push(regex_error(
                DNS_LABEL_MSG,
                DNS_LABEL_RE,
                &["my-name", "123-abc"],
            ));
        }
    }
    errs
}

/// `IsPathSegmentName`.
fn path_segment(s: &str) -> Vec<String> {
    if s == "." || s == ".." {
        return vec![format!("may not be '{s}'")];
    }
    ["/", "%"]
        .iter()
        .filter(|c| s.contains(*c))
        .map(|c| format!("may not contain '{c}'"))
        .collect()
}

/// `IsQualifiedName` (= `IsLabelKey`).
pub(crate) fn qualified_name(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    let examples = ["MyName", "my.name", "123-abc"];
    let parts: Vec<&str> = value.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                errs.push("prefix part must be non-empty".to_string());
            } else {
                errs.extend(
                    dns_subdomain(prefix)
                        .into_iter()
                        .map(|m| format!("prefix part {m}")),
                );
            }
            name
        }
        _ => {
            return vec![format!(
                "a valid label key {} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')",
                regex_error(LABEL_KEY_MSG, LABEL_KEY_RE, &examples)
            )];
        }
    };
    if name.is_empty() {
        errs.push("name part must be non-empty".to_string());
    } else if name.len() > 63 {
        errs.push(format!("name part {}", max_len(63)));
    }
    if !full_match(LABEL_KEY_RE, name) {
        errs.push(format!(
            "name part {}",
            regex_error(LABEL_KEY_MSG, LABEL_KEY_RE, &examples)
        ));
    }
    errs
}

/// `IsValidLabelValue`.
fn label_value(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > 63 {
        errs.push(max_len(63));
    }
    if !full_match(LABEL_VALUE_RE, value) {
        errs.push(regex_error(
            LABEL_VALUE_MSG,
            LABEL_VALUE_RE,
            &["MyValue", "my_value", "12345"],
        ));
    }
    errs
}

/// Whether the kind's names need only be path segments (`ValidateRBACName`; core/v1 Events,
/// which get no object-meta validation beyond the common one).
fn path_segment_names(t: &ResourceType) -> bool {
    (t.group == "rbac.authorization.k8s.io") || (t.group.is_empty() && t.kind == "Event")
}

fn meta_str<'a>(obj: &'a Value, f: &str) -> &'a str {
    obj.pointer(&format!("/metadata/{f}"))
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// `metadata`: name, namespace and labels.
fn object_meta(t: &ResourceType, obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let name = meta_str(obj, "name");
    let name_errs = if path_segment_names(t) {
        path_segment(name)
    } else {
        let mut e = dns_subdomain(name);
        e.extend(path_segment(name));
        e
    };
    for m in name_errs {
        errs.push(FieldError::invalid("metadata.name", json!(name), &m));
    }
    let ns = meta_str(obj, "namespace");
    if t.namespaced && !ns.is_empty() {
        for m in dns_label(ns) {
            errs.push(FieldError::invalid("metadata.namespace", json!(ns), &m));
        }
    }
    if let Some(labels) = obj.pointer("/metadata/labels").and_then(Value::as_object) {
        let mut keys: Vec<&String> = labels.keys().collect();
        keys.sort();
        for k in keys {
            for m in qualified_name(k) {
                errs.push(FieldError::invalid("metadata.labels", json!(k), &m));
            }
            let v = labels[k].as_str().unwrap_or("");
            for m in label_value(v) {
                errs.push(FieldError::invalid("metadata.labels", json!(v), &m));
            }
        }
    }
    errs
}

/// The built-in defaults the fake applies (`SetDefaults_Secret`).
pub(crate) fn default(t: &ResourceType, obj: &mut Value) {
    if t.group.is_empty() && t.kind == "Secret" && obj.get("type").is_none_or(Value::is_null) {
        obj["type"] = json!("Opaque");
    }
}

/// The errors of a write of `obj` (`old`: the stored object on update).
pub(crate) fn check(t: &ResourceType, old: Option<&Value>, obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if t.kind == "Event" && (t.group.is_empty() || t.group == "events.k8s.io") {
        errs.extend(events::check(t, old, obj));
    }
    errs.extend(object_meta(t, obj));
    if t.group == "apiextensions.k8s.io" && t.kind == "CustomResourceDefinition" {
        let want = format!(
            "{}.{}",
            obj.pointer("/spec/names/plural")
                .and_then(Value::as_str)
                .unwrap_or(""),
            obj.pointer("/spec/group")
                .and_then(Value::as_str)
                .unwrap_or("")
        );
        let name = meta_str(obj, "name");
        if name != want {
            let m = "must be spec.names.plural+\".\"+spec.group";
            errs.push(FieldError::invalid("metadata.name", json!(name), m));
        }
    }
    errs
}

#[cfg(test)]
mod tests;
