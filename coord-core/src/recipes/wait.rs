//! Waiting for one's turn in a queue of keys ordered by create revision.

use futures::StreamExt;

use super::backoff::Backoff;
use super::kept_watch::Watching;
use super::own_key::{Claim, OwnedKey};
use super::queue::Queue;
use crate::{
    Error, Event, EventKind, KeyRange, KeyValue, RangeRequest, RangeResponse, Result, Revision,
    SortOrder, SortTarget, TxnOp, TxnRequest, WatchRequest, WatchResponse, WatchStream,
};

/// How many keys the claim's queue read returns: the own key and two older ones are enough
/// to tell whether exactly one key is ahead.
const QUEUE_READ_LIMIT: i64 = 3;

/// Up to this many keys in the queue, a waiter watches one range spanning its own key and
/// its predecessor, and is granted on the predecessor's DELETE without a read. Keys sort by
/// lease id, not by queue position, so that range also holds about a third of the other
/// waiters' keys, and every claim or release among them wakes this waiter for nothing:
/// with more keys queued, a waiter watches its predecessor's key and its own key apart
/// (two exact watches, nobody else's events) and confirms its turn with a read.
const SPANNING_QUEUE_LIMIT: i64 = 8;

/// The read a claim txn runs (after creating the own key) so that its waiter needs no
/// first read of its own: the newest keys under the blockers' prefix, newest first.
pub(crate) fn queue_read(blockers: &Queue) -> RangeRequest {
    RangeRequest::prefix(blockers.prefix.as_str())
        .sort(SortTarget::CreateRevision, SortOrder::Descend)
        .limit(QUEUE_READ_LIMIT)
        .keys_only()
}

/// What a waiter knows of the keys ahead of it (older, in its blocking set), as of one
/// revision at which its own key was alive.
pub(crate) struct Ahead {
    revision: Revision,
    /// The newest key older than the own key: the one to wait for.
    predecessor: Option<KeyValue>,
    /// Whether the predecessor is the only key ahead. Keys created later are younger, so
    /// the set of keys ahead only shrinks: once this one goes, nothing is ahead.
    only: bool,
    /// How many keys the read counted (a hint to choose the watch, never for safety).
    queued: i64,
}

impl Ahead {
    /// What the claim's [`queue_read`] (response `read`) tells. `None` when the claim
    /// adopted an existing key: the read may then show keys younger than it, so it says
    /// nothing certain about the keys ahead; and when keys of other names filled the read,
    /// so that a contender ahead may be missing from it.
    pub(crate) fn after_claim(claim: &Claim, read: &RangeResponse, queue: &Queue) -> Option<Ahead> {
        if !claim.created {
            return None;
        }
        let mine = claim.key.create_revision();
        let all_seen = (read.kvs.len() as i64) < QUEUE_READ_LIMIT;
        // A created key is the newest: every other contender the read returned is ahead of
        // it, and the newest of them is the predecessor (newest first: no contender between
        // it and the own key was cut off).
        let older: Vec<&KeyValue> = read
            .kvs
            .iter()
            .filter(|kv| kv.create_revision < mine && queue.contains(&kv.key))
            .collect();
        if older.is_empty() && !all_seen {
            return None;
        }
        Some(Ahead {
            revision: claim.revision,
            predecessor: older.first().map(|kv| (*kv).clone()),
            only: older.len() == 1 && all_seen,
            queued: read.count,
        })
    }

    /// Whether nothing is ahead: the turn is ours.
    pub(crate) fn is_clear(&self) -> bool {
        self.predecessor.is_none()
    }
}

