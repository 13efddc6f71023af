//! A spawned server process: spawn, readiness, signals, restart with the same arguments.

use std::ffi::OsString;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

use super::probe::{Probe, listener_owned_by};
use super::{FixtureError, read_log_tail};

/// Lines of log attached to startup errors and returned by `log_tail()`.
pub(crate) const LOG_TAIL_LINES: usize = 40;

/// How long `stop()` waits after SIGTERM before escalating to SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// A server child process that can be stopped and started again with the same
/// command line (hence the same ports and data dir).
#[derive(Debug)]
pub(crate) struct ManagedProcess {
    label: String,
    program: PathBuf,
    args: Vec<OsString>,
    cwd: PathBuf,
    log_path: PathBuf,
    probe: Probe,
    /// Every port the server listens on.
    ports: Vec<u16>,
    /// While the server is stopped: sockets bound (not listening, no `SO_REUSEADDR`) to
    /// its ports, so that no other server picks them before the restart. Connecting to
    /// them is still refused.
    reserved: Vec<tokio::net::TcpSocket>,
    child: Option<Child>,
    paused: bool,
}

impl ManagedProcess {
    pub(crate) fn new(
        label: impl Into<String>,
        program: PathBuf,
        args: Vec<OsString>,
        cwd: PathBuf,
        log_path: PathBuf,
        probe: Probe,
        ports: Vec<u16>,
    ) -> Self {
        Self {
            label: label.into(),
            program,
            args,
            cwd,
            log_path,
            probe,
            ports,
            reserved: Vec::new(),
            child: None,
            paused: false,
        }
    }

    pub(crate) fn log_path(&self) -> &Path {
        &self.log_path
    }

    pub(crate) fn log_tail(&self) -> String {
        read_log_tail(&self.log_path, LOG_TAIL_LINES)
    }

    /// The OS pid while the process runs.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// Whether the process is alive (paused counts as alive).
    pub(crate) fn is_running(&mut self) -> bool {
        match self.child.as_mut().map(Child::try_wait) {
            Some(Ok(None)) => true,
            Some(_) => {
                self.child = None;
                self.paused = false;
                false
            }
            None => false,
        }
    }

    /// Runs the readiness probe once.
    pub(crate) async fn probe(&self) -> Result<(), String> {
        self.probe.check().await
    }

    /// Best effort: holds the ports of the stopped server (see `reserved`). A port that
    /// cannot be bound (e.g. connections of the dead server in `TIME_WAIT`) is skipped.
    fn reserve_ports(&mut self) {
        self.reserved = self
            .ports
            .iter()
            .filter_map(|&port| {
                let socket = tokio::net::TcpSocket::new_v4().ok()?;
                socket.set_reuseaddr(false).ok()?;
                socket
                    .bind(std::net::SocketAddr::from(([127, 0, 0, 1], port)))
                    .ok()?;
                Some(socket)
            })
            .collect();
    }

    /// Spawns the process (logs appended to the log file). Does not wait for readiness.
    pub(crate) fn spawn(&mut self) -> Result<(), FixtureError> {
        self.reserved.clear();
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .map_err(|e| FixtureError::io(format!("opening log {}", self.log_path.display()), e))?;
        let cmdline = std::iter::once(self.program.as_os_str())
            .chain(self.args.iter().map(OsString::as_os_str))
            .map(|s| s.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ");
        let _ = writeln!(log, "=== coord-testkit: starting {}: {cmdline}", self.label);
        let stderr = log
            .try_clone()
            .map_err(|e| FixtureError::io("cloning the log file handle", e))?;
        let child = Command::new(&self.program)
            .args(&self.args)
            .current_dir(&self.cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(stderr))
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| FixtureError::Spawn {
                program: self.program.clone(),
                source,
            })?;
        self.child = Some(child);
        self.paused = false;
        Ok(())
    }

