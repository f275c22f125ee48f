//! The recursive tree listing, parsed as it streams in: each page's JSON array is read one
//! entry at a time from the body's chunks (never the whole body in memory), every file entry
//! becomes a [`TreeEntry`] once (no intermediate copy), and the listing is capped in entries,
//! bytes per entry and bytes in all, so a hostile or broken server fails clearly instead of
//! exhausting memory.

use reqwest::Method;
use serde::Deserialize;
use tracing::{debug, instrument};

use super::{HubClient, MAX_PAGES, body_error, next_link, redact};
use crate::weights::{Error, Lfs, RepoId, TreeEntry, safe_relative_path};

/// Caps on one tree listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListingLimits {
    /// Most entries (files and directories) in all pages together.
    pub max_entries: usize,
    /// Most bytes one entry may take in the JSON text.
    pub max_entry_bytes: usize,
    /// Most body bytes in all pages together.
    pub max_bytes: u64,
}

impl Default for ListingLimits {
    /// 1 M entries (the largest real model repositories list a few thousand), 64 KiB per
    /// entry (a path is at most 1 KiB), 1 GiB of JSON.
    fn default() -> Self {
        ListingLimits {
            max_entries: 1_000_000,
            max_entry_bytes: 64 << 10,
            max_bytes: 1 << 30,
        }
    }
}

#[derive(Deserialize)]
struct RawEntry {
    #[serde(rename = "type")]
    kind: String,
    path: String,
    #[serde(default)]
    size: u64,
    #[serde(default)]
    oid: String,
    lfs: Option<RawLfs>,
}

#[derive(Deserialize)]
struct RawLfs {
    oid: String,
    size: u64,
}

impl HubClient {
    /// Every file of the repository at `commit` (directories dropped), names validated, within
    /// the listing caps of [`super::HubOptions::listing`].
    #[instrument(skip_all, fields(repo = %repo, commit), err(level = "debug"))]
    pub async fn list_tree(&self, repo: &RepoId, commit: &str) -> Result<Vec<TreeEntry>, Error> {
        let mut url = self.url(&format!("/api/models/{repo}/tree/{commit}?recursive=true"))?;
        let what = format!("{repo}@{commit}");
        let mut out = Vec::new();
        let mut counts = Counts::default();
        for _ in 0..MAX_PAGES {
            // Some servers redirect the listing (olah: to the URL with a trailing slash).
            let (page_url, mut resp) = self.follow(Method::GET, url, &what, |_| {}).await?;
            url = page_url;
            let next = next_link(resp.headers(), &url);
            let mut page = PageParser::new(self.opts.listing);
            let too_large = |limit: String| Error::TreeTooLarge {
                what: what.clone(),
                limit,
            };
            loop {
                let chunk = resp.chunk().await.map_err(|e| {
                    body_error(
                        &url,
                        &format!("tree listing of {what}"),
                        &e,
                        self.opts.read_timeout,
                    )
                })?;
                let Some(chunk) = chunk else { break };
                counts.bytes += chunk.len() as u64;
                if counts.bytes > self.opts.listing.max_bytes {
                    return Err(too_large(format!("{} bytes", self.opts.listing.max_bytes)));
                }
                page.feed(&chunk, |raw| {
                    counts.entries += 1;
                    if counts.entries > self.opts.listing.max_entries {
                        return Err(too_large(format!(
                            "{} entries",
                            self.opts.listing.max_entries
                        )));
                    }
                    if raw.kind == "file" {
                        out.push(file_entry(raw)?);
                    }
                    Ok(())
                })
                .map_err(|e| e.into_error(&url, &what))?;
            }
            page.finish().map_err(|e| e.into_error(&url, &what))?;
            match next {
                Some(n) => url = n,
                None => {
                    out.shrink_to_fit();
                    debug!(files = out.len(), bytes = counts.bytes, "tree listed");
                    return Ok(out);
                }
            }
        }
        Err(Error::Protocol {
            url: redact(&url),
            reason: format!("more than {MAX_PAGES} tree pages"),
        })
    }
}

