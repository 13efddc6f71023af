//! `Session` scenarios (etcd's `session_test` and the lease-liveness rules: `lost()` fires at
//! the client-side deadline, before the server can expire the lease).

use std::time::Duration;

use coord_core::{BackendExt, Error, Mutex, Session};

use super::{
    Capability, TestBackend, eventually, keys_under, new_session, prompt, session_with_ttl, settle,
    skip_unless, unique,
};

/// From etcd's own tests (TestSessionOptions): a session started with an existing lease id
/// (`WithLease`) uses that lease, grants none, and its keys are attached to it.
pub async fn resumed_session_uses_the_given_lease(backend: &dyn TestBackend) {
    let c = backend.client().await;
    let grant = c.lease_grant(backend.short_ttl()).await.unwrap();
    let s = Session::builder(c.clone())
        .ttl(backend.short_ttl())
        .lease(grant.id)
        .start()
        .await
        .unwrap();
    assert_eq!(s.lease(), grant.id);
    let name = unique("resume-lease");
    let g = Mutex::new(&s, name.as_str()).lock().await.unwrap();
    let kv = c.get(g.key().as_bytes()).await.unwrap().unwrap();
    assert_eq!(
        kv.lease, grant.id,
        "the lock key is attached to the resumed lease"
    );
    // The session keeps the resumed lease alive.
    tokio::time::sleep(grant.ttl * 2).await;
    assert!(!s.is_lost());
    assert!(c.lease_time_to_live(grant.id).await.is_ok());
    // Resuming a lease that does not exist fails.
    c.lease_revoke(grant.id).await.unwrap();
    let err = Session::builder(c.clone())
        .lease(grant.id)
        .start()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::LeaseNotFound { .. }), "{err:?}");
}

/// From etcd's own tests (TestSessionOptions, TestSessionCtx): `orphan()` makes `lost()` fire
/// promptly (etcd: within 100 ms), without revoking the lease, which then runs out.
pub async fn orphan_fires_lost_promptly(backend: &dyn TestBackend) {
    let c = backend.client().await;
    let s = session_with_ttl(&c, backend.short_ttl()).await;
    let lost = s.lost();
    s.orphan();
    tokio::time::timeout(Duration::from_millis(100), lost)
        .await
        .expect("lost() fires within 100 ms of orphan()");
    assert!(s.is_lost());
    assert!(
        c.lease_time_to_live(s.lease()).await.is_ok(),
        "orphan does not revoke"
    );
    let ttl = s.ttl();
    eventually(
        ttl * 2 + settle(backend),
        "the orphaned lease runs out",
        || async {
            matches!(
                c.lease_time_to_live(s.lease()).await,
                Err(Error::LeaseNotFound { .. })
            )
        },
    )
    .await;
}

/// From etcd's own tests (TestSessionTTLOptions): the TTL option is honoured: the lease's
/// remaining TTL is within [0.7 ttl, ttl] (etcd: WithTTL(90) gives [70, 90), not 60), and
/// the default is 60 s.
pub async fn session_ttl_option_is_honoured(backend: &dyn TestBackend) {
    let c = backend.client().await;
    let ttl = Duration::from_secs(90);
    let s = session_with_ttl(&c, ttl).await;
    let status = c.lease_time_to_live(s.lease()).await.unwrap();
    assert!(
        status.granted_ttl >= ttl,
        "granted {:?}",
        status.granted_ttl
    );
    assert!(
        status.remaining >= ttl.mul_f64(0.7) && status.remaining <= status.granted_ttl,
        "remaining {:?} for ttl {ttl:?}",
        status.remaining
    );
    assert!(s.ttl() >= ttl);
    s.close().await.unwrap();
    let d = Session::new(c.clone()).await.unwrap();
    let status = c.lease_time_to_live(d.lease()).await.unwrap();
    assert!(status.granted_ttl >= Duration::from_secs(60) && status.granted_ttl < ttl);
    d.close().await.unwrap();
}

/// A session keeps its lease alive for many TTLs (refreshing every ttl/3) and is not lost.
pub async fn session_keep_alive_outlives_the_ttl(backend: &dyn TestBackend) {
    let c = backend.client().await;
    let s = session_with_ttl(&c, backend.short_ttl()).await;
    let name = unique("keepalive");
    let g = Mutex::new(&s, name.as_str()).lock().await.unwrap();
    tokio::time::sleep(s.ttl() * 3).await;
    assert!(!s.is_lost());
    assert!(
        c.get(g.key().as_bytes()).await.unwrap().is_some(),
        "key survives 3 TTLs"
    );
    g.unlock().await.unwrap();
}

/// `close()` revokes the lease: every key of the session goes at once and `lost()` fires.
pub async fn session_close_revokes_and_deletes_keys(backend: &dyn TestBackend) {
    let c = backend.client().await;
    let s = session_with_ttl(&c, Duration::from_secs(600)).await;
    let name = unique("close");
    let g1 = Mutex::new(&s, format!("{name}/a")).lock().await.unwrap();
    let g2 = Mutex::new(&s, format!("{name}/b")).lock().await.unwrap();
    assert_eq!(keys_under(c.as_ref(), &name).await.len(), 2);
    s.close().await.unwrap();
    assert!(s.is_lost());
    assert!(
        keys_under(c.as_ref(), &name).await.is_empty(),
        "close deletes every key at once"
    );
    tokio::time::timeout(prompt(backend), g1.lost())
        .await
        .expect("guard lost fires");
    assert!(matches!(
        c.lease_time_to_live(s.lease()).await,
        Err(Error::LeaseNotFound { .. })
    ));
    drop((g1, g2));
    // A lost session refuses new work.
    let err = Mutex::new(&s, name.as_str()).lock().await.unwrap_err();
    assert!(matches!(err, Error::SessionExpired { .. }), "{err:?}");
}

/// When the server expires the lease behind the session's back, `lost()` fires (at the
/// latest at the next keep-alive, ttl/3 later) and guards report the loss.
pub async fn session_lost_when_lease_expires_on_the_server(backend: &dyn TestBackend) {
    if skip_unless(
        backend,
        "session_lost_when_lease_expires_on_the_server",
        &[Capability::ExpireLease],
    ) {
        return;
    }
    let s = new_session(backend).await;
    let name = unique("expired");
    let g = Mutex::new(&s, name.as_str()).lock().await.unwrap();
    backend.faults().unwrap().expire_lease_now(s.lease()).await;
    tokio::time::timeout(s.ttl() / 3 + prompt(backend), s.lost())
        .await
        .expect("session lost by the next keep-alive");
    tokio::time::timeout(prompt(backend), g.lost())
        .await
        .expect("guard lost");
}
