//! `x-kubernetes-validations`: CEL rules at any level of the schema, evaluated as
//! `apiextensions-apiserver/pkg/apiserver/schema/cel/validation.go` does. `self` is the value
//! at the rule's level (the whole object at the root), `oldSelf` the stored value on update,
//! correlated through object fields and list-map keys; a rule that reads `oldSelf` is a
//! transition rule, skipped without an old value. A `null` value is not validated. A false
//! rule is an error with the rule's `message`, `messageExpression` (when it evaluates to a
//! one-line, non-empty string) or `failed rule: <rule>`, at `fieldPath`, with `reason`; a rule
//! that does not compile or evaluate is an error naming the rule, never a pass.

use std::sync::LazyLock;

use regex::Regex;
use serde_json::{Value, json};

use super::{Node, Rule, child, index, key};
use crate::cel::{CelError, Env};
use crate::field::{FieldError, Kind};

// A constant initialiser.
#[allow(clippy::expect_used)]
static OLD_SELF: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\boldSelf\b").expect("a constant pattern"));

/// Reads one `x-kubernetes-validations` entry.
pub(crate) fn parse(v: &Value) -> Rule {
    let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let rule = s("rule");
    Rule {
        uses_old_self: OLD_SELF.is_match(&rule),
        rule,
        message: s("message"),
        message_expression: s("messageExpression"),
        field_path: s("fieldPath").trim_start_matches('.').to_string(),
        reason: s("reason"),
    }
}

/// `ruleErrorString`: the message when there is one, else the rule.
fn rule_error_string(r: &Rule) -> String {
    if r.message.trim().is_empty() {
        r.rule.trim().to_string()
    } else {
        r.message.trim().to_string()
    }
}

/// The rules of `node` and below that do not compile, as CRD field errors under `path`
/// (`spec.versions[0].schema.openAPIV3Schema`).
pub(crate) fn compile_errors(node: &Node, path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for (i, r) in node.rules.iter().enumerate() {
        for (expr, field) in [
            (&r.rule, "rule"),
            (&r.message_expression, "messageExpression"),
        ] {
            if expr.is_empty() {
                continue;
            }
            if let Err(e) = crate::cel::compile(expr) {
                let p = format!("{path}.x-kubernetes-validations[{i}].{field}");
                errs.push(FieldError::invalid(&p, json!(expr), &e.to_string()));
            }
        }
    }
    for (k, p) in &node.properties {
        errs.extend(compile_errors(p, &format!("{path}.properties[{k}]")));
    }
    if let Some(a) = node.additional.as_deref() {
        errs.extend(compile_errors(a, &format!("{path}.additionalProperties")));
    }
    if let Some(i) = node.items.as_deref() {
        errs.extend(compile_errors(i, &format!("{path}.items")));
    }
    errs
}

/// Evaluates the rules of `s` on `v` and below (`old`: the correlated stored value).
pub(crate) fn check(
    errs: &mut Vec<FieldError>,
    path: &str,
    v: &Value,
    old: Option<&Value>,
    s: &Node,
    root: bool,
) {
    if v.is_null() {
        return;
    }
    let old = old.filter(|o| !o.is_null());
    if !s.rules.is_empty() {
        let mut env = Env::new();
        env.bind("self", v);
        if let Some(o) = old {
            env.bind("oldSelf", o);
        }
        for r in &s.rules {
            if r.uses_old_self && old.is_none() {
                continue;
            }
            if let Some(e) = evaluate(&env, r, path, v, s) {
                errs.push(e);
            }
        }
    }
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                if root && matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                    continue;
                }
                let o = old.and_then(|o| o.get(k));
                if let Some(p) = s.properties.get(k) {
                    check(errs, &child(path, k), x, o, p, false);
                } else if let Some(a) = s.additional.as_deref() {
                    check(errs, &key(path, k), x, o, a, false);
                }
            }
        }
        Value::Array(a) => {
            let Some(items) = s.items.as_deref() else {
                return;
            };
            for (i, x) in a.iter().enumerate() {
                let o = if s.list_type == "map" {
                    old.and_then(|o| correlate(o, x, &s.list_map_keys))
                } else {
                    None
                };
                check(errs, &index(path, i), x, o, items, false);
            }
        }
        _ => {}
    }
}

/// The old list-map item with the same keys as `item`.
fn correlate<'a>(old: &'a Value, item: &Value, keys: &[String]) -> Option<&'a Value> {
    old.as_array()?
        .iter()
        .find(|o| keys.iter().all(|k| o.get(k) == item.get(k)))
}

/// The error one rule gives on `v`, if any.
fn evaluate(env: &Env, r: &Rule, path: &str, v: &Value, s: &Node) -> Option<FieldError> {
    let ty = json!(s.ty);
    match env.eval_bool(&r.rule) {
        Ok(true) => None,
        Ok(false) => {
            let detail = message(env, r);
            let at = if r.field_path.is_empty() {
                path.to_string()
            } else {
                child(path, &r.field_path)
            };
            let value = match v {
                Value::Object(_) | Value::Array(_) => None,
                other => Some(other.clone()),
            };
            Some(match r.reason.as_str() {
                "FieldValueForbidden" => FieldError::forbidden(&at, &detail),
                "FieldValueRequired" => FieldError::required(&at, &detail),
                "FieldValueDuplicate" => FieldError::new(Kind::Duplicate, &at, value, ""),
                _ => FieldError::new(Kind::Invalid, &at, value, &detail),
            })
        }
        Err(CelError::Compile(e)) => Some(FieldError::invalid(
            path,
            ty,
            &format!("rule compile error: compilation failed: {e}"),
        )),
        Err(e) => Some(FieldError::invalid(
            path,
            ty,
            &format!("{e} evaluating rule: {}", rule_error_string(r)),
        )),
    }
}

/// The detail of a false rule: `messageExpression`'s answer when usable, else the message,
/// else `failed rule: <rule>`.
fn message(env: &Env, r: &Rule) -> String {
    if !r.message_expression.is_empty()
        && let Ok(m) = env.eval_string(&r.message_expression)
    {
        let m = m.trim();
        if !m.is_empty() && !m.contains('\n') {
            return m.to_string();
        }
    }
    if r.message.trim().is_empty() {
        format!("failed rule: {}", r.rule.trim())
    } else {
        r.message.trim().to_string()
    }
}
