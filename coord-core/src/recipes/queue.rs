//! Which keys under a name take part in its queue.
//!
//! etcd's layouts put a holder of `NAME` at `NAME/<lease hex>` (mutex, election, the
//! server-side lock API, `etcdctl lock`) and a read/write lock's at `NAME/read/<id>` and
//! `NAME/write/<id>`, so the prefix `NAME/` also holds the keys of every name below it:
//! `pa/b/<lease hex>` of a lock on `pa/b`. Those are not contenders of `pa`, and counting them
//! would make a lock on `pa` wait behind a holder of `pa/b`. A [`Queue`] keeps to the keys
//! that are: the direct children of the prefix, plus (for a whole name) the children of its
//! `read/` and `write/` directories, so that a mutex and a read/write lock on one name still
//! exclude each other.

use crate::{CoordinationBackend, KeyValue, RangeRequest, RangeResponse, Result};

/// The contenders of one name, under one key prefix.
#[derive(Debug, Clone)]
pub(crate) struct Queue {
    /// What to read and watch: `NAME/` or `NAME/write/`.
    pub(crate) prefix: String,
    /// Whether the children of `read/` and `write/` count too.
    rw_dirs: bool,
}

impl Queue {
    /// Everyone who holds or waits for `name`: a mutex's, election's, semaphore's or read/write
    /// lock's key on it (`NAME/<id>`, `NAME/read/<id>`, `NAME/write/<id>`).
    pub(crate) fn name(name: &str) -> Queue {
        Queue {
            prefix: format!("{name}/"),
            rw_dirs: true,
        }
    }

    /// The writers of read/write lock `name` (`NAME/write/<id>`).
    pub(crate) fn writers(name: &str) -> Queue {
        Queue {
            prefix: format!("{name}/write/"),
            rw_dirs: false,
        }
    }

    /// The direct children of `name` (`NAME/<id>`): a mutex's, election's or semaphore's
    /// keys, not a read/write lock's.
    pub(crate) fn children(name: &str) -> Queue {
        Queue {
            prefix: format!("{name}/"),
            rw_dirs: false,
        }
    }

    /// Whether `key` is a contender: one segment below the prefix (or below its `read/` or
    /// `write/`), not a key of a deeper name.
    pub(crate) fn contains(&self, key: &[u8]) -> bool {
        let Some(rest) = key.strip_prefix(self.prefix.as_bytes()) else {
            return false;
        };
        let rest = if self.rw_dirs {
            rest.strip_prefix(b"read/")
                .or_else(|| rest.strip_prefix(b"write/"))
                .unwrap_or(rest)
        } else {
            rest
        };
        !rest.is_empty() && !rest.contains(&b'/')
    }

    /// The contenders a (limited) read returned, in its order; `None` when keys of other
    /// names took places that the limit cut off, so that contenders may be missing: read
    /// again with [`Queue::unlimited`].
    pub(crate) fn members(&self, read: &RangeResponse) -> Option<Vec<KeyValue>> {
        let members: Vec<KeyValue> = read
            .kvs
            .iter()
            .filter(|kv| self.contains(&kv.key))
            .cloned()
            .collect();
        let dropped = members.len() < read.kvs.len();
        (!(dropped && read.more)).then_some(members)
    }

    /// The oldest contender, given `read`, the answer of [`Queue::first_created`] (read
    /// again without its limit when keys of other names took its place).
    ///
    /// # Errors
    /// Any backend error of the second read.
    pub(crate) async fn oldest(
        &self,
        backend: &dyn CoordinationBackend,
        read: &RangeResponse,
    ) -> Result<Option<KeyValue>> {
        if let Some(members) = self.members(read) {
            return Ok(members.into_iter().next());
        }
        let all = backend
            .range(Queue::unlimited(self.first_created()))
            .await?;
        Ok(all.kvs.into_iter().find(|kv| self.contains(&kv.key)))
    }

    /// The oldest key under the prefix (etcd's `WithFirstCreate`); see [`Queue::oldest`].
    pub(crate) fn first_created(&self) -> RangeRequest {
        RangeRequest::first_created(self.prefix.as_str())
    }

    /// `request` (a read of this queue's prefix) without its limit.
    pub(crate) fn unlimited(request: RangeRequest) -> RangeRequest {
        request.limit(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contenders_are_direct_children_and_read_write_children() {
        let q = Queue::name("pa");
        for key in ["pa/694d8225", "pa/read/1", "pa/write/2"] {
            assert!(q.contains(key.as_bytes()), "{key}");
        }
        for key in [
            "pa/b/694d8225",
            "pa/",
            "pax/1",
            "pa/read/x/1",
            "pa/write/",
            "p",
        ] {
            assert!(!q.contains(key.as_bytes()), "{key}");
        }
        let w = Queue::writers("pa");
        assert!(w.contains(b"pa/write/2"));
        assert!(!w.contains(b"pa/write/x/2"));
        assert!(!w.contains(b"pa/read/1"));
    }
}
