//! The scripts' wire format: requests go in as JSON, answers come back as msgpack (decoded
//! into JSON values, numbers exact at 16 digits), keys and values hex-encoded (cjson passes
//! bytes through unescaped, and the answers' strings must be UTF-8).

use std::time::Duration;

use coord_core::{
    CompareOp, CompareTarget, Error, KeyRange, KeyValue, RangeRequest, RangeResponse, Result,
    SortOrder, SortTarget, TxnOp, TxnOpResponse, TxnRequest, prefix_end,
};
use serde_json::{Value, json};

pub(crate) fn contract(what: &str, reply: &Value) -> Error {
    Error::contract(format!("redis script answered {what}: {reply}"))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

pub(crate) fn duration_ms(ms: i64) -> Duration {
    Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// The key selection of a range as the scripts take it: one key, or `[lo, hi)` with no
/// `hi` meaning "to the end".
fn range_json(range: &KeyRange) -> Value {
    match range {
        KeyRange::Key(k) => json!({ "key": hex(k) }),
        KeyRange::Prefix(p) => {
            let end = prefix_end(p);
            if end == [0] {
                json!({ "lo": hex(p) })
            } else {
                json!({ "lo": hex(p), "hi": hex(&end) })
            }
        }
        KeyRange::Range { start, end } => json!({ "lo": hex(start), "hi": hex(end) }),
    }
}

fn range_request_json(r: &RangeRequest) -> Value {
    let mut v = range_json(&r.range);
    let sort = match r.sort {
        None | Some((SortTarget::Key, SortOrder::Ascend)) => None,
        Some((SortTarget::Key, SortOrder::Descend)) => Some("kd"),
        Some((SortTarget::CreateRevision, SortOrder::Ascend)) => Some("ca"),
        Some((SortTarget::CreateRevision, SortOrder::Descend)) => Some("cd"),
        Some((SortTarget::ModRevision, SortOrder::Ascend)) => Some("ma"),
        Some((SortTarget::ModRevision, SortOrder::Descend)) => Some("md"),
    };
    let obj = v.as_object_mut().expect("range_json makes objects");
    if let Some(sort) = sort {
        obj.insert("sort".into(), sort.into());
    }
    obj.insert("limit".into(), r.limit.into());
    obj.insert("minc".into(), r.min_create_revision.into());
    obj.insert("maxc".into(), r.max_create_revision.into());
    obj.insert("ko".into(), r.keys_only.into());
    obj.insert("co".into(), r.count_only.into());
    v
}

fn op_json(op: &TxnOp) -> Value {
    match op {
        TxnOp::Put(p) => json!({
            "o": "put", "k": hex(&p.key), "v": hex(&p.value), "l": p.lease, "p": p.prev_kv,
        }),
        TxnOp::Delete(d) => json!({ "o": "del", "r": range_json(&d.range), "p": d.prev_kv }),
        TxnOp::Range(r) => json!({ "o": "range", "r": range_request_json(r) }),
    }
}

pub(crate) fn txn_json(request: &TxnRequest) -> String {
    let compares: Vec<Value> = request
        .compares
        .iter()
        .map(|c| {
            let (t, x) = match &c.target {
                CompareTarget::CreateRevision(r) => ("c", json!(r)),
                CompareTarget::ModRevision(r) => ("m", json!(r)),
                CompareTarget::Version(v) => ("ver", json!(v)),
                CompareTarget::Lease(l) => ("l", json!(l)),
                // Hex keeps byte order, and Lua compares its strings with strcoll.
                CompareTarget::Value(v) => ("v", json!(hex(v))),
            };
            let op = match c.op {
                CompareOp::Equal => "=",
                CompareOp::NotEqual => "!=",
                CompareOp::Less => "<",
                CompareOp::Greater => ">",
            };
            json!({ "k": hex(&c.key), "t": t, "op": op, "x": x })
        })
        .collect();
    json!({
        "cmp": compares,
        "ok": request.success.iter().map(op_json).collect::<Vec<_>>(),
        "els": request.failure.iter().map(op_json).collect::<Vec<_>>(),
    })
    .to_string()
}

/// cjson writes an empty Lua table as `{}`, so an empty list may arrive as an object.
pub(crate) fn list(v: &Value) -> &[Value] {
    v.as_array().map_or(&[], Vec::as_slice)
}

pub(crate) fn int(v: &Value, field: &str) -> Result<i64> {
    v.get(field)
        .and_then(|x| x.as_i64().or_else(|| x.as_f64().map(|f| f as i64)))
        .ok_or_else(|| contract(&format!("no number {field:?}"), v))
}

fn bytes(v: &Value, field: &str) -> Result<Vec<u8>> {
    v.get(field)
        .and_then(Value::as_str)
        .and_then(unhex)
        .ok_or_else(|| contract(&format!("no hex {field:?}"), v))
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
                Value::Object(_) => Some(kv_of(&v["p"])?),
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
