//! The keys a session creates for its locks, permits and candidacies.
//!
//! Keys are per lease (`<name>/<lease hex>`, etcd's layout), so two handles of one session
//! on one name share a key: the lock is reentrant per session, as in etcd. This module
//! counts the handles of each key so that the key is deleted only when the last one lets
//! go (etcd's Go `TryLock` and `Unlock` delete a key another handle of the same session
//! still waits with or holds). Creating and deleting one key are serialised per key, so a
//! release that is still in flight cannot delete a key a new claim has just adopted.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;

use super::Session;
use crate::{
    BackendExt, Compare, CompareOp, Error, EventKind, Result, Revision, TxnOp, TxnOpResponse,
    TxnRequest, WatchRequest,
};

#[derive(Default)]
pub(crate) struct OwnKeys {
    keys: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<KeyState>>>>,
}

#[derive(Default)]
struct KeyState {
    /// Handles (waiting or holding) that use the key.
    refs: usize,
}

impl OwnKeys {
    fn state(&self, key: &str) -> Arc<tokio::sync::Mutex<KeyState>> {
        let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        keys.entry(key.to_owned()).or_default().clone()
    }
}

/// What [`claim`] found or made.
pub(crate) struct Claim {
    pub(crate) key: OwnedKey,
    /// The key's value before the claim, when it already existed.
    pub(crate) existing_value: Option<Vec<u8>>,
    /// The responses of the extra operations, in order.
    pub(crate) responses: Vec<TxnOpResponse>,
}

/// Creates `key` with `value` on the session's lease, or adopts it if the session already
/// has it, in one txn that also runs `extra` (reads that decide whether to wait).
pub(crate) async fn claim(
    session: &Session,
    key: String,
    value: &[u8],
    extra: Vec<TxnOp>,
) -> Result<Claim> {
    if session.is_lost() {
        return Err(session.expired_error());
    }
    let state = session.inner().keys.state(&key);
    let mut guard = state.lock().await;
    let backend = &session.inner().backend;
    let mut txn = TxnRequest::new()
        .when([Compare::create_revision(key.as_str(), CompareOp::Equal, 0)])
        .and_then([TxnOp::put_with_lease(key.as_str(), value, session.lease())])
        .or_else([TxnOp::range(crate::RangeRequest::key(key.as_str()))]);
    txn.success.extend(extra.iter().cloned());
    txn.failure.extend(extra);
    // From here until the txn answers, the store may have created the key without us
    // knowing: a dropped future or an error (a write may be applied and its answer lost)
    // must not leave it behind on the session's lease, blocking every other session.
    let mut pending = PendingClaim {
        session: session.clone(),
        key: key.clone(),
        state: Some(state.clone()),
    };
    let result = backend.txn(txn).await;
    if result.is_ok() {
        // The answer says exactly what happened; the code below owns the outcome.
        pending.disarm();
    }
    let mut resp = match result {
        Err(Error::LeaseNotFound { .. }) => return Err(session.expired_error()),
        other => other?,
    };
    let first = resp.responses.remove(0);
    let (create_revision, existing_value) = if resp.succeeded {
        (resp.revision, None)
    } else {
        let kv = first
            .into_range()
            .and_then(|mut r| r.kvs.pop())
            .ok_or_else(|| {
                Error::backend(
                    "contract",
                    "txn else-branch read of an existing key is empty",
                )
            })?;
        if kv.lease != session.lease() {
            return Err(Error::invalid_argument(format!(
                "key {key:?} exists but is attached to lease {:x}, not this session's lease {:x}",
                kv.lease,
                session.lease()
            )));
        }
        (kv.create_revision, Some(kv.value))
    };
    guard.refs += 1;
    drop(guard);
    Ok(Claim {
        key: OwnedKey {
            session: session.clone(),
            key,
            create_revision,
            state: Some(state),
        },
        existing_value,
        responses: resp.responses,
    })
}

/// One handle's use of a session key. Dropping it lets go of the key in the background;
/// the key is deleted when no handle of the session uses it any more.
pub(crate) struct OwnedKey {
    session: Session,
    key: String,
    create_revision: Revision,
    state: Option<Arc<tokio::sync::Mutex<KeyState>>>,
}

impl OwnedKey {
    pub(crate) fn key(&self) -> &str {
        &self.key
    }

    pub(crate) fn create_revision(&self) -> Revision {
        self.create_revision
    }

    pub(crate) fn session(&self) -> &Session {
        &self.session
    }

    /// A compare that holds while this key still exists with the same create revision.
    pub(crate) fn is_owner(&self) -> Compare {
        Compare::create_revision(self.key.as_str(), CompareOp::Equal, self.create_revision)
    }

    /// Lets go of the key now, deleting it if no other handle of the session uses it.
    ///
    /// The work runs in a spawned task that this call only awaits, so dropping the call
    /// does not stop it. On a backend error the task keeps retrying until it succeeds or the
    /// session ends; the first error is still reported here.
    ///
    /// # Errors
    /// [`Error::LockLost`] when this was the last handle and the key was already gone (or
    /// re-created by someone else) before the release: the caller had lost it. Any backend
    /// error of the first attempt.
    pub(crate) async fn release(mut self) -> Result<()> {
        let Some(state) = self.state.take() else {
            return Ok(());
        };
        let (report, outcome) = tokio::sync::oneshot::channel();
        tokio::spawn(let_go(
            self.session.clone(),
            std::mem::take(&mut self.key),
            self.create_revision,
            state,
            Some(report),
        ));
        outcome.await.unwrap_or_else(|_| {
            Err(Error::unavailable(
                "the release task was stopped (runtime shutting down)",
            ))
        })
    }

