//! The keys a session creates for its locks, permits and candidacies, and the rules that
//! keep them safe when answers are lost.
//!
//! **The holder is a handle, not a session.** Keys are per lease (`<name>/<lease hex>`,
//! etcd's layout), so a session has one key per name. Each key has a *slot* with a FIFO
//! *turn* that one user at a time owns: a handle that waits or holds, the release that
//! deletes the key, or the settling of a claim whose outcome is unknown. So two tasks of one
//! session exclude each other exactly as two sessions do, and each hold creates its own
//! incarnation of the key, with its own fencing token. Read holds are the one exception:
//! readers of one session may share a granted read key while no writer is queued behind it
//! ([`join_read`]).
//!
//! **Unknown outcomes.** A write whose answer was lost (an error, a timeout, a dropped
//! future) may still be applied later, after writes sent after it: an etcd follower whose
//! link to the leader is slow forwards it late. So:
//! - every delete names the incarnation it means (`create_revision`), never the lease alone;
//! - a claim of unknown outcome is *settled*: under the slot's turn, whatever incarnation it
//!   made is deleted, and then the key is watched for as long as the session lives, so that
//!   a late claim that lands while no handle holds the key is deleted as soon as its creation
//!   is seen (one watch event and two round trips). A late claim that lands while a handle
//!   of the session waits on or holds the key finds the key there and changes nothing.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::task::Poll;

use futures::StreamExt;
use tokio::sync::OwnedMutexGuard;
use tokio_util::sync::CancellationToken;

use super::Session;
use super::backoff::Backoff;
use super::hold::Deadline;
use super::session::LostSignal;
use crate::{
    BackendExt, Compare, CompareOp, CoordinationBackend, Error, EventKind, LeaseId, RangeRequest,
    Result, Revision, TxnOp, TxnOpResponse, TxnRequest, WatchRequest,
};

/// The slots of one session's keys. A slot is registered while anyone uses it, so the map
/// does not grow with the number of names ever used.
#[derive(Default)]
pub(crate) struct OwnKeys {
    slots: std::sync::Mutex<HashMap<Arc<str>, Arc<Slot>>>,
    /// Keys watched for late claims (see [`MAX_SETTLED_KEYS`]).
    settlers: Arc<AtomicUsize>,
}

struct Slot {
    /// The key, shared by the map entry and every [`SlotRef`].
    key: Arc<str>,
    /// One user of the key at a time, first come first served.
    turn: Arc<tokio::sync::Mutex<()>>,
    /// The granted read hold that other readers of the session may join.
    shared: std::sync::Mutex<Weak<Incarnation>>,
    /// Bumped when a read hold is published, to wake readers waiting for the turn. Made on
    /// first use: only read locks need it.
    published: OnceLock<tokio::sync::watch::Sender<u64>>,
    /// Whether a settler already watches this key for late claims.
    settling: AtomicBool,
    /// Handles of the session that wait for or hold the turn (not background work: a
    /// release or a settlement, which end by themselves).
    handles: Arc<AtomicUsize>,
    /// The [`SlotRef`]s of this slot: it is registered while there is one. A `SlotRef` is
    /// made from the map (under its lock) or from another `SlotRef` (which keeps the count
    /// above zero meanwhile), so only a count that reaches zero needs the map.
    refs: AtomicUsize,
}

impl OwnKeys {
    pub(crate) fn len(&self) -> usize {
        self.slots.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    fn slot(self: &Arc<Self>, key: &str) -> SlotRef {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let slot = match slots.get(key) {
            Some(slot) => slot.clone(),
            None => {
                let slot = Arc::new(Slot {
                    key: key.into(),
                    turn: Arc::default(),
                    shared: std::sync::Mutex::new(Weak::new()),
                    published: OnceLock::new(),
                    settling: AtomicBool::new(false),
                    handles: Arc::default(),
                    refs: AtomicUsize::new(0),
                });
                slots.insert(slot.key.clone(), slot.clone());
                slot
            }
        };
        slot.refs.fetch_add(1, Ordering::SeqCst);
        SlotRef {
            keys: self.clone(),
            slot: Some(slot),
        }
    }
}

impl Slot {
    fn published(&self) -> &tokio::sync::watch::Sender<u64> {
        self.published
            .get_or_init(|| tokio::sync::watch::Sender::new(0))
    }
}

/// Keeps a key's slot registered while a long-lived handle (a [`Mutex`](crate::Mutex))
/// may use it: so that a loop of acquisitions through one handle does not make and drop
/// the slot (its map entry and its turn) every time. It takes no turn.
pub(crate) struct KeyPin(SlotRef);

impl KeyPin {
    pub(crate) fn new(session: &Session, key: &str) -> Self {
        KeyPin(session.inner().keys.slot(key))
    }

    pub(crate) fn key(&self) -> &str {
        &self.0.get().key
    }
}

impl Clone for KeyPin {
    fn clone(&self) -> Self {
        KeyPin(self.0.share())
    }
}

impl std::fmt::Debug for KeyPin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("KeyPin").field(&self.0.get().key).finish()
    }
}

