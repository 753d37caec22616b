//! Running processes inside a pod: in its container cgroup (the firewall identifies pods by the
//! socket's cgroup) and, unless hostNetwork, in its network namespace.
use std::{
    fmt::Display,
    fs::{self, File},
    os::{fd::AsRawFd as _, unix::process::CommandExt as _},
    path::Path,
    process::{Command, Output, Stdio},
};

use anyhow::{Context as _, bail};

use super::Testbed;

/// The stdout of a finished command, or an error `WHAT failed (STATUS): STDERR`.
pub(super) fn ensure_success(out: Output, what: impl Display) -> anyhow::Result<Vec<u8>> {
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out.stdout)
}

/// A command that runs in cgroup `cgroup` and, if given, network namespace `netns`.
pub(super) fn command_in(
    netns: Option<&str>,
    cgroup: &Path,
    program: impl AsRef<std::ffi::OsStr>,
) -> anyhow::Result<Command> {
    let procs_path = cgroup.join("cgroup.procs");
    // Opened here (O_CLOEXEC, as std always does), used in the child: pre_exec may not allocate.
    let procs = fs::OpenOptions::new()
        .write(true)
        .open(&procs_path)
        .with_context(|| format!("opening {}", procs_path.display()))?;
    let netns = match netns {
        Some(ns) => Some(
            File::open(Path::new("/run/netns").join(ns))
                .with_context(|| format!("opening netns {ns}"))?,
        ),
        None => None,
    };
    let mut cmd = Command::new(program);
    // SAFETY: only async-signal-safe calls (write, setns) on fds opened before the fork.
    unsafe {
        cmd.pre_exec(move || {
            if libc::write(procs.as_raw_fd(), b"0".as_ptr().cast(), 1) != 1 {
                return Err(std::io::Error::last_os_error());
            }
            if let Some(ns) = &netns
                && libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Ok(cmd)
}

impl Testbed {
    /// A command that will run inside the pod: in its container cgroup (the firewall identifies
    /// pods by the socket's cgroup) and, unless hostNetwork, in its network namespace.
    pub fn pod_command(
        &self,
        key: &str,
        program: impl AsRef<std::ffi::OsStr>,
    ) -> anyhow::Result<Command> {
        let pod = self.pod(key)?;
        command_in(pod.netns.as_deref(), &pod.container_cgroup, program)
    }

    /// Runs `bulkhead-pod ARGS` in pod `from` (or on the host); returns its stdout.
    pub(super) fn run_pod_binary(
        &self,
        from: Option<&str>,
        args: &[String],
    ) -> anyhow::Result<String> {
        let cmd = match from {
            Some(key) => self.pod_command(key, &self.pod_binary)?,
            None => Command::new(&self.pod_binary),
        };
        self.run_command(cmd, from.unwrap_or("the host"), args)
    }

    /// Runs `cmd` (the pod binary, placed in `place`) with `args`; returns its stdout.
    pub(super) fn run_command(
        &self,
        mut cmd: Command,
        place: &str,
        args: &[String],
    ) -> anyhow::Result<String> {
        let out = cmd
            .args(args)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {} in {place}", self.pod_binary.display()))?;
        let what = format!("`bulkhead-pod {}` in {place}", args.join(" "));
        String::from_utf8(ensure_success(out, what)?).context("bulkhead-pod output is not UTF-8")
    }
}
