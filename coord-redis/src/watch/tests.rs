//! The reader against a real redis-server: compaction past what it has read is a gap it
//! must report, compaction behind it is not.

use std::sync::Arc;

use coord_core::{CoordinationBackend, Error, KeyRange, Revision, TxnOp, TxnRequest};
use coord_testkit::RedisServer;

use super::entry::EntryId;
use super::hub::{Feed, Subscription};
use super::reader::Reader;
use crate::{RedisBackend, RedisOptions};

/// A server with ten writes under `k/` and a compaction to the eighth: the backend, a
/// plain connection for a reader, the namespace's key prefix and the ten revisions.
async fn compacted_log() -> Option<(
    RedisServer,
    RedisBackend,
    redis::aio::MultiplexedConnection,
    String,
    Vec<Revision>,
)> {
    let server = RedisServer::builder().local_only().start_or_skip().await?;
    let namespace = "reader-test";
    let options = RedisOptions::parse_url(&server.url())
        .and_then(|o| o.namespace(namespace))
        .expect("the fixture's URL parses");
    let backend = RedisBackend::connect(options).await.expect("connect");
    let mut revisions = Vec::new();
    for i in 0..10 {
        let response = backend
            .txn(TxnRequest::new().and_then([TxnOp::put(format!("k/{i}"), "v")]))
            .await
            .expect("put");
        revisions.push(response.revision);
    }
    backend.compact(revisions[7]).await.expect("compact");
    let conn = redis::Client::open(server.url())
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("reader connection");
    Some((server, backend, conn, format!("{{{namespace}}}"), revisions))
}

fn after(revision: Revision) -> EntryId {
    EntryId {
        revision,
        seq: u64::MAX,
    }
}

/// A feed with one watcher of `k/`, and its reader started as if it had read every entry
/// up to `revision`.
fn read_after(
    conn: redis::aio::MultiplexedConnection,
    prefix: &str,
    backend: &RedisBackend,
    revision: Revision,
) -> (Arc<Feed>, Subscription) {
    let feed = Arc::new(Feed::new());
    let subscription = feed.register(&KeyRange::prefix("k/")).expect("open feed");
    let reader = Reader::new(
        conn,
        prefix,
        backend.data_lost().clone(),
        after(revision),
        feed.clone(),
    );
    tokio::spawn(reader.run());
    (feed, subscription)
}

#[tokio::test]
async fn a_reader_behind_a_compaction_ends_its_watchers_compacted() {
    let Some((_server, backend, conn, prefix, revisions)) = compacted_log().await else {
        return;
    };
    // It had read only the first write: the second to the seventh were trimmed unread.
    let (feed, mut subscription) = read_after(conn, &prefix, &backend, revisions[0]);
    let error = subscription.recv().await.expect_err("a gap is an error");
    assert!(
        matches!(error, Error::Compacted { compact_revision: Some(r) } if r == revisions[7]),
        "{error:?}"
    );
    assert!(!feed.is_open(), "the feed stops with its reader");
}

#[tokio::test]
async fn a_reader_at_the_compaction_goes_on_without_a_gap() {
    let Some((_server, backend, conn, prefix, revisions)) = compacted_log().await else {
        return;
    };
    // Everything below the compact revision was read: nothing unread was trimmed.
    let (_feed, mut subscription) = read_after(conn, &prefix, &backend, revisions[6]);
    let entries = subscription.recv().await.expect("the rest of the log");
    let read: Vec<Revision> = entries.iter().map(|e| e.id.revision).collect();
    assert_eq!(read, revisions[7..]);
}
