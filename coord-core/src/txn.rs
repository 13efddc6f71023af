//! Transactions: compares, then one of two lists of operations.

use crate::{KeyRange, KeyValue, LeaseId, NO_LEASE, RangeRequest, RangeResponse, Revision};

/// How a compare relates the key's current field to the given operand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CompareOp {
    /// `field == operand`
    Equal,
    /// `field != operand`
    NotEqual,
    /// `field < operand`
    Less,
    /// `field > operand`
    Greater,
}

impl CompareOp {
    /// Applies the comparison to two ordered values.
    pub fn holds<T: Ord + ?Sized>(self, field: &T, operand: &T) -> bool {
        match self {
            CompareOp::Equal => field == operand,
            CompareOp::NotEqual => field != operand,
            CompareOp::Less => field < operand,
            CompareOp::Greater => field > operand,
        }
    }
}

/// Which field of a key a compare looks at, with the operand.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CompareTarget {
    /// [`KeyValue::create_revision`]; 0 when the key is absent.
    CreateRevision(Revision),
    /// [`KeyValue::mod_revision`]; 0 when the key is absent.
    ModRevision(Revision),
    /// [`KeyValue::version`]; 0 when the key is absent.
    Version(i64),
    /// [`KeyValue::value`], compared bytewise. A compare on the value of an absent key is
    /// always false, whatever the operator (as in etcd).
    Value(Vec<u8>),
    /// [`KeyValue::lease`]; 0 when the key is absent or has no lease.
    Lease(LeaseId),
}

/// One condition of a transaction, on one key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Compare {
    /// The key compared.
    pub key: Vec<u8>,
    /// The field and operand.
    pub target: CompareTarget,
    /// The relation that must hold.
    pub op: CompareOp,
}

impl Compare {
    /// Compares the key's create revision (0 = absent).
    pub fn create_revision(key: impl Into<Vec<u8>>, op: CompareOp, revision: Revision) -> Self {
        Compare {
            key: key.into(),
            target: CompareTarget::CreateRevision(revision),
            op,
        }
    }

    /// Compares the key's mod revision.
    pub fn mod_revision(key: impl Into<Vec<u8>>, op: CompareOp, revision: Revision) -> Self {
        Compare {
            key: key.into(),
            target: CompareTarget::ModRevision(revision),
            op,
        }
    }

    /// Compares the key's version.
    pub fn version(key: impl Into<Vec<u8>>, op: CompareOp, version: i64) -> Self {
        Compare {
            key: key.into(),
            target: CompareTarget::Version(version),
            op,
        }
    }

    /// Compares the key's value.
    pub fn value(key: impl Into<Vec<u8>>, op: CompareOp, value: impl Into<Vec<u8>>) -> Self {
        Compare {
            key: key.into(),
            target: CompareTarget::Value(value.into()),
            op,
        }
    }

    /// Compares the key's lease.
    pub fn lease(key: impl Into<Vec<u8>>, op: CompareOp, lease: LeaseId) -> Self {
        Compare {
            key: key.into(),
            target: CompareTarget::Lease(lease),
            op,
        }
    }

    /// Evaluates the compare against the key's current state (`None` = absent), with etcd's
    /// rules for absent keys. Backends that evaluate compares themselves use this.
    pub fn evaluate(&self, current: Option<&KeyValue>) -> bool {
        let absent = KeyValue::default();
        let kv = current.unwrap_or(&absent);
        match &self.target {
            CompareTarget::CreateRevision(rev) => self.op.holds(&kv.create_revision, rev),
            CompareTarget::ModRevision(rev) => self.op.holds(&kv.mod_revision, rev),
            CompareTarget::Version(v) => self.op.holds(&kv.version, v),
            CompareTarget::Value(v) => {
                current.is_some() && self.op.holds(kv.value.as_slice(), v.as_slice())
            }
            CompareTarget::Lease(l) => self.op.holds(&kv.lease, l),
        }
    }
}

/// A put inside a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Put {
    /// The key written.
    pub key: Vec<u8>,
    /// The new value.
    pub value: Vec<u8>,
    /// Attach the key to this lease ([`NO_LEASE`] for none). The lease must exist.
    pub lease: LeaseId,
    /// Return the key's previous state.
    pub prev_kv: bool,
}

/// A delete inside a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delete {
    /// The keys deleted.
    pub range: KeyRange,
    /// Return the deleted keys.
    pub prev_kv: bool,
}

