//! A user-space UDP chaos proxy for the network fault tests.
//!
//! [`Proxy::start`] binds `127.0.0.1:0` and forwards every datagram to an
//! upstream address on loopback (a receiver). Each client source address
//! gets its own upstream socket, so the upstream's replies go back to that
//! client. Every datagram, in either direction, passes one seeded fault
//! model ([`Faults`]): loss, rate limiting with a bounded queue,
//! duplication, delay with jitter, and reordering (a packet held back by an
//! extra delay). Partitions blackhole both directions, including datagrams
//! already in flight inside the proxy. Faults can be changed while the
//! proxy runs; [`Proxy::stats`] counts what was done to the traffic.
//!
//! Threads: one reads the client side, one per client reads its upstream
//! socket, and one scheduler sends each datagram when it is due (a binary
//! heap keyed by due time, with a condition variable). Decisions are drawn
//! from a seeded xorshift generator per direction, in arrival order, so a
//! run with the same seed and the same arrivals makes the same choices.
//! The proxy only ever sends to 127.0.0.0/8.
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Largest datagram the proxy carries (the largest UDP payload).
const MAX_DATAGRAM: usize = 65_536;
/// How often blocked reads look at the stop flag.
const POLL: Duration = Duration::from_millis(50);

/// Which way a datagram travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dir {
    /// Client (sender) to upstream (receiver).
    Up,
    /// Upstream (receiver) back to the client (sender).
    Down,
}

/// The fault model, applied to each direction independently (each has its
/// own rate limiter queue). The default forwards everything at once.
#[derive(Debug, Clone, PartialEq)]
pub struct Faults {
    /// One-way delay added to every datagram.
    pub delay: Duration,
    /// Uniform jitter: the delay is drawn from `delay ± jitter` (never below zero).
    pub jitter: Duration,
    /// Probability of dropping a datagram.
    pub loss: f64,
    /// Probability of sending a datagram twice (the copy right after the original).
    pub duplicate: f64,
    /// Probability of holding a datagram back by an extra delay drawn from `reorder_delay`.
    pub reorder: f64,
    /// Range of the extra delay of a reordered datagram.
    pub reorder_delay: (Duration, Duration),
    /// Rate limit in bytes per second (`None`: unlimited). Datagrams queue
    /// behind each other at this rate; one that would wait longer than
    /// `queue_limit` is dropped (`Duration::ZERO`: police, drop at once).
    pub bandwidth: Option<u64>,
    /// The longest a datagram may queue for the rate limit.
    pub queue_limit: Duration,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            loss: 0.0,
            duplicate: 0.0,
            reorder: 0.0,
            reorder_delay: (Duration::ZERO, Duration::ZERO),
            bandwidth: None,
            queue_limit: Duration::from_millis(100),
        }
    }
}

/// What happened to the datagrams of one direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DirStats {
    /// Datagrams that arrived at the proxy.
    pub received: u64,
    /// Datagrams sent on (duplicates included).
    pub forwarded: u64,
    /// Bytes sent on (duplicates included).
    pub forwarded_bytes: u64,
    /// Dropped by the loss probability.
    pub lost: u64,
    /// Dropped by a partition (on arrival or while in flight in the proxy).
    pub blackholed: u64,
    /// Dropped because the rate limiter's queue was full.
    pub rate_dropped: u64,
    /// Extra copies sent.
    pub duplicated: u64,
    /// Held back by an extra delay.
    pub reordered: u64,
    /// A send to the destination failed (e.g. a full socket buffer).
    pub send_errors: u64,
}

impl DirStats {
    /// Every datagram dropped, for any reason.
    pub fn dropped(&self) -> u64 {
        self.lost + self.blackholed + self.rate_dropped
    }
}

/// The proxy's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub up: DirStats,
    pub down: DirStats,
    /// Partitions started ([`Proxy::partition`] from healed, or [`Proxy::partition_for`]).
    pub partitions: u64,
    /// Total time partitioned so far.
    pub partitioned_for: Duration,
    /// Client source addresses seen.
    pub clients: usize,
}

impl Stats {
    pub fn dir(&self, d: Dir) -> &DirStats {
        match d {
            Dir::Up => &self.up,
            Dir::Down => &self.down,
        }
    }

    fn dir_mut(&mut self, d: Dir) -> &mut DirStats {
        match d {
            Dir::Up => &mut self.up,
            Dir::Down => &mut self.down,
        }
    }
}

