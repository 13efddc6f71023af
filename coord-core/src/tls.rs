//! TLS settings checked before any network traffic, and TLS failures told apart from
//! outages, for the backends that speak TLS.
//!
//! A TLS failure at connect is a configuration problem: a server certificate the client
//! cannot verify (unknown CA, another name, expired), a client certificate the server
//! refuses, or a TLS client talking to a plain-text port. Sending the request again does
//! not help, so [`connect_error`] turns such an [`Error::Unavailable`] into
//! [`Error::Unauthenticated`] naming what failed and keeping the original error as its
//! source. A server that closes or resets the connection during the handshake (what a
//! plain-text server does with a TLS client, and a TLS server with a plain-text one) cannot
//! be told apart from one that went down at that moment: that stays `Unavailable`, with a
//! hint naming the scheme to try.

use std::error::Error as StdError;
use std::io;
use std::path::Path;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::{Error, Result};

/// What a PEM file given for TLS must hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PemKind {
    /// One or more certificates (`-----BEGIN CERTIFICATE-----`): `cacert`, `cert`.
    Certificates,
    /// A private key (PKCS#8, PKCS#1 or SEC1): `key`.
    PrivateKey,
}

impl PemKind {
    fn expected(self) -> &'static str {
        match self {
            PemKind::Certificates => "a PEM certificate (-----BEGIN CERTIFICATE-----)",
            PemKind::PrivateKey => "a PEM private key (-----BEGIN PRIVATE KEY-----)",
        }
    }
}

/// Reads the PEM file a TLS parameter (`cacert`, `cert`, `key`) names and checks it holds
/// `kind`, so that a wrong file is refused before any connection is tried.
///
/// # Errors
/// [`Error::InvalidArgument`] naming the parameter and the path when the file is missing,
/// unreadable, or not `kind` in PEM. The file's content is never repeated (a key is a
/// secret).
pub fn read_pem(parameter: &str, path: &Path, kind: PemKind) -> Result<Vec<u8>> {
    let bytes = std::fs::read(path).map_err(|e| {
        Error::invalid_argument(format!(
            "TLS: cannot read the `{parameter}` file {}: {e}",
            path.display()
        ))
    })?;
    check_pem(
        &format!("the `{parameter}` file {}", path.display()),
        &bytes,
        kind,
    )?;
    Ok(bytes)
}

/// Checks PEM bytes hold `kind`; `what` names them in the error (`"the CA certificate"`).
///
/// # Errors
/// [`Error::InvalidArgument`] when they do not.
pub fn check_pem(what: &str, bytes: &[u8], kind: PemKind) -> Result<()> {
    let ok = match kind {
        PemKind::Certificates => {
            let mut certificates = CertificateDer::pem_slice_iter(bytes);
            certificates.next().is_some_and(|c| c.is_ok()) && certificates.all(|c| c.is_ok())
        }
        PemKind::PrivateKey => PrivateKeyDer::from_pem_slice(bytes).is_ok(),
    };
    if ok {
        Ok(())
    } else {
        Err(Error::invalid_argument(format!(
            "TLS: {what} is not {}",
            kind.expected()
        )))
    }
}

/// The URL schemes of a backend and which one a connection used, for the hints of
/// [`connect_error`].
#[derive(Debug, Clone, Copy)]
pub struct Schemes<'a> {
    /// Whether the connection used TLS.
    pub tls: bool,
    /// The plain-text scheme (`etcd`).
    pub plain: &'a str,
    /// The TLS scheme (`etcds`).
    pub secure: &'a str,
}