/// A use of a key's slot; the last one unregisters the slot.
struct SlotRef {
    keys: Arc<OwnKeys>,
    slot: Option<Arc<Slot>>,
}

impl SlotRef {
    fn get(&self) -> &Slot {
        self.slot.as_ref().expect("a slot is only taken on drop")
    }

    /// Another use of the slot: this one keeps it registered meanwhile, so the map is not
    /// needed.
    fn share(&self) -> SlotRef {
        let slot = self.slot.clone().expect("live");
        slot.refs.fetch_add(1, Ordering::SeqCst);
        SlotRef {
            keys: self.keys.clone(),
            slot: Some(slot),
        }
    }

    /// Waits for the turn for a handle, racing the session's loss.
    async fn take_turn(self, lost: &LostSignal, session: &Session) -> Result<Turn> {
        let handle = Counted::add(&self.get().handles);
        self.wait_turn(handle, lost, session).await
    }

    /// The turn for a handle if no other handle of the session waits for or holds it
    /// (waiting out a release or settlement in progress); `None` otherwise.
    async fn try_turn(self, lost: &LostSignal, session: &Session) -> Result<Option<Turn>> {
        let handles = self.get().handles.clone();
        if handles
            .compare_exchange(0, 1, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            return Ok(None);
        }
        self.wait_turn(Counted(handles), lost, session)
            .await
            .map(Some)
    }

    async fn wait_turn(
        self,
        handle: Counted,
        lost: &LostSignal,
        session: &Session,
    ) -> Result<Turn> {
        let turn = self.get().turn.clone();
        let guard = match turn.clone().try_lock_owned() {
            Ok(guard) => {
                // Taken without waiting, as `lock_owned` would have been, and like it this
                // counts against the task's budget, so that a loop of uncontended locks
                // on a backend that answers at once still lets other tasks run.
                tokio::task::coop::consume_budget().await;
                guard
            }
            Err(_) => {
                // Another task of the session has the key: this acquisition waits (boxed,
                // to keep the uncontended acquisition's future small).
                super::instrument::waiting();
                let wait = Box::pin(async {
                    tokio::select! {
                        biased;
                        _ = lost.clone().wait() => Err(session.expired_error()),
                        guard = turn.lock_owned() => Ok(guard),
                    }
                });
                wait.await?
            }
        };
        Ok(Turn {
            slot: self,
            _guard: guard,
            handle: Some(handle),
        })
    }
}

/// One count in a counter, given back on drop. It holds the counter, not the slot, so that
/// only [`SlotRef`]s (made under the map's lock) hold a slot.
struct Counted(Arc<AtomicUsize>);

