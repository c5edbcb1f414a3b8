//! Prometheus scrape endpoint: `GET /metrics` (and `HEAD`) on the listening socket the
//! supervisor bound before the sandbox (`shipper.prometheus.listen`), answered with the latest
//! value of every metric series the shipper journaled ([`store`]), in the text format 0.0.4 or,
//! when `Accept` asks for it, OpenMetrics 1.0.0, names and labels mapped as the
//! OpenTelemetry compatibility rules say ([`names`]).
//!
//! Part of the shipper's single-threaded poll loop: the listener and every connection are
//! non-blocking, a turn reads what is there, writes what the socket takes and renders at most
//! a few pieces ([`CHUNK`]) of an answer, so a slow or hostile client never holds up
//! journaling. Bounds: [`MAX_CONNECTIONS`] at once (a new one replaces the connection idle the
//! longest, or is answered 503), a request head of [`http::MAX_HEAD`] bytes within
//! [`HEAD_TIMEOUT`], an answer sent within [`ANSWER_TIMEOUT`], a kept-alive connection idle
//! for [`IDLE_TIMEOUT`]. Request bodies are refused, never read: after a refusal the shipper
//! shuts its side and discards at most [`DRAIN_MAX`] bytes for [`DRAIN_TIMEOUT`], so the
//! client sees the answer rather than a reset. Seccomp: `accept4` (the `shipper-listen`
//! policy), `recvfrom`, `sendto`, `shutdown`, `close`; the shipper never binds or listens.

pub mod http;
pub mod names;
pub mod store;

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::poll::{PollFd, PollFlags};
use nix::sys::socket::{MsgFlags, Shutdown, SockFlag, accept4, recv, send, shutdown};
use vigil_ipc_proto::Record;

use crate::convert::ResourceDefaults;
use crate::stats::Stats;

use http::{Method, Parsed, Request};
use store::{Cursor, Format, Store};

pub const MAX_CONNECTIONS: usize = 8;
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(1);
pub const DRAIN_MAX: usize = 64 * 1024;
/// Bytes of an answer rendered at a time (one HTTP chunk).
pub const CHUNK: usize = 64 * 1024;
/// Pieces of one answer written per loop turn, connections accepted per turn.
const CHUNKS_PER_TURN: usize = 4;
const ACCEPTS_PER_TURN: usize = 16;
/// Store entries expire this often.
const EXPIRE_EVERY: Duration = Duration::from_secs(1);

struct Job {
    format: Format,
    cursor: Cursor,
    chunked: bool,
}

enum State {
    /// Waiting for (the rest of) a request head.
    Reading,
    /// Sending an answer; `job` renders the rest of a metrics body, then the connection
    /// waits for the next request (`keep_alive`) or closes.
    Writing { job: Option<Job>, keep_alive: bool },
    /// Answer sent and our side shut: discarding what the client still sends, briefly.
    Draining { discarded: usize },
}

struct Conn {
    fd: OwnedFd,
    state: State,
    /// Request bytes not answered yet (at most `MAX_HEAD`).
    input: Vec<u8>,
    /// Answer bytes; `sent` of them are sent.
    out: String,
    sent: usize,
    deadline: Instant,
    /// Since when it has been waiting for a request (eviction picks the longest).
    idle_since: Instant,
}

/// What became of a connection in a turn.
#[derive(PartialEq, Eq)]
enum Fate {
    Open,
    Closed,
}

pub struct Endpoint {
    listener: OwnedFd,
    conns: Vec<Conn>,
    pub store: Store,
    next_expiry: Instant,
    /// Accepting paused until then (descriptor table full: poll would wake at once).
    accept_paused: Option<Instant>,
}

impl Endpoint {
    /// Serve on `listener` (made non-blocking here); entries live `ttl` unrefreshed.
    pub fn new(
        listener: OwnedFd,
        defaults: &ResourceDefaults,
        ttl: Duration,
        now: Instant,
    ) -> Result<Self, Errno> {
        let fl = OFlag::from_bits_truncate(fcntl(&listener, FcntlArg::F_GETFL)?);
        fcntl(&listener, FcntlArg::F_SETFL(fl | OFlag::O_NONBLOCK))?;
        Ok(Endpoint {
            listener,
            conns: Vec::new(),
            store: Store::new(defaults, ttl, now),
            next_expiry: now + EXPIRE_EVERY,
            accept_paused: None,
        })
    }

