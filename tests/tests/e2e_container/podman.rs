//! The agent container under podman + runc, with an [`AgentPod`]'s settings turned into the
//! engine's flags one by one, and the handful of flags this host needs (see
//! ../shared/notes/container-runtime.md and the comments below).
use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::TcpStream,
    os::fd::AsRawFd as _,
    path::PathBuf,
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

use super::manifest::{AgentPod, Seccomp};

/// The container runtime whose `RuntimeDefault` the run stands for.
#[derive(Debug, Clone)]
pub enum Engine {
    /// podman's own default profile: the one CRI-O applies.
    Crio,
    /// podman with a profile equal to containerd's default for bpf/perf_event_open.
    Containerd(PathBuf),
}

/// A directory of the host the test mounts into the container on top of what the manifests
/// say (the agent's `file:` source stands in for the API server).
pub struct Extra {
    pub host: PathBuf,
    pub container: PathBuf,
}

/// `podman` with the global flags this host needs: crun refuses hybrid cgroups (runc works), and
/// there is no systemd for the cgroup manager or the event log.
pub fn podman() -> Command {
    let mut c = Command::new("podman");
    c.args(["--runtime", "runc", "--cgroup-manager", "cgroupfs"])
        .args(["--events-backend", "file"]);
    c
}

fn limit(resource: libc::__rlimit_resource_t) -> u64 {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass.
    assert_eq!(unsafe { libc::getrlimit(resource, &raw mut r) }, 0);
    r.rlim_max
}

/// Engine quirks of this host, not settings: podman's default ulimits exceed this sandbox's
/// hard limits, and runc refuses an nproc limit above kernel.pid_max (Kubernetes sets no
/// ulimits). A pod's containers get their own cgroup namespace on cgroup v2 nodes; podman's
/// default on a hybrid host would be the host's.
fn host_args() -> Vec<String> {
    let pid_max: u64 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(32768);
    let nofile = limit(libc::RLIMIT_NOFILE);
    let nproc = limit(libc::RLIMIT_NPROC).min(pid_max);
    vec![
        format!("--ulimit=nofile={nofile}:{nofile}"),
        format!("--ulimit=nproc={nproc}:{nproc}"),
        "--cgroupns=private".into(),
    ]
}

/// The securityContext: capabilities, read-only root, user, no_new_privs, seccomp.
fn security_args(pod: &AgentPod, engine: &Engine) -> Vec<String> {
    assert!(!pod.privileged, "the DaemonSet must not be privileged");
    let mut a: Vec<String> = pod
        .cap_drop
        .iter()
        .map(|c| format!("--cap-drop={c}"))
        .collect();
    a.extend(pod.cap_add.iter().map(|c| format!("--cap-add={c}")));
    if pod.read_only_root {
        // Kubernetes adds no tmpfs on a read-only root; podman would, on /tmp, /run and /var/tmp.
        a.extend(["--read-only".into(), "--read-only-tmpfs=false".into()]);
    }
    if let Some(uid) = pod.run_as_user {
        a.push(format!("--user={uid}"));
    }
    if !pod.allow_privilege_escalation {
        a.push("--security-opt=no-new-privileges".into());
    }
    match (&pod.seccomp, engine) {
        (Seccomp::Localhost(path), _) | (Seccomp::RuntimeDefault, Engine::Containerd(path)) => {
            a.push(format!("--security-opt=seccomp={}", path.display()));
        }
        (Seccomp::RuntimeDefault, Engine::Crio) => {}
    }
    a
}

/// The hostPath volumes (recursive binds, as the kubelet's), with their propagation.
fn mount_args(pod: &AgentPod) -> Vec<String> {
    pod.mounts
        .iter()
        .map(|m| {
            assert!(
                m.host.is_dir(),
                "hostPath {} is not a directory",
                m.host.display()
            );
            let propagation = match m.propagation.as_deref() {
                None | Some("None") => "rprivate",
                Some("HostToContainer") => "rslave",
                Some("Bidirectional") => panic!("Bidirectional propagation needs privileged"),
                Some(other) => panic!("unknown mountPropagation {other}"),
            };
            let ro = if m.read_only { "ro," } else { "" };
            format!(
                "--volume={}:{}:{ro}rbind,{propagation}",
                m.host.display(),
                m.container.display()
            )
        })
        .collect()
}

