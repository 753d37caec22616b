//! `BPF_PROG_TEST_RUN` on the loaded programs: the kernel runs a program once on a packet we
//! craft and returns its verdict, without any network. It proves what the parser and policy do with
//! packets no well-behaved stack would send (truncated headers, bogus lengths, fragments, long
//! IPv6 extension chains), on the real verifier-accepted code.
//!
//! For `cgroup_skb` programs the kernel builds the skb from an Ethernet frame, strips the
//! Ethernet header, and gives it a socket in the *calling task's* cgroup, so the caller picks the
//! pod it speaks as by moving itself into that pod's cgroup. aya's [`TestRun`] issues the syscall.
use aya::{
    TestRun as _, TestRunOptions,
    programs::{CgroupSkb, ProgramError},
};

use super::Datapath;

/// Why a test run could not happen.
#[derive(Debug, thiserror::Error)]
pub enum TestRunError {
    /// No `cgroup_skb` program of that name in the object.
    #[error("no program {0}")]
    NoProgram(String),
    /// The kernel refused the run (e.g. EINVAL for a frame it cannot build an skb from).
    #[error("BPF_PROG_TEST_RUN on {name}: {source}")]
    Run {
        /// Program.
        name: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// aya failed before the syscall (e.g. the program is not loaded).
    #[error("program {name}: {source}")]
    Program {
        /// Program.
        name: String,
        /// Cause.
        #[source]
        source: ProgramError,
    },
}

impl Datapath {
    /// Runs `cgroup_skb` program `name` once on `frame` (an Ethernet frame); returns the program's
    /// return value (1 = pass, 0 = drop).
    pub fn test_run(&self, name: &str, frame: &[u8]) -> Result<u32, TestRunError> {
        let prog: &CgroupSkb = self
            .ebpf()
            .program(name)
            .and_then(|p| p.try_into().ok())
            .ok_or_else(|| TestRunError::NoProgram(name.to_owned()))?;
        let opts = TestRunOptions {
            data_in: Some(frame),
            ..TestRunOptions::default()
        };
        let name = name.to_owned();
        match prog.test_run(opts) {
            Ok(result) => Ok(result.return_value),
            Err(ProgramError::SyscallError(e)) => Err(TestRunError::Run {
                name,
                source: e.io_error,
            }),
            Err(source) => Err(TestRunError::Program { name, source }),
        }
    }
}