impl std::fmt::Display for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (name, d) in [("up", &self.up), ("down", &self.down)] {
            write!(
                f,
                "{name}: rx={} fwd={} lost={} blackholed={} rate_dropped={} dup={} reordered={} send_err={}; ",
                d.received, d.forwarded, d.lost, d.blackholed, d.rate_dropped, d.duplicated, d.reordered, d.send_errors
            )?;
        }
        write!(f, "partitions={} partitioned={:.1}s", self.partitions, self.partitioned_for.as_secs_f64())
    }
}

/// A small seeded generator (xorshift64*), enough for fault decisions.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        // splitmix64 of the seed, so that small seeds give good states; never zero.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Rng((z ^ (z >> 31)) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.unit() < p
    }

    /// Uniform in [lo, hi].
    pub fn between(&mut self, lo: Duration, hi: Duration) -> Duration {
        if hi <= lo {
            return lo;
        }
        lo + (hi - lo).mul_f64(self.unit())
    }
}

/// A datagram waiting in the proxy until it is due.
#[derive(Debug)]
struct Pending {
    due: Instant,
    seq: u64,
    dir: Dir,
    /// Up: the client's upstream socket; Down: the client-facing socket.
    via: Arc<UdpSocket>,
    to: SocketAddr,
    data: Arc<[u8]>,
}

impl PartialEq for Pending {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.seq) == (other.due, other.seq)
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Pending {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.due, self.seq).cmp(&(other.due, other.seq))
    }
}

#[derive(Debug)]
struct State {
    faults: Faults,
    /// One generator per direction, so that each direction's choices depend
    /// only on its own arrivals.
    rng: [Rng; 2],
    seq: u64,
    queue: BinaryHeap<Reverse<Pending>>,
    /// When each direction's rate limiter is free again.
    next_free: [Instant; 2],
    /// A partition set by `partition(true)`, and since when.
    manual: Option<Instant>,
    /// A timed partition: until when, and since when.
    timed: Option<(Instant, Instant)>,
    stats: Stats,
}

impl State {
    fn partitioned(&self, now: Instant) -> bool {
        self.manual.is_some() || self.timed.is_some_and(|(until, _)| now < until)
    }

    /// Folds an expired timed partition into the total time partitioned.
    fn expire(&mut self, now: Instant) {
        if let Some((until, since)) = self.timed
            && now >= until
        {
            self.timed = None;
            self.stats.partitioned_for += until.saturating_duration_since(since);
        }
    }

