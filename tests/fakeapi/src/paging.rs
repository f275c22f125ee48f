//! Chunked lists (`limit` and `continue`) as the etcd3 store serves them: items in key order
//! (namespace, then name); a page that leaves items out carries `metadata.continue`, an opaque
//! token naming the first page's resourceVersion and the last key served, and
//! `remainingItemCount` when no selector filters the list. Later pages show the objects as they
//! were at the first page's version, rebuilt from the store's history; a token older than the
//! history gets 410 Expired, with a token that continues from the current state.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::selector::Selector;
use crate::store::{Change, Key, Store};

/// One page of a list.
pub(crate) struct Page {
    pub(crate) items: Vec<Value>,
    pub(crate) rv: u64,
    pub(crate) next: Option<String>,
    pub(crate) remaining: Option<usize>,
}

const EXPIRED: &str = "The provided continue parameter is too old to display a consistent list \
    result. You can start a new list without the continue parameter, or use the continue token \
    in this response to retrieve the remainder of the results. Continuing with the provided \
    token results in an inconsistent list - objects that were created, modified, or deleted \
    between the time the first chunk was returned and now may show up in the list.";

fn encode(rv: i64, start: &str) -> String {
    STANDARD.encode(json!({"v": "meta.k8s.io/v1", "rv": rv, "start": start}).to_string())
}

fn decode(token: &str) -> Result<(i64, String), ApiError> {
    let bad = |why: &str| ApiError::bad_request(format!("continue key is not valid: {why}"));
    let bytes = STANDARD.decode(token).map_err(|e| bad(&e.to_string()))?;
    let v: Value = serde_json::from_slice(&bytes).map_err(|e| bad(&e.to_string()))?;
    if v["v"] != "meta.k8s.io/v1" {
        return Err(bad(
            "incorrect encoded start resourceVersion (version meta.k8s.io/v1)",
        ));
    }
    let rv = v["rv"]
        .as_i64()
        .ok_or_else(|| bad("missing resourceVersion"))?;
    let start = v["start"].as_str().ok_or_else(|| bad("missing start"))?;
    Ok((rv, start.to_string()))
}

fn key_of(obj: &Value) -> (String, String) {
    let m = |f: &str| {
        obj.pointer(&format!("/metadata/{f}"))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    (m("namespace"), m("name"))
}

/// The objects of `ty` as they were at `rv` (>= the history floor), by namespace and name.
fn state_at(store: &Store, ty: usize, rv: u64) -> Vec<((String, String), Value)> {
    let mut objs: std::collections::BTreeMap<(String, String), Value> = store
        .objects()
        .iter()
        .filter(|(k, _)| k.0 == ty)
        .map(|((_, ns, n), o): (&Key, &Value)| ((ns.clone(), n.clone()), o.clone()))
        .collect();
    let later: Vec<_> = store.events_after(rv).filter(|e| e.ty == ty).collect();
    for ev in later.into_iter().rev() {
        let k = key_of(&ev.object);
        match (ev.change, &ev.old) {
            (Change::Added, _) => {
                objs.remove(&k);
            }
            (Change::Modified | Change::Deleted, Some(old)) => {
                objs.insert(k, old.clone());
            }
            (Change::Modified | Change::Deleted, None) => {
                objs.insert(k, ev.object.clone());
            }
        }
    }
    objs.into_iter().collect()
}

/// A list of `ty` (in `ns` when given) with both selectors, paged by `limit` (0: no limit)
/// from `cont`.
pub(crate) fn list(
    store: &Store,
    ty: usize,
    ns: Option<&str>,
    labels: &Selector,
    fields: &Selector,
    limit: usize,
    cont: Option<&str>,
) -> Result<Page, ApiError> {
    let (rv, start) = match cont.filter(|c| !c.is_empty()) {
        None => (store.rv(), String::new()),
        Some(c) => {
            let (rv, start) = decode(c)?;
            if rv < 0 {
                (store.rv(), start)
            } else {
                let rv = u64::try_from(rv).unwrap_or(0);
                if rv < store.floor() {
                    return Err(ApiError::gone(EXPIRED.to_string())
                        .with_metadata(json!({"continue": encode(-1, &start)})));
                }
                (rv, start)
            }
        }
    };
    let matching: Vec<(String, Value)> = state_at(store, ty, rv)
        .into_iter()
        .filter(|((n, _), o)| {
            ns.is_none_or(|want| want == n) && labels.matches(o) && fields.matches(o)
        })
        .map(|((n, name), o)| (format!("{n}/{name}\u{0}"), o))
        .filter(|(k, _)| start.is_empty() || *k > start)
        .collect();
    let total = matching.len();
    let take = if limit == 0 { total } else { limit.min(total) };
    let next = (take < total).then(|| encode(rv as i64, &matching[take - 1].0));
    let unfiltered = labels.is_empty() && fields.is_empty();
    let remaining = (take < total && unfiltered).then_some(total - take);
    let items = matching.into_iter().take(take).map(|(_, o)| o).collect();
    Ok(Page {
        items,
        rv,
        next,
        remaining,
    })
}

impl Page {
    /// The `<Kind>List` object.
    pub(crate) fn to_list(&self, t: &crate::registry::ResourceType) -> Value {
        let mut meta = json!({"resourceVersion": self.rv.to_string()});
        if let Some(c) = &self.next {
            meta["continue"] = json!(c);
        }
        if let Some(n) = self.remaining {
            meta["remainingItemCount"] = json!(n);
        }
        json!({"kind": format!("{}List", t.kind), "apiVersion": t.api_version(),
            "metadata": meta, "items": self.items})
    }
}
