//! The scripts' wire format: msgpack both ways. Requests are written here and read in Lua
//! with `cmsgpack.unpack`; answers are written in Lua with `cmsgpack.pack` and read here.
//! Keys and values travel as raw bytes in msgpack strings (Redis' cmsgpack reads no `bin`
//! type, and Lua strings are bytes), and cmsgpack writes integral numbers as integers, so
//! 16-digit revisions arrive exact.

use std::time::Duration;

use coord_core::{
    CompareOp, CompareTarget, Error, KeyRange, KeyValue, RangeRequest, RangeResponse, Result,
    SortOrder, SortTarget, TxnOp, TxnOpResponse, TxnRequest, prefix_end,
};
pub(crate) use rmpv::Value;

pub(crate) fn contract(what: &str, reply: &Value) -> Error {
    Error::contract(format!("redis script answered {what}: {reply}"))
}

/// Decodes a script's answer.
pub(crate) fn decode(reply: &[u8], what: &str) -> Result<Value> {
    rmpv::decode::read_value(&mut &reply[..]).map_err(|e| {
        Error::contract(format!(
            "redis {what} script answered {:?}: {e}",
            String::from_utf8_lossy(reply)
        ))
    })
}

pub(crate) fn duration_ms(ms: i64) -> Duration {
    Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// A msgpack writer into memory (which cannot fail).
#[derive(Default)]
struct Writer(Vec<u8>);

impl Writer {
    fn map(&mut self, fields: u32) -> &mut Self {
        rmp::encode::write_map_len(&mut self.0, fields).expect("writes to memory");
        self
    }

    fn array(&mut self, items: usize) -> &mut Self {
        let len = u32::try_from(items).expect("fewer than 2^32 items");
        rmp::encode::write_array_len(&mut self.0, len).expect("writes to memory");
        self
    }

    /// A string of any bytes: cmsgpack gives Lua the bytes as they are.
    fn bytes(&mut self, bytes: &[u8]) -> &mut Self {
        let len = u32::try_from(bytes.len()).expect("values below 4 GiB");
        rmp::encode::write_str_len(&mut self.0, len).expect("writes to memory");
        self.0.extend_from_slice(bytes);
        self
    }

    fn str(&mut self, text: &str) -> &mut Self {
        self.bytes(text.as_bytes())
    }

    fn int(&mut self, n: i64) -> &mut Self {
        rmp::encode::write_sint(&mut self.0, n).expect("writes to memory");
        self
    }

    fn bool(&mut self, b: bool) -> &mut Self {
        rmp::encode::write_bool(&mut self.0, b).expect("writes to memory");
        self
    }

    /// A key selection: `key`, or `lo` and (unless the range runs to the end) `hi`, as
    /// fields of the map being written (`extra` more fields follow).
    fn range(&mut self, range: &KeyRange, extra: u32) -> &mut Self {
        match range {
            KeyRange::Key(k) => self.map(1 + extra).str("key").bytes(k),
            KeyRange::Prefix(p) => {
                let end = prefix_end(p);
                if end == [0] {
                    self.map(1 + extra).str("lo").bytes(p)
                } else {
                    self.map(2 + extra).str("lo").bytes(p).str("hi").bytes(&end)
                }
            }
            KeyRange::Range { start, end } => self
                .map(2 + extra)
                .str("lo")
                .bytes(start)
                .str("hi")
                .bytes(end),
        }
    }

    fn range_request(&mut self, r: &RangeRequest) -> &mut Self {
        let sort = match r.sort {
            None | Some((SortTarget::Key, SortOrder::Ascend)) => None,
            Some((SortTarget::Key, SortOrder::Descend)) => Some("kd"),
            Some((SortTarget::CreateRevision, SortOrder::Ascend)) => Some("ca"),
            Some((SortTarget::CreateRevision, SortOrder::Descend)) => Some("cd"),
            Some((SortTarget::ModRevision, SortOrder::Ascend)) => Some("ma"),
            Some((SortTarget::ModRevision, SortOrder::Descend)) => Some("md"),
        };
        self.range(&r.range, 5 + u32::from(sort.is_some()));
        if let Some(sort) = sort {
            self.str("sort").str(sort);
        }
        self.str("limit")
            .int(r.limit)
            .str("minc")
            .int(r.min_create_revision)
            .str("maxc")
            .int(r.max_create_revision)
            .str("ko")
            .bool(r.keys_only)
            .str("co")
            .bool(r.count_only)
    }

    fn op(&mut self, op: &TxnOp) -> &mut Self {
        match op {
            TxnOp::Put(p) => self
                .map(5)
                .str("o")
                .str("put")
                .str("k")
                .bytes(&p.key)
                .str("v")
                .bytes(&p.value)
                .str("l")
                .int(p.lease)
                .str("p")
                .bool(p.prev_kv),
            TxnOp::Delete(d) => self
                .map(3)
                .str("o")
                .str("del")
                .str("p")
                .bool(d.prev_kv)
                .str("r")
                .range(&d.range, 0),
            TxnOp::Range(r) => self.map(2).str("o").str("range").str("r").range_request(r),
        }
    }

    fn ops(&mut self, ops: &[TxnOp]) -> &mut Self {
        self.array(ops.len());
        for op in ops {
            self.op(op);
        }
        self
    }
}

/// A txn request as `txn.lua` reads it: `cmp` (key `k`, target `t`, operator `op`, operand
/// `x`), then the operations of each branch, `ok` and `els`.
pub(crate) fn txn_request(request: &TxnRequest) -> Vec<u8> {
    let mut w = Writer::default();
    w.map(3).str("cmp").array(request.compares.len());
    for c in &request.compares {
        let op = match c.op {
            CompareOp::Equal => "=",
            CompareOp::NotEqual => "!=",
            CompareOp::Less => "<",
            CompareOp::Greater => ">",
        };
        w.map(4).str("k").bytes(&c.key).str("op").str(op);
        match &c.target {
            CompareTarget::CreateRevision(r) => w.str("t").str("c").str("x").int(*r),
            CompareTarget::ModRevision(r) => w.str("t").str("m").str("x").int(*r),
            CompareTarget::Version(v) => w.str("t").str("ver").str("x").int(*v),
            CompareTarget::Lease(l) => w.str("t").str("l").str("x").int(*l),
            CompareTarget::Value(v) => w.str("t").str("v").str("x").bytes(v),
        };
    }
    w.str("ok").ops(&request.success);
    w.str("els").ops(&request.failure);
    w.0
}

/// cmsgpack writes an empty Lua table as an empty map, so an empty list may arrive as one.
pub(crate) fn list(v: &Value) -> &[Value] {
    v.as_array().map_or(&[], Vec::as_slice)
}

pub(crate) fn int(v: &Value, field: &str) -> Result<i64> {
    let x = &v[field];
    x.as_i64()
        .or_else(|| x.as_f64().map(|f| f as i64))
        .ok_or_else(|| contract(&format!("no number {field:?}"), v))
}

fn bytes(v: &Value, field: &str) -> Result<Vec<u8>> {
    v[field]
        .as_slice()
        .map(<[u8]>::to_vec)
        .ok_or_else(|| contract(&format!("no string {field:?}"), v))
}

fn kv_of(v: &Value) -> Result<KeyValue> {
    Ok(KeyValue {
        key: bytes(v, "k")?,
        value: bytes(v, "v")?,
        create_revision: int(v, "c")?,
        mod_revision: int(v, "m")?,
        version: int(v, "ver")?,
        lease: int(v, "l")?,
    })
}

fn range_response_of(v: &Value) -> Result<RangeResponse> {
    Ok(RangeResponse {
        kvs: list(&v["kvs"]).iter().map(kv_of).collect::<Result<_>>()?,
        more: v["more"].as_bool().unwrap_or(false),
        count: int(v, "count")?,
        revision: int(v, "rev")?,
    })
}

pub(crate) fn op_response_of(op: &TxnOp, v: &Value) -> Result<TxnOpResponse> {
    Ok(match op {
        TxnOp::Put(_) => TxnOpResponse::Put {
            prev_kv: match &v["p"] {
                Value::Map(m) if !m.is_empty() => Some(kv_of(&v["p"])?),
                _ => None,
            },
        },
        TxnOp::Delete(_) => TxnOpResponse::Delete {
            deleted: int(v, "n")?,
            prev_kvs: list(&v["p"]).iter().map(kv_of).collect::<Result<_>>()?,
        },
        TxnOp::Range(_) => TxnOpResponse::Range(range_response_of(v)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_values_travel_as_raw_bytes_and_numbers_exact() {
        let key = vec![0, 0xff, b'k'];
        let request = TxnRequest::new()
            .when([coord_core::Compare::create_revision(
                key.clone(),
                CompareOp::Equal,
                1_800_000_000_000_001,
            )])
            .and_then([TxnOp::put(key.clone(), vec![0xfe, 0])]);
        let v = decode(&txn_request(&request), "test").unwrap();
        let cmp = &list(&v["cmp"])[0];
        assert_eq!(cmp["k"].as_slice(), Some(&key[..]));
        assert_eq!(cmp["x"].as_i64(), Some(1_800_000_000_000_001));
        let put = &list(&v["ok"])[0];
        assert_eq!(put["v"].as_slice(), Some(&[0xfe, 0][..]));
        assert!(list(&v["els"]).is_empty());
    }
}
