//! Waiting for one's turn in a queue of keys ordered by create revision.

use futures::StreamExt;

use super::backoff::Backoff;
use super::own_key::OwnedKey;
use crate::{
    Error, Event, EventKind, KeyValue, RangeRequest, Result, Revision, TxnOp, TxnRequest,
    WatchRequest, WatchResponse,
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
///   error), or a call that fails in a way a retry may fix, is followed by a pause, a new
///   watch from now and a re-read: a waiter survives what a holder survives, and keeps its
///   place until its session is lost.
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
    let mut backoff = Backoff::default();
    'watch: loop {
        let own_watch = session
            .race(backend.watch(WatchRequest::key(own.key())))
            .await;
        let Some(mut own_watch) = recoverable(own_watch)? else {
            pause(&mut backoff, session).await?;
            continue 'watch;
        };
        loop {
            let read = session
                .race(backend.txn(TxnRequest::new().and_then([
                    TxnOp::range(RangeRequest::key(own.key())),
                    TxnOp::range(predecessor(my_rev - 1)),
                ])))
                .await;
            let Some(resp) = recoverable(read)? else {
                pause(&mut backoff, session).await?;
                continue 'watch;
            };
            check_own(own, resp.range(0)?.kvs.first())?;
            backoff.reset();
            let Some(pred) = resp.range(1)?.kvs.first().cloned() else {
                return Ok(resp.revision);
            };
            let set_up = async {
                let watch = session
                    .race(backend.watch(WatchRequest::key(pred.key.clone())))
                    .await?;
                let recheck = session
                    .race(backend.txn(TxnRequest::new().and_then([
                        TxnOp::range(RangeRequest::key(own.key())),
                        TxnOp::range(RangeRequest::key(pred.key.clone()).keys_only()),
                    ])))
                    .await?;
                Ok((watch, recheck))
            };
            let Some((mut pred_watch, recheck)) = recoverable(set_up.await)? else {
                pause(&mut backoff, session).await?;
                continue 'watch;
            };
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
                            pause(&mut backoff, session).await?;
                            continue 'watch;
                        }
                    },
                    next = pred_watch.next() => match watched(next)? {
                        Some(resp) if predecessor_gone(&resp, &pred) => break,
                        Some(_) => {}
                        None => {
                            pause(&mut backoff, session).await?;
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
/// Races the session's loss and survives broken watches and failed calls as
/// [`wait_for_predecessors`] does.
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
    let mut backoff = Backoff::default();
    'watch: loop {
        let watch = session
            .race(backend.watch(WatchRequest::prefix(watch_prefix)))
            .await;
        let Some(mut watch) = recoverable(watch)? else {
            pause(&mut backoff, session).await?;
            continue 'watch;
        };
        loop {
            match recoverable(session.race(ready()).await)? {
                Some(Some(rev)) => return Ok(rev),
                Some(None) => backoff.reset(),
                None => {
                    pause(&mut backoff, session).await?;
                    continue 'watch;
                }
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
                            pause(&mut backoff, session).await?;
                            continue 'watch;
                        }
                    },
                }
            }
        }
    }
}

/// Whether a waiter carries on after `error` by watching again from now and re-reading:
/// what a holder survives (a retryable failure, or a watch that resumed past a compaction),
/// a waiter survives too.
fn survivable(error: &Error) -> bool {
    error.is_retryable() || matches!(error, Error::Compacted { .. })
}

/// `Ok(None)` for an outcome the waiter survives ([`survivable`]); other errors end the wait.
fn recoverable<T>(outcome: Result<T>) -> Result<Option<T>> {
    match outcome {
        Ok(value) => Ok(Some(value)),
        Err(e) if survivable(&e) => {
            tracing::debug!(error = %e, "a waiter's call failed; watching again from now");
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// A watch item: `Ok(None)` when the watch broke in a way the waiter survives.
fn watched(next: Option<Result<WatchResponse>>) -> Result<Option<WatchResponse>> {
    match next {
        None => Ok(None),
        Some(item) => recoverable(item),
    }
}

/// The pause before watching again; `SessionExpired` if the session is lost meanwhile.
async fn pause(backoff: &mut Backoff, session: &super::Session) -> Result<()> {
    if backoff.sleep_unless_lost(&session.lost_signal()).await {
        Ok(())
    } else {
        Err(session.expired_error())
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
