//! Connection options for [`crate::EtcdBackend`].

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use coord_core::Result;
use coord_core::tls::{self, PemKind};

/// Default time allowed to open a TCP (and TLS) connection to an endpoint.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default HTTP/2 keep-alive ping interval.
pub const DEFAULT_KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// Default time to wait for a keep-alive ping's answer before the connection is declared dead.
pub const DEFAULT_KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(5);

/// PEM bytes, given directly or as a file read at connect time.
#[derive(Clone)]
pub(crate) enum Pem {
    Bytes(Vec<u8>),
    File(PathBuf),
}

impl Pem {
    /// The PEM, checked to hold `kind`. `parameter` is the URL parameter that names such
    /// a file (`cacert`), `what` the thing itself (`CA certificate`), for errors.
    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    pub(crate) fn load(&self, parameter: &str, what: &str, kind: PemKind) -> Result<Vec<u8>> {
        match self {
            Pem::Bytes(b) => {
                tls::check_pem(&format!("the {what} given as bytes"), b, kind)?;
                Ok(b.clone())
            }
            Pem::File(path) => tls::read_pem(parameter, path, kind),
        }
    }
}

impl fmt::Debug for Pem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pem::Bytes(b) => write!(f, "<{} bytes of PEM>", b.len()),
            Pem::File(p) => write!(f, "{}", p.display()),
        }
    }
}

/// How to reach and authenticate to an etcd cluster. Build with [`EtcdOptions::new`] and
/// pass to [`crate::EtcdBackend::connect`].
///
/// ```
/// use std::time::Duration;
/// use coord_etcd::EtcdOptions;
///
/// let options = EtcdOptions::new(["127.0.0.1:2379"])
///     .namespace("myapp/")
///     .user("alice", "secret")
///     .request_timeout(Duration::from_secs(5));
/// // The password never shows in Debug output.
/// assert!(!format!("{options:?}").contains("secret"));
/// ```
#[derive(Clone)]
pub struct EtcdOptions {
    pub(crate) endpoints: Vec<String>,
    pub(crate) namespace: Vec<u8>,
    pub(crate) user: Option<(String, String)>,
    pub(crate) ca_cert: Option<Pem>,
    pub(crate) identity: Option<(Pem, Pem)>,
    pub(crate) tls_domain: Option<String>,
    pub(crate) connect_timeout: Duration,
    pub(crate) request_timeout: Option<Duration>,
    pub(crate) keep_alive: Option<(Duration, Duration)>,
}

impl EtcdOptions {
    /// Options for the given endpoints: `"host:port"` or `http://` / `https://` URLs.
    ///
    /// Defaults: no namespace, no credentials, no TLS (unless an endpoint is `https://`),
    /// connect timeout [`DEFAULT_CONNECT_TIMEOUT`], no request timeout, HTTP/2 keep-alive
    /// pings every [`DEFAULT_KEEP_ALIVE_INTERVAL`] with [`DEFAULT_KEEP_ALIVE_TIMEOUT`].
    pub fn new<I, S>(endpoints: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        EtcdOptions {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            namespace: Vec::new(),
            user: None,
            ca_cert: None,
            identity: None,
            tls_domain: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            request_timeout: None,
            keep_alive: Some((DEFAULT_KEEP_ALIVE_INTERVAL, DEFAULT_KEEP_ALIVE_TIMEOUT)),
        }
    }

    /// Prefixes every key of every operation, compare, range and watch with `prefix`, and
    /// strips it from the keys returned. A prefix range stays inside the namespace: the
    /// empty prefix means every key under `prefix`. Usually ends with `/`: the prefix is
    /// joined to keys as raw bytes, as etcd's `namespace` package does, so namespace `app`
    /// and lock `x` use the keys of namespace `ap` and lock `px` (`appx/...`).
    pub fn namespace(mut self, prefix: impl Into<Vec<u8>>) -> Self {
        self.namespace = prefix.into();
        self
    }

    /// Authenticates as `name` with `password` (etcd's user/password auth). The token is
    /// refreshed automatically when it expires. The password is never printed.
    pub fn user(mut self, name: impl Into<String>, password: impl Into<String>) -> Self {
        self.user = Some((name.into(), password.into()));
        self
    }

    /// Trusts this CA certificate (PEM) for the servers' TLS certificates. Turns TLS on:
    /// endpoints given as `host:port` are reached over `https`.
    pub fn ca_cert(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.ca_cert = Some(Pem::Bytes(pem.into()));
        self
    }

