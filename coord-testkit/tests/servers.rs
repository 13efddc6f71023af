//! Integration tests of the server fixtures against the real `etcd` and `redis-server`
//! binaries. They skip when the binaries are missing, unless
//! `COORD_TEST_REQUIRE_BACKENDS=1`. Real time only.

use std::time::{Duration, Instant};

use coord_testkit::{
    Credentials, EtcdCluster, EtcdServer, FaultProxy, FixtureError, RedisServer, ServerMode,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends raw RESP commands (inline form) and returns what came back within `wait`.
async fn resp(addr: &str, commands: &str, wait: Duration) -> String {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(commands.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + wait;
    while let Ok(Ok(n)) = tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
        if out.iter().filter(|&&b| b == b'\n').count() >= commands.matches('\n').count() {
            break;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_times() {
    let t = Instant::now();
    let Some(etcd) = EtcdServer::builder().local_only().start_or_skip().await else {
        return;
    };
    let etcd_time = t.elapsed();

    let t = Instant::now();
    let Some(redis) = RedisServer::builder().local_only().start_or_skip().await else {
        return;
    };
    let redis_time = t.elapsed();

    let t = Instant::now();
    let Some(cluster) = EtcdCluster::start_or_skip().await else {
        return;
    };
    let cluster_time = t.elapsed();

    let t = Instant::now();
    let Some(etcd_tls_auth) = EtcdServer::builder()
        .tls(true)
        .auth("rootpw")
        .start_or_skip()
        .await
    else {
        return;
    };
    let etcd_tls_auth_time = t.elapsed();

    let t = Instant::now();
    let Some(redis_tls) = RedisServer::builder().tls(true).start_or_skip().await else {
        return;
    };
    let redis_tls_time = t.elapsed();

    let t = Instant::now();
    etcd.kill().await.unwrap();
    etcd.restart().await.unwrap();
    let etcd_restart_time = t.elapsed();

    eprintln!("startup: etcd single        {etcd_time:?}");
    eprintln!("startup: redis              {redis_time:?}");
    eprintln!("startup: etcd 3-member      {cluster_time:?}");
    eprintln!("startup: etcd tls+auth      {etcd_tls_auth_time:?}");
    eprintln!("startup: redis tls          {redis_tls_time:?}");
    eprintln!("startup: etcd kill+restart  {etcd_restart_time:?}");
    // Generous bounds: the machine may be busy compiling.
    for (what, d) in [
        ("etcd", etcd_time),
        ("redis", redis_time),
        ("etcd cluster", cluster_time),
        ("redis tls", redis_tls_time),
    ] {
        assert!(d < Duration::from_secs(8), "{what} took {d:?}");
    }
    drop((redis, cluster, etcd_tls_auth, redis_tls));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_serves_and_survives_kill_and_restart() {
    let Some(etcd) = EtcdServer::builder().local_only().start_or_skip().await else {
        return;
    };
    assert_eq!(etcd.mode(), ServerMode::Local);
    assert!(etcd.is_controllable());
    assert!(etcd.endpoint().starts_with("127.0.0.1:"));
    assert_eq!(etcd.url(), format!("http://{}", etcd.endpoint()));
    assert!(etcd.data_dir().unwrap().join("member").is_dir());
    assert!(!etcd.log_tail().is_empty());
    let log = std::fs::read_to_string(etcd.log_path().unwrap()).unwrap();
    assert!(log.contains("coord-testkit: starting etcd n0"), "{log}");
    assert!(etcd.is_ready().await);
    let key = format!("{}k", etcd.namespace());

    etcd.etcdctl(&["put", &key, "v1"]).await.unwrap();
    let pid = etcd.pid().await.unwrap();
    etcd.kill().await.unwrap();
    assert!(!etcd.is_running().await);
    assert!(etcd.pid().await.is_none());
    assert!(!etcd.is_ready().await);
    assert!(matches!(
        etcd.pause().await,
        Err(FixtureError::NotRunning { .. })
    ));

    let endpoint = etcd.endpoint().to_string();
    etcd.restart().await.unwrap();
    assert_eq!(etcd.endpoint(), endpoint);
    assert_ne!(etcd.pid().await.unwrap(), pid);
    let got = etcd
        .etcdctl(&["get", &key, "--print-value-only"])
        .await
        .unwrap();
    assert_eq!(got.trim(), "v1", "data survives kill -9 and restart");

    // Graceful stop, then restart again.
    etcd.stop().await.unwrap();
    assert!(!etcd.is_running().await);
    etcd.restart().await.unwrap();
    // Restart of a running server stops it first.
    etcd.restart().await.unwrap();
    assert!(etcd.is_ready().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_pause_and_resume() {
    let Some(etcd) = EtcdServer::builder().local_only().start_or_skip().await else {
        return;
    };
    etcd.pause().await.unwrap();
    assert!(etcd.is_running().await, "a paused server is still alive");
    let t = Instant::now();
    assert!(!etcd.is_ready().await, "a paused server must not answer");
    assert!(t.elapsed() >= Duration::from_secs(1));
    etcd.resume().await.unwrap();
    assert!(etcd.is_ready().await);

    // Stopping a paused server works (SIGTERM + SIGCONT).
    etcd.pause().await.unwrap();
    tokio::time::timeout(Duration::from_secs(15), etcd.stop())
        .await
        .expect("stop of a paused server must not hang")
        .unwrap();
    assert!(!etcd.is_running().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_tls_with_client_certificates() {
    let Some(etcd) = EtcdServer::builder().tls(true).start_or_skip().await else {
        return;
    };
    assert!(etcd.url().starts_with("https://127.0.0.1:"));
    let tls = etcd.tls().expect("tls material");
    assert!(tls.ca_cert_path().is_file() && tls.client_key_path().is_file());
    assert!(tls.ca_cert_pem().contains("BEGIN CERTIFICATE"));
    let key = format!("{}tls", etcd.namespace());
    etcd.etcdctl(&["put", &key, "secure"]).await.unwrap();
    let got = etcd
        .etcdctl(&["get", &key, "--print-value-only"])
        .await
        .unwrap();
    assert_eq!(got.trim(), "secure");
    // Plain HTTP on the TLS client port does not work.
    let mut s = TcpStream::connect(etcd.endpoint()).await.unwrap();
    s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut out)).await;
    assert!(!String::from_utf8_lossy(&out).contains("\"health\":\"true\""));
    // Kill and restart keep TLS working.
    etcd.kill().await.unwrap();
    etcd.restart().await.unwrap();
    let got = etcd
        .etcdctl(&["get", &key, "--print-value-only"])
        .await
        .unwrap();
    assert_eq!(got.trim(), "secure");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_auth_with_root_and_prefix_user() {
    let Some(etcd) = EtcdServer::builder()
        .auth("rootpw")
        .user("app", "apppw", "/app/")
        .start_or_skip()
        .await
    else {
        return;
    };
    let root = etcd.root_credentials().unwrap().clone();
    assert_eq!(root, Credentials::new("root", "rootpw"));
    let app = etcd.users()[0].credentials();

    etcd.etcdctl(&["put", "/anything", "1"]).await.unwrap();
    let denied = etcd.etcdctl_as(None, &["put", "/anything", "2"]).await;
    assert!(
        denied.is_err(),
        "anonymous writes must fail once auth is on"
    );
    etcd.etcdctl_as(Some(&app), &["put", "/app/x", "1"])
        .await
        .unwrap();
    let err = etcd
        .etcdctl_as(Some(&app), &["put", "/other", "1"])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("permission denied"), "{err}");
    assert!(
        !err.to_string().contains("apppw"),
        "passwords are redacted: {err}"
    );
    let wrong = Credentials::new("app", "wrong");
    assert!(
        etcd.etcdctl_as(Some(&wrong), &["get", "/app/x"])
            .await
            .is_err()
    );

    // Auth state persists across a restart and the probe still passes.
    etcd.kill().await.unwrap();
    etcd.restart().await.unwrap();
    etcd.etcdctl_as(Some(&app), &["put", "/app/y", "2"])
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_early_exit_and_timeout_carry_the_log() {
    if EtcdServer::builder()
        .local_only()
        .start_or_skip()
        .await
        .is_none()
    {
        return;
    }
    let err = EtcdServer::builder()
        .arg("--no-such-flag")
        .start()
        .await
        .unwrap_err();
    match &err {
        FixtureError::EarlyExit { log_tail, .. } => {
            assert!(log_tail.contains("no-such-flag"), "{log_tail}");
        }
        other => panic!("expected EarlyExit, got {other}"),
    }

    // etcd listens elsewhere (the later flag wins), so the probe never succeeds.
    let elsewhere = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let t = Instant::now();
    let err = EtcdServer::builder()
        .arg(format!("--listen-client-urls=http://127.0.0.1:{elsewhere}"))
        .startup_timeout(Duration::from_millis(700))
        .start()
        .await
        .unwrap_err();
    assert!(t.elapsed() >= Duration::from_millis(700));
    assert!(matches!(err, FixtureError::NotReady { .. }), "{err}");
    assert!(err.to_string().contains("--- log tail ---"));
    assert!(err.to_string().contains("last probe: connect"), "{err}");
}

/// Retries an etcdctl call for up to 15 s: right after a member (maybe the leader)
/// dies, requests can fail until a new leader is elected.
async fn etcdctl_eventually(cluster: &EtcdCluster, args: &[&str]) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match cluster.etcdctl(args).await {
            Ok(out) => return out,
            Err(e) if Instant::now() < deadline => {
                eprintln!("retrying etcdctl {args:?}: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("etcdctl {args:?}: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_cluster_tolerates_member_failures() {
    let Some(cluster) = EtcdCluster::start_or_skip().await else {
        return;
    };
    assert_eq!(cluster.len(), 3);
    let endpoints = cluster.endpoints();
    assert_eq!(endpoints.len(), 3);
    assert!(endpoints.iter().all(|e| e.starts_with("127.0.0.1:")));
    assert_eq!(cluster.urls()[1], format!("http://{}", endpoints[1]));
    let status = cluster
        .etcdctl(&["endpoint", "status", "-w", "simple"])
        .await
        .unwrap();
    assert_eq!(status.lines().count(), 3, "{status}");
    let key = format!("{}c", cluster.namespace());
    cluster.etcdctl(&["put", &key, "v1"]).await.unwrap();

    cluster.kill_member(0).await.unwrap();
    assert!(!cluster.is_member_running(0).await);
    etcdctl_eventually(&cluster, &["put", &key, "v2"]).await;
    assert!(cluster.is_member_ready(1).await);

    cluster.restart_member(0).await.unwrap();
    assert!(cluster.is_member_ready(0).await);
    assert_eq!(cluster.endpoint(0), endpoints[0]);

    cluster.stop_member(1).await.unwrap();
    cluster.pause_member(2).await.unwrap();
    // No quorum: member 0 stops answering /health.
    let deadline = Instant::now() + Duration::from_secs(10);
    while cluster.is_member_ready(0).await && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!cluster.is_member_ready(0).await, "no quorum, no health");
    cluster.resume_member(2).await.unwrap();
    cluster.restart_member(1).await.unwrap();
    let got = etcdctl_eventually(&cluster, &["get", &key, "--print-value-only"]).await;
    assert_eq!(got.trim(), "v2");

    // Losing the quorum and bringing it back together.
    cluster.kill_member(1).await.unwrap();
    cluster.kill_member(2).await.unwrap();
    cluster.restart_members(&[1, 2]).await.unwrap();
    assert!(cluster.is_member_ready(0).await);
    assert!(cluster.log_tail(2).contains("n2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_serves_pauses_and_restarts() {
    let Some(redis) = RedisServer::builder().local_only().start_or_skip().await else {
        return;
    };
    assert_eq!(redis.mode(), ServerMode::Local);
    assert_eq!(redis.url(), format!("redis://{}", redis.endpoint()));
    assert!(redis.data_dir().unwrap().is_dir());
    assert!(redis.log_tail().contains("Ready to accept connections"));
    let key = format!("{}k", redis.namespace());
    assert_eq!(redis.cli(&["SET", &key, "v"]).await.unwrap().trim(), "OK");
    assert!(
        resp(redis.endpoint(), "PING\r\n", Duration::from_secs(2))
            .await
            .starts_with("+PONG")
    );

    redis.pause().await.unwrap();
    let r = resp(redis.endpoint(), "PING\r\n", Duration::from_millis(500)).await;
    assert!(r.is_empty(), "a paused server must not answer, got {r:?}");
    assert!(!redis.is_ready().await);
    redis.resume().await.unwrap();
    assert!(redis.is_ready().await);

    // Without an append-only file a restart loses the data.
    redis.kill().await.unwrap();
    assert!(!redis.is_running().await);
    // A stopped server refuses connections (its port is held, not listened on).
    let err = TcpStream::connect(redis.endpoint()).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
    redis.restart().await.unwrap();
    assert_eq!(redis.cli(&["EXISTS", &key]).await.unwrap().trim(), "0");
    redis.stop().await.unwrap();
    redis.restart().await.unwrap();
    assert!(redis.is_ready().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_appendonly_survives_kill() {
    let Some(redis) = RedisServer::builder()
        .appendonly(true)
        .start_or_skip()
        .await
    else {
        return;
    };
    let key = format!("{}durable", redis.namespace());
    redis.cli(&["SET", &key, "kept"]).await.unwrap();
    redis.kill().await.unwrap();
    redis.restart().await.unwrap();
    assert_eq!(redis.cli(&["GET", &key]).await.unwrap().trim(), "kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_tls() {
    let Some(redis) = RedisServer::builder().tls(true).start_or_skip().await else {
        return;
    };
    assert!(redis.url().starts_with("rediss://127.0.0.1:"));
    assert!(redis.tls().unwrap().client_cert_path().is_file());
    assert_eq!(redis.cli(&["PING"]).await.unwrap().trim(), "PONG");
    // Plain RESP on the TLS port gets no PONG.
    let r = resp(redis.endpoint(), "PING\r\n", Duration::from_millis(500)).await;
    assert!(!r.contains("PONG"), "{r:?}");
    redis.kill().await.unwrap();
    redis.restart().await.unwrap();
    assert_eq!(redis.cli(&["PING"]).await.unwrap().trim(), "PONG");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_password_and_acl_user() {
    let Some(redis) = RedisServer::builder()
        .password("defpw")
        .acl_user("alice", "alicepw")
        .start_or_skip()
        .await
    else {
        return;
    };
    assert_eq!(redis.password(), Some("defpw"));
    assert_eq!(redis.acl_users()[0].user, "alice");
    // The default user needs the password.
    let r = resp(redis.endpoint(), "SET k v\r\n", Duration::from_secs(2)).await;
    assert!(r.starts_with("-NOAUTH"), "{r:?}");
    assert_eq!(redis.cli(&["SET", "k", "v"]).await.unwrap().trim(), "OK");
    // The ACL user can log in and use everything.
    let r = resp(
        redis.endpoint(),
        "AUTH alice alicepw\r\nGET k\r\nSUBSCRIBE ch\r\n",
        Duration::from_secs(2),
    )
    .await;
    assert!(r.starts_with("+OK\r\n$1\r\nv\r\n*3"), "{r:?}");
    let r = resp(
        redis.endpoint(),
        "AUTH alice nope\r\n",
        Duration::from_secs(2),
    )
    .await;
    assert!(r.starts_with("-WRONGPASS"), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_proxy_in_front_of_real_servers() {
    let Some(redis) = RedisServer::builder().local_only().start_or_skip().await else {
        return;
    };
    let proxy = FaultProxy::start(redis.endpoint()).await.unwrap();
    let via = proxy.addr().to_string();
    assert!(
        resp(&via, "PING\r\n", Duration::from_secs(2))
            .await
            .starts_with("+PONG")
    );
    proxy.blackhole();
    assert!(
        resp(&via, "PING\r\n", Duration::from_millis(300))
            .await
            .is_empty()
    );
    proxy.heal();
    proxy.set_latency(Duration::from_millis(100));
    let t = Instant::now();
    assert!(
        resp(&via, "PING\r\n", Duration::from_secs(2))
            .await
            .starts_with("+PONG")
    );
    assert!(t.elapsed() >= Duration::from_millis(200));

    let Some(etcd) = EtcdServer::builder().local_only().start_or_skip().await else {
        return;
    };
    let proxy = FaultProxy::start(etcd.endpoint()).await.unwrap();
    // etcdctl (gRPC over HTTP/2) works through the proxy.
    let key = format!("{}p", etcd.namespace());
    let out = tokio::process::Command::new("etcdctl")
        .args([
            &format!("--endpoints=http://{}", proxy.addr()),
            "--dial-timeout=2s",
            "--command-timeout=2s",
            "put",
            &key,
            "through-proxy",
        ])
        .env("ETCDCTL_API", "3")
        .output()
        .await;
    if let Ok(out) = out {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let got = etcd
            .etcdctl(&["get", &key, "--print-value-only"])
            .await
            .unwrap();
        assert_eq!(got.trim(), "through-proxy");
    }
}
