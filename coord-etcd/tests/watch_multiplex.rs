//! Every watch of a backend shares one etcd watch stream: counted by etcd itself (the
//! `etcd_debugging_mvcc_watch_stream_total` and `etcd_debugging_mvcc_watcher_total`
//! gauges on the client URL's `/metrics`) and by the backend. Dropped watches are
//! cancelled on the server; a broken stream resumes every watch without gap or duplicate;
//! compaction ends only the watches it overtook.

use std::time::{Duration, Instant};

use coord_core::{
    BackendExt, CoordinationBackend, Error, NO_LEASE, WatchRequest, WatchResponse, WatchStream,
};
use coord_etcd::{EtcdBackend, EtcdOptions};
use coord_testkit::FaultProxy;
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod support;
use support::own_server::{backend, local_etcd};

/// One gauge from etcd's `/metrics` on its client URL (`http://host:port`).
async fn gauge(url: &str, name: &str) -> f64 {
    let addr = url.trim_start_matches("http://");
    let mut conn = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect to etcd's client URL");
    conn.write_all(format!("GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut body = String::new();
    conn.read_to_string(&mut body).await.unwrap();
    body.lines()
        .find_map(|line| {
            let (metric, value) = line.split_once(' ')?;
            (metric == name).then(|| value.trim().parse().expect("a number"))
        })
        .unwrap_or_else(|| panic!("etcd reports no {name}"))
}

const STREAMS: &str = "etcd_debugging_mvcc_watch_stream_total";
const WATCHERS: &str = "etcd_debugging_mvcc_watcher_total";

/// Polls `gauge` until it equals `want` (etcd updates them asynchronously), for 10 s.
async fn gauge_becomes(url: &str, name: &str, want: f64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = gauge(url, name).await;
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name} stayed at {got}, expected {want}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn next(w: &mut WatchStream) -> WatchResponse {
    tokio::time::timeout(Duration::from_secs(10), w.next())
        .await
        .expect("a watch response within 10 s")
        .expect("stream not ended")
        .expect("no error")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_watches_share_one_stream_and_dropped_ones_are_cancelled() {
    let Some(server) = local_etcd().await else {
        return;
    };
    let url = server.url();
    let b = backend(&server).await;
    assert_eq!(gauge(&url, STREAMS).await, 0.0);
    let mut watches = Vec::new();
    for i in 0..100 {
        // Clones share the backend's stream.
        let client = b.clone();
        watches.push(
            client
                .watch(WatchRequest::key(format!("k{i}")))
                .await
                .unwrap(),
        );
    }
    assert_eq!(b.watch_streams_opened(), 1);
    assert_eq!(b.active_watches(), 100);
    gauge_becomes(&url, STREAMS, 1.0).await;
    gauge_becomes(&url, WATCHERS, 100.0).await;

    // Each watch gets the events of its own key only.
    let mut revisions = Vec::new();
    for i in (0..100).rev() {
        revisions.push(
            b.put(format!("k{i}").as_bytes(), b"v", NO_LEASE)
                .await
                .unwrap(),
        );
    }
    revisions.reverse();
    for (i, w) in watches.iter_mut().enumerate() {
        let resp = next(w).await;
        assert_eq!(resp.revision, revisions[i]);
        assert_eq!(resp.events.len(), 1);
        assert_eq!(resp.events[0].kv.key, format!("k{i}").as_bytes());
    }

    watches.truncate(40);
    gauge_becomes(&url, WATCHERS, 40.0).await;
    assert_eq!(b.active_watches(), 40);
    assert_eq!(gauge(&url, STREAMS).await, 1.0);
    // The survivors still get their events.
    let rev = b.put(b"k7", b"w", NO_LEASE).await.unwrap();
    assert_eq!(next(&mut watches[7]).await.revision, rev);
    assert_eq!(b.watch_streams_opened(), 1);

    drop(watches);
    gauge_becomes(&url, WATCHERS, 0.0).await;
    assert_eq!(b.active_watches(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_dropped_while_being_created_is_cancelled() {
    let Some(server) = local_etcd().await else {
        return;
    };
    let url = server.url();
    let b = backend(&server).await;
    let _kept = b.watch(WatchRequest::key("kept")).await.unwrap();
    for i in 0..20 {
        // Gives up on the creation at once: the dispatcher cancels what etcd creates.
        let creating = b.watch(WatchRequest::key(format!("gone{i}")));
        let _ = tokio::time::timeout(Duration::ZERO, creating).await;
    }
    gauge_becomes(&url, WATCHERS, 1.0).await;
    assert_eq!(b.active_watches(), 1);
}

/// Writes `rounds` versions of each of `keys`, retrying through outages (a put whose
/// answer was lost may have been applied: that is one more version).
async fn write_rounds(b: EtcdBackend, keys: Vec<String>, rounds: usize) {
    for round in 0..rounds {
        for key in &keys {
            loop {
                match b
                    .put(key.as_bytes(), format!("{round}").as_bytes(), NO_LEASE)
                    .await
                {
                    Ok(_) => break,
                    Err(e) => {
                        assert!(e.is_retryable(), "{e:?}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_stream_resumes_every_watch_without_gap_or_duplicate() {
    let Some(server) = local_etcd().await else {
        return;
    };
    let proxy = FaultProxy::start(server.endpoint())
        .await
        .expect("proxy starts");
    let watched = EtcdBackend::connect(EtcdOptions::new([proxy.addr().to_string()]))
        .await
        .expect("connect through the proxy");
    let direct = backend(&server).await;
    let keys: Vec<String> = (0..20).map(|i| format!("r{i}")).collect();
    let mut watches = Vec::new();
    for key in &keys {
        watches.push(watched.watch(WatchRequest::key(key.clone())).await.unwrap());
    }
    // The watches are read only at the end: the dispatcher queues their events meanwhile
    // and resumes them from what it queued.
    let writer = tokio::spawn(write_rounds(direct.clone(), keys.clone(), 30));
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.reset_all();
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.reset_all();
    writer.await.unwrap();
    for (key, w) in keys.iter().zip(&mut watches) {
        let last = direct.get(key.as_bytes()).await.unwrap().unwrap().version;
        assert!(last >= 30);
        let mut versions = Vec::new();
        let mut revisions = Vec::new();
        while versions.last() != Some(&last) {
            let resp = next(w).await;
            revisions.push(resp.revision);
            versions.extend(resp.events.iter().map(|e| e.kv.version));
        }
        // Every version of the key, in order, none missing, none twice.
        assert_eq!(versions, (1..=last).collect::<Vec<_>>(), "{key}");
        assert!(
            revisions.windows(2).all(|p| p[0] < p[1]),
            "{key}: {revisions:?}"
        );
    }
    assert!(
        watched.watch_streams_opened() >= 2,
        "the stream was re-opened: {}",
        watched.watch_streams_opened()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compacted_start_ends_only_that_watch() {
    let Some(server) = local_etcd().await else {
        return;
    };
    let url = server.url();
    let b = backend(&server).await;
    let mut live = b.watch(WatchRequest::key("live")).await.unwrap();
    let r1 = b.put(b"old", b"1", NO_LEASE).await.unwrap();
    let r2 = b.put(b"old", b"2", NO_LEASE).await.unwrap();
    b.compact(r2).await.unwrap();
    let mut old = b
        .watch(WatchRequest::key("old").from_revision(r1))
        .await
        .unwrap();
    let item = tokio::time::timeout(Duration::from_secs(10), old.next())
        .await
        .expect("an answer in time")
        .expect("an item");
    match item {
        Err(Error::Compacted { compact_revision }) => assert_eq!(compact_revision, Some(r2)),
        other => panic!("expected Compacted, got {other:?}"),
    }
    assert!(old.next().await.is_none());
    // The other watch on the stream goes on.
    let rev = b.put(b"live", b"x", NO_LEASE).await.unwrap();
    assert_eq!(next(&mut live).await.revision, rev);
    assert_eq!(b.watch_streams_opened(), 1);
    // The compacted watcher was cancelled on the server too.
    gauge_becomes(&url, WATCHERS, 1.0).await;
    assert_eq!(b.active_watches(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_behind_resumed_watches_ends_them_with_compacted() {
    let Some(server) = local_etcd().await else {
        return;
    };
    let proxy = FaultProxy::start(server.endpoint())
        .await
        .expect("proxy starts");
    let watched = EtcdBackend::connect(EtcdOptions::new([proxy.addr().to_string()]))
        .await
        .expect("connect through the proxy");
    let direct = backend(&server).await;
    let mut x = watched.watch(WatchRequest::key("x")).await.unwrap();
    let mut y = watched.watch(WatchRequest::key("y")).await.unwrap();
    let rx = direct.put(b"x", b"1", NO_LEASE).await.unwrap();
    assert_eq!(next(&mut x).await.revision, rx);
    // The stream stalls, history moves on and is compacted past both watches, then the
    // stream breaks: both resume from revisions etcd no longer has.
    proxy.blackhole();
    let r2 = direct.put(b"x", b"2", NO_LEASE).await.unwrap();
    direct.put(b"y", b"2", NO_LEASE).await.unwrap();
    direct.compact(r2 + 1).await.unwrap();
    proxy.reset_all();
    // The proxy aborts its connections asynchronously: healing at once could let the
    // stalled events through the old connection first.
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.heal();
    for w in [&mut x, &mut y] {
        let item = tokio::time::timeout(Duration::from_secs(15), w.next())
            .await
            .expect("an answer in time")
            .expect("an item");
        match item {
            Err(Error::Compacted { compact_revision }) => {
                assert_eq!(compact_revision, Some(r2 + 1));
            }
            other => panic!("expected Compacted, got {other:?}"),
        }
        assert!(w.next().await.is_none());
    }
    // A new watch works on the new stream.
    let mut z = watched.watch(WatchRequest::key("z")).await.unwrap();
    let rz = direct.put(b"z", b"1", NO_LEASE).await.unwrap();
    assert_eq!(next(&mut z).await.revision, rz);
    assert!(watched.watch_streams_opened() >= 2);
    assert_eq!(watched.active_watches(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_watch_fails_alone_and_the_others_go_on_without_gap() {
    const ROOT_PW: &str = "root-Secret-pw";
    const APP_PW: &str = "app-Secret-pw";
    let Some(server) = coord_testkit::EtcdServer::builder()
        .local_only()
        .timing(Duration::from_millis(100), Duration::from_secs(1))
        .auth(ROOT_PW)
        .user("app", APP_PW, "app/")
        .start_or_skip()
        .await
    else {
        return;
    };
    let app = EtcdBackend::connect(EtcdOptions::new(server.urls()).user("app", APP_PW))
        .await
        .unwrap();
    let mut allowed = app.watch(WatchRequest::key("app/a")).await.unwrap();
    let r1 = app.put(b"app/a", b"1", NO_LEASE).await.unwrap();
    // Refused: the client authenticates again and re-opens the stream once (its token may
    // have been forgotten), and is refused again.
    let err = app.watch(WatchRequest::key("other/k")).await.unwrap_err();
    assert!(matches!(err, Error::PermissionDenied { .. }), "{err:?}");
    let r2 = app.put(b"app/a", b"2", NO_LEASE).await.unwrap();
    // The other watch saw both writes, once each, across the re-opened stream.
    assert_eq!(next(&mut allowed).await.revision, r1);
    assert_eq!(next(&mut allowed).await.revision, r2);
    let r3 = app.put(b"app/a", b"3", NO_LEASE).await.unwrap();
    assert_eq!(next(&mut allowed).await.revision, r3);
    assert_eq!(app.active_watches(), 1);
}