    /// Keep the latest values of a record just journaled.
    pub fn ingest(&mut self, r: Record, now: Instant) {
        self.store.ingest(r, now);
    }

    /// Open connections.
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// Expire store entries and close connections whose time is up; returns when to come
    /// back.
    pub fn step(&mut self, now: Instant, stats: &mut Stats) -> Option<Instant> {
        if now >= self.next_expiry {
            self.store.expire(now);
            self.next_expiry = now + EXPIRE_EVERY;
        }
        if self.accept_paused.is_some_and(|t| now >= t) {
            self.accept_paused = None;
        }
        self.conns.retain(|c| {
            if now < c.deadline {
                return true;
            }
            // Cut mid-request or mid-answer: refused. Idle keep-alive or draining: done.
            let cut = match c.state {
                State::Reading => !c.input.is_empty(),
                State::Writing { .. } => true,
                State::Draining { .. } => false,
            };
            if cut {
                stats.prometheus_refused += 1;
            }
            false
        });
        let mut wake = self.next_expiry;
        for c in &self.conns {
            wake = wake.min(c.deadline);
        }
        if let Some(t) = self.accept_paused {
            wake = wake.min(t);
        }
        Some(wake)
    }

    /// Descriptors to poll: the listener, then every connection, in this order.
    pub fn poll_fds<'a>(&'a self, fds: &mut Vec<PollFd<'a>>) {
        self.for_each_fd(|fd, ev| fds.push(PollFd::new(fd, ev)));
    }

    /// Each descriptor to poll and its events, in [`poll_fds`](Self::poll_fds)'s order.
    pub fn for_each_fd<'a>(&'a self, mut f: impl FnMut(BorrowedFd<'a>, PollFlags)) {
        let listen = if self.accept_paused.is_some() {
            PollFlags::empty()
        } else {
            PollFlags::POLLIN
        };
        f(self.listener.as_fd(), listen);
        for c in &self.conns {
            let ev = match c.state {
                State::Reading | State::Draining { .. } => PollFlags::POLLIN,
                State::Writing { .. } => PollFlags::POLLOUT,
            };
            f(c.fd.as_fd(), ev);
        }
    }

    /// After poll: `revents` of the descriptors [`poll_fds`](Self::poll_fds) gave, in order.
    pub fn handle(&mut self, revents: &[PollFlags], now: Instant, stats: &mut Stats) {
        let mut i = self.conns.len();
        while i > 0 {
            i -= 1;
            let ready = revents.get(i + 1).copied().unwrap_or(PollFlags::empty());
            if ready.is_empty() {
                continue;
            }
            if self.serve(i, now, stats) == Fate::Closed {
                self.conns.swap_remove(i);
            }
        }
        if revents
            .first()
            .is_some_and(|r| r.contains(PollFlags::POLLIN))
        {
            self.accept(now, stats);
        }
    }

    fn accept(&mut self, now: Instant, stats: &mut Stats) {
        for _ in 0..ACCEPTS_PER_TURN {
            let raw = match accept4(
                self.listener.as_raw_fd(),
                SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
            ) {
                Ok(fd) => fd,
                Err(Errno::EAGAIN | Errno::EINTR) => return,
                Err(Errno::ECONNABORTED | Errno::EPROTO) => continue,
                Err(e) => {
                    tracing::warn!("prometheus: accept: {e}; pausing for a second");
                    self.accept_paused = Some(now + Duration::from_secs(1));
                    return;
                }
            };
            // SAFETY: accept4 just returned this descriptor; nothing else owns it.
            let fd = unsafe { OwnedFd::from_raw_fd(raw) };
            if self.conns.len() >= MAX_CONNECTIONS && !self.evict_idle() {
                stats.prometheus_refused += 1;
                let _ = send(
                    fd.as_raw_fd(),
                    http::refusal(503).as_bytes(),
                    MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT,
                );
                continue;
            }
            self.conns.push(Conn {
                fd,
                state: State::Reading,
                input: Vec::new(),
                out: String::new(),
                sent: 0,
                deadline: now + HEAD_TIMEOUT,
                idle_since: now,
            });
        }
    }

    /// Close the connection waiting for a request the longest; false when every one is busy.
    fn evict_idle(&mut self) -> bool {
        let idle = self
            .conns
            .iter()
            .enumerate()
            .filter(|(_, c)| matches!(c.state, State::Reading) && c.input.is_empty())
            .min_by_key(|(_, c)| c.idle_since)
            .map(|(i, _)| i);
        match idle {
            Some(i) => {
                self.conns.swap_remove(i);
                true
            }
            None => false,
        }
    }

    /// Read, answer, write, as far as the socket goes this turn.
    fn serve(&mut self, i: usize, now: Instant, stats: &mut Stats) -> Fate {
        let store = &mut self.store;
        let c = &mut self.conns[i];
        match c.state {
            State::Reading => {
                let eof = c.read_input(now) == Fate::Closed;
                if eof && c.input.is_empty() {
                    return Fate::Closed;
                }
                c.answer(now, stats);
                match &mut c.state {
                    State::Writing { keep_alive, .. } => {
                        // A client that shut its side after the request still gets the
                        // answer, and then nothing more.
                        *keep_alive &= !eof;
                        c.write(store, now, stats)
                    }
                    _ if eof => Fate::Closed,
                    _ => Fate::Open,
                }
            }
            State::Writing { .. } => c.write(store, now, stats),
            State::Draining { .. } => c.drain(),
        }
    }
}

