//! Range reads: filter, sort, limit, count, keys-only, count-only.

use coord_core::{
    BackendExt, CoordinationBackend, Error, KeyRange, KeyValue, NO_LEASE, RangeRequest, SortOrder,
    SortTarget,
};

use crate::MemoryBackend;

fn keys(kvs: &[KeyValue]) -> Vec<String> {
    kvs.iter().map(|kv| kv.key_str().into_owned()).collect()
}

/// Keys under `p/` created in the order d, b, e, a, c (revisions 2..=6), then `p/b` updated
/// (revision 7), plus keys outside the prefix.
async fn fixture() -> MemoryBackend {
    let b = MemoryBackend::new();
    for k in ["p/d", "p/b", "p/e", "p/a", "p/c", "p/b", "q", "o"] {
        b.put(k.as_bytes(), format!("v-{k}").as_bytes(), NO_LEASE)
            .await
            .unwrap();
    }
    b
}

#[tokio::test(start_paused = true)]
async fn default_order_is_key_ascending() {
    let b = fixture().await;
    let resp = b.range(RangeRequest::prefix("p/")).await.unwrap();
    assert_eq!(keys(&resp.kvs), ["p/a", "p/b", "p/c", "p/d", "p/e"]);
    assert_eq!(resp.count, 5);
    assert!(!resp.more);
    assert_eq!(resp.revision, 9);
    assert_eq!(resp.kvs[1].value, b"v-p/b");
}

#[tokio::test(start_paused = true)]
async fn sorts_by_each_target_and_order() {
    let b = fixture().await;
    let sorted = |target, order| {
        let b = b.clone();
        async move {
            keys(
                &b.range(RangeRequest::prefix("p/").sort(target, order))
                    .await
                    .unwrap()
                    .kvs,
            )
        }
    };
    use SortOrder::{Ascend, Descend};
    use SortTarget::{CreateRevision, Key, ModRevision};
    assert_eq!(
        sorted(Key, Ascend).await,
        ["p/a", "p/b", "p/c", "p/d", "p/e"]
    );
    assert_eq!(
        sorted(Key, Descend).await,
        ["p/e", "p/d", "p/c", "p/b", "p/a"]
    );
    assert_eq!(
        sorted(CreateRevision, Ascend).await,
        ["p/d", "p/b", "p/e", "p/a", "p/c"]
    );
    assert_eq!(
        sorted(CreateRevision, Descend).await,
        ["p/c", "p/a", "p/e", "p/b", "p/d"]
    );
    assert_eq!(
        sorted(ModRevision, Ascend).await,
        ["p/d", "p/e", "p/a", "p/c", "p/b"]
    );
    assert_eq!(
        sorted(ModRevision, Descend).await,
        ["p/b", "p/c", "p/a", "p/e", "p/d"]
    );
}

#[tokio::test(start_paused = true)]
async fn filter_then_sort_then_limit_with_more_and_count() {
    let b = fixture().await;
    // The predecessor of a key created at revision 5: newest created at or before 4.
    let resp = b
        .range(RangeRequest::last_created_before("p/", 4))
        .await
        .unwrap();
    assert_eq!(keys(&resp.kvs), ["p/e"]);
    assert!(resp.more, "p/d and p/b were cut by the limit");
    assert_eq!(resp.count, 5, "count is taken before the filters");

    let resp = b.range(RangeRequest::first_created("p/")).await.unwrap();
    assert_eq!(keys(&resp.kvs), ["p/d"]);
    assert!(resp.more);

    let resp = b
        .range(
            RangeRequest::prefix("p/")
                .min_create_revision(3)
                .max_create_revision(5)
                .sort(SortTarget::Key, SortOrder::Descend)
                .limit(2),
        )
        .await
        .unwrap();
    assert_eq!(keys(&resp.kvs), ["p/e", "p/b"]);
    assert!(resp.more);
    assert_eq!(resp.count, 5);

    // A limit that cuts nothing off.
    let resp = b
        .range(RangeRequest::prefix("p/").min_create_revision(5).limit(2))
        .await
        .unwrap();
    assert_eq!(keys(&resp.kvs), ["p/a", "p/c"]);
    assert!(!resp.more);

    // Filters that leave nothing.
    let resp = b
        .range(RangeRequest::prefix("p/").max_create_revision(1))
        .await
        .unwrap();
    assert!(resp.kvs.is_empty() && !resp.more);
    assert_eq!(resp.count, 5);
}

#[tokio::test(start_paused = true)]
async fn keys_only_and_count_only() {
    let b = fixture().await;
    let resp = b
        .range(RangeRequest::prefix("p/").keys_only().limit(2))
        .await
        .unwrap();
    assert_eq!(keys(&resp.kvs), ["p/a", "p/b"]);
    assert!(resp.kvs.iter().all(|kv| kv.value.is_empty()));
    assert_eq!(resp.kvs[1].version, 2);
    assert_eq!(resp.kvs[1].create_revision, 3);

    let resp = b
        .range(RangeRequest::prefix("p/").count_only().limit(1))
        .await
        .unwrap();
    assert!(resp.kvs.is_empty());
    assert!(!resp.more);
    assert_eq!(resp.count, 5);
}

#[tokio::test(start_paused = true)]
async fn key_ranges() {
    let b = fixture().await;
    let resp = b.range(RangeRequest::key("p/a")).await.unwrap();
    assert_eq!((keys(&resp.kvs), resp.count), (vec!["p/a".to_string()], 1));
    let resp = b.range(RangeRequest::key("p/")).await.unwrap();
    assert_eq!((resp.kvs.len(), resp.count), (0, 0));
    let resp = b
        .range(RangeRequest::new(KeyRange::range("p/b", "p/d")))
        .await
        .unwrap();
    assert_eq!(keys(&resp.kvs), ["p/b", "p/c"]);
    let resp = b.range(RangeRequest::prefix("")).await.unwrap();
    assert_eq!(resp.count, 7);
    assert_eq!(resp.kvs.first().unwrap().key, b"o");

    // Prefixes ending in 0xff bytes.
    b.put(&[0xff, 0xff], b"x", NO_LEASE).await.unwrap();
    b.put(&[0xff, 0xff, 0x01], b"x", NO_LEASE).await.unwrap();
    b.put(&[0xfe], b"x", NO_LEASE).await.unwrap();
    let resp = b
        .range(RangeRequest::prefix(vec![0xff_u8, 0xff]))
        .await
        .unwrap();
    assert_eq!(resp.count, 2);
}

#[tokio::test(start_paused = true)]
async fn invalid_ranges_are_rejected() {
    let b = MemoryBackend::new();
    for request in [
        RangeRequest::key(""),
        RangeRequest::new(KeyRange::range("b", "b")),
        RangeRequest::prefix("a").limit(-1),
        RangeRequest::prefix("a").min_create_revision(-1),
    ] {
        let err = b.range(request.clone()).await.unwrap_err();
        assert!(matches!(err, Error::InvalidArgument { .. }), "{request:?}");
    }
}
