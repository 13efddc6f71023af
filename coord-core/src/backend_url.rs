//! Backend URLs: the seam through which `coord::connect` reaches a backend, and the helpers
//! each backend crate parses its own URLs with.
//!
//! A backend crate implements [`UrlOptions`] for the options its schemes' URLs describe
//! (`memory://`, `etcd://`, ...), parsing them with the [`url`] crate through [`parse`],
//! [`Query`], [`Credentials`] and [`TlsFiles`]; the `coord` facade registers that type with
//! one line. The facade takes the query parameters every scheme shares
//! ([`COMMON_QUERY_PARAMETERS`]) out of the URL before the backend sees it.
//!
//! Errors are [`Error::InvalidArgument`] naming the part of the URL that is wrong. They
//! never repeat the URL itself, nor a password.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};

use crate::{CoordinationBackend, Error, Result};

pub use url::{Host, Url};

/// The query parameters `coord::connect` takes for every scheme (the key namespace and the
/// session TTL), before the backend parses the rest of the URL.
pub const COMMON_QUERY_PARAMETERS: &[&str] = &["namespace", "ttl"];

/// The options a backend's URLs parse into, and how to connect with them: what `coord`'s
/// `connect(url)` needs of a backend.
///
/// ```
/// use coord_core::Result;
/// use coord_core::backend_url::{self, Query, UrlOptions};
/// # type MyBackend = std::sync::Arc<dyn coord_core::CoordinationBackend>;
/// # async fn connect_my_backend(_name: &str) -> Result<MyBackend> { unimplemented!() }
///
/// /// What a `my://NAME` URL names.
/// #[derive(Debug)]
/// struct MyOptions {
///     name: String,
/// }
///
/// #[async_trait::async_trait]
/// impl UrlOptions for MyOptions {
///     type Backend = MyBackend;
///     const URL_FORMS: &'static [&'static str] = &["my://NAME"];
///     const QUERY_PARAMETERS: &'static [&'static str] = &[];
///
///     fn parse_url(url: &str) -> Result<Self> {
///         let url = backend_url::parse(url)?;
///         Query::of(&url)?.finish(url.scheme(), Self::QUERY_PARAMETERS)?;
///         let name = backend_url::decode(url.host_str().unwrap_or_default(), "name")?;
///         Ok(MyOptions { name })
///     }
///
///     fn redacted_url(&self) -> String {
///         format!("my://{}", backend_url::encode(&self.name))
///     }
///
///     async fn connect(&self) -> Result<MyBackend> {
///         connect_my_backend(&self.name).await
///     }
/// }
///
/// let options = MyOptions::parse_url("my://a%20b").unwrap();
/// assert_eq!(options.redacted_url(), "my://a%20b");
/// assert!(MyOptions::parse_url("my://a?colour=blue").is_err());
/// ```
#[async_trait]
pub trait UrlOptions: fmt::Debug + Send + Sync + Sized + 'static {
    /// The backend these options connect to.
    type Backend: CoordinationBackend;

    /// The URL forms, for help texts: `etcd://HOST[:PORT][,HOST[:PORT]…]`.
    const URL_FORMS: &'static [&'static str];

    /// The query parameters [`parse_url`](Self::parse_url) accepts (besides
    /// [`COMMON_QUERY_PARAMETERS`], which it never sees).
    const QUERY_PARAMETERS: &'static [&'static str];

    /// Parses a URL of one of the backend's schemes.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming what is wrong, never repeating a password.
    fn parse_url(url: &str) -> Result<Self>;

    /// The URL these options describe, every secret replaced by `***`.
    fn redacted_url(&self) -> String;

    /// These options with the URL's `namespace` as the backend's own key space, for a
    /// backend that has one: Redis keeps a namespace under its own hash tag, so that an
    /// ACL can be limited to it and a cluster spreads namespaces over its masters.
    /// `None`, the default, lets the caller prefix every key with the namespace instead
    /// ([`crate::Namespaced`]).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when the backend cannot take `namespace` as its own.
    fn with_own_namespace(&self, namespace: &str) -> Option<Result<Self>> {
        let _ = namespace;
        None
    }

    /// Connects.
    ///
    /// # Errors
    /// The backend's own: [`Error::Unavailable`] when no server answers,
    /// [`Error::Unauthenticated`] for wrong credentials or a TLS failure retrying cannot
    /// fix (see [`crate::tls::connect_error`]), [`Error::InvalidArgument`] for TLS files
    /// that are missing or not PEM (see [`crate::tls::read_pem`]), ...
    async fn connect(&self) -> Result<Self::Backend>;
}

