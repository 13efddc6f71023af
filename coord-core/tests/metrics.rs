//! The metrics of the `metrics` feature, read through a recorder of our own after a scripted
//! scenario on the in-memory backend (paused clock): an uncontended lock, a contended one,
//! a timeout, a lost session, and an election won then resigned.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex, OnceLock};
use std::time::Duration;

use coord_core::faults::{FaultyBackend, Partition};
use coord_core::metrics as names;
use coord_core::{CoordinationBackend, Election, Error, EventKind, Mutex, Session, WatchRequest};
use coord_memory::MemoryBackend;
use futures::StreamExt;
use metrics::{
    Counter, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder, SharedString, Unit,
};

/// A metric's name and its labels, sorted.
type Id = (String, Vec<(String, String)>);

/// Keeps every counter and gauge as an atomic (a gauge as `f64` bits, as `metrics` does)
/// and every histogram's samples.
#[derive(Default)]
struct TestRecorder {
    values: StdMutex<HashMap<Id, Arc<AtomicU64>>>,
    samples: StdMutex<HashMap<Id, Arc<Samples>>>,
}

#[derive(Default)]
struct Samples(StdMutex<Vec<f64>>);

impl HistogramFn for Samples {
    fn record(&self, value: f64) {
        self.0.lock().unwrap().push(value);
    }
}

fn id(key: &Key) -> Id {
    let mut labels: Vec<_> = key
        .labels()
        .map(|l| (l.key().to_owned(), l.value().to_owned()))
        .collect();
    labels.sort();
    (key.name().to_owned(), labels)
}

fn wanted(name: &str, labels: &[(&str, &str)]) -> Id {
    let mut labels: Vec<_> = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    labels.sort();
    (name.to_owned(), labels)
}

impl TestRecorder {
    fn value(&self, key: &Key) -> Arc<AtomicU64> {
        self.values
            .lock()
            .unwrap()
            .entry(id(key))
            .or_default()
            .clone()
    }

    fn counter(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        self.values
            .lock()
            .unwrap()
            .get(&wanted(name, labels))
            .map_or(0, |v| v.load(Ordering::SeqCst))
    }

    fn gauge(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.values
            .lock()
            .unwrap()
            .get(&wanted(name, labels))
            .map_or(0.0, |v| f64::from_bits(v.load(Ordering::SeqCst)))
    }

    fn samples(&self, name: &str, labels: &[(&str, &str)]) -> Vec<f64> {
        self.samples
            .lock()
            .unwrap()
            .get(&wanted(name, labels))
            .map(|s| s.0.lock().unwrap().clone())
            .unwrap_or_default()
    }
}

impl Recorder for TestRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(self.value(key))
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(self.value(key))
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        let samples = self
            .samples
            .lock()
            .unwrap()
            .entry(id(key))
            .or_default()
            .clone();
        Histogram::from_arc(samples)
    }
}

/// The process-wide recorder (the keep-alive and release tasks record from spawned tasks,
/// so a thread-local one would miss them). This file holds one test, so nothing else
/// records into it.
fn recorder() -> &'static TestRecorder {
    static RECORDER: OnceLock<&'static TestRecorder> = OnceLock::new();
    RECORDER.get_or_init(|| {
        let recorder: &'static TestRecorder = Box::leak(Box::default());
        metrics::set_global_recorder(recorder).expect("the only recorder of this test binary");
        names::describe();
        recorder
    })
}

const TTL: Duration = Duration::from_secs(9);

async fn session(backend: Arc<dyn CoordinationBackend>) -> Session {
    Session::builder(backend)
        .ttl(TTL)
        .start()
        .await
        .expect("a session")
}

