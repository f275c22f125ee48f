//! A TCP proxy on 127.0.0.1 that counts the bytes flowing from the upstream to clients, with an
//! optional shared rate limit, an optional per-connection rate limit (a CDN's cap on each
//! connection), a switch to refuse new connections, and one to hide HTTP `Range` headers from
//! the upstream (a registry that ignores Range, as some do).

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often blocked threads look at the shutdown flag.
const POLL: Duration = Duration::from_millis(50);
/// Largest chunk copied at once.
const CHUNK: usize = 64 * 1024;

struct Bucket {
    /// Bytes/second; `None` = unlimited.
    rate: Option<u64>,
    tokens: f64,
    last: Instant,
}

struct Shared {
    upstream: SocketAddr,
    down: AtomicU64,
    up: AtomicU64,
    connections: AtomicU64,
    active: AtomicUsize,
    refuse: AtomicBool,
    stop: AtomicBool,
    strip_range: AtomicBool,
    bucket: Mutex<Bucket>,
    /// Bytes/second of each connection; `None` = unlimited.
    per_connection: Mutex<Option<u64>>,
    /// Client-side streams of live connections, so they can be cut.
    live: Mutex<Vec<(u64, TcpStream)>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    /// Size of the next downstream read: small enough to keep the rate smooth.
    fn chunk_size(&self) -> usize {
        match lock(&self.bucket).rate {
            None => CHUNK,
            Some(r) => ((r / 20) as usize).clamp(512, CHUNK),
        }
    }

    /// Blocks until `n` bytes may be sent under the current rate (re-read while waiting, so
    /// `set_rate_limit` applies at once). Returns false if the proxy is stopping.
    fn take(&self, n: usize) -> bool {
        self.take_from(&self.bucket, n)
    }

    /// [`Shared::take`] from any bucket (the shared one or a connection's).
    fn take_from(&self, bucket: &Mutex<Bucket>, n: usize) -> bool {
        loop {
            if self.stop.load(Ordering::Relaxed) {
                return false;
            }
            let wait = {
                let mut b = lock(bucket);
                let now = Instant::now();
                let Some(rate) = b.rate else {
                    b.last = now;
                    return true;
                };
                let rate = rate.max(1) as f64;
                let burst = (rate / 10.0).max(n as f64);
                b.tokens = (b.tokens + now.duration_since(b.last).as_secs_f64() * rate).min(burst);
                b.last = now;
                if b.tokens >= n as f64 {
                    b.tokens -= n as f64;
                    return true;
                }
                Duration::from_secs_f64((n as f64 - b.tokens) / rate)
            };
            std::thread::sleep(wait.min(POLL));
        }
    }
}

/// A counting, optionally rate-limited TCP proxy to one upstream. Stops (closing every
/// connection) when dropped.
pub struct CountingProxy {
    shared: Arc<Shared>,
    addr: SocketAddr,
    accept: Option<JoinHandle<()>>,
}

