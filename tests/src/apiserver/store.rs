//! The object store: current objects per resource, one global resourceVersion counter and the
//! event history watches replay from. Objects are kept pre-serialized so that listing 10k pods or
//! fanning an event out to many watches costs a memcpy, not a serialization.
use std::{
    collections::{BTreeMap, VecDeque},
    hash::{BuildHasher as _, Hasher as _},
    sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard},
};

use bytes::Bytes;
use serde_json::{Value, json};

use super::{
    resources::{RESOURCES, ResourceDef},
    status::ApiError,
};

/// How many events are kept at most; older ones are forgotten (watches from before them get 410).
const MAX_HISTORY: usize = 1 << 20;

/// One stored object version.
#[derive(Debug)]
pub struct Stored {
    /// The object.
    pub value: Value,
    /// `value` serialized.
    pub json: Bytes,
    /// Its `metadata.resourceVersion`.
    pub rv: u64,
}

impl Stored {
    fn new(value: Value, rv: u64) -> Arc<Stored> {
        let json = Bytes::from(serde_json::to_vec(&value).unwrap_or_default());
        Arc::new(Stored { value, json, rv })
    }

    /// A copy carrying another resourceVersion (what DELETED events and "stopped matching"
    /// events send: the last state, at the version of the change).
    pub fn at_rv(&self, rv: u64) -> Arc<Stored> {
        let mut v = self.value.clone();
        set_rv(&mut v, rv);
        Stored::new(v, rv)
    }
}

/// What happened to an object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    /// Created.
    Added,
    /// Changed.
    Modified,
    /// Removed.
    Deleted,
}

impl EventType {
    /// The watch event `type`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One change, as kept in the history.
#[derive(Debug)]
pub struct Event {
    /// The resourceVersion the change got.
    pub rv: u64,
    /// Resource id (index in [`RESOURCES`]).
    pub res: usize,
    /// Namespace (`""` when cluster-scoped).
    pub namespace: String,
    /// What happened.
    pub ty: EventType,
    /// The object after the change (for DELETED: the last state, at `rv`).
    pub obj: Arc<Stored>,
    /// The object before the change (filtered watches need it to see "stopped matching").
    pub prev: Option<Arc<Stored>>,
}

/// Why a watch cannot continue from where it is.
#[derive(Debug)]
pub struct Expired {
    /// The version the watch asked for / reached.
    pub requested: u64,
    /// The oldest version a watch can start from now.
    pub oldest: u64,
}

type Key = (String, String);

struct Inner {
    rv: u64,
    /// Watches may (re)start from any version >= floor.
    floor: u64,
    /// Bumped by `compact()`: open watches started before end with 410.
    epoch: u64,
    objects: Vec<BTreeMap<Key, Arc<Stored>>>,
    history: VecDeque<Arc<Event>>,
}

/// The shared store. Locks are std locks and never held across an await.
pub struct Store {
    inner: RwLock<Inner>,
    notify: tokio::sync::watch::Sender<u64>,
}

impl Default for Store {
    fn default() -> Self {
        Store {
            inner: RwLock::new(Inner {
                rv: 0,
                floor: 0,
                epoch: 0,
                objects: RESOURCES.iter().map(|_| BTreeMap::new()).collect(),
                history: VecDeque::new(),
            }),
            notify: tokio::sync::watch::channel(0).0,
        }
    }
}

fn set_rv(v: &mut Value, rv: u64) {
    if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        m.insert("resourceVersion".into(), Value::String(rv.to_string()));
    }
}

fn meta_str<'a>(v: &'a Value, field: &str) -> Option<&'a str> {
    v.get("metadata")
        .and_then(|m| m.get(field))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

/// A random RFC 4122 version-4 UUID (std's randomly keyed hasher as the entropy source).
pub fn new_uid() -> String {
    let mut bytes = [0u8; 16];
    for chunk in bytes.chunks_mut(8) {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or_default(),
        );
        chunk.copy_from_slice(&h.finish().to_le_bytes());
    }
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

fn now_rfc3339() -> String {
    let fmt = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    time::OffsetDateTime::now_utc()
        .format(&fmt)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".into())
}

