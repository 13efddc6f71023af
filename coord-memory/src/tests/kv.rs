//! The store itself: clients of one store, and the store on a multi-thread runtime. What
//! every backend does with keys and txns is checked by the conformance suite.

use std::time::Duration;

use coord_core::{
    BackendExt, Compare, CompareOp, CoordinationBackend, NO_LEASE, TxnOp, TxnRequest,
};

use crate::MemoryBackend;

#[test]
fn new_works_outside_a_runtime_and_clones_share_the_store() {
    let b = MemoryBackend::default();
    let c = b.clone();
    let other = b.new_client();
    assert!(b.same_store(&c) && b.same_store(&other));
    assert!(!b.same_store(&MemoryBackend::new()));
    assert_eq!(b.client_id(), c.client_id());
    assert_ne!(b.client_id(), other.client_id());
    assert_eq!(b.revision(), 1);
    assert_eq!(b.info().name, "memory");
    assert!(format!("{b:?}").contains("MemoryBackend"));
}

/// Compare-and-swap increments from several threads: none lost, none doubled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cas_counter_on_a_multi_thread_runtime() {
    let b = MemoryBackend::new();
    // Real time: a 30 ms lease (below etcd's 2 s) keeps the test short.
    b.set_lease_rules(crate::LeaseRules::fine(Duration::from_millis(1)));
    b.put(b"n", b"0", NO_LEASE).await.unwrap();
    let lease = b.lease_grant(Duration::from_millis(30)).await.unwrap().id;
    b.put(b"ephemeral", b"", lease).await.unwrap();
    let mut watch = b
        .watch(coord_core::WatchRequest::key("ephemeral"))
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let c = b.new_client();
        tasks.push(tokio::spawn(async move {
            let mut done = 0;
            while done < 100 {
                let cur = c.get(b"n").await.unwrap().unwrap();
                let n: u64 = cur.value_str().parse().unwrap();
                let resp = c
                    .txn(
                        TxnRequest::new()
                            .when([Compare::mod_revision(
                                "n",
                                CompareOp::Equal,
                                cur.mod_revision,
                            )])
                            .and_then([TxnOp::put("n", (n + 1).to_string())]),
                    )
                    .await
                    .unwrap();
                if resp.succeeded {
                    done += 1;
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(b.get(b"n").await.unwrap().unwrap().value, b"400");
    // The reaper works on real time too: the expiry arrives without any call.
    let expired = super::next(&mut watch).await;
    assert_eq!(expired.events[0].kind, coord_core::EventKind::Delete);
    assert_eq!(b.key_count(), 1);
}