impl Counted {
    fn add(counter: &Arc<AtomicUsize>) -> Self {
        counter.fetch_add(1, Ordering::SeqCst);
        Counted(counter.clone())
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Drop for SlotRef {
    fn drop(&mut self) {
        let Some(slot) = self.slot.take() else {
            return;
        };
        if slot.refs.fetch_sub(1, Ordering::SeqCst) != 1 {
            return;
        }
        // The last use, unless the map gave out another meanwhile: decided under its lock,
        // under which the map gives them out.
        let mut slots = self.keys.slots.lock().unwrap_or_else(|e| e.into_inner());
        if slot.refs.load(Ordering::SeqCst) == 0
            && slots.get(&slot.key).is_some_and(|s| Arc::ptr_eq(s, &slot))
        {
            slots.remove(&slot.key);
        }
    }
}

/// One user's turn at a key: no other user of the session touches the key meanwhile.
pub(crate) struct Turn {
    slot: SlotRef,
    _guard: OwnedMutexGuard<()>,
    /// Set while a handle (not background work) has the turn.
    handle: Option<Counted>,
}

impl Turn {
    /// The same turn, now held by background work that ends by itself.
    fn into_background(mut self) -> Turn {
        self.handle = None;
        self
    }
}

/// What [`claim`] found or made.
pub(crate) struct Claim {
    pub(crate) key: OwnedKey,
    /// Whether the txn created the key (rather than adopting one that existed).
    pub(crate) created: bool,
    /// The revision the txn answered at: its reads show the store as of then.
    pub(crate) revision: Revision,
    /// The key's value before the claim, when it already existed (a session resumed from
    /// its lease id, or a late claim of this session that landed).
    pub(crate) existing_value: Option<Vec<u8>>,
    /// The responses of the extra operations, in order.
    pub(crate) responses: Vec<TxnOpResponse>,
}

impl Claim {
    /// The range read by the `i`th extra operation.
    pub(crate) fn read(&self, i: usize) -> Result<crate::RangeResponse> {
        self.responses
            .get(i)
            .cloned()
            .and_then(TxnOpResponse::into_range)
            .ok_or_else(|| Error::contract("a txn answered a range with another response"))
    }

    /// [`Claim::read`] without the copy: the response is taken out (an empty read is left).
    pub(crate) fn take_read(&mut self, i: usize) -> Result<crate::RangeResponse> {
        self.responses
            .get_mut(i)
            .map(|r| std::mem::replace(r, TxnOpResponse::Range(Default::default())))
            .and_then(TxnOpResponse::into_range)
            .ok_or_else(|| Error::contract("a txn answered a range with another response"))
    }
}

/// Waits for this session's turn at `key`, then creates it with `value` on the session's
/// lease (or adopts it if it exists on the lease with no handle of this session holding
/// it), in one txn that also runs `extra` (reads that decide whether to wait). Every step
/// races the session's loss. `Ok(None)` when `deadline` passes while waiting for the turn
/// (the claim txn itself is never cut short by it).
pub(crate) async fn claim(
    session: &Session,
    key: String,
    value: &[u8],
    extra: Vec<TxnOp>,
    deadline: Deadline,
) -> Result<Option<Claim>> {
    let slot = session.inner().keys.slot(&key);
    claim_in(session, slot, key, value, extra, deadline).await
}

/// [`claim`] at the key a [`KeyPin`] keeps: its slot is found without the session's map.
pub(crate) async fn claim_pinned(
    session: &Session,
    pin: &KeyPin,
    value: &[u8],
    extra: Vec<TxnOp>,
    deadline: Deadline,
) -> Result<Option<Claim>> {
    let key = pin.key().to_owned();
    claim_in(session, pin.0.share(), key, value, extra, deadline).await
}

async fn claim_in(
    session: &Session,
    slot: SlotRef,
    key: String,
    value: &[u8],
    extra: Vec<TxnOp>,
    deadline: Deadline,
) -> Result<Option<Claim>> {
    let lost = session.lost_signal();
    let Some(turn) = deadline.bound(slot.take_turn(&lost, session)).await? else {
        return Ok(None);
    };
    claim_with_turn(session, key, turn, value, extra)
        .await
        .map(Some)
}

/// [`claim`] without waiting for the turn: `Ok(None)` when another task of the session
/// waits on, holds or is releasing the key.
pub(crate) async fn try_claim(
    session: &Session,
    key: String,
    value: &[u8],
    extra: Vec<TxnOp>,
) -> Result<Option<Claim>> {
    let slot = session.inner().keys.slot(&key);
    try_claim_in(session, slot, key, value, extra).await
}

/// [`try_claim`] at the key a [`KeyPin`] keeps.
pub(crate) async fn try_claim_pinned(
    session: &Session,
    pin: &KeyPin,
    value: &[u8],
    extra: Vec<TxnOp>,
) -> Result<Option<Claim>> {
    let key = pin.key().to_owned();
    try_claim_in(session, pin.0.share(), key, value, extra).await
}

async fn try_claim_in(
    session: &Session,
    slot: SlotRef,
    key: String,
    value: &[u8],
    extra: Vec<TxnOp>,
) -> Result<Option<Claim>> {
    let Some(turn) = slot.try_turn(&session.lost_signal(), session).await? else {
        return Ok(None);
    };
    claim_with_turn(session, key, turn, value, extra)
        .await
        .map(Some)
}

async fn claim_with_turn(
    session: &Session,
    key: String,
    turn: Turn,
    value: &[u8],
    extra: Vec<TxnOp>,
) -> Result<Claim> {
    // Built at its final size: no vector grows.
    let mut success = Vec::with_capacity(1 + extra.len());
    success.push(TxnOp::put_with_lease(key.as_str(), value, session.lease()));
    success.extend(extra.iter().cloned());
    let mut failure = Vec::with_capacity(1 + extra.len());
    failure.push(TxnOp::range(RangeRequest::key(key.as_str())));
    failure.extend(extra);
    let txn = TxnRequest {
        compares: vec![Compare::create_revision(key.as_str(), CompareOp::Equal, 0)],
        success,
        failure,
    };
    // Until the txn answers, the store may have created the key without us knowing.
    let mut pending = PendingClaim {
        session: session.clone(),
        key,
        turn: Some(turn),
    };
    // Through the `dyn` backend itself: the `Arc`'s forwarding impl would box the call's
    // future a second time.
    let outcome = session.race(session.backend().as_ref().txn(txn)).await;
    if let Err(e) = &outcome
        && !applied_maybe(e)
    {
        // Refused before anything was applied: nothing to settle.
        pending.turn = None;
    }
    let mut resp = outcome?;
    let turn = pending.turn.take().expect("armed until answered");
    let key = std::mem::take(&mut pending.key);
    if resp.responses.is_empty() {
        return Err(Error::contract(
            "a txn answered with fewer responses than it has operations",
        ));
    }
    let first = resp.responses.remove(0);
    let (create_revision, mod_revision, existing_value) = if resp.succeeded {
        (resp.revision, resp.revision, None)
    } else {
        let kv = first
            .into_range()
            .and_then(|mut r| r.kvs.pop())
            .ok_or_else(|| Error::contract("txn else-branch read of an existing key is empty"))?;
        if kv.lease != session.lease() {
            return Err(Error::invalid_argument(format!(
                "key {key:?} exists but is attached to lease {:x}, not this session's lease {:x}",
                kv.lease,
                session.lease()
            )));
        }
        (kv.create_revision, kv.mod_revision, Some(kv.value))
    };
    Ok(Claim {
        created: resp.succeeded,
        revision: resp.revision,
        key: OwnedKey::new(Incarnation {
            session: session.clone(),
            key,
            create_revision,
            mod_revision: std::sync::Mutex::new(Some(mod_revision)),
            open: AtomicBool::new(false),
            turn: Some(turn),
        }),
        existing_value,
        responses: resp.responses,
    })
}

/// A read lock's way in: join the session's granted read hold of `key` if no writer is
/// queued behind it (one round trip), else wait for the turn and claim the key anew (with
/// `extra` as in [`claim`]). While waiting for the turn, a read hold that another task of
/// the session gets granted meanwhile is joined instead.
///
/// Without `wait`, `Ok(None)` when it cannot join and another task of the session has the
/// turn; with it, `Ok(None)` when `deadline` passes while waiting for the turn.
pub(crate) async fn claim_read(
    session: &Session,
    key: String,
    writers: &str,
    extra: Vec<TxnOp>,
    wait: bool,
    deadline: Deadline,
) -> Result<Option<ReadClaim>> {
    let lost = session.lost_signal();
    let slot = session.inner().keys.slot(&key);
    let mut published = slot.get().published().subscribe();
    loop {
        published.borrow_and_update();
        if let Some(joined) = join_read(session, &slot, writers).await? {
            return Ok(Some(ReadClaim::Joined(joined)));
        }
        if !wait {
            let Some(turn) = slot.try_turn(&lost, session).await? else {
                return Ok(None);
            };
            let claim = claim_with_turn(session, key, turn, b"", extra).await?;
            return Ok(Some(ReadClaim::Claimed(claim)));
        }
        let waiting = slot.share();
        let next = deadline.bound(async {
            tokio::select! {
                biased;
                turn = waiting.take_turn(&lost, session) => turn.map(Some),
                _ = published.changed() => Ok(None),
            }
        });
        match next.await? {
            None => return Ok(None),
            Some(Some(turn)) => {
                let claim = claim_with_turn(session, key, turn, b"", extra).await?;
                return Ok(Some(ReadClaim::Claimed(claim)));
            }
            Some(None) => {}
        }
    }
}

/// What [`claim_read`] got.
pub(crate) enum ReadClaim {
    /// A share of a read hold the session already has: granted.
    Joined(OwnedKey),
    /// A new read key, which may still have to wait for older writers.
    Claimed(Claim),
}

/// Joins the session's granted read hold of the slot if it is still open and still alive,
/// and no writer (of any session) has queued behind it since; closes it to later readers
/// otherwise, so that a stream of overlapping readers cannot starve a writer.
async fn join_read(session: &Session, slot: &SlotRef, writers: &str) -> Result<Option<OwnedKey>> {
    // Only a weak reference across the check: its holders may let go meanwhile, and their
    // release must then really delete (and report) rather than leave it to this task.
    let shared = slot
        .get()
        .shared
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let Some((key, rev)) = shared
        .upgrade()
        .filter(|h| h.open.load(Ordering::SeqCst))
        .map(|h| (h.key.clone(), h.create_revision))
    else {
        return Ok(None);
    };
    let check = TxnRequest::new().and_then([
        TxnOp::range(RangeRequest::key(key.as_str())),
        TxnOp::range(
            RangeRequest::prefix(writers)
                .min_create_revision(rev + 1)
                .limit(1)
                .keys_only(),
        ),
    ]);
    let resp = session.race(session.backend().txn(check)).await?;
    let alive = resp
        .range(0)?
        .kvs
        .first()
        .is_some_and(|kv| kv.create_revision == rev);
    let writer_behind = !resp.range(1)?.kvs.is_empty();
    let Some(hold) = shared.upgrade() else {
        return Ok(None);
    };
    if !alive || writer_behind {
        hold.open.store(false, Ordering::SeqCst);
        return Ok(None);
    }
    if !hold.open.load(Ordering::SeqCst) {
        return Ok(None);
    }
    Ok(Some(OwnedKey {
        inc: Some(hold),
        released: OnceLock::new(),
    }))
}

/// One incarnation of a session key: created (or adopted) by one claim, deleted once by
/// the release of its last handle, which holds the slot's turn until the delete is settled.
struct Incarnation {
    session: Session,
    key: String,
    create_revision: Revision,
    /// The key's last known mod revision; `None` after a write of unknown outcome.
    mod_revision: std::sync::Mutex<Option<Revision>>,
    /// Whether other readers of the session may join (granted read holds only).
    open: AtomicBool,
    turn: Option<Turn>,
}

impl Drop for Incarnation {
    fn drop(&mut self) {
        let Some(turn) = self.turn.take() else {
            return;
        };
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(key = %self.key, "dropped outside a tokio runtime; the key stays until its lease ends");
            return;
        };
        rt.spawn(release(
            Releaser::of(&self.session),
            std::mem::take(&mut self.key),
            self.create_revision,
            turn.into_background(),
            None,
            None,
        ));
    }
}

/// One handle's hold of a session key. Dropping it lets go in the background; the key is
/// deleted when no handle holds it any more (several only for shared read holds).
pub(crate) struct OwnedKey {
    inc: Option<Arc<Incarnation>>,
    /// Cancelled when this handle lets go on purpose: its `lost()` then never fires. Made
    /// by the first `lost()`: a hold nobody asks about needs none.
    released: OnceLock<CancellationToken>,
}

impl OwnedKey {
    fn new(inc: Incarnation) -> Self {
        OwnedKey {
            inc: Some(Arc::new(inc)),
            released: OnceLock::new(),
        }
    }

