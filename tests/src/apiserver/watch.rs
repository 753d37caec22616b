//! Watch streams: one JSON event per line, replaying the history after the client's
//! resourceVersion, then live events, bookmarks, a 410 ERROR when the history is gone, and the end
//! of the stream after `timeoutSeconds` — what kube-runtime's watcher expects of a real server.
use std::{convert::Infallible, pin::Pin, sync::Arc, time::Duration};

use bytes::{BufMut as _, Bytes, BytesMut};
use futures_util::Stream;
use hyper::body::Frame;
use tokio::time::Instant;

use super::{
    resources::RESOURCES,
    selector::{FieldSelector, LabelSelector},
    status::ApiError,
    store::{Event, EventType, Store, Stored},
};

/// The body type of a watch response.
pub type WatchStream = Pin<Box<dyn Stream<Item = Result<Frame<Bytes>, Infallible>> + Send>>;

/// Which objects a list or watch wants.
#[derive(Clone, Debug)]
pub struct Filter {
    /// Namespace from the path.
    pub ns: Option<String>,
    /// `labelSelector`.
    pub labels: LabelSelector,
    /// `fieldSelector`.
    pub fields: FieldSelector,
}

impl Filter {
    /// Whether the object passes the selectors (the namespace is checked by the caller/store).
    pub fn matches(&self, v: &serde_json::Value) -> bool {
        self.labels.matches(v) && self.fields.matches(v)
    }

    fn in_ns(&self, ev: &Event) -> bool {
        self.ns.as_deref().is_none_or(|ns| ns == ev.namespace)
    }
}

/// Watch options from the query string.
#[derive(Clone, Debug)]
pub struct WatchParams {
    /// `resourceVersion` (`None` or 0: start from the current state).
    pub rv: Option<u64>,
    /// `timeoutSeconds`.
    pub timeout: Duration,
    /// `allowWatchBookmarks`.
    pub bookmarks: bool,
    /// `sendInitialEvents` (streaming lists): initial ADDED events end with an
    /// `k8s.io/initial-events-end` bookmark.
    pub send_initial_events: bool,
}

fn event_line(buf: &mut BytesMut, ty: &str, obj: &[u8]) {
    buf.put_slice(b"{\"type\":\"");
    buf.put_slice(ty.as_bytes());
    buf.put_slice(b"\",\"object\":");
    buf.put_slice(obj);
    buf.put_slice(b"}\n");
}

fn bookmark_line(buf: &mut BytesMut, res: usize, rv: u64, initial_end: bool) {
    let def = &RESOURCES[res];
    let mut meta = serde_json::json!({"resourceVersion": rv.to_string()});
    if initial_end {
        meta["annotations"] = serde_json::json!({"k8s.io/initial-events-end": "true"});
    }
    let obj =
        serde_json::json!({"kind": def.kind, "apiVersion": def.api_version(), "metadata": meta});
    event_line(buf, "BOOKMARK", obj.to_string().as_bytes());
}

fn error_line(buf: &mut BytesMut, err: &ApiError) {
    event_line(buf, "ERROR", err.to_status().to_string().as_bytes());
}

/// Renders one history event for a filtered watch: an object that starts matching is ADDED, one
/// that stops matching is DELETED (its previous state at the new version), as the real server's
/// watch cache does.
fn render(buf: &mut BytesMut, f: &Filter, ev: &Event) {
    if !f.in_ns(ev) {
        return;
    }
    let now = f.matches(&ev.obj.value);
    let before = ev.prev.as_ref().is_some_and(|p| f.matches(&p.value));
    match ev.ty {
        EventType::Added if now => event_line(buf, "ADDED", &ev.obj.json),
        EventType::Modified => match (before, now) {
            (true, true) => event_line(buf, "MODIFIED", &ev.obj.json),
            (false, true) => event_line(buf, "ADDED", &ev.obj.json),
            (true, false) => {
                if let Some(p) = &ev.prev {
                    event_line(buf, "DELETED", &p.at_rv(ev.rv).json);
                }
            }
            (false, false) => {}
        },
        EventType::Deleted if now => event_line(buf, "DELETED", &ev.obj.json),
        _ => {}
    }
}