#[derive(Default)]
struct Counts {
    entries: usize,
    bytes: u64,
}

fn file_entry(raw: RawEntry) -> Result<TreeEntry, Error> {
    safe_relative_path(&raw.path)?;
    Ok(TreeEntry {
        path: raw.path,
        size: raw.size,
        oid: raw.oid,
        lfs: raw.lfs.map(|l| Lfs {
            sha256: l.oid,
            size: l.size,
        }),
    })
}

/// Why a page did not parse, or what the entry callback refused.
#[derive(Debug)]
enum PageError {
    /// Not the JSON array of entries we expect.
    Syntax(String),
    /// One entry is longer than the cap.
    EntryTooLarge(usize),
    /// The callback's own error.
    Refused(Error),
}

impl PageError {
    fn into_error(self, url: &reqwest::Url, what: &str) -> Error {
        match self {
            PageError::Syntax(reason) => Error::Protocol {
                url: redact(url),
                reason: format!("tree page: {reason}"),
            },
            PageError::EntryTooLarge(max) => Error::TreeTooLarge {
                what: what.to_string(),
                limit: format!("{max} bytes per entry"),
            },
            PageError::Refused(e) => e,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before the opening `[`.
    Start,
    /// After `[`: an entry or `]`.
    First,
    /// After an entry: `,` or `]`.
    Between,
    /// After `,`: an entry.
    Value,
    /// After `]`: only whitespace.
    Done,
}

/// An incremental parser of one page (`[ {entry}, {entry}, ... ]`): holds at most one partial
/// entry between chunks.
struct PageParser {
    buf: Vec<u8>,
    state: State,
    limits: ListingLimits,
}

impl PageParser {
    fn new(limits: ListingLimits) -> PageParser {
        PageParser {
            buf: Vec::new(),
            state: State::Start,
            limits,
        }
    }

    /// Consumes `chunk`, calling `on_entry` for each complete entry.
    fn feed(
        &mut self,
        chunk: &[u8],
        mut on_entry: impl FnMut(RawEntry) -> Result<(), Error>,
    ) -> Result<(), PageError> {
        self.buf.extend_from_slice(chunk);
        let mut pos = 0;
        let result = loop {
            while pos < self.buf.len() && self.buf[pos].is_ascii_whitespace() {
                pos += 1;
            }
            let Some(&b) = self.buf.get(pos) else {
                break Ok(());
            };
            match (self.state, b) {
                (State::Start, b'[') => self.state = State::First,
                (State::First, b']') | (State::Between, b']') => self.state = State::Done,
                (State::Between, b',') => self.state = State::Value,
                (State::First | State::Value, _) => {
                    let mut it = serde_json::Deserializer::from_slice(&self.buf[pos..])
                        .into_iter::<RawEntry>();
                    match it.next() {
                        Some(Ok(raw)) => {
                            pos += it.byte_offset();
                            self.state = State::Between;
                            if let Err(e) = on_entry(raw) {
                                break Err(PageError::Refused(e));
                            }
                            continue;
                        }
                        Some(Err(e)) if e.is_eof() => {
                            if self.buf.len() - pos > self.limits.max_entry_bytes {
                                break Err(PageError::EntryTooLarge(self.limits.max_entry_bytes));
                            }
                            break Ok(());
                        }
                        Some(Err(e)) => break Err(PageError::Syntax(e.to_string())),
                        None => break Ok(()),
                    }
                }
                (state, b) => {
                    break Err(PageError::Syntax(format!(
                        "unexpected {:?} {}",
                        char::from(b),
                        match state {
                            State::Start => "where a JSON array should start",
                            State::Done => "after the end of the array",
                            _ => "between entries",
                        }
                    )));
                }
            }
            pos += 1;
        };
        self.buf.drain(..pos);
        result
    }

    /// The body ended: the array must be complete.
    fn finish(&self) -> Result<(), PageError> {
        if self.state == State::Done {
            Ok(())
        } else {
            Err(PageError::Syntax(
                "the body ended inside the array".to_string(),
            ))
        }
    }
}

#[cfg(test)]
mod tests;
