//! `Election`: leader election with proclamations and an observer stream.

use std::sync::Arc;
use std::time::Duration;

use futures::stream::{BoxStream, StreamExt};
use tracing::Instrument;

use super::backoff::Backoff;
use super::hold::{Deadline, Hold, withdraw_on_timeout};
use super::instrument::{acquisition, op_span, operation, record_hold};
use super::name::check_name;
use super::own_key::claim;
use super::queue::Queue;
use super::wait::{Ahead, queue_read, resolve_ahead, wait_for_predecessors};
use super::{Session, lock_key};
use crate::metrics::HoldKind;
use crate::{
    BackendExt, Compare, CoordinationBackend, Error, EventKind, KeyValue, Result, Revision, TxnOp,
    WatchRequest,
};

/// Leader election on a name, etcd's `concurrency.Election`.
///
/// Candidates put `<name>/<lease hex>` with their proposal as the value, attached to the
/// session lease; the leader is the candidate with the lowest create revision. So a coord
/// candidate and `etcdctl elect`, etcd's server-side election API or Go's
/// `concurrency.Election` on the same name see the same leader.
///
/// A candidacy is a handle, not a session: a second `campaign()` on the same session and
/// name waits until the first candidacy ends (etcd's Go `Election` instead proclaims the
/// new value at once). A session resumed from its lease id in a new process
/// ([`crate::SessionBuilder::lease`]) adopts the candidacy its predecessor left, with the
/// new proposal: that is how leadership survives a restart.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> coord_core::Result<()> {
/// # let backend: std::sync::Arc<dyn coord_core::CoordinationBackend> =
/// #     std::sync::Arc::new(coord_memory::MemoryBackend::new());
/// use coord_core::{Election, Session};
/// use futures::StreamExt;
///
/// let (a, b) = (Session::new(backend.clone()).await?, Session::new(backend.clone()).await?);
/// let leader = Election::new(&a, "scheduler").campaign("node-a").await?;
/// let follower = Election::new(&b, "scheduler");
/// let mut changes = follower.observe();
/// assert_eq!(changes.next().await.unwrap()?.leader.unwrap().value, b"node-a");
///
/// // b campaigns in the background and takes over when a resigns.
/// let campaign = tokio::spawn(async move { follower.campaign("node-b").await });
/// leader.proclaim("node-a, busy").await?;
/// leader.resign().await?;
/// let next = campaign.await.unwrap()?;
/// assert!(next.rev() > 0);
/// next.resign().await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Election {
    session: Session,
    name: String,
}

/// A leader as seen by [`Election::leader`] and [`observe`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderUpdate {
    /// The store revision this view is from; never goes back in an observe stream.
    pub revision: Revision,
    /// The leader's key and proposal, or `None` when nobody is campaigning.
    pub leader: Option<KeyValue>,
}