/// Forces apiVersion, kind, name and namespace of `obj` to its key; returns the non-empty
/// `metadata.resourceVersion` the writer sent, if any.
fn force_key(
    def: &ResourceDef,
    ns: &str,
    name: &str,
    obj: &mut Value,
) -> Result<Option<String>, ApiError> {
    let Some(map) = obj.as_object_mut() else {
        return Err(ApiError::bad_request("object must be a JSON object"));
    };
    map.insert("apiVersion".into(), Value::String(def.api_version()));
    map.insert("kind".into(), Value::String(def.kind.into()));
    let meta = map
        .entry("metadata")
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .ok_or_else(|| ApiError::bad_request("metadata must be an object"))?;
    meta.insert("name".into(), Value::String(name.into()));
    if def.namespaced {
        meta.insert("namespace".into(), Value::String(ns.into()));
    } else {
        meta.remove("namespace");
    }
    Ok(meta
        .get("resourceVersion")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned))
}

/// An update: uid and creationTimestamp stay those of `old`; generation goes up when the spec
/// changed.
fn carry_over(old: &Value, obj: &mut Value) {
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        for field in ["uid", "creationTimestamp"] {
            match meta_str(old, field) {
                Some(v) => {
                    meta.insert(field.into(), Value::String(v.into()));
                }
                None => {
                    meta.remove(field);
                }
            }
        }
    }
    let old_gen = old
        .pointer("/metadata/generation")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    let gen_ = if spec_changed(old, obj) {
        old_gen + 1
    } else {
        old_gen
    };
    if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        m.insert("generation".into(), json!(gen_));
    }
}

/// A create: a uid and creationTimestamp unless the object brings them, generation 1.
fn assign_new(obj: &mut Value) {
    let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) else {
        return;
    };
    if meta
        .get("uid")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        meta.insert("uid".into(), Value::String(new_uid()));
    }
    if !meta.contains_key("creationTimestamp")
        || meta.get("creationTimestamp") == Some(&Value::Null)
    {
        meta.insert("creationTimestamp".into(), Value::String(now_rfc3339()));
    }
    meta.insert("generation".into(), json!(1));
}

/// Whether anything outside `metadata`, `status`, `apiVersion` and `kind` differs (what bumps
/// `metadata.generation`).
fn spec_changed(old: &Value, new: &Value) -> bool {
    const SKIP: [&str; 4] = ["metadata", "status", "apiVersion", "kind"];
    let (Some(o), Some(n)) = (old.as_object(), new.as_object()) else {
        return old != new;
    };
    let keys = o
        .keys()
        .chain(n.keys())
        .filter(|k| !SKIP.contains(&k.as_str()));
    for k in keys {
        if o.get(k) != n.get(k) {
            return true;
        }
    }
    false
}

