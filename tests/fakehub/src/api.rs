//! The JSON API: revision info and the (paged) tree listing.

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use futures::StreamExt;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::{Value, json};

use crate::Shared;
use crate::download::status_fault;
use crate::routes::json_error;
use crate::stats::Endpoint;
use crate::store::{Commit, Missing};

/// Characters left as they are in one path segment.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `GET /api/models/{repo}/revision/{rev}`.
pub(crate) fn revision(s: &Shared, repo: &str, rev: &str) -> Response {
    s.stats.count(Endpoint::Revision);
    if let Some(f) = s.knobs.take_status(true) {
        return status_fault(f);
    }
    let commit = match lookup(s, repo, rev) {
        Ok(c) => c,
        Err(resp) => return *resp,
    };
    let sha = s
        .knobs
        .revision_answer()
        .unwrap_or_else(|| commit.id.clone());
    let siblings: Vec<Value> = commit
        .files
        .iter()
        .map(|f| json!({ "rfilename": f.path }))
        .collect();
    let info = json!({
        "_id": sha,
        "id": repo,
        "modelId": repo,
        "sha": sha,
        "private": false,
        "disabled": false,
        "gated": false,
        "tags": [],
        "siblings": siblings,
    });
    json_ok(&info, None)
}

/// `GET /api/models/{repo}/tree/{rev}[/{prefix}]?recursive=true&cursor=N`.
pub(crate) fn tree(
    s: &Shared,
    repo: &str,
    rev: &str,
    prefix: &str,
    query: &str,
    host: &str,
) -> Response {
    s.stats.count(Endpoint::Tree);
    if let Some(f) = s.knobs.take_status(true) {
        return status_fault(f);
    }
    let commit = match lookup(s, repo, rev) {
        Ok(c) => c,
        Err(resp) => return *resp,
    };
    let mut recursive = false;
    let mut cursor = 0usize;
    for (k, v) in query.split('&').filter_map(|kv| kv.split_once('=')) {
        match k {
            "recursive" => recursive = matches!(v, "true" | "True" | "1"),
            "cursor" => cursor = v.parse().unwrap_or(0),
            _ => {}
        }
    }
    let items: Vec<&Value> = commit
        .tree
        .iter()
        .filter(|v| in_scope(v["path"].as_str().unwrap_or_default(), prefix, recursive))
        .collect();
    if !prefix.is_empty() && items.is_empty() {
        return json_error(
            StatusCode::NOT_FOUND,
            Some("EntryNotFound"),
            &format!("{prefix} does not exist on {rev}"),
        );
    }
    let page = s.tree_page_size().max(1);
    let start = cursor.min(items.len());
    let end = start.saturating_add(page).min(items.len());
    let body = Value::Array(items[start..end].iter().map(|v| (*v).clone()).collect());
    let padding = s.knobs.tree_padding();
    let link = (end < items.len()).then(|| {
        let rev = utf8_percent_encode(rev, SEGMENT);
        let prefix: String = prefix
            .split('/')
            .filter(|p| !p.is_empty())
            .map(|p| format!("/{}", utf8_percent_encode(p, SEGMENT)))
            .collect();
        let recursive = if recursive { "recursive=true&" } else { "" };
        format!("<http://{host}/api/models/{repo}/tree/{rev}{prefix}?{recursive}cursor={end}>; rel=\"next\"")
    });
    if padding > 0 && end == items.len() {
        return padded(body, padding);
    }
    json_ok(&body, link)
}

/// Entries generated per chunk of a padded listing.
const PAD_BATCH: u64 = 4096;

/// The last page, `page` followed by `n` made-up file entries, streamed in batches.
fn padded(page: Value, n: u64) -> Response {
    let mut head = page.to_string();
    head.pop(); // the closing `]`
    let first_sep = head.len() > 1;
    let batches = n.div_ceil(PAD_BATCH);
    let chunks = futures::stream::iter(0..=batches).map(move |b| {
        if b == 0 {
            return Ok::<_, std::io::Error>(bytes::Bytes::from(head.clone()));
        }
        let mut out = String::with_capacity(PAD_BATCH as usize * 80);
        let from = (b - 1) * PAD_BATCH;
        for i in from..(from + PAD_BATCH).min(n) {
            if i > 0 || first_sep {
                out.push(',');
            }
            out.push_str(&format!(
                r#"{{"type":"file","oid":"{i:040x}","size":1,"path":"pad/{i:07}.dat"}}"#
            ));
        }
        if b == batches {
            out.push(']');
        }
        Ok(bytes::Bytes::from(out))
    });
    let mut resp = Response::new(Body::from_stream(chunks));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// Whether `path` is listed for `prefix`: anywhere below it when recursive, else directly in it.
fn in_scope(path: &str, prefix: &str, recursive: bool) -> bool {
    let under = if prefix.is_empty() {
        Some(path)
    } else {
        path.strip_prefix(prefix).and_then(|r| r.strip_prefix('/'))
    };
    match under {
        Some(r) if !r.is_empty() => recursive || !r.contains('/'),
        _ => false,
    }
}

fn lookup(s: &Shared, repo: &str, rev: &str) -> Result<Commit, Box<Response>> {
    s.read_store()
        .resolve(repo, rev)
        .map_err(|m| Box::new(not_found(m, repo, rev)))
}

/// The Hub's 404 for a missing repo or revision.
pub(crate) fn not_found(m: Missing, repo: &str, rev: &str) -> Response {
    match m {
        Missing::Repo => json_error(
            StatusCode::NOT_FOUND,
            Some("RepoNotFound"),
            &format!("Repository not found: {repo}"),
        ),
        Missing::Revision => json_error(
            StatusCode::NOT_FOUND,
            Some("RevisionNotFound"),
            &format!("Invalid rev id: {rev}"),
        ),
    }
}

fn json_ok(v: &Value, link: Option<String>) -> Response {
    let mut resp = Response::new(Body::from(v.to_string()));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(link) = link.and_then(|l| HeaderValue::from_str(&l).ok()) {
        h.insert(header::LINK, link);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes() {
        assert!(in_scope("a/b/c", "", true));
        assert!(!in_scope("a/b/c", "", false));
        assert!(in_scope("a", "", false));
        assert!(in_scope("a/b", "a", false));
        assert!(!in_scope("a/b/c", "a", false));
        assert!(in_scope("a/b/c", "a", true));
        assert!(!in_scope("ab/c", "a", true));
        assert!(!in_scope("a", "a", true));
    }
}
