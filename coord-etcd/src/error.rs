//! Mapping etcd-client errors onto [`coord_core::Error`] kinds.

use std::fmt;

use coord_core::{Error, LeaseId};
use tonic::Code;

/// etcd's message for an unknown lease (`rpctypes.ErrGRPCLeaseNotFound`).
const LEASE_NOT_FOUND: &str = "requested lease not found";
/// etcd's message for a compacted revision (`rpctypes.ErrGRPCCompacted`).
const COMPACTED: &str = "required revision has been compacted";
/// etcd's message for a revision above the current one (`rpctypes.ErrGRPCFutureRev`).
const FUTURE_REV: &str = "required revision is a future revision";

/// etcd's message for a call without credentials to a server with auth enabled
/// (`rpctypes.ErrGRPCUserEmpty`).
const USER_EMPTY: &str = "user name is empty";

/// What the failed call was about, for the error message and for kinds that carry an id.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Context<'a> {
    /// e.g. `txn`, `range "a/b"`.
    pub(crate) operation: &'a str,
    /// The lease the call was about, if known, for [`Error::LeaseNotFound`].
    pub(crate) lease: Option<LeaseId>,
}

impl<'a> Context<'a> {
    pub(crate) fn op(operation: &'a str) -> Self {
        Context {
            operation,
            lease: None,
        }
    }

    pub(crate) fn lease(operation: &'a str, lease: LeaseId) -> Self {
        Context {
            operation,
            lease: Some(lease),
        }
    }

    /// `detail` prefixed with the operation, as messages name what they are about.
    fn message(&self, detail: &dyn fmt::Display) -> String {
        if self.operation.is_empty() {
            detail.to_string()
        } else {
            format!("etcd {}: {detail}", self.operation)
        }
    }

    /// [`Context::message`] without the `etcd` that [`Error::Backend`]'s own text names.
    fn backend_message(&self, detail: &dyn fmt::Display) -> String {
        if self.operation.is_empty() {
            detail.to_string()
        } else {
            format!("{}: {detail}", self.operation)
        }
    }
}

/// Whether a message (of a non-gRPC-coded failure) describes a broken connection or stream.
fn is_transport_message(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    [
        "h2 protocol error",
        "transport error",
        "connection",
        "broken pipe",
        "tcp connect",
        "error reading a body",
        "error trying to connect",
        "stream closed",
        "channel closed",
        "dns error",
    ]
    .iter()
    .any(|needle| m.contains(needle))
}

/// `status` without its metadata, which is kept as a source and so shows in `Debug`: the
/// metadata are headers and trailers, where a token could travel.
fn sanitized(mut status: tonic::Status) -> tonic::Status {
    *status.metadata_mut() = tonic::metadata::MetadataMap::new();
    status
}

/// A `tonic::Status` as a coord error.
fn from_status(ctx: Context<'_>, status: tonic::Status) -> Error {
    let message = status.message();
    let what = ctx.message(&message);
    if message.contains(COMPACTED) {
        // The compaction revision is not in etcd's message; callers that can find it out
        // (watch, compact) fill it in.
        return Error::Compacted {
            compact_revision: None,
        };
    }
    if message.contains(LEASE_NOT_FOUND) {
        return Error::LeaseNotFound { lease: ctx.lease };
    }
    if message.contains(FUTURE_REV) {
        return Error::invalid_argument(what);
    }
    // etcd answers a wrong password with InvalidArgument ("authentication failed, invalid
    // user ID or password") and an expired token with Unauthenticated or Unknown.
    if message.contains("authentication failed") || message.contains("invalid auth token") {
        return Error::unauthenticated(what);
    }
    // etcd's answer to a call without a token when auth is on (`ErrGRPCUserEmpty`).
    if message.contains(USER_EMPTY) {
        return Error::unauthenticated(ctx.message(&format_args!(
            "{message}: this etcd has auth enabled and needs credentials (USER:PASSWORD@ \
             before the host, or ?user=&password=)"
        )));
    }
    let unavailable = |status| Error::unavailable_with_source(what.clone(), sanitized(status));
    match status.code() {
        Code::Unavailable => unavailable(status),
        Code::DeadlineExceeded => Error::Timeout { operation: what },
        Code::Unauthenticated => Error::unauthenticated(what),
        Code::PermissionDenied => Error::PermissionDenied { message: what },
        Code::InvalidArgument | Code::OutOfRange => Error::invalid_argument(what),
        // A stream torn down by a restart or a reset shows up as Cancelled, Unknown or
        // Internal with an h2/transport message.
        Code::Cancelled => unavailable(status),
        Code::Unknown | Code::Internal if is_transport_message(message) => unavailable(status),
        // etcd's own deadline for a request it could not complete (e.g. a member without a
        // leader); whether a write was applied is unknown, as for any timeout.
        Code::Unknown if message.contains("context deadline exceeded") => {
            Error::Timeout { operation: what }
        }
        Code::ResourceExhausted if message.contains("too many requests") => unavailable(status),
        code => Error::backend_with_source(
            "etcd",
            ctx.backend_message(&format_args!("grpc status {code:?}: {message}")),
            sanitized(status),
        ),
    }
}

