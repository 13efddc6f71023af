//! [`FaultProxy`]: a TCP proxy that injects network faults between a client and a server,
//! to test partitions, slow links and dropped connections without root privileges.
//!
//! Point the client at [`addr`](FaultProxyHandle::addr) instead of the server, then steer the proxy
//! from the test (directly or through a cloned [`FaultProxyHandle`]):
//!
//! * [`set_latency`](FaultProxyHandle::set_latency): delay every chunk of data, in each
//!   direction, by this much (data keeps flowing; the link is slow, not serialized);
//! * [`blackhole`](FaultProxyHandle::blackhole): keep connections (and accept new ones)
//!   but forward nothing; bytes already received are held, like a partition where TCP keeps
//!   retransmitting;
//! * [`heal`](FaultProxyHandle::heal): forward normally again (held bytes are delivered);
//! * [`reset_all`](FaultProxyHandle::reset_all): abort every current connection with a TCP
//!   RST on both sides; later connections work as usual.
//!
//! Dropping the [`FaultProxy`] stops the listener and closes all its connections; handles
//! that outlive it become inert.
//!
//! A proxy started with [`FaultProxy::start_tagging`] also tells its clients apart by an
//! HTTP request header they send first (etcd members name themselves in `X-Server-From`
//! on their peer connections), so a test can cut one client's connections only
//! ([`blackhole_tag`](FaultProxyHandle::blackhole_tag)) while the others keep flowing.
//!
//! ```no_run
//! # async fn t() -> std::io::Result<()> {
//! use std::time::Duration;
//! use coord_testkit::FaultProxy;
//! let proxy = FaultProxy::start("127.0.0.1:2379").await?;
//! let client_url = format!("http://{}", proxy.addr());
//! proxy.set_latency(Duration::from_millis(50));
//! proxy.blackhole();
//! proxy.heal();
//! proxy.reset_all();
//! # let _ = client_url; Ok(()) }
//! ```

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Chunks buffered per direction between the reader and the (delayed) writer. Enough for
/// seconds of latency on a chatty link (raft heartbeats): a full pipe stalls the reader,
/// which adds delay on top of the configured latency.
const PIPE_DEPTH: usize = 1024;
/// How much of a tagging proxy's first client bytes are searched for the tag header.
const SNIFF_LIMIT: usize = 16 * 1024;
/// How long a tagging proxy waits for a client's first request head before forwarding
/// the connection untagged.
const SNIFF_TIMEOUT: Duration = Duration::from_secs(1);
/// Read buffer size.
const CHUNK: usize = 16 * 1024;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Faults {
    latency: Duration,
    blackhole: bool,
}

#[derive(Debug)]
struct Shared {
    addr: SocketAddr,
    upstream: String,
    faults: watch::Sender<Faults>,
    /// Closed on drop of the [`FaultProxy`].
    shutdown: CancellationToken,
    /// The current connection generation; cancelled and replaced by `reset_all`.
    generation: Mutex<CancellationToken>,
    active: AtomicUsize,
    accepted: AtomicUsize,
    /// The HTTP request header whose value tags a connection (tagging proxies only).
    tag_header: Option<String>,
    /// Per-tag faults, created on first use.
    tags: Mutex<HashMap<String, watch::Sender<Faults>>>,
}

impl Shared {
    fn tag(&self, tag: &str) -> watch::Sender<Faults> {
        self.tags
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(tag.to_owned())
            .or_insert_with(|| watch::Sender::new(Faults::default()))
            .clone()
    }
}

/// A cloneable controller for a [`FaultProxy`]. Every control takes effect at once for
/// current and future connections.
#[derive(Clone, Debug)]
pub struct FaultProxyHandle {
    shared: Arc<Shared>,
}

impl FaultProxyHandle {
    /// The proxy's listening address (`127.0.0.1:PORT`): give this to the client.
    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// The upstream address the proxy forwards to.
    pub fn upstream(&self) -> &str {
        &self.shared.upstream
    }

    /// Delays data in each direction by `latency` (`Duration::ZERO` to remove it).
    pub fn set_latency(&self, latency: Duration) {
        self.shared.faults.send_modify(|f| f.latency = latency);
    }

    /// The configured latency.
    pub fn latency(&self) -> Duration {
        self.shared.faults.borrow().latency
    }

