//! Conveniences over the contract, implemented once for every backend.

use async_trait::async_trait;

use crate::{
    CoordinationBackend, KeyRange, KeyValue, LeaseId, RangeRequest, Result, Revision, TxnOp,
    TxnOpResponse, TxnRequest,
};

/// Plain get / put / delete, each a one-operation txn or range.
#[async_trait]
pub trait BackendExt: CoordinationBackend {
    /// Reads one key.
    ///
    /// # Errors
    /// As [`CoordinationBackend::range`].
    ///
    /// # Cancel safety
    /// Cancel safe.
    async fn get(&self, key: &[u8]) -> Result<Option<KeyValue>> {
        let mut resp = self.range(RangeRequest::key(key)).await?;
        Ok(resp.kvs.pop())
    }

    /// Writes one key (attached to `lease` unless it is [`crate::NO_LEASE`]) and returns
    /// the revision of the write.
    ///
    /// # Errors
    /// As [`CoordinationBackend::txn`].
    ///
    /// # Cancel safety
    /// As [`CoordinationBackend::txn`].
    async fn put(&self, key: &[u8], value: &[u8], lease: LeaseId) -> Result<Revision> {
        let resp = self
            .txn(TxnRequest::new().and_then([TxnOp::put_with_lease(key, value, lease)]))
            .await?;
        Ok(resp.revision)
    }

    /// Deletes keys and returns how many were deleted.
    ///
    /// # Errors
    /// As [`CoordinationBackend::txn`].
    ///
    /// # Cancel safety
    /// As [`CoordinationBackend::txn`].
    async fn delete(&self, range: KeyRange) -> Result<i64> {
        let resp = self
            .txn(TxnRequest::new().and_then([TxnOp::delete_range(range)]))
            .await?;
        Ok(match resp.responses.first() {
            Some(TxnOpResponse::Delete { deleted, .. }) => *deleted,
            _ => 0,
        })
    }
}

impl<T: CoordinationBackend + ?Sized> BackendExt for T {}
