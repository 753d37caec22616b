//! `BPF_PROG_TEST_RUN` on the loaded programs: the kernel runs a program once on a packet we
//! craft and returns its verdict, without any network. It proves what the parser and policy do with
//! packets no well-behaved stack would send (truncated headers, bogus lengths, fragments, long
//! IPv6 extension chains), on the real verifier-accepted code.
//!
//! For `cgroup_skb` programs the kernel builds the skb from an Ethernet frame, strips the
//! Ethernet header, and gives it a socket in the *calling task's* cgroup, so the caller picks the
//! pod it speaks as by moving itself into that pod's cgroup.
use std::os::fd::{AsFd as _, AsRawFd as _};

use aya::programs::Program;

use super::Datapath;

/// Why a test run could not happen.
#[derive(Debug, thiserror::Error)]
pub enum TestRunError {
    /// No program of that name in the object.
    #[error("no program {0}")]
    NoProgram(String),
    /// The program's fd is unavailable.
    #[error("program {name}: {source}")]
    Fd {
        /// Program.
        name: String,
        /// Cause.
        #[source]
        source: aya::programs::ProgramError,
    },
    /// The kernel refused the run (e.g. EINVAL for a frame it cannot build an skb from).
    #[error("BPF_PROG_TEST_RUN on {name}: {source}")]
    Run {
        /// Program.
        name: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

/// `union bpf_attr`, the `test` member (include/uapi/linux/bpf.h).
#[repr(C)]
#[derive(Default)]
struct TestAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    _pad: u32,
}

const BPF_PROG_TEST_RUN: libc::c_long = 10;

impl Datapath {
    /// Runs program `name` once on `frame` (an Ethernet frame); returns the program's return
    /// value (for `cgroup_skb`: 1 = pass, 0 = drop).
    pub fn test_run(&self, name: &str, frame: &[u8]) -> Result<u32, TestRunError> {
        let prog: &Program = self
            .ebpf()
            .program(name)
            .ok_or_else(|| TestRunError::NoProgram(name.to_owned()))?;
        let fd = prog.fd().map_err(|source| TestRunError::Fd {
            name: name.to_owned(),
            source,
        })?;
        let mut attr = TestAttr {
            prog_fd: fd.as_fd().as_raw_fd() as u32,
            data_size_in: frame.len() as u32,
            data_in: frame.as_ptr() as u64,
            repeat: 1,
            ..Default::default()
        };
        // SAFETY: `attr` is a valid bpf_attr prefix of the size passed; `frame` outlives the call
        // and the kernel only reads it (no data_out).
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_PROG_TEST_RUN,
                &mut attr as *mut TestAttr,
                size_of::<TestAttr>() as u32,
            )
        };
        if rc < 0 {
            return Err(TestRunError::Run {
                name: name.to_owned(),
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(attr.retval)
    }
}