    /// Decides the fate of a datagram that just arrived and queues what is to be sent.
    fn admit(&mut self, dir: Dir, via: &Arc<UdpSocket>, to: SocketAddr, data: &[u8], now: Instant) {
        self.expire(now);
        let f = self.faults.clone();
        self.stats.dir_mut(dir).received += 1;
        if self.partitioned(now) {
            self.stats.dir_mut(dir).blackholed += 1;
            return;
        }
        // Draw every decision for every datagram, so that the choices of a
        // seed do not shift when a probability is zero or a branch is skipped.
        let rng = &mut self.rng[dir as usize];
        let lose = rng.chance(f.loss);
        let dup = rng.chance(f.duplicate);
        let reorder = rng.chance(f.reorder);
        let jitter = rng.between(Duration::ZERO, f.jitter * 2);
        let extra = rng.between(f.reorder_delay.0, f.reorder_delay.1);
        if lose {
            self.stats.dir_mut(dir).lost += 1;
            return;
        }
        let mut depart = now;
        if let Some(rate) = f.bandwidth.filter(|r| *r > 0) {
            let i = dir as usize;
            let start = self.next_free[i].max(now);
            if start - now > f.queue_limit {
                self.stats.dir_mut(dir).rate_dropped += 1;
                return;
            }
            let copies = if dup { 2 } else { 1 };
            self.next_free[i] = start + Duration::from_secs_f64((data.len() * copies) as f64 / rate as f64);
            depart = self.next_free[i];
        }
        let mut due = (depart + f.delay + jitter).checked_sub(f.jitter).unwrap_or(depart).max(depart);
        if reorder {
            due += extra;
            self.stats.dir_mut(dir).reordered += 1;
        }
        let data: Arc<[u8]> = Arc::from(data);
        for _ in 0..if dup { 2 } else { 1 } {
            self.seq += 1;
            let p = Pending { due, seq: self.seq, dir, via: via.clone(), to, data: data.clone() };
            self.queue.push(Reverse(p));
        }
        if dup {
            self.stats.dir_mut(dir).duplicated += 1;
        }
    }
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    stop: AtomicBool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running chaos proxy; stopped when dropped.
#[derive(Debug)]
pub struct Proxy {
    addr: SocketAddr,
    upstream: SocketAddr,
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl Proxy {
    /// Starts a proxy on `127.0.0.1:0` in front of `upstream` (which must be
    /// on 127.0.0.0/8), with decisions drawn from `seed`.
    pub fn start(upstream: SocketAddr, seed: u64, faults: Faults) -> Proxy {
        assert!(is_loopback_v4(upstream), "the chaos proxy only forwards to 127.0.0.0/8, not {upstream}");
        let front = Arc::new(UdpSocket::bind("127.0.0.1:0").expect("bind the proxy's client side"));
        front.set_read_timeout(Some(POLL)).expect("read timeout");
        let addr = front.local_addr().expect("proxy address");
        let now = Instant::now();
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                faults,
                rng: [Rng::new(seed), Rng::new(seed ^ 0xD0_D0_D0_D0)],
                seq: 0,
                queue: BinaryHeap::new(),
                next_free: [now, now],
                manual: None,
                timed: None,
                stats: Stats::default(),
            }),
            wake: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let sched = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("chaos-sched".into())
                .spawn(move || scheduler(&shared))
                .expect("spawn the scheduler")
        };
        let front_thread = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("chaos-front".into())
                .spawn(move || front_loop(&shared, &front, upstream))
                .expect("spawn the client-side reader")
        };
        Proxy { addr, upstream, shared, threads: vec![sched, front_thread] }
    }

    /// The address clients send to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The upstream address.
    pub fn upstream(&self) -> SocketAddr {
        self.upstream
    }

    /// The current fault model.
    pub fn faults(&self) -> Faults {
        self.shared.lock().faults.clone()
    }

    /// Replaces the fault model (datagrams already queued keep their fate).
    pub fn set_faults(&self, faults: Faults) {
        self.shared.lock().faults = faults;
    }

    /// Changes the fault model in place.
    pub fn update(&self, f: impl FnOnce(&mut Faults)) {
        f(&mut self.shared.lock().faults);
    }

    /// Starts (`true`) or heals (`false`) a partition: both directions
    /// blackholed, including datagrams in flight inside the proxy. Healing
    /// also ends a timed partition.
    pub fn partition(&self, on: bool) {
        let now = Instant::now();
        let mut s = self.shared.lock();
        s.expire(now);
        if on {
            if !s.partitioned(now) {
                s.stats.partitions += 1;
            }
            if s.manual.is_none() {
                s.manual = Some(s.timed.map_or(now, |(_, since)| since));
                s.timed = None;
            }
        } else {
            if let Some(since) = s.manual.take() {
                s.stats.partitioned_for += now.saturating_duration_since(since);
            }
            if let Some((_, since)) = s.timed.take() {
                s.stats.partitioned_for += now.saturating_duration_since(since);
            }
        }
        drop(s);
        self.shared.wake.notify_all();
    }

    /// Partitions for `d` from now, without blocking; heals by itself.
    /// (A manual partition in force stays until `partition(false)`.)
    pub fn partition_for(&self, d: Duration) {
        let now = Instant::now();
        let mut s = self.shared.lock();
        s.expire(now);
        if !s.partitioned(now) {
            s.stats.partitions += 1;
        }
        if s.manual.is_none() {
            let since = s.timed.map_or(now, |(_, since)| since);
            let until = s.timed.map_or(now + d, |(u, _)| u.max(now + d));
            s.timed = Some((until, since));
        }
        drop(s);
        self.shared.wake.notify_all();
    }

    /// Whether a partition is in force now.
    pub fn is_partitioned(&self) -> bool {
        let now = Instant::now();
        let mut s = self.shared.lock();
        s.expire(now);
        s.partitioned(now)
    }

    /// The counters so far.
    pub fn stats(&self) -> Stats {
        let now = Instant::now();
        let mut s = self.shared.lock();
        s.expire(now);
        let mut st = s.stats;
        // Count a partition in force up to now.
        if let Some(since) = s.manual {
            st.partitioned_for += now.saturating_duration_since(since);
        } else if let Some((_, since)) = s.timed {
            st.partitioned_for += now.saturating_duration_since(since);
        }
        st
    }

    /// Waits until the proxy has forwarded at least `n` datagrams in direction `dir`.
    pub fn wait_forwarded(&self, dir: Dir, n: u64, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.stats().dir(dir).forwarded;
            if got >= n {
                return;
            }
            assert!(Instant::now() < deadline, "the proxy forwarded {got} of {n} datagrams {dir:?} in {timeout:?}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        self.shared.wake.notify_all();
        for h in self.threads.drain(..) {
            let _ = h.join();
        }
    }
}

