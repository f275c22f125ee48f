//! Request dispatch. Paths are parsed by hand rather than by a route table because repo ids
//! have one or two segments and revisions and file names arrive percent-encoded.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use percent_encoding::percent_decode_str;
use tracing::debug;

use crate::Shared;
use crate::stats::Endpoint;
use crate::{api, download};

/// A parsed request path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Route {
    /// `/api/models/{repo}/revision/{rev}` (or `/api/models/{repo}`: `main`).
    Revision { repo: String, rev: String },
    /// `/api/models/{repo}/tree/{rev}[/{prefix}]`.
    Tree {
        repo: String,
        rev: String,
        prefix: String,
    },
    /// `/{repo}/resolve/{rev}/{path}`.
    Resolve {
        repo: String,
        rev: String,
        path: String,
    },
    /// Anything else.
    Unknown,
}

/// The router of the main listener.
pub(crate) fn main_router(shared: Arc<Shared>) -> Router {
    Router::new().fallback(main_handler).with_state(shared)
}

/// The router of the CDN listener.
pub(crate) fn cdn_router(shared: Arc<Shared>) -> Router {
    Router::new().fallback(cdn_handler).with_state(shared)
}

async fn main_handler(State(s): State<Arc<Shared>>, req: Request) -> Response {
    debug!(method = %req.method(), uri = %req.uri(), range = ?req.headers().get(header::RANGE), "request");
    if !authorized(&s, req.headers()) {
        s.stats.count(Endpoint::Unauthorized);
        return json_error(
            StatusCode::UNAUTHORIZED,
            None,
            "Invalid credentials in Authorization header",
        );
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        s.stats.count(Endpoint::Other);
        return json_error(StatusCode::METHOD_NOT_ALLOWED, None, "method not allowed");
    }
    let raw_path = req.uri().path().to_string();
    let route = {
        let store = s.read_store();
        parse(&raw_path, |r| store.has_repo(r))
    };
    match route {
        Route::Revision { repo, rev } => api::revision(&s, &repo, &rev),
        Route::Tree { repo, rev, prefix } => {
            let host = req
                .headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map_or_else(|| s.main_addr.to_string(), str::to_string);
            api::tree(
                &s,
                &repo,
                &rev,
                &prefix,
                req.uri().query().unwrap_or(""),
                &host,
            )
        }
        Route::Resolve { repo, rev, path } => download::resolve(
            &s,
            req.method(),
            req.headers(),
            &raw_path,
            &repo,
            &rev,
            &path,
        ),
        Route::Unknown => {
            s.stats.count(Endpoint::Other);
            json_error(
                StatusCode::NOT_FOUND,
                None,
                "Sorry, we can't find the page you are looking for.",
            )
        }
    }
}

async fn cdn_handler(State(s): State<Arc<Shared>>, req: Request) -> Response {
    let auth = req.headers().contains_key(header::AUTHORIZATION);
    debug!(method = %req.method(), path = req.uri().path(), auth, "cdn request");
    if auth {
        s.stats.saw_cdn_auth();
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        s.stats.count(Endpoint::Other);
        return json_error(StatusCode::METHOD_NOT_ALLOWED, None, "method not allowed");
    }
    let raw_path = req.uri().path().to_string();
    match raw_path.strip_prefix("/cdn/") {
        Some(sha) if !sha.contains('/') => {
            download::cdn(&s, req.method(), req.headers(), &raw_path, sha)
        }
        _ => {
            s.stats.count(Endpoint::Other);
            json_error(StatusCode::NOT_FOUND, None, "not found")
        }
    }
}

fn authorized(s: &Shared, headers: &HeaderMap) -> bool {
    let token = s.token.read().unwrap_or_else(|p| p.into_inner());
    let Some(token) = token.as_deref() else {
        return true;
    };
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| t == token)
}

/// A JSON error body `{"error": msg}` with the Hub's `X-Error-Code` when given.
pub(crate) fn json_error(status: StatusCode, code: Option<&str>, msg: &str) -> Response {
    let body = serde_json::json!({ "error": msg }).to_string();
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(code) = code.and_then(|c| HeaderValue::from_str(c).ok()) {
        h.insert("x-error-code", code);
    }
    resp
}

