//! Event validation as `pkg/apis/core/validation/events.go` does it. Both APIs store one
//! internal Event, so paths name the internal fields (`message` for events.k8s.io's `note`,
//! `involvedObject` for `regarding`, `reportingController` for core's `reportingComponent`).
//!
//! Every write gets the legacy rules; the 1024-byte limit on the message (and 128 on reason,
//! action, reportingInstance, plus a required reportingController, reportingInstance, action
//! and reason) applies only to a new-style Event, one with `eventTime` set, whichever API
//! wrote it: a core/v1 Event without `eventTime` may have a message of any length. Writes
//! through events.k8s.io/v1 also get the strict rules (`eventTime` required, `type` Normal or
//! Warning, deprecated fields unset; on update most fields immutable).

use serde_json::{Value, json};

use super::{dns_subdomain, qualified_name};
use crate::field::FieldError;
use crate::registry::ResourceType;

const REPORTING_INSTANCE_LIMIT: usize = 128;
const ACTION_LIMIT: usize = 128;
const REASON_LIMIT: usize = 128;
const NOTE_LIMIT: usize = 1024;

/// An Event's fields under their internal names, from either API.
struct View<'a> {
    obj: &'a Value,
    v1: bool,
}

impl<'a> View<'a> {
    fn get(&self, internal: &str) -> Option<&'a Value> {
        let field = match (self.v1, internal) {
            (true, "message") => "/note",
            (true, "involvedObject") => "/regarding",
            (true, "source") => "/deprecatedSource",
            (true, "firstTimestamp") => "/deprecatedFirstTimestamp",
            (true, "lastTimestamp") => "/deprecatedLastTimestamp",
            (true, "count") => "/deprecatedCount",
            (false, "reportingController") => "/reportingComponent",
            (_, "namespace") => "/metadata/namespace",
            (_, f) => return self.obj.get(f).filter(|v| !v.is_null()),
        };
        self.obj.pointer(field).filter(|v| !v.is_null())
    }

    fn str(&self, internal: &str) -> &'a str {
        self.get(internal).and_then(Value::as_str).unwrap_or("")
    }

    fn set(&self, internal: &str) -> bool {
        match self.get(internal) {
            None => false,
            Some(Value::String(s)) => !s.is_empty(),
            Some(Value::Number(n)) => n.as_i64() != Some(0),
            Some(Value::Object(o)) => o.values().any(|v| !v.is_null() && v != ""),
            Some(_) => true,
        }
    }
}

fn at_most(errs: &mut Vec<FieldError>, e: &View<'_>, field: &str, limit: usize) {
    if e.str(field).len() > limit {
        let m = format!("can have at most {limit} characters");
        errs.push(FieldError::invalid(field, json!(""), &m));
    }
}

fn required(errs: &mut Vec<FieldError>, e: &View<'_>, field: &str) {
    if e.str(field).is_empty() {
        errs.push(FieldError::required(field, ""));
    }
}

/// `legacyValidateEvent`.
fn legacy(e: &View<'_>) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let ns = e.str("namespace");
    let io_ns = e
        .get("involvedObject")
        .and_then(|o| o.get("namespace"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let mismatch = || {
        FieldError::invalid(
            "involvedObject.namespace",
            json!(io_ns),
            "does not match event.namespace",
        )
    };
    if !e.set("eventTime") {
        if (io_ns.is_empty() && !ns.is_empty() && ns != "default")
            || (!io_ns.is_empty() && ns != io_ns)
        {
            errs.push(mismatch());
        }
    } else {
        if io_ns.is_empty() && ns != "default" && ns != "kube-system" {
            errs.push(mismatch());
        }
        required(&mut errs, e, "reportingController");
        let rc = e.str("reportingController");
        for m in qualified_name(rc) {
            errs.push(FieldError::invalid("reportingController", json!(rc), &m));
        }
        required(&mut errs, e, "reportingInstance");
        at_most(&mut errs, e, "reportingInstance", REPORTING_INSTANCE_LIMIT);
        required(&mut errs, e, "action");
        at_most(&mut errs, e, "action", ACTION_LIMIT);
        required(&mut errs, e, "reason");
        at_most(&mut errs, e, "reason", REASON_LIMIT);
        at_most(&mut errs, e, "message", NOTE_LIMIT);
    }
    for m in dns_subdomain(ns) {
        errs.push(FieldError::invalid("namespace", json!(ns), &m));
    }
    errs
}

/// The strict rules of a create through events.k8s.io/v1 (`ValidateEventCreate`, less the
/// object meta, which the caller checks).
fn strict_create(e: &View<'_>) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if let Some(series) = e.get("series") {
        if series.get("count").and_then(Value::as_i64).unwrap_or(0) < 2 {
            errs.push(FieldError::invalid(
                "series.count",
                json!(""),
                "should be at least 2",
            ));
        }
        if series.get("lastObservedTime").is_none_or(Value::is_null) {
            errs.push(FieldError::required("series.lastObservedTime", ""));
        }
    }
    if !e.set("eventTime") {
        errs.push(FieldError::required("eventTime", ""));
    }
    let ty = e.str("type");
    if ty != "Normal" && ty != "Warning" {
        errs.push(FieldError::invalid(
            "type",
            json!(""),
            &format!("has invalid value: {ty}"),
        ));
    }
    for f in ["firstTimestamp", "lastTimestamp", "count", "source"] {
        if e.set(f) {
            errs.push(FieldError::invalid(f, json!(""), "needs to be unset"));
        }
    }
    errs
}

/// `ValidateEventUpdate` through events.k8s.io/v1: these fields may not change.
fn strict_update(e: &View<'_>, old: &View<'_>) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for f in [
        "involvedObject",
        "reason",
        "message",
        "source",
        "firstTimestamp",
        "lastTimestamp",
        "count",
        "type",
        "eventTime",
        "action",
        "related",
        "reportingController",
        "reportingInstance",
    ] {
        if e.get(f) != old.get(f) {
            let v = e.get(f).cloned().unwrap_or(Value::Null);
            errs.push(FieldError::invalid(f, v, "field is immutable"));
        }
    }
    errs
}

/// The Event errors of a write through `t` (core/v1 or events.k8s.io/v1).
pub(crate) fn check(t: &ResourceType, old: Option<&Value>, obj: &Value) -> Vec<FieldError> {
    let v1 = t.group == "events.k8s.io";
    let e = View { obj, v1 };
    let mut errs = legacy(&e);
    if v1 {
        match old {
            None => errs.extend(strict_create(&e)),
            Some(o) => errs.extend(strict_update(&e, &View { obj: o, v1 })),
        }
    }
    errs
}