    /// Stops forwarding: connections stay open (new ones are accepted but not connected
    /// upstream) and nothing passes in either direction until [`heal`](Self::heal).
    pub fn blackhole(&self) {
        self.shared.faults.send_modify(|f| f.blackhole = true);
    }

    /// Whether the proxy is blackholed.
    pub fn is_blackholed(&self) -> bool {
        self.shared.faults.borrow().blackhole
    }

    /// Forwards normally again after [`blackhole`](Self::blackhole) (latency is kept).
    pub fn heal(&self) {
        self.shared.faults.send_modify(|f| f.blackhole = false);
    }

    /// Aborts all current connections (client and upstream side) with a TCP RST.
    /// Connections accepted afterwards are unaffected.
    pub fn reset_all(&self) {
        let mut generation = self
            .shared
            .generation
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        generation.cancel();
        *generation = self.shared.shutdown.child_token();
    }

    /// Stops forwarding the connections tagged `tag` (current and future ones), as
    /// [`blackhole`](Self::blackhole) does for all. Only a proxy started with
    /// [`FaultProxy::start_tagging`] tags connections.
    pub fn blackhole_tag(&self, tag: &str) {
        self.shared.tag(tag).send_modify(|f| f.blackhole = true);
    }

    /// Forwards the connections tagged `tag` again after
    /// [`blackhole_tag`](Self::blackhole_tag).
    pub fn heal_tag(&self, tag: &str) {
        self.shared.tag(tag).send_modify(|f| f.blackhole = false);
    }

    /// Whether the connections tagged `tag` are blackholed.
    pub fn is_tag_blackholed(&self, tag: &str) -> bool {
        self.shared.tag(tag).borrow().blackhole
    }

    /// Number of client connections currently open through the proxy.
    pub fn active_connections(&self) -> usize {
        self.shared.active.load(Ordering::SeqCst)
    }

    /// Number of client connections accepted since the proxy started.
    pub fn accepted_connections(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }
}

/// A fault-injecting TCP proxy listening on a free `127.0.0.1` port; see the
/// [module docs](self). Derefs to [`FaultProxyHandle`] for the controls. Needs a tokio
/// runtime with the time and IO drivers.
#[derive(Debug)]
pub struct FaultProxy {
    handle: FaultProxyHandle,
}

impl Deref for FaultProxy {
    type Target = FaultProxyHandle;

    fn deref(&self) -> &FaultProxyHandle {
        &self.handle
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.handle.shared.shutdown.cancel();
    }
}

impl FaultProxy {
    /// Starts a proxy in front of `upstream` (`host:port`, resolved on each connection).
    ///
    /// # Errors
    ///
    /// When binding the listener fails.
    pub async fn start(upstream: impl Into<String>) -> io::Result<Self> {
        Self::start_with(upstream.into(), None).await
    }

    /// Like [`start`](Self::start), and tags each connection with the value of the HTTP
    /// request header `header` (case-insensitive) found in the first bytes its client
    /// sends, for [`blackhole_tag`](FaultProxyHandle::blackhole_tag). A connection whose
    /// client sends no such header within a second is forwarded untagged. Only for
    /// protocols where the client speaks first.
    ///
    /// # Errors
    ///
    /// When binding the listener fails.
    pub async fn start_tagging(
        upstream: impl Into<String>,
        header: impl Into<String>,
    ) -> io::Result<Self> {
        Self::start_with(upstream.into(), Some(header.into())).await
    }

