//! What the running container really got, read from the host through /proc/<pid>: the
//! capabilities, seccomp and no_new_privs, its cgroup namespace, and the mounts it sees (the read-only
//! root, the cgroup2 hierarchy under the DaemonSet's mount, bpffs with its propagation).
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use super::manifest::AgentPod;

/// The `Name:\tvalue` line of /proc/<pid>/status.
fn status_field(pid: u32, name: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .map(|v| v.trim().to_owned())
        .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
}

/// Capability names in a hex set, upper case without `CAP_`, sorted (`capsh --decode`).
fn decode_caps(hex: &str) -> Vec<String> {
    let out = Command::new("capsh")
        .arg(format!("--decode={hex}"))
        .output()
        .expect("capsh (libcap2-bin)");
    let text = String::from_utf8_lossy(&out.stdout);
    let list = text.trim().split_once('=').map_or("", |(_, l)| l);
    let mut caps: Vec<String> = list
        .split(',')
        .filter(|c| !c.is_empty())
        .map(|c| c.trim_start_matches("cap_").to_uppercase())
        .collect();
    caps.sort();
    caps
}

/// One line of mountinfo: mount point, optional fields, filesystem type, mount options.
struct MountLine {
    point: PathBuf,
    options: String,
    optional: String,
    fstype: String,
}

fn mountinfo(pid: u32) -> Vec<MountLine> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).expect("mountinfo");
    text.lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let f: Vec<&str> = left.split_whitespace().collect();
            Some(MountLine {
                point: PathBuf::from(f.get(4)?.replace("\\040", " ")),
                options: (*f.get(5)?).to_owned(),
                optional: f.get(6..).unwrap_or_default().join(" "),
                fstype: right.split_whitespace().next()?.to_owned(),
            })
        })
        .collect()
}

/// The mount `path` is on (the longest mount point above it; the last one mounted wins).
fn mount_of<'a>(mounts: &'a [MountLine], path: &Path) -> &'a MountLine {
    mounts
        .iter()
        .filter(|m| path.starts_with(&m.point))
        .max_by_key(|m| m.point.components().count())
        .expect("some mount")
}

/// Checks the container's process against the pod's settings and prints what it sees.
pub fn container(pod: &AgentPod, pid: u32, host_cgroup_root: &Path) {
    assert_ne!(pid, 0, "no container pid");
    let mut want = pod.cap_add.clone();
    want.sort();
    assert_eq!(decode_caps(&status_field(pid, "CapEff")), want, "CapEff");
    assert_eq!(decode_caps(&status_field(pid, "CapBnd")), want, "CapBnd");
    assert_eq!(status_field(pid, "Seccomp"), "2", "seccomp filter mode");
    let nnp = if pod.allow_privilege_escalation {
        "0"
    } else {
        "1"
    };
    assert_eq!(status_field(pid, "NoNewPrivs"), nnp);
    let ns = |p: &str| std::fs::read_link(p).expect("ns link");
    assert_ne!(
        ns(&format!("/proc/{pid}/ns/cgroup")),
        ns("/proc/self/ns/cgroup"),
        "the container should have a cgroup namespace of its own"
    );
    let mounts = mountinfo(pid);
    let root = mount_of(&mounts, Path::new("/"));
    assert_eq!(
        root.options.split(',').next(),
        Some(if pod.read_only_root { "ro" } else { "rw" }),
        "root filesystem"
    );
    // Discovery: the testbed's cgroup, as the agent sees it, is on the host's cgroup2 hierarchy
    // (a bind mount shows the whole host tree whatever the cgroup namespace).
    let cg = mount_of(&mounts, &pod.in_container(host_cgroup_root));
    assert_eq!(
        cg.fstype,
        "cgroup2",
        "{} in the container",
        cg.point.display()
    );
    let cgroup2: Vec<String> = mounts
        .iter()
        .filter(|m| m.fstype == "cgroup2")
        .map(|m| m.point.display().to_string())
        .collect();
    let bpffs = pod
        .mounts
        .iter()
        .find(|m| is_bpffs(&m.host))
        .expect("a bpffs mount");
    let bpf = mount_of(&mounts, &bpffs.container);
    assert_eq!(bpf.fstype, "bpf", "{}", bpf.point.display());
    eprintln!(
        "container {pid}: caps {want:?}, seccomp 2, no_new_privs {nnp}, own cgroupns; cgroup2 \
         mounts {cgroup2:?} (without --cgroup-root the agent would take the first); {} is on {}; \
         bpffs at {} ({}; propagation: {:?})",
        pod.in_container(host_cgroup_root).display(),
        cg.point.display(),
        bpf.point.display(),
        bpf.options,
        bpf.optional
    );
}

/// Whether `dir` is on a bpffs (statfs magic).
pub fn is_bpffs(dir: &Path) -> bool {
    const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: statfs fills the struct; the path is NUL-terminated.
    let mut s: libc::statfs = unsafe { std::mem::zeroed() };
    (unsafe { libc::statfs(c.as_ptr(), &raw mut s) } == 0) && s.f_type == BPF_FS_MAGIC
}

/// Whether `dir` holds pinned objects.
pub fn pinned(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some())
}