/// Looks at an error from connecting for a TLS failure: see the [module docs](self).
/// Errors other than [`Error::Unavailable`] are returned as they are.
pub fn connect_error(err: Error, schemes: Schemes<'_>) -> Error {
    let Error::Unavailable { message, source } = err else {
        return err;
    };
    let cause = source.as_deref().map(|s| s as &(dyn StdError + 'static));
    let permanent = if schemes.tls {
        handshake_failure(cause, schemes)
    } else {
        None
    };
    if let Some(what) = permanent {
        let message = format!("TLS: {what} ({message})");
        // The original's text is in the message; its source chain is what is worth keeping.
        return match source {
            Some(source) => Error::unauthenticated_with_source(message, source),
            None => Error::unauthenticated(message),
        };
    }
    // A TLS client waits for the ServerHello, which a plain-text server never sends (Redis
    // waits for the end of a command line); a plain-text client is closed on at once.
    let closed = io_kind(
        cause,
        if schemes.tls {
            &[
                io::ErrorKind::ConnectionReset,
                io::ErrorKind::BrokenPipe,
                io::ErrorKind::UnexpectedEof,
                io::ErrorKind::TimedOut,
            ]
        } else {
            &[
                io::ErrorKind::ConnectionReset,
                io::ErrorKind::BrokenPipe,
                io::ErrorKind::UnexpectedEof,
            ]
        },
    );
    let hint = closed.map(|_| {
        if schemes.tls {
            format!(
                "the server closed the connection or did not answer during the TLS handshake: \
                 if it serves plain text, use {}://",
                schemes.plain
            )
        } else {
            format!(
                "the server closed the connection at once: if it serves TLS, use {}://",
                schemes.secure
            )
        }
    });
    let message = match hint {
        Some(hint) => format!("{message} ({hint})"),
        None => message,
    };
    Error::Unavailable { message, source }
}

/// What failed in a TLS handshake that another attempt would not fix, from an error's
/// source chain.
fn handshake_failure(
    cause: Option<&(dyn StdError + 'static)>,
    schemes: Schemes<'_>,
) -> Option<String> {
    #[cfg(feature = "tls")]
    if let Some(what) = chain(cause)
        .find_map(found::<rustls::Error>)
        .and_then(|e| describe(e, schemes))
    {
        return Some(what);
    }
    #[cfg(not(feature = "tls"))]
    let _ = schemes;
    // An alert can reach the caller as text only: h2 keeps the message of the I/O error
    // that rustls' error was in.
    chain(cause)
        .filter_map(found::<io::Error>)
        .filter(|e| e.kind() == io::ErrorKind::InvalidData)
        .find_map(|e| {
            let text = e.to_string();
            let alert = text.strip_prefix("received fatal alert: ")?;
            Some(describe_alert(alert))
        })
}

/// What a fatal alert from the server means, by its name as rustls writes it.
fn describe_alert(alert: &str) -> String {
    match alert {
        "CertificateRequired" => {
            "the server requires a client certificate (give `cert` and `key`)".to_owned()
        }
        "BadCertificate"
        | "UnsupportedCertificate"
        | "CertificateRevoked"
        | "CertificateExpired"
        | "CertificateUnknown"
        | "UnknownCA"
        | "DecryptError"
        | "AccessDenied" => {
            format!("the server refused the client certificate (`cert` and `key`): alert {alert}")
        }
        other => format!("the server ended the handshake with alert {other}"),
    }
}

#[cfg(feature = "tls")]
fn describe(e: &rustls::Error, schemes: Schemes<'_>) -> Option<String> {
    use rustls::CertificateError as C;

    Some(match e {
        rustls::Error::InvalidCertificate(c) => match c {
            C::UnknownIssuer | C::BadSignature => {
                "the server's certificate is not signed by a CA the client trusts (check \
                 `cacert`)"
                    .to_owned()
            }
            C::NotValidForName | C::NotValidForNameContext { .. } => {
                "the server's certificate is not valid for the name it was checked against \
                 (the URL's host, or `tls_domain`)"
                    .to_owned()
            }
            C::Expired | C::ExpiredContext { .. } => {
                "the server's certificate has expired".to_owned()
            }
            C::NotValidYet | C::NotValidYetContext { .. } => {
                "the server's certificate is not valid yet (check the clocks)".to_owned()
            }
            C::Revoked => "the server's certificate is revoked".to_owned(),
            _ => "the server's certificate was refused".to_owned(),
        },
        rustls::Error::NoCertificatesPresented => "the server presented no certificate".to_owned(),
        rustls::Error::AlertReceived(alert) => describe_alert(&format!("{alert:?}")),
        rustls::Error::InvalidMessage(_)
        | rustls::Error::InappropriateMessage { .. }
        | rustls::Error::InappropriateHandshakeMessage { .. } => format!(
            "the server does not answer in TLS: it may serve plain text (then use {}://)",
            schemes.plain
        ),
        _ => return None,
    })
}

/// `e` and its sources.
fn chain<'a>(
    first: Option<&'a (dyn StdError + 'static)>,
) -> impl Iterator<Item = &'a (dyn StdError + 'static)> {
    std::iter::successors(first, |e: &&'a (dyn StdError + 'static)| (*e).source())
}