impl Election {
    /// An election named `name`, campaigning with `session`. No I/O.
    ///
    /// A name that is empty, ends with `/` or contains a NUL byte is refused with
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument) by the first operation,
    /// before any request.
    pub fn new(session: &Session, name: impl Into<String>) -> Self {
        Election {
            session: session.clone(),
            name: name.into(),
        }
    }

    /// The election's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The leader and the candidates behind it, in the order they would lead, with their
    /// proposals, leases and the time left on them (Curator's `getParticipantNodes`): the
    /// leader is [`crate::NameStatus::leader`] (the one holder), the candidates are
    /// [`crate::NameStatus::waiters`]. See [`crate::inspect`].
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a name that is empty or ends with `/`; any backend
    /// error.
    ///
    /// # Cancel safety
    /// Cancel safe: read only.
    pub async fn participants(&self) -> Result<crate::NameStatus> {
        crate::inspect(
            self.session.backend().as_ref(),
            &self.name,
            Some(crate::PrimitiveKind::Election),
        )
        .await
    }

    /// Becomes a candidate with `proposal` and waits until elected.
    ///
    /// If this session already campaigns on this name, the existing candidacy is adopted and
    /// its value replaced by `proposal`.
    ///
    /// # Errors
    /// [`Error::SessionExpired`] if the session is or becomes lost; [`Error::LockLost`] if
    /// the candidacy key is deleted while waiting; any backend error. On every error the
    /// candidacy is withdrawn (etcd leaves it behind, #21128).
    ///
    /// # Cancel safety
    /// Cancel safe: dropping the future withdraws the candidacy in the background.
    pub async fn campaign(&self, proposal: impl Into<Vec<u8>>) -> Result<Leadership> {
        let span = op_span!("election.campaign", self.name, self.session.lease());
        let campaign = self.campaign_within(proposal.into(), Deadline::NONE);
        acquisition(span, HoldKind::Election, &self.name, campaign).await
    }

    async fn campaign_within(&self, proposal: Vec<u8>, deadline: Deadline) -> Result<Leadership> {
        check_name("election", &self.name)?;
        let timed_out = || deadline.elapsed(format_args!("campaign in election {:?}", self.name));
        let key = lock_key(&self.name, self.session.lease());
        let queue = Queue::name(&self.name);
        // The claim also reads the queue, so that waiting starts without a read.
        let extra = vec![TxnOp::range(queue_read(&queue))];
        let claim = claim(&self.session, key, &proposal, extra, deadline)
            .await?
            .ok_or_else(timed_out)?;
        let known = Ahead::after_claim(&claim, &claim.read(0)?, &queue);
        let own = claim.key;
        let known = resolve_ahead(&own, &queue, known).await?;
        if claim.existing_value.is_some_and(|v| v != proposal) {
            self.session.race(own.put_value(&proposal)).await?;
        }
        if !known.as_ref().is_some_and(Ahead::is_clear)
            && deadline
                .bound(wait_for_predecessors(&own, &queue, known))
                .await?
                .is_none()
        {
            withdraw_on_timeout(own).await;
            return Err(timed_out());
        }
        self.session
            .unless_lost(Leadership(Hold::new(HoldKind::Election, &self.name, own)))
    }

    /// [`Election::campaign`] with a time limit on *waiting for others*, as
    /// [`crate::Mutex::lock_timeout`]: the claim request always completes, then `limit`
    /// applies to waiting for older candidates. A zero limit means "try once": elected
    /// when nobody else campaigns, [`Error::Timeout`] otherwise.
    ///
    /// # Errors
    /// [`Error::Timeout`] when `limit` passes while waiting (the candidacy is withdrawn
    /// before the error is returned); as [`Election::campaign`] otherwise.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn campaign_timeout(
        &self,
        proposal: impl Into<Vec<u8>>,
        limit: Duration,
    ) -> Result<Leadership> {
        let span = op_span!("election.campaign_timeout", self.name, self.session.lease());
        let campaign = self.campaign_within(proposal.into(), Deadline::after(limit));
        acquisition(span, HoldKind::Election, &self.name, campaign).await
    }

    /// The current leader.
    ///
    /// # Errors
    /// [`Error::NoLeader`] when nobody campaigns; any backend error.
    ///
    /// # Cancel safety
    /// Cancel safe: read only.
    pub async fn leader(&self) -> Result<KeyValue> {
        leader(self.session.backend().as_ref(), &self.name).await
    }

    /// The stream of leader changes; see [`observe`].
    pub fn observe(&self) -> BoxStream<'static, Result<LeaderUpdate>> {
        observe(self.session.backend().clone(), self.name.clone())
    }
}

/// The current leader of election `name`, without a session: the oldest candidate key
/// `<name>/<id>` (a candidate of a deeper name, `<name>/x`, is never the leader of `name`).
///
/// # Errors
/// [`Error::NoLeader`] when nobody campaigns; any backend error.
///
/// # Cancel safety
/// Cancel safe: read only.
pub async fn leader(backend: &dyn CoordinationBackend, name: &str) -> Result<KeyValue> {
    let span = tracing::debug_span!(
        "election.leader",
        name = %name,
        key = tracing::field::Empty,
        token = tracing::field::Empty,
        outcome = tracing::field::Empty,
    );
    let outcome = operation(span.clone(), async {
        check_name("election", name)?;
        let queue = Queue::name(name);
        let resp = backend.range(queue.first_created()).await?;
        queue
            .oldest(backend, &resp)
            .await?
            .ok_or_else(|| Error::NoLeader {
                election: name.to_owned(),
            })
    })
    .await;
    if let Ok(leader) = &outcome
        && !span.is_disabled()
    {
        span.record("key", tracing::field::display(leader.key_str()));
        span.record("token", leader.create_revision);
    }
    outcome
}

