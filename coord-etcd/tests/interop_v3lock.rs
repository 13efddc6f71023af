//! From etcd's own tests (TestV3LockLockWaiter), across implementations: etcd's server-side lock
//! API (`v3lock`, what `etcdctl lock` and the gRPC gateway's `/v3/lock/lock` use) and a
//! coord `Mutex` on the same name exclude each other in both directions, and the fencing
//! order (create revisions) follows the order of acquisition.

use std::time::Duration;

use coord_core::{Mutex, Session};
use coord_etcd::{EtcdBackend, EtcdOptions};
use coord_testkit::EtcdServer;
use etcd_client::LockOptions;

/// Long enough that no lease in this test can expire while it runs.
const TTL: Duration = Duration::from_secs(30);
/// How long a blocked acquisition must stay blocked to count as waiting.
const QUIET: Duration = Duration::from_millis(700);
/// How long a handoff may take once the holder let go.
const PROMPT: Duration = Duration::from_secs(2);

async fn backend(server: &EtcdServer) -> EtcdBackend {
    EtcdBackend::connect(
        EtcdOptions::new(server.endpoints().to_vec()).namespace(server.namespace()),
    )
    .await
    .expect("coord connects")
}

/// A lock name no other test uses, as coord sees it and as the raw API must spell it
/// (the raw client does not apply coord's namespace).
fn names(server: &EtcdServer, label: &str) -> (String, Vec<u8>) {
    let name = format!("interop-v3lock/{label}/{}", std::process::id());
    let mut raw = server.namespace().as_bytes().to_vec();
    raw.extend_from_slice(name.as_bytes());
    (name, raw)
}

async fn create_revision(client: &mut etcd_client::Client, key: &[u8]) -> i64 {
    client
        .get(key, None)
        .await
        .expect("get")
        .kvs()
        .first()
        .map(|kv| kv.create_revision())
        .expect("the key exists")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_lock_api_holder_makes_coord_wait() {
    let Some(server) = EtcdServer::start_or_skip().await else {
        return;
    };
    let coord = backend(&server).await;
    let mut raw = coord.client();
    let (name, raw_name) = names(&server, "server-first");

    let lease = raw
        .lease_grant(TTL.as_secs() as i64, None)
        .await
        .unwrap()
        .id();
    let held = raw
        .lock(raw_name.clone(), Some(LockOptions::new().with_lease(lease)))
        .await
        .expect("server lock API acquires");
    let server_key = held.key().to_vec();
    assert!(
        server_key.starts_with(&raw_name) && server_key[raw_name.len()] == b'/',
        "the server's key is <name>/<lease hex>: {:?}",
        String::from_utf8_lossy(&server_key)
    );
    let server_token = create_revision(&mut raw, &server_key).await;

    let session = Session::builder(std::sync::Arc::new(coord.clone()))
        .ttl(TTL)
        .start()
        .await
        .unwrap();
    let mutex = Mutex::new(&session, name.as_str());
    let waiting = tokio::spawn(async move { mutex.lock().await });
    tokio::time::sleep(QUIET).await;
    assert!(
        !waiting.is_finished(),
        "coord must wait while the server lock API holds {name}"
    );

    raw.unlock(server_key).await.expect("server unlock");
    let guard = tokio::time::timeout(PROMPT, waiting)
        .await
        .expect("coord acquires promptly after the server unlock")
        .unwrap()
        .expect("coord lock");
    assert!(
        guard.fencing_token() > server_token,
        "coord's token {} follows the server holder's {server_token}",
        guard.fencing_token()
    );
    guard.unlock().await.unwrap();
    session.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coord_holder_makes_server_lock_api_wait() {
    let Some(server) = EtcdServer::start_or_skip().await else {
        return;
    };
    let coord = backend(&server).await;
    let mut raw = coord.client();
    let (name, raw_name) = names(&server, "coord-first");

    let session = Session::builder(std::sync::Arc::new(coord.clone()))
        .ttl(TTL)
        .start()
        .await
        .unwrap();
    let guard = Mutex::new(&session, name.as_str()).lock().await.unwrap();
    let coord_token = guard.fencing_token();

    let lease = raw
        .lease_grant(TTL.as_secs() as i64, None)
        .await
        .unwrap()
        .id();
    let mut waiter_client = raw.clone();
    let waiting = tokio::spawn(async move {
        waiter_client
            .lock(raw_name, Some(LockOptions::new().with_lease(lease)))
            .await
    });
    tokio::time::sleep(QUIET).await;
    assert!(
        !waiting.is_finished(),
        "the server lock API must wait while coord holds {name}"
    );

    guard.unlock().await.unwrap();
    let acquired = tokio::time::timeout(PROMPT, waiting)
        .await
        .expect("the server lock API acquires promptly after coord unlocks")
        .unwrap()
        .expect("server lock");
    let server_token = create_revision(&mut raw, acquired.key()).await;
    assert!(
        server_token > coord_token,
        "the server holder's token {server_token} follows coord's {coord_token}"
    );
    raw.unlock(acquired.key().to_vec()).await.unwrap();
    session.close().await.unwrap();
}
