//! Watches under load on real redis-servers (real time): every watch of a backend shares
//! one blocking reader, writers are never held up by it, and no watch ever skips or
//! repeats an event. Most tests use the binary's shared server (a namespace each); those
//! that count or kill the server's connections, or flush it, start a server of their own.

// Only the shared server is used here; the conformance factory beside it is not.
#[allow(dead_code)]
mod support;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use coord_core::{
    CoordinationBackend, Error, EventKind, Revision, TxnOp, TxnRequest, WatchRequest,
    WatchResponse, WatchStream,
};
use coord_redis::{RedisBackend, RedisOptions, WATCH_BUFFER};
use coord_testkit::RedisServer;
use futures::StreamExt;
use support::shared_redis;

/// Generous bound on anything that should take a few seconds; not a speed assertion.
const BOUND: Duration = Duration::from_secs(60);

async fn put(backend: &RedisBackend, key: String, value: &str) -> Revision {
    let response = backend
        .txn(TxnRequest::new().and_then([TxnOp::put(key.into_bytes(), value.as_bytes().to_vec())]))
        .await
        .expect("put");
    assert!(response.succeeded);
    response.revision
}

/// Reads `count` events off `watch` (within [`BOUND`]), with their revisions.
async fn collect(watch: &mut WatchStream, count: usize) -> Vec<(Revision, Vec<u8>)> {
    let mut seen = Vec::with_capacity(count);
    let deadline = tokio::time::Instant::now() + BOUND;
    while seen.len() < count {
        let response: WatchResponse = tokio::time::timeout_at(deadline, watch.next())
            .await
            .unwrap_or_else(|_| panic!("only {} of {count} events within {BOUND:?}", seen.len()))
            .expect("the watch goes on")
            .expect("no watch error");
        assert!(!response.events.is_empty(), "a response without events");
        for event in response.events {
            assert_eq!(event.kind, EventKind::Put);
            assert_eq!(event.kv.mod_revision, response.revision);
            seen.push((response.revision, event.kv.key));
        }
    }
    seen
}

/// The next item of `watch`, which must be an error, within [`BOUND`].
async fn ending_error(watch: &mut WatchStream) -> Error {
    loop {
        match tokio::time::timeout(BOUND, watch.next()).await {
            Err(_) => panic!("the watch did not end within {BOUND:?}"),
            Ok(None) => panic!("the watch ended without an error"),
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(e))) => return e,
        }
    }
}

/// A server of this test's own, for tests that count, kill or flush connections and data.
async fn own_server() -> Option<(RedisServer, RedisBackend)> {
    let server = RedisServer::builder().local_only().start_or_skip().await?;
    let backend = connect(&server).await;
    Some((server, backend))
}

async fn connect(server: &RedisServer) -> RedisBackend {
    let namespace = server.namespace().replace(['{', '}'], "");
    let options = RedisOptions::parse_url(&server.url())
        .and_then(|o| o.namespace(namespace))
        .expect("the fixture's URL parses");
    RedisBackend::connect(options).await.expect("connect")
}

async fn connected_clients(server: &RedisServer) -> usize {
    let info = server
        .cli(&["INFO", "clients"])
        .await
        .expect("INFO clients");
    info.lines()
        .find_map(|l| l.trim().strip_prefix("connected_clients:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no connected_clients in {info:?}"))
}