fn is_loopback_v4(a: SocketAddr) -> bool {
    matches!(a, SocketAddr::V4(v) if v.ip().octets()[0] == 127)
}

/// Reads datagrams from clients; makes an upstream socket (and its reader) per client.
fn front_loop(shared: &Arc<Shared>, front: &Arc<UdpSocket>, upstream: SocketAddr) {
    let mut readers = Vec::new();
    let mut clients: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    while !shared.stop.load(Ordering::Relaxed) {
        let (n, from) = match front.recv_from(&mut buf) {
            Ok(r) => r,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => continue,
            // ECONNREFUSED and friends from an earlier send: not fatal for a proxy.
            Err(_) => continue,
        };
        if !is_loopback_v4(from) {
            continue;
        }
        let up = match clients.get(&from) {
            Some(s) => s.clone(),
            None => {
                let s = Arc::new(UdpSocket::bind("127.0.0.1:0").expect("bind an upstream socket"));
                s.set_read_timeout(Some(POLL)).expect("read timeout");
                clients.insert(from, s.clone());
                shared.lock().stats.clients = clients.len();
                let (shared, front, s2) = (shared.clone(), front.clone(), s.clone());
                let h = std::thread::Builder::new()
                    .name("chaos-upstream".into())
                    .spawn(move || upstream_loop(&shared, &s2, upstream, &front, from))
                    .expect("spawn an upstream reader");
                readers.push(h);
                s
            }
        };
        shared.lock().admit(Dir::Up, &up, upstream, &buf[..n], Instant::now());
        shared.wake.notify_one();
    }
    // The readers see the stop flag within one poll.
    for h in readers {
        let _ = h.join();
    }
}

/// Reads the upstream's replies to one client.
fn upstream_loop(shared: &Shared, sock: &UdpSocket, upstream: SocketAddr, front: &Arc<UdpSocket>, client: SocketAddr) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    while !shared.stop.load(Ordering::Relaxed) {
        let (n, from) = match sock.recv_from(&mut buf) {
            Ok(r) => r,
            Err(_) => continue,
        };
        if from != upstream {
            continue;
        }
        shared.lock().admit(Dir::Down, front, client, &buf[..n], Instant::now());
        shared.wake.notify_one();
    }
}