    fn inc(&self) -> &Incarnation {
        self.inc.as_ref().expect("taken only by release")
    }

    pub(crate) fn key(&self) -> &str {
        &self.inc().key
    }

    pub(crate) fn create_revision(&self) -> Revision {
        self.inc().create_revision
    }

    pub(crate) fn session(&self) -> &Session {
        &self.inc().session
    }

    /// A compare that holds while this key still exists with the same create revision.
    pub(crate) fn is_owner(&self) -> Compare {
        Compare::create_revision(self.key(), CompareOp::Equal, self.create_revision())
    }

    /// Offers this granted read hold to other readers of the session.
    pub(crate) fn publish_read(&self) {
        let inc = self.inc.as_ref().expect("live");
        inc.open.store(true, Ordering::SeqCst);
        let slot = inc
            .turn
            .as_ref()
            .expect("a new hold has its turn")
            .slot
            .get();
        *slot.shared.lock().unwrap_or_else(|e| e.into_inner()) = Arc::downgrade(inc);
        slot.published().send_modify(|n| *n += 1);
    }

    /// Lets go of the key now, deleting it if no other handle holds it.
    ///
    /// The delete runs in the caller's task. If this call is dropped before the first
    /// attempt is answered, the rest of the work moves to a spawned task, so the key is
    /// still deleted. On a backend error a spawned task keeps retrying until it succeeds or
    /// the session ends; the first error is still reported here.
    ///
    /// # Errors
    /// [`Error::LockLost`] when this was the last handle and the key was already gone (or
    /// re-created) before the release: the caller had lost it. Any backend error of the
    /// first attempt.
    ///
    /// # Cancel safety
    /// Cancel safe: a dropped call finishes the release in the background.
    pub(crate) async fn release(mut self) -> Result<()> {
        self.let_go();
        let Some(inc) = self.inc.take() else {
            return Ok(());
        };
        let Ok(mut inc) = Arc::try_unwrap(inc) else {
            // Other readers of the session still hold the key: this hold ended.
            return Ok(());
        };
        let Some(turn) = inc.turn.take() else {
            return Ok(());
        };
        let ctx = Releaser::of(&inc.session);
        let key = std::mem::take(&mut inc.key);
        let rev = inc.create_revision;
        // The first attempt is polled once here: answered at once (the in-memory backend's
        // always are), the release is over without a boxed task or a channel. Otherwise it
        // goes on, in flight, as the first attempt of the full release below.
        let mut first = None;
        if !ctx.lost.is_lost() {
            let mut attempt = delete_attempt(&ctx, &key, rev);
            let polled = std::future::poll_fn(|cx| Poll::Ready(attempt.as_mut().poll(cx))).await;
            match polled {
                Poll::Ready(Ok(deleted)) => {
                    // Free the key for the next task of the session before the caller hears.
                    drop(turn);
                    return if deleted {
                        Ok(())
                    } else {
                        Err(Error::LockLost { key })
                    };
                }
                Poll::Ready(Err(e)) => {
                    first = Some(Box::pin(std::future::ready(Err(e))) as Attempt);
                }
                Poll::Pending => first = Some(attempt),
            }
        }
        let (report, mut outcome) = tokio::sync::oneshot::channel();
        let mut work = FinishOnDrop::new(release(
            ctx,
            key,
            rev,
            turn.into_background(),
            Some(report),
            first,
        ));
        let reported = tokio::select! {
            biased;
            // Every way out of the work reports first.
            () = work.run() => outcome.try_recv().ok(),
            // Reported, with retries still to come: they go on in the background when
            // `work` is dropped.
            reported = &mut outcome => reported.ok(),
        };
        drop(work);
        reported.unwrap_or_else(|| {
            Err(Error::unavailable(
                "the release ended without reporting its outcome",
            ))
        })
    }

