//! The Hub protocol over HTTP: revision -> commit, recursive tree listing (paged by
//! `Link: rel="next"`), per-file resolve (HEAD, redirects followed by hand so the token is
//! dropped when the host changes), and ranged GETs. Retries with backoff live here too,
//! honouring `Retry-After` on 429/503.
//!
//! reqwest honours `HTTPS_PROXY`/`HTTP_PROXY`/`NO_PROXY` from the environment by default, as
//! users of the Hub's own clients expect.

use std::time::Duration;

use reqwest::header::{AUTHORIZATION, HeaderMap, LINK, LOCATION, RANGE, RETRY_AFTER};
use reqwest::{Method, Response, StatusCode, Url};
use tracing::{instrument, warn};

use super::{Error, RepoId};
use crate::backoff::Backoff;

mod listing;

pub use listing::ListingLimits;

/// Most redirects followed for one resolve.
const MAX_REDIRECTS: usize = 5;
/// Most tree pages read (a 100k-file repo at 1000 per page is 100 pages).
const MAX_PAGES: usize = 10_000;

/// How to talk to the Hub.
#[derive(Clone)]
pub struct HubOptions {
    /// Endpoint, e.g. `https://huggingface.co` or a mirror.
    pub endpoint: String,
    /// Bearer token; never logged.
    pub token: Option<String>,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Longest silence while reading a body before the request fails.
    pub read_timeout: Duration,
    /// Attempts per request (1 = no retry).
    pub attempts: u32,
    /// Wait between attempts: 500 ms doubling to 30 s by default; its maximum also caps a
    /// server's `Retry-After`.
    pub backoff: Backoff,
    /// Caps on a tree listing.
    pub listing: ListingLimits,
}

impl std::fmt::Debug for HubOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubOptions")
            .field("endpoint", &self.endpoint)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("attempts", &self.attempts)
            .finish_non_exhaustive()
    }
}

impl HubOptions {
    /// Defaults for `endpoint`.
    pub fn new(endpoint: &str) -> Self {
        HubOptions {
            endpoint: endpoint.trim_end_matches('/').to_string(),
            token: None,
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(30),
            attempts: 6,
            backoff: Backoff::constant(Duration::from_millis(500), Duration::from_secs(30)),
            listing: ListingLimits::default(),
        }
    }
}

/// Where a file's bytes come from, after the resolve.
#[derive(Debug, Clone)]
pub struct FileSource {
    /// Final URL (after redirects).
    pub url: Url,
    /// Whether the token may be sent there (same host as the endpoint).
    pub send_token: bool,
    /// Size the server announced, if any.
    pub size: Option<u64>,
    /// Commit the server resolved to (`X-Repo-Commit`).
    pub commit: Option<String>,
}

/// A Hub client.
#[derive(Debug, Clone)]
pub struct HubClient {
    http: reqwest::Client,
    endpoint: Url,
    opts: HubOptions,
}

impl HubClient {
    /// A client for `opts.endpoint`.
    pub fn new(opts: HubOptions) -> Result<HubClient, Error> {
        let endpoint = Url::parse(&opts.endpoint).map_err(|e| Error::Http {
            url: opts.endpoint.clone(),
            reason: format!("invalid endpoint: {e}"),
        })?;
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(opts.connect_timeout)
            .read_timeout(opts.read_timeout)
            .user_agent(concat!("coldstart/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Http {
                url: opts.endpoint.clone(),
                reason: e.to_string(),
            })?;
        Ok(HubClient {
            http,
            endpoint,
            opts,
        })
    }

    /// Longest silence while reading a body before the read fails.
    pub fn read_timeout(&self) -> Duration {
        self.opts.read_timeout
    }

    fn url(&self, path: &str) -> Result<Url, Error> {
        let base = self.endpoint.as_str().trim_end_matches('/');
        Url::parse(&format!("{base}{path}")).map_err(|e| Error::Http {
            url: format!("{base}{path}"),
            reason: e.to_string(),
        })
    }

