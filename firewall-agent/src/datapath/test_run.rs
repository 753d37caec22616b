//! `BPF_PROG_TEST_RUN` on the loaded programs: the kernel runs a program once on a packet we
//! craft and returns its verdict, without any network. It proves what the parser and policy do with
//! packets no well-behaved stack would send (truncated headers, bogus lengths, fragments, long
//! IPv6 extension chains), on the real verifier-accepted code.
//!
//! For `cgroup_skb` programs the kernel builds the skb from an Ethernet frame, strips the
//! Ethernet header, and gives it a socket in the *calling task's* cgroup, so the caller picks the
//! pod it speaks as by moving itself into that pod's cgroup.
use std::time::Duration;

use aya::{
    programs::{CgroupSkb, Program, ProgramError, TestRun as _, TestRunOptions},
    sys::SyscallError,
};

use super::Datapath;

/// Why a test run could not happen.
#[derive(Debug, thiserror::Error)]
pub enum TestRunError {
    /// No program of that name in the object.
    #[error("no program {0}")]
    NoProgram(String),
    /// The program is not a loaded `cgroup_skb` program.
    #[error("program {name}: {source}")]
    Fd {
        /// Program.
        name: String,
        /// Cause.
        #[source]
        source: ProgramError,
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

/// What one [`Datapath::test_run_repeat`] measured.
#[derive(Clone, Copy, Debug)]
pub struct Timed {
    /// The program's return value (the same on every run: the packet and maps are the same).
    pub return_value: u32,
    /// The kernel's average time per run (its total divided by `repeat`, in whole nanoseconds).
    pub per_run: Duration,
}

/// The error of program `name` not being what a test run needs.
fn fd_error(name: &str) -> impl Fn(ProgramError) -> TestRunError + Copy + '_ {
    move |source| TestRunError::Fd {
        name: name.to_owned(),
        source,
    }
}

impl Datapath {
    fn named(&self, name: &str) -> Result<&Program, TestRunError> {
        self.ebpf()
            .program(name)
            .ok_or_else(|| TestRunError::NoProgram(name.to_owned()))
    }

    /// Runs `cgroup_skb` program `name` once on `frame` (an Ethernet frame), through aya's
    /// [`TestRun`]; returns the program's return value (1 = pass, 0 = drop).
    pub fn test_run(&self, name: &str, frame: &[u8]) -> Result<u32, TestRunError> {
        self.test_run_repeat(name, frame, 1).map(|t| t.return_value)
    }

    /// The kernel ids of the maps program `name` uses. The [`super::writer::MapWriter`] owns the
    /// state maps, so a benchmark that needs to read them (`pathcost` copies every entry into
    /// its piece programs' maps) opens them by these ids.
    pub fn map_ids(&self, name: &str) -> Result<Vec<u32>, TestRunError> {
        let prog = self.named(name)?;
        let fd_error = fd_error(name);
        let info = prog.info().map_err(fd_error)?;
        Ok(info.map_ids().map_err(fd_error)?.unwrap_or_default())
    }

    /// Runs program `name` `repeat` times on the same skb in one `BPF_PROG_TEST_RUN` and returns
    /// the kernel's average time per run: how `cargo xtask bench --only paths` times one datapath
    /// path alone. Every run sees the maps the previous one left (a conntrack entry it inserted
    /// makes the next run a hit), so only paths that repeat themselves can be timed this way.
    pub fn test_run_repeat(
        &self,
        name: &str,
        frame: &[u8],
        repeat: u32,
    ) -> Result<Timed, TestRunError> {
        let prog = self.named(name)?;
        let fd_error = fd_error(name);
        let skb: &CgroupSkb = prog.try_into().map_err(fd_error)?;
        let opts = TestRunOptions {
            data_in: Some(frame),
            repeat,
            ..TestRunOptions::default()
        };
        match skb.test_run(opts) {
            Ok(result) => Ok(Timed {
                return_value: result.return_value,
                per_run: result.duration,
            }),
            Err(ProgramError::SyscallError(SyscallError { io_error, .. })) => {
                Err(TestRunError::Run {
                    name: name.to_owned(),
                    source: io_error,
                })
            }
            Err(e) => Err(fd_error(e)),
        }
    }
}