    /// Resolves when this hold is lost: its key is gone (deleted, or its lease expired) or
    /// the session is lost. Never when the hold was let go on purpose.
    pub(crate) fn lost(&self) -> impl Future<Output = ()> + Send + 'static {
        let released = self.released.get_or_init(CancellationToken::new).clone();
        let lost = key_lost(
            self.session().clone(),
            self.key().to_owned(),
            self.create_revision(),
        );
        async move {
            tokio::select! {
                biased;
                _ = released.cancelled() => {}
                _ = lost => {
                    // The release marks the handle before it deletes: a delete seen here
                    // after that is the release's own.
                    if !released.is_cancelled() {
                        return;
                    }
                }
            }
            // Nothing of the session is kept while pending forever.
            std::future::pending::<()>().await;
        }
    }

    /// Replaces the key's value, if this incarnation still exists, in a way that a write of
    /// unknown outcome sent earlier can never land over: the put compares the mod revision
    /// it follows, read again when the last one is unknown.
    ///
    /// # Errors
    /// [`Error::LockLost`] when the key is gone or is another incarnation; any backend error
    /// (the outcome is then unknown).
    pub(crate) async fn put_value(&self, value: &[u8]) -> Result<()> {
        let inc = self.inc();
        let backend = inc.session.backend();
        let lost = || Error::LockLost {
            key: inc.key.clone(),
        };
        let known = *inc.mod_revision.lock().unwrap_or_else(|e| e.into_inner());
        let mut after = match known {
            Some(rev) => rev,
            None => match backend.get(inc.key.as_bytes()).await? {
                Some(kv) if kv.create_revision == inc.create_revision => kv.mod_revision,
                _ => return Err(lost()),
            },
        };
        loop {
            let txn = TxnRequest::new()
                .when([
                    self.is_owner(),
                    Compare::mod_revision(inc.key.as_str(), CompareOp::Equal, after),
                ])
                .and_then([TxnOp::put_with_lease(
                    inc.key.as_str(),
                    value,
                    inc.session.lease(),
                )])
                .or_else([TxnOp::range(RangeRequest::key(inc.key.as_str()))]);
            *inc.mod_revision.lock().unwrap_or_else(|e| e.into_inner()) = None;
            let resp = backend.txn(txn).await?;
            if resp.succeeded {
                *inc.mod_revision.lock().unwrap_or_else(|e| e.into_inner()) = Some(resp.revision);
                return Ok(());
            }
            match resp.range(0)?.kvs.first() {
                // Another write of ours landed since (a late one): follow it.
                Some(kv) if kv.create_revision == inc.create_revision => after = kv.mod_revision,
                _ => return Err(lost()),
            }
        }
    }
}

