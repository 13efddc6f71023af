//! `etcd://` and `etcds://` URLs as [`EtcdOptions`].

use async_trait::async_trait;
use coord_core::Result;
use coord_core::backend_url::{
    self, Credentials, Host, Query, TlsFiles, Url, UrlOptions, format_duration, invalid,
};

use crate::options::Pem;
use crate::{DEFAULT_CONNECT_TIMEOUT, EtcdBackend, EtcdOptions};

/// The etcd client port, for a host given without one.
pub const DEFAULT_PORT: u16 = 2379;

impl EtcdOptions {
    /// Options from a one-host `etcd://` (plain text) or `etcds://` (TLS) URL:
    /// `etcd[s]://[USER:PASSWORD@]HOST[:PORT][?PARAMETERS]`, port [`DEFAULT_PORT`] when
    /// none is given. The query parameters are `user`, `password`, `cacert`, `cert`, `key`,
    /// `tls_domain` (TLS only), `connect_timeout` and `request_timeout`. For several hosts
    /// use [`EtcdOptions::parse_url`].
    ///
    /// ```
    /// use coord_core::backend_url::Url;
    /// use coord_etcd::EtcdOptions;
    ///
    /// let url = Url::parse("etcds://app:s3cret@etcd.internal?cacert=/etc/ca.pem").unwrap();
    /// let options = EtcdOptions::from_url(&url).unwrap();
    /// assert_eq!(options.endpoints(), ["https://etcd.internal:2379"]);
    /// assert!(!format!("{options:?}").contains("s3cret"));
    /// ```
    ///
    /// # Errors
    /// [`coord_core::Error::InvalidArgument`] naming what is wrong: another scheme, no host,
    /// a path, a user without a password (or the reverse), an unknown or repeated query
    /// parameter, a TLS file on `etcd://`, a bad duration. Never repeats the password.
    pub fn from_url(url: &Url) -> Result<EtcdOptions> {
        let scheme = url.scheme();
        let tls = match scheme {
            "etcd" => false,
            "etcds" => true,
            other => {
                return Err(invalid(format!(
                    "not an etcd:// or etcds:// URL (scheme {other:?})"
                )));
            }
        };
        let endpoint = endpoint(url)?;
        if !matches!(url.path(), "" | "/") {
            return Err(invalid(format!(
                "{scheme}:// takes no path (got {:?}); put a key prefix in `?namespace=`",
                url.path()
            )));
        }
        let mut query = Query::of(url)?;
        let credentials = Credentials::take(url, &mut query)?;
        let tls_files = TlsFiles::take(&mut query, scheme, tls, "etcds")?;
        let connect_timeout = query.take_duration("connect_timeout")?;
        let request_timeout = query.take_duration("request_timeout")?;
        query.finish(scheme, Self::QUERY_PARAMETERS)?;

        let mut options = EtcdOptions::new([endpoint]);
        match (credentials.user(), credentials.password()) {
            (Some(user), Some(password)) => options = options.user(user, password),
            (Some(_), None) => return Err(invalid("etcd user given without a password")),
            (None, Some(_)) => return Err(invalid("etcd password given without a user name")),
            (None, None) => {}
        }
        if let Some(ca) = tls_files.ca_file {
            options = options.ca_cert_file(ca);
        }
        if let (Some(cert), Some(key)) = (tls_files.cert_file, tls_files.key_file) {
            options = options.client_identity_files(cert, key);
        }
        if let Some(domain) = tls_files.tls_domain {
            options = options.tls_domain(domain);
        }
        if let Some(t) = connect_timeout {
            options = options.connect_timeout(t);
        }
        if let Some(t) = request_timeout {
            options = options.request_timeout(t);
        }
        Ok(options)
    }

    /// Options from URL text, which may name several members of a cluster:
    /// `etcd://HOST[:PORT][,HOST[:PORT]...]` and the rest as in [`EtcdOptions::from_url`].
    ///
    /// The list is not one URL to the `url` crate (the first port would run on into the
    /// next host), so it is cut out, each `HOST[:PORT]` parsed alone, and the URL parsed
    /// with its first host.
    ///
    /// ```
    /// use coord_core::UrlOptions;
    /// use coord_etcd::EtcdOptions;
    ///
    /// let options = EtcdOptions::parse_url("etcd://10.0.0.1,10.0.0.2:23790").unwrap();
    /// assert_eq!(
    ///     options.endpoints(),
    ///     ["http://10.0.0.1:2379", "http://10.0.0.2:23790"]
    /// );
    /// assert_eq!(options.redacted_url(), "etcd://10.0.0.1:2379,10.0.0.2:23790");
    /// ```
    ///
    /// # Errors
    /// As [`EtcdOptions::from_url`]; a bad host names it (`endpoint "h:99999": bad port`).
    pub fn parse_url(text: &str) -> Result<EtcdOptions> {
        let (url, endpoints) = backend_url::parse_hosts(text, "endpoint", endpoint)?;
        let mut options = EtcdOptions::from_url(&url)?;
        // An empty host list is from_url's to report.
        if !endpoints.is_empty() {
            options.endpoints = endpoints;
        }
        Ok(options)
    }
}

