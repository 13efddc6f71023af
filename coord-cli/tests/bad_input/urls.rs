//! Backend URLs: each malformed part is refused by `coord::connect` (and the CLI) with a
//! message naming the part, before any network traffic and without showing a password.

use coord::ConnectOptions;

use crate::support::{assert_cli, assert_invalid};

/// Refused by the library and the command line alike, the message naming `says`.
#[track_caller]
fn refused(url: &str, says: &[&str]) {
    assert_invalid(ConnectOptions::parse(url), says);
    let stderr = assert_cli(url, &["lock", "x", "--", "true"], 2, says);
    assert!(!stderr.contains("s3cret"), "a password shown: {stderr}");
}

#[test]
fn b18_an_unknown_scheme_is_refused_with_the_known_ones() {
    refused(
        "garbage://x",
        &["unknown scheme \"garbage\"", "etcd://", "redis://"],
    );
}

#[test]
fn b19_an_address_without_a_scheme_is_refused() {
    refused("127.0.0.1:2379", &["no scheme", "etcd://"]);
}

#[test]
fn b20_a_server_url_without_a_host_is_refused() {
    refused("etcd://", &["HOST"]);
    refused("redis://", &["HOST"]);
}

#[test]
fn b21_a_bad_port_is_refused() {
    refused("etcd://127.0.0.1:99999", &["port"]);
    refused("redis://127.0.0.1:http", &["port"]);
}

#[test]
fn b22_bad_percent_encoding_is_refused_without_the_password() {
    refused("redis://app:s3cret%zz@127.0.0.1", &["percent"]);
}

#[test]
fn b23_an_unknown_query_parameter_is_refused_with_the_known_ones() {
    refused("etcd://127.0.0.1:2379?tll=10s", &["tll", "ttl"]);
}

#[test]
fn b24_a_repeated_query_parameter_is_refused() {
    refused(
        "etcd://127.0.0.1:2379?ttl=1s&ttl=2s",
        &["`ttl` given twice"],
    );
}

#[test]
fn b25_credentials_on_memory_are_refused() {
    refused("memory://?user=app&password=s3cret", &["memory"]);
}

#[test]
fn b26_tls_files_on_a_plain_url_are_refused_with_a_hint() {
    refused(
        "etcd://127.0.0.1:2379?cacert=ca.pem",
        &["cacert", "etcds://"],
    );
    refused("redis://127.0.0.1?cacert=ca.pem", &["cacert", "rediss://"]);
}
