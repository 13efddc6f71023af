//! Conversions between coord's request/response types and etcd-client's, with the
//! namespace prefix applied on the way in and stripped on the way out.

use coord_core::{
    Compare, CompareOp, CompareTarget, KeyRange, KeyValue, NO_LEASE, RangeRequest, RangeResponse,
    Revision, SortOrder, SortTarget, TxnOp, TxnOpResponse, TxnRequest, TxnResponse, prefix_end,
};
use etcd_client as ec;

/// A key namespace: a prefix added to every key sent and removed from every key received.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Namespace {
    prefix: Vec<u8>,
}

impl Namespace {
    pub(crate) fn new(prefix: Vec<u8>) -> Self {
        Namespace { prefix }
    }

    pub(crate) fn prefix(&self) -> &[u8] {
        &self.prefix
    }

    /// The key as stored in etcd.
    pub(crate) fn key(&self, key: &[u8]) -> Vec<u8> {
        let mut k = Vec::with_capacity(self.prefix.len() + key.len());
        k.extend_from_slice(&self.prefix);
        k.extend_from_slice(key);
        k
    }

    /// The range as etcd's `(key, range_end)`, confined to the namespace. An empty
    /// `range_end` means one key.
    pub(crate) fn bounds(&self, range: &KeyRange) -> (Vec<u8>, Vec<u8>) {
        match range {
            KeyRange::Key(k) => (self.key(k), Vec::new()),
            KeyRange::Prefix(p) => {
                let full = self.key(p);
                if full.is_empty() {
                    // Every key: etcd's ("\0", "\0").
                    (vec![0], vec![0])
                } else {
                    let end = prefix_end(&full);
                    (full, end)
                }
            }
            KeyRange::Range { start, end } => {
                let mut s = self.key(start);
                if s.is_empty() {
                    // etcd rejects an empty key; "\0" is the smallest non-empty key and no key
                    // is empty, so the range is the same.
                    s = vec![0];
                }
                (s, self.key(end))
            }
        }
    }

    /// The key as the caller knows it. Keys outside the namespace (which etcd never returns
    /// for a namespaced request) are passed through unchanged.
    pub(crate) fn strip(&self, mut key: Vec<u8>) -> Vec<u8> {
        if !self.prefix.is_empty() && key.starts_with(&self.prefix) {
            key.drain(..self.prefix.len());
        }
        key
    }

    /// An etcd key-value as coord's, namespace stripped.
    pub(crate) fn kv(&self, kv: &ec::KeyValue) -> KeyValue {
        KeyValue {
            key: self.strip(kv.key().to_vec()),
            value: kv.value().to_vec(),
            create_revision: kv.create_revision(),
            mod_revision: kv.mod_revision(),
            version: kv.version(),
            lease: kv.lease(),
        }
    }

    /// The `GetOptions` for a range request (the key goes separately).
    pub(crate) fn get_options(&self, req: &RangeRequest) -> (Vec<u8>, ec::GetOptions) {
        let (key, end) = self.bounds(&req.range);
        let mut o = ec::GetOptions::new();
        if !end.is_empty() {
            o = o.with_range(end);
        }
        if let Some((target, order)) = req.sort {
            let target = match target {
                SortTarget::Key => ec::SortTarget::Key,
                SortTarget::CreateRevision => ec::SortTarget::Create,
                SortTarget::ModRevision => ec::SortTarget::Mod,
            };
            let order = match order {
                SortOrder::Ascend => ec::SortOrder::Ascend,
                SortOrder::Descend => ec::SortOrder::Descend,
            };
            o = o.with_sort(target, order);
        }
        if req.limit > 0 {
            o = o.with_limit(req.limit);
        }
        if req.min_create_revision > 0 {
            o = o.with_min_create_revision(req.min_create_revision);
        }
        if req.max_create_revision > 0 {
            o = o.with_max_create_revision(req.max_create_revision);
        }
        if req.keys_only {
            o = o.with_keys_only();
        }
        if req.count_only {
            o = o.with_count_only();
        }
        (key, o)
    }

    /// A range response; `fallback_revision` is used when the response has no header
    /// (inside a txn).
    pub(crate) fn range_response(
        &self,
        resp: &ec::GetResponse,
        fallback_revision: Revision,
    ) -> RangeResponse {
        let revision = resp
            .header()
            .map(|h| h.revision())
            .filter(|r| *r > 0)
            .unwrap_or(fallback_revision);
        RangeResponse {
            kvs: resp.kvs().iter().map(|kv| self.kv(kv)).collect(),
            more: resp.more(),
            count: resp.count(),
            revision,
        }
    }

    fn compare(&self, c: &Compare) -> ec::Compare {
        let op = match c.op {
            CompareOp::Equal => ec::CompareOp::Equal,
            CompareOp::NotEqual => ec::CompareOp::NotEqual,
            CompareOp::Less => ec::CompareOp::Less,
            CompareOp::Greater => ec::CompareOp::Greater,
        };
        let key = self.key(&c.key);
        match &c.target {
            CompareTarget::CreateRevision(r) => ec::Compare::create_revision(key, op, *r),
            CompareTarget::ModRevision(r) => ec::Compare::mod_revision(key, op, *r),
            CompareTarget::Version(v) => ec::Compare::version(key, op, *v),
            CompareTarget::Value(v) => ec::Compare::value(key, op, v.clone()),
            CompareTarget::Lease(l) => ec::Compare::lease(key, op, *l),
        }
    }

