//! The whole coord-testkit conformance suite against a three-member etcd cluster, on
//! real time: every client of a test connects to all three members, so its calls,
//! watches and keep-alives spread over leader and followers (reads served by followers,
//! writes forwarded to the leader, watches fed by followers' own stores). The cluster is
//! shared by every test of this binary ([`support::shared::shared_cluster`]), with etcd's
//! default raft timing; the suite's backend is the single-server suite's
//! ([`support::conformance`]).

mod support;

use support::conformance::Etcd;
use support::shared::shared_cluster;

coord_testkit::conformance_tests! {
    backend: match Etcd::new(shared_cluster().await).await {
        Some(etcd) => etcd,
        None => return,
    },
    clock: real,
}