    /// Polls the probe until it answers, the process exits, or `timeout` passes.
    pub(crate) async fn wait_ready(&mut self, timeout: Duration) -> Result<(), FixtureError> {
        let deadline = Instant::now() + timeout;
        let mut delay = Duration::from_millis(10);
        loop {
            let Some(child) = self.child.as_mut() else {
                return Err(FixtureError::NotRunning {
                    what: self.label.clone(),
                });
            };
            if let Some(status) = child
                .try_wait()
                .map_err(|e| FixtureError::io(format!("polling {}", self.label), e))?
            {
                self.child = None;
                return Err(FixtureError::EarlyExit {
                    what: self.label.clone(),
                    status,
                    log_tail: self.log_tail(),
                });
            }
            let last = match self.probe.check().await {
                Ok(()) => return self.check_ownership(),
                Err(e) => e,
            };
            if Instant::now() >= deadline {
                return Err(FixtureError::NotReady {
                    what: self.label.clone(),
                    timeout,
                    last_probe: last,
                    log_tail: self.log_tail(),
                });
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_millis(100));
        }
    }

    /// After a successful probe: make sure our process, not a squatter, answered.
    fn check_ownership(&mut self) -> Result<(), FixtureError> {
        let port = self.probe.port();
        let Some(pid) = self.pid() else {
            return Ok(());
        };
        if listener_owned_by(pid, port) == Some(false) {
            return Err(FixtureError::PortTaken {
                what: self.label.clone(),
                port,
                log_tail: self.log_tail(),
            });
        }
        Ok(())
    }

    fn signal(&self, signal: Signal, name: &'static str) -> Result<(), FixtureError> {
        let pid = self.pid().ok_or_else(|| FixtureError::NotRunning {
            what: self.label.clone(),
        })?;
        let pid = i32::try_from(pid).map_err(|_| FixtureError::NotRunning {
            what: self.label.clone(),
        })?;
        kill(Pid::from_raw(pid), signal).map_err(|source| FixtureError::Signal {
            what: self.label.clone(),
            signal: name,
            source,
        })
    }

    /// SIGTERM, wait (escalating to SIGKILL after a grace period). A no-op when stopped.
    pub(crate) async fn stop(&mut self) -> Result<(), FixtureError> {
        if !self.is_running() {
            return Ok(());
        }
        self.signal(Signal::SIGTERM, "SIGTERM")?;
        if self.paused {
            // A stopped process only acts on SIGTERM once it continues.
            self.signal(Signal::SIGCONT, "SIGCONT")?;
            self.paused = false;
        }
        let label = self.label.clone();
        if let Some(child) = self.child.as_mut() {
            match tokio::time::timeout(STOP_GRACE, child.wait()).await {
                Ok(res) => {
                    res.map_err(|e| FixtureError::io(format!("waiting for {label}"), e))?;
                }
                Err(_) => {
                    tracing::warn!("{label} ignored SIGTERM for {STOP_GRACE:?}; killing it");
                    let _ = child.start_kill();
                    child
                        .wait()
                        .await
                        .map_err(|e| FixtureError::io(format!("waiting for {label}"), e))?;
                }
            }
        }
        self.child = None;
        self.reserve_ports();
        Ok(())
    }

    /// SIGKILL and wait. A no-op when stopped.
    pub(crate) async fn kill(&mut self) -> Result<(), FixtureError> {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
            child
                .wait()
                .await
                .map_err(|e| FixtureError::io(format!("waiting for {}", self.label), e))?;
            self.reserve_ports();
        }
        self.child = None;
        self.paused = false;
        Ok(())
    }

    /// SIGSTOP: the process keeps its sockets but stops answering.
    pub(crate) async fn pause(&mut self) -> Result<(), FixtureError> {
        if !self.is_running() {
            return Err(FixtureError::NotRunning {
                what: self.label.clone(),
            });
        }
        self.signal(Signal::SIGSTOP, "SIGSTOP")?;
        self.paused = true;
        self.wait_stop_state(true).await;
        Ok(())
    }

    /// Signals are asynchronous: wait (bounded) until every thread of the process is
    /// (or is no longer) in the stopped state, so that `pause()` returning means the
    /// server no longer answers.
    async fn wait_stop_state(&self, stopped: bool) {
        let Some(pid) = self.pid() else { return };
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            match all_threads_stopped(pid) {
                Some(s) if s == stopped => return,
                Some(_) => tokio::time::sleep(Duration::from_millis(1)).await,
                None => {
                    // No /proc: give the signal a moment.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    return;
                }
            }
        }
    }

    /// SIGCONT after [`pause`](Self::pause).
    pub(crate) async fn resume(&mut self) -> Result<(), FixtureError> {
        if !self.is_running() {
            return Err(FixtureError::NotRunning {
                what: self.label.clone(),
            });
        }
        self.signal(Signal::SIGCONT, "SIGCONT")?;
        self.paused = false;
        self.wait_stop_state(false).await;
        Ok(())
    }

    /// Stops the process if it runs, starts it again with the same arguments and waits
    /// until it is ready.
    pub(crate) async fn restart(&mut self, timeout: Duration) -> Result<(), FixtureError> {
        self.stop().await?;
        self.spawn()?;
        self.wait_ready(timeout).await
    }
}