    fn same_host(&self, url: &Url) -> bool {
        url.host_str() == self.endpoint.host_str()
            && url.port_or_known_default() == self.endpoint.port_or_known_default()
            && url.scheme() == self.endpoint.scheme()
    }

    /// One request with retries; `send_token` adds the bearer token.
    async fn send(
        &self,
        method: Method,
        url: &Url,
        send_token: bool,
        headers: HeaderMap,
    ) -> Result<Response, Error> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut req = self
                .http
                .request(method.clone(), url.clone())
                .headers(headers.clone());
            if send_token && let Some(t) = &self.opts.token {
                req = req.header(AUTHORIZATION, format!("Bearer {t}"));
            }
            let result = req.send().await;
            let wait = match &result {
                Ok(resp) if retryable(resp.status()) => {
                    retry_after(resp.headers()).map(|d| d.min(self.opts.backoff.max()))
                }
                Ok(_) => return result.map_err(|e| http_error(url, &e)),
                Err(e) if e.is_connect() || e.is_timeout() || e.is_request() => None,
                Err(e) => return Err(http_error(url, e)),
            };
            if attempt >= self.opts.attempts {
                return match result {
                    Ok(resp) => Err(Error::Http {
                        url: redact(url),
                        reason: format!("status {} after {attempt} attempts", resp.status()),
                    }),
                    Err(e) => Err(http_error(url, &e)),
                };
            }
            let delay = wait.unwrap_or_else(|| self.opts.backoff.after_failures(attempt));
            warn!(url = %redact(url), attempt, delay_ms = delay.as_millis() as u64, "hub request failed, retrying");
            tokio::time::sleep(delay).await;
        }
    }

    /// Maps 401/403/404 onto our errors, passes 2xx through.
    fn check(&self, what: &str, url: &Url, resp: Response) -> Result<Response, Error> {
        let status = resp.status();
        if status.is_success() || status.is_redirection() {
            return Ok(resp);
        }
        let code = resp
            .headers()
            .get("x-error-code")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        match status {
            StatusCode::NOT_FOUND => Err(Error::NotFound {
                what: what.to_string(),
                reason: if code.is_empty() {
                    "404".to_string()
                } else {
                    code
                },
            }),
            // A gated or private repo, or a wrong token. (olah answers 401 for missing files.)
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Err(Error::Unauthorized {
                what: what.to_string(),
                status: status.as_u16(),
            }),
            s => Err(Error::Http {
                url: redact(url),
                reason: format!("status {s}"),
            }),
        }
    }

    /// `method` on `url`, following redirects by hand (relative ones against the current URL),
    /// the token only while on the endpoint's host. `on_hop` sees every answer's headers,
    /// redirects included (the Hub puts `X-Linked-Size` and `X-Repo-Commit` on the redirect).
    async fn follow(
        &self,
        method: Method,
        mut url: Url,
        what: &str,
        mut on_hop: impl FnMut(&HeaderMap),
    ) -> Result<(Url, Response), Error> {
        for _ in 0..=MAX_REDIRECTS {
            let send_token = self.same_host(&url);
            let resp = self
                .send(method.clone(), &url, send_token, HeaderMap::new())
                .await?;
            let resp = self.check(what, &url, resp)?;
            on_hop(resp.headers());
            if !resp.status().is_redirection() {
                return Ok((url, resp));
            }
            let loc = resp
                .headers()
                .get(LOCATION)
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| Error::Protocol {
                    url: redact(&url),
                    reason: "redirect without Location".to_string(),
                })?;
            url = url.join(loc).map_err(|e| Error::Protocol {
                url: redact(&url),
                reason: format!("bad Location: {e}"),
            })?;
        }
        Err(Error::Protocol {
            url: redact(&url),
            reason: format!("more than {MAX_REDIRECTS} redirects"),
        })
    }

    /// The commit a revision (branch, tag or commit) points at.
    #[instrument(skip_all, fields(repo = %repo, revision), err(level = "debug"))]
    pub async fn resolve_revision(&self, repo: &RepoId, revision: &str) -> Result<String, Error> {
        let url = self.url(&format!(
            "/api/models/{repo}/revision/{}",
            encode_segment(revision)
        ))?;
        let what = format!("{repo}@{revision}");
        let (url, resp) = self.follow(Method::GET, url, &what, |_| {}).await?;
        #[derive(serde::Deserialize)]
        struct Info {
            sha: String,
        }
        let info: Info = resp.json().await.map_err(|e| Error::Protocol {
            url: redact(&url),
            reason: e.to_string(),
        })?;
        if info.sha.len() != 40 || !info.sha.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::Protocol {
                url: redact(&url),
                reason: format!("not a commit sha: {:?}", info.sha),
            });
        }
        Ok(info.sha.to_ascii_lowercase())
    }

    /// Where `path` at `commit` is downloaded from: HEAD on `resolve`, redirects followed by
    /// hand (relative ones against the endpoint), the token only while on the endpoint's host.
    #[instrument(skip_all, fields(repo = %repo, path), err(level = "debug"))]
    pub async fn resolve_file(
        &self,
        repo: &RepoId,
        commit: &str,
        path: &str,
    ) -> Result<FileSource, Error> {
        let url = self.url(&format!(
            "/{repo}/resolve/{commit}/{}",
            path.split('/')
                .map(encode_segment)
                .collect::<Vec<_>>()
                .join("/")
        ))?;
        let mut size = None;
        let mut repo_commit = None;
        let (url, resp) = self
            .follow(Method::HEAD, url, &format!("{repo}/{path}"), |h| {
                size = size.or_else(|| header_u64(h, "x-linked-size"));
                repo_commit = repo_commit
                    .take()
                    .or_else(|| header_str(h, "x-repo-commit"));
            })
            .await?;
        let size = size.or_else(|| header_u64(resp.headers(), "content-length"));
        Ok(FileSource {
            send_token: self.same_host(&url),
            url,
            size,
            commit: repo_commit,
        })
    }

    /// GET of `src` from byte `start` to `end` (exclusive; `None`: to the end). The answer is
    /// 206 for a range, or 200 when the server ignores Range (the caller then has the whole
    /// body from byte 0).
    pub async fn get(
        &self,
        src: &FileSource,
        start: u64,
        end: Option<u64>,
    ) -> Result<Response, Error> {
        let mut headers = HeaderMap::new();
        if start > 0 || end.is_some() {
            let value = match end {
                Some(e) => format!("bytes={start}-{}", e.saturating_sub(1)),
                None => format!("bytes={start}-"),
            };
            if let Ok(v) = value.parse() {
                headers.insert(RANGE, v);
            }
        }
        let resp = self
            .send(Method::GET, &src.url, src.send_token, headers)
            .await?;
        self.check(src.url.path(), &src.url, resp)
    }
}

