//! Value validation against a structural schema, with the messages of
//! `k8s.io/kube-openapi/pkg/validation` (`<path> in body should match '<re>'`, ...) turned
//! into field errors as `apiextensions-apiserver`'s `kubeOpenAPIResultToFieldErrors` does;
//! then the checks after it: embedded resources (`schema/objectmeta`) and
//! `x-kubernetes-list-type` sets and maps (`schema/listtype`).
//!
//! Paths follow kube-openapi: `spec.a`, a list item `spec.l[0]`, a map value `spec.m.key`.

use serde_json::{Value, json};

use super::{Node, child, format, index};
use crate::field::FieldError;

/// The JSON type of a value as the openapi validator names it.
fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "number",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn type_ok(ty: &str, v: &Value) -> bool {
    let actual = json_type(v);
    match ty {
        "" => true,
        "integer" => {
            actual == "integer"
                || v.as_f64()
                    .is_some_and(|f| actual == "number" && f.fract() == 0.0)
        }
        "number" => matches!(actual, "integer" | "number"),
        other => other == actual,
    }
}

/// Go's `%v` of a float64: shortest digits, in exponent form below 1e-4 and from 1e+06 up.
pub(crate) fn go_float(f: f64) -> String {
    let sci = format!("{f:e}");
    let Some((mantissa, exp)) = sci.split_once('e') else {
        return format!("{f}");
    };
    let e: i32 = exp.parse().unwrap_or(0);
    if f == 0.0 || !f.is_finite() || (-4..6).contains(&e) {
        return format!("{f}");
    }
    let sign = if e < 0 { '-' } else { '+' };
    format!("{mantissa}e{sign}{:02}", e.abs())
}

/// A bound as the message prints it: as an integer for integer data, else as Go prints floats.
fn bound(b: f64, data: &Value) -> String {
    if data.is_i64() || data.is_u64() {
        format!("{}", b as i64)
    } else {
        go_float(b)
    }
}

/// Validates `v` at `path` against `s` (`root`: the object itself, whose `apiVersion`, `kind`
/// and `metadata` are the built-in checks' business).
pub(crate) fn value(errs: &mut Vec<FieldError>, path: &str, v: &Value, s: &Node, root: bool) {
    if v.is_null() {
        if !s.nullable && !s.ty.is_empty() {
            let m = format!("{path} in body must be of type {}: \"null\"", s.ty);
            errs.push(FieldError::type_invalid(path, json!("null"), &m));
        }
        return;
    }
    if s.int_or_string {
        if !matches!(json_type(v), "integer" | "string") {
            let actual = json_type(v);
            let m = format!("{path} in body must be of type integer,string: {actual:?}");
            errs.push(FieldError::type_invalid(path, json!(actual), &m));
            return;
        }
    } else if !type_ok(&s.ty, v) {
        let actual = json_type(v);
        let m = format!("{path} in body must be of type {}: {actual:?}", s.ty);
        errs.push(FieldError::type_invalid(path, json!(actual), &m));
        return;
    }
    match v {
        Value::String(x) => string(errs, path, x, s),
        Value::Number(_) => number(errs, path, v, s),
        Value::Array(a) => array(errs, path, a, s),
        _ => {}
    }
    if let Some(allowed) = &s.enumeration
        && !allowed.contains(v)
    {
        let names: Vec<String> = allowed
            .iter()
            .map(|a| a.as_str().map_or_else(|| a.to_string(), str::to_string))
            .collect();
        errs.push(FieldError::not_supported(path, v.clone(), &names));
    }
    if let Value::Object(m) = v {
        object(errs, path, m, s, root);
    }
}

fn string(errs: &mut Vec<FieldError>, path: &str, x: &str, s: &Node) {
    let chars = x.chars().count() as i64;
    if let Some(max) = s.max_length
        && chars > max
    {
        errs.push(FieldError::too_long(path, max));
    }
    if let Some(min) = s.min_length
        && chars < min
    {
        let m = format!("{path} in body should be at least {min} chars long");
        errs.push(FieldError::invalid(path, json!(x), &m));
    }
    if let Some((p, re)) = &s.pattern
        && !re.is_match(x)
    {
        let m = format!("{path} in body should match '{p}'");
        errs.push(FieldError::invalid(path, json!(x), &m));
    }
    if !s.format.is_empty() && s.ty != "integer" && s.ty != "number" && !format::valid(&s.format, x)
    {
        let m = format!("{path} in body must be of type {}: {x:?}", s.format);
        errs.push(FieldError::type_invalid(path, json!(x), &m));
    }
}

fn number(errs: &mut Vec<FieldError>, path: &str, v: &Value, s: &Node) {
    let f = v.as_f64().unwrap_or(0.0);
    if let Some(m) = s.multiple_of
        && m > 0.0
        && (f / m).fract() != 0.0
    {
        let msg = format!("{path} in body should be a multiple of {}", bound(m, v));
        errs.push(FieldError::invalid(path, v.clone(), &msg));
    }
    if let Some(max) = s.maximum
        && (f > max || (s.exclusive_maximum && f >= max))
    {
        let rel = if s.exclusive_maximum {
            "less than"
        } else {
            "less than or equal to"
        };
        let msg = format!("{path} in body should be {rel} {}", bound(max, v));
        errs.push(FieldError::invalid(path, v.clone(), &msg));
    }
    if let Some(min) = s.minimum
        && (f < min || (s.exclusive_minimum && f <= min))
    {
        let rel = if s.exclusive_minimum {
            "greater than"
        } else {
            "greater than or equal to"
        };
        let msg = format!("{path} in body should be {rel} {}", bound(min, v));
        errs.push(FieldError::invalid(path, v.clone(), &msg));
    }
}