    /// Like [`ca_cert`](Self::ca_cert), reading the PEM file at connect time.
    pub fn ca_cert_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca_cert = Some(Pem::File(path.into()));
        self
    }

    /// Presents this client certificate and private key (both PEM) for mutual TLS.
    /// The key is never printed.
    pub fn client_identity(
        mut self,
        cert_pem: impl Into<Vec<u8>>,
        key_pem: impl Into<Vec<u8>>,
    ) -> Self {
        self.identity = Some((Pem::Bytes(cert_pem.into()), Pem::Bytes(key_pem.into())));
        self
    }

    /// Like [`client_identity`](Self::client_identity), reading both PEM files at connect
    /// time.
    pub fn client_identity_files(
        mut self,
        cert_path: impl Into<PathBuf>,
        key_path: impl Into<PathBuf>,
    ) -> Self {
        self.identity = Some((Pem::File(cert_path.into()), Pem::File(key_path.into())));
        self
    }

    /// Checks the servers' certificates against this name instead of the endpoint host.
    pub fn tls_domain(mut self, name: impl Into<String>) -> Self {
        self.tls_domain = Some(name.into());
        self
    }

    /// Time allowed to open a connection to an endpoint (and, at connect, for the first
    /// answer from the cluster). Must be more than zero.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Time allowed for each unary call (range, txn, lease grant/revoke/time-to-live,
    /// compact) and for each keep-alive round trip and watch creation. Never applied to the
    /// lifetime of a watch or of a keep-alive stream. A call that exceeds it fails with
    /// [`Error::Timeout`](coord_core::Error::Timeout). Default: none. Must be more than zero:
    /// [`EtcdBackend::connect`](crate::EtcdBackend::connect) refuses zero.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = Some(timeout);
        self
    }

    /// HTTP/2 keep-alive: while a watch or keep-alive stream is open, ping every `interval`
    /// and drop the connection when a ping is not answered within `timeout`, so dead
    /// connections (and the watches on them) are noticed and resumed. An idle connection is
    /// not pinged: etcd closes connections that ping without open streams. etcd refuses
    /// pings more often than every 5 s by default (`--grpc-keepalive-min-time`).
    pub fn keep_alive(mut self, interval: Duration, timeout: Duration) -> Self {
        self.keep_alive = Some((interval, timeout));
        self
    }

    /// Turns HTTP/2 keep-alive pings off.
    pub fn no_keep_alive(mut self) -> Self {
        self.keep_alive = None;
        self
    }

    /// The endpoints.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// The namespace prefix (empty for none).
    pub fn namespace_prefix(&self) -> &[u8] {
        &self.namespace
    }

    pub(crate) fn tls_requested(&self) -> bool {
        self.ca_cert.is_some() || self.identity.is_some() || self.tls_domain.is_some()
    }

    /// Builds etcd-client's options. Never sets etcd-client's own request timeout, which
    /// would also cut blocking calls; coord applies `request_timeout` per call itself.
    ///
    /// Every call requires a leader: a member cut off from the quorum then refuses calls at
    /// once, and cancels watches and keep-alive streams it can no longer feed (after three
    /// election timeouts), which coord resumes on another member. Without it such a watch
    /// stays open and silent for as long as the partition lasts.
    pub(crate) fn to_connect_options(&self) -> Result<etcd_client::ConnectOptions> {
        let mut o = etcd_client::ConnectOptions::new()
            .with_connect_timeout(self.connect_timeout)
            .with_require_leader(true);
        if let Some((interval, timeout)) = self.keep_alive {
            o = o
                .with_keep_alive(interval, timeout)
                .with_keep_alive_while_idle(false);
        }
        if let Some((name, password)) = &self.user {
            o = o
                .with_user(name.clone(), password.clone())
                .with_auto_token_refresh(true);
        }
        if self.tls_requested() {
            o = self.apply_tls(o)?;
        }
        Ok(o)
    }

    #[cfg(feature = "tls")]
    fn apply_tls(&self, o: etcd_client::ConnectOptions) -> Result<etcd_client::ConnectOptions> {
        let mut tls = etcd_client::TlsOptions::new();
        if let Some(ca) = &self.ca_cert {
            tls = tls.ca_certificate(etcd_client::Certificate::from_pem(ca.load(
                "cacert",
                "CA certificate",
                PemKind::Certificates,
            )?));
        }
        if let Some((cert, key)) = &self.identity {
            tls = tls.identity(etcd_client::Identity::from_pem(
                cert.load("cert", "client certificate", PemKind::Certificates)?,
                key.load("key", "client key", PemKind::PrivateKey)?,
            ));
        }
        if let Some(domain) = &self.tls_domain {
            tls = tls.domain_name(domain.clone());
        }
        Ok(o.with_tls(tls))
    }

    #[cfg(not(feature = "tls"))]
    fn apply_tls(&self, _o: etcd_client::ConnectOptions) -> Result<etcd_client::ConnectOptions> {
        Err(coord_core::Error::invalid_argument(
            "TLS options need coord-etcd's cargo feature \"tls\"",
        ))
    }
}

impl fmt::Debug for EtcdOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdOptions")
            .field("endpoints", &self.endpoints)
            .field("namespace", &String::from_utf8_lossy(&self.namespace))
            .field("user", &self.user.as_ref().map(|(name, _)| name))
            .field("password", &self.user.as_ref().map(|_| "<redacted>"))
            .field("ca_cert", &self.ca_cert)
            .field(
                "client_identity",
                &self
                    .identity
                    .as_ref()
                    .map(|(cert, _)| (cert, "<redacted key>")),
            )
            .field("tls_domain", &self.tls_domain)
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("keep_alive", &self.keep_alive)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use coord_core::Error;

    use super::*;

    #[test]
    fn debug_hides_password_and_key() {
        let o = EtcdOptions::new(["h:1"])
            .user("bob", "hunter2")
            .client_identity("CERTDATA", "KEYDATA-very-secret");
        let s = format!("{o:?}");
        assert!(s.contains("bob"));
        assert!(!s.contains("hunter2"), "{s}");
        assert!(!s.contains("KEYDATA"), "{s}");
        assert!(!s.contains("CERTDATA"), "{s}");
    }

    #[test]
    fn pem_that_is_missing_or_not_pem_is_invalid_argument_naming_the_parameter() {
        let e = Pem::File("/nonexistent/ca.pem".into())
            .load("cacert", "CA certificate", PemKind::Certificates)
            .unwrap_err();
        assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");
        assert!(
            e.to_string().contains("`cacert` file /nonexistent/ca.pem"),
            "{e}"
        );
        let e = Pem::Bytes(b"KEYDATA-very-secret".to_vec())
            .load("key", "client key", PemKind::PrivateKey)
            .unwrap_err();
        assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");
        let e = e.to_string();
        assert!(
            e.contains("client key given as bytes") && !e.contains("KEYDATA"),
            "{e}"
        );
    }
}
