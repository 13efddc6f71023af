//! The whole coord-testkit conformance suite against one real redis-server (shared by
//! every test of this binary, a namespace per test), on real time.

mod support;

use support::conformance::Redis;
use support::shared_redis;

coord_testkit::conformance_tests! {
    backend: match Redis::new(shared_redis().await) {
        Some(redis) => redis,
        None => return,
    },
    clock: real,
}
