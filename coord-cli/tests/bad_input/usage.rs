//! Command-line usage that does not fit: refused with exit 2 and a message naming the
//! option, before anything is held.

use coord::{Error, Mutex};

use crate::cli_support::{coord, coord_bin};
use crate::support::{assert_cli, session};

#[test]
fn b50_coordinating_without_a_backend_is_refused() {
    for args in [&["lock", "x"][..], &["elect", "x", "v"], &["leader", "x"]] {
        let out = assert_cmd::Command::new(coord_bin())
            .env_remove("COORD_BACKEND")
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("needs a backend"), "{stderr}");
    }
}

#[test]
fn b51_a_mistyped_option_after_the_name_is_refused_not_run() {
    assert_cli(
        "memory://",
        &["lock", "x", "--timout", "1s"],
        2,
        &["--timeout"],
    );
}

#[test]
fn b52_options_that_exclude_each_other_are_refused() {
    for (args, names) in [
        (
            &["lock", "--read", "--write", "x"][..],
            ["--read", "--write"],
        ),
        (
            &["lock", "--try", "--timeout", "1s", "x"][..],
            ["--try", "--timeout"],
        ),
        (
            &["lock", "--permits", "2", "--read", "x"][..],
            ["--permits", "--read"],
        ),
        (
            &["elect", "--listen", "--timeout", "1s", "x"][..],
            ["--listen", "--timeout"],
        ),
    ] {
        assert_cli("memory://", args, 2, &names);
    }
}

#[test]
fn b53_an_option_without_what_it_acts_on_is_refused() {
    assert_cli(
        "memory://",
        &["lock", "--kill-after", "2s", "x"],
        2,
        &["--kill-after", "CMD"],
    );
}

#[test]
fn b54_the_demo_refuses_a_backend_it_would_not_use() {
    assert_cli("garbage://x", &["demo"], 2, &["demo", "memory://"]);
}

#[test]
fn b55_errors_are_json_when_json_is_asked_for() {
    let out = coord("garbage://x", &["-o", "json", "leader", "x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stderr.lines().last().unwrap_or_default();
    let v: serde_json::Value =
        serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {stderr}"));
    assert!(v["error"].as_str().unwrap().contains("garbage"), "{v}");
    assert_eq!(v["exit_code"], 2, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b56_a_held_lock_names_its_holder_plainly() {
    let s = session("memory://b56").await;
    let held = Mutex::new(&s, "x").lock().await.unwrap();
    let other = session("memory://b56").await;
    let err = Mutex::new(&other, "x").try_lock().await.unwrap_err();
    assert!(matches!(err, Error::Locked { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains(held.key()), "{text}");
    assert!(!text.contains("Some("), "{text}");
}

#[test]
fn b57_a_password_file_that_is_missing_or_empty_is_refused() {
    let empty = tempfile::NamedTempFile::new().unwrap();
    let empty = empty.path().to_str().unwrap().to_owned();
    for file in ["/nonexistent/pw", empty.as_str()] {
        assert_cli(
            "etcd://app@127.0.0.1:1",
            &["--password-file", file, "lock", "x", "--", "true"],
            2,
            &["--password-file", file],
        );
    }
}
