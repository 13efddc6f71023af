//! The whole coord-testkit conformance suite against one real etcd server, on real time.
//! The suite's backend is [`support::conformance`] (shared with `conformance_cluster`,
//! which runs it on a three-member cluster); the server is shared by every test of this
//! binary ([`support::shared::shared_etcd`]), with a 25 ms heartbeat and a 250 ms
//! election timeout.

mod support;

use support::conformance::Etcd;
use support::shared::shared_etcd;

coord_testkit::conformance_tests! {
    backend: match Etcd::new(shared_etcd().await).await {
        Some(etcd) => etcd,
        None => return,
    },
    clock: real,
}