#[tokio::test(start_paused = true)]
async fn a_scripted_scenario_counts_acquisitions_waits_timeouts_losses_and_leadership() {
    let metrics = recorder();
    let memory: Arc<dyn CoordinationBackend> = Arc::new(MemoryBackend::new());
    let (a, b) = (session(memory.clone()).await, session(memory.clone()).await);
    assert_eq!(metrics.gauge(names::SESSIONS_OPEN, &[]), 2.0);

    // One uncontended lock.
    Mutex::new(&a, "free")
        .lock()
        .await
        .expect("lock")
        .unlock()
        .await
        .expect("unlock");
    let free = [("kind", "lock"), ("name", "free")];
    assert_eq!(metrics.counter(names::ACQUISITIONS, &free), 1);
    assert_eq!(metrics.counter(names::WAITS, &free), 0);
    assert_eq!(metrics.samples(names::WAIT_SECONDS, &free).len(), 1);

    // One contended lock: b waits until a lets go.
    let held = Mutex::new(&a, "contended").lock().await.expect("lock");
    let mut keys = memory
        .watch(WatchRequest::prefix("contended/"))
        .await
        .expect("watch");
    let waiter = tokio::spawn({
        let mutex = Mutex::new(&b, "contended");
        async move { mutex.lock().await }
    });
    // b's key appears: it is queued behind a.
    loop {
        let resp = keys.next().await.expect("open").expect("no error");
        if resp
            .events
            .iter()
            .any(|e| e.kind == EventKind::Put && e.kv.key_str() != held.key())
        {
            break;
        }
    }
    held.unlock().await.expect("unlock");
    waiter
        .await
        .unwrap()
        .expect("b gets the lock")
        .unlock()
        .await
        .expect("unlock");
    let contended = [("kind", "lock"), ("name", "contended")];
    assert_eq!(metrics.counter(names::ACQUISITIONS, &contended), 2);
    assert_eq!(metrics.counter(names::WAITS, &contended), 1);
    assert_eq!(metrics.samples(names::WAIT_SECONDS, &contended).len(), 2);

    // One timeout.
    let held = Mutex::new(&a, "busy").lock().await.expect("lock");
    let err = Mutex::new(&b, "busy")
        .lock_timeout(Duration::from_secs(1))
        .await
        .expect_err("held by a");
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    held.unlock().await.expect("unlock");
    let busy = [("kind", "lock"), ("name", "busy")];
    assert_eq!(metrics.counter(names::TIMEOUTS, &busy), 1);
    assert_eq!(metrics.counter(names::ACQUISITIONS, &busy), 1);

    // One lost session: c is cut off while holding, so its keep-alives stop succeeding.
    let (faulty, faults) = FaultyBackend::new(memory.clone());
    let c = session(Arc::new(faulty)).await;
    assert_eq!(metrics.gauge(names::SESSIONS_OPEN, &[]), 3.0);
    let doomed = Mutex::new(&c, "doomed").lock().await.expect("lock");
    faults.partition(Partition::Hang);
    doomed.lost().await;
    let err = doomed.unlock().await.expect_err("lost");
    assert!(matches!(err, Error::LockLost { .. }), "{err:?}");
    let lost = [
        ("kind", "lock"),
        ("name", "doomed"),
        ("cause", "session_expired"),
    ];
    assert_eq!(
        metrics.counter(names::LOSSES, &lost),
        1,
        "counted once, though both lost() and unlock() saw it"
    );
    assert_eq!(metrics.counter(names::SESSIONS_EXPIRED, &[]), 1);
    assert_eq!(metrics.gauge(names::SESSIONS_OPEN, &[]), 2.0);
    // The partition lasted longer than a third of the TTL: a and b refreshed meanwhile.
    assert!(!metrics.samples(names::KEEPALIVE_SECONDS, &[]).is_empty());

    // One election won, then resigned.
    let leader = [("name", "scheduler")];
    let leadership = Election::new(&a, "scheduler")
        .campaign("node-a")
        .await
        .expect("elected");
    assert_eq!(metrics.gauge(names::LEADER, &leader), 1.0);
    leadership.resign().await.expect("resign");
    assert_eq!(metrics.gauge(names::LEADER, &leader), 0.0);
    let election = [("kind", "election"), ("name", "scheduler")];
    assert_eq!(metrics.counter(names::ACQUISITIONS, &election), 1);

    // Nothing else lost anything.
    let all_losses: u64 = metrics
        .values
        .lock()
        .unwrap()
        .iter()
        .filter(|((name, _), _)| name == names::LOSSES)
        .map(|(_, v)| v.load(Ordering::SeqCst))
        .sum();
    assert_eq!(all_losses, 1);

    a.close().await.expect("close");
    b.close().await.expect("close");
    assert_eq!(metrics.gauge(names::SESSIONS_OPEN, &[]), 0.0);
}