/// Parses a request path; `known` says whether a repo id exists, to settle one- versus
/// two-segment repo ids when both readings fit.
pub(crate) fn parse(path: &str, known: impl Fn(&str) -> bool) -> Route {
    let segs: Vec<&str> = path.strip_prefix('/').unwrap_or(path).split('/').collect();
    if segs.len() > 2 && segs[0] == "api" && segs[1] == "models" {
        return parse_api(&segs[2..], &known);
    }
    let Some((repo, k)) = split_repo(&segs, &known, |m| m == "resolve") else {
        return Route::Unknown;
    };
    let rest = &segs[k + 1..];
    if rest.len() < 2 {
        return Route::Unknown;
    }
    Route::Resolve {
        repo,
        rev: decode(rest[0]),
        path: decode(&rest[1..].join("/")),
    }
}

fn parse_api(segs: &[&str], known: &impl Fn(&str) -> bool) -> Route {
    let Some((repo, k)) = split_repo(segs, known, |m| m == "revision" || m == "tree") else {
        let repo = segs.iter().map(|s| decode(s)).collect::<Vec<_>>().join("/");
        return if segs.len() <= 2 && known(&repo) {
            Route::Revision {
                repo,
                rev: "main".to_string(),
            }
        } else {
            Route::Unknown
        };
    };
    let rest = &segs[k + 1..];
    if rest.is_empty() || rest[0].is_empty() {
        return Route::Unknown;
    }
    if segs[k] == "revision" {
        return Route::Revision {
            repo,
            rev: decode(&rest.join("/")),
        };
    }
    Route::Tree {
        repo,
        rev: decode(rest[0]),
        prefix: decode(rest[1..].join("/").trim_end_matches('/')),
    }
}

/// The repo id (one or two segments) before a marker segment, and the marker's index.
fn split_repo(
    segs: &[&str],
    known: &impl Fn(&str) -> bool,
    marker: impl Fn(&str) -> bool,
) -> Option<(String, usize)> {
    let fits: Vec<(String, usize)> = [2, 1]
        .into_iter()
        .filter(|&k| segs.len() > k && marker(segs[k]) && segs[..k].iter().all(|s| !s.is_empty()))
        .map(|k| {
            (
                segs[..k]
                    .iter()
                    .map(|s| decode(s))
                    .collect::<Vec<_>>()
                    .join("/"),
                k,
            )
        })
        .collect();
    let known_fit = fits.iter().position(|(repo, _)| known(repo));
    fits.into_iter().nth(known_fit.unwrap_or(0))
}

fn decode(s: &str) -> String {
    percent_decode_str(s).decode_utf8_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(repo: &str, rev: &str, path: &str) -> Route {
        Route::Resolve {
            repo: repo.into(),
            rev: rev.into(),
            path: path.into(),
        }
    }

    #[test]
    fn api_paths() {
        let none = |_: &str| false;
        assert_eq!(
            parse("/api/models/org/name/revision/refs%2Fpr%2F1", none),
            Route::Revision {
                repo: "org/name".into(),
                rev: "refs/pr/1".into()
            }
        );
        assert_eq!(
            parse("/api/models/gpt2/revision/main", none),
            Route::Revision {
                repo: "gpt2".into(),
                rev: "main".into()
            }
        );
        assert_eq!(
            parse("/api/models/o/n/tree/main/sub/dir/", none),
            Route::Tree {
                repo: "o/n".into(),
                rev: "main".into(),
                prefix: "sub/dir".into()
            }
        );
        assert_eq!(parse("/api/models/o/n/tree/", none), Route::Unknown);
        assert_eq!(
            parse("/api/models/o/n", |r| r == "o/n"),
            Route::Revision {
                repo: "o/n".into(),
                rev: "main".into()
            }
        );
    }

    #[test]
    fn resolve_paths() {
        let none = |_: &str| false;
        assert_eq!(
            parse("/o/n/resolve/main/a/b%20c.json", none),
            resolve("o/n", "main", "a/b c.json")
        );
        assert_eq!(
            parse("/gpt2/resolve/abc/config.json", none),
            resolve("gpt2", "abc", "config.json")
        );
        assert_eq!(
            parse("/o/n/resolve/main//abs", none),
            resolve("o/n", "main", "/abs")
        );
        assert_eq!(parse("/o/n/resolve/main", none), Route::Unknown);
        assert_eq!(parse("/favicon.ico", none), Route::Unknown);
        // Both readings fit: the repo that exists wins, else the two-segment one.
        let path = "/o/resolve/resolve/main/f";
        assert_eq!(parse(path, |r| r == "o"), resolve("o", "resolve", "main/f"));
        assert_eq!(parse(path, none), resolve("o/resolve", "main", "f"));
    }
}
