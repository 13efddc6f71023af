//! Micro benchmarks of the recipes on the memory backend: lock+unlock, try_lock+unlock and
//! campaign+resign, uncontended, on one task, on both runtime flavours.
//!
//! Each sample runs a batch of [`BATCH`] cycles in one task, so divan's `items/s` column is
//! cycles per second. On the multi-thread runtime the batch runs in a spawned task (a
//! worker thread), as application code usually does.
//! `cargo bench -p coord-memory --bench recipes`.

use std::sync::Arc;

use coord_core::{Election, Mutex, Session};
use coord_memory::MemoryBackend;
use divan::counter::ItemsCount;
use tokio::runtime::{Builder, Runtime};

/// Cycles per sample.
const BATCH: usize = 200;

fn main() {
    divan::main();
}

/// The runtime flavours benchmarked.
#[derive(Debug, Clone, Copy)]
enum Flavour {
    CurrentThread,
    MultiThread,
}

const FLAVOURS: [Flavour; 2] = [Flavour::CurrentThread, Flavour::MultiThread];

fn runtime(flavour: Flavour) -> Runtime {
    match flavour {
        Flavour::CurrentThread => Builder::new_current_thread().enable_all().build(),
        Flavour::MultiThread => Builder::new_multi_thread().enable_all().build(),
    }
    .unwrap()
}

/// Runs `batch` on `rt` in one task: the `block_on` task itself on a current-thread
/// runtime, a spawned task on a multi-thread one.
fn run<F>(rt: &Runtime, flavour: Flavour, batch: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    match flavour {
        Flavour::CurrentThread => rt.block_on(batch),
        Flavour::MultiThread => rt.block_on(async { tokio::spawn(batch).await.unwrap() }),
    }
}

fn session(rt: &Runtime) -> Session {
    rt.block_on(Session::new(Arc::new(MemoryBackend::new())))
        .unwrap()
}

#[divan::bench(args = FLAVOURS)]
fn lock_unlock(bencher: divan::Bencher<'_, '_>, flavour: Flavour) {
    let rt = runtime(flavour);
    let mutex = Mutex::new(&session(&rt), "bench/lock");
    bencher.counter(ItemsCount::new(BATCH)).bench_local(|| {
        let mutex = mutex.clone();
        run(&rt, flavour, async move {
            for _ in 0..BATCH {
                mutex.lock().await.unwrap().unlock().await.unwrap();
            }
        });
    });
}

#[divan::bench(args = FLAVOURS)]
fn try_lock_unlock(bencher: divan::Bencher<'_, '_>, flavour: Flavour) {
    let rt = runtime(flavour);
    let mutex = Mutex::new(&session(&rt), "bench/try-lock");
    bencher.counter(ItemsCount::new(BATCH)).bench_local(|| {
        let mutex = mutex.clone();
        run(&rt, flavour, async move {
            for _ in 0..BATCH {
                mutex.try_lock().await.unwrap().unlock().await.unwrap();
            }
        });
    });
}

#[divan::bench(args = FLAVOURS)]
fn campaign_resign(bencher: divan::Bencher<'_, '_>, flavour: Flavour) {
    let rt = runtime(flavour);
    let election = Election::new(&session(&rt), "bench/election");
    bencher.counter(ItemsCount::new(BATCH)).bench_local(|| {
        let election = election.clone();
        run(&rt, flavour, async move {
            for _ in 0..BATCH {
                election
                    .campaign("me")
                    .await
                    .unwrap()
                    .resign()
                    .await
                    .unwrap();
            }
        });
    });
}