impl Drop for OwnedKey {
    fn drop(&mut self) {
        // Dropping a hold is letting go on purpose too.
        self.let_go();
    }
}

impl OwnedKey {
    /// Marks this handle as let go on purpose, for the `lost()` futures made from it.
    fn let_go(&self) {
        if let Some(released) = self.released.get() {
            released.cancel();
        }
    }
}

/// What a release needs of its session, without keeping the session alive.
struct Releaser {
    backend: Arc<dyn CoordinationBackend>,
    lost: LostSignal,
    /// How long one last delete may take once the session is lost.
    last_try: std::time::Duration,
}

impl Releaser {
    fn of(session: &Session) -> Self {
        Releaser {
            backend: session.backend().clone(),
            lost: session.lost_signal(),
            last_try: session.ttl() / 3,
        }
    }
}

/// Work that runs in the caller's task while it is polled, and moves to a spawned task if
/// it is dropped before it finished: a release must not stop halfway because its caller
/// went away, yet spawning it up front costs a task and a cross-thread wake-up per release.
struct FinishOnDrop(Option<std::pin::Pin<Box<dyn Future<Output = ()> + Send + 'static>>>);

impl FinishOnDrop {
    fn new(work: impl Future<Output = ()> + Send + 'static) -> Self {
        FinishOnDrop(Some(Box::pin(work)))
    }

    /// Drives the work to its end (it is then not spawned on drop).
    async fn run(&mut self) {
        if let Some(work) = self.0.as_mut() {
            work.await;
            self.0 = None;
        }
    }
}

impl Drop for FinishOnDrop {
    fn drop(&mut self) {
        let Some(work) = self.0.take() else {
            return;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => drop(rt.spawn(work)),
            Err(_) => {
                tracing::warn!(
                    "a release was dropped outside a tokio runtime; the key stays until its lease ends"
                );
            }
        }
    }
}

/// The last handle lets go of `key`: deletes it if it is still the incarnation created at
/// `rev`, retrying retryable errors with back-off while the session lives. Once the session
/// is lost the hold is over, but its lease may live on (orphaned, or until the server
/// notices): one last delete, bounded in time, frees the key for the next holder sooner.
/// The turn is held throughout, so a new claim of the key by this session waits for the
/// outcome. The outcome of the first attempt goes to `report`: `LockLost` when the key was
/// already gone, or the session was lost first.
async fn release(
    ctx: Releaser,
    key: String,
    rev: Revision,
    turn: Turn,
    mut report: Option<tokio::sync::oneshot::Sender<Result<()>>>,
    mut first: Option<Attempt>,
) {
    let mut send = |outcome: Result<()>| {
        if let Some(report) = report.take() {
            let _ = report.send(outcome);
        }
    };
    let lost_it = || Error::LockLost { key: key.clone() };
    let mut backoff = Backoff::default();
    let mut failures = 0u32;
    loop {
        let delete = first
            .take()
            .unwrap_or_else(|| delete_attempt(&ctx, &key, rev));
        let (outcome, lost) = if ctx.lost.is_lost() {
            match tokio::time::timeout(ctx.last_try, delete).await {
                Ok(outcome) => (outcome, true),
                Err(_) => return send(Err(lost_it())),
            }
        } else {
            tokio::select! {
                biased;
                outcome = delete => (outcome, false),
                // Lost while the delete hangs: the caller hears now; the next round is
                // the last try, in the background.
                _ = ctx.lost.clone().wait() => {
                    send(Err(lost_it()));
                    continue;
                }
            }
        };
        match outcome {
            Ok(deleted) => {
                // Free the key for the next task of the session before its caller hears.
                drop(turn);
                return send(if deleted && !lost {
                    Ok(())
                } else {
                    Err(lost_it())
                });
            }
            Err(e) if lost || !e.is_retryable() => {
                tracing::warn!(%key, error = %e, "release failed; the key stays until the session's lease ends");
                return send(Err(if lost { lost_it() } else { e }));
            }
            Err(e) => {
                failures += 1;
                if failures == RELEASE_FAILURES_TO_WARN {
                    tracing::warn!(%key, error = %e, failures, "release keeps failing; retrying in the background");
                } else {
                    tracing::debug!(%key, error = %e, failures, "release failed; retrying in the background");
                }
                send(Err(e));
                tokio::select! {
                    _ = tokio::time::sleep(backoff.pause()) => {}
                    _ = ctx.lost.clone().wait() => {}
                }
            }
        }
    }
}

/// After how many failed attempts in a row a release is logged at `warn`: one failure is
/// ordinary (a leader change, a reconnect) and is retried; one that keeps failing leaves
/// the key in the way of other holders until the session ends.
const RELEASE_FAILURES_TO_WARN: u32 = 3;

/// A claim txn whose outcome is not known yet. Dropped armed (the claim future was dropped
/// mid-call, or the call failed), it settles the claim in the background with the turn it
/// holds: see the module docs.
struct PendingClaim {
    session: Session,
    key: String,
    turn: Option<Turn>,
}

impl Drop for PendingClaim {
    fn drop(&mut self) {
        let Some(turn) = self.turn.take() else {
            return;
        };
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(key = %self.key, "claim dropped outside a tokio runtime; a key it made stays until its lease ends");
            return;
        };
        // The settler must not keep the session alive: it holds only what it needs.
        let settler = Settler {
            backend: self.session.backend().clone(),
            lease: self.session.lease(),
            lost: self.session.lost_signal(),
            key: std::mem::take(&mut self.key),
        };
        rt.spawn(settler.run(turn.into_background()));
    }
}

