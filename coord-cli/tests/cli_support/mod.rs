//! Helpers for the `coord` command-line tests: run the binary in the background, read its
//! output line by line with a deadline, signal it, wait for it with a deadline.

#![allow(dead_code)] // each test file uses a different subset

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

/// The `coord` binary built for these tests.
pub(crate) fn coord_bin() -> &'static str {
    env!("CARGO_BIN_EXE_coord")
}

/// `coord` with `args` and the backend URL in `--backend`, as an assert_cmd command.
pub(crate) fn coord(backend: &str, args: &[&str]) -> assert_cmd::Command {
    let mut cmd = assert_cmd::Command::new(coord_bin());
    cmd.env_remove("COORD_BACKEND")
        .env_remove("COORD_NAMESPACE")
        .arg("--backend")
        .arg(backend)
        .args(args)
        .timeout(Duration::from_secs(60));
    cmd
}

/// A process running in the background with its stdout read line by line.
pub(crate) struct Proc {
    pub(crate) child: Child,
    lines: Receiver<String>,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
    what: String,
}

impl Proc {
    /// Starts `program args` with stdout and stderr piped.
    pub(crate) fn spawn(program: &str, args: &[&str], env: &[(&str, &str)]) -> Proc {
        let mut cmd = Command::new(program);
        cmd.args(args)
            .env_remove("COORD_BACKEND")
            .env_remove("COORD_NAMESPACE")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let mut err_pipe = child.stderr.take().expect("piped stderr");
        let sink = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = String::new();
            let _ = err_pipe.read_to_string(&mut buf);
            sink.lock().unwrap().push_str(&buf);
        });
        Proc {
            child,
            lines,
            stderr,
            what: format!("{program} {}", args.join(" ")),
        }
    }

    /// `coord --backend URL args...` in the background.
    pub(crate) fn coord(backend: &str, args: &[&str]) -> Proc {
        let mut all = vec!["--backend", backend];
        all.extend_from_slice(args);
        Proc::spawn(coord_bin(), &all, &[])
    }

    /// The next stdout line, or a panic after `timeout`.
    pub(crate) fn line(&mut self, timeout: Duration) -> String {
        match self.lines.recv_timeout(timeout) {
            Ok(line) => line,
            Err(e) => panic!(
                "no line from `{}` within {timeout:?} ({e:?}); stderr: {}",
                self.what,
                self.stderr()
            ),
        }
    }

    /// The next stdout line if one comes within `timeout`.
    pub(crate) fn try_line(&mut self, timeout: Duration) -> Option<String> {
        self.lines.recv_timeout(timeout).ok()
    }

    /// Sends a signal by name (`TERM`, `INT`, `KILL`).
    pub(crate) fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Whether the process is still running.
    pub(crate) fn running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }

    /// Waits for the exit, or panics after `timeout` (killing the process).
    pub(crate) fn wait(&mut self, timeout: Duration) -> ExitStatus {
        match self.wait_at_most(timeout) {
            Some(status) => status,
            None => {
                let _ = self.child.kill();
                panic!(
                    "`{}` still running after {timeout:?}; stderr: {}",
                    self.what,
                    self.stderr()
                );
            }
        }
    }

    /// Waits for the exit for up to `timeout`; `None` if still running.
    pub(crate) fn wait_at_most(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// What the process wrote to stderr so far (all of it once it has exited).
    pub(crate) fn stderr(&self) -> String {
        std::thread::sleep(Duration::from_millis(50));
        self.stderr.lock().unwrap().clone()
    }

    /// Every stdout line still to come (after the process has exited).
    pub(crate) fn rest(&mut self) -> Vec<String> {
        let mut v = Vec::new();
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            v.push(line);
        }
        v
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A short and a long deadline.
pub(crate) const SHORT: Duration = Duration::from_secs(10);
pub(crate) const LONG: Duration = Duration::from_secs(30);