/// One operation of a transaction branch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnOp {
    /// Write a key.
    Put(Put),
    /// Delete keys.
    Delete(Delete),
    /// Read keys, seeing the writes of earlier operations in the same branch.
    Range(RangeRequest),
}

impl TxnOp {
    /// A put without lease.
    pub fn put(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Self {
        TxnOp::Put(Put {
            key: key.into(),
            value: value.into(),
            lease: NO_LEASE,
            prev_kv: false,
        })
    }

    /// A put attached to `lease`.
    pub fn put_with_lease(
        key: impl Into<Vec<u8>>,
        value: impl Into<Vec<u8>>,
        lease: LeaseId,
    ) -> Self {
        TxnOp::Put(Put {
            key: key.into(),
            value: value.into(),
            lease,
            prev_kv: false,
        })
    }

    /// Deletes one key.
    pub fn delete(key: impl Into<Vec<u8>>) -> Self {
        TxnOp::Delete(Delete {
            range: KeyRange::key(key),
            prev_kv: false,
        })
    }

    /// Deletes every key in `range`.
    pub fn delete_range(range: KeyRange) -> Self {
        TxnOp::Delete(Delete {
            range,
            prev_kv: false,
        })
    }

    /// A read.
    pub fn range(request: RangeRequest) -> Self {
        TxnOp::Range(request)
    }
}

/// A transaction: if every compare holds, run `success`, else run `failure`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TxnRequest {
    /// Conditions, all of which must hold for `success` to run.
    pub compares: Vec<Compare>,
    /// Operations run when every compare holds.
    pub success: Vec<TxnOp>,
    /// Operations run otherwise.
    pub failure: Vec<TxnOp>,
}

impl TxnRequest {
    /// An empty transaction.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds conditions.
    pub fn when(mut self, compares: impl IntoIterator<Item = Compare>) -> Self {
        self.compares.extend(compares);
        self
    }

    /// Adds operations to the success branch.
    pub fn and_then(mut self, ops: impl IntoIterator<Item = TxnOp>) -> Self {
        self.success.extend(ops);
        self
    }

    /// Adds operations to the failure branch.
    pub fn or_else(mut self, ops: impl IntoIterator<Item = TxnOp>) -> Self {
        self.failure.extend(ops);
        self
    }

    /// Checks the request as etcd's API layer does before it reaches the store, so that
    /// every backend rejects the same requests.
    ///
    /// # Errors
    /// [`crate::Error::InvalidArgument`] naming the first bad part (the compare, or the
    /// branch and operation): more than [`MAX_TXN_OPS`] compares or operations in a
    /// branch, an empty key, an inverted range, a negative lease or limit, a key put twice
    /// in one branch or put in a range the same branch deletes.
    pub fn validate(&self) -> crate::Result<()> {
        if self.compares.len() > MAX_TXN_OPS {
            return Err(crate::Error::invalid_argument(format!(
                "txn has {} compares; at most {MAX_TXN_OPS} are allowed",
                self.compares.len()
            )));
        }
        for (index, c) in self.compares.iter().enumerate() {
            if c.key.is_empty() {
                return Err(crate::Error::invalid_argument(format!(
                    "txn compare {index}: key must not be empty"
                )));
            }
        }
        for (branch, ops) in [("success", &self.success), ("failure", &self.failure)] {
            if ops.len() > MAX_TXN_OPS {
                return Err(crate::Error::invalid_argument(format!(
                    "txn {branch} branch has {} operations; at most {MAX_TXN_OPS} are allowed",
                    ops.len()
                )));
            }
            for (index, op) in ops.iter().enumerate() {
                op.validate().map_err(|e| match e {
                    crate::Error::InvalidArgument { message } => crate::Error::invalid_argument(
                        format!("txn {branch} branch, operation {index}: {message}"),
                    ),
                    other => other,
                })?;
            }
            check_duplicate_writes(branch, ops)?;
        }
        Ok(())
    }
}

impl TxnOp {
    fn validate(&self) -> crate::Result<()> {
        match self {
            TxnOp::Put(p) => {
                if p.key.is_empty() {
                    return Err(crate::Error::invalid_argument("put key must not be empty"));
                }
                if p.lease < 0 {
                    return Err(crate::Error::invalid_argument(format!(
                        "lease id must not be negative, got {}",
                        p.lease
                    )));
                }
                Ok(())
            }
            TxnOp::Delete(d) => d.range.validate(),
            TxnOp::Range(r) => r.validate(),
        }
    }
}

/// The most compares, and separately the most operations one branch, a txn may hold:
/// etcd's default `--max-txn-ops`, which etcd enforces on all three.
pub const MAX_TXN_OPS: usize = 128;