/// Observes election `name`: first the current state, then every change of leader or of
/// the leader's proposal, including `leader: None` when the last candidate is gone (etcd's
/// `Observe` never reports that). Revisions only rise. Intermediate proposals may be
/// skipped when they follow each other faster than the stream is read; the latest state
/// is always delivered.
///
/// Retryable backend errors (and a compacted watch) are retried inside the stream with a
/// fresh read, so the stream only ends with an error that retrying cannot fix.
pub fn observe(
    backend: Arc<dyn CoordinationBackend>,
    name: String,
) -> BoxStream<'static, Result<LeaderUpdate>> {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let span = tracing::debug_span!("election.observe", name = %name);
    let observing = async move {
        let mut observer = Observer {
            backend,
            queue: Queue::name(&name),
            last: None,
            tx,
        };
        let mut backoff = Backoff::default();
        loop {
            let err = match observer.run().await {
                Ok(()) => return,
                Err(e) => e,
            };
            if !(err.is_retryable() || matches!(err, Error::Compacted { .. })) {
                let _ = observer.tx.send(Err(err)).await;
                return;
            }
            tracing::debug!(election = %name, error = %err, "observe: resyncing");
            tokio::select! {
                _ = observer.tx.closed() => return,
                _ = tokio::time::sleep(backoff.pause()) => {}
            }
        }
    };
    tokio::spawn(observing.instrument(span));
    tokio_stream_from(rx)
}

fn tokio_stream_from<T: Send + 'static>(
    rx: tokio::sync::mpsc::Receiver<T>,
) -> BoxStream<'static, T> {
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|v| (v, rx)) }).boxed()
}

struct Observer {
    backend: Arc<dyn CoordinationBackend>,
    queue: Queue,
    last: Option<LeaderUpdate>,
    tx: tokio::sync::mpsc::Sender<Result<LeaderUpdate>>,
}

impl Observer {
    /// Runs until the receiver is gone (`Ok`) or an error needs a resync (`Err`).
    async fn run(&mut self) -> Result<()> {
        let mut watch = self
            .backend
            .watch(WatchRequest::prefix(self.queue.prefix.as_str()))
            .await?;
        let mut seen = self.reread().await?;
        if !self.emit(seen.clone()).await {
            return Ok(());
        }
        loop {
            let resp = tokio::select! {
                _ = self.tx.closed() => return Ok(()),
                next = watch.next() => next.ok_or_else(|| Error::unavailable("observe watch ended"))??,
            };
            if resp.revision <= seen.revision {
                continue;
            }
            let mut next = seen.clone();
            let mut reread = false;
            for event in &resp.events {
                match (&next.leader, event.kind) {
                    (Some(l), EventKind::Delete) if l.key == event.kv.key => reread = true,
                    (Some(l), EventKind::Put)
                        if l.key == event.kv.key
                            && l.create_revision == event.kv.create_revision =>
                    {
                        next.leader = Some(event.kv.clone());
                    }
                    // A key of a deeper name is no candidate.
                    (None, EventKind::Put) if self.queue.contains(&event.kv.key) => {
                        next.leader = Some(event.kv.clone());
                    }
                    _ => {}
                }
            }
            next.revision = resp.revision;
            if reread {
                next = self.reread().await?;
            }
            if next.leader != seen.leader && !self.emit(next.clone()).await {
                return Ok(());
            }
            seen = next;
        }
    }

    async fn reread(&self) -> Result<LeaderUpdate> {
        let resp = self.backend.range(self.queue.first_created()).await?;
        Ok(LeaderUpdate {
            revision: resp.revision,
            leader: self.queue.oldest(self.backend.as_ref(), &resp).await?,
        })
    }