/// An [`Error::InvalidArgument`] about a backend URL.
pub fn invalid(message: impl fmt::Display) -> Error {
    Error::invalid_argument(format!("backend URL: {message}"))
}

/// Refuses whitespace and control characters, which the `url` crate would drop or
/// misread without a word (a tab inside a host vanishes).
///
/// # Errors
/// [`Error::InvalidArgument`] when there are any.
pub fn check_text(text: &str) -> Result<()> {
    if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid(
            "must not contain spaces or control characters (percent-encode them)",
        ));
    }
    Ok(())
}

/// Parses URL text with the `url` crate: `SCHEME://...`, no whitespace, no fragment, no
/// port 0.
///
/// # Errors
/// [`Error::InvalidArgument`] naming what is wrong (the text is not repeated: it may hold a
/// password).
pub fn parse(text: &str) -> Result<Url> {
    check_text(text)?;
    let url = Url::parse(text).map_err(|e| invalid(describe(e)))?;
    if !url.has_authority() {
        return Err(invalid(describe(url::ParseError::RelativeUrlWithoutBase)));
    }
    if url.fragment().is_some() {
        return Err(invalid("a fragment (`#...`) is not allowed"));
    }
    if url.port() == Some(0) {
        return Err(invalid(describe(url::ParseError::InvalidPort)));
    }
    Ok(url)
}

/// Parses a URL whose authority may list several hosts
/// (`SCHEME://[USER:PASSWORD@]HOST[:PORT],HOST[:PORT]…[/PATH][?QUERY]`), which the `url` crate
/// cannot parse whole. Each host is parsed on its own, as `SCHEME://HOST`, and handed to
/// `each`; a failure names the host (`{what} "h:99999": bad port ...`). Returns the URL with
/// the first host alone (user info, path and query kept) and what `each` made of every host
/// (none for an empty host list, which the caller's one-host checks then report).
///
/// # Errors
/// [`Error::InvalidArgument`] from [`parse`], or from `each` for a host.
pub fn parse_hosts<T>(
    text: &str,
    what: &str,
    each: impl Fn(&Url) -> Result<T>,
) -> Result<(Url, Vec<T>)> {
    check_text(text)?;
    let Some((scheme, rest)) = text.split_once("://") else {
        return Ok((parse(text)?, Vec::new()));
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let (userinfo, hosts) = match authority.rfind('@') {
        Some(at) => authority.split_at(at + 1),
        None => ("", authority),
    };
    let hosts: Vec<&str> = hosts.split(',').collect();
    let parsed = if hosts == [""] {
        Vec::new()
    } else {
        hosts
            .iter()
            .map(|host| {
                parse(&format!("{scheme}://{host}"))
                    .and_then(|url| each(&url))
                    .map_err(|e| invalid(format!("{what} {host:?}: {}", reason(&e))))
            })
            .collect::<Result<Vec<_>>>()?
    };
    let first = parse(&format!("{scheme}://{userinfo}{}{tail}", hosts[0]))?;
    Ok((first, parsed))
}

/// The message of an error made by [`invalid`], without its `backend URL: ` lead.
fn reason(e: &Error) -> String {
    let text = match e {
        Error::InvalidArgument { message } => message.as_str(),
        _ => return e.to_string(),
    };
    text.strip_prefix("backend URL: ")
        .unwrap_or(text)
        .to_owned()
}

fn describe(e: url::ParseError) -> String {
    match e {
        url::ParseError::InvalidPort => "bad port (a number from 1 to 65535)".into(),
        url::ParseError::InvalidIpv6Address => "bad IPv6 address".into(),
        url::ParseError::InvalidDomainCharacter => "bad character in the host".into(),
        url::ParseError::EmptyHost => "no host (expected SCHEME://HOST[:PORT])".into(),
        url::ParseError::RelativeUrlWithoutBase => "no scheme (expected SCHEME://...)".into(),
        other => other.to_string(),
    }
}

/// Characters kept as they are when a value is written back into a URL: the unreserved
/// ones, and `/`, so that namespaces and file paths stay readable.
const VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'/');