/// Maps an etcd-client error to the coord error kind a caller can act on, keeping it (or
/// the tonic error inside it, whose own sources lead down to the I/O error) as the source.
pub(crate) fn map_err(ctx: Context<'_>, err: etcd_client::Error) -> Error {
    use etcd_client::Error as E;
    match err {
        E::GRpcStatus(status) => from_status(ctx, status),
        E::TransportError(e) => Error::unavailable_with_source(ctx.message(&e), e),
        E::IoError(e) => Error::unavailable_with_source(ctx.message(&e), e),
        E::WatchError(ref e) => {
            Error::unavailable_with_source(ctx.message(&format_args!("watch stream: {e}")), err)
        }
        E::LeaseKeepAliveError(e) if e.contains("lease not found") => {
            Error::LeaseNotFound { lease: ctx.lease }
        }
        E::LeaseKeepAliveError(ref e) => Error::unavailable_with_source(
            ctx.message(&format_args!("keep-alive stream: {e}")),
            err,
        ),
        E::InvalidArgs(e) => Error::invalid_argument(ctx.message(&e)),
        E::InvalidUri(e) => {
            Error::invalid_argument(ctx.message(&format_args!("invalid endpoint: {e}")))
        }
        E::EndpointError(e) => Error::invalid_argument(ctx.message(&e)),
        other => Error::backend_with_source("etcd", ctx.backend_message(&other), other),
    }
}

/// A failure to connect, with TLS failures made permanent ([`coord_core::tls`]). `tls`
/// says whether the connection used TLS.
///
/// A server that refuses the client certificate (or its absence) alerts after the client
/// has finished its side of a TLS 1.3 handshake, and closes. Depending on timing the first
/// call then fails with the alert, cancelled with the connection closed, or with a broken
/// pipe: tonic reports the latter two with code `Cancelled` or `Unknown`, where a failed
/// handshake is `Unavailable`. At connect, over TLS, a connection that dies as soon as it
/// is up means the certificate was refused.
pub(crate) fn connect_error(e: Error, tls: bool) -> Error {
    let cut_off = std::error::Error::source(&e)
        .and_then(|s| s.downcast_ref::<tonic::Status>())
        .is_some_and(|s| matches!(s.code(), Code::Cancelled | Code::Unknown));
    let closed_after_handshake = tls && cut_off;
    let message = match &e {
        Error::Unavailable { message, .. } => message.clone(),
        _ => String::new(),
    };
    let schemes = coord_core::tls::Schemes {
        tls,
        plain: "etcd",
        secure: "etcds",
    };
    match coord_core::tls::connect_error(e, schemes) {
        Error::Unavailable {
            source: Some(source),
            ..
        } if closed_after_handshake => Error::unauthenticated_with_source(
            format!(
                "TLS: the server closed the connection right after the handshake: it most \
                 likely refused the client certificate (`cert` and `key`: none given, or not \
                 signed by a CA the server trusts) ({message})"
            ),
            source,
        ),
        // A TLS server closes on a plain-text client's first bytes; hyper reports the
        // first call cancelled, not the connection reset the shared hint looks for.
        Error::Unavailable { message, source } if cut_off && !tls => Error::Unavailable {
            message: format!(
                "{message} (the server closed the connection at once: if it serves TLS, use \
                 etcds://)"
            ),
            source,
        },
        e => e,
    }
}