fn array(errs: &mut Vec<FieldError>, path: &str, a: &[Value], s: &Node) {
    let n = a.len() as i64;
    if let Some(min) = s.min_items
        && n < min
    {
        let m = format!("{path} in body should have at least {min} items");
        errs.push(FieldError::invalid(path, json!(n), &m));
    }
    if let Some(max) = s.max_items
        && n > max
    {
        errs.push(FieldError::too_many(path, a.len(), max));
    }
    let Some(items) = s.items.as_deref() else {
        return;
    };
    for (i, item) in a.iter().enumerate() {
        let p = index(path, i);
        value(errs, &p, item, items, false);
        // A list-map's keys must be given (the CRD makes them required or defaulted).
        if s.list_type == "map"
            && let Value::Object(m) = item
        {
            for k in &s.list_map_keys {
                if !m.contains_key(k) && !items.required.contains(k) {
                    errs.push(FieldError::required(&child(&p, k), ""));
                }
            }
        }
    }
}

fn object(
    errs: &mut Vec<FieldError>,
    path: &str,
    m: &serde_json::Map<String, Value>,
    s: &Node,
    root: bool,
) {
    let n = m.len() as i64;
    if let Some(min) = s.min_properties
        && n < min
    {
        let msg = format!("{path} in body should have at least {min} properties");
        errs.push(FieldError::invalid(path, json!(n), &msg));
    }
    if let Some(max) = s.max_properties
        && n > max
    {
        errs.push(FieldError::too_many(path, m.len(), max));
    }
    let skip = |k: &str| root && matches!(k, "apiVersion" | "kind" | "metadata");
    if let Some(add) = s.additional.as_deref() {
        for (k, v) in m {
            if !s.properties.contains_key(k) && !skip(k) {
                value(errs, &child(path, k), v, add, false);
            }
        }
    }
    for (k, prop) in &s.properties {
        if let Some(v) = m.get(k)
            && !skip(k)
        {
            value(errs, &child(path, k), v, prop, false);
        }
    }
    for k in &s.required {
        if !m.contains_key(k) {
            errs.push(FieldError::required(&child(path, k), ""));
        }
    }
}

/// Embedded resources and list-type sets and maps, after the value validation.
pub(crate) fn lists(errs: &mut Vec<FieldError>, path: &str, v: &Value, s: &Node) {
    match v {
        Value::Object(m) => {
            if s.embedded {
                embedded(errs, path, m);
            }
            for (k, x) in m {
                if let Some(f) = s.field(k) {
                    lists(errs, &child(path, k), x, f);
                }
            }
        }
        Value::Array(a) => {
            match s.list_type.as_str() {
                "set" => {
                    for i in duplicates(a) {
                        errs.push(FieldError::duplicate(&index(path, i), a[i].clone()));
                    }
                }
                "map" => list_map(errs, path, a, &s.list_map_keys),
                _ => {}
            }
            if let Some(items) = s.items.as_deref() {
                for (i, x) in a.iter().enumerate() {
                    lists(errs, &index(path, i), x, items);
                }
            }
        }
        _ => {}
    }
}

/// The index of each value's second appearance (once per value).
fn duplicates(values: &[Value]) -> Vec<usize> {
    let mut out = Vec::new();
    for (i, v) in values.iter().enumerate() {
        let before = values[..i].iter().filter(|w| *w == v).count();
        if before == 1 {
            out.push(i);
        }
    }
    out
}

fn list_map(errs: &mut Vec<FieldError>, path: &str, a: &[Value], keys: &[String]) {
    if let Some((i, x)) = a
        .iter()
        .enumerate()
        .find(|(_, x)| !x.is_object() && !x.is_null())
    {
        let m = "must be an object for an array of list-type map";
        errs.push(FieldError::invalid(&index(path, i), x.clone(), m));
        return;
    }
    let key_of = |x: &Value| {
        let mut k = serde_json::Map::new();
        for f in keys {
            if let Some(v) = x.get(f) {
                k.insert(f.clone(), v.clone());
            }
        }
        Value::Object(k)
    };
    let ks: Vec<Value> = a.iter().map(key_of).collect();
    for i in duplicates(&ks) {
        errs.push(FieldError::duplicate(&index(path, i), ks[i].clone()));
    }
}

/// `validateEmbeddedResource`: `apiVersion` and `kind` required and non-empty strings.
fn embedded(errs: &mut Vec<FieldError>, path: &str, m: &serde_json::Map<String, Value>) {
    for f in ["apiVersion", "kind"] {
        match m.get(f) {
            None => errs.push(FieldError::required(&child(path, f), "")),
            Some(Value::String(s)) if s.is_empty() => {
                errs.push(FieldError::invalid(
                    &child(path, f),
                    json!(""),
                    "must not be empty",
                ));
            }
            Some(Value::String(_)) => {}
            Some(other) => {
                errs.push(FieldError::invalid(
                    &child(path, f),
                    other.clone(),
                    "must be a string",
                ));
            }
        }
    }
}
