//! The `file:` source: re-reads a YAML file when its content changes.
//!
//! Polling the content (not inotify) is deliberate: it sees edits, atomic renames and files
//! replaced through ConfigMap symlink swaps alike, and the file is small.
mod parse;

use std::{
    collections::{BTreeSet, hash_map::DefaultHasher},
    hash::{Hash as _, Hasher as _},
    path::{Path, PathBuf},
    time::Duration,
};

use tokio::time::{Interval, MissedTickBehavior, interval};
use tracing::{info, warn};

pub use parse::{ObjectsError, Position, documents, parse_objects};

use crate::{model::ClusterModel, policy::PolicyApis};

/// Why a file could not be used; the agent keeps its last good policy.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Not a valid object stream.
    #[error("{path}: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: Box<ObjectsError>,
    },
    /// No object at all: the transient state of a file being rewritten in place
    /// (`kubectl get ... > FILE`), never a real cluster, which has Namespaces at least. Applying it
    /// would delete every entry and enforce nothing.
    #[error(
        "{path} holds no objects (empty, or being rewritten?); replace the file atomically: write a new file, then rename it over this one"
    )]
    Empty { path: PathBuf },
}

#[derive(Debug)]
pub struct FileSource {
    path: PathBuf,
    /// Hash of the content (or of the read error) last reported.
    last: Option<u64>,
    /// Unix time (ms) the content last changed, for the freshness metric; 0 before the first read.
    pub last_change_ms: u64,
    poll: Interval,
    /// The policy kinds read; objects of the others are dropped.
    apis: PolicyApis,
    /// Kinds whose objects were dropped and said so (once per kind).
    dropped_logged: BTreeSet<&'static str>,
}

impl FileSource {
    /// Watches `path`, checking it every `poll` (the first check is immediate). Needs the
    /// runtime's timer.
    pub fn new(path: &Path, poll: Duration, apis: PolicyApis) -> Self {
        let mut poll = interval(poll);
        poll.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Self {
            path: path.to_owned(),
            last: None,
            last_change_ms: 0,
            poll,
            apis,
            dropped_logged: BTreeSet::new(),
        }
    }

    /// The model of the file's next content, or why that content is unusable. Cancel-safe.
    pub async fn next_model(&mut self) -> Result<ClusterModel, FileError> {
        loop {
            self.poll.tick().await;
            match self.read() {
                Some(Ok(mut model)) => {
                    info!(file = %self.path.display(), "source changed");
                    for kind in model.retain_apis(self.apis) {
                        if self.dropped_logged.insert(kind) {
                            let apis = self.apis.to_string();
                            warn!(file = %self.path.display(), kind, policy_apis = %apis, "ignoring the file's objects of this kind: --policy-apis does not name its API");
                        }
                    }
                    return Ok(model);
                }
                Some(Err(e)) => return Err(e),
                None => {}
            }
        }
    }

    /// Reads the file; `None` when its content is unchanged since the last call.
    fn read(&mut self) -> Option<Result<ClusterModel, FileError>> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(source) => {
                // Report a read error once per distinct failure, not every poll.
                let h = hash(&source.to_string());
                if self.last == Some(h) {
                    return None;
                }
                self.last = Some(h);
                return Some(Err(FileError::Read {
                    path: self.path.clone(),
                    source,
                }));
            }
        };
        let h = hash(&text);
        if self.last == Some(h) {
            return None;
        }
        self.last = Some(h);
        self.last_change_ms = crate::clock::unix_ms();
        Some(usable(&self.path, &text))
    }
}

/// Reads the file once, with the checks of a poll (`firewall-agent check`).
pub fn read_model(path: &Path) -> Result<ClusterModel, FileError> {
    let text = std::fs::read_to_string(path).map_err(|source| FileError::Read {
        path: path.to_owned(),
        source,
    })?;
    usable(path, &text)
}

/// The model of a file's content, unless that content cannot be a cluster.
fn usable(path: &Path, text: &str) -> Result<ClusterModel, FileError> {
    let empty = || FileError::Empty {
        path: path.to_owned(),
    };
    if text.trim().is_empty() {
        return Err(empty());
    }
    let model = parse_objects(text).map_err(|source| FileError::Parse {
        path: path.to_owned(),
        source: Box::new(source),
    })?;
    if model == ClusterModel::default() {
        return Err(empty());
    }
    Ok(model)
}

fn hash(s: &str) -> u64 {
    let mut h = DefaultHasher::new();
    s.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_empty_error(text: &str) -> bool {
        matches!(
            usable(Path::new("c.yaml"), text),
            Err(FileError::Empty { .. })
        )
    }

    #[test]
    fn a_file_without_objects_is_refused_not_applied_as_an_empty_cluster() {
        assert!(is_empty_error(""));
        assert!(is_empty_error("  \n\t\n"));
        assert!(is_empty_error("# truncated\n---\n---\n"));
        assert!(is_empty_error("apiVersion: v1\nkind: List\nitems: []\n"));
    }

    #[test]
    fn a_file_with_one_namespace_is_usable() {
        let model = usable(
            Path::new("c.yaml"),
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: default}\n",
        );
        assert!(model.is_ok_and(|m| m.namespaces.contains_key("default")));
    }
}