/// Sends each queued datagram when it is due (unless a partition started meanwhile).
fn scheduler(shared: &Shared) {
    let mut s = shared.lock();
    loop {
        if shared.stop.load(Ordering::Relaxed) {
            return;
        }
        let now = Instant::now();
        let due = s.queue.peek().map(|Reverse(p)| p.due);
        match due {
            Some(due) if due <= now => {
                let Reverse(p) = s.queue.pop().expect("peeked");
                s.expire(now);
                if s.partitioned(now) {
                    s.stats.dir_mut(p.dir).blackholed += 1;
                    continue;
                }
                // Counted before the send, so that whoever receives the
                // datagram already sees it counted; the send itself goes
                // without holding the lock.
                let len = p.data.len() as u64;
                let d = s.stats.dir_mut(p.dir);
                d.forwarded += 1;
                d.forwarded_bytes += len;
                drop(s);
                let ok = is_loopback_v4(p.to) && p.via.send_to(&p.data, p.to).is_ok();
                s = shared.lock();
                if !ok {
                    let d = s.stats.dir_mut(p.dir);
                    d.forwarded -= 1;
                    d.forwarded_bytes -= len;
                    d.send_errors += 1;
                }
            }
            Some(due) => {
                s = shared.wake.wait_timeout(s, due - now).unwrap_or_else(|e| e.into_inner()).0;
            }
            None => {
                s = shared.wake.wait_timeout(s, POLL).unwrap_or_else(|e| e.into_inner()).0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server on loopback; returns its address.
    fn echo() -> SocketAddr {
        let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let addr = s.local_addr().expect("addr");
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while let Ok((n, from)) = s.recv_from(&mut buf) {
                let _ = s.send_to(&buf[..n], from);
            }
        });
        addr
    }

    fn client(proxy: &Proxy) -> UdpSocket {
        let c = UdpSocket::bind("127.0.0.1:0").expect("bind");
        c.connect(proxy.addr()).expect("connect");
        c.set_read_timeout(Some(Duration::from_millis(300))).expect("timeout");
        c
    }

    #[test]
    fn forwards_both_ways_and_delays() {
        let p = Proxy::start(echo(), 1, Faults { delay: Duration::from_millis(30), ..Faults::default() });
        let c = client(&p);
        let t = Instant::now();
        c.send(b"hello").expect("send");
        let mut buf = [0u8; 16];
        let n = c.recv(&mut buf).expect("echo through the proxy");
        assert_eq!(&buf[..n], b"hello");
        assert!(t.elapsed() >= Duration::from_millis(60), "30 ms each way: {:?}", t.elapsed());
        let st = p.stats();
        assert_eq!((st.up.forwarded, st.down.forwarded, st.clients), (1, 1, 1));
    }

    #[test]
    fn partitions_blackhole_and_heal() {
        let p = Proxy::start(echo(), 2, Faults::default());
        let c = client(&p);
        let mut buf = [0u8; 16];
        p.partition(true);
        c.send(b"x").expect("send");
        assert!(c.recv(&mut buf).is_err(), "nothing crosses a partition");
        p.partition(false);
        c.send(b"y").expect("send");
        assert_eq!(c.recv(&mut buf).expect("healed"), 1);
        p.partition_for(Duration::from_millis(200));
        assert!(p.is_partitioned());
        c.send(b"z").expect("send");
        assert!(c.recv(&mut buf).is_err(), "blackholed while the timed partition lasts");
        let t = Instant::now();
        while p.is_partitioned() {
            assert!(t.elapsed() < Duration::from_secs(2), "a timed partition heals by itself");
            std::thread::sleep(Duration::from_millis(5));
        }
        c.send(b"w").expect("send");
        assert_eq!(c.recv(&mut buf).expect("healed again"), 1);
        let st = p.stats();
        assert_eq!((st.partitions, st.up.blackholed), (2, 2), "{st}");
        assert!(st.partitioned_for >= Duration::from_millis(190), "{st}");
    }

    #[test]
    fn loss_duplication_and_reordering_follow_the_seed() {
        let run = |seed| {
            let f = Faults {
                loss: 0.2,
                duplicate: 0.2,
                reorder: 0.2,
                reorder_delay: (Duration::from_millis(5), Duration::from_millis(10)),
                ..Faults::default()
            };
            let p = Proxy::start(echo(), seed, f);
            let c = client(&p);
            for i in 0..200u8 {
                c.send(&[i]).expect("send");
                std::thread::sleep(Duration::from_micros(300));
            }
            let mut got = Vec::new();
            let mut buf = [0u8; 4];
            while let Ok(n) = c.recv(&mut buf) {
                got.push(buf[..n][0]);
            }
            (p.stats(), got)
        };
        let (a, got) = run(7);
        let (b, _) = run(7);
        assert_eq!((a.up.lost, a.up.duplicated, a.up.reordered), (b.up.lost, b.up.duplicated, b.up.reordered));
        assert!(a.up.lost > 10 && a.up.duplicated > 10 && a.up.reordered > 10, "{a}");
        assert_eq!(a.up.forwarded, 200 - a.up.lost + a.up.duplicated, "{a}");
        assert_eq!(got.len() as u64, a.down.forwarded, "every datagram forwarded down arrived");
        assert!(got.windows(2).any(|w| w[1] < w[0]), "some datagrams arrived out of order");
        assert!(got.windows(2).any(|w| w[1] == w[0]), "some arrived twice");
    }

    #[test]
    fn rate_limit_queues_then_drops() {
        let f = Faults { bandwidth: Some(100_000), queue_limit: Duration::from_millis(50), ..Faults::default() };
        let p = Proxy::start(echo(), 3, f);
        let c = client(&p);
        let t = Instant::now();
        for _ in 0..20 {
            c.send(&[0u8; 1000]).expect("send");
        }
        let mut buf = [0u8; 2000];
        let mut n = 0;
        while c.recv(&mut buf).is_ok() {
            n += 1;
        }
        let st = p.stats();
        // 50 ms of queue at 100 kB/s holds about 5 datagrams of 1000 bytes.
        assert!((5..=8).contains(&st.up.forwarded), "{st}");
        assert_eq!(st.up.rate_dropped, 20 - st.up.forwarded, "{st}");
        assert_eq!(n, st.up.forwarded, "{st}");
        assert!(t.elapsed() >= Duration::from_millis(40));
    }
}