fn retryable(status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
        || status.is_server_error()
}

/// `Retry-After` in seconds (HTTP dates are rare here and treated as absent).
fn retry_after(h: &HeaderMap) -> Option<Duration> {
    let secs: u64 = h.get(RETRY_AFTER)?.to_str().ok()?.trim().parse().ok()?;
    Some(Duration::from_secs(secs))
}

/// The `rel="next"` URL of a `Link` header, resolved against the current URL.
fn next_link(h: &HeaderMap, current: &Url) -> Option<Url> {
    for value in h.get_all(LINK) {
        let value = value.to_str().ok()?;
        for part in value.split(',') {
            let (target, params) = part.split_once(';')?;
            if params.split(';').any(|p| {
                let p = p.trim().replace(' ', "");
                p == "rel=\"next\"" || p == "rel=next"
            }) {
                let target = target.trim().trim_start_matches('<').trim_end_matches('>');
                return current.join(target).ok();
            }
        }
    }
    None
}

fn header_str(h: &HeaderMap, name: &str) -> Option<String> {
    h.get(name)?
        .to_str()
        .ok()
        .map(|s| s.trim_matches('"').to_string())
}

fn header_u64(h: &HeaderMap, name: &str) -> Option<u64> {
    header_str(h, name)?.parse().ok()
}