impl Store {
    fn read(&self) -> RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    /// A receiver that changes on every write and compaction (watches wait on it).
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.notify.subscribe()
    }

    fn bump(&self, rv: u64) {
        self.notify.send_replace(rv);
    }

    /// The current resourceVersion.
    pub fn rv(&self) -> u64 {
        self.read().rv
    }

    /// One object.
    pub fn get(&self, res: usize, ns: &str, name: &str) -> Option<Arc<Stored>> {
        self.read().objects[res]
            .get(&(ns.to_owned(), name.to_owned()))
            .cloned()
    }

    /// Objects of `res` (in namespace `ns` if given) accepted by `keep`, in (namespace, name)
    /// order, with the current resourceVersion and compaction epoch, all read atomically.
    pub fn snapshot(
        &self,
        res: usize,
        ns: Option<&str>,
        keep: impl Fn(&Value) -> bool,
    ) -> (u64, u64, Vec<Arc<Stored>>) {
        let inner = self.read();
        let map = &inner.objects[res];
        let items: Vec<Arc<Stored>> = match ns {
            Some(ns) => map
                .range((ns.to_owned(), String::new())..)
                .take_while(|((n, _), _)| n == ns)
                .map(|(_, v)| v)
                .filter(|s| keep(&s.value))
                .cloned()
                .collect(),
            None => map.values().filter(|s| keep(&s.value)).cloned().collect(),
        };
        (inner.rv, inner.epoch, items)
    }

    /// Events of `res` after `cursor`, for a watch that started in compaction epoch `epoch`;
    /// returns them and the new cursor (the newest version seen, whatever its resource).
    pub fn events_since(
        &self,
        res: usize,
        cursor: u64,
        epoch: u64,
    ) -> Result<(Vec<Arc<Event>>, u64), Expired> {
        let inner = self.read();
        if inner.epoch != epoch || cursor < inner.floor {
            return Err(Expired {
                requested: cursor,
                oldest: inner.floor,
            });
        }
        let start = inner.history.partition_point(|e| e.rv <= cursor);
        let events = inner
            .history
            .range(start..)
            .filter(|e| e.res == res)
            .cloned()
            .collect();
        Ok((events, inner.rv.max(cursor)))
    }

    /// Checks that a watch may start at `rv` now; returns the compaction epoch to watch in.
    pub fn watch_from(&self, rv: u64) -> Result<u64, Expired> {
        let inner = self.read();
        // A version from the future (e.g. from before this server restarted empty) can never be
        // caught up with: treat it like a too-old one so the client relists.
        if rv < inner.floor || rv > inner.rv {
            return Err(Expired {
                requested: rv,
                oldest: inner.floor,
            });
        }
        Ok(inner.epoch)
    }

    /// Forgets the history (see `ApiServer::compact`).
    pub fn compact(&self) {
        let rv = {
            let mut inner = self.write();
            inner.history.clear();
            inner.floor = inner.rv;
            inner.epoch += 1;
            inner.rv
        };
        self.bump(rv);
    }

    /// Read-modify-write of one object, atomically: `f` gets the current object (if any) and
    /// returns the desired one. Name, namespace, apiVersion and kind are forced to the key; a
    /// non-empty `metadata.resourceVersion` in the result must equal the current one (409
    /// otherwise); uid and creationTimestamp are kept from the current object or assigned;
    /// generation follows spec changes. Returns the stored object and whether it was created.
    pub fn modify(
        &self,
        res: usize,
        ns: &str,
        name: &str,
        f: impl FnOnce(Option<&Value>) -> Result<Value, ApiError>,
    ) -> Result<(Arc<Stored>, bool), ApiError> {
        let (stored, created, rv) = {
            let mut inner = self.write();
            let (s, c) = Self::modify_locked(&mut inner, res, ns, name, f)?;
            (s, c, inner.rv)
        };
        self.bump(rv);
        Ok((stored, created))
    }

    fn modify_locked(
        inner: &mut Inner,
        res: usize,
        ns: &str,
        name: &str,
        f: impl FnOnce(Option<&Value>) -> Result<Value, ApiError>,
    ) -> Result<(Arc<Stored>, bool), ApiError> {
        let def = &RESOURCES[res];
        let key = (ns.to_owned(), name.to_owned());
        let existing = inner.objects[res].get(&key).cloned();
        let mut obj = f(existing.as_ref().map(|s| &s.value))?;
        let asked_rv = force_key(def, ns, name, &mut obj)?;
        let rv = inner.rv + 1;
        match &existing {
            Some(old) => {
                if asked_rv.is_some_and(|r| r != old.rv.to_string()) {
                    return Err(ApiError::conflict(def.plural, name));
                }
                carry_over(&old.value, &mut obj);
            }
            None => assign_new(&mut obj),
        }
        set_rv(&mut obj, rv);
        let stored = Stored::new(obj, rv);
        inner.rv = rv;
        inner.objects[res].insert(key, stored.clone());
        let created = existing.is_none();
        Self::record(
            inner,
            Event {
                rv,
                res,
                namespace: ns.to_owned(),
                ty: if created {
                    EventType::Added
                } else {
                    EventType::Modified
                },
                obj: stored.clone(),
                prev: existing,
            },
        );
        Ok((stored, created))
    }

    fn record(inner: &mut Inner, ev: Event) {
        inner.history.push_back(Arc::new(ev));
        while inner.history.len() > MAX_HISTORY {
            if let Some(old) = inner.history.pop_front() {
                inner.floor = inner.floor.max(old.rv);
            }
        }
    }

    /// Many upserts under one lock and one wake-up (seeding). `items`: (resource, namespace,
    /// name, object); the object's resourceVersion is ignored.
    pub fn upsert_many(
        &self,
        items: impl IntoIterator<Item = (usize, String, String, Value)>,
    ) -> Result<(), ApiError> {
        let rv = {
            let mut inner = self.write();
            for (res, ns, name, mut obj) in items {
                if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
                    m.remove("resourceVersion");
                }
                Self::modify_locked(&mut inner, res, &ns, &name, |_| Ok(obj))?;
            }
            inner.rv
        };
        self.bump(rv);
        Ok(())
    }

    /// Deletes one object; `precondition`: the resourceVersion it must have (409 otherwise).
    /// Returns the deleted object at the deletion's resourceVersion, `None` if absent.
    pub fn delete(
        &self,
        res: usize,
        ns: &str,
        name: &str,
        precondition: Option<&str>,
    ) -> Result<Option<Arc<Stored>>, ApiError> {
        let (gone, rv) = {
            let mut inner = self.write();
            let key = (ns.to_owned(), name.to_owned());
            let Some(old) = inner.objects[res].get(&key).cloned() else {
                return Ok(None);
            };
            if precondition.is_some_and(|p| p != old.rv.to_string()) {
                return Err(ApiError::conflict(RESOURCES[res].plural, name));
            }
            inner.objects[res].remove(&key);
            let rv = inner.rv + 1;
            inner.rv = rv;
            let gone = old.at_rv(rv);
            Self::record(
                &mut inner,
                Event {
                    rv,
                    res,
                    namespace: ns.to_owned(),
                    ty: EventType::Deleted,
                    obj: gone.clone(),
                    prev: Some(old),
                },
            );
            (gone, rv)
        };
        self.bump(rv);
        Ok(Some(gone))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::resources::by_kind;

    #[test]
    fn a_created_object_keeps_the_uid_it_brings() {
        // Pods are seeded with the UID their kubelet-style cgroup is named after.
        let s = Store::default();
        let pod = by_kind("v1", "Pod").expect("pod");
        let uid = "2e54e4fa-d38a-4397-a6f3-c115f5c17818";
        let (a, _) = s
            .modify(pod, "ns", "p", |_| Ok(json!({"metadata": {"uid": uid}})))
            .expect("create");
        assert_eq!(a.value["metadata"]["uid"], uid);
    }

    #[test]
    fn versions_generation_history() {
        let s = Store::default();
        let cm = by_kind("v1", "ConfigMap").expect("cm");
        let (a, created) = s
            .modify(cm, "ns", "a", |_| Ok(json!({"data": {"k": "1"}})))
            .expect("create");
        assert!(created);
        assert_eq!(a.rv, 1);
        assert_eq!(a.value["metadata"]["generation"], 1);
        assert_eq!(a.value["metadata"]["namespace"], "ns");
        let uid = a.value["metadata"]["uid"].clone();
        assert_eq!(uid.as_str().map(str::len), Some(36));
        // Label change: no generation bump; data change: bump.
        let (b, _) = s
            .modify(cm, "ns", "a", |old| {
                let mut v = old.cloned().unwrap_or_default();
                v["metadata"]["labels"] = json!({"x": "y"});
                Ok(v)
            })
            .expect("update");
        assert_eq!(b.value["metadata"]["generation"], 1);
        assert_eq!(b.value["metadata"]["uid"], uid);
        let (c, _) = s
            .modify(cm, "ns", "a", |_| Ok(json!({"data": {"k": "2"}})))
            .expect("update");
        assert_eq!(c.value["metadata"]["generation"], 2);
        assert_eq!(c.value["metadata"]["uid"], uid);
        // Stale resourceVersion.
        let stale = s.modify(cm, "ns", "a", |_| {
            Ok(json!({"metadata": {"resourceVersion": "1"}}))
        });
        assert_eq!(stale.map(|_| ()).map_err(|e| e.code), Err(409));
        let gone = s
            .delete(cm, "ns", "a", None)
            .expect("delete")
            .expect("was there");
        assert_eq!(gone.rv, 4);
        assert_eq!(gone.value["metadata"]["resourceVersion"], "4");
        let (evs, cursor) = s.events_since(cm, 1, 0).expect("history");
        assert_eq!(cursor, 4);
        let types: Vec<_> = evs.iter().map(|e| e.ty).collect();
        assert_eq!(
            types,
            [EventType::Modified, EventType::Modified, EventType::Deleted]
        );
        s.compact();
        assert!(s.events_since(cm, 1, 1).is_err());
        assert!(s.events_since(cm, 4, 0).is_err(), "old epoch");
        assert!(s.events_since(cm, 4, 1).is_ok());
        assert!(s.watch_from(3).is_err());
        assert!(s.watch_from(5).is_err(), "future");
        assert_eq!(s.watch_from(4).ok(), Some(1));
    }
}
