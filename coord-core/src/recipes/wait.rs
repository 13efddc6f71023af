//! Waiting for one's turn in a queue of keys ordered by create revision.

use std::time::Duration;

use futures::StreamExt;

use super::own_key::OwnedKey;
use crate::{
    Error, Event, EventKind, KeyValue, RangeRequest, Result, Revision, TxnOp, TxnRequest,
    WatchRequest, WatchResponse, WatchStream,
};

/// Waits until the query `predecessor(my_rev - 1)` finds no key: every key that blocks us
/// (older than ours, in the blocking set) is gone. Waits on the immediate predecessor only,
/// so a release wakes one waiter, not all.
///
/// Fixes of etcd's known recipe bugs live here:
/// - the own key is checked in the same read that finds no predecessor, so success is
///   never reported for a key that expired while waiting (etcd #9921, #11007);
/// - the wait ends as soon as the own key is deleted or the session is lost (#19597), and
///   every call on the way races the session's loss, so a call that never answers cannot
///   hold the waiter past the session's deadline;
/// - the predecessor's *create revision* is compared, so a predecessor deleted and
///   re-created under the same key by the same session is noticed;
/// - watches start "now" and the state is re-read afterwards, so etcd never serves them
///   from its 100 ms catch-up loop for past revisions;
/// - a watch that breaks (`Compacted` after a restart past a compaction, or a retryable
///   error) is set up again from now and the state re-read, as a holder would carry on.
///
/// Returns the revision at which the turn was confirmed.
pub(crate) async fn wait_for_predecessors(
    own: &OwnedKey,
    predecessor: impl Fn(Revision) -> RangeRequest,
) -> Result<Revision> {
    let session = own.session();
    let backend = session.backend();
    let my_rev = own.create_revision();
    let lost = session.lost();
    tokio::pin!(lost);
    let mut pause = Backoff::default();
    'watch: loop {
        let mut own_watch = session
            .race(backend.watch(WatchRequest::key(own.key())))
            .await?;
        loop {
            let resp = session
                .race(backend.txn(TxnRequest::new().and_then([
                    TxnOp::range(RangeRequest::key(own.key())),
                    TxnOp::range(predecessor(my_rev - 1)),
                ])))
                .await?;
            check_own(own, resp.range(0)?.kvs.first())?;
            let Some(pred) = resp.range(1)?.kvs.first().cloned() else {
                return Ok(resp.revision);
            };
            let mut pred_watch = session
                .race(backend.watch(WatchRequest::key(pred.key.clone())))
                .await?;
            let recheck = session
                .race(backend.txn(TxnRequest::new().and_then([
                    TxnOp::range(RangeRequest::key(own.key())),
                    TxnOp::range(RangeRequest::key(pred.key.clone()).keys_only()),
                ])))
                .await?;
            check_own(own, recheck.range(0)?.kvs.first())?;
            if !same_incarnation(recheck.range(1)?.kvs.first(), &pred) {
                continue;
            }
            loop {
                tokio::select! {
                    biased;
                    _ = &mut lost => return Err(session.expired_error()),
                    next = own_watch.next() => match watched(next)? {
                        Some(resp) if deletes(&resp, own.key()) => return Err(lock_lost(own)),
                        Some(_) => {}
                        None => {
                            pause.wait(session).await?;
                            continue 'watch;
                        }
                    },
                    next = pred_watch.next() => match watched(next)? {
                        Some(resp) if predecessor_gone(&resp, &pred) => break,
                        Some(_) => {}
                        None => {
                            pause.wait(session).await?;
                            continue 'watch;
                        }
                    },
                }
            }
        }
    }
}

/// Waits until `ready()` gives a revision: re-evaluated after every DELETE under
/// `watch_prefix` (used where any of several keys may free the way, as for semaphores).
/// Races the session's loss and survives broken watches as [`wait_for_predecessors`] does.
pub(crate) async fn wait_for_deletes<F, Fut>(
    own: &OwnedKey,
    watch_prefix: &str,
    mut ready: F,
) -> Result<Revision>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<Revision>>>,
{
    let session = own.session();
    let backend = session.backend();
    let lost = session.lost();
    tokio::pin!(lost);
    let mut pause = Backoff::default();
    'watch: loop {
        let mut watch: WatchStream = session
            .race(backend.watch(WatchRequest::prefix(watch_prefix)))
            .await?;
        loop {
            if let Some(rev) = session.race(ready()).await? {
                return Ok(rev);
            }
            loop {
                tokio::select! {
                    biased;
                    _ = &mut lost => return Err(session.expired_error()),
                    next = watch.next() => match watched(next)? {
                        Some(resp) if deletes(&resp, own.key()) => return Err(lock_lost(own)),
                        Some(resp) if resp.events.iter().any(|e| e.kind == EventKind::Delete) => break,
                        Some(_) => {}
                        None => {
                            pause.wait(session).await?;
                            continue 'watch;
                        }
                    },
                }
            }
        }
    }
}

/// A watch item: `Ok(None)` when the watch broke in a way that watching again from now
/// (and re-reading) recovers from; other errors end the wait.
fn watched(next: Option<Result<WatchResponse>>) -> Result<Option<WatchResponse>> {
    match next {
        Some(Ok(resp)) => Ok(Some(resp)),
        None => Ok(None),
        Some(Err(e)) if e.is_retryable() || matches!(e, Error::Compacted { .. }) => {
            tracing::debug!(error = %e, "a waiter's watch broke; watching again from now");
            Ok(None)
        }
        Some(Err(e)) => Err(e),
    }
}

/// A growing pause between attempts to watch again, so a watch that keeps breaking does
/// not spin.
struct Backoff(Duration);

impl Default for Backoff {
    fn default() -> Self {
        Backoff(Duration::from_millis(10))
    }
}

impl Backoff {
    async fn wait(&mut self, session: &super::Session) -> Result<()> {
        let pause = self.0;
        self.0 = (self.0 * 2).min(Duration::from_secs(1));
        session
            .race(async {
                tokio::time::sleep(pause).await;
                Ok(())
            })
            .await
    }
}

pub(crate) fn check_own(own: &OwnedKey, current: Option<&KeyValue>) -> Result<()> {
    match current {
        Some(kv) if kv.create_revision == own.create_revision() => Ok(()),
        _ => Err(lock_lost(own)),
    }
}

fn lock_lost(own: &OwnedKey) -> Error {
    if own.session().is_lost() {
        own.session().expired_error()
    } else {
        Error::LockLost {
            key: own.key().to_owned(),
        }
    }
}

fn same_incarnation(current: Option<&KeyValue>, pred: &KeyValue) -> bool {
    current.is_some_and(|kv| kv.create_revision == pred.create_revision)
}

fn is_delete_of(event: &Event, key: &str) -> bool {
    event.kind == EventKind::Delete && event.kv.key == key.as_bytes()
}

fn deletes(resp: &WatchResponse, key: &str) -> bool {
    resp.events.iter().any(|e| is_delete_of(e, key))
}

fn predecessor_gone(resp: &WatchResponse, pred: &KeyValue) -> bool {
    resp.events.iter().any(|e| match e.kind {
        EventKind::Delete => true,
        EventKind::Put => e.kv.create_revision != pred.create_revision,
    })
}
