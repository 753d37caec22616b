//! Kubelet-style cgroup layout (docs/design.md#local-pods-cgroup-ids) and the cgroup v2 mount.
//!
//! The agent finds pods by walking the cgroup tree for `pod<UID>` directories, so the testbed must
//! lay them out exactly as kubelet does for each driver and QoS class.
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

use crate::scenario::{CgroupDriver, Qos};

/// The cgroup v2 mount point (`firewall_common::mountinfo`, as the agent finds it).
pub fn cgroup2_mount() -> anyhow::Result<PathBuf> {
    firewall_common::mountinfo::cgroup2_mount()
        .context("reading /proc/self/mountinfo")?
        .context("no cgroup2 mount in /proc/self/mountinfo (cgroup v2 is required)")
}

/// The directories (relative to the cgroup root, parents first) that kubelet would create for one
/// container of a pod: the last one is the container cgroup, the one before it the pod cgroup.
pub fn pod_cgroup_chain(
    driver: CgroupDriver,
    qos: Qos,
    uid: &str,
    container_id: &str,
) -> Vec<PathBuf> {
    let mut levels: Vec<String> = Vec::new();
    match driver {
        CgroupDriver::Cgroupfs => {
            levels.push("kubepods".into());
            match qos {
                Qos::Guaranteed => {}
                Qos::Burstable => levels.push("burstable".into()),
                Qos::Besteffort => levels.push("besteffort".into()),
            }
            levels.push(format!("pod{uid}"));
            levels.push(container_id.to_owned());
        }
        CgroupDriver::Systemd => {
            let uid_ = uid.replace('-', "_");
            levels.push("kubepods.slice".into());
            let prefix = match qos {
                Qos::Guaranteed => "kubepods".to_owned(),
                Qos::Burstable => "kubepods-burstable".to_owned(),
                Qos::Besteffort => "kubepods-besteffort".to_owned(),
            };
            if qos != Qos::Guaranteed {
                levels.push(format!("{prefix}.slice"));
            }
            levels.push(format!("{prefix}-pod{uid_}.slice"));
            levels.push(format!("cri-containerd-{container_id}.scope"));
        }
    }
    let mut acc = PathBuf::new();
    levels
        .into_iter()
        .map(|l| {
            acc.push(l);
            acc.clone()
        })
        .collect()
}

/// Whether a cgroup (and its descendants) still holds processes (`cgroup.events: populated`).
pub fn populated(dir: &Path) -> anyhow::Result<bool> {
    let events = std::fs::read_to_string(dir.join("cgroup.events"))
        .with_context(|| format!("reading {}/cgroup.events", dir.display()))?;
    Ok(events.lines().any(|l| l.trim() == "populated 1"))
}

/// Checks a path is a directory strictly below the cgroup2 mount, so cleanup can never rmdir or
/// kill anything outside it.
pub fn ensure_below(mount: &Path, dir: &Path) -> anyhow::Result<()> {
    if dir == mount || !dir.starts_with(mount) || dir.components().any(|c| c.as_os_str() == "..") {
        bail!(
            "{} is not a cgroup below {}",
            dir.display(),
            mount.display()
        );
    }
    Ok(())
}

/// A cgroup a test creates directly below `root` and removes again on drop (the kernel detaches
/// any programs left attached to it), even when an assertion fails first.
#[derive(Debug)]
pub struct TempCgroup {
    dir: PathBuf,
    /// The cgroup this process came from, while [`TempCgroup::enter`] moved it here.
    home: Option<PathBuf>,
}

impl TempCgroup {
    /// Creates `root/name`.
    pub fn create(root: &Path, name: &str) -> anyhow::Result<TempCgroup> {
        let dir = root.join(name);
        std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(TempCgroup { dir, home: None })
    }

    /// Creates `root/name` and moves this process into it (a socket it creates, and a
    /// `BPF_PROG_TEST_RUN` it issues, then belong to that cgroup) until drop.
    pub fn enter(root: &Path, name: &str) -> anyhow::Result<TempCgroup> {
        let own = std::fs::read_to_string("/proc/self/cgroup").context("/proc/self/cgroup")?;
        let rel = own
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .context("no cgroup v2 membership in /proc/self/cgroup")?
            .trim_start_matches('/');
        let mut cg = Self::create(root, name)?;
        let home = root.join(rel);
        std::fs::write(cg.dir.join("cgroup.procs"), std::process::id().to_string())
            .with_context(|| format!("joining {}", cg.dir.display()))?;
        cg.home = Some(home);
        Ok(cg)
    }

    /// Its directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Its cgroup id (the directory's inode number).
    pub fn id(&self) -> anyhow::Result<u64> {
        use std::os::unix::fs::MetadataExt as _;
        Ok(std::fs::metadata(&self.dir)
            .with_context(|| format!("reading {}", self.dir.display()))?
            .ino())
    }
}

impl Drop for TempCgroup {
    fn drop(&mut self) {
        if let Some(home) = &self.home {
            let _ = std::fs::write(home.join("cgroup.procs"), std::process::id().to_string());
        }
        let _ = std::fs::remove_dir(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts() {
        let uid = "1234-5678";
        let last = |d, q| {
            pod_cgroup_chain(d, q, uid, "c0ffee")
                .last()
                .map(|p| p.display().to_string())
        };
        assert_eq!(
            last(CgroupDriver::Cgroupfs, Qos::Burstable).as_deref(),
            Some("kubepods/burstable/pod1234-5678/c0ffee")
        );
        assert_eq!(
            last(CgroupDriver::Cgroupfs, Qos::Guaranteed).as_deref(),
            Some("kubepods/pod1234-5678/c0ffee")
        );
        assert_eq!(
            last(CgroupDriver::Systemd, Qos::Besteffort).as_deref(),
            Some(
                "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1234_5678.slice/cri-containerd-c0ffee.scope"
            )
        );
        assert_eq!(
            last(CgroupDriver::Systemd, Qos::Guaranteed).as_deref(),
            Some("kubepods.slice/kubepods-pod1234_5678.slice/cri-containerd-c0ffee.scope")
        );
    }
}
