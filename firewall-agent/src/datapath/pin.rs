//! Pinned state in bpffs, so enforcement outlives the agent (docs/design.md#pinning-and-restarts).
//!
//! Layout under the pin directory (`--bpffs`, [`DEFAULT_DIR`] unless told otherwise):
//! - `maps/<NAME>`: every map of the object, pinned by name. The next agent's loader opens these
//!   instead of creating new maps, so the policy, conntrack, fold state, counters and the ring
//!   buffer carry over.
//! - `links/<program>@<generation>`: one bpf_link per attached program. A link stays attached as
//!   long as its pin exists, whatever happens to the process that created it (SIGKILL included).
//!
//! A new agent attaches its own links (new generation) *before* it removes the pins of older
//! generations, so at every instant at least one complete set of programs runs against the same
//! maps: there is no window without enforcement, and during the overlap both sets read the same
//! maps, so their verdicts agree.
use std::{
    ffi::CString,
    fs, io,
    os::unix::ffi::OsStrExt as _,
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

use aya::programs::links::PinnedLink;

/// Where `run` pins and `cleanup` and `status` look unless told otherwise: one constant, so an
/// agent started without flags and the commands that inspect or remove its state agree.
pub const DEFAULT_DIR: &str = "/sys/fs/bpf/bulkhead";

/// The bpffs filesystem magic (`BPF_FS_MAGIC` in linux/magic.h).
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// Failures while preparing, reading or removing pinned state.
#[derive(Debug, thiserror::Error)]
pub enum PinError {
    /// The pin directory has no parent (e.g. `/`).
    #[error("--bpffs {0}: needs a parent directory on which bpffs is (or can be) mounted")]
    NoParent(PathBuf),
    /// Mounting bpffs failed.
    #[error(
        "{path} is not a bpffs mount and mounting one there failed: {source} (needs CAP_SYS_ADMIN; or mount it yourself: mount -t bpf bpf {path})"
    )]
    Mount {
        /// Mount point.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// A filesystem operation on the pin directory failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// Path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// An existing link pin could not be opened.
    #[error("opening pinned link {path}: {source}")]
    Link {
        /// Path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: aya::programs::links::LinkError,
    },
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> PinError {
    let path = path.to_owned();
    move |source| PinError::Io { what, path, source }
}

/// Whether `path` lies on a bpffs mount.
pub fn is_bpffs(path: &Path) -> bool {
    let Ok(c) = CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: statfs writes into a zeroed, correctly sized struct; `c` is NUL-terminated.
    unsafe {
        let mut st: libc::statfs = std::mem::zeroed();
        libc::statfs(c.as_ptr(), &mut st) == 0 && st.f_type as i64 == BPF_FS_MAGIC
    }
}

/// The pin directory's layout.
#[derive(Clone, Debug)]
pub struct PinDir {
    root: PathBuf,
}

impl PinDir {
    /// The layout under `root`, without touching the filesystem.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// Makes sure `root`'s parent is a bpffs mount (mounting one if it is not: a node where
    /// nobody mounted `/sys/fs/bpf` is common) and creates `root/maps` and `root/links`.
    pub fn prepare(&self) -> Result<(), PinError> {
        let on_bpffs = self.root.exists() && is_bpffs(&self.root);
        let parent = self
            .root
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .ok_or_else(|| PinError::NoParent(self.root.clone()))?;
        if !on_bpffs && !is_bpffs(parent) {
            fs::create_dir_all(parent).map_err(io_err("creating", parent))?;
            mount_bpffs(parent)?;
            tracing::info!(path = %parent.display(), "mounted bpffs");
        }
        for d in [self.maps(), self.links()] {
            fs::create_dir_all(&d).map_err(io_err("creating", &d))?;
        }
        Ok(())
    }

    /// The pin directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where maps are pinned by name.
    pub fn maps(&self) -> PathBuf {
        self.root.join("maps")
    }

    /// Where a map is pinned.
    pub fn map(&self, name: &str) -> PathBuf {
        self.maps().join(name)
    }

    /// Where links are pinned.
    pub fn links(&self) -> PathBuf {
        self.root.join("links")
    }

    /// Pins currently in `links/` (sorted), i.e. links of earlier generations when called before
    /// this agent attaches its own.
    pub fn link_pins(&self) -> Result<Vec<PathBuf>, PinError> {
        list(&self.links())
    }

    /// Whether any map is pinned already (the agent is adopting state rather than starting fresh).
    pub fn has_maps(&self) -> bool {
        list(&self.maps()).is_ok_and(|v| !v.is_empty())
    }
}

fn list(dir: &Path) -> Result<Vec<PathBuf>, PinError> {
    let mut out = Vec::new();
    match fs::read_dir(dir) {
        Ok(rd) => {
            for e in rd {
                out.push(e.map_err(io_err("listing", dir))?.path());
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("listing", dir)(e)),
    }
    out.sort();
    Ok(out)
}

fn mount_bpffs(at: &Path) -> Result<(), PinError> {
    let err = |source| PinError::Mount {
        path: at.to_owned(),
        source,
    };
    let target = CString::new(at.as_os_str().as_bytes())
        .map_err(|e| err(io::Error::new(io::ErrorKind::InvalidInput, e)))?;
    // SAFETY: all pointers are NUL-terminated strings that outlive the call; no data argument.
    let rc = unsafe {
        libc::mount(
            c"bpf".as_ptr(),
            target.as_ptr(),
            c"bpf".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(err(io::Error::last_os_error()));
    }
    Ok(())
}

/// A generation tag for this run's link pins: distinct from every earlier run's.
pub fn generation() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{nanos}-{}", std::process::id())
}

/// One link pin's name, `<program>@<generation>`, split; `None` for other files.
pub fn parse_link_pin(pin: &Path) -> Option<(&str, &str)> {
    pin.file_name()?.to_str()?.split_once('@')
}

/// The process id a generation tag names (`<unix ns>-<pid>`, see [`generation`]): the agent that
/// attached it, in that agent's PID namespace.
pub fn generation_pid(generation: &str) -> Option<u32> {
    generation.rsplit_once('-')?.1.parse().ok()
}

/// Unpins the given links, which detaches each one unless some process still holds it open (an
/// older agent that is still running keeps its programs until it exits). Returns what was removed.
pub fn unpin_links(pins: &[PathBuf]) -> Result<Vec<PathBuf>, PinError> {
    let mut removed = Vec::new();
    for p in pins {
        match PinnedLink::from_pin(p) {
            Ok(link) => {
                // Dropping the returned FdLink closes our last descriptor: the link detaches.
                drop(link.unpin().map_err(io_err("unpinning", p))?);
            }
            // Not a link (or already gone): remove whatever file is there.
            Err(source) => match fs::remove_file(p) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(_) => {
                    return Err(PinError::Link {
                        path: p.clone(),
                        source,
                    });
                }
            },
        }
        removed.push(p.clone());
    }
    Ok(removed)
}

/// Uninstalls: unpins every link (detaching the programs), then removes every pinned map and the
/// directory. Idempotent: a missing directory is not an error. Returns every path removed.
pub fn cleanup(root: &Path) -> Result<Vec<PathBuf>, PinError> {
    let dir = PinDir::new(root);
    if !root.exists() {
        return Ok(Vec::new());
    }
    let mut removed = unpin_links(&dir.link_pins()?)?;
    for m in list(&dir.maps())? {
        fs::remove_file(&m).map_err(io_err("removing", &m))?;
        removed.push(m);
    }
    for d in [dir.links(), dir.maps(), root.to_owned()] {
        match fs::remove_dir(&d) {
            Ok(()) => removed.push(d),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("removing", &d)(e)),
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_pins_name_their_program_generation_and_agent() {
        let g = generation();
        let pin = PinDir::new(DEFAULT_DIR)
            .links()
            .join(format!("bulkhead_egress@{g}"));
        assert_eq!(parse_link_pin(&pin), Some(("bulkhead_egress", g.as_str())));
        assert_eq!(generation_pid(&g), Some(std::process::id()));
        assert_eq!(parse_link_pin(Path::new("/x/stray")), None);
        assert_eq!(generation_pid("garbage"), None);
    }
}