/// Settles the claims of unknown outcome of one key: see the module docs.
struct Settler {
    backend: Arc<dyn CoordinationBackend>,
    lease: LeaseId,
    lost: LostSignal,
    key: String,
}

/// How many keys one session watches at most for late claims: a claim whose answer was
/// lost (an error, a timeout, a dropped `lock()` future) may still be applied later, so its
/// key is watched for the rest of the session and deleted if it lands while no handle of
/// the session holds it. An unknown outcome on yet another key ends the session instead
/// (its lease is revoked, so whatever lands late goes with it): resources stay bounded and
/// no key can outlive its handle unwatched.
pub const MAX_SETTLED_KEYS: usize = 64;

impl Settler {
    async fn run(self, turn: Turn) {
        let first = !turn.slot.get().settling.swap(true, Ordering::SeqCst);
        self.withdraw().await;
        let slot = turn.slot.share();
        drop(turn);
        if !first {
            // A settler already watches this key for the rest of the session.
            return;
        }
        let settlers = slot.keys.settlers.clone();
        let _count = Counted::add(&settlers);
        if settlers.load(Ordering::SeqCst) > MAX_SETTLED_KEYS {
            tracing::warn!(key = %self.key, "too many keys with claims of unknown outcome; ending the session");
            self.lost.end();
            return;
        }
        let mut backoff = Backoff::default();
        loop {
            tokio::select! {
                biased;
                _ = self.lost.clone().wait() => return,
                outcome = self.watch_for_late_claims(&slot, &mut backoff) => {
                    if let Err(e) = outcome {
                        tracing::debug!(key = %self.key, error = %e, "watching for late claims failed; watching again");
                    }
                }
            }
            if !backoff.sleep_unless_lost(&self.lost).await {
                return;
            }
        }
    }

