//! The coordination recipes, written once against [`crate::CoordinationBackend`], one small
//! module each.

mod backoff;
mod election;
mod hold;
mod inspect;
mod instrument;
mod kept_watch;
mod mutex;
mod name;
mod own_key;
mod queue;
mod rwmutex;
mod semaphore;
mod session;
mod wait;

pub use election::{Election, LeaderUpdate, Leadership, leader, observe};
pub use hold::Hold;
pub use inspect::{LeaseState, NameStatus, Participant, PrimitiveKind, inspect};
pub use mutex::{Mutex, MutexGuard};
pub use own_key::MAX_SETTLED_KEYS;
pub use rwmutex::{RwMode, RwMutex, RwMutexGuard};
pub use semaphore::{Semaphore, SemaphorePermit};
pub use session::{DEFAULT_SESSION_TTL, Session, SessionBuilder};

/// The key a session uses for a lock or candidacy on `name`: `<name>/<lease id in lowercase
/// hex>`, etcd's layout (Go's `fmt.Sprintf("%s/%x", name, lease)`).
pub fn lock_key(name: &str, lease: crate::LeaseId) -> String {
    format!("{name}/{lease:x}")
}
