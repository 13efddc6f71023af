//! Names and values: what a lock, semaphore or election may be called, and how large a
//! value may be.

use coord::{Election, Mutex, RwMutex, Semaphore};

use crate::support::{
    assert_cli, assert_invalid, assert_nothing_left, etcd, etcd_url, redis, redis_url, session,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b01_an_empty_name_is_refused_before_any_request() {
    let Some(server) = etcd().await else { return };
    let url = etcd_url(&server);
    let s = session(&url).await;
    assert_invalid(
        Mutex::new(&s, "").lock().await,
        &["lock name \"\"", "is empty"],
    );
    assert_invalid(RwMutex::new(&s, "").read().await, &["is empty"]);
    assert_invalid(Semaphore::new(&s, "", 2).map(|_| ()), &["is empty"]);
    assert_invalid(Election::new(&s, "").campaign("v").await, &["is empty"]);
    s.close().await.unwrap();
    assert_cli(&url, &["lock", "", "--", "true"], 2, &["is empty"]);
    assert_nothing_left(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b02_a_name_with_a_nul_byte_is_refused() {
    let Some(server) = etcd().await else { return };
    let url = etcd_url(&server);
    let s = session(&url).await;
    assert_invalid(Mutex::new(&s, "a\0b").try_lock().await, &["NUL"]);
    assert_invalid(Election::new(&s, "a\0b").campaign("v").await, &["NUL"]);
    s.close().await.unwrap();
    // The command line cannot receive one: an argument is a C string.
    assert!(
        std::process::Command::new(crate::cli_support::coord_bin())
            .arg("a\0b")
            .output()
            .is_err()
    );
    assert_nothing_left(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b03_a_name_ending_with_a_slash_is_refused() {
    let Some(server) = etcd().await else { return };
    let url = etcd_url(&server);
    let s = session(&url).await;
    assert_invalid(
        Mutex::new(&s, "jobs/").lock().await,
        &["\"jobs/\"", "ends with '/'"],
    );
    assert_invalid(RwMutex::new(&s, "jobs/").write().await, &["ends with '/'"]);
    s.close().await.unwrap();
    assert_cli(
        &url,
        &["lock", "jobs/", "--", "true"],
        2,
        &["ends with '/'"],
    );
    assert_cli(&url, &["elect", "jobs/", "v"], 2, &["ends with '/'"]);
    assert_nothing_left(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b04_a_name_with_a_newline_works_in_the_library_and_is_refused_by_the_cli() {
    let Some(server) = etcd().await else { return };
    let url = etcd_url(&server);
    let s = session(&url).await;
    // Keys are bytes: the library takes it (etcdctl and Go do too).
    let guard = Mutex::new(&s, "a\nb").lock().await.unwrap();
    assert!(guard.key().starts_with("a\nb/"), "{:?}", guard.key());
    guard.unlock().await.unwrap();
    s.close().await.unwrap();
    // The command line prints the key on a line of its own, so it refuses.
    assert_cli(&url, &["lock", "a\nb", "--", "true"], 2, &["newline"]);
    assert_nothing_left(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b05_a_name_that_prefixes_another_is_a_different_lock() {
    let Some(server) = etcd().await else { return };
    let url = etcd_url(&server);
    let a = session(&url).await;
    let deeper = Mutex::new(&a, "pa/b").lock().await.unwrap();
    let b = session(&url).await;
    let shorter = Mutex::new(&b, "pa").try_lock().await.expect("pa is free");
    shorter.unlock().await.unwrap();
    assert_cli(&url, &["lock", "--try", "pa", "--", "true"], 0, &[]);
    assert_cli(&url, &["leader", "pa"], 6, &["no leader"]);
    deeper.unlock().await.unwrap();
    a.close().await.unwrap();
    b.close().await.unwrap();
    assert_nothing_left(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b06_a_value_over_the_request_limit_is_refused_and_writes_nothing() {
    let big = vec![b'x'; 2 << 20];
    let backends = every_backend().await;
    for url in &backends.urls {
        let s = session(url).await;
        let e = Election::new(&s, "big");
        assert_invalid(e.campaign(big.clone()).await, &["request", "limit"]);
        let leader = e.campaign("small").await.unwrap();
        assert_invalid(leader.proclaim(big.clone()).await, &["request", "limit"]);
        assert_eq!(leader.current().await.unwrap().value, b"small");
        leader.resign().await.unwrap();
        s.close().await.unwrap();
        assert_nothing_left(url).await;
    }
    // The command line cannot pass it: Linux caps one argument at 128 KiB.
}

/// One store per backend: memory, and each server when its binary is there (kept alive
/// as long as this value).
struct EveryBackend {
    urls: Vec<String>,
    _etcd: Option<coord_testkit::EtcdServer>,
    _redis: Option<coord_testkit::RedisServer>,
}

async fn every_backend() -> EveryBackend {
    let mut urls = vec![format!("memory://bad-input-{}", std::process::id())];
    let etcd = etcd().await;
    let redis = redis().await;
    urls.extend(etcd.as_ref().map(etcd_url));
    urls.extend(redis.as_ref().map(redis_url));
    EveryBackend {
        urls,
        _etcd: etcd,
        _redis: redis,
    }
}
