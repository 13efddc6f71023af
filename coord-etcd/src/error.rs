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

/// A sanitized etcd failure kept as the source of [`Error::Backend`]: the gRPC code and the
/// server's message only (no metadata, which could carry tokens).
#[derive(Debug)]
pub(crate) struct EtcdError {
    operation: String,
    detail: String,
}

impl fmt::Display for EtcdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.operation, self.detail)
    }
}

impl std::error::Error for EtcdError {}

/// What the failed call was about, for the error message and for kinds that carry an id.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Context<'a> {
    /// e.g. `txn`, `range "a/b"`.
    pub(crate) operation: &'a str,
    /// The lease the call was about, if any, for [`Error::LeaseNotFound`].
    pub(crate) lease: LeaseId,
}

impl<'a> Context<'a> {
    pub(crate) fn op(operation: &'a str) -> Self {
        Context {
            operation,
            lease: 0,
        }
    }

    pub(crate) fn lease(operation: &'a str, lease: LeaseId) -> Self {
        Context { operation, lease }
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

/// A `tonic::Status` as a coord error.
fn from_status(ctx: Context<'_>, status: &tonic::Status) -> Error {
    let message = status.message();
    let what = if ctx.operation.is_empty() {
        message.to_owned()
    } else {
        format!("etcd {}: {message}", ctx.operation)
    };
    if message.contains(COMPACTED) {
        // The compaction revision is not in etcd's message; callers that can find it out
        // (watch, compact) fill it in.
        return Error::Compacted {
            compact_revision: 0,
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
        return Error::Unauthenticated { message: what };
    }
    match status.code() {
        Code::Unavailable => Error::unavailable(what),
        Code::DeadlineExceeded => Error::Timeout { operation: what },
        Code::Unauthenticated => Error::Unauthenticated { message: what },
        Code::PermissionDenied => Error::PermissionDenied { message: what },
        Code::InvalidArgument | Code::OutOfRange => Error::invalid_argument(what),
        // A stream torn down by a restart or a reset shows up as Cancelled, Unknown or
        // Internal with an h2/transport message.
        Code::Cancelled => Error::unavailable(what),
        Code::Unknown | Code::Internal if is_transport_message(message) => Error::unavailable(what),
        // etcd's own deadline for a request it could not complete (e.g. a member without a
        // leader); whether a write was applied is unknown, as for any timeout.
        Code::Unknown if message.contains("context deadline exceeded") => {
            Error::Timeout { operation: what }
        }
        Code::ResourceExhausted if message.contains("too many requests") => {
            Error::unavailable(what)
        }
        code => Error::backend(
            "etcd",
            EtcdError {
                operation: ctx.operation.to_owned(),
                detail: format!("grpc status {code:?}: {message}"),
            },
        ),
    }
}

/// Maps an etcd-client error to the coord error kind a caller can act on.
pub(crate) fn map_err(ctx: Context<'_>, err: etcd_client::Error) -> Error {
    use etcd_client::Error as E;
    let prefixed = |detail: &dyn fmt::Display| {
        if ctx.operation.is_empty() {
            detail.to_string()
        } else {
            format!("etcd {}: {detail}", ctx.operation)
        }
    };
    match err {
        E::GRpcStatus(status) => from_status(ctx, &status),
        E::TransportError(e) => Error::unavailable(prefixed(&e)),
        E::IoError(e) => Error::unavailable(prefixed(&e)),
        E::WatchError(e) => Error::unavailable(prefixed(&format_args!("watch stream: {e}"))),
        E::LeaseKeepAliveError(e) if e.contains("lease not found") => {
            Error::LeaseNotFound { lease: ctx.lease }
        }
        E::LeaseKeepAliveError(e) => {
            Error::unavailable(prefixed(&format_args!("keep-alive stream: {e}")))
        }
        E::InvalidArgs(e) => Error::invalid_argument(prefixed(&e)),
        E::InvalidUri(e) => {
            Error::invalid_argument(prefixed(&format_args!("invalid endpoint: {e}")))
        }
        E::EndpointError(e) => Error::invalid_argument(prefixed(&e)),
        other => Error::backend(
            "etcd",
            EtcdError {
                operation: ctx.operation.to_owned(),
                detail: other.to_string(),
            },
        ),
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
        assert!(matches!(e, Error::LeaseNotFound { lease: 0x42 }), "{e}");
        let e = map_err(
            Context::op("range"),
            status(
                Code::OutOfRange,
                "etcdserver: mvcc: required revision has been compacted",
            ),
        );
        assert!(matches!(e, Error::Compacted { .. }), "{e}");
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
        assert!(matches!(e, Error::LeaseNotFound { lease: 7 }), "{e}");
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
}
