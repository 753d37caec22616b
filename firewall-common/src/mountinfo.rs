//! The cgroup2 mount point from `/proc/self/mountinfo`: where the agent attaches and where the
//! testbed lays out pod cgroups (`/sys/fs/cgroup/unified` on hybrid hosts, `/sys/fs/cgroup` on
//! most nodes; never hard-coded). User space only (`std` feature).
use std::{path::PathBuf, string::String};

/// The mount point of the cgroup2 filesystem, from mountinfo text.
pub fn cgroup2_mount_in(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let fstype = right.split_whitespace().next()?;
        (fstype == "cgroup2")
            .then(|| left.split_whitespace().nth(4).map(unescape))
            .flatten()
    })
}

/// The cgroup2 mount point of this machine; `None` when there is none (or mountinfo cannot be
/// read: the error is the caller's to word).
pub fn cgroup2_mount() -> std::io::Result<Option<PathBuf>> {
    Ok(cgroup2_mount_in(&std::fs::read_to_string(
        "/proc/self/mountinfo",
    )?))
}

/// mountinfo escapes spaces and such as `\040`.
fn unescape(s: &str) -> PathBuf {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' {
            let oct: String = chars.by_ref().take(3).collect();
            match u8::from_str_radix(&oct, 8) {
                Ok(b) => out.push(char::from(b)),
                Err(_) => {
                    out.push('\\');
                    out.push_str(&oct);
                }
            }
        } else {
            out.push(c);
        }
    }
    PathBuf::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_cgroup2_in_hybrid_and_unified_layouts() {
        let hybrid = "30 23 0:26 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755\n\
                      31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid,relatime shared:10 - cgroup2 cgroup2 rw\n";
        assert_eq!(
            cgroup2_mount_in(hybrid),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        let unified =
            "35 24 0:30 / /sys/fs/cgroup rw,nosuid shared:9 - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(
            cgroup2_mount_in(unified),
            Some(PathBuf::from("/sys/fs/cgroup"))
        );
        assert_eq!(
            cgroup2_mount_in("1 2 0:3 / /proc rw - proc proc rw\n"),
            None
        );
        let spaced = "31 30 0:27 / /mnt/cg\\040two rw - cgroup2 cgroup2 rw\n";
        assert_eq!(cgroup2_mount_in(spaced), Some(PathBuf::from("/mnt/cg two")));
    }
}
