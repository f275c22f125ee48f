//! Watch streams: newline-delimited JSON events from a resourceVersion, resumed from the
//! store's history; a version older than the history gets an `ERROR` event with a 410 `Status`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{StatusCode, header};
use axum::response::Response;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::Shared;
use crate::error::ApiError;
use crate::selector::Selector;
use crate::store::{Change, Event};

/// What a watch asked for.
pub(crate) struct WatchSpec {
    pub(crate) ty: usize,
    pub(crate) ns: Option<String>,
    pub(crate) labels: Selector,
    pub(crate) fields: Selector,
    /// `resourceVersion` query parameter (empty or "0": start with the current objects).
    pub(crate) from: String,
    pub(crate) timeout: Option<Duration>,
    pub(crate) bookmarks: bool,
}

impl WatchSpec {
    fn selects(&self, obj: &Value) -> bool {
        let ns = obj
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or("");
        self.ns.as_deref().is_none_or(|want| want == ns)
            && self.labels.matches(obj)
            && self.fields.matches(obj)
    }

    /// The event this watcher sees for a change, with selector transitions turned into
    /// ADDED/DELETED as the real server's watch cache does.
    fn translate<'a>(&self, ev: &'a Event) -> Option<(&'static str, &'a Value)> {
        if ev.ty != self.ty {
            return None;
        }
        let now = self.selects(&ev.object);
        let before = ev.old.as_ref().map(|o| self.selects(o));
        let kind = match (ev.change, before, now) {
            (Change::Added, _, true) => "ADDED",
            (Change::Deleted, _, true) => "DELETED",
            (Change::Modified, Some(true), true) => "MODIFIED",
            (Change::Modified, Some(false), true) => "ADDED",
            (Change::Modified, Some(true), false) => "DELETED",
            _ => return None,
        };
        Some((kind, &ev.object))
    }
}

fn line(kind: &str, object: &Value) -> Bytes {
    let mut b = serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap_or_default();
    b.push(b'\n');
    Bytes::from(b)
}

fn gone(from: u64, floor: u64) -> Bytes {
    let e = ApiError::gone(format!("too old resource version: {from} ({floor})"));
    line("ERROR", &e.status())
}

/// Starts the stream; events are produced by a task that ends when the client goes, the
/// timeout passes, or the connection is cut by an outage.
pub(crate) fn respond(shared: Arc<Shared>, spec: WatchSpec) -> Response {
    let (tx, mut rx) = mpsc::channel::<Bytes>(64);
    tokio::spawn(async move {
        let deadline = spec.timeout.map(|t| tokio::time::Instant::now() + t);
        tokio::select! {
            _ = run(&shared, &spec, &tx) => {}
            _ = tx.closed() => {}
            _ = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            } => {}
        }
    });
    let stream =
        futures::stream::poll_fn(move |cx| rx.poll_recv(cx).map(|o| o.map(Ok::<_, Infallible>)));
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CACHE_CONTROL, "no-cache, private")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| Response::new(Body::empty()))
}

async fn run(shared: &Shared, spec: &WatchSpec, tx: &mpsc::Sender<Bytes>) {
    let (start, mut notify, initial) = {
        let store = shared.lock_store();
        let notify = store.subscribe();
        match spec.from.as_str() {
            "" | "0" => {
                let objs = store.list(spec.ty, spec.ns.as_deref(), &spec.labels, &spec.fields);
                let lines = objs.iter().map(|o| line("ADDED", o)).collect();
                (Some(store.rv()), notify, lines)
            }
            s => match s.parse::<u64>() {
                Ok(from) if from >= store.floor() => (Some(from), notify, Vec::new()),
                Ok(from) => (None, notify, vec![gone(from, store.floor())]),
                Err(_) => {
                    let e = ApiError::bad_request(format!("invalid resource version {s:?}"));
                    (None, notify, vec![line("ERROR", &e.status())])
                }
            },
        }
    };
    for b in initial {
        if tx.send(b).await.is_err() {
            return;
        }
    }
    let Some(mut cursor) = start else { return };
    let mut bookmark = tokio::time::interval(shared.bookmark_interval);
    bookmark.tick().await;
    loop {
        let out: Result<Vec<Bytes>, Bytes> = {
            let store = shared.lock_store();
            if cursor < store.floor() {
                Err(gone(cursor, store.floor()))
            } else {
                let mut v = Vec::new();
                for ev in store.events_after(cursor) {
                    cursor = ev.rv;
                    if let Some((kind, obj)) = spec.translate(ev) {
                        v.push(line(kind, obj));
                    }
                }
                Ok(v)
            }
        };
        match out {
            Err(b) => {
                let _ = tx.send(b).await;
                return;
            }
            Ok(lines) => {
                for b in lines {
                    if tx.send(b).await.is_err() {
                        return;
                    }
                }
            }
        }
        tokio::select! {
            r = notify.changed() => if r.is_err() { return },
            _ = bookmark.tick(), if spec.bookmarks => {
                let obj = {
                    let store = shared.lock_store();
                    let t = &store.types[spec.ty];
                    json!({"kind": t.kind, "apiVersion": t.api_version(),
                        "metadata": {"resourceVersion": cursor.to_string()}})
                };
                if tx.send(line("BOOKMARK", &obj)).await.is_err() {
                    return;
                }
            }
        }
    }
}