/// Percent-encodes a value for a URL (the inverse of [`decode`]).
pub fn encode(value: &str) -> String {
    utf8_percent_encode(value, VALUE).to_string()
}

/// Percent-decodes one part of a URL; `what` names it in errors (`"password"`).
///
/// # Errors
/// [`Error::InvalidArgument`] for a `%` not followed by two hex digits, which
/// `percent_encoding` would keep as it is, or for bytes that are not UTF-8.
pub fn decode(encoded: &str, what: &str) -> Result<String> {
    let bytes = encoded.as_bytes();
    let malformed = encoded.match_indices('%').any(|(i, _)| {
        !bytes
            .get(i + 1..i + 3)
            .is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit))
    });
    if malformed {
        return Err(invalid(format!(
            "bad percent-encoding in the {what} (`%` must be followed by two hex digits)"
        )));
    }
    percent_decode_str(encoded)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| invalid(format!("the {what} is not UTF-8 once percent-decoded")))
}

/// The query parameters of a backend URL, percent-decoded, each named at most once. A parser
/// [`take`](Self::take)s the ones it knows; [`finish`](Self::finish) refuses the rest.
///
/// A `+` stays a `+` (as RFC 3986 reads it): HTML-form decoding, which `Url::query_pairs`
/// does, would turn the `+` of a password or a file path into a space.
#[derive(Clone, Default)]
pub struct Query {
    params: Vec<(String, String)>,
}

impl Query {
    /// The query of `url`.
    ///
    /// # Errors
    /// As [`Query::parse`].
    pub fn of(url: &Url) -> Result<Query> {
        Query::parse(url.query().unwrap_or_default())
    }

    /// Parses a query string (without the `?`).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for bad percent-encoding, an empty name, or a name given
    /// twice.
    pub fn parse(query: &str) -> Result<Query> {
        let mut params: Vec<(String, String)> = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let name = decode(name, "query parameter name")?;
            if name.is_empty() {
                return Err(invalid("a query parameter has no name"));
            }
            let value = decode(value, &format!("query parameter `{name}`"))?;
            if params.iter().any(|(n, _)| *n == name) {
                return Err(invalid(format!("query parameter `{name}` given twice")));
            }
            params.push((name, value));
        }
        Ok(Query { params })
    }

    /// Takes a parameter's value, which may be empty.
    pub fn take_or_empty(&mut self, name: &str) -> Option<String> {
        let i = self.params.iter().position(|(n, _)| n == name)?;
        Some(self.params.remove(i).1)
    }

    /// Takes a parameter's value.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when it is given with an empty value.
    pub fn take(&mut self, name: &str) -> Result<Option<String>> {
        match self.take_or_empty(name) {
            Some(v) if v.is_empty() => {
                Err(invalid(format!("query parameter `{name}` needs a value")))
            }
            v => Ok(v),
        }
    }

    /// Takes a duration, as [`parse_duration`] reads it (the grammar of the CLI's
    /// duration flags). Zero is refused: no time parameter of a URL means "none" by 0, and
    /// a zero timeout would fail every call.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when empty, not a duration, or zero.
    pub fn take_duration(&mut self, name: &str) -> Result<Option<Duration>> {
        let Some(value) = self.take(name)? else {
            return Ok(None);
        };
        let d = parse_duration(&value)
            .map_err(|e| invalid(format!("query parameter `{name}`: {e}")))?;
        if d.is_zero() {
            return Err(invalid(format!(
                "query parameter `{name}` must be positive, got {value:?}"
            )));
        }
        Ok(Some(d))
    }

    /// Whether every parameter has been taken.
    pub fn is_empty(&self) -> bool {
        self.params.is_empty()
    }

    /// The parameters not taken yet, as a query string (without the `?`).
    pub fn encode(&self) -> String {
        self.params
            .iter()
            .map(|(n, v)| format!("{}={}", encode(n), encode(v)))
            .collect::<Vec<_>>()
            .join("&")
    }

    /// Refuses the parameters nobody took.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the first, and those `scheme` knows.
    pub fn finish(self, scheme: &str, known: &[&str]) -> Result<()> {
        let Some((name, _)) = self.params.first() else {
            return Ok(());
        };
        let known = if known.is_empty() {
            "none of its own".to_owned()
        } else {
            known.join(", ")
        };
        Err(invalid(format!(
            "unknown query parameter `{name}` for {scheme}:// (it takes {known}; every URL \
             also takes {})",
            COMMON_QUERY_PARAMETERS.join(" and ")
        )))
    }
}

