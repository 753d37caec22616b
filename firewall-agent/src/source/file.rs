//! The `file:` source: re-reads a YAML file when its content changes.
//!
//! Polling the content (not inotify) is deliberate: it sees edits, atomic renames and files
//! replaced through ConfigMap symlink swaps alike, and the file is small.
use std::{
    collections::hash_map::DefaultHasher,
    hash::{Hash as _, Hasher as _},
    path::{Path, PathBuf},
};

use crate::{model::ClusterModel, objects};

/// Why a file could not be used; the agent keeps its last good policy.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// Unreadable.
    #[error("reading {path}: {source}")]
    Read {
        /// File.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Not a valid object stream.
    #[error("{path}: {source}")]
    Parse {
        /// File.
        path: PathBuf,
        /// Cause.
        #[source]
        source: objects::ObjectsError,
    },
}

/// A watched source file.
#[derive(Debug)]
pub struct FileSource {
    path: PathBuf,
    last: Option<u64>,
}

impl FileSource {
    /// Watches `path` (nothing read yet).
    pub fn new(path: &Path) -> Self {
        Self {
            path: path.to_owned(),
            last: None,
        }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the file; `None` when its content is unchanged since the last call.
    pub fn poll(&mut self) -> Option<Result<ClusterModel, FileError>> {
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
        Some(
            objects::parse_objects(&text).map_err(|source| FileError::Parse {
                path: self.path.clone(),
                source,
            }),
        )
    }
}

fn hash(s: &str) -> u64 {
    let mut h = DefaultHasher::new();
    s.hash(&mut h);
    h.finish()
}