/// `http[s]://HOST:PORT` for the host of an `etcd[s]://` URL.
fn endpoint(url: &Url) -> Result<String> {
    let scheme = url.scheme();
    let host = match url.host() {
        None => {
            return Err(invalid(format!(
                "{scheme}:// needs at least one HOST[:PORT]"
            )));
        }
        Some(Host::Domain("")) => {
            return Err(invalid(format!(
                "{scheme}:// needs at least one HOST[:PORT]"
            )));
        }
        Some(Host::Domain(name))
            if !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')) =>
        {
            return Err(invalid(format!("bad host name {name:?}")));
        }
        Some(_) => url.host_str().unwrap_or_default(),
    };
    let port = url.port().unwrap_or(DEFAULT_PORT);
    let http = if scheme == "etcds" { "https" } else { "http" };
    Ok(format!("{http}://{host}:{port}"))
}

#[async_trait]
impl UrlOptions for EtcdOptions {
    type Backend = EtcdBackend;
    const URL_FORMS: &'static [&'static str] = &[
        "etcd://HOST[:PORT][,HOST[:PORT]…]",
        "etcds://HOST[:PORT][,HOST[:PORT]…] (TLS)",
    ];
    const QUERY_PARAMETERS: &'static [&'static str] = &[
        "user",
        "password",
        "cacert",
        "cert",
        "key",
        "tls_domain",
        "connect_timeout",
        "request_timeout",
    ];

    fn parse_url(url: &str) -> Result<Self> {
        EtcdOptions::parse_url(url)
    }

    /// `etcd[s]://[USER:***@]HOST:PORT[,HOST:PORT...][?...]`, `etcds` when TLS is on. PEM
    /// given as bytes rather than files has no place in a URL and is left out, as are the
    /// namespace and keep-alive settings, which no URL sets.
    fn redacted_url(&self) -> String {
        let tls = self.tls_requested() || self.endpoints.iter().any(|e| e.starts_with("https://"));
        let hosts: Vec<&str> = self
            .endpoints
            .iter()
            .map(|e| {
                e.strip_prefix("https://")
                    .or_else(|| e.strip_prefix("http://"))
                    .unwrap_or(e)
            })
            .collect();
        let credentials = match &self.user {
            Some((user, _)) => format!("{}:***@", backend_url::encode(user)),
            None => String::new(),
        };
        let file = |pem: Option<&Pem>| match pem {
            Some(Pem::File(path)) => Some(path.clone()),
            _ => None,
        };
        let tls_files = TlsFiles {
            ca_file: file(self.ca_cert.as_ref()),
            cert_file: file(self.identity.as_ref().map(|(cert, _)| cert)),
            key_file: file(self.identity.as_ref().map(|(_, key)| key)),
            tls_domain: self.tls_domain.clone(),
        };
        let mut query = tls_files.query();
        if self.connect_timeout != DEFAULT_CONNECT_TIMEOUT {
            query.push(("connect_timeout", format_duration(self.connect_timeout)));
        }
        if let Some(t) = self.request_timeout {
            query.push(("request_timeout", format_duration(t)));
        }
        backend_url::join_url(
            &format!(
                "{}://{credentials}{}",
                if tls { "etcds" } else { "etcd" },
                hosts.join(",")
            ),
            &query,
        )
    }

    async fn connect(&self) -> Result<EtcdBackend> {
        EtcdBackend::connect(self.clone()).await
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use coord_core::Error;

    use super::*;

    fn err(url: &str) -> String {
        match EtcdOptions::parse_url(url) {
            Ok(o) => panic!("{url} parsed: {o:?}"),
            Err(e) => {
                assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");
                e.to_string()
            }
        }
    }

    #[test]
    fn several_hosts_each_with_its_port_or_the_default() {
        let o = EtcdOptions::parse_url("etcd://127.0.0.1:2379,[::1]:23790,host").unwrap();
        assert_eq!(
            o.endpoints(),
            [
                "http://127.0.0.1:2379",
                "http://[::1]:23790",
                "http://host:2379"
            ]
        );
        assert_eq!(
            o.redacted_url(),
            "etcd://127.0.0.1:2379,[::1]:23790,host:2379"
        );
        let o = EtcdOptions::parse_url("etcds://a,b/").unwrap();
        assert_eq!(o.endpoints(), ["https://a:2379", "https://b:2379"]);
    }

    #[test]
    fn credentials_tls_files_and_timeouts_come_from_the_url() {
        let o = EtcdOptions::parse_url(
            "ETCDS://alice:p%40ss@h:1,h2?cacert=/tmp/ca.pem&cert=c.pem&key=k.pem&request_timeout=2s",
        )
        .unwrap();
        assert_eq!(
            o.user.as_ref().map(|(u, p)| (u.as_str(), p.as_str())),
            Some(("alice", "p@ss"))
        );
        assert!(
            matches!(&o.ca_cert, Some(Pem::File(p)) if p.as_path() == Path::new("/tmp/ca.pem"))
        );
        assert!(o.identity.is_some());
        assert_eq!(o.request_timeout, Some(Duration::from_secs(2)));
        assert_eq!(o.connect_timeout, DEFAULT_CONNECT_TIMEOUT);
        let shown = format!("{o:?} {}", o.redacted_url());
        assert!(
            !shown.contains("p@ss") && !shown.contains("p%40ss"),
            "{shown}"
        );
        assert_eq!(
            o.redacted_url(),
            "etcds://alice:***@h:1,h2:2379?cacert=/tmp/ca.pem&cert=c.pem&key=k.pem&request_timeout=2s"
        );
        let o =
            EtcdOptions::parse_url("etcd://h?user=bob&password=pw&connect_timeout=500ms").unwrap();
        assert_eq!(o.user.as_ref().map(|(u, _)| u.as_str()), Some("bob"));
        assert_eq!(o.connect_timeout, Duration::from_millis(500));
        assert_eq!(
            o.redacted_url(),
            "etcd://bob:***@h:2379?connect_timeout=500ms"
        );
    }

    #[test]
    fn bad_urls_name_the_problem() {
        assert!(err("etcd://").contains("at least one"));
        assert!(err("etcd:///").contains("at least one"));
        assert!(err("etcd://h:99999").contains("endpoint \"h:99999\": bad port"));
        let e = err("etcd://a:1,h:99999");
        assert!(e.contains("endpoint \"h:99999\": bad port"), "{e}");
        assert!(err("etcd://a,").contains("endpoint \"\""));
        assert!(err("etcd://h:0").contains("bad port"));
        assert!(err("etcd://h:x").contains("bad port"));
        assert!(err("etcd://h:1/path").contains("no path"));
        assert!(err("etcd://h:1?bogus=1").contains("unknown query parameter `bogus`"));
        assert!(err("etcd://h:1?ttl=1s").contains("unknown query parameter `ttl`"));
        assert!(err("etcd://h:1?user=a&user=b").contains("`user` given twice"));
        assert!(err("etcd://h:1?request_timeout=ten").contains("request_timeout"));
        assert!(err("etcd://h:1#frag").contains("fragment"));
        assert!(err("etcd://h :1").contains("spaces"));
        assert!(err("etcd://[::1:1").contains("IPv6"));
        assert!(err("etcd://h%C3%A9:1").contains("bad host name"));
        assert!(err("etcd://u@h").contains("without a password"));
        assert!(err("etcd://:pw@h").contains("without a user"));
        assert!(err("redis://h").contains("not an etcd"));
        assert!(err("etcd://h?cacert=/x").contains("use etcds://"));
        for name in ["connect_timeout", "request_timeout"] {
            let e = err(&format!("etcd://h?{name}=0s"));
            assert!(e.contains(&format!("`{name}` must be positive")), "{e}");
        }
        let o =
            EtcdOptions::parse_url("etcd://h?connect_timeout=1h30m&request_timeout=90").unwrap();
        assert_eq!(o.connect_timeout, Duration::from_secs(5400));
        assert_eq!(o.request_timeout, Some(Duration::from_secs(90)));
        for url in [
            "etcd://u:hunter2@h:1?password=hunter3",
            "etcd://u:hunter2@h:1?nope=1",
            "etcd://u:hunter2@a,h:99999",
            "etcd://u:hunter%zz@h",
        ] {
            let e = err(url);
            assert!(!e.contains("hunter"), "{e}");
        }
    }
}
