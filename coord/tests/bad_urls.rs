//! Bad backend URLs through `coord::ConnectOptions::parse` and `coord::connect`: each is
//! refused before any network traffic with `InvalidArgument` naming what is wrong, and
//! never showing the password. The cases of the etcd and Redis schemes need those cargo
//! features (`cargo test --all-features`).

use std::time::Duration;

use coord::{ConnectOptions, Error};

/// The password every case carries where a URL can carry one.
const SECRET: &str = "hunter2";

/// Parses `url`, which must be refused as `InvalidArgument` naming every one of `words`
/// and not showing [`SECRET`].
fn refused(url: &str, words: &[&str]) {
    let e = match ConnectOptions::parse(url) {
        Ok(o) => panic!("{url} parsed: {o:?}"),
        Err(e) => e,
    };
    check(url, &e, words);
}

fn check(url: &str, e: &Error, words: &[&str]) {
    assert!(matches!(e, Error::InvalidArgument { .. }), "{url}: {e:?}");
    assert!(!e.is_retryable(), "{url}: {e:?}");
    let text = e.to_string();
    for w in words {
        assert!(text.contains(w), "{url}: {w:?} not in {text}");
    }
    let shown = format!("{e} {e:?}");
    assert!(
        !shown.contains(SECRET),
        "{url}: the password shows: {shown}"
    );
}

#[test]
fn bad_urls_of_any_scheme_are_refused_naming_the_part() {
    for (url, words) in [
        ("127.0.0.1:2379", &["no scheme", "memory://"][..]),
        ("zk://h:1", &["unknown scheme \"zk\"", "memory://"]),
        (
            "memory://?ttl=1s&ttl=2s",
            &["query parameter `ttl` given twice"],
        ),
        (
            "memory://?namespace=a&namespace=b",
            &["`namespace` given twice"],
        ),
        (
            "memory://?ttl=0s",
            &["query parameter `ttl` must be positive"],
        ),
        ("memory://?ttl=0", &["`ttl` must be positive"]),
        (
            "memory://?ttl=ten",
            &["query parameter `ttl`", "bad duration \"ten\""],
        ),
        ("memory://?ttl=-1s", &["query parameter `ttl`"]),
        ("memory://?ttl=", &["`ttl` needs a value"]),
        (
            "memory://?colour=blue",
            &["unknown query parameter `colour`"],
        ),
        ("memory://?namespace=%zz", &["bad percent-encoding"]),
        ("memory://x#frag", &["fragment"]),
        ("memory://h :1", &["spaces"]),
    ] {
        refused(url, words);
    }
}

#[test]
fn every_duration_parameter_reads_the_cli_grammar() {
    let o = ConnectOptions::parse("memory://?ttl=1h30m").unwrap();
    assert_eq!(o.session_ttl(), Some(Duration::from_secs(5400)));
    let o = ConnectOptions::parse("memory://?ttl=90").unwrap();
    assert_eq!(o.session_ttl(), Some(Duration::from_secs(90)));
}

#[cfg(feature = "etcd")]
#[test]
fn bad_etcd_urls_are_refused_naming_the_part_without_the_password() {
    for (url, words) in [
        ("etcd://root:hunter2@", &["no host"][..]),
        ("etcd://", &["needs at least one HOST[:PORT]"]),
        (
            "etcd://root:hunter2@h:99999",
            &["bad port (a number from 1 to 65535)"],
        ),
        ("etcd://root:hunter2@h:x", &["bad port"]),
        (
            "etcd://root:hunter2@a:1,h:0",
            &["endpoint \"h:0\": bad port"],
        ),
        ("etcd://root:hunter2@h%C3%A9", &["bad host name"]),
        (
            "etcd://root:hunter2@h?ttl=1s&ttl=2s",
            &["`ttl` given twice"],
        ),
        (
            "etcd://root:hunter2@h?request_timeout=0s",
            &["`request_timeout` must be positive"],
        ),
        (
            "etcd://root:hunter2@h?connect_timeout=0",
            &["`connect_timeout` must be positive"],
        ),
        (
            "etcd://root:hunter2@h?request_timeout=soon",
            &["query parameter `request_timeout`"],
        ),
        (
            "etcd://root:hunter2@h?bogus=1",
            &["unknown query parameter `bogus`", "request_timeout"],
        ),
        (
            "etcd://root:hunter2@h?password=hunter3",
            &["password is given twice"],
        ),
        ("etcd://h?user=a&user=b", &["`user` given twice"]),
        (
            "etcd://root:hunter%zz@h",
            &["bad percent-encoding in the password"],
        ),
        (
            "etcd://root:hunter2@h?cacert=/ca.pem",
            &["`cacert`", "use etcds://"],
        ),
        ("etcd://root@h", &["without a password"]),
        ("etcd://root:hunter2@h/path", &["takes no path"]),
    ] {
        refused(url, words);
    }
    let o = ConnectOptions::parse("etcd://h?ttl=90&request_timeout=1h30m").unwrap();
    assert_eq!(o.session_ttl(), Some(Duration::from_secs(90)));
    assert_eq!(
        o.redacted_url(),
        "etcd://h:2379?ttl=90s&request_timeout=5400s"
    );
}

#[cfg(feature = "redis")]
#[test]
fn bad_redis_urls_are_refused_naming_the_part_without_the_password() {
    for (url, words) in [
        ("redis://:hunter2@", &["no host"][..]),
        ("redis://", &["needs a HOST[:PORT]"]),
        ("redis://:hunter2@h:99999", &["bad port"]),
        (
            "redis://:hunter2@h/x",
            &["database in the path must be a number"],
        ),
        ("redis://:hunter2@a,b", &["one HOST[:PORT]"]),
        (
            "redis://:hunter2@h?request_timeout=0s",
            &["`request_timeout` must be positive"],
        ),
        (
            "redis://:hunter2@h?request_timeout=1s&request_timeout=2s",
            &["given twice"],
        ),
        ("redis://:hunter2@h?db=1", &["unknown query parameter `db`"]),
        ("redis://:hunter2@h?revisions=dense", &["revisions must be"]),
        (
            "rediss://:hunter2@h?tls_domain=a..b",
            &["`tls_domain` must be a DNS name"],
        ),
        (
            "redis://:hunter%zz@h",
            &["bad percent-encoding in the password"],
        ),
    ] {
        refused(url, words);
    }
}

/// TLS files are read and checked when connecting, before any connection is tried: port 1
/// on loopback has no server, so a network attempt would be `Unavailable` instead.
#[cfg(all(feature = "etcd", feature = "redis"))]
#[tokio::test]
async fn tls_files_that_are_not_pem_are_refused_before_any_connection() {
    for (url, words) in [
        (
            "etcds://root:hunter2@127.0.0.1:1?cacert=/etc/passwd",
            &["`cacert` file /etc/passwd", "not a PEM certificate"][..],
        ),
        (
            "etcds://root:hunter2@127.0.0.1:1?cacert=/nonexistent/ca.pem",
            &["cannot read the `cacert` file /nonexistent/ca.pem"],
        ),
        (
            "rediss://:hunter2@127.0.0.1:1?cacert=/etc/passwd",
            &["`cacert` file /etc/passwd", "not a PEM certificate"],
        ),
        (
            "rediss://:hunter2@127.0.0.1:1?cert=/etc/passwd&key=/etc/passwd",
            &["`cert` file /etc/passwd", "not a PEM certificate"],
        ),
    ] {
        let e = coord::connect(url).await.expect_err("refused");
        check(url, &e, words);
    }
}