/// Percent-encodes one path segment (revisions like `refs/pr/1` and file names).
fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A URL for messages: no query (signed CDN URLs carry credentials there), no userinfo.
pub(crate) fn redact(url: &Url) -> String {
    let mut u = url.clone();
    u.set_query(None);
    let _ = u.set_username("");
    let _ = u.set_password(None);
    u.to_string()
}

fn http_error(url: &Url, e: &reqwest::Error) -> Error {
    Error::Http {
        url: redact(url),
        reason: cause_chain(url, e),
    }
}

/// The error and its sources, `: `-joined, with the URL redacted wherever it appears.
fn cause_chain(url: &Url, e: &reqwest::Error) -> String {
    let mut reason = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        reason = format!("{reason}: {s}");
        src = s.source();
    }
    reason.replace(url.as_str(), &redact(url))
}

/// A failure while reading a body from `url` for `what` (a file name, a listing): a read
/// timeout says that the server sent nothing for `read_timeout`; anything else keeps its
/// whole cause chain.
pub(crate) fn body_error(
    url: &Url,
    what: &str,
    e: &reqwest::Error,
    read_timeout: Duration,
) -> Error {
    if e.is_timeout() {
        return Error::ReadTimeout {
            what: what.to_string(),
            seconds: read_timeout.as_secs_f64(),
        };
    }
    Error::Http {
        url: redact(url),
        reason: format!("reading {what}: {}", cause_chain(url, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_headers() {
        let cur = Url::parse("http://127.0.0.1:1/api/models/a/b/tree/x?recursive=true").unwrap();
        let mut h = HeaderMap::new();
        h.insert(
            LINK,
            "<http://127.0.0.1:1/api/models/a/b/tree/x?recursive=true&cursor=abc>; rel=\"next\""
                .parse()
                .unwrap(),
        );
        assert_eq!(
            next_link(&h, &cur).unwrap().query(),
            Some("recursive=true&cursor=abc")
        );
        let mut rel = HeaderMap::new();
        rel.insert(
            LINK,
            "</p2?c=1>; rel=\"prev\", </p3?c=2>; rel=\"next\""
                .parse()
                .unwrap(),
        );
        assert_eq!(next_link(&rel, &cur).unwrap().path(), "/p3");
        assert!(next_link(&HeaderMap::new(), &cur).is_none());
    }

    #[test]
    fn segments_are_encoded_and_urls_redacted() {
        assert_eq!(encode_segment("refs/pr/1"), "refs%2Fpr%2F1");
        assert_eq!(encode_segment("a b.json"), "a%20b.json");
        let u = Url::parse("https://u:p@cdn.example/x?X-Amz-Signature=secret").unwrap();
        assert_eq!(redact(&u), "https://cdn.example/x");
    }

    #[test]
    fn retry_after_seconds() {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, "3".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(3)));
        assert!(retryable(StatusCode::TOO_MANY_REQUESTS));
        assert!(retryable(StatusCode::SERVICE_UNAVAILABLE));
        assert!(!retryable(StatusCode::NOT_FOUND));
    }

    #[test]
    fn token_is_not_in_debug_output() {
        let mut o = HubOptions::new("http://127.0.0.1:1/");
        o.token = Some("hf_secret".to_string());
        assert!(!format!("{o:?}").contains("hf_secret"));
        assert_eq!(o.endpoint, "http://127.0.0.1:1");
    }
}
