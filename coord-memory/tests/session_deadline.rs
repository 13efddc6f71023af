//! `Session::is_lost` is computed from the session's deadline, not from what its keep-alive
//! task last noticed: a runtime that cannot run that task (its only thread stuck in a long
//! synchronous call) must not make a lost session look healthy.
//!
//! This one test runs on real time, on purpose: what it checks is a runtime that does not
//! run, which a paused clock (advanced only by the runtime itself) cannot show.

use std::sync::Arc;
use std::time::Duration;

use coord_core::Session;
use coord_memory::{LeaseRules, MemoryBackend};

#[test]
fn is_lost_past_the_deadline_even_while_the_runtime_is_blocked() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let ttl = Duration::from_millis(300);
    // Real time: a 300 ms lease (below etcd's 2 s) keeps the test short.
    let backend = MemoryBackend::new();
    backend.set_lease_rules(LeaseRules::fine(Duration::from_millis(1)));
    let session = runtime.block_on(async {
        Session::builder(Arc::new(backend))
            .ttl(ttl)
            .start()
            .await
            .expect("start session")
    });
    assert!(!session.is_lost());
    let observed = session.clone();
    let checker = std::thread::spawn(move || {
        std::thread::sleep(ttl * 2);
        observed.is_lost()
    });
    // The runtime's only thread is stuck well past the deadline: no keep-alive runs.
    runtime.block_on(async { std::thread::sleep(ttl * 3) });
    assert!(
        checker.join().unwrap(),
        "is_lost() said false past the session's deadline"
    );
    assert!(session.is_lost(), "once lost, always lost");
}
