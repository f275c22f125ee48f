//! kubectl's label-selector syntax (`a=b`, `a==b`, `a!=b`, `a in (x,y)`, `a notin (x)`, `a`,
//! `!a`, comma-separated: every requirement must hold) parsed into a [`LabelSelector`], so
//! `coldctl --selector` writes exactly what the API server would evaluate, and [`matches`],
//! which evaluates one against a node's labels as the API server does.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};

#[cfg(test)]
mod tests;

/// A selector that cannot be parsed; the message names the requirement and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid label selector {requirement:?}: {reason}")]
pub struct SelectorError {
    /// The requirement (or the whole selector) at fault.
    pub requirement: String,
    /// What is wrong, on one line, for people.
    pub reason: String,
}

impl SelectorError {
    fn new(requirement: &str, reason: impl Into<String>) -> Self {
        SelectorError {
            requirement: requirement.to_string(),
            reason: reason.into(),
        }
    }

    /// Stable label for metrics and `-o json` errors.
    pub fn metric_label(&self) -> &'static str {
        "invalid_selector"
    }
}

/// Parses kubectl selector syntax. Equality requirements become `matchLabels` (a key given
/// twice with `=` becomes an `In` expression for the second value, which selects nothing
/// unless both agree, as kubectl would); the others become `matchExpressions`.
pub fn parse_selector(text: &str) -> Result<LabelSelector, SelectorError> {
    let parts = split_top(text).map_err(|reason| SelectorError::new(text, reason))?;
    if parts.is_empty() {
        return Err(SelectorError::new(text, "empty selector"));
    }
    let mut labels = BTreeMap::new();
    let mut exprs = Vec::new();
    for part in parts {
        match parse_requirement(part)? {
            Requirement::Equals(k, v) if !labels.contains_key(&k) => {
                labels.insert(k, v);
            }
            Requirement::Equals(k, v) => exprs.push(expr(k, "In", Some(vec![v]))),
            Requirement::Expr(e) => exprs.push(e),
        }
    }
    Ok(LabelSelector {
        match_labels: (!labels.is_empty()).then_some(labels),
        match_expressions: (!exprs.is_empty()).then_some(exprs),
    })
}

enum Requirement {
    Equals(String, String),
    Expr(LabelSelectorRequirement),
}

fn expr(key: String, op: &str, values: Option<Vec<String>>) -> LabelSelectorRequirement {
    LabelSelectorRequirement {
        key,
        operator: op.to_string(),
        values,
    }
}

/// Splits on commas outside parentheses; trims each part; rejects empty parts and unbalanced
/// parentheses.
fn split_top(s: &str) -> Result<Vec<&str>, String> {
    let (mut out, mut depth, mut start) = (Vec::new(), 0i32, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
        if !(0..=1).contains(&depth) {
            return Err("unbalanced or nested parentheses".into());
        }
    }
    if depth != 0 {
        return Err("unbalanced parentheses".into());
    }
    out.push(&s[start..]);
    let parts: Vec<&str> = out.into_iter().map(str::trim).collect();
    if parts.len() == 1 && parts[0].is_empty() {
        return Ok(Vec::new());
    }
    if parts.iter().any(|p| p.is_empty()) {
        return Err("empty requirement between commas".into());
    }
    Ok(parts)
}

