//! Waiting for one's turn in a queue of keys ordered by create revision.

use futures::StreamExt;

use super::own_key::OwnedKey;
use crate::{
    Error, Event, EventKind, KeyValue, RangeRequest, Result, Revision, TxnOp, TxnRequest,
    WatchRequest, WatchStream,
};

/// Waits until the query `predecessor(my_rev - 1)` finds no key: every key that blocks us
/// (older than ours, in the blocking set) is gone. Waits on the immediate predecessor only,
/// so a release wakes one waiter, not all.
///
/// Fixes of etcd's known recipe bugs live here:
/// - the own key is checked in the same read that finds no predecessor, so success is
///   never reported for a key that expired while waiting (etcd #9921, #11007);
/// - the wait ends as soon as the own key is deleted or the session is lost (#19597);
/// - the predecessor's *create revision* is compared, so a predecessor deleted and
///   re-created under the same key by the same session is noticed (bug 5);
/// - watches start "now" and the state is re-read afterwards, so etcd never serves them
///   from its 100 ms catch-up loop for past revisions.
///
/// Returns the revision at which the turn was confirmed.
pub(crate) async fn wait_for_predecessors(
    own: &OwnedKey,
    predecessor: impl Fn(Revision) -> RangeRequest,
) -> Result<Revision> {
    let session = own.session();
    let backend = &session.inner().backend;
    let my_rev = own.create_revision();
    let mut own_watch = backend.watch(WatchRequest::key(own.key())).await?;
    let lost = session.lost();
    tokio::pin!(lost);
    loop {
        let resp = backend
            .txn(TxnRequest::new().and_then([
                TxnOp::range(RangeRequest::key(own.key())),
                TxnOp::range(predecessor(my_rev - 1)),
            ]))
            .await?;
        check_own(own, resp.range(0)?.kvs.first())?;
        let Some(pred) = resp.range(1)?.kvs.first().cloned() else {
            return Ok(resp.revision);
        };
        let mut pred_watch = backend.watch(WatchRequest::key(pred.key.clone())).await?;
        let recheck = backend
            .txn(TxnRequest::new().and_then([
                TxnOp::range(RangeRequest::key(own.key())),
                TxnOp::range(RangeRequest::key(pred.key.clone()).keys_only()),
            ]))
            .await?;
        check_own(own, recheck.range(0)?.kvs.first())?;
        if !same_incarnation(recheck.range(1)?.kvs.first(), &pred) {
            continue;
        }
        loop {
            tokio::select! {
                biased;
                _ = &mut lost => return Err(session.expired_error()),
                next = own_watch.next() => {
                    if deleted_or_ended(next, own.key())? {
                        return Err(lock_lost(own));
                    }
                }
                next = pred_watch.next() => {
                    if predecessor_gone(next, &pred)? {
                        break;
                    }
                }
            }
        }
    }
}

/// Waits until `ready(revision)` says the turn came: re-evaluated after every DELETE under
/// `watch_prefix` (used where any of several keys may free the way, as for semaphores).
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
    let backend = &session.inner().backend;
    let mut watch: WatchStream = backend.watch(WatchRequest::prefix(watch_prefix)).await?;
    let lost = session.lost();
    tokio::pin!(lost);
    loop {
        if let Some(rev) = ready().await? {
            return Ok(rev);
        }
        loop {
            tokio::select! {
                biased;
                _ = &mut lost => return Err(session.expired_error()),
                next = watch.next() => {
                    let resp = next.ok_or_else(|| Error::unavailable("watch ended while waiting"))??;
                    if resp.events.iter().any(|e| is_delete_of(e, own.key())) {
                        return Err(lock_lost(own));
                    }
                    if resp.events.iter().any(|e| e.kind == EventKind::Delete) {
                        break;
                    }
                }
            }
        }
    }
}

pub(crate) fn check_own(own: &OwnedKey, current: Option<&KeyValue>) -> Result<()> {
    match current {
        Some(kv) if kv.create_revision == own.create_revision() => Ok(()),
        _ if own.session().is_lost() => Err(own.session().expired_error()),
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

type WatchItem = Option<Result<crate::WatchResponse>>;

fn deleted_or_ended(next: WatchItem, key: &str) -> Result<bool> {
    let resp = next.ok_or_else(|| Error::unavailable("watch on own key ended while waiting"))??;
    Ok(resp.events.iter().any(|e| is_delete_of(e, key)))
}

fn predecessor_gone(next: WatchItem, pred: &KeyValue) -> Result<bool> {
    let resp =
        next.ok_or_else(|| Error::unavailable("watch on predecessor ended while waiting"))??;
    Ok(resp.events.iter().any(|e| match e.kind {
        EventKind::Delete => true,
        EventKind::Put => e.kv.create_revision != pred.create_revision,
    }))
}