impl Conn {
    /// Take what the client sent, up to the head bound; `Closed` at its end of stream (or on
    /// an error).
    fn read_input(&mut self, now: Instant) -> Fate {
        let mut buf = [0u8; 4096];
        let was_empty = self.input.is_empty();
        while self.input.len() < http::MAX_HEAD {
            let room = (http::MAX_HEAD - self.input.len()).min(buf.len());
            match recv(
                self.fd.as_raw_fd(),
                &mut buf[..room],
                MsgFlags::MSG_DONTWAIT,
            ) {
                Ok(0) => return Fate::Closed,
                Ok(n) => self.input.extend_from_slice(&buf[..n]),
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => break,
                Err(_) => return Fate::Closed,
            }
        }
        if was_empty && !self.input.is_empty() {
            // A request has begun: its head must be complete soon.
            self.deadline = self.deadline.min(now + HEAD_TIMEOUT);
        }
        Fate::Open
    }

    /// Start answering the request at the head of `input`, if it is complete.
    fn answer(&mut self, now: Instant, stats: &mut Stats) {
        match http::parse(&self.input) {
            Parsed::Partial => {}
            Parsed::Metrics(req, n) => {
                self.input.drain(..n);
                stats.prometheus_scrapes += 1;
                self.start(req, now);
            }
            Parsed::Refuse(status) => {
                stats.prometheus_refused += 1;
                self.input.clear();
                self.out = http::refusal(status);
                self.sent = 0;
                self.state = State::Writing {
                    job: None,
                    keep_alive: false,
                };
                self.deadline = now + ANSWER_TIMEOUT;
            }
        }
    }

    fn start(&mut self, req: Request, now: Instant) {
        // HTTP/1.0 bodies end with the connection.
        let keep_alive = req.keep_alive && req.http11;
        self.out = http::metrics_head(&req, keep_alive);
        self.sent = 0;
        let job = (req.method == Method::Get).then_some(Job {
            format: req.format,
            cursor: Cursor::Start,
            chunked: req.http11,
        });
        self.state = State::Writing { job, keep_alive };
        self.deadline = now + ANSWER_TIMEOUT;
    }