/// Names only: values may be secrets.
impl fmt::Debug for Query {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.params.iter().map(|(n, _)| n))
            .finish()
    }
}

/// A user name and password from a URL: `USER:PASSWORD@` before the host, or the query
/// parameters `user` and `password`. `Debug` never shows the password.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    user: Option<String>,
    password: Option<String>,
}

impl Credentials {
    /// The query parameters [`Credentials::take`] takes.
    pub const QUERY_PARAMETERS: &'static [&'static str] = &["user", "password"];

    /// Takes the credentials from `url`'s user info and from `query`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for bad percent-encoding, or a user name or password given
    /// both before `@` and in the query.
    pub fn take(url: &Url, query: &mut Query) -> Result<Credentials> {
        let user = match url.username() {
            "" => None,
            u => Some(decode(u, "user name")?),
        };
        let password = url.password().map(|p| decode(p, "password")).transpose()?;
        let query_user = query.take("user")?;
        let query_password = query.take("password")?;
        if user.is_some() && query_user.is_some() {
            return Err(invalid(
                "the user name is given twice: before `@` and as `?user=`",
            ));
        }
        if password.is_some() && query_password.is_some() {
            return Err(invalid(
                "the password is given twice: before `@` and as `?password=`",
            ));
        }
        Ok(Credentials {
            user: user.or(query_user),
            password: password.or(query_password),
        })
    }

    /// The user name.
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// The password.
    pub fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }

    /// Whether neither was given.
    pub fn is_empty(&self) -> bool {
        self.user.is_none() && self.password.is_none()
    }

    /// `USER:***@`, `:***@`, `USER@` or nothing: the user info of a redacted URL.
    pub fn redacted_userinfo(&self) -> String {
        match (&self.user, &self.password) {
            (None, None) => String::new(),
            (user, password) => format!(
                "{}{}@",
                encode(user.as_deref().unwrap_or_default()),
                if password.is_some() { ":***" } else { "" }
            ),
        }
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .finish()
    }
}

/// The TLS settings of a URL's query, named as `etcdctl` names its flags: `cacert`, `cert`,
/// `key` (PEM files) and `tls_domain`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// The CA certificate to check the server's certificate with.
    pub ca_file: Option<PathBuf>,
    /// The client certificate, for mutual TLS.
    pub cert_file: Option<PathBuf>,
    /// The client certificate's private key.
    pub key_file: Option<PathBuf>,
    /// The name to check the server's certificate against, instead of the host.
    pub tls_domain: Option<String>,
}

