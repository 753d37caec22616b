//! Finding pods' cgroups (docs/design.md#local-pods-cgroup-ids): the cgroup v2 root from
//! `/proc/self/mountinfo`, and a pod's cgroup from its UID under either kubelet cgroup driver.
//! Every cgroup below the pod cgroup (its containers) belongs to the pod; a cgroup's id is its
//! directory's inode number.
use std::collections::BTreeSet;
use std::{
    fs, io,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

/// Errors finding the cgroup v2 root.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// mountinfo unreadable.
    #[error("reading /proc/self/mountinfo: {0}")]
    MountInfo(#[source] io::Error),
    /// No cgroup2 mount: the agent needs the unified hierarchy.
    #[error("no cgroup2 filesystem is mounted (cgroup v2 is required); pass --cgroup-root")]
    NoCgroup2,
}

/// The cgroup v2 root of this machine.
pub fn cgroup2_root() -> Result<PathBuf, CgroupError> {
    firewall_common::mountinfo::cgroup2_mount()
        .map_err(CgroupError::MountInfo)?
        .ok_or(CgroupError::NoCgroup2)
}

/// The places a pod's cgroup can be, for both drivers and every QoS class.
pub fn pod_cgroup_candidates(root: &Path, uid: &str) -> Vec<PathBuf> {
    let mut out = Vec::with_capacity(6);
    let fs_dir = root.join("kubepods");
    out.push(fs_dir.join(format!("pod{uid}")));
    for qos in ["burstable", "besteffort"] {
        out.push(fs_dir.join(qos).join(format!("pod{uid}")));
    }
    let su = uid.replace('-', "_");
    let sd = root.join("kubepods.slice");
    out.push(sd.join(format!("kubepods-pod{su}.slice")));
    for qos in ["burstable", "besteffort"] {
        out.push(
            sd.join(format!("kubepods-{qos}.slice"))
                .join(format!("kubepods-{qos}-pod{su}.slice")),
        );
    }
    out
}

/// UIDs of every pod that has a cgroup under `root` (both drivers, every QoS class): what the
/// kubelet runs on this node, whatever the API says. Pods found here but in no local Pod object
/// point at a wrong `--node-name`.
pub fn pod_uids(root: &Path) -> BTreeSet<String> {
    let parents = [
        "kubepods",
        "kubepods/burstable",
        "kubepods/besteffort",
        "kubepods.slice",
        "kubepods.slice/kubepods-burstable.slice",
        "kubepods.slice/kubepods-besteffort.slice",
    ];
    let mut uids = BTreeSet::new();
    for parent in parents {
        let Ok(entries) = fs::read_dir(root.join(parent)) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name();
            let Some(name) = name.to_str() else { continue };
            let uid = if let Some(uid) = name.strip_prefix("pod") {
                Some(uid.to_owned())
            } else {
                name.strip_suffix(".slice")
                    .and_then(|n| n.rsplit_once("-pod"))
                    .map(|(_, su)| su.replace('_', "-"))
            };
            uids.extend(uid.filter(|u| !u.is_empty()));
        }
    }
    uids
}

/// The cgroup ids of a pod: its pod cgroup and every cgroup below it (bounded depth). Empty when
/// the cgroup does not exist (yet).
pub fn pod_cgroup_ids(root: &Path, uid: &str) -> Vec<u64> {
    let mut ids = Vec::new();
    for dir in pod_cgroup_candidates(root, uid) {
        collect(&dir, 0, &mut ids);
    }
    ids.sort_unstable();
    ids.dedup();
    ids
}

const MAX_DEPTH: usize = 4;

fn collect(dir: &Path, depth: usize, ids: &mut Vec<u64>) {
    let Ok(meta) = fs::metadata(dir) else { return };
    if !meta.is_dir() {
        return;
    }
    ids.push(meta.ino());
    if depth >= MAX_DEPTH {
        return;
    }
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            collect(&e.path(), depth + 1, ids);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_pod_and_container_cgroups_for_both_drivers() {
        let tmp = std::env::temp_dir().join(format!("bulkhead-cg-test-{}", std::process::id()));
        let uid = "0b1c2d3e-aaaa-bbbb-cccc-111122223333";
        let fs_pod = tmp.join("kubepods/burstable").join(format!("pod{uid}"));
        fs::create_dir_all(fs_pod.join("c1")).unwrap();
        fs::create_dir_all(fs_pod.join("c2")).unwrap();
        assert_eq!(pod_cgroup_ids(&tmp, uid).len(), 3);
        let su = uid.replace('-', "_");
        let sd_pod = tmp.join(format!(
            "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{su}.slice"
        ));
        fs::create_dir_all(sd_pod.join("cri-containerd-abc.scope")).unwrap();
        assert_eq!(pod_cgroup_ids(&tmp, uid).len(), 5);
        assert!(pod_cgroup_ids(&tmp, "ffffffff-0000-0000-0000-000000000000").is_empty());
        fs::create_dir_all(tmp.join("kubepods.slice/kubepods-podaaaa_bbbb.slice")).unwrap();
        fs::create_dir_all(tmp.join("kubepods.slice/kubepods-burstable.slice")).unwrap();
        let uids: Vec<String> = pod_uids(&tmp).into_iter().collect();
        assert_eq!(uids, [uid.to_owned(), "aaaa-bbbb".to_owned()]);
        fs::remove_dir_all(&tmp).unwrap();
    }
}