/// `e` with `what` (the endpoints being connected to) in its message, so that a connect
/// error names the address that failed.
pub(crate) fn naming(e: Error, what: &str) -> Error {
    match e {
        Error::Unavailable { message, source } => Error::Unavailable {
            message: format!("{message} ({what})"),
            source,
        },
        e => e,
    }
}

/// Whether a call failed because the channel could not connect to the endpoint it picked,
/// so that no part of the request reached any server and sending it again is safe (for a
/// txn too).
fn never_sent(err: &etcd_client::Error) -> bool {
    match err {
        etcd_client::Error::GRpcStatus(s) => {
            s.code() == Code::Unavailable && {
                let m = s.message().to_ascii_lowercase();
                m.contains("tcp connect error") || m.contains("error trying to connect")
            }
        }
        _ => false,
    }
}

/// Whether etcd refused a call because the member has no leader at the moment (an
/// election is under way, e.g. after the leader died): a read can be sent again once one
/// is elected. (A write that failed this way may or may not have been applied.)
pub(crate) fn leaderless(err: &etcd_client::Error) -> bool {
    match err {
        etcd_client::Error::GRpcStatus(s) => {
            s.code() == Code::Unavailable && leaderless_message(s.message())
        }
        _ => false,
    }
}

/// Whether a mapped error's message says the member had no leader.
pub(crate) fn leaderless_message(message: &str) -> bool {
    message.contains("leader changed") || message.contains("no leader")
}

/// How many times a call is sent when it fails without reaching a server: once per
/// endpoint is not enough, as the balancer picks at random (and favours a dead endpoint,
/// whose calls fail at once and so look unloaded).
pub(crate) fn send_attempts(endpoints: usize) -> u32 {
    if endpoints > 1 {
        u32::try_from(endpoints * 6).unwrap_or(u32::MAX)
    } else {
        1
    }
}

/// Runs `call` until it succeeds, fails in a way other than [`never_sent`], or has been
/// sent `attempts` times.
///
/// etcd-client balances over its endpoints with tonic's balanced channel, which keeps
/// picking an endpoint that went down: the call then fails with `Unavailable` ("tcp connect
/// error") although the other members serve (hyperium/tonic#2839). Sending it again
/// reaches a live member.
pub(crate) async fn retry_unsent<T, F, Fut>(
    attempts: u32,
    mut call: F,
) -> std::result::Result<T, etcd_client::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = std::result::Result<T, etcd_client::Error>>,
{
    let mut sent = 1;
    loop {
        match call().await {
            Err(e) if sent < attempts && never_sent(&e) => {
                tracing::debug!(attempt = sent, error = %e, "etcd endpoint unreachable; sending again");
                sent += 1;
            }
            result => return result,
        }
    }
}