    /// Send what is rendered, render more while the socket takes it (a few chunks a turn).
    fn write(&mut self, store: &mut Store, now: Instant, stats: &mut Stats) -> Fate {
        for _ in 0..CHUNKS_PER_TURN {
            while self.sent < self.out.len() {
                match send(
                    self.fd.as_raw_fd(),
                    &self.out.as_bytes()[self.sent..],
                    MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT,
                ) {
                    Ok(n) => self.sent += n,
                    Err(Errno::EINTR) => {}
                    Err(Errno::EAGAIN) => return Fate::Open,
                    Err(_) => return Fate::Closed,
                }
            }
            self.out.clear();
            self.sent = 0;
            let State::Writing { job, keep_alive } = &mut self.state else {
                return Fate::Open;
            };
            if let Some(j) = job {
                if render_piece(store, j, &mut self.out) {
                    *job = None;
                }
                continue;
            }
            // Answer complete.
            self.out = String::new();
            if *keep_alive {
                self.state = State::Reading;
                self.deadline = now + IDLE_TIMEOUT;
                self.idle_since = now;
                // A request that came right behind the last one.
                self.answer(now, stats);
                if !matches!(self.state, State::Writing { .. }) {
                    return Fate::Open;
                }
            } else {
                let _ = shutdown(self.fd.as_raw_fd(), Shutdown::Write);
                self.state = State::Draining { discarded: 0 };
                self.deadline = now + DRAIN_TIMEOUT;
                return self.drain();
            }
        }
        Fate::Open
    }

    /// Discard what the client still sends after our answer, up to a bound.
    fn drain(&mut self) -> Fate {
        let State::Draining { discarded } = &mut self.state else {
            return Fate::Open;
        };
        let mut buf = [0u8; 4096];
        loop {
            match recv(self.fd.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT) {
                Ok(0) => return Fate::Closed,
                Ok(n) => {
                    *discarded += n;
                    if *discarded > DRAIN_MAX {
                        return Fate::Closed;
                    }
                }
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => return Fate::Open,
                Err(_) => return Fate::Closed,
            }
        }
    }
}