impl CountingProxy {
    /// Listens on 127.0.0.1:0 and forwards each connection to `upstream`.
    pub fn start(upstream: SocketAddr) -> anyhow::Result<CountingProxy> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            upstream,
            down: AtomicU64::new(0),
            up: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            active: AtomicUsize::new(0),
            refuse: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            strip_range: AtomicBool::new(false),
            per_connection: Mutex::new(None),
            bucket: Mutex::new(Bucket {
                rate: None,
                tokens: 0.0,
                last: Instant::now(),
            }),
            live: Mutex::new(Vec::new()),
        });
        let sh = shared.clone();
        let accept = std::thread::Builder::new()
            .name(format!("proxy-{addr}"))
            .spawn(move || accept_loop(listener, sh))?;
        Ok(CountingProxy {
            shared,
            addr,
            accept: Some(accept),
        })
    }

    /// The proxy's address (127.0.0.1:port).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `https://127.0.0.1:port` (when the upstream speaks TLS; the proxy only relays bytes).
    pub fn https_url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// Bytes sent from the upstream to clients since start or the last `reset`.
    pub fn bytes_down(&self) -> u64 {
        self.shared.down.load(Ordering::Relaxed)
    }

    /// Bytes sent from clients to the upstream since start or the last `reset`.
    pub fn bytes_up(&self) -> u64 {
        self.shared.up.load(Ordering::Relaxed)
    }

    /// Connections accepted (and forwarded) since start or the last `reset`.
    pub fn connections(&self) -> u64 {
        self.shared.connections.load(Ordering::Relaxed)
    }

    /// Connections open now.
    pub fn active_connections(&self) -> usize {
        self.shared.active.load(Ordering::Relaxed)
    }

    /// Zeroes the byte and connection counters.
    pub fn reset(&self) {
        self.shared.down.store(0, Ordering::Relaxed);
        self.shared.up.store(0, Ordering::Relaxed);
        self.shared.connections.store(0, Ordering::Relaxed);
    }

    /// Limits upstream-to-client throughput, across all connections, to `bytes_per_sec`
    /// (`None`: unlimited). Takes effect at once, also on open connections.
    pub fn set_rate_limit(&self, bytes_per_sec: Option<u64>) {
        let mut b = lock(&self.shared.bucket);
        b.rate = bytes_per_sec;
        b.tokens = 0.0;
        b.last = Instant::now();
    }

    /// Limits each connection opened from now on to `bytes_per_sec` upstream-to-client
    /// (`None`: unlimited), besides the shared limit.
    pub fn set_rate_limit_per_connection(&self, bytes_per_sec: Option<u64>) {
        *lock(&self.shared.per_connection) = bytes_per_sec;
    }

    /// When true, HTTP `Range` request headers are renamed (to `X-Rng`) on their way to the
    /// upstream, which then answers every ranged request with the whole body.
    pub fn set_strip_range(&self, strip: bool) {
        self.shared.strip_range.store(strip, Ordering::Relaxed);
    }

    /// When true, new connections are accepted and closed at once (open ones are kept).
    pub fn set_refuse(&self, refuse: bool) {
        self.shared.refuse.store(refuse, Ordering::Relaxed);
    }

    /// Cuts every open connection (both directions), e.g. to interrupt a pull mid-way.
    pub fn drop_connections(&self) {
        for (_, s) in lock(&self.shared.live).drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for CountingProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        self.drop_connections();
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

fn accept_loop(listener: TcpListener, sh: Arc<Shared>) {
    let mut workers: Vec<JoinHandle<()>> = Vec::new();
    let mut next_id = 0u64;
    while !sh.stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((client, _)) => {
                if sh.refuse.load(Ordering::Relaxed) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                next_id += 1;
                let id = next_id;
                let sh2 = sh.clone();
                if let Ok(h) = std::thread::Builder::new()
                    .name(format!("proxy-conn-{id}"))
                    .spawn(move || serve(id, client, sh2))
                {
                    workers.push(h);
                }
                workers.retain(|h| !h.is_finished());
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
    for h in workers {
        let _ = h.join();
    }
}

fn serve(id: u64, client: TcpStream, sh: Arc<Shared>) {
    let _ = client.set_nonblocking(false);
    let Ok(upstream) = TcpStream::connect_timeout(&sh.upstream, Duration::from_secs(5)) else {
        let _ = client.shutdown(Shutdown::Both);
        return;
    };
    sh.connections.fetch_add(1, Ordering::Relaxed);
    sh.active.fetch_add(1, Ordering::Relaxed);
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    if let Ok(c) = client.try_clone() {
        lock(&sh.live).push((id, c));
    }
    let (Ok(c2), Ok(u2)) = (client.try_clone(), upstream.try_clone()) else {
        sh.active.fetch_sub(1, Ordering::Relaxed);
        return;
    };
    let sh_up = sh.clone();
    // client -> upstream
    let up = std::thread::spawn(move || pump(c2, u2, &sh_up, None));
    // upstream -> client (counted, rate limited)
    let own = Mutex::new(Bucket {
        rate: *lock(&sh.per_connection),
        tokens: 0.0,
        last: Instant::now(),
    });
    pump(upstream, client, &sh, Some(&own));
    let _ = up.join();
    lock(&sh.live).retain(|(i, _)| *i != id);
    sh.active.fetch_sub(1, Ordering::Relaxed);
}

/// Copies `from` to `to`; `own` is the connection's bucket on the way down (upstream to
/// client), `None` on the way up.
fn pump(mut from: TcpStream, mut to: TcpStream, sh: &Shared, own: Option<&Mutex<Bucket>>) {
    let down = own.is_some();
    let _ = from.set_read_timeout(Some(POLL));
    let _ = to.set_write_timeout(Some(Duration::from_secs(30)));
    let mut buf = vec![0u8; CHUNK];
    // Upward bytes held back while hiding Range headers, so that a header name split across
    // two reads is still seen whole.
    let mut held: Vec<u8> = Vec::new();
    loop {
        if sh.stop.load(Ordering::Relaxed) {
            break;
        }
        let want = if down { sh.chunk_size() } else { CHUNK };
        let n = match from.read(&mut buf[..want]) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if !held.is_empty() && to.write_all(&std::mem::take(&mut held)).is_err() {
                    break;
                }
                continue;
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        if let Some(own) = own
            && !(sh.take(n) && sh.take_from(own, n))
        {
            break;
        }
        if !down && (sh.strip_range.load(Ordering::Relaxed) || !held.is_empty()) {
            held.extend_from_slice(&buf[..n]);
            hide_range_headers(&mut held);
            let keep = held.len().min(RANGE_NEEDLE.len() - 1);
            let out: Vec<u8> = held.drain(..held.len() - keep).collect();
            if to.write_all(&out).is_err() {
                break;
            }
            continue;
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
        let counter = if down { &sh.down } else { &sh.up };
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }
    // Half-close towards the writer side so the peer sees EOF; the other pump ends on its own.
    let _ = to.shutdown(Shutdown::Write);
    let _ = from.shutdown(Shutdown::Read);
}

/// What a Range header line starts with (matched without regard to case).
const RANGE_NEEDLE: &[u8] = b"\r\nrange:";

/// Renames every `Range:` header in `bytes` to `X-Rng:` (same length, so no framing changes).
fn hide_range_headers(bytes: &mut [u8]) {
    let n = RANGE_NEEDLE.len();
    let mut i = 0;
    while i + n <= bytes.len() {
        if bytes[i..i + n].eq_ignore_ascii_case(RANGE_NEEDLE) {
            bytes[i + 2..i + n].copy_from_slice(b"x-rng:");
            i += n;
        } else {
            i += 1;
        }
    }
}