    fn op(&self, op: &TxnOp) -> ec::TxnOp {
        match op {
            TxnOp::Put(p) => {
                let mut o = ec::PutOptions::new();
                if p.lease != NO_LEASE {
                    o = o.with_lease(p.lease);
                }
                if p.prev_kv {
                    o = o.with_prev_key();
                }
                ec::TxnOp::put(self.key(&p.key), p.value.clone(), Some(o))
            }
            TxnOp::Delete(d) => {
                let (key, end) = self.bounds(&d.range);
                let mut o = ec::DeleteOptions::new();
                if !end.is_empty() {
                    o = o.with_range(end);
                }
                if d.prev_kv {
                    o = o.with_prev_key();
                }
                ec::TxnOp::delete(key, Some(o))
            }
            TxnOp::Range(r) => {
                let (key, o) = self.get_options(r);
                ec::TxnOp::get(key, Some(o))
            }
        }
    }

    /// The etcd txn for a request. Each clause of etcd-client's builder is called exactly
    /// once (calling one twice panics).
    pub(crate) fn txn(&self, req: &TxnRequest) -> ec::Txn {
        let compares: Vec<ec::Compare> = req.compares.iter().map(|c| self.compare(c)).collect();
        let success: Vec<ec::TxnOp> = req.success.iter().map(|o| self.op(o)).collect();
        let failure: Vec<ec::TxnOp> = req.failure.iter().map(|o| self.op(o)).collect();
        ec::Txn::new()
            .when(compares)
            .and_then(success)
            .or_else(failure)
    }

    /// A txn response, one entry per operation of the branch that ran.
    pub(crate) fn txn_response(&self, resp: &ec::TxnResponse) -> TxnResponse {
        let revision = resp.header().map(|h| h.revision()).unwrap_or(0);
        let responses = resp
            .op_responses()
            .iter()
            .map(|r| match r {
                ec::TxnOpResponse::Put(p) => TxnOpResponse::Put {
                    prev_kv: p.prev_key().map(|kv| self.kv(kv)),
                },
                ec::TxnOpResponse::Delete(d) => TxnOpResponse::Delete {
                    deleted: d.deleted(),
                    prev_kvs: d.prev_kvs().iter().map(|kv| self.kv(kv)).collect(),
                },
                ec::TxnOpResponse::Get(g) => TxnOpResponse::Range(self.range_response(g, revision)),
                // coord never sends nested txns.
                ec::TxnOpResponse::Txn(_) => TxnOpResponse::Range(RangeResponse {
                    revision,
                    ..RangeResponse::default()
                }),
            })
            .collect();
        TxnResponse {
            succeeded: resp.succeeded(),
            revision,
            responses,
        }
    }
}

/// The one lease named by the puts of a txn, for [`coord_core::Error::LeaseNotFound`]:
/// `None` when they name none or several, as etcd's error does not say which is missing.
pub(crate) fn txn_lease(req: &TxnRequest) -> Option<coord_core::LeaseId> {
    let mut found = None;
    for op in req.success.iter().chain(&req.failure) {
        if let TxnOp::Put(p) = op
            && p.lease != NO_LEASE
        {
            if found.is_some_and(|l| l != p.lease) {
                return None;
            }
            found = Some(p.lease);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_without_namespace() {
        let ns = Namespace::default();
        assert_eq!(ns.bounds(&KeyRange::key("a")), (b"a".to_vec(), vec![]));
        assert_eq!(ns.bounds(&KeyRange::prefix("")), (vec![0], vec![0]));
        assert_eq!(
            ns.bounds(&KeyRange::prefix("a/")),
            (b"a/".to_vec(), b"a0".to_vec())
        );
        assert_eq!(
            ns.bounds(&KeyRange::range("", "b")),
            (vec![0], b"b".to_vec())
        );
    }

    #[test]
    fn bounds_stay_inside_the_namespace() {
        let ns = Namespace::new(b"ns/".to_vec());
        assert_eq!(ns.bounds(&KeyRange::key("a")), (b"ns/a".to_vec(), vec![]));
        assert_eq!(
            ns.bounds(&KeyRange::prefix("")),
            (b"ns/".to_vec(), b"ns0".to_vec())
        );
        assert_eq!(
            ns.bounds(&KeyRange::prefix("x")),
            (b"ns/x".to_vec(), b"ns/y".to_vec())
        );
        assert_eq!(
            ns.bounds(&KeyRange::range("a", "c")),
            (b"ns/a".to_vec(), b"ns/c".to_vec())
        );
        assert_eq!(ns.strip(b"ns/a".to_vec()), b"a".to_vec());
        assert_eq!(ns.strip(b"other".to_vec()), b"other".to_vec());
    }

    #[test]
    fn txn_lease_is_the_single_lease_named() {
        let t = TxnRequest::new().and_then([
            TxnOp::put_with_lease("a", "", 5),
            TxnOp::put("b", ""),
            TxnOp::put_with_lease("c", "", 5),
        ]);
        assert_eq!(txn_lease(&t), Some(5));
        let t = t.or_else([TxnOp::put_with_lease("d", "", 6)]);
        assert_eq!(txn_lease(&t), None);
        assert_eq!(
            txn_lease(&TxnRequest::new().and_then([TxnOp::put("b", "")])),
            None
        );
    }
}
