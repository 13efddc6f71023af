//! The data model: revisions, leases, keys, key ranges.

use std::fmt;

/// A store-wide revision. Every write transaction that changes anything raises it by
/// exactly one, and all its changes carry the new value. Revision 0 means "absent".
pub type Revision = i64;

/// A lease id as the backend issued it: a positive `i64`. 0 means "no lease".
pub type LeaseId = i64;

/// The lease id that means "no lease" in [`KeyValue::lease`] and [`crate::Put::lease`].
pub const NO_LEASE: LeaseId = 0;

/// A key with its value and metadata, as etcd reports it.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct KeyValue {
    /// The key.
    pub key: Vec<u8>,
    /// The value; empty when the range asked for keys only.
    pub value: Vec<u8>,
    /// The revision that created the key (since it was last absent).
    pub create_revision: Revision,
    /// The revision of the last write to the key.
    pub mod_revision: Revision,
    /// Number of writes since the key was created; 1 after the creating write.
    pub version: i64,
    /// The lease the key is attached to, or [`NO_LEASE`].
    pub lease: LeaseId,
}

impl KeyValue {
    /// The key as text, replacing invalid UTF-8.
    pub fn key_str(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.key)
    }

    /// The value as text, replacing invalid UTF-8.
    pub fn value_str(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.value)
    }
}

impl fmt::Debug for KeyValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyValue")
            .field("key", &self.key_str())
            .field("value", &self.value_str())
            .field("create_revision", &self.create_revision)
            .field("mod_revision", &self.mod_revision)
            .field("version", &self.version)
            .field("lease", &format_args!("{:x}", self.lease))
            .finish()
    }
}

/// Which keys an operation applies to.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum KeyRange {
    /// Exactly one key.
    Key(Vec<u8>),
    /// Every key that starts with these bytes. The empty prefix means every key.
    Prefix(Vec<u8>),
    /// Every key `k` with `start <= k < end`.
    Range {
        /// Inclusive lower bound.
        start: Vec<u8>,
        /// Exclusive upper bound.
        end: Vec<u8>,
    },
}

impl KeyRange {
    /// One key.
    pub fn key(key: impl Into<Vec<u8>>) -> Self {
        KeyRange::Key(key.into())
    }

    /// Every key starting with `prefix`.
    pub fn prefix(prefix: impl Into<Vec<u8>>) -> Self {
        KeyRange::Prefix(prefix.into())
    }

    /// Every key in `[start, end)`.
    pub fn range(start: impl Into<Vec<u8>>, end: impl Into<Vec<u8>>) -> Self {
        KeyRange::Range {
            start: start.into(),
            end: end.into(),
        }
    }

    /// Whether `key` falls in this range.
    pub fn contains(&self, key: &[u8]) -> bool {
        match self {
            KeyRange::Key(k) => k == key,
            KeyRange::Prefix(p) => key.starts_with(p),
            KeyRange::Range { start, end } => key >= start.as_slice() && key < end.as_slice(),
        }
    }

    /// The range as etcd's `(key, range_end)` pair: an empty `range_end` means one key,
    /// `[0]` means "every key from `key` on".
    pub fn to_etcd_bounds(&self) -> (Vec<u8>, Vec<u8>) {
        match self {
            KeyRange::Key(k) => (k.clone(), Vec::new()),
            KeyRange::Prefix(p) if p.is_empty() => (vec![0], vec![0]),
            KeyRange::Prefix(p) => (p.clone(), prefix_end(p)),
            KeyRange::Range { start, end } => (start.clone(), end.clone()),
        }
    }

    /// The lowest key in the range (inclusive).
    pub fn start(&self) -> &[u8] {
        match self {
            KeyRange::Key(k) | KeyRange::Prefix(k) => k,
            KeyRange::Range { start, .. } => start,
        }
    }

    /// Checks the range is usable: a single key must not be empty and a range must not be
    /// inverted.
    ///
    /// # Errors
    /// [`crate::Error::InvalidArgument`] naming the problem.
    pub fn validate(&self) -> crate::Result<()> {
        match self {
            KeyRange::Key(k) if k.is_empty() => {
                Err(crate::Error::invalid_argument("key must not be empty"))
            }
            KeyRange::Range { start, end } if start >= end => {
                Err(crate::Error::invalid_argument(format!(
                    "empty key range: start {:?} is not below end {:?}",
                    String::from_utf8_lossy(start),
                    String::from_utf8_lossy(end)
                )))
            }
            _ => Ok(()),
        }
    }
}

impl fmt::Debug for KeyRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyRange::Key(k) => write!(f, "Key({:?})", String::from_utf8_lossy(k)),
            KeyRange::Prefix(p) => write!(f, "Prefix({:?})", String::from_utf8_lossy(p)),
            KeyRange::Range { start, end } => write!(
                f,
                "Range({:?}..{:?})",
                String::from_utf8_lossy(start),
                String::from_utf8_lossy(end)
            ),
        }
    }
}

/// The smallest key greater than every key starting with `prefix` (etcd's `GetPrefixRangeEnd`):
/// the prefix with its last byte below 0xff incremented and the rest dropped. A prefix of
/// only 0xff bytes has no such key; `[0]` ("to the end") is returned, as etcd does.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_increments_last_byte_below_ff() {
        assert_eq!(prefix_end(b"a/"), b"a0".to_vec());
        assert_eq!(prefix_end(&[b'a', 0xff]), b"b".to_vec());
        assert_eq!(prefix_end(&[0xff, 0xff]), vec![0]);
    }

    #[test]
    fn ranges_contain_what_they_say() {
        assert!(KeyRange::prefix("a/").contains(b"a/1"));
        assert!(!KeyRange::prefix("a/").contains(b"a"));
        assert!(KeyRange::prefix("").contains(b"anything"));
        assert!(KeyRange::range("b", "d").contains(b"c"));
        assert!(!KeyRange::range("b", "d").contains(b"d"));
        assert!(KeyRange::key("k").contains(b"k"));
        assert!(!KeyRange::key("k").contains(b"k2"));
    }

    #[test]
    fn validate_rejects_empty_key_and_inverted_range() {
        assert!(KeyRange::key("").validate().is_err());
        assert!(KeyRange::range("b", "a").validate().is_err());
        assert!(KeyRange::prefix("").validate().is_ok());
    }
}
