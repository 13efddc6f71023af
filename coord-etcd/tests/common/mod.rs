//! A local etcd server for the integration tests (to be replaced by
//! `coord_testkit::EtcdServer`).
#![allow(dead_code, unreachable_pub)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use coord_etcd::{EtcdBackend, EtcdOptions};

/// One etcd process on free loopback ports, with its data in a temp dir. Killed on drop.
pub struct EtcdServer {
    child: Option<Child>,
    dir: tempfile::TempDir,
    client_port: u16,
    peer_port: u16,
    tls: Option<TlsFiles>,
}

/// PEM files for a TLS server with client-certificate auth.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

/// Makes a CA, a server certificate for 127.0.0.1 and a client certificate with the
/// `openssl` command, or returns `None` when it is missing.
pub fn make_certs(dir: &Path) -> Option<TlsFiles> {
    let run = |args: &[&str]| -> bool {
        Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=coord-test-ca",
    ]);
    if !run(&ca) {
        return None;
    }
    for (name, usage) in [("server", "serverAuth"), ("client", "clientAuth")] {
        std::fs::write(
            dir.join(format!("{name}.ext")),
            format!("subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage={usage}\n"),
        )
        .ok()?;
        let key = format!("{name}.key");
        let csr = format!("{name}.csr");
        let pem = format!("{name}.pem");
        let ext = format!("{name}.ext");
        let subj = format!("/CN={name}");
        let mut req = vec!["req"];
        req.extend(ec);
        req.extend(["-keyout", &key, "-out", &csr, "-subj", &subj]);
        let sign = [
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &pem,
            "-days",
            "2",
            "-extfile",
            &ext,
        ];
        if !run(&req) || !run(&sign) {
            return None;
        }
    }
    Some(TlsFiles {
        ca: dir.join("ca.pem"),
        server_cert: dir.join("server.pem"),
        server_key: dir.join("server.key"),
        client_cert: dir.join("client.pem"),
        client_key: dir.join("client.key"),
    })
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind a free port")
        .local_addr()
        .unwrap()
        .port()
}

fn etcd_binary() -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("etcd"))
            .find(|p| p.is_file())
    })
}

/// Starts a server, or returns `None` (after printing a skip line) when the `etcd` binary
/// is missing and `COORD_TEST_REQUIRE_BACKENDS` is not `1`.
pub async fn etcd(test: &str) -> Option<EtcdServer> {
    etcd_with(test, |_| None).await
}

/// Like [`etcd`], serving TLS with the files `tls` makes in the server's temp dir (no TLS
/// when it returns `None`).
pub async fn etcd_with(
    test: &str,
    tls: impl FnOnce(&Path) -> Option<TlsFiles>,
) -> Option<EtcdServer> {
    if etcd_binary().is_none() {
        if std::env::var("COORD_TEST_REQUIRE_BACKENDS").as_deref() == Ok("1") {
            panic!("{test}: the etcd binary is not on PATH and COORD_TEST_REQUIRE_BACKENDS=1");
        }
        eprintln!("SKIP {test}: the etcd binary is not on PATH");
        return None;
    }
    let mut server = EtcdServer {
        child: None,
        dir: tempfile::tempdir().expect("temp dir"),
        client_port: free_port(),
        peer_port: free_port(),
        tls: None,
    };
    server.tls = tls(server.dir.path());
    server.start().await;
    Some(server)
}

impl EtcdServer {
    pub fn endpoint(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }

    pub fn tls(&self) -> Option<&TlsFiles> {
        self.tls.as_ref()
    }

    /// Options that reach this server (with the client certificate when it serves TLS).
    pub fn options(&self) -> EtcdOptions {
        let o = EtcdOptions::new([self.endpoint()]);
        match &self.tls {
            Some(t) => o
                .ca_cert_file(&t.ca)
                .client_identity_files(&t.client_cert, &t.client_key),
            None => o,
        }
    }

    pub async fn backend(&self) -> EtcdBackend {
        EtcdBackend::connect(self.options()).await.expect("connect")
    }

    pub async fn backend_ns(&self, ns: &str) -> EtcdBackend {
        EtcdBackend::connect(self.options().namespace(ns))
            .await
            .expect("connect")
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("etcd.log")
    }

    /// Starts (or restarts, on the same data dir and ports) the server and waits until it
    /// answers.
    pub async fn start(&mut self) {
        assert!(self.child.is_none(), "already running");
        let client = self.endpoint();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("log file");
        let mut cmd = Command::new("etcd");
        if let Some(t) = &self.tls {
            cmd.arg("--cert-file")
                .arg(&t.server_cert)
                .arg("--key-file")
                .arg(&t.server_key)
                .arg("--trusted-ca-file")
                .arg(&t.ca)
                .arg("--client-cert-auth");
        }
        let child = cmd
            .args(["--name", "n0", "--data-dir"])
            .arg(self.data_dir())
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("n0={peer}")])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn etcd");
        self.child = Some(child);
        self.wait_ready().await;
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let probe =
                EtcdBackend::connect(self.options().connect_timeout(Duration::from_millis(500)))
                    .await;
            match probe {
                Ok(_) => return,
                // The server answered (e.g. auth is on and the probe has no credentials).
                Err(e) if !e.is_retryable() => return,
                Err(_) => {}
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "etcd exited with {status}; log:\n{}",
                    std::fs::read_to_string(self.log_path()).unwrap_or_default()
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "etcd did not become ready; log:\n{}",
                    std::fs::read_to_string(self.log_path()).unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGKILLs the server (its data dir stays).
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Skips the test (returns) when no etcd can be started.
#[macro_export]
macro_rules! etcd_or_skip {
    ($name:expr) => {
        match common::etcd($name).await {
            Some(server) => server,
            None => return,
        }
    };
}
