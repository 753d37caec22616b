//! Running the real `firewall-agent` (or any child) and reading its output, shared by the e2e
//! tests, the demo and the bench: each wraps these in its own error style (panics in tests,
//! `anyhow` in xtask).
use std::{
    io::{BufRead as _, BufReader, Read},
    process::{Child, ExitStatus},
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

/// Lines read so far from a child's pipe, appended by a reader thread.
pub type Lines<T> = Arc<Mutex<Vec<T>>>;

/// Why [`terminate`] could not stop a child cleanly.
#[derive(Debug, thiserror::Error)]
pub enum StopError {
    /// Waiting on the child failed.
    #[error("waiting for the child: {0}")]
    Wait(#[from] std::io::Error),
    /// It outlived the grace period and was killed.
    #[error("did not stop within {0:?} of SIGTERM")]
    TimedOut(Duration),
}

/// Reads `r` line by line on a thread until it closes, appending `f(line)` (when `Some`) to `sink`.
pub fn pump<T: Send + 'static>(
    r: impl Read + Send + 'static,
    sink: Lines<T>,
    f: impl Fn(String) -> Option<T> + Send + 'static,
) {
    thread::spawn(move || {
        for line in BufReader::new(r).lines().map_while(Result::ok) {
            if let Some(v) = f(line)
                && let Ok(mut s) = sink.lock()
            {
                s.push(v);
            }
        }
    });
}

/// Sends `signal` to our own child.
pub fn signal(child: &Child, signal: libc::c_int) {
    // SAFETY: plain kill(2) on a pid we spawned and have not reaped.
    unsafe { libc::kill(child.id() as i32, signal) };
}

/// SIGTERM, then waits up to `grace` for the exit; past it, SIGKILL and [`StopError::TimedOut`].
pub fn terminate(child: &mut Child, grace: Duration) -> Result<ExitStatus, StopError> {
    signal(child, libc::SIGTERM);
    let deadline = Instant::now() + grace;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(StopError::TimedOut(grace));
        }
        thread::sleep(Duration::from_millis(10));
    }
}
