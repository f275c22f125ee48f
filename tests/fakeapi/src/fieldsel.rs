//! Which field labels a list or watch may select on, per resource, and their values, as the
//! apiserver's field label conversion functions and `ToSelectableFields` define them
//! (`pkg/apis/core/v1/conversion.go`, `pkg/apis/events/v1/conversion.go`,
//! `pkg/registry/core/{pod,event}/strategy.go`; custom resources: `metadata.name`,
//! `metadata.namespace` and the CRD's `selectableFields`). Any other label is a 400
//! `field label not supported: <label>`.
//!
//! Nodes take `metadata.name` and `spec.unschedulable` only (their conversion function has
//! no `metadata.namespace`).

use serde_json::Value;

use crate::error::ApiError;
use crate::selector::{Selector, field};
use crate::store::Store;

const META: &[&str] = &["metadata.name", "metadata.namespace"];
const NODE: &[&str] = &["metadata.name", "spec.unschedulable"];
const POD: &[&str] = &[
    "metadata.name",
    "metadata.namespace",
    "spec.nodeName",
    "spec.restartPolicy",
    "spec.schedulerName",
    "spec.serviceAccountName",
    "spec.hostNetwork",
    "status.phase",
    "status.podIP",
    "status.podIPs",
    "status.nominatedNodeName",
    "spec.host",
];
const SECRET: &[&str] = &["type", "metadata.namespace", "metadata.name"];
const CORE_EVENT: &[&str] = &[
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.name",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.resourceVersion",
    "involvedObject.fieldPath",
    "reason",
    "reportingComponent",
    "source",
    "type",
    "metadata.namespace",
    "metadata.name",
];
const EVENT_V1: &[&str] = &[
    "reason",
    "regarding.kind",
    "regarding.namespace",
    "regarding.name",
    "regarding.uid",
    "regarding.apiVersion",
    "regarding.resourceVersion",
    "regarding.fieldPath",
    "reportingController",
    "source",
    "type",
    "metadata.namespace",
    "metadata.name",
];

/// 400 unless every label of `sel` is selectable on `ty`.
pub(crate) fn check(store: &Store, ty: usize, sel: &Selector) -> Result<(), ApiError> {
    let t = &store.types[ty];
    let fixed = match (t.group.as_str(), t.kind.as_str()) {
        ("", "Node") => NODE,
        ("", "Pod") => POD,
        ("", "Secret") => SECRET,
        ("", "Event") => CORE_EVENT,
        ("events.k8s.io", "Event") => EVENT_V1,
        _ => META,
    };
    let extra = store
        .schema(ty)
        .map(|s| s.selectable.as_slice())
        .unwrap_or(&[]);
    for k in sel.keys() {
        if !fixed.contains(&k) && !extra.iter().any(|e| e == k) {
            return Err(ApiError::bad_request(format!(
                "field label not supported: {k}"
            )));
        }
    }
    Ok(())
}

fn s<'a>(obj: &'a Value, p: &str) -> &'a str {
    obj.pointer(p).and_then(Value::as_str).unwrap_or("")
}

/// The value of field label `label` on `obj`; a missing field reads as empty, a missing
/// boolean as `false`, as the server's selectable field sets give them.
pub(crate) fn value(obj: &Value, label: &str) -> String {
    let v1_event = obj["apiVersion"] == "events.k8s.io/v1";
    let kind = obj["kind"].as_str().unwrap_or("");
    match (kind, label) {
        ("Node", "spec.unschedulable") | ("Pod", "spec.hostNetwork") => {
            let p = format!("/{}", label.replace('.', "/"));
            obj.pointer(&p)
                .and_then(Value::as_bool)
                .unwrap_or(false)
                .to_string()
        }
        ("Pod", "spec.host") => s(obj, "/spec/nodeName").to_string(),
        ("Pod", "status.podIPs") => s(obj, "/status/podIPs/1/ip").to_string(),
        ("Event", "source") if v1_event => {
            let c = s(obj, "/deprecatedSource/component");
            if c.is_empty() {
                s(obj, "/reportingController")
            } else {
                c
            }
            .to_string()
        }
        ("Event", "source") => {
            let c = s(obj, "/source/component");
            if c.is_empty() {
                s(obj, "/reportingComponent")
            } else {
                c
            }
            .to_string()
        }
        _ => field(obj, label).unwrap_or_default(),
    }
}