/// etcd rejects a branch that puts one key twice, or puts a key that the same branch
/// deletes, whatever the order of the two (its `checkIntervals`).
fn check_duplicate_writes(branch: &str, ops: &[TxnOp]) -> crate::Result<()> {
    let deletes: Vec<&KeyRange> = ops
        .iter()
        .filter_map(|op| match op {
            TxnOp::Delete(d) => Some(&d.range),
            _ => None,
        })
        .collect();
    // Branches are short (most put one key): a scan of the earlier puts beats a hash set.
    for (i, op) in ops.iter().enumerate() {
        let TxnOp::Put(p) = op else { continue };
        let key = || String::from_utf8_lossy(&p.key);
        let put_before = ops[..i]
            .iter()
            .any(|earlier| matches!(earlier, TxnOp::Put(e) if e.key == p.key));
        if put_before {
            return Err(crate::Error::invalid_argument(format!(
                "txn {branch} branch puts key {:?} more than once",
                key()
            )));
        }
        if deletes.iter().any(|range| range.contains(&p.key)) {
            return Err(crate::Error::invalid_argument(format!(
                "txn {branch} branch both puts and deletes key {:?}",
                key()
            )));
        }
    }
    Ok(())
}

/// What one operation of the branch that ran returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnOpResponse {
    /// For [`TxnOp::Put`].
    Put {
        /// The key before the put, if asked for and the key existed.
        prev_kv: Option<KeyValue>,
    },
    /// For [`TxnOp::Delete`].
    Delete {
        /// How many keys were deleted.
        deleted: i64,
        /// The deleted keys, if asked for.
        prev_kvs: Vec<KeyValue>,
    },
    /// For [`TxnOp::Range`].
    Range(RangeResponse),
}

impl TxnOpResponse {
    /// The range response, if this was a range.
    pub fn into_range(self) -> Option<RangeResponse> {
        match self {
            TxnOpResponse::Range(r) => Some(r),
            _ => None,
        }
    }
}

/// The result of a [`TxnRequest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnResponse {
    /// Whether every compare held (so `success` ran).
    pub succeeded: bool,
    /// The store revision after the transaction: the new revision if it wrote anything.
    pub revision: Revision,
    /// One response per operation of the branch that ran, in order.
    pub responses: Vec<TxnOpResponse>,
}

impl TxnResponse {
    /// The range response at `index`.
    ///
    /// # Errors
    /// [`crate::Error::Contract`] if the backend returned a different shape than was asked for,
    /// which is a backend bug.
    pub fn range(&self, index: usize) -> crate::Result<&RangeResponse> {
        match self.responses.get(index) {
            Some(TxnOpResponse::Range(r)) => Ok(r),
            other => Err(crate::Error::contract(format!(
                "txn response {index} is not a range: {other:?}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(request: TxnRequest) -> String {
        match request.validate() {
            Err(crate::Error::InvalidArgument { message }) => message,
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }

    // Which requests are rejected is the conformance suite's business (every backend runs
    // it); this checks that the message says what is wrong and where.
    #[test]
    fn validate_names_the_branch_operation_and_key_at_fault() {
        let put = |key: &str| TxnOp::put(key, "v");
        assert_eq!(
            message(TxnRequest::new().or_else([put("a"), put("b"), put("b")])),
            r#"txn failure branch puts key "b" more than once"#
        );
        assert_eq!(
            message(
                TxnRequest::new()
                    .and_then([put("a/1"), TxnOp::delete_range(KeyRange::prefix("a/"))])
            ),
            r#"txn success branch both puts and deletes key "a/1""#
        );
        assert_eq!(
            message(TxnRequest::new().and_then([put("a"), put("")])),
            "txn success branch, operation 1: put key must not be empty"
        );
        assert_eq!(
            message(TxnRequest::new().or_else([TxnOp::delete_range(KeyRange::range("b", "a"))])),
            r#"txn failure branch, operation 0: empty key range: start "b" is not below end "a""#
        );
        assert_eq!(
            message(TxnRequest::new().when([
                Compare::version("a", CompareOp::Equal, 0),
                Compare::version("", CompareOp::Equal, 0),
            ])),
            "txn compare 1: key must not be empty"
        );
        let compares =
            (0..=MAX_TXN_OPS).map(|i| Compare::version(format!("k{i}"), CompareOp::Equal, 0));
        assert_eq!(
            message(TxnRequest::new().when(compares)),
            "txn has 129 compares; at most 128 are allowed"
        );
    }
}