    /// Sends `update` unless it repeats the last one sent; false when nobody listens.
    async fn emit(&mut self, update: LeaderUpdate) -> bool {
        if let Some(last) = &self.last
            && (last.leader == update.leader || update.revision < last.revision)
        {
            return true;
        }
        self.last = Some(update.clone());
        self.tx.send(Ok(update)).await.is_ok()
    }
}

/// Leadership of an [`Election`], held until resigned, dropped or lost: a [`Hold`] (key,
/// fencing token, `is_owner`, `lost`), with etcd's names [`rev`](Self::rev) and
/// [`is_leader`](Self::is_leader) for the last two.
///
/// Dropping it resigns in the background.
#[must_use = "if unused, leadership is resigned at once"]
#[clippy::has_significant_drop]
#[derive(Debug)]
pub struct Leadership(Hold);

impl Leadership {
    /// The leader key's create revision (etcd's `Election.Rev()`): the fencing token, which
    /// strictly rises across successive leaders.
    pub fn rev(&self) -> Revision {
        self.0.fencing_token()
    }

    /// A compare that holds while this leadership lasts ([`Hold::is_owner`]).
    pub fn is_leader(&self) -> Compare {
        self.0.is_owner()
    }

    /// Replaces the proposal observers see, if still leader. A proclamation whose answer
    /// was lost can never land over a later one: each compares the revision it follows.
    ///
    /// # Errors
    /// [`Error::NotLeader`] when the leader key is gone or is a newer incarnation; any
    /// backend error (the proclamation may then still be applied, before the next one).
    ///
    /// # Cancel safety
    /// Cancel safe: a dropped proclamation may or may not have been applied.
    pub async fn proclaim(&self, proposal: impl Into<Vec<u8>>) -> Result<()> {
        let span = op_span!("election.proclaim", self.0.name(), self.0.session().lease());
        record_hold(&span, &self.0);
        let proposal = proposal.into();
        operation(span, async {
            self.not_leader(self.0.own().put_value(&proposal).await)
        })
        .await
    }

    /// Gives up leadership: deletes the key if it is still this incarnation, letting the
    /// next candidate in.
    ///
    /// # Errors
    /// [`Error::NotLeader`] when leadership had already been lost (the key was gone or
    /// re-created): nothing is deleted, and the caller learns that work done since the loss
    /// was not covered. Any backend error; the resignation is then retried in the
    /// background.
    ///
    /// # Cancel safety
    /// Cancel safe: the delete runs in the calling task; if the call is dropped before it
    /// is answered, resigning finishes in a spawned task, so the candidacy is never left
    /// behind.
    pub async fn resign(self) -> Result<()> {
        let span = op_span!("election.resign", self.0.name(), self.0.session().lease());
        record_hold(&span, &self.0);
        let name = self.0.name().to_owned();
        operation(span, async {
            match self.0.release().await {
                Err(Error::LockLost { .. }) => Err(Error::NotLeader { election: name }),
                other => other,
            }
        })
        .await
    }

    /// Reads the current value of the leader key and checks it is still ours.
    ///
    /// # Errors
    /// [`Error::NotLeader`] when it is not.
    ///
    /// # Cancel safety
    /// Cancel safe: read only.
    pub async fn current(&self) -> Result<KeyValue> {
        match self.session().backend().get(self.key().as_bytes()).await? {
            Some(kv) if kv.create_revision == self.fencing_token() => Ok(kv),
            _ => self.not_leader(Err(Error::LockLost {
                key: self.key().to_owned(),
            })),
        }
    }

    fn not_leader<T>(&self, outcome: Result<T>) -> Result<T> {
        match outcome {
            Err(Error::LockLost { .. }) => Err(Error::NotLeader {
                election: self.0.name().to_owned(),
            }),
            other => other,
        }
    }
}

impl std::ops::Deref for Leadership {
    type Target = Hold;

    fn deref(&self) -> &Hold {
        &self.0
    }
}