/// `e` as a `T`, or the error it wraps as a `T`. An `io::Error`'s `source` skips the error
/// it wraps, and so does an `Arc`'s (the redis crate keeps its cause in one), so a chain
/// walk alone never sees those.
fn found<'a, T: StdError + 'static>(e: &'a (dyn StdError + 'static)) -> Option<&'a T> {
    if let Some(t) = e.downcast_ref::<T>() {
        return Some(t);
    }
    if let Some(io) = e.downcast_ref::<io::Error>() {
        return found(io.get_ref()? as &(dyn StdError + 'static));
    }
    if let Some(shared) = e.downcast_ref::<std::sync::Arc<dyn StdError + Send + Sync>>() {
        return found(&**shared as &(dyn StdError + 'static));
    }
    None
}

/// The first I/O error kind of `kinds` in the chain.
fn io_kind(
    cause: Option<&(dyn StdError + 'static)>,
    kinds: &[io::ErrorKind],
) -> Option<io::ErrorKind> {
    chain(cause)
        .filter_map(found::<io::Error>)
        .map(io::Error::kind)
        .find(|k| kinds.contains(k))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ETCD: Schemes<'static> = Schemes {
        tls: true,
        plain: "etcd",
        secure: "etcds",
    };

    #[test]
    fn pem_files_are_checked_for_what_they_must_hold() {
        let e = read_pem("cacert", Path::new("/etc/passwd"), PemKind::Certificates).unwrap_err();
        assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");
        let text = e.to_string();
        assert!(
            text.contains("`cacert` file /etc/passwd") && text.contains("not a PEM certificate"),
            "{text}"
        );
        let e = read_pem("key", Path::new("/nonexistent/k.pem"), PemKind::PrivateKey).unwrap_err();
        assert!(
            e.to_string()
                .contains("cannot read the `key` file /nonexistent/k.pem"),
            "{e}"
        );
        let e = check_pem("the client key", b"", PemKind::PrivateKey).unwrap_err();
        assert!(e.to_string().contains("not a PEM private key"), "{e}");
    }

    #[test]
    fn other_errors_and_plain_failures_are_left_alone() {
        let e = connect_error(Error::unauthenticated("wrong password"), ETCD);
        assert!(matches!(e, Error::Unauthenticated { .. }));
        let refused = io::Error::new(io::ErrorKind::ConnectionRefused, "refused");
        let e = connect_error(
            Error::unavailable_with_source("connect: refused", refused),
            ETCD,
        );
        assert!(e.is_retryable(), "{e}");
        assert_eq!(e.to_string(), "backend unavailable: connect: refused");
    }

    #[test]
    fn a_server_that_closes_during_the_handshake_is_unavailable_with_a_hint() {
        let eof = io::Error::new(io::ErrorKind::UnexpectedEof, "tls handshake eof");
        let e = connect_error(Error::unavailable_with_source("connect: eof", eof), ETCD);
        assert!(e.is_retryable(), "{e}");
        assert!(
            e.to_string()
                .contains("if it serves plain text, use etcd://"),
            "{e}"
        );
        assert!(StdError::source(&e).is_some_and(|s| s.is::<io::Error>()));
    }

    #[test]
    fn an_alert_known_by_its_text_only_is_permanent_and_keeps_the_source() {
        let alert = io::Error::new(
            io::ErrorKind::InvalidData,
            "received fatal alert: BadCertificate",
        );
        let e = connect_error(Error::unavailable_with_source("connect", alert), ETCD);
        assert!(matches!(e, Error::Unauthenticated { .. }), "{e}");
        assert!(
            e.to_string().contains("refused the client certificate"),
            "{e}"
        );
        assert!(StdError::source(&e).is_some_and(|s| s.is::<io::Error>()));
    }

    #[test]
    fn a_cause_kept_in_an_arc_is_found() {
        let alert = io::Error::new(
            io::ErrorKind::InvalidData,
            "received fatal alert: CertificateRequired",
        );
        let shared: std::sync::Arc<dyn StdError + Send + Sync> = std::sync::Arc::new(alert);
        let e = connect_error(Error::unavailable_with_source("connect", shared), ETCD);
        assert!(matches!(e, Error::Unauthenticated { .. }), "{e}");
        assert!(
            e.to_string().contains("requires a client certificate"),
            "{e}"
        );
    }

    #[test]
    fn a_reset_plain_connection_hints_at_tls() {
        let reset = io::Error::new(io::ErrorKind::ConnectionReset, "reset");
        let plain = Schemes { tls: false, ..ETCD };
        let e = connect_error(
            Error::unavailable_with_source("connect: reset", reset),
            plain,
        );
        assert!(e.is_retryable(), "{e}");
        assert!(
            e.to_string().contains("if it serves TLS, use etcds://"),
            "{e}"
        );
    }

    #[cfg(feature = "tls")]
    #[test]
    fn certificate_failures_are_named() {
        let wrapped = |e: rustls::Error| {
            let io = io::Error::new(io::ErrorKind::InvalidData, e);
            connect_error(Error::unavailable_with_source("connect", io), ETCD)
        };
        for (e, words) in [
            (
                rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
                "not signed by a CA",
            ),
            (
                rustls::Error::InvalidCertificate(rustls::CertificateError::Expired),
                "expired",
            ),
            (
                rustls::Error::AlertReceived(rustls::AlertDescription::CertificateRequired),
                "requires a client certificate",
            ),
            (
                rustls::Error::AlertReceived(rustls::AlertDescription::DecryptError),
                "refused the client certificate",
            ),
        ] {
            let e = wrapped(e);
            assert!(matches!(e, Error::Unauthenticated { .. }), "{e}");
            assert!(e.to_string().contains(words), "{e}");
        }
    }
}