/// The error for a unary call that exceeded the request timeout.
pub(crate) fn timeout(operation: &str, after: std::time::Duration) -> Error {
    Error::Timeout {
        operation: format!("etcd {operation} (request timeout {after:?})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: Code, msg: &str) -> etcd_client::Error {
        etcd_client::Error::GRpcStatus(tonic::Status::new(code, msg))
    }

    #[test]
    fn grpc_codes_map_to_kinds() {
        let c = Context::op("txn");
        assert!(matches!(
            map_err(c, status(Code::Unavailable, "tcp connect error")),
            Error::Unavailable { .. }
        ));
        assert!(matches!(
            map_err(c, status(Code::DeadlineExceeded, "x")),
            Error::Timeout { .. }
        ));
        assert!(matches!(
            map_err(
                c,
                status(Code::Unauthenticated, "etcdserver: invalid auth token")
            ),
            Error::Unauthenticated { .. }
        ));
        assert!(matches!(
            map_err(
                c,
                status(Code::PermissionDenied, "etcdserver: permission denied")
            ),
            Error::PermissionDenied { .. }
        ));
        assert!(matches!(
            map_err(
                c,
                status(Code::InvalidArgument, "etcdserver: key is not provided")
            ),
            Error::InvalidArgument { .. }
        ));
        assert!(matches!(
            map_err(
                c,
                status(
                    Code::InvalidArgument,
                    "etcdserver: authentication failed, invalid user ID or password"
                )
            ),
            Error::Unauthenticated { .. }
        ));
        assert!(matches!(
            map_err(c, status(Code::FailedPrecondition, "weird")),
            Error::Backend {
                backend: "etcd",
                ..
            }
        ));
    }

    #[test]
    fn etcd_messages_map_to_kinds() {
        let e = map_err(
            Context::lease("lease revoke", 0x42),
            status(Code::NotFound, "etcdserver: requested lease not found"),
        );
        assert!(
            matches!(e, Error::LeaseNotFound { lease: Some(0x42) }),
            "{e}"
        );
        let e = map_err(
            Context::op("range"),
            status(
                Code::OutOfRange,
                "etcdserver: mvcc: required revision has been compacted",
            ),
        );
        assert!(
            matches!(
                e,
                Error::Compacted {
                    compact_revision: None
                }
            ),
            "{e}"
        );
        let e = map_err(
            Context::op("txn"),
            status(Code::NotFound, "etcdserver: requested lease not found"),
        );
        assert!(matches!(e, Error::LeaseNotFound { lease: None }), "{e}");
        assert_eq!(e.to_string(), "lease not found (expired or revoked)");
        let e = map_err(
            Context::op("range"),
            status(
                Code::OutOfRange,
                "etcdserver: mvcc: required revision is a future revision",
            ),
        );
        assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");
        let e = map_err(
            Context::lease("keep-alive", 7),
            etcd_client::Error::LeaseKeepAliveError("lease not found".into()),
        );
        assert!(matches!(e, Error::LeaseNotFound { lease: Some(7) }), "{e}");
    }

    #[test]
    fn stream_breaks_are_unavailable() {
        let c = Context::op("watch");
        for e in [
            status(
                Code::Unknown,
                "h2 protocol error: error reading a body from connection",
            ),
            status(Code::Internal, "h2 protocol error: broken pipe"),
            status(Code::Cancelled, "operation was canceled"),
            etcd_client::Error::LeaseKeepAliveError("channel closed".into()),
            etcd_client::Error::WatchError("channel closed".into()),
        ] {
            let mapped = map_err(c, e);
            assert!(mapped.is_retryable(), "{mapped}");
        }
    }

    #[test]
    fn only_connect_failures_are_sent_again() {
        assert!(never_sent(&status(Code::Unavailable, "tcp connect error")));
        assert!(!never_sent(&status(
            Code::Unavailable,
            "etcdserver: leader changed"
        )));
        assert!(!never_sent(&status(
            Code::Unknown,
            "h2 protocol error: error reading a body from connection"
        )));
        assert!(leaderless(&status(
            Code::Unavailable,
            "etcdserver: leader changed"
        )));
        assert!(leaderless(&status(
            Code::Unavailable,
            "etcdserver: no leader"
        )));
        assert!(!leaderless(&status(Code::Unavailable, "tcp connect error")));
        assert_eq!(send_attempts(1), 1);
        assert!(send_attempts(3) > 3);
    }

    #[tokio::test]
    async fn retry_unsent_stops_at_the_first_other_outcome() {
        let mut calls = 0;
        let r: std::result::Result<(), _> = retry_unsent(10, || {
            calls += 1;
            let n = calls;
            async move {
                if n < 3 {
                    Err(status(Code::Unavailable, "tcp connect error"))
                } else {
                    Err(status(Code::Unavailable, "etcdserver: request timed out"))
                }
            }
        })
        .await;
        assert!(r.is_err());
        assert_eq!(calls, 3);
        let mut calls = 0;
        let r: std::result::Result<(), _> = retry_unsent(4, || {
            calls += 1;
            async { Err(status(Code::Unavailable, "tcp connect error")) }
        })
        .await;
        assert!(r.is_err());
        assert_eq!(calls, 4, "bounded");
    }

    #[test]
    fn messages_name_the_operation() {
        let e = map_err(
            Context::op("range \"a\""),
            status(Code::Unavailable, "tcp connect error"),
        );
        assert!(e.to_string().contains("range \"a\""), "{e}");
    }

    #[test]
    fn the_etcd_error_is_kept_as_the_source() {
        use std::error::Error as _;

        let e = map_err(
            Context::op("txn"),
            status(Code::Unavailable, "etcdserver: request timed out"),
        );
        let source = e.source().expect("a source");
        let kept = source.downcast_ref::<tonic::Status>().expect("the status");
        assert_eq!(kept.code(), Code::Unavailable);
        assert_eq!(kept.message(), "etcdserver: request timed out");

        let e = map_err(
            Context::op("txn"),
            status(Code::FailedPrecondition, "weird"),
        );
        assert!(
            matches!(
                e,
                Error::Backend {
                    backend: "etcd",
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.source().unwrap().is::<tonic::Status>());
        assert_eq!(
            e.to_string(),
            "etcd backend error: txn: grpc status FailedPrecondition: weird"
        );

        let e = map_err(
            Context::op("watch"),
            etcd_client::Error::WatchError("channel closed".into()),
        );
        assert!(e.source().unwrap().is::<etcd_client::Error>(), "{e:?}");
    }

    #[test]
    fn metadata_is_not_kept() {
        let mut s = tonic::Status::new(Code::Unavailable, "tcp connect error");
        s.metadata_mut()
            .insert("token", "s3cr3t-token".parse().unwrap());
        let e = map_err(Context::op("txn"), etcd_client::Error::GRpcStatus(s));
        let shown = format!("{e} {e:?}");
        assert!(!shown.contains("s3cr3t-token"), "{shown}");
    }

    /// Everything an error shows of itself and of its sources, for secret checks.
    fn shown_with_sources(e: &Error) -> String {
        let mut shown = format!("{e} {e:?}");
        let mut next = std::error::Error::source(e);
        while let Some(s) = next {
            shown.push_str(&format!(" {s} {s:?}"));
            next = s.source();
        }
        shown
    }

    #[tokio::test]
    async fn connect_failures_keep_the_tonic_error_and_no_password() {
        use std::error::Error as _;

        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // With credentials, etcd-client authenticates while connecting: the password is
        // in the request that failed.
        for options in [
            crate::EtcdOptions::new([format!("127.0.0.1:{port}")]),
            crate::EtcdOptions::new([format!("127.0.0.1:{port}")]).user("root", "s3cr3t-pw"),
        ] {
            let err = crate::EtcdBackend::connect(
                options.connect_timeout(std::time::Duration::from_secs(2)),
            )
            .await
            .unwrap_err();
            assert!(matches!(err, Error::Unavailable { .. }), "{err:?}");
            let source = err.source().expect("the etcd error is kept");
            assert!(
                source.is::<tonic::Status>() || source.is::<tonic::transport::Error>(),
                "{source:?}"
            );
            let mut refused = false;
            let mut next = err.source();
            while let Some(s) = next {
                refused |= s
                    .downcast_ref::<std::io::Error>()
                    .is_some_and(|e| e.kind() == std::io::ErrorKind::ConnectionRefused);
                next = s.source();
            }
            assert!(refused, "the chain leads to the refused connect: {err:?}");
            let shown = shown_with_sources(&err);
            assert!(!shown.contains("s3cr3t-pw"), "{shown}");
        }
    }
}