/// The next piece of a metrics body into `out` (an HTTP chunk when chunked; the last chunk
/// after the end); true when the body is complete.
fn render_piece(store: &mut Store, j: &mut Job, out: &mut String) -> bool {
    if !j.chunked {
        return store.render(j.format, &mut j.cursor, out, CHUNK);
    }
    let start = out.len();
    out.push_str("00000000\r\n");
    let body = out.len();
    let done = store.render(j.format, &mut j.cursor, out, CHUNK);
    let n = out.len() - body;
    if n == 0 {
        out.truncate(start);
    } else {
        out.replace_range(start..start + 8, &format!("{n:08x}"));
        out.push_str("\r\n");
    }
    if done {
        out.push_str("0\r\n\r\n");
    }
    done
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};

    fn endpoint() -> (Endpoint, u16, Instant) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let now = Instant::now();
        let ep = Endpoint::new(
            OwnedFd::from(l),
            &ResourceDefaults::new("h"),
            Duration::from_secs(60),
            now,
        )
        .unwrap();
        (ep, port, now)
    }

    /// A few turns of the run loop's part for the endpoint (poll, then handle).
    fn pump(ep: &mut Endpoint, stats: &mut Stats, turns: usize) {
        for _ in 0..turns {
            let mut fds = Vec::new();
            ep.poll_fds(&mut fds);
            let _ = nix::poll::poll(&mut fds, 20u16);
            let ready: Vec<PollFlags> = fds
                .iter()
                .map(|f| f.revents().unwrap_or(PollFlags::empty()))
                .collect();
            drop(fds);
            ep.handle(&ready, Instant::now(), stats);
        }
    }

    fn connect(port: u16) -> TcpStream {
        let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s
    }

    #[test]
    fn slow_heads_and_idle_connections_are_cut() {
        let (mut ep, port, t0) = endpoint();
        let mut stats = Stats::default();
        let mut slow = connect(port);
        let _idle = connect(port);
        slow.write_all(b"GET /metrics HTTP/1.1\r\nX: ").unwrap();
        pump(&mut ep, &mut stats, 5);
        assert_eq!(ep.connections(), 2);
        ep.step(t0 + HEAD_TIMEOUT / 2, &mut stats);
        assert_eq!(ep.connections(), 2);
        // Both past the head timeout: the one mid-request was refused, the idle one is not
        // counted.
        ep.step(t0 + HEAD_TIMEOUT + Duration::from_secs(1), &mut stats);
        assert_eq!(ep.connections(), 0);
        assert_eq!(stats.prometheus_refused, 1);
        let mut rest = Vec::new();
        assert_eq!(slow.read_to_end(&mut rest).unwrap_or(0), 0);
    }

    #[test]
    fn a_client_that_does_not_read_is_cut_after_the_answer_timeout() {
        let (mut ep, port, t0) = endpoint();
        for pid in 1..20_000 {
            let mut p = crate::convert::tests::process();
            p.pid = pid;
            ep.ingest(Record::Process(Box::new(p)), t0);
        }
        let mut stats = Stats::default();
        let mut c = connect(port);
        c.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").unwrap();
        // The socket fills up; every turn returns (non-blocking) with the answer unfinished.
        pump(&mut ep, &mut stats, 50);
        assert_eq!(stats.prometheus_scrapes, 1);
        assert!(matches!(
            ep.conns[0].state,
            State::Writing { job: Some(_), .. }
        ));
        // From now: on a loaded machine the turns above take a while, and the answer's
        // deadline counts from when it started.
        ep.step(
            Instant::now() + ANSWER_TIMEOUT + Duration::from_secs(1),
            &mut stats,
        );
        assert_eq!(ep.connections(), 0);
        assert_eq!(stats.prometheus_refused, 1);
    }

    #[test]
    fn a_full_house_replaces_the_idle_longest_or_refuses() {
        let (mut ep, port, _) = endpoint();
        let mut stats = Stats::default();
        let mut first = connect(port);
        pump(&mut ep, &mut stats, 2);
        let _rest: Vec<TcpStream> = (1..MAX_CONNECTIONS)
            .map(|_| {
                let c = connect(port);
                pump(&mut ep, &mut stats, 2);
                c
            })
            .collect();
        assert_eq!(ep.connections(), MAX_CONNECTIONS);
        // All idle: a newcomer replaces the first (its end of stream shows it).
        let newcomer = connect(port);
        pump(&mut ep, &mut stats, 3);
        assert_eq!(ep.connections(), MAX_CONNECTIONS);
        let mut buf = Vec::new();
        assert_eq!(first.read_to_end(&mut buf).unwrap(), 0);
        assert_eq!(stats.prometheus_refused, 0);
        // All mid-request: the next one is told 503.
        let mut busy = vec![newcomer];
        busy.extend(_rest);
        for c in &mut busy {
            c.write_all(b"GET /met").unwrap();
        }
        pump(&mut ep, &mut stats, 3);
        let mut late = connect(port);
        pump(&mut ep, &mut stats, 3);
        let mut answer = String::new();
        late.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 503 "), "{answer}");
        assert_eq!(stats.prometheus_refused, 1);
        assert_eq!(ep.connections(), MAX_CONNECTIONS);
    }

    #[test]
    fn chunks_frame_the_body() {
        let t0 = Instant::now();
        let mut store = Store::new(&ResourceDefaults::new("h"), Duration::from_secs(9), t0);
        for pid in 1..3000 {
            let mut p = crate::convert::tests::process();
            p.pid = pid;
            store.ingest(Record::Process(Box::new(p)), t0);
        }
        let mut job = Job {
            format: Format::Text,
            cursor: Cursor::Start,
            chunked: true,
        };
        let mut out = String::from("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
        let mut pieces = 0;
        while !render_piece(&mut store, &mut job, &mut out) {
            pieces += 1;
        }
        assert!(pieces > 3, "{pieces}");
        let r = crate::http::parse_response(out.as_bytes(), false)
            .unwrap()
            .unwrap();
        let body = String::from_utf8(r.body).unwrap();
        let mut cur = Cursor::Start;
        let mut whole = String::new();
        assert!(store.render(Format::Text, &mut cur, &mut whole, usize::MAX));
        assert_eq!(body, whole);
    }
}
