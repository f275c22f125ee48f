//! File downloads: `HEAD`/`GET /{repo}/resolve/{rev}/{path}` on the main listener (LFS files
//! optionally redirected to the CDN listener) and `/cdn/{sha256}` there; Range requests.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::Response;

use crate::Shared;
use crate::api::not_found;
use crate::body::file_body;
use crate::faults::StatusFault;
use crate::routes::json_error;
use crate::stats::Endpoint;
use crate::store::FileEntry;

/// A parsed `Range` header against a file of known size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RangeSpec {
    /// Serve the whole file (no usable range: absent, malformed or several ranges).
    Whole,
    /// Bytes `start..=end`.
    Part(u64, u64),
    /// 416.
    Unsatisfiable,
}

/// Parses `bytes=a-b`, `bytes=a-` and `bytes=-n` for a file of `size` bytes.
pub(crate) fn parse_range(value: &str, size: u64) -> RangeSpec {
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return RangeSpec::Whole;
    };
    if spec.contains(',') {
        return RangeSpec::Whole;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return RangeSpec::Whole;
    };
    let (a, b) = (a.trim(), b.trim());
    if a.is_empty() {
        return match b.parse::<u64>() {
            Ok(0) => RangeSpec::Unsatisfiable,
            Ok(_) if size == 0 => RangeSpec::Unsatisfiable,
            Ok(n) => RangeSpec::Part(size - n.min(size), size - 1),
            Err(_) => RangeSpec::Whole,
        };
    }
    let Ok(start) = a.parse::<u64>() else {
        return RangeSpec::Whole;
    };
    let end = if b.is_empty() {
        u64::MAX
    } else {
        match b.parse::<u64>() {
            Ok(e) if e >= start => e,
            _ => return RangeSpec::Whole,
        }
    };
    if start >= size {
        return RangeSpec::Unsatisfiable;
    }
    RangeSpec::Part(start, end.min(size - 1))
}