    /// Watches the key; whenever an incarnation on this lease may have appeared (and once
    /// at the start, for one that landed before the watch), takes the turn and withdraws
    /// what no handle holds.
    async fn watch_for_late_claims(&self, slot: &SlotRef, backoff: &mut Backoff) -> Result<()> {
        let mut watch = self
            .backend
            .watch(WatchRequest::key(self.key.as_str()))
            .await?;
        let mut check = true;
        loop {
            if check {
                let turn = slot.share().turn_for_settler().await;
                self.withdraw().await;
                drop(turn);
                backoff.reset();
            }
            let resp = watch
                .next()
                .await
                .ok_or_else(|| Error::unavailable("watch ended"))??;
            check = resp
                .events
                .iter()
                .any(|e| e.kind == EventKind::Put && e.kv.version == 1 && e.kv.lease == self.lease);
        }
    }

    /// Under the turn (no handle of the session holds the key): deletes the incarnation on
    /// this lease that the store has, if any, by its create revision; retries until done or
    /// the session is lost.
    async fn withdraw(&self) {
        let mut backoff = Backoff::default();
        loop {
            let outcome = async {
                match self.backend.get(self.key.as_bytes()).await? {
                    Some(kv) if kv.lease == self.lease => {
                        delete_if_incarnation(self.backend.as_ref(), &self.key, kv.create_revision)
                            .await?;
                        // Deleted, or replaced meanwhile: look again.
                        Ok(false)
                    }
                    _ => Ok::<bool, Error>(true),
                }
            };
            let outcome = tokio::select! {
                biased;
                _ = self.lost.clone().wait() => return,
                outcome = outcome => outcome,
            };
            match outcome {
                Ok(true) => return,
                Ok(false) => backoff.reset(),
                Err(e) => {
                    tracing::warn!(key = %self.key, error = %e, "withdrawing an unanswered claim failed; retrying");
                    if !backoff.sleep_unless_lost(&self.lost).await {
                        return;
                    }
                }
            }
        }
    }
}

impl SlotRef {
    /// The settler's turn: it waits however long a hold lasts.
    async fn turn_for_settler(self) -> Turn {
        let guard = self.get().turn.clone().lock_owned().await;
        Turn {
            slot: self,
            _guard: guard,
            handle: None,
        }
    }
}

/// Whether a write that failed with `error` may still have been applied (or may be later).
fn applied_maybe(error: &Error) -> bool {
    !matches!(
        error,
        Error::InvalidArgument { .. }
            | Error::PermissionDenied { .. }
            | Error::Unauthenticated { .. }
    )
}

/// Deletes `key` only if it is still the incarnation created at `rev`: a retried or late
/// delete can never remove a newer one. Returns whether it deleted.
async fn delete_if_incarnation(
    backend: &dyn CoordinationBackend,
    key: &str,
    rev: Revision,
) -> Result<bool> {
    Ok(backend.txn(incarnation_delete(key, rev)).await?.succeeded)
}

/// The txn of [`delete_if_incarnation`].
fn incarnation_delete(key: &str, rev: Revision) -> TxnRequest {
    TxnRequest::new()
        .when([Compare::create_revision(key, CompareOp::Equal, rev)])
        .and_then([TxnOp::delete(key)])
}

/// One attempt of a release's delete, owning what it needs: so that an attempt begun in
/// the caller's task can go on in a spawned one.
type Attempt = std::pin::Pin<Box<dyn Future<Output = Result<bool>> + Send>>;

fn delete_attempt(ctx: &Releaser, key: &str, rev: Revision) -> Attempt {
    let backend = ctx.backend.clone();
    let txn = incarnation_delete(key, rev);
    Box::pin(async move { Ok(backend.as_ref().txn(txn).await?.succeeded) })
}

async fn key_lost(session: Session, key: String, rev: Revision) {
    let backend = session.backend().clone();
    let signal = session.lost_signal();
    drop(session);
    let lost = signal.clone().wait();
    tokio::pin!(lost);
    let mut backoff = Backoff::default();
    loop {
        let watched = async {
            let mut watch = backend.watch(WatchRequest::key(key.as_str())).await?;
            match backend.get(key.as_bytes()).await? {
                Some(kv) if kv.create_revision == rev => {}
                _ => return Ok(true),
            }
            while let Some(resp) = watch.next().await {
                if resp?.events.iter().any(|e| e.kind == EventKind::Delete) {
                    return Ok(true);
                }
            }
            Ok::<bool, Error>(false)
        };
        tokio::select! {
            _ = &mut lost => return,
            r = watched => match r {
                Ok(true) => return,
                Ok(false) => {}
                Err(e) => tracing::debug!(%key, error = %e, "watching own key failed; retrying"),
            }
        }
        if !backoff.sleep_unless_lost(&signal).await {
            return;
        }
    }
}