/// Waits until no key under `blockers` is older than the own key: every key that blocks us
/// is gone. Waits on the immediate predecessor only, so a release wakes one waiter, not
/// all. `known` is what the claim txn saw (see [`Ahead::after_claim`]); without it the
/// wait starts with a read.
///
/// With a short queue ([`SPANNING_QUEUE_LIMIT`] keys), one watch covers the own key and the
/// predecessor (a key range spanning both), so their events arrive on one ordered stream.
/// When the predecessor was the only key ahead and its incarnation ends (DELETE, or a PUT
/// of another incarnation), the turn is granted on that event without another read,
/// provided the watch covers every revision since the own key was last known alive (so a
/// DELETE of the own key would have arrived first, or with it) and the session is not
/// lost. Otherwise the state is read again. With a longer queue the predecessor and the
/// own key are watched apart, and the turn is always confirmed by a read. The watch is
/// kept briefly for the session's next wait on the same key (see `kept_watch`).
///
/// Fixes of etcd's known recipe bugs live here:
/// - success is never reported for a key that expired while waiting (etcd #9921, #11007):
///   the own key is either checked in the read that finds no predecessor, or known alive
///   through the ordered stream as above;
/// - the wait ends as soon as the own key is deleted or the session is lost (#19597), and
///   every call on the way races the session's loss, so a call that never answers cannot
///   hold the waiter past the session's deadline;
/// - the predecessor's *create revision* is compared, so a predecessor deleted and
///   re-created under the same key by the same session is noticed;
/// - the watch starts "now" (never from a past revision, which etcd serves from its 100 ms
///   catch-up loop); when it starts after the known state, the state is read again;
/// - a watch that breaks (`Compacted` after a restart past a compaction, or a retryable
///   error), or a call that fails in a way a retry may fix, is followed by a pause, a new
///   watch from now and a re-read: a waiter survives what a holder survives, and keeps its
///   place until its session is lost.
///
/// Returns the revision at which the turn was confirmed.
pub(crate) async fn wait_for_predecessors(
    own: &OwnedKey,
    blockers: &Queue,
    known: Option<Ahead>,
) -> Result<Revision> {
    super::instrument::waiting();
    let session = own.session();
    let backend = session.backend();
    let my_rev = own.create_revision();
    let lost = session.lost();
    tokio::pin!(lost);
    let mut backoff = Backoff::default();
    let mut known = known;
    // The watch of this session's last wait on the same key, if it ended just now: under
    // contention the next wait often needs the same range (see `kept_watch`).
    let kept = &session.inner().kept_watches;
    let mut opened = 0u64;
    let mut watch: Option<Watching> = kept.take(own.key()).map(|mut w| {
        opened += 1;
        w.id = opened;
        w
    });
    // The watch that was open when the state was last read, if any.
    let mut read_under: Option<u64>;
    loop {
        let ahead = match known.take() {
            Some(ahead) => {
                read_under = None;
                ahead
            }
            None => {
                read_under = watch.as_ref().map(|w| w.id);
                let Some(ahead) = recoverable(read_ahead(own, blockers, my_rev).await)? else {
                    watch = None;
                    pause(&mut backoff, session).await?;
                    continue;
                };
                ahead
            }
        };
        let Some(pred) = ahead.predecessor else {
            if let Some(w) = watch {
                kept.keep(own.key(), w);
            }
            return Ok(ahead.revision);
        };
        if !watch.as_ref().is_some_and(|w| w.range.contains(&pred.key)) {
            let old = watch.take();
            let narrow = ahead.queued > SPANNING_QUEUE_LIMIT;
            let range = if narrow {
                KeyRange::key(pred.key.clone())
            } else {
                // A short queue's ranges grow to hold the keys seen before, so that the
                // watch, kept from wait to wait, soon covers every predecessor to come.
                let wanted = spanning(own.key().as_bytes(), &pred.key);
                match old.as_ref().filter(|w| w.own.is_none()) {
                    Some(w) => union(&w.range, &wanted),
                    None => wanted,
                }
            };
            // A narrow watch's own-key stream serves the next narrow one too; a spanning
            // watch covers the own key itself (and only then may grant without a read).
            let own_stream = old.and_then(|w| w.own).filter(|_| narrow);
            let stream = session
                .race(backend.watch(WatchRequest::new(range.clone())))
                .await;
            let Some(stream) = recoverable(stream)? else {
                pause(&mut backoff, session).await?;
                continue;
            };
            let own_stream = match own_stream {
                Some(s) => Some(s),
                None if narrow => {
                    let s = session
                        .race(backend.watch(WatchRequest::key(own.key())))
                        .await;
                    let Some(s) = recoverable(s)? else {
                        pause(&mut backoff, session).await?;
                        continue;
                    };
                    Some(s)
                }
                None => None,
            };
            opened += 1;
            watch = Some(Watching {
                id: opened,
                range,
                stream,
                taken: 0,
                own: own_stream,
            });
        }
        let w = watch.as_mut().expect("set above");
        // The watch must deliver every event after the known state, and none of them may
        // have been taken from it already.
        if w.stream.start_revision() > ahead.revision + 1 || w.taken > ahead.revision {
            if read_under == Some(w.id) {
                // A read made while this watch was open should be covered by it: start
                // afresh rather than read again and again.
                watch = None;
                pause(&mut backoff, session).await?;
            }
            // Read again, now that the watch is open.
            continue;
        }
        backoff.reset();
        let gone = loop {
            tokio::select! {
                biased;
                _ = &mut lost => return Err(session.expired_error()),
                // A narrow watch learns of a DELETE of the own key here, in no defined order
                // with the predecessor's events: it ends the wait, but the turn is always
                // confirmed by a read.
                next = next_of(&mut w.own) => match watched(next)? {
                    Some(resp) if resp.revision > ahead.revision && deletes(&resp, own.key()) => {
                        return Err(lock_lost(own));
                    }
                    Some(_) => {}
                    None => break None,
                },
                next = w.stream.next() => match watched(next)? {
                    Some(resp) => {
                        w.taken = resp.revision;
                        if resp.revision <= ahead.revision {
                            // Already part of the known state.
                            continue;
                        }
                        if deletes(&resp, own.key()) {
                            return Err(lock_lost(own));
                        }
                        if predecessor_gone(&resp, &pred) {
                            break Some(resp.revision);
                        }
                    }
                    None => break None,
                },
            }
        };
        let spans_own_key = watch.as_ref().is_some_and(|w| w.own.is_none());
        match gone {
            // The stream covered every revision since the own key was known alive and
            // showed no DELETE of it up to and with this one; the only key ahead is gone,
            // and no older key can appear: the turn is ours.
            Some(revision) if ahead.only && spans_own_key && !session.is_lost() => {
                if let Some(w) = watch {
                    kept.keep(own.key(), w);
                }
                return Ok(revision);
            }
            // Read again: others may be ahead still.
            Some(_) => {}
            None => {
                watch = None;
                pause(&mut backoff, session).await?;
            }
        }
    }
}