/// Waits (within [`BOUND`]) until the server has at most `most` clients.
async fn until_clients_at_most(server: &RedisServer, most: usize) -> usize {
    let deadline = Instant::now() + BOUND;
    loop {
        let now = connected_clients(server).await;
        if now <= most || Instant::now() > deadline {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_watchers_share_one_reader_and_do_not_stall_a_thousand_txns() {
    let Some((server, backend)) = own_server().await else {
        return;
    };
    // The redis-cli of the count itself is one of them.
    let before = connected_clients(&server).await;
    let mut watches = Vec::new();
    for _ in 0..50 {
        watches.push(
            backend
                .watch(WatchRequest::prefix("load/"))
                .await
                .expect("watch"),
        );
    }
    let with_watches = connected_clients(&server).await;
    eprintln!("connected clients: {before} before the backend's watches, {with_watches} with 50");
    assert!(
        with_watches <= before + 4,
        "50 watches of one backend hold {} connections (before: {before}, with them: \
         {with_watches}); they should share one reader",
        with_watches.saturating_sub(before - 1),
    );

    let started = Instant::now();
    let readers: Vec<_> = watches
        .into_iter()
        .map(|mut watch| {
            tokio::spawn(async move {
                let seen = collect(&mut watch, 1000).await;
                (seen, watch)
            })
        })
        .collect();
    let mut revisions = Vec::with_capacity(1000);
    for i in 0..1000 {
        revisions.push(
            tokio::time::timeout(BOUND, put(&backend, format!("load/{i:04}"), "v"))
                .await
                .unwrap_or_else(|_| panic!("txn {i} did not complete within {BOUND:?}")),
        );
    }
    let written = started.elapsed();
    let expected: Vec<(Revision, Vec<u8>)> = revisions
        .iter()
        .enumerate()
        .map(|(i, r)| (*r, format!("load/{i:04}").into_bytes()))
        .collect();
    let mut watches = Vec::new();
    for reader in readers {
        let (seen, watch) = reader.await.expect("watcher task");
        assert_eq!(
            seen, expected,
            "a watcher saw other events than the writes, in order"
        );
        watches.push(watch);
    }
    eprintln!(
        "50 watchers: 1000 txns written in {written:?}, all delivered to every watcher in {:?}",
        started.elapsed()
    );
    assert!(started.elapsed() < BOUND);

    // The last watch to go stops the reader and closes its connection: only the shared
    // one is left.
    drop(watches);
    let after = until_clients_at_most(&server, before + 1).await;
    assert!(
        after <= before + 1,
        "after every watch is dropped the backend still holds {} connections",
        after.saturating_sub(before - 1)
    );
    // And the next watch starts a new reader.
    let mut watch = backend
        .watch(WatchRequest::prefix("load/"))
        .await
        .expect("watch");
    let revision = put(&backend, "load/again".into(), "v").await;
    assert_eq!(
        collect(&mut watch, 1).await,
        vec![(revision, b"load/again".to_vec())]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_clients_writing_see_rising_revisions_and_every_watcher_sees_every_event_once() {
    let Some(shared) = shared_redis().await else {
        return;
    };
    const CLIENTS: usize = 16;
    const WRITES: usize = 40;
    let namespace = shared.fresh_namespace();
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        clients.push(shared.connect(&namespace).await);
    }
    let mut watches = Vec::new();
    for client in &clients {
        watches.push(
            client
                .watch(WatchRequest::prefix("c/"))
                .await
                .expect("watch"),
        );
    }
    let readers: Vec<_> = watches
        .into_iter()
        .map(|mut watch| tokio::spawn(async move { collect(&mut watch, CLIENTS * WRITES).await }))
        .collect();
    let writers: Vec<_> = clients
        .iter()
        .cloned()
        .enumerate()
        .map(|(c, client)| {
            tokio::spawn(async move {
                let mut revisions = Vec::new();
                for w in 0..WRITES {
                    revisions.push(put(&client, format!("c/{c:02}/{w:03}"), "v").await);
                }
                revisions
            })
        })
        .collect();
    let mut all_revisions = Vec::new();
    for writer in writers {
        let revisions = tokio::time::timeout(BOUND, writer)
            .await
            .expect("writers finish")
            .expect("writer task");
        assert!(
            revisions.windows(2).all(|w| w[0] < w[1]),
            "a client's revisions did not strictly rise: {revisions:?}"
        );
        all_revisions.extend(revisions);
    }
    all_revisions.sort_unstable();
    for reader in readers {
        let seen = reader.await.expect("watcher task");
        let revisions: Vec<Revision> = seen.iter().map(|(r, _)| *r).collect();
        assert_eq!(
            revisions, all_revisions,
            "a watcher's revisions are not every write's, each once, in order"
        );
        let keys: HashSet<&Vec<u8>> = seen.iter().map(|(_, k)| k).collect();
        assert_eq!(keys.len(), CLIENTS * WRITES, "a watcher saw a key twice");
        // Each client's writes arrive in the order it made them.
        for c in 0..CLIENTS {
            let own: Vec<&Vec<u8>> = seen
                .iter()
                .map(|(_, k)| k)
                .filter(|k| k.starts_with(format!("c/{c:02}/").as_bytes()))
                .collect();
            let mut sorted = own.clone();
            sorted.sort();
            assert_eq!(own, sorted, "client {c}'s writes arrived out of order");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_that_falls_behind_its_buffer_gets_compacted_and_others_go_on() {
    let Some(shared) = shared_redis().await else {
        return;
    };
    let backend = shared.connect(&shared.fresh_namespace()).await;
    let mut idle = backend
        .watch(WatchRequest::prefix("b/"))
        .await
        .expect("watch");
    let mut busy = backend
        .watch(WatchRequest::prefix("b/"))
        .await
        .expect("watch");
    let writes = WATCH_BUFFER + 100;
    let reader = tokio::spawn(async move { collect(&mut busy, writes).await });
    let mut written = Vec::with_capacity(writes);
    for i in 0..writes {
        written.push(put(&backend, format!("b/{i:05}"), "v").await);
    }
    let seen = reader.await.expect("busy watcher");
    assert_eq!(
        seen.len(),
        writes,
        "the watcher that kept up saw every write"
    );

    // The idle one gets what was buffered for it, in order and without a gap, then the
    // error: never a silent gap.
    let mut next = written.iter();
    let error = loop {
        match tokio::time::timeout(BOUND, idle.next())
            .await
            .expect("an item")
        {
            Some(Ok(response)) => {
                assert_eq!(
                    Some(&response.revision),
                    next.next(),
                    "a gap in the idle watcher's events"
                );
            }
            Some(Err(e)) => break e,
            None => panic!("the idle watcher ended without an error"),
        }
    };
    assert!(
        matches!(error, Error::Compacted { compact_revision: Some(r) } if r >= 1),
        "{error:?}"
    );
    let delivered = writes - next.len();
    assert!(
        delivered <= WATCH_BUFFER && delivered < writes,
        "the idle watcher got {delivered} of {writes} events before its error"
    );
    assert!(
        idle.next().await.is_none(),
        "the watch ends after its error"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_restarted_behind_a_compaction_gets_compacted_but_a_live_one_loses_nothing() {
    let Some(shared) = shared_redis().await else {
        return;
    };
    let backend = shared.connect(&shared.fresh_namespace()).await;
    let mut live = backend
        .watch(WatchRequest::prefix("k/"))
        .await
        .expect("watch");
    let start = live.start_revision();
    let mut revisions = Vec::new();
    for i in 0..20 {
        revisions.push(put(&backend, format!("k/{i:02}"), "v").await);
    }
    let last = *revisions.last().expect("writes");
    // The live watch has them all before the compaction: a reader still behind it would
    // rightly end with Compacted (the entries it had not read are gone).
    let seen = collect(&mut live, 20).await;
    assert_eq!(seen.iter().map(|(r, _)| *r).collect::<Vec<_>>(), revisions);
    backend.compact(last).await.expect("compact");

    // A watch resumed from where the live one started is behind the compaction.
    let mut resumed = backend
        .watch(WatchRequest::prefix("k/").from_revision(start))
        .await
        .expect("watch");
    let error = ending_error(&mut resumed).await;
    assert!(
        matches!(error, Error::Compacted { compact_revision: Some(r) } if r == last),
        "{error:?}"
    );
    // From the compact revision on it works, and the live watch goes on.
    let mut from_compact = backend
        .watch(WatchRequest::prefix("k/").from_revision(last))
        .await
        .expect("watch");
    let next = put(&backend, "k/next".into(), "v").await;
    assert_eq!(
        collect(&mut from_compact, 2).await,
        vec![(last, b"k/19".to_vec()), (next, b"k/next".to_vec())]
    );
    assert_eq!(
        collect(&mut live, 1).await,
        vec![(next, b"k/next".to_vec())]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_reader_connection_ends_every_watch_unavailable_and_the_next_watch_reads_again() {
    let Some((server, backend)) = own_server().await else {
        return;
    };
    let mut first = backend
        .watch(WatchRequest::prefix("r/"))
        .await
        .expect("watch");
    let mut second = backend
        .watch(WatchRequest::key("r/x"))
        .await
        .expect("watch");
    let revision = put(&backend, "r/x".into(), "1").await;
    assert_eq!(
        collect(&mut first, 1).await,
        vec![(revision, b"r/x".to_vec())]
    );
    assert_eq!(
        collect(&mut second, 1).await,
        vec![(revision, b"r/x".to_vec())]
    );

    let clients = server.cli(&["CLIENT", "LIST"]).await.expect("CLIENT LIST");
    let readers: Vec<&str> = clients
        .lines()
        .filter(|l| l.contains("cmd=xread"))
        .filter_map(|l| l.split_whitespace().find_map(|f| f.strip_prefix("id=")))
        .collect();
    assert_eq!(readers.len(), 1, "one reader for two watches: {clients}");
    server
        .cli(&["CLIENT", "KILL", "ID", readers[0]])
        .await
        .expect("CLIENT KILL");

    for watch in [&mut first, &mut second] {
        let error = ending_error(watch).await;
        assert!(matches!(error, Error::Unavailable { .. }), "{error:?}");
        assert!(
            watch.next().await.is_none(),
            "the watch ends after its error"
        );
    }
    let mut again = backend
        .watch(WatchRequest::prefix("r/").from_revision(revision))
        .await
        .expect("watch after the reader failed");
    let next = put(&backend, "r/y".into(), "2").await;
    assert_eq!(
        collect(&mut again, 2).await,
        vec![(revision, b"r/x".to_vec()), (next, b"r/y".to_vec())]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flushed_log_ends_the_watch_with_a_data_loss_error() {
    let Some((server, backend)) = own_server().await else {
        return;
    };
    let mut watch = backend
        .watch(WatchRequest::prefix("f/"))
        .await
        .expect("watch");
    for i in 0..3 {
        put(&backend, format!("f/{i}"), "v").await;
    }
    collect(&mut watch, 3).await;
    server.cli(&["FLUSHALL"]).await.expect("FLUSHALL");
    // A new client starts the namespace again (a new epoch) and writes: the old watch must
    // not take the new log for the continuation of its own.
    let fresh = connect(&server).await;
    put(&fresh, "f/after".into(), "v").await;
    let error = ending_error(&mut watch).await;
    assert!(
        matches!(&error, Error::Backend { message, .. } if message.contains("data loss")),
        "{error:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_every_backend_handle_ends_its_watches_with_an_error() {
    let Some(shared) = shared_redis().await else {
        return;
    };
    let backend = shared.connect(&shared.fresh_namespace()).await;
    let mut watch = backend
        .watch(WatchRequest::prefix("d/"))
        .await
        .expect("watch");
    let revision = put(&backend, "d/1".into(), "v").await;
    assert_eq!(
        collect(&mut watch, 1).await,
        vec![(revision, b"d/1".to_vec())]
    );
    drop(backend);
    // An error, never a silent end.
    let error = ending_error(&mut watch).await;
    assert!(matches!(error, Error::Unavailable { .. }), "{error:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revision_longer_than_one_read_arrives_in_one_response_live_and_replayed() {
    let Some(shared) = shared_redis().await else {
        return;
    };
    let backend = shared.connect(&shared.fresh_namespace()).await;
    // More keys than one XREAD (512) or one XRANGE page (1000) takes.
    const KEYS: usize = 1500;
    for chunk in (0..KEYS)
        .collect::<Vec<_>>()
        .chunks(coord_core::MAX_TXN_OPS)
    {
        let ops = chunk.iter().map(|i| TxnOp::put(format!("big/{i:04}"), "v"));
        let response = backend
            .txn(TxnRequest::new().and_then(ops))
            .await
            .expect("puts");
        assert!(response.succeeded);
    }
    let mut live = backend
        .watch(WatchRequest::prefix("big/"))
        .await
        .expect("watch");
    let deleted = backend
        .txn(
            TxnRequest::new().and_then([TxnOp::delete_range(coord_core::KeyRange::prefix("big/"))]),
        )
        .await
        .expect("delete the prefix")
        .revision;
    let next = put(&backend, "big/after".into(), "v").await;
    let mut replayed = backend
        .watch(WatchRequest::prefix("big/").from_revision(deleted))
        .await
        .expect("watch from the delete");
    for (name, watch) in [("live", &mut live), ("replayed", &mut replayed)] {
        let response = tokio::time::timeout(BOUND, watch.next())
            .await
            .expect("a response")
            .expect("the watch goes on")
            .expect("no error");
        assert_eq!(response.revision, deleted, "{name}");
        assert_eq!(
            response.events.len(),
            KEYS,
            "{name}: the delete's events came split over responses"
        );
        let keys: Vec<Vec<u8>> = response.events.iter().map(|e| e.kv.key.clone()).collect();
        let expected: Vec<Vec<u8>> = (0..KEYS)
            .map(|i| format!("big/{i:04}").into_bytes())
            .collect();
        assert_eq!(keys, expected, "{name}: the delete's events in key order");
        assert!(
            response.events.iter().all(|e| e.kind == EventKind::Delete),
            "{name}"
        );
        assert_eq!(
            collect(watch, 1).await,
            vec![(next, b"big/after".to_vec())],
            "{name}"
        );
    }
}