struct State {
    store: Arc<Store>,
    res: usize,
    filter: Filter,
    cursor: u64,
    epoch: u64,
    rx: tokio::sync::watch::Receiver<u64>,
    deadline: Instant,
    bookmark_every: Option<Duration>,
    next_bookmark: Instant,
    pending: Option<Bytes>,
    done: bool,
}

/// Starts a watch; `bookmark_every` is the server's bookmark period.
pub fn start(
    store: Arc<Store>,
    res: usize,
    filter: Filter,
    p: &WatchParams,
    bookmark_every: Duration,
) -> WatchStream {
    let mut rx = store.subscribe();
    rx.borrow_and_update();
    let mut first = BytesMut::new();
    let (cursor, epoch, done) = match p.rv {
        None | Some(0) => {
            let (rv, epoch, items) =
                store.snapshot(res, filter.ns.as_deref(), |v| filter.matches(v));
            for s in &items {
                event_line(&mut first, "ADDED", &s.json);
            }
            if p.send_initial_events {
                bookmark_line(&mut first, res, rv, true);
            }
            (rv, epoch, false)
        }
        Some(rv) => match store.watch_from(rv) {
            Ok(epoch) => (rv, epoch, false),
            Err(e) => {
                error_line(&mut first, &ApiError::expired(e.requested, e.oldest));
                (rv, 0, true)
            }
        },
    };
    let now = Instant::now();
    let state = State {
        store,
        res,
        filter,
        cursor,
        epoch,
        rx,
        deadline: now + p.timeout,
        bookmark_every: p.bookmarks.then_some(bookmark_every),
        next_bookmark: now + bookmark_every,
        pending: (!first.is_empty()).then(|| first.freeze()),
        done,
    };
    Box::pin(futures_util::stream::unfold(state, step))
}

async fn step(mut st: State) -> Option<(Result<Frame<Bytes>, Infallible>, State)> {
    if let Some(b) = st.pending.take() {
        return Some((Ok(Frame::data(b)), st));
    }
    if st.done {
        return None;
    }
    loop {
        st.rx.borrow_and_update();
        let mut buf = BytesMut::new();
        match st.store.events_since(st.res, st.cursor, st.epoch) {
            Ok((events, cursor)) => {
                for ev in &events {
                    render(&mut buf, &st.filter, ev);
                }
                st.cursor = cursor;
            }
            Err(e) => {
                error_line(&mut buf, &ApiError::expired(e.requested, e.oldest));
                st.done = true;
            }
        }
        if !buf.is_empty() {
            return Some((Ok(Frame::data(buf.freeze())), st));
        }
        let bookmark_at = st.bookmark_every.map(|_| st.next_bookmark);
        tokio::select! {
            changed = st.rx.changed() => {
                if changed.is_err() {
                    return None;
                }
            }
            _ = tokio::time::sleep_until(st.deadline) => return None,
            _ = async {
                match bookmark_at {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            } => {
                let every = st.bookmark_every.unwrap_or(Duration::from_secs(60));
                st.next_bookmark = Instant::now() + every;
                bookmark_line(&mut buf, st.res, st.cursor, false);
                return Some((Ok(Frame::data(buf.freeze())), st));
            }
        }
    }
}

/// A list response body: `{"apiVersion","kind":"PodList","metadata":{"resourceVersion"},"items"}`
/// assembled from the pre-serialized objects.
pub fn list_body(res: usize, rv: u64, items: &[Arc<Stored>]) -> Bytes {
    let def = &RESOURCES[res];
    let size: usize = items.iter().map(|s| s.json.len() + 1).sum();
    let mut buf = BytesMut::with_capacity(size + 200);
    buf.put_slice(
        format!(
            "{{\"apiVersion\":\"{}\",\"kind\":\"{}\",\"metadata\":{{\"resourceVersion\":\"{rv}\"}},\"items\":[",
            def.api_version(),
            def.list_kind()
        )
        .as_bytes(),
    );
    for (i, s) in items.iter().enumerate() {
        if i > 0 {
            buf.put_u8(b',');
        }
        buf.put_slice(&s.json);
    }
    buf.put_slice(b"]}");
    buf.freeze()
}
