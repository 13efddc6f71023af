//! A waiter's watch, kept for the session's next wait on the same key.
//!
//! Under contention a session waits again soon after it was granted: it holds, releases,
//! claims the same key (`<name>/<lease>`) and waits for a predecessor that is often the
//! same one. Creating a watch for every wait costs a request and a reply, and on etcd it
//! also risks a stall: etcd reads its revision for a watch "from now" and registers the
//! watcher in two steps, so a write applied in between leaves the new watcher *unsynced*,
//! served by a loop that runs every 100 ms. Reusing the watch of the previous wait avoids
//! both. It is still exact: the watch has delivered (or queued) every event of its range
//! since it started, and the wait skips whatever is at or below the revision it starts
//! from, including the session's own release and claim.
//!
//! A kept watch queues the events of its range until it is used again, so it is kept only
//! briefly ([`KEEP_FOR`]): a reaper task, running only while something is kept, drops it
//! after that.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use crate::{KeyRange, Revision, WatchStream};

/// How long a watch is kept after its wait ended, for a next wait to take it.
pub(crate) const KEEP_FOR: Duration = Duration::from_secs(1);

/// A waiter's watch: of one range spanning the own key and the predecessor (and what
/// sorts between them), or of the predecessor's key alone with a second stream for the own
/// key (`own`).
pub(crate) struct Watching {
    /// Tells this wait's watches apart (renumbered when a kept one is taken).
    pub(crate) id: u64,
    pub(crate) range: KeyRange,
    pub(crate) stream: WatchStream,
    /// The revision of the last response taken from the stream.
    pub(crate) taken: Revision,
    /// The own key's watch, when `range` does not span it.
    pub(crate) own: Option<WatchStream>,
}

/// The watches a session's waits left behind, by own key.
#[derive(Default)]
pub(crate) struct KeptWatches(Arc<Mutex<Kept>>);

#[derive(Default)]
struct Kept {
    by_key: HashMap<String, (Watching, Instant)>,
    /// Whether a reaper task is running.
    reaping: bool,
}

fn lock(kept: &Mutex<Kept>) -> MutexGuard<'_, Kept> {
    kept.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl KeptWatches {
    /// The watch kept for `own_key`, if any.
    pub(crate) fn take(&self, own_key: &str) -> Option<Watching> {
        lock(&self.0).by_key.remove(own_key).map(|(w, _)| w)
    }

    /// Keeps `watching` for the next wait on `own_key`, for [`KEEP_FOR`].
    pub(crate) fn keep(&self, own_key: &str, watching: Watching) {
        let mut kept = lock(&self.0);
        kept.by_key
            .insert(own_key.to_owned(), (watching, Instant::now()));
        if kept.reaping {
            return;
        }
        // Without a runtime (a wait cannot end outside one) nothing would drop it later.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            kept.by_key.remove(own_key);
            return;
        };
        kept.reaping = true;
        runtime.spawn(reap(self.0.clone()));
    }
}

/// Drops every watch kept for [`KEEP_FOR`] or longer; ends once none is kept.
async fn reap(kept: Arc<Mutex<Kept>>) {
    loop {
        tokio::time::sleep(KEEP_FOR).await;
        let (stale, more): (Vec<(Watching, Instant)>, bool) = {
            let mut kept = lock(&kept);
            let now = Instant::now();
            let stale = kept
                .by_key
                .extract_if(|_, (_, at)| now.duration_since(*at) >= KEEP_FOR)
                .map(|(_, v)| v)
                .collect();
            kept.reaping = !kept.by_key.is_empty();
            (stale, kept.reaping)
        };
        // Dropped outside the lock: dropping a stream may cancel it with the backend.
        drop(stale);
        if !more {
            return;
        }
    }
}