    /// Resolves when this key is gone (deleted, or its lease expired) or the session is lost.
    pub(crate) fn lost(&self) -> impl Future<Output = ()> + Send + 'static {
        key_lost(self.session.clone(), self.key.clone(), self.create_revision)
    }
}

impl Drop for OwnedKey {
    fn drop(&mut self) {
        let Some(state) = self.state.take() else {
            return;
        };
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(key = %self.key, "dropped outside a tokio runtime; the key stays until its lease ends");
            return;
        };
        rt.spawn(let_go(
            self.session.clone(),
            std::mem::take(&mut self.key),
            self.create_revision,
            state,
            None,
        ));
    }
}

/// One handle lets go of `key`: the last one deletes it (if it is still the incarnation
/// created at `rev`), retrying with back-off until that succeeds or the session ends. The
/// key's state lock is held throughout, so a new claim of the key waits for the outcome
/// instead of adopting a key that is about to be deleted. The outcome of the first attempt
/// goes to `report`.
async fn let_go(
    session: Session,
    key: String,
    rev: Revision,
    state: Arc<tokio::sync::Mutex<KeyState>>,
    mut report: Option<tokio::sync::oneshot::Sender<Result<()>>>,
) {
    let mut send = |outcome: Result<()>| {
        if let Some(report) = report.take() {
            let _ = report.send(outcome);
        }
    };
    let mut guard = state.lock_owned().await;
    guard.refs -= 1;
    if guard.refs > 0 {
        return send(Ok(()));
    }
    let mut delay = Duration::from_millis(10);
    loop {
        match delete_if_owner(&session, &key, rev).await {
            Ok(true) => return send(Ok(())),
            Ok(false) => return send(Err(Error::LockLost { key })),
            Err(e) if session.is_lost() => {
                tracing::debug!(%key, error = %e, "release abandoned: the session is gone");
                return send(Err(e));
            }
            Err(e) => {
                tracing::warn!(%key, error = %e, "release failed; retrying in the background");
                send(Err(e));
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = session.lost() => return,
                }
                delay = (delay * 2).min(Duration::from_secs(1));
            }
        }
    }
}

/// A claim txn whose outcome is not known yet. Dropped armed (the claim future was dropped
/// mid-call, or the call failed), it withdraws in the background whatever key of the
/// session's lease the txn may have created, unless a handle of the session has adopted the
/// key since.
///
/// The withdrawal cannot know the create revision, so it deletes by lease: a second
/// `Session` on the same lease in the same process (a resumed session while the old one
/// still runs) could lose its key to it. Resuming is meant for a new process.
struct PendingClaim {
    session: Session,
    key: String,
    state: Option<Arc<tokio::sync::Mutex<KeyState>>>,
}

impl PendingClaim {
    fn disarm(&mut self) {
        self.state = None;
    }
}

impl Drop for PendingClaim {
    fn drop(&mut self) {
        let Some(state) = self.state.take() else {
            return;
        };
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(key = %self.key, "claim dropped outside a tokio runtime; a key it made stays until its lease ends");
            return;
        };
        let (session, key) = (self.session.clone(), std::mem::take(&mut self.key));
        rt.spawn(async move {
            let guard = state.lock_owned().await;
            if guard.refs > 0 {
                return;
            }
            let withdraw = TxnRequest::new()
                .when([Compare::lease(key.as_str(), CompareOp::Equal, session.lease())])
                .and_then([TxnOp::delete(key.as_str())]);
            let mut delay = Duration::from_millis(10);
            loop {
                match session.inner().backend.txn(withdraw.clone()).await {
                    Ok(_) => return,
                    Err(e) if session.is_lost() => {
                        tracing::debug!(%key, error = %e, "withdrawal abandoned: the session is gone");
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(%key, error = %e, "withdrawing an unanswered claim failed; retrying");
                        tokio::select! {
                            _ = tokio::time::sleep(delay) => {}
                            _ = session.lost() => return,
                        }
                        delay = (delay * 2).min(Duration::from_secs(1));
                    }
                }
            }
            // `guard` is held to here: no claim of the key interleaves with the withdrawal.
        });
    }
}

/// Deletes `key` only if it is still the incarnation created at `rev`: a retried or late
/// release can never delete a newer acquisition.
/// Returns whether it deleted (false: the key was already gone or is another incarnation).
async fn delete_if_owner(session: &Session, key: &str, rev: Revision) -> Result<bool> {
    let txn = TxnRequest::new()
        .when([Compare::create_revision(key, CompareOp::Equal, rev)])
        .and_then([TxnOp::delete(key)]);
    Ok(session.inner().backend.txn(txn).await?.succeeded)
}

async fn key_lost(session: Session, key: String, rev: Revision) {
    let backend = session.inner().backend.clone();
    let lost = session.lost();
    tokio::pin!(lost);
    let mut delay = Duration::from_millis(10);
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
        tokio::select! {
            _ = &mut lost => return,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(1));
    }
}