    async fn start_with(upstream: String, tag_header: Option<String>) -> io::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let shutdown = CancellationToken::new();
        let shared = Arc::new(Shared {
            addr,
            upstream,
            faults: watch::Sender::new(Faults::default()),
            generation: Mutex::new(shutdown.child_token()),
            shutdown,
            active: AtomicUsize::new(0),
            accepted: AtomicUsize::new(0),
            tag_header,
            tags: Mutex::new(HashMap::new()),
        });
        tokio::spawn(accept_loop(listener, shared.clone()));
        Ok(Self {
            handle: FaultProxyHandle { shared },
        })
    }

    /// A cloneable controller that stays usable while the proxy lives.
    pub fn handle(&self) -> FaultProxyHandle {
        self.handle.clone()
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let accepted = tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((client, _)) => {
                let _ = client.set_nodelay(true);
                shared.accepted.fetch_add(1, Ordering::SeqCst);
                let generation = shared
                    .generation
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone();
                tokio::spawn(connection(client, shared.clone(), generation));
            }
            Err(e) => {
                tracing::debug!("fault proxy accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Decrements the active count however the connection task ends.
struct ActiveGuard<'a>(&'a AtomicUsize);

impl Drop for ActiveGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn connection(mut client: TcpStream, shared: Arc<Shared>, generation: CancellationToken) {
    shared.active.fetch_add(1, Ordering::SeqCst);
    let _guard = ActiveGuard(&shared.active);

    let (tag, head) = match &shared.tag_header {
        Some(header) => {
            tokio::select! {
                _ = generation.cancelled() => {
                    abort(&client);
                    return;
                }
                sniffed = sniff(&mut client, header) => sniffed,
            }
        }
        None => (None, Vec::new()),
    };
    let mut link = Link {
        all: shared.faults.subscribe(),
        tagged: tag.map(|t| shared.tag(&t).subscribe()),
    };

    // While blackholed, hold the client without connecting upstream.
    let upstream = tokio::select! {
        _ = generation.cancelled() => {
            abort(&client);
            return;
        }
        r = async {
            link.wait_open().await;
            TcpStream::connect(shared.upstream.as_str()).await
        } => r,
    };
    let upstream = match upstream {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!("fault proxy: upstream {} unreachable: {e}", shared.upstream);
            abort(&client);
            return;
        }
    };
    let _ = upstream.set_nodelay(true);

    let (mut client_r, mut client_w) = client.into_split();
    let (mut up_r, mut up_w) = upstream.into_split();
    let reset = {
        let to_upstream = pump(&mut client_r, &mut up_w, link.clone(), head);
        let to_client = pump(&mut up_r, &mut client_w, link, Vec::new());
        tokio::select! {
            _ = generation.cancelled() => true,
            _ = futures::future::join(to_upstream, to_client) => false,
        }
    };
    if reset {
        abort(client_w.as_ref());
        abort(up_w.as_ref());
    }
}

/// The faults that apply to one connection: the proxy's, and its tag's if it has one.
#[derive(Clone)]
struct Link {
    all: watch::Receiver<Faults>,
    tagged: Option<watch::Receiver<Faults>>,
}

impl Link {
    /// Waits until neither the proxy nor the tag is blackholed; `false` once the proxy is
    /// gone.
    async fn wait_open(&mut self) -> bool {
        loop {
            if self.all.wait_for(|f| !f.blackhole).await.is_err() {
                return false;
            }
            let Some(tagged) = self.tagged.as_mut() else {
                return true;
            };
            if tagged.wait_for(|f| !f.blackhole).await.is_err() {
                return false;
            }
            // The proxy may have been blackholed while the tag was.
            if !self.all.borrow().blackhole {
                return true;
            }
        }
    }

    fn latency(&self) -> Duration {
        self.all.borrow().latency
            + self
                .tagged
                .as_ref()
                .map_or(Duration::ZERO, |t| t.borrow().latency)
    }
}

/// Reads the client's first bytes until the end of an HTTP request head (or a limit, EOF,
/// or a second of silence) and returns the value of `header` in it, with the bytes read
/// (to forward first).
async fn sniff(client: &mut TcpStream, header: &str) -> (Option<String>, Vec<u8>) {
    let mut head = Vec::new();
    let mut buf = vec![0u8; CHUNK];
    let deadline = Instant::now() + SNIFF_TIMEOUT;
    while head.len() < SNIFF_LIMIT && !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match tokio::time::timeout_at(deadline, client.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => head.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    let tag = String::from_utf8_lossy(&head)
        .lines()
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case(header))
        .map(|(_, value)| value.trim().to_owned());
    (tag, head)
}

/// Arms an abortive close: the socket sends RST when it is dropped.
fn abort(s: &TcpStream) {
    let _ = s.set_zero_linger();
}

/// Forwards one direction: `first` (bytes already read from `r`), then reads chunks,
/// stamps them with their due time, and writes them once due and not blackholed. Ends
/// after forwarding EOF (as a write shutdown) or on an error (after shutting the write
/// side down).
async fn pump(r: &mut OwnedReadHalf, w: &mut OwnedWriteHalf, link: Link, first: Vec<u8>) {
    let (tx, mut rx) = mpsc::channel::<(Instant, Option<Vec<u8>>)>(PIPE_DEPTH);
    let mut read_link = link.clone();
    let mut write_link = link;
    let reader = async move {
        if !first.is_empty() {
            let due = Instant::now() + read_link.latency();
            if tx.send((due, Some(first))).await.is_err() {
                return;
            }
        }
        let mut buf = vec![0u8; CHUNK];
        loop {
            if !read_link.wait_open().await {
                return;
            }
            let n = r.read(&mut buf).await.unwrap_or(0);
            let due = Instant::now() + read_link.latency();
            let item = (n > 0).then(|| buf[..n].to_vec());
            if tx.send((due, item)).await.is_err() || n == 0 {
                return;
            }
        }
    };
    let writer = async move {
        while let Some((due, item)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if !write_link.wait_open().await {
                return;
            }
            match item {
                Some(bytes) => {
                    if w.write_all(&bytes).await.is_err() {
                        return;
                    }
                }
                None => {
                    let _ = w.shutdown().await;
                    return;
                }
            }
        }
    };
    futures::future::join(reader, writer).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant as StdInstant;

    /// A plain echo server; returns its address.
    async fn echo_server() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    async fn roundtrip(s: &mut TcpStream, msg: &[u8]) -> io::Result<Vec<u8>> {
        s.write_all(msg).await?;
        let mut got = vec![0u8; msg.len()];
        s.read_exact(&mut got).await?;
        Ok(got)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn forwards_both_directions() {
        let up = echo_server().await;
        let proxy = FaultProxy::start(up.to_string()).await.unwrap();
        let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(roundtrip(&mut s, b"hello").await.unwrap(), b"hello");
        // A larger payload than one chunk, to exercise pipelining.
        let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        assert_eq!(roundtrip(&mut s, &big).await.unwrap(), big);
        assert_eq!(proxy.active_connections(), 1);
        assert_eq!(proxy.accepted_connections(), 1);
        // Half-close propagates as EOF.
        s.shutdown().await.unwrap();
        let mut rest = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest))
            .await
            .unwrap()
            .unwrap();
        assert!(rest.is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn latency_is_measurable() {
        let up = echo_server().await;
        let proxy = FaultProxy::start(up.to_string()).await.unwrap();
        let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
        let t = StdInstant::now();
        roundtrip(&mut s, b"warm").await.unwrap();
        let base = t.elapsed();

        proxy.set_latency(Duration::from_millis(100));
        assert_eq!(proxy.latency(), Duration::from_millis(100));
        let t = StdInstant::now();
        roundtrip(&mut s, b"slow").await.unwrap();
        let slow = t.elapsed();
        // One delay each way.
        assert!(
            slow >= Duration::from_millis(200),
            "round trip took {slow:?}"
        );
        assert!(slow < Duration::from_secs(2), "round trip took {slow:?}");

        proxy.set_latency(Duration::ZERO);
        let t = StdInstant::now();
        roundtrip(&mut s, b"fast").await.unwrap();
        assert!(t.elapsed() < Duration::from_millis(150) + base * 4);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn blackhole_times_out_and_heal_restores() {
        let up = echo_server().await;
        let proxy = FaultProxy::start(up.to_string()).await.unwrap();
        let handle = proxy.handle();
        let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(roundtrip(&mut s, b"before").await.unwrap(), b"before");

        handle.blackhole();
        assert!(handle.is_blackholed());
        let r = tokio::time::timeout(Duration::from_millis(300), roundtrip(&mut s, b"lost?")).await;
        assert!(r.is_err(), "a blackholed proxy must not answer");
        // A new connection is accepted but goes nowhere either.
        let mut s2 = TcpStream::connect(proxy.addr()).await.unwrap();
        let r = tokio::time::timeout(Duration::from_millis(300), roundtrip(&mut s2, b"new")).await;
        assert!(r.is_err());

        handle.heal();
        // The held bytes arrive after healing; the connection stays usable.
        let mut held = [0u8; 5];
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut held))
            .await
            .expect("held data delivered after heal")
            .unwrap();
        assert_eq!(&held, b"lost?");
        assert_eq!(roundtrip(&mut s, b"after").await.unwrap(), b"after");
        let mut held2 = [0u8; 3];
        tokio::time::timeout(Duration::from_secs(5), s2.read_exact(&mut held2))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&held2, b"new");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reset_all_closes_connections_but_not_the_proxy() {
        let up = echo_server().await;
        let proxy = FaultProxy::start(up.to_string()).await.unwrap();
        let mut a = TcpStream::connect(proxy.addr()).await.unwrap();
        let mut b = TcpStream::connect(proxy.addr()).await.unwrap();
        roundtrip(&mut a, b"a").await.unwrap();
        roundtrip(&mut b, b"b").await.unwrap();
        assert_eq!(proxy.active_connections(), 2);

        proxy.reset_all();
        for s in [&mut a, &mut b] {
            let mut buf = [0u8; 8];
            let r = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
                .await
                .expect("reset must be noticed promptly");
            match r {
                Err(e) => assert_eq!(e.kind(), io::ErrorKind::ConnectionReset, "{e}"),
                Ok(n) => assert_eq!(n, 0, "expected EOF or RST"),
            }
        }
        let deadline = StdInstant::now() + Duration::from_secs(5);
        while proxy.active_connections() != 0 && StdInstant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(proxy.active_connections(), 0);

        let mut c = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(roundtrip(&mut c, b"again").await.unwrap(), b"again");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reset_while_blackholed_and_drop_stops_the_proxy() {
        let up = echo_server().await;
        let proxy = FaultProxy::start(up.to_string()).await.unwrap();
        let addr = proxy.addr();
        let handle = proxy.handle();
        handle.blackhole();
        let mut s = TcpStream::connect(addr).await.unwrap();
        // reset_all affects connections the proxy has accepted.
        let deadline = StdInstant::now() + Duration::from_secs(5);
        while handle.accepted_connections() == 0 && StdInstant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        handle.reset_all();
        let mut buf = [0u8; 1];
        let r = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .unwrap();
        assert!(matches!(r, Ok(0) | Err(_)));

        handle.heal();
        drop(proxy);
        // The listener goes away shortly after the drop.
        let deadline = StdInstant::now() + Duration::from_secs(5);
        loop {
            match TcpStream::connect(addr).await {
                Err(_) => break,
                Ok(_) if StdInstant::now() > deadline => panic!("proxy still listening"),
                Ok(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
        // The handle is inert but harmless.
        handle.set_latency(Duration::from_millis(1));
        handle.reset_all();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tagged_connections_are_cut_alone() {
        let up = echo_server().await;
        let proxy = FaultProxy::start_tagging(up.to_string(), "x-from")
            .await
            .unwrap();
        let head = |who: &str| format!("GET / HTTP/1.1\r\nHost: h\r\nX-From: {who}\r\n\r\n");
        let mut a = TcpStream::connect(proxy.addr()).await.unwrap();
        let mut b = TcpStream::connect(proxy.addr()).await.unwrap();
        // The head is forwarded as sent.
        let ha = head("a");
        assert_eq!(
            roundtrip(&mut a, ha.as_bytes()).await.unwrap(),
            ha.as_bytes()
        );
        let hb = head("b");
        assert_eq!(
            roundtrip(&mut b, hb.as_bytes()).await.unwrap(),
            hb.as_bytes()
        );

        proxy.blackhole_tag("a");
        assert!(proxy.is_tag_blackholed("a") && !proxy.is_tag_blackholed("b"));
        let r = tokio::time::timeout(Duration::from_millis(300), roundtrip(&mut a, b"cut")).await;
        assert!(r.is_err(), "a's connection is cut");
        assert_eq!(roundtrip(&mut b, b"flows").await.unwrap(), b"flows");
        // A new connection of a's is held too, one without the header is not.
        let mut a2 = TcpStream::connect(proxy.addr()).await.unwrap();
        let ha2 = head("a");
        let r = tokio::time::timeout(
            Duration::from_millis(300),
            roundtrip(&mut a2, ha2.as_bytes()),
        )
        .await;
        assert!(r.is_err(), "a's new connection is cut");
        let mut anon = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(roundtrip(&mut anon, b"no head").await.unwrap(), b"no head");

        proxy.heal_tag("a");
        let mut held = [0u8; 3];
        tokio::time::timeout(Duration::from_secs(5), a.read_exact(&mut held))
            .await
            .expect("held data delivered after heal")
            .unwrap();
        assert_eq!(&held, b"cut");
        assert_eq!(roundtrip(&mut a, b"again").await.unwrap(), b"again");
    }
}