/// What is ahead of the own key, read now if the claim did not tell (`known` is `None`):
/// so that a time limit, which bounds only waiting for others, never cuts short finding out
/// whether there is anyone to wait for. `None` when that read failed in a way the waiter
/// survives (it then reads again, as it waits).
pub(crate) async fn resolve_ahead(
    own: &OwnedKey,
    blockers: &Queue,
    known: Option<Ahead>,
) -> Result<Option<Ahead>> {
    if known.is_some() {
        return Ok(known);
    }
    let read = read_ahead(own, blockers, own.create_revision()).await;
    recoverable(read)
}

/// Reads, at one revision, the own key (checked alive) and the two newest contenders ahead
/// of it; all contenders ahead when keys of other names crowd the limited read.
async fn read_ahead(own: &OwnedKey, blockers: &Queue, my_rev: Revision) -> Result<Ahead> {
    let session = own.session();
    let ahead = RangeRequest::last_created_before(blockers.prefix.as_str(), my_rev - 1)
        .keys_only()
        .limit(2);
    let mut read = ahead.clone();
    loop {
        let resp = session
            .race(session.backend().txn(TxnRequest::new().and_then([
                TxnOp::range(RangeRequest::key(own.key())),
                TxnOp::range(read.clone()),
            ])))
            .await?;
        check_own(own, resp.range(0)?.kvs.first())?;
        let found = resp.range(1)?;
        if let Some(older) = blockers.members(found) {
            return Ok(Ahead {
                revision: resp.revision,
                predecessor: older.first().cloned(),
                only: older.len() == 1,
                // Counted before the revision filter: every key under the prefix.
                queued: found.count,
            });
        }
        read = Queue::unlimited(ahead.clone());
    }
}