/// The `podman run` arguments for `pod` (everything up to and including the image's args).
fn run_args(pod: &AgentPod, engine: &Engine, name: &str, extra: &Extra) -> Vec<String> {
    let mut a: Vec<String> = vec!["run".into(), "--rm".into(), format!("--name={name}")];
    a.extend(host_args());
    a.extend(security_args(pod, engine));
    // hostNetwork: false is a network namespace of the pod's own; the agent needs no network
    // for a file source, so loopback only (the readiness probe is sent from inside it).
    let network = if pod.host_network { "host" } else { "none" };
    a.push(format!("--network={network}"));
    a.extend(mount_args(pod));
    a.push(format!(
        "--volume={}:{}:ro",
        extra.host.display(),
        extra.container.display()
    ));
    a.extend(pod.env.iter().map(|(k, v)| format!("--env={k}={v}")));
    if let Some(m) = &pod.memory_limit {
        let m = m.replace("Mi", "m").replace("Gi", "g");
        a.push(format!("--memory={m}"));
    }
    if let Some(c) = &pod.cpu_limit {
        a.push(format!("--cpus={c}"));
    }
    let (entrypoint, rest) = pod.command.split_first().expect("a command");
    a.push(format!("--entrypoint={entrypoint}"));
    a.push(pod.image.clone());
    a.extend(rest.iter().cloned());
    a.extend(pod.args.iter().cloned());
    a
}

/// A running (or exited) agent container, its stdout and stderr collected line by line.
pub struct Container {
    name: String,
    child: Option<Child>,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
}

fn pump(r: impl std::io::Read + Send + 'static, sink: Arc<Mutex<Vec<String>>>, tag: &'static str) {
    thread::spawn(move || {
        for line in BufReader::new(r).lines().map_while(Result::ok) {
            if !tag.is_empty() {
                eprintln!("[{tag}] {line}");
            }
            sink.lock().expect("lock").push(line);
        }
    });
}

impl Container {
    /// `podman run` in the foreground (attached), as the kubelet would start it.
    pub fn start(pod: &AgentPod, engine: &Engine, name: &str, extra: &Extra) -> Container {
        let _ = podman().args(["rm", "--force", name]).output();
        let args = run_args(pod, engine, name, extra);
        eprintln!("podman {}", args.join(" "));
        let mut child = podman()
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn podman");
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        pump(child.stdout.take().expect("stdout"), stdout.clone(), "");
        pump(
            child.stderr.take().expect("stderr"),
            stderr.clone(),
            "container",
        );
        Container {
            name: name.to_owned(),
            child: Some(child),
            stdout,
            stderr,
        }
    }

    /// The container's init process (the agent) as the host sees it, once it runs.
    pub fn pid(&self) -> u32 {
        let out = podman()
            .args(["inspect", "--format", "{{.State.Pid}}", &self.name])
            .output()
            .expect("podman inspect");
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or(0)
    }

    /// GET `path` on `port` from inside the container's network namespace; the status code.
    pub fn http_status(&self, path: &str, port: u16) -> Option<u16> {
        let ns = std::fs::File::open(format!("/proc/{}/ns/net", self.pid())).ok()?;
        let path = path.to_owned();
        thread::spawn(move || {
            // SAFETY: setns on this thread only, with a namespace fd we hold open.
            if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return None;
            }
            let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
            s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
            write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
            let mut text = String::new();
            s.read_to_string(&mut text).ok()?;
            text.split_whitespace().nth(1)?.parse().ok()
        })
        .join()
        .ok()
        .flatten()
    }

    /// Waits until the readiness endpoint answers 200.
    pub fn wait_ready(&mut self, (path, port): &(String, u16), timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.http_status(path, *port) != Some(200) {
            if let Some(status) = self.exited() {
                panic!("the container exited ({status}):\n{}", self.stderr());
            }
            assert!(
                Instant::now() < deadline,
                "{path} not 200 within {timeout:?}"
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    fn exited(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Waits for the container to end by itself; its exit status.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.exited() {
                // The readers finish when the pipes close.
                thread::sleep(Duration::from_millis(100));
                return status;
            }
            assert!(Instant::now() < deadline, "still running after {timeout:?}");
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Everything the container wrote on stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().expect("lock").join("\n")
    }

    /// The violation log so far: the container's stdout, one JSON object a line.
    pub fn violations(&self) -> Vec<Value> {
        self.stdout
            .lock()
            .expect("lock")
            .iter()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("stdout: {e}: {l}")))
            .collect()
    }

    /// Waits until a violation line satisfies `pred`.
    pub fn wait_violation(&self, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = self.violations().into_iter().find(&pred) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "no matching violation line in {timeout:?}; stdout:\n{:?}",
                self.violations()
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// `podman kill` (SIGKILL, as an OOM kill or a node problem would), then waits for the exit.
    pub fn kill(mut self) -> ExitStatus {
        crate::common::stdout_of(podman().args(["kill", &self.name]), "podman kill");
        self.wait_exit(Duration::from_secs(20))
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = podman().args(["rm", "--force", &self.name]).output();
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
