//! Range reads: which keys, in which order, how many.

use crate::{KeyRange, KeyValue, Revision};

/// What a range is sorted by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SortTarget {
    /// By key bytes.
    Key,
    /// By [`KeyValue::create_revision`].
    CreateRevision,
    /// By [`KeyValue::mod_revision`].
    ModRevision,
}

/// Sort direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SortOrder {
    /// Smallest first.
    Ascend,
    /// Largest first.
    Descend,
}

/// A range read. Build it with [`RangeRequest::new`] and the builder methods.
///
/// The backend applies, in this order (as etcd does): the key range, the revision filters,
/// the sort, then the limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeRequest {
    /// Which keys.
    pub range: KeyRange,
    /// Sort target and order; `None` is key order ascending.
    pub sort: Option<(SortTarget, SortOrder)>,
    /// At most this many keys; 0 means no limit.
    pub limit: i64,
    /// Only keys with `create_revision >= min_create_revision` (0: no filter).
    pub min_create_revision: Revision,
    /// Only keys with `create_revision <= max_create_revision` (0: no filter).
    pub max_create_revision: Revision,
    /// Return keys and metadata without values.
    pub keys_only: bool,
    /// Return only [`RangeResponse::count`], no keys.
    pub count_only: bool,
}

impl RangeRequest {
    /// All keys in `range`, key order, no limit.
    pub fn new(range: KeyRange) -> Self {
        RangeRequest {
            range,
            sort: None,
            limit: 0,
            min_create_revision: 0,
            max_create_revision: 0,
            keys_only: false,
            count_only: false,
        }
    }

    /// One key.
    pub fn key(key: impl Into<Vec<u8>>) -> Self {
        Self::new(KeyRange::key(key))
    }

    /// Every key under `prefix`.
    pub fn prefix(prefix: impl Into<Vec<u8>>) -> Self {
        Self::new(KeyRange::prefix(prefix))
    }

    /// Sorts by `target` in `order`.
    pub fn sort(mut self, target: SortTarget, order: SortOrder) -> Self {
        self.sort = Some((target, order));
        self
    }

    /// Returns at most `limit` keys (0: all).
    pub fn limit(mut self, limit: i64) -> Self {
        self.limit = limit;
        self
    }

    /// Only keys created at or after `revision`.
    pub fn min_create_revision(mut self, revision: Revision) -> Self {
        self.min_create_revision = revision;
        self
    }

    /// Only keys created at or before `revision`.
    pub fn max_create_revision(mut self, revision: Revision) -> Self {
        self.max_create_revision = revision;
        self
    }

    /// Leaves values out.
    pub fn keys_only(mut self) -> Self {
        self.keys_only = true;
        self
    }

    /// Returns the count only.
    pub fn count_only(mut self) -> Self {
        self.count_only = true;
        self
    }

    /// The oldest key: sort by create revision ascending, limit 1 (etcd's `WithFirstCreate`).
    pub fn first_created(prefix: impl Into<Vec<u8>>) -> Self {
        Self::prefix(prefix)
            .sort(SortTarget::CreateRevision, SortOrder::Ascend)
            .limit(1)
    }

    /// The newest key created at or before `max_create_revision` (etcd's `WithLastCreate` +
    /// `WithMaxCreateRev`): the immediate predecessor of a key created at
    /// `max_create_revision + 1`.
    pub fn last_created_before(prefix: impl Into<Vec<u8>>, max_create_revision: Revision) -> Self {
        Self::prefix(prefix)
            .sort(SortTarget::CreateRevision, SortOrder::Descend)
            .max_create_revision(max_create_revision)
            .limit(1)
    }

    /// Checks the request.
    ///
    /// # Errors
    /// [`crate::Error::InvalidArgument`] for an invalid key range or a negative limit or filter.
    pub fn validate(&self) -> crate::Result<()> {
        self.range.validate()?;
        if self.limit < 0 {
            return Err(crate::Error::invalid_argument(format!(
                "range limit must not be negative, got {}",
                self.limit
            )));
        }
        if self.min_create_revision < 0 || self.max_create_revision < 0 {
            return Err(crate::Error::invalid_argument(
                "create revision filters must not be negative",
            ));
        }
        Ok(())
    }
}

/// The result of a [`RangeRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RangeResponse {
    /// The keys, after filter, sort and limit (empty for count-only).
    pub kvs: Vec<KeyValue>,
    /// True when the limit cut keys off.
    pub more: bool,
    /// Number of keys in the range, counted as etcd does: before the revision filters and
    /// the limit.
    pub count: i64,
    /// The store revision the read was served at.
    pub revision: Revision,
}