/// The answer to an injected status fault.
pub(crate) fn status_fault(f: StatusFault) -> Response {
    let status = StatusCode::from_u16(f.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = json_error(
        status,
        None,
        &format!("fake hub: injected status {}", f.code),
    );
    if let Some(secs) = f.retry_after {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    resp
}

/// `HEAD`/`GET /{repo}/resolve/{rev}/{path}`.
pub(crate) fn resolve(
    s: &Shared,
    method: &Method,
    req: &HeaderMap,
    raw_path: &str,
    repo: &str,
    rev: &str,
    path: &str,
) -> Response {
    let head = method == Method::HEAD;
    s.stats.count(if head {
        Endpoint::ResolveHead
    } else {
        Endpoint::ResolveGet
    });
    if let Some(f) = s.knobs.take_status(false) {
        return status_fault(f);
    }
    let commit = match s.read_store().resolve(repo, rev) {
        Ok(c) => c,
        Err(m) => return not_found(m, repo, rev),
    };
    let mut extra = HeaderMap::new();
    set(&mut extra, "x-repo-commit", &commit.id);
    let Some(file) = commit.file(path) else {
        let mut resp = json_error(
            StatusCode::NOT_FOUND,
            Some("EntryNotFound"),
            &format!("{path} does not exist on {rev}"),
        );
        resp.headers_mut().extend(extra);
        return resp;
    };
    set(
        &mut extra,
        header::ETAG.as_str(),
        &format!("\"{}\"", file.etag()),
    );
    if let Some(l) = &file.lfs {
        set(&mut extra, "x-linked-etag", &format!("\"{}\"", l.sha256));
        set(&mut extra, "x-linked-size", &file.size.to_string());
        if let Some(cdn) = s.cdn_addr.filter(|_| s.redirect_lfs()) {
            let location = format!("http://{cdn}/cdn/{}?X-Amz-Signature=fakehub", l.sha256);
            set(&mut extra, header::LOCATION.as_str(), &location);
            let mut resp = Response::new(Body::empty());
            *resp.status_mut() = StatusCode::FOUND;
            resp.headers_mut().extend(extra);
            return resp;
        }
    }
    serve_file(s, head, req, raw_path, file, extra)
}

/// `HEAD`/`GET /cdn/{sha256}` on the CDN listener.
pub(crate) fn cdn(
    s: &Shared,
    method: &Method,
    req: &HeaderMap,
    raw_path: &str,
    sha256: &str,
) -> Response {
    let head = method == Method::HEAD;
    s.stats.count(if head {
        Endpoint::CdnHead
    } else {
        Endpoint::CdnGet
    });
    if let Some(f) = s.knobs.take_status(false) {
        return status_fault(f);
    }
    let Some(file) = s.read_store().lfs_blob(sha256) else {
        return json_error(StatusCode::NOT_FOUND, None, "no such object");
    };
    let mut extra = HeaderMap::new();
    set(&mut extra, header::ETAG.as_str(), &format!("\"{sha256}\""));
    serve_file(s, head, req, raw_path, &file, extra)
}

fn serve_file(
    s: &Shared,
    head: bool,
    req: &HeaderMap,
    raw_path: &str,
    file: &FileEntry,
    mut extra: HeaderMap,
) -> Response {
    let size = file.size;
    let range = req
        .get(header::RANGE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    if let Some(r) = &range {
        s.stats.log_range(raw_path, r);
    }
    let spec = match range {
        Some(r) if !s.knobs.ignore_range() => parse_range(&r, size),
        _ => RangeSpec::Whole,
    };
    let (status, start, len) = match spec {
        RangeSpec::Whole => (StatusCode::OK, 0, size),
        RangeSpec::Part(a, b) => {
            set(
                &mut extra,
                header::CONTENT_RANGE.as_str(),
                &format!("bytes {a}-{b}/{size}"),
            );
            (StatusCode::PARTIAL_CONTENT, a, b - a + 1)
        }
        RangeSpec::Unsatisfiable => {
            let mut resp = json_error(
                StatusCode::RANGE_NOT_SATISFIABLE,
                None,
                "range not satisfiable",
            );
            set(
                resp.headers_mut(),
                header::CONTENT_RANGE.as_str(),
                &format!("bytes */{size}"),
            );
            return resp;
        }
    };
    set(
        &mut extra,
        header::CONTENT_LENGTH.as_str(),
        &len.to_string(),
    );
    set(&mut extra, header::ACCEPT_RANGES.as_str(), "bytes");
    set(
        &mut extra,
        header::CONTENT_TYPE.as_str(),
        "application/octet-stream",
    );
    let body = if head {
        Body::empty()
    } else {
        file_body(&file.data, start, len, s.knobs.plan_body(len), s.body_ctx())
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    resp.headers_mut().extend(extra);
    resp
}

fn set(h: &mut HeaderMap, name: &str, value: &str) {
    if let (Ok(n), Ok(v)) = (
        HeaderName::from_bytes(name.as_bytes()),
        HeaderValue::from_str(value),
    ) {
        h.insert(n, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use RangeSpec::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), Part(0, 9));
        assert_eq!(parse_range("bytes=90-", 100), Part(90, 99));
        assert_eq!(parse_range("bytes=90-200", 100), Part(90, 99));
        assert_eq!(parse_range("bytes=-10", 100), Part(90, 99));
        assert_eq!(parse_range("bytes=-500", 100), Part(0, 99));
        assert_eq!(parse_range("bytes=100-", 100), Unsatisfiable);
        assert_eq!(parse_range("bytes=0-", 0), Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 100), Unsatisfiable);
        assert_eq!(parse_range("bytes=5-1", 100), Whole);
        assert_eq!(parse_range("bytes=0-1,5-6", 100), Whole);
        assert_eq!(parse_range("items=0-1", 100), Whole);
        assert_eq!(parse_range("bytes=x-", 100), Whole);
    }
}