/// The next item of an optional stream; never, without one.
async fn next_of(stream: &mut Option<WatchStream>) -> Option<Result<WatchResponse>> {
    match stream {
        Some(s) => s.next().await,
        None => std::future::pending().await,
    }
}

/// The smallest `[start, end)` range holding both ranges (spanning ranges only).
fn union(a: &KeyRange, b: &KeyRange) -> KeyRange {
    match (a, b) {
        (KeyRange::Range { start: s1, end: e1 }, KeyRange::Range { start: s2, end: e2 }) => {
            KeyRange::range(s1.min(s2).clone(), e1.max(e2).clone())
        }
        _ => b.clone(),
    }
}

/// A key range that holds both keys (and whatever sorts between them).
fn spanning(a: &[u8], b: &[u8]) -> KeyRange {
    let (low, high) = if a <= b { (a, b) } else { (b, a) };
    let mut end = high.to_vec();
    end.push(0);
    KeyRange::range(low, end)
}

/// Waits until `ready()` gives a revision: re-evaluated after every DELETE under
/// `watch_prefix` (used where any of several keys may free the way, as for semaphores).
/// `not_ready_at` is a revision at which the claim txn found the own key alive and not
/// ready: when the watch covers every revision after it, the first `ready()` is skipped.
/// Races the session's loss and survives broken watches and failed calls as
/// [`wait_for_predecessors`] does.
pub(crate) async fn wait_for_deletes<F, Fut>(
    own: &OwnedKey,
    watch_prefix: &str,
    not_ready_at: Option<Revision>,
    mut ready: F,
) -> Result<Revision>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<Revision>>>,
{
    super::instrument::waiting();
    let session = own.session();
    let backend = session.backend();
    let lost = session.lost();
    tokio::pin!(lost);
    let mut backoff = Backoff::default();
    let mut not_ready_at = not_ready_at;
    'watch: loop {
        let watch = session
            .race(backend.watch(WatchRequest::prefix(watch_prefix)))
            .await;
        let Some(mut watch) = recoverable(watch)? else {
            pause(&mut backoff, session).await?;
            continue 'watch;
        };
        // Events up to here are part of the state `ready()` (or the claim) saw.
        let mut known_through = 0;
        if let Some(at) = not_ready_at.take()
            && watch.start_revision() <= at + 1
        {
            known_through = at;
        }
        loop {
            if known_through == 0 {
                match recoverable(session.race(ready()).await)? {
                    Some(Some(rev)) => return Ok(rev),
                    Some(None) => backoff.reset(),
                    None => {
                        pause(&mut backoff, session).await?;
                        continue 'watch;
                    }
                }
            }
            loop {
                tokio::select! {
                    biased;
                    _ = &mut lost => return Err(session.expired_error()),
                    next = watch.next() => match watched(next)? {
                        Some(resp) if resp.revision <= known_through => {}
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
            known_through = 0;
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

fn is_delete_of(event: &Event, key: &str) -> bool {
    event.kind == EventKind::Delete && event.kv.key == key.as_bytes()
}

fn deletes(resp: &WatchResponse, key: &str) -> bool {
    resp.events.iter().any(|e| is_delete_of(e, key))
}

/// Whether `resp` ends the predecessor's incarnation (other keys' events are ignored).
fn predecessor_gone(resp: &WatchResponse, pred: &KeyValue) -> bool {
    resp.events.iter().any(|e| {
        e.kv.key == pred.key
            && match e.kind {
                EventKind::Delete => true,
                EventKind::Put => e.kv.create_revision != pred.create_revision,
            }
    })
}