fn parse_requirement(p: &str) -> Result<Requirement, SelectorError> {
    let bad = |reason: &str| SelectorError::new(p, reason);
    if let Some(key) = p.strip_prefix('!') {
        let key = key.trim();
        check_key(key).map_err(|r| bad(&r))?;
        return Ok(Requirement::Expr(expr(key.into(), "DoesNotExist", None)));
    }
    let key_end = p
        .find(|c: char| c.is_whitespace() || matches!(c, '=' | '!' | '(' | ')'))
        .unwrap_or(p.len());
    let (key, rest) = (&p[..key_end], p[key_end..].trim_start());
    check_key(key).map_err(|r| bad(&r))?;
    let (op, value) = if rest.is_empty() {
        return Ok(Requirement::Expr(expr(key.into(), "Exists", None)));
    } else if let Some(v) = rest.strip_prefix("!=") {
        ("!=", v)
    } else if let Some(v) = rest.strip_prefix("==") {
        ("=", v)
    } else if let Some(v) = rest.strip_prefix('=') {
        ("=", v)
    } else if let Some(v) = word(rest, "notin") {
        ("notin", v)
    } else if let Some(v) = word(rest, "in") {
        ("in", v)
    } else {
        return Err(bad(
            "expected =, ==, !=, in, notin, or nothing after the key",
        ));
    };
    match op {
        "=" | "!=" => {
            let v = value.trim();
            check_value(v).map_err(|r| bad(&r))?;
            Ok(match op {
                "=" => Requirement::Equals(key.into(), v.into()),
                _ => Requirement::Expr(expr(key.into(), "NotIn", Some(vec![v.into()]))),
            })
        }
        _ => {
            let values = set(value).map_err(|r| bad(&r))?;
            let op = if op == "in" { "In" } else { "NotIn" };
            Ok(Requirement::Expr(expr(key.into(), op, Some(values))))
        }
    }
}

/// `rest` with the operator word `w` and the whitespace after it removed, when `rest` starts
/// with `w` followed by whitespace or `(`.
fn word<'a>(rest: &'a str, w: &str) -> Option<&'a str> {
    let after = rest.strip_prefix(w)?;
    (after.starts_with('(') || after.starts_with(char::is_whitespace)).then(|| after.trim_start())
}

/// The values of `(x, y)`: at least one, each valid.
fn set(text: &str) -> Result<Vec<String>, String> {
    let inner = text
        .trim()
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or("expected a parenthesised list of values: (x,y)")?;
    let values: Vec<String> = inner.split(',').map(|v| v.trim().to_string()).collect();
    if values.iter().all(String::is_empty) {
        return Err("empty value list".into());
    }
    for v in &values {
        check_value(v)?;
    }
    Ok(values)
}

/// A label key: an optional DNS-subdomain prefix and `/`, then a name of at most 63
/// characters, alphanumeric at both ends, with `-`, `_` and `.` inside.
fn check_key(key: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err("missing label key".into());
    }
    let name = match key.split_once('/') {
        Some((prefix, name)) => {
            let ok = !prefix.is_empty()
                && prefix.len() <= 253
                && prefix.split('.').all(|l| {
                    !l.is_empty()
                        && l.len() <= 63
                        && l.bytes()
                            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                        && !l.starts_with('-')
                        && !l.ends_with('-')
                });
            if !ok {
                return Err(format!("key prefix {prefix:?} is not a DNS subdomain"));
            }
            name
        }
        None => key,
    };
    if name.is_empty() {
        return Err("missing label key name".into());
    }
    check_name(name).map_err(|r| format!("key {key:?}: {r}"))
}

/// A label value: empty, or a name as in [`check_key`].
fn check_value(v: &str) -> Result<(), String> {
    if v.is_empty() {
        return Ok(());
    }
    check_name(v).map_err(|r| format!("value {v:?}: {r}"))
}

fn check_name(n: &str) -> Result<(), String> {
    if n.len() > 63 {
        return Err("longer than 63 characters".into());
    }
    if !n
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err("only letters, digits, '-', '_' and '.' are allowed".into());
    }
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if !alnum(n.chars().next()) || !alnum(n.chars().last()) {
        return Err("must start and end with a letter or digit".into());
    }
    Ok(())
}

/// Whether `selector` selects an object with `labels`. No selector selects everything, as does
/// an empty one. An unknown operator selects nothing (the API server rejects such selectors, so
/// a node is never warmed on a selector we cannot read).
pub fn matches(selector: Option<&LabelSelector>, labels: &BTreeMap<String, String>) -> bool {
    let Some(sel) = selector else {
        return true;
    };
    let labels_ok = sel
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    labels_ok
        && sel
            .match_expressions
            .iter()
            .flatten()
            .all(|req| requirement(req, labels))
}

fn requirement(req: &LabelSelectorRequirement, labels: &BTreeMap<String, String>) -> bool {
    let value = labels.get(&req.key);
    let values = req.values.as_deref().unwrap_or_default();
    match req.operator.as_str() {
        "In" => value.is_some_and(|v| values.contains(v)),
        "NotIn" => value.is_none_or(|v| !values.contains(v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        _ => false,
    }
}