impl TlsFiles {
    /// The query parameters [`TlsFiles::take`] takes.
    pub const QUERY_PARAMETERS: &'static [&'static str] = &["cacert", "cert", "key", "tls_domain"];

    /// Takes the TLS settings from `query`. On a plain-text `scheme` (`tls` false) any of
    /// them is an error whose hint names `tls_scheme`, the scheme to use instead.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a TLS setting on a plain-text scheme, or a client
    /// certificate without its key (or the reverse).
    pub fn take(query: &mut Query, scheme: &str, tls: bool, tls_scheme: &str) -> Result<TlsFiles> {
        let files = TlsFiles {
            ca_file: query.take("cacert")?.map(PathBuf::from),
            cert_file: query.take("cert")?.map(PathBuf::from),
            key_file: query.take("key")?.map(PathBuf::from),
            tls_domain: query.take("tls_domain")?,
        };
        if !tls && let Some((name, _)) = files.query().first() {
            return Err(invalid(format!(
                "TLS option `{name}` given for the plain-text scheme {scheme}:// (use \
                 {tls_scheme}:// for TLS)"
            )));
        }
        if files.cert_file.is_some() != files.key_file.is_some() {
            return Err(invalid("a client certificate needs both `cert` and `key`"));
        }
        Ok(files)
    }

    /// The settings as query parameters, in [`TlsFiles::QUERY_PARAMETERS`] order.
    pub fn query(&self) -> Vec<(&'static str, String)> {
        let path = |p: &Option<PathBuf>| p.as_ref().map(|p| p.to_string_lossy().into_owned());
        [
            ("cacert", path(&self.ca_file)),
            ("cert", path(&self.cert_file)),
            ("key", path(&self.key_file)),
            ("tls_domain", self.tls_domain.clone()),
        ]
        .into_iter()
        .filter_map(|(name, value)| Some((name, value?)))
        .collect()
    }
}

/// Writes `scheme://userinfo+rest?query`, the query's values percent-encoded: how a
/// [`UrlOptions::redacted_url`] is usually put together.
pub fn join_url(base: &str, query: &[(&str, String)]) -> String {
    if query.is_empty() {
        return base.to_owned();
    }
    let query: Vec<String> = query
        .iter()
        .map(|(name, value)| format!("{name}={}", encode(value)))
        .collect();
    format!("{base}?{}", query.join("&"))
}

/// Parses a duration as the command line and URL options write it: a bare number of
/// seconds (`10`, as etcdctl's `--ttl`) or humantime's grammar (`10s`, `500ms`,
/// `1h30m`, `2min`).
///
/// # Errors
/// A message naming the text and the accepted forms.
pub fn parse_duration(s: &str) -> std::result::Result<Duration, String> {
    let s = s.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s
            .parse()
            .map(Duration::from_secs)
            .map_err(|_| format!("duration {s:?} out of range"));
    }
    humantime::parse_duration(s).map_err(|e| {
        format!("bad duration {s:?}: {e} (expected e.g. 10 (seconds), 10s, 500ms, 1h30m)")
    })
}

