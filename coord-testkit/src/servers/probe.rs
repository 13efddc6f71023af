//! Readiness probes that speak the real protocols (no client crates needed).

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// Per-attempt limit for one probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// How to tell that a server is ready.
#[derive(Clone, Debug)]
pub(crate) enum Probe {
    /// `GET /health` over plain HTTP/1.1 must return 200 with `"health":"true"`.
    EtcdHealth { port: u16 },
    /// `PING` must answer `+PONG` (or `-NOAUTH`, which also proves the server is serving).
    RedisPing { port: u16 },
    /// Run a command; ready when it succeeds and its stdout contains one of `expect`.
    Command {
        /// The port the command talks to.
        port: u16,
        program: PathBuf,
        args: Vec<OsString>,
        expect: Vec<&'static str>,
    },
}

impl Probe {
    /// One probe attempt: `Ok(())` when ready, otherwise why not.
    pub(crate) async fn check(&self) -> Result<(), String> {
        match self {
            Probe::EtcdHealth { port } => etcd_health(&format!("127.0.0.1:{port}")).await,
            Probe::RedisPing { port } => redis_ping(&format!("127.0.0.1:{port}")).await,
            Probe::Command {
                program,
                args,
                expect,
                ..
            } => command(program, args, expect).await,
        }
    }

    /// The loopback port the probe talks to.
    pub(crate) fn port(&self) -> u16 {
        match self {
            Probe::EtcdHealth { port }
            | Probe::RedisPing { port }
            | Probe::Command { port, .. } => *port,
        }
    }
}

/// Whether the socket listening on `port` (IPv4 or IPv6) belongs to process `pid`,
/// read from `/proc`. `None` when that cannot be told (no `/proc`, no listener found).
///
/// A readiness probe can be answered by somebody else's server when our server lost
/// the race for its port (another test picked the same free port, or took the port of a
/// stopped server); this check catches that.
pub(crate) fn listener_owned_by(pid: u32, port: u16) -> Option<bool> {
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(state), Some(inode)) = (f.get(1), f.get(3), f.get(9)) else {
                continue;
            };
            let listening_on_port = *state == "0A"
                && local
                    .rsplit_once(':')
                    .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
                    == Some(port);
            if listening_on_port && let Ok(inode) = inode.parse::<u64>() {
                inodes.push(format!("socket:[{inode}]"));
            }
        }
    }
    if inodes.is_empty() {
        return None;
    }
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
    let owned = fds.flatten().any(|fd| {
        std::fs::read_link(fd.path())
            .ok()
            .and_then(|l| l.to_str().map(|l| inodes.iter().any(|i| i == l)))
            .unwrap_or(false)
    });
    Some(owned)
}

/// Plain HTTP `GET /health` against etcd at `addr` (`host:port`).
pub(crate) async fn etcd_health(addr: &str) -> Result<(), String> {
    let fut = async {
        let mut s = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let req = format!(
            "GET /health HTTP/1.1\r\nHost: {addr}\r\nAccept: application/json\r\nConnection: close\r\n\r\n"
        );
        s.write_all(req.as_bytes())
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut resp = Vec::new();
        s.read_to_end(&mut resp)
            .await
            .map_err(|e| format!("read: {e}"))?;
        let resp = String::from_utf8_lossy(&resp);
        let status_ok = resp
            .lines()
            .next()
            .is_some_and(|l| l.split_whitespace().nth(1) == Some("200"));
        let body = resp.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        if status_ok && body.replace(' ', "").contains("\"health\":\"true\"") {
            Ok(())
        } else {
            Err(format!("unhealthy: {}", resp.trim().replace("\r\n", " | ")))
        }
    };
    timeout(PROBE_TIMEOUT, fut)
        .await
        .unwrap_or_else(|_| Err("health probe timed out".into()))
}

/// Plain HTTP/1.0 `GET path` against `addr` (`host:port`): the body of a 200 answer.
/// HTTP/1.0, so that the body comes unchunked, up to the close.
pub(crate) async fn http_get(addr: &str, path: &str) -> Result<String, String> {
    let fut = async {
        let mut s = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let req = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
        s.write_all(req.as_bytes())
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut resp = Vec::new();
        s.read_to_end(&mut resp)
            .await
            .map_err(|e| format!("read: {e}"))?;
        let resp = String::from_utf8_lossy(&resp);
        let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((&resp, ""));
        if head
            .lines()
            .next()
            .is_some_and(|l| l.split_whitespace().nth(1) == Some("200"))
        {
            Ok(body.to_owned())
        } else {
            Err(format!("GET {path}: {}", head.replace("\r\n", " | ")))
        }
    };
    timeout(PROBE_TIMEOUT, fut)
        .await
        .unwrap_or_else(|_| Err(format!("GET {path} timed out")))
}

/// Raw RESP `PING` against redis at `addr` (`host:port`).
pub(crate) async fn redis_ping(addr: &str) -> Result<(), String> {
    let fut = async {
        let mut s = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        s.write_all(b"PING\r\n")
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut buf = [0u8; 256];
        let mut got = Vec::new();
        while !got.ends_with(b"\r\n") {
            let n = s.read(&mut buf).await.map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        let line = String::from_utf8_lossy(&got);
        if line.starts_with("+PONG") || line.starts_with("-NOAUTH") {
            Ok(())
        } else {
            Err(format!("unexpected reply: {:?}", line.trim()))
        }
    };
    timeout(PROBE_TIMEOUT, fut)
        .await
        .unwrap_or_else(|_| Err("PING timed out".into()))
}

async fn command(
    program: &PathBuf,
    args: &[OsString],
    expect: &[&'static str],
) -> Result<(), String> {
    let out = tokio::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = timeout(PROBE_TIMEOUT, out)
        .await
        .map_err(|_| format!("{} timed out", program.display()))?
        .map_err(|e| format!("{}: {e}", program.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if out.status.success() && expect.iter().any(|e| stdout.contains(e)) {
        Ok(())
    } else {
        Err(format!(
            "{} ({}): {} {}",
            program.display(),
            out.status,
            stdout.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}