impl ManagedProcess {
    /// Sends SIGKILL without waiting (for `Drop`).
    pub(crate) fn start_kill(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
    }
}

/// Runs a helper command (etcdctl, redis-cli) and returns its stdout.
///
/// `redact` lists strings (passwords) replaced by `***` in error messages.
pub(crate) async fn run_command(
    program: &Path,
    args: &[OsString],
    env: &[(&str, &str)],
    redact: &[&str],
    timeout: Duration,
) -> Result<String, FixtureError> {
    let mut cmdline = std::iter::once(program.as_os_str())
        .chain(args.iter().map(OsString::as_os_str))
        .map(|s| s.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    for r in redact.iter().filter(|r| !r.is_empty()) {
        cmdline = cmdline.replace(r, "***");
    }
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = match tokio::time::timeout(timeout, cmd.output()).await {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => {
            return Err(FixtureError::Command {
                command: cmdline,
                status: format!("could not run: {e}"),
                output: String::new(),
            });
        }
        Err(_) => {
            return Err(FixtureError::Command {
                command: cmdline,
                status: format!("timed out after {timeout:?}"),
                output: String::new(),
            });
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        Ok(stdout)
    } else {
        let mut output = format!("{}{}", stdout, String::from_utf8_lossy(&out.stderr));
        for r in redact.iter().filter(|r| !r.is_empty()) {
            output = output.replace(r, "***");
        }
        Err(FixtureError::Command {
            command: cmdline,
            status: out.status.to_string(),
            output: output.trim().to_string(),
        })
    }
}

/// What keeps a fixture's server alive.
#[allow(dead_code, reason = "the Docker guard is held only for its Drop")]
pub(crate) enum Backing {
    /// Someone else's server (from the environment).
    External,
    /// Our child process.
    Local(Box<tokio::sync::Mutex<ManagedProcess>>),
    /// A testcontainers container guard; dropping it removes the container.
    Docker(Box<dyn std::any::Any + Send + Sync>),
}

impl std::fmt::Debug for Backing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Backing::External => f.write_str("External"),
            Backing::Local(p) => f.debug_tuple("Local").field(p).finish(),
            Backing::Docker(_) => f.write_str("Docker"),
        }
    }
}

impl Backing {
    pub(crate) fn mode(&self) -> super::ServerMode {
        match self {
            Backing::External => super::ServerMode::External,
            Backing::Local(_) => super::ServerMode::Local,
            Backing::Docker(_) => super::ServerMode::Docker,
        }
    }

    /// The managed process, or `NotControllable` naming the refused `action`.
    pub(crate) fn local(
        &self,
        what: &str,
        action: &'static str,
    ) -> Result<&tokio::sync::Mutex<ManagedProcess>, FixtureError> {
        match self {
            Backing::Local(p) => Ok(p),
            other => Err(FixtureError::NotControllable {
                what: what.to_string(),
                mode: other.mode(),
                action,
            }),
        }
    }

    /// Kills a local process without waiting (for `Drop`).
    pub(crate) fn start_kill(&mut self) {
        if let Backing::Local(p) = self {
            p.get_mut().start_kill();
        }
    }
}

/// `Some(true)` when every thread of `pid` is stopped (state `T`), `Some(false)` when
/// any is not, `None` when `/proc` cannot tell.
fn all_threads_stopped(pid: u32) -> Option<bool> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut seen = false;
    for task in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        // "<tid> (<comm>) <state> ...": comm may contain spaces and parentheses.
        let state = stat.rsplit_once(')')?.1.trim_start().chars().next()?;
        seen = true;
        if state != 'T' {
            return Some(false);
        }
    }
    seen.then_some(true)
}
