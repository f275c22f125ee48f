//! Label selectors (`k=v`, `k==v`, `k!=v`, `k in (a,b)`, `k notin (a,b)`, `k`, `!k`) and field
//! selectors (`path=v`, `path==v`, `path!=v` on any dotted path such as `metadata.name`).

use serde_json::Value;

use crate::error::ApiError;

#[derive(Debug, Clone, PartialEq)]
enum Op {
    Eq(String),
    NotEq(String),
    In(Vec<String>),
    NotIn(Vec<String>),
    Exists,
    NotExists,
}

/// A parsed selector: every requirement must hold.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Selector {
    reqs: Vec<(String, Op)>,
    fields: bool,
}

/// Splits on commas outside parentheses.
fn split_top(s: &str) -> Vec<&str> {
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
    }
    out.push(&s[start..]);
    out.into_iter()
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect()
}

fn set_values(rest: &str, whole: &str) -> Result<Vec<String>, ApiError> {
    let inner = rest
        .trim()
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| ApiError::bad_request(format!("unable to parse requirement: {whole:?}")))?;
    Ok(inner.split(',').map(|v| v.trim().to_string()).collect())
}

fn parse_req(p: &str, fields: bool) -> Result<(String, Op), ApiError> {
    let bad = || ApiError::bad_request(format!("unable to parse requirement: {p:?}"));
    if let Some((k, v)) = p.split_once("!=") {
        return Ok((k.trim().to_string(), Op::NotEq(v.trim().to_string())));
    }
    if let Some((k, v)) = p.split_once("==").or_else(|| p.split_once('=')) {
        return Ok((k.trim().to_string(), Op::Eq(v.trim().to_string())));
    }
    if fields {
        return Err(bad());
    }
    if let Some((k, rest)) = p.split_once(" notin ") {
        return Ok((k.trim().to_string(), Op::NotIn(set_values(rest, p)?)));
    }
    if let Some((k, rest)) = p.split_once(" in ") {
        return Ok((k.trim().to_string(), Op::In(set_values(rest, p)?)));
    }
    if p.contains(char::is_whitespace) || p.contains('(') {
        return Err(bad());
    }
    match p.strip_prefix('!') {
        Some(k) => Ok((k.trim().to_string(), Op::NotExists)),
        None => Ok((p.to_string(), Op::Exists)),
    }
}

impl Selector {
    /// Parses a `labelSelector` (or, with `fields`, a `fieldSelector`); empty matches all.
    pub(crate) fn parse(s: Option<&str>, fields: bool) -> Result<Selector, ApiError> {
        let reqs = split_top(s.unwrap_or(""))
            .into_iter()
            .map(|p| parse_req(p, fields))
            .collect::<Result<_, _>>()?;
        Ok(Selector { reqs, fields })
    }

    /// Whether the selector has no requirement (selects everything).
    pub(crate) fn is_empty(&self) -> bool {
        self.reqs.is_empty()
    }

    /// The keys (label keys or field labels) the requirements name.
    pub(crate) fn keys(&self) -> impl Iterator<Item = &str> {
        self.reqs.iter().map(|(k, _)| k.as_str())
    }

    /// Whether `obj` satisfies every requirement.
    pub(crate) fn matches(&self, obj: &Value) -> bool {
        self.reqs.iter().all(|(k, op)| {
            let v = if self.fields {
                Some(crate::fieldsel::value(obj, k))
            } else {
                obj.pointer("/metadata/labels")
                    .and_then(|l| l.get(k))
                    .and_then(Value::as_str)
                    .map(str::to_string)
            };
            match op {
                Op::Eq(want) => v.as_deref() == Some(want.as_str()),
                Op::NotEq(want) => v.as_deref() != Some(want.as_str()),
                Op::In(set) => v.is_some_and(|v| set.contains(&v)),
                Op::NotIn(set) => !v.is_some_and(|v| set.contains(&v)),
                Op::Exists => v.is_some(),
                Op::NotExists => v.is_none(),
            }
        })
    }
}

/// A field's value as a string; a missing field reads as empty, as on the real server.
pub(crate) fn field(obj: &Value, path: &str) -> Option<String> {
    let mut cur = obj;
    for part in path.split('.') {
        match cur.get(part) {
            Some(v) => cur = v,
            None => return Some(String::new()),
        }
    }
    Some(match cur {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn label_requirements() {
        let o = json!({"metadata": {"name": "n1", "labels": {"a": "1", "b": "x"}}});
        let m = |s: &str| Selector::parse(Some(s), false).unwrap().matches(&o);
        assert!(m("a=1"));
        assert!(m("a==1,b"));
        assert!(!m("a!=1"));
        assert!(m("b in (x, y),a notin (2)"));
        assert!(!m("b in (y)"));
        assert!(m("!c"));
        assert!(!m("!a"));
        assert!(m(""));
        assert!(Selector::parse(Some("a in x"), false).is_err());
    }

    #[test]
    fn field_requirements() {
        let o = json!({"metadata": {"name": "n1", "namespace": "ns"}});
        let m = |s: &str| Selector::parse(Some(s), true).unwrap().matches(&o);
        assert!(m("metadata.name=n1"));
        assert!(m("metadata.name=n1,metadata.namespace==ns"));
        assert!(!m("metadata.name!=n1"));
        assert!(m("spec.nodeName="));
        assert!(Selector::parse(Some("metadata.name"), true).is_err());
    }
}