/// Writes a duration so that [`parse_duration`] reads it back: `15s`, `1500ms`, `10us`.
pub fn format_duration(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else if d.as_nanos().is_multiple_of(1_000_000) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{}us", d.as_micros())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(e: Error) -> String {
        assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");
        e.to_string()
    }

    #[test]
    fn durations_read_bare_seconds_and_humantime_and_write_back() {
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("1500ms"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("").is_err());
        for d in [
            Duration::from_secs(15),
            Duration::from_millis(1500),
            Duration::from_micros(7),
        ] {
            assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        }
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
    }

    #[test]
    fn decoding_refuses_malformed_percent_escapes_and_keeps_plus() {
        assert_eq!(decode("p%40ss+w0rd%20", "password").unwrap(), "p@ss+w0rd ");
        assert!(message(decode("a%zz", "store name").unwrap_err()).contains("store name"));
        assert!(message(decode("a%4", "x").unwrap_err()).contains("percent-encoding"));
        assert!(message(decode("%ff", "x").unwrap_err()).contains("UTF-8"));
        assert_eq!(decode(&encode("a/b c&d=é"), "x").unwrap(), "a/b c&d=é");
    }

    #[test]
    fn query_parameters_are_taken_once_and_the_rest_refused() {
        let mut q = Query::parse("a=1&b=&c=x%26y").unwrap();
        assert_eq!(q.take("a").unwrap().as_deref(), Some("1"));
        assert!(message(q.take("b").unwrap_err()).contains("`b` needs a value"));
        assert_eq!(q.encode(), "c=x%26y");
        let e = message(q.finish("etcd", &["a"]).unwrap_err());
        assert!(
            e.contains("unknown query parameter `c`") && e.contains("takes a"),
            "{e}"
        );
        assert!(message(Query::parse("a=1&a=2").unwrap_err()).contains("`a` given twice"));
        assert!(message(Query::parse("=1").unwrap_err()).contains("no name"));
        let mut q = Query::parse("t=2s&u=soon").unwrap();
        assert_eq!(q.take_duration("t").unwrap(), Some(Duration::from_secs(2)));
        assert!(message(q.take_duration("u").unwrap_err()).contains("`u`"));
    }

    #[test]
    fn every_duration_parameter_reads_the_cli_grammar_and_refuses_zero() {
        let mut q = Query::parse("a=1h30m&b=90&c=0s&d=0&e=0ms").unwrap();
        assert_eq!(
            q.take_duration("a").unwrap(),
            Some(Duration::from_secs(5400))
        );
        assert_eq!(q.take_duration("b").unwrap(), Some(Duration::from_secs(90)));
        for name in ["c", "d", "e"] {
            let e = message(q.take_duration(name).unwrap_err());
            assert!(e.contains(&format!("`{name}` must be positive")), "{e}");
        }
    }

    #[test]
    fn query_debug_shows_names_only() {
        let q = Query::parse("password=hunter2").unwrap();
        assert!(!format!("{q:?}").contains("hunter2"));
    }

    #[test]
    fn credentials_come_from_userinfo_or_query_not_both() {
        let url = parse("x://alice:p%40ss@h").unwrap();
        let c = Credentials::take(&url, &mut Query::default()).unwrap();
        assert_eq!((c.user(), c.password()), (Some("alice"), Some("p@ss")));
        assert_eq!(c.redacted_userinfo(), "alice:***@");
        assert!(!format!("{c:?}").contains("p@ss"));
        let mut q = Query::parse("password=x").unwrap();
        let e = message(Credentials::take(&url, &mut q).unwrap_err());
        assert!(
            e.contains("password is given twice") && !e.contains("p@ss"),
            "{e}"
        );
        let url = parse("x://h").unwrap();
        let mut q = Query::parse("user=bob&password=pw").unwrap();
        let c = Credentials::take(&url, &mut q).unwrap();
        assert_eq!((c.user(), c.password()), (Some("bob"), Some("pw")));
        let bad = parse("x://u:p%zz@h").unwrap();
        let e = message(Credentials::take(&bad, &mut Query::default()).unwrap_err());
        assert!(e.contains("password") && !e.contains("p%zz"), "{e}");
    }

    #[test]
    fn tls_settings_need_a_tls_scheme_and_a_whole_client_identity() {
        let mut q = Query::parse("cacert=/ca.pem").unwrap();
        let e = message(TlsFiles::take(&mut q, "etcd", false, "etcds").unwrap_err());
        assert!(e.contains("`cacert`") && e.contains("use etcds://"), "{e}");
        let mut q = Query::parse("cert=c.pem").unwrap();
        let e = message(TlsFiles::take(&mut q, "etcds", true, "etcds").unwrap_err());
        assert!(e.contains("both `cert` and `key`"), "{e}");
        let mut q = Query::parse("cacert=/ca.pem&tls_domain=etcd.internal").unwrap();
        let files = TlsFiles::take(&mut q, "etcds", true, "etcds").unwrap();
        assert_eq!(
            join_url("etcds://h:1", &files.query()),
            "etcds://h:1?cacert=/ca.pem&tls_domain=etcd.internal"
        );
    }

    #[test]
    fn url_errors_name_the_part_without_repeating_the_text() {
        let e = message(parse("etcd://u:hunter2@h:99999").unwrap_err());
        assert!(e.contains("bad port") && !e.contains("hunter2"), "{e}");
        assert!(message(parse("etcd://h:0").unwrap_err()).contains("bad port"));
        assert!(message(parse("etcd://h:1#x").unwrap_err()).contains("fragment"));
        assert!(message(parse("etcd://h :1").unwrap_err()).contains("spaces"));
        assert!(message(parse("etcd://h\t:1").unwrap_err()).contains("control"));
        assert!(message(parse("etcd://[::1:1").unwrap_err()).contains("IPv6"));
        assert!(message(parse("h:1").unwrap_err()).contains("no scheme"));
        let e = message(parse("etcd://u:hunter2@").unwrap_err());
        assert!(e.contains("no host") && !e.contains("hunter2"), "{e}");
    }
}
