//! Connections to the backend, inside the shipper's sandbox: resolve the name ([`resolve`]),
//! connect to each address in turn (through the proxy when one applies, [`proxy`]), TLS
//! ([`tls`]) for https://. One [`Conn`] carries one request at a time; it is written blocking
//! (bounded by the timeout) and read non-blocking when the run loop's poll says so.

pub mod proxy;
pub mod resolve;
pub mod tls;

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::ClientConfig;
use vigil_ipc_proto::delivery::{Scheme, Target};

use crate::http::{self, HttpError, MAX_BODY, MAX_HEAD, Response};
use proxy::ProxyError;
use resolve::{ResolveError, Resolver};

/// Longest time spent connecting (all addresses together) and completing a TLS handshake.
const CONNECT_BUDGET: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    #[error("connect to {what} ({addrs}): {source}")]
    Connect {
        what: String,
        addrs: String,
        source: io::Error,
    },
    #[error(transparent)]
    Proxy(#[from] ProxyError),
    #[error("TLS with {endpoint}: {msg}")]
    Tls { endpoint: String, msg: String },
    #[error("I/O: {0}")]
    Io(#[from] io::Error),
    #[error(transparent)]
    Http(#[from] HttpError),
    #[error("connection closed before a complete response")]
    Closed,
}

impl NetError {
    /// Short cause for the `vigil.shipper.export.errors` counter.
    pub fn reason(&self) -> &'static str {
        match self {
            NetError::Resolve(_) => "dns",
            NetError::Connect { .. } => "connect",
            NetError::Proxy(_) => "proxy",
            NetError::Tls { .. } => "tls",
            NetError::Io(_) | NetError::Closed => "io",
            NetError::Http(_) => "http",
        }
    }
}

/// One connection to a target (or the tunnel through its proxy), plain or TLS.
pub struct Conn {
    sock: TcpStream,
    tls: Option<Box<rustls::ClientConnection>>,
    buf: Vec<u8>,
    /// The address connected to (the proxy's when proxied).
    pub peer: SocketAddr,
    /// Requests completed on this connection (a stale keep-alive connection fails its next one).
    pub completed: u32,
    endpoint: String,
    /// When the name behind `peer` was last looked up.
    resolved_at: Instant,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("peer", &self.peer)
            .field("tls", &self.tls.is_some())
            .field("completed", &self.completed)
            .finish()
    }
}

/// What connecting needs beyond the target: the resolver and the target's TLS configuration.
pub fn connect(
    t: &Target,
    tls: Option<&Arc<ClientConfig>>,
    resolver: &mut Resolver,
    now: Instant,
) -> Result<Conn, NetError> {
    let (host, port) = match &t.proxy {
        Some(p) => (p.host.as_str(), p.port),
        None => (t.endpoint.host.as_str(), t.endpoint.port),
    };
    let addrs = resolver.lookup(host, now)?;
    let per_addr = (CONNECT_BUDGET / addrs.len().max(1) as u32)
        .clamp(Duration::from_millis(500), Duration::from_secs(5))
        .min(Duration::from_millis(t.timeout_ms.max(1)));
    let mut last = None;
    let mut sock = None;
    for ip in &addrs {
        let addr = SocketAddr::new(*ip, port);
        match TcpStream::connect_timeout(&addr, per_addr) {
            Ok(s) => {
                sock = Some((s, addr));
                break;
            }
            Err(e) => last = Some(e),
        }
    }
    let Some((mut sock, peer)) = sock else {
        // The name may have moved: ask again next time.
        resolver.forget(host);
        let what = match &t.proxy {
            Some(p) => format!("proxy {}", p.authority()),
            None => t.endpoint.origin(),
        };
        return Err(NetError::Connect {
            what,
            addrs: addrs
                .iter()
                .map(|a| a.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            source: last.unwrap_or_else(|| io::Error::other("no address")),
        });
    };
    let _ = sock.set_nodelay(true);
    let budget = CONNECT_BUDGET.min(Duration::from_millis(t.timeout_ms.max(1)));
    sock.set_read_timeout(Some(budget))?;
    sock.set_write_timeout(Some(budget))?;
    if let (Some(p), Scheme::Https) = (&t.proxy, t.endpoint.scheme) {
        proxy::open_tunnel(&mut sock, &t.endpoint, p)?;
    }
    let tls = match (t.endpoint.scheme, tls) {
        (Scheme::Https, Some(cfg)) => Some(handshake(t, cfg, &mut sock)?),
        (Scheme::Https, None) => {
            return Err(NetError::Tls {
                endpoint: t.endpoint.origin(),
                msg: "no TLS configuration".into(),
            });
        }
        (Scheme::Http, _) => None,
    };
    Ok(Conn {
        sock,
        tls,
        buf: Vec::new(),
        peer,
        completed: 0,
        endpoint: t.endpoint.origin(),
        resolved_at: now,
    })
}

/// Whether a kept-alive connection still goes where the name points: at most every
/// [`resolve::MAX_AGE`] the name is looked up again, and a connection to an address it no
/// longer has is given up (the backend moved; the next request connects to the new one).
pub fn still_current(c: &mut Conn, t: &Target, resolver: &mut Resolver, now: Instant) -> bool {
    if now.duration_since(c.resolved_at) < resolve::MAX_AGE {
        return true;
    }
    let host = t.proxy.as_ref().map_or(&t.endpoint.host, |p| &p.host);
    match resolver.lookup(host, now) {
        Ok(addrs) if addrs.contains(&c.peer.ip()) => {
            c.resolved_at = now;
            true
        }
        Ok(addrs) => {
            tracing::info!(
                "{host} now resolves to {addrs:?}, not {}: reconnecting",
                c.peer.ip()
            );
            false
        }
        // Resolution failing now is no reason to drop a working connection.
        Err(_) => {
            c.resolved_at = now;
            true
        }
    }
}

fn handshake(
    t: &Target,
    cfg: &Arc<ClientConfig>,
    sock: &mut TcpStream,
) -> Result<Box<rustls::ClientConnection>, NetError> {
    let tls_err = |msg: String| NetError::Tls {
        endpoint: t.endpoint.origin(),
        msg,
    };
    let name = tls::server_name(t).map_err(tls_err)?;
    let mut c =
        rustls::ClientConnection::new(cfg.clone(), name).map_err(|e| tls_err(tls::explain(&e)))?;
    while c.is_handshaking() {
        if let Err(e) = c.complete_io(sock) {
            return Err(tls_io_error(&t.endpoint.origin(), e));
        }
    }
    Ok(Box::new(c))
}

/// An I/O error of a TLS connection: a rustls error inside is a TLS failure (named and
/// explained), anything else plain I/O.
fn tls_io_error(endpoint: &str, e: io::Error) -> NetError {
    match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        Some(te) => NetError::Tls {
            endpoint: endpoint.to_string(),
            msg: tls::explain(te),
        },
        None => NetError::Io(e),
    }
}

impl Conn {
    /// Write one request (blocking, bounded by `timeout`); the response is then read with
    /// [`Conn::poll_response`] when the socket is readable.
    pub fn send(&mut self, head: &[u8], body: &[u8], timeout: Duration) -> Result<(), NetError> {
        self.sock.set_nonblocking(false)?;
        self.sock
            .set_write_timeout(Some(timeout.max(Duration::from_millis(1))))?;
        match self.tls.as_deref_mut() {
            None => {
                self.sock.write_all(head)?;
                self.sock.write_all(body)?;
            }
            Some(tls) => {
                for mut rest in [head, body] {
                    while !rest.is_empty() {
                        let n = tls.writer().write(rest)?;
                        rest = &rest[n..];
                        while tls.wants_write() {
                            tls.write_tls(&mut self.sock)
                                .map_err(|e| tls_io_error(&self.endpoint, e))?;
                        }
                        if n == 0 {
                            return Err(NetError::Closed);
                        }
                    }
                }
            }
        }
        self.sock.set_nonblocking(true)?;
        self.buf.clear();
        Ok(())
    }

    /// Read what is available without blocking into `buf`; returns whether the peer closed.
    fn read_available(&mut self) -> Result<bool, NetError> {
        let mut chunk = [0u8; 16 * 1024];
        let Some(tls) = self.tls.as_deref_mut() else {
            loop {
                match self.sock.read(&mut chunk) {
                    Ok(0) => return Ok(true),
                    Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e.into()),
                }
                if self.buf.len() > MAX_HEAD + MAX_BODY {
                    return Err(HttpError::BadResponse("response too large").into());
                }
            }
        };
        let mut eof = false;
        loop {
            match tls.read_tls(&mut self.sock) {
                Ok(0) => eof = true,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            }
            let state = tls.process_new_packets().map_err(|e| NetError::Tls {
                endpoint: self.endpoint.clone(),
                msg: tls::explain(&e),
            })?;
            let mut got = state.plaintext_bytes_to_read() > 0;
            while got {
                match tls.reader().read(&mut chunk) {
                    Ok(0) => {
                        eof = true;
                        got = false;
                    }
                    Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => got = false,
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                        eof = true;
                        got = false;
                    }
                    Err(e) => return Err(e.into()),
                }
                if self.buf.len() > MAX_HEAD + MAX_BODY {
                    return Err(HttpError::BadResponse("response too large").into());
                }
            }
            if state.peer_has_closed() {
                eof = true;
            }
            // Alerts or key updates the session owes the server; best effort, never blocking.
            while tls.wants_write() {
                if tls.write_tls(&mut self.sock).is_err() {
                    break;
                }
            }
            if eof || !matches!(readable(&self.sock), Ok(true)) {
                return Ok(eof);
            }
        }
    }

    /// Read what is available; `Some` once the response is complete.
    pub fn poll_response(&mut self) -> Result<Option<Response>, NetError> {
        let eof = self.read_available()?;
        match http::parse_response(&self.buf, eof)? {
            Some(mut r) => {
                self.completed += 1;
                if eof {
                    r.keep_alive = false;
                }
                self.buf.clear();
                Ok(Some(r))
            }
            None if eof => Err(NetError::Closed),
            None => Ok(None),
        }
    }

    /// True when a kept-alive connection was closed by the server meanwhile (idle timeout) or
    /// sent something unasked: it would fail the next request, so it is replaced before
    /// sending. TLS session tickets and other records that carry no data are consumed here.
    pub fn is_stale(&mut self) -> bool {
        if self.sock.set_nonblocking(true).is_err() {
            return true;
        }
        self.buf.clear();
        match self.read_available() {
            Ok(eof) => eof || !self.buf.is_empty(),
            Err(_) => true,
        }
    }
}

/// Whether more bytes wait on a non-blocking socket right now.
fn readable(sock: &TcpStream) -> io::Result<bool> {
    let mut b = [0u8; 1];
    match sock.peek(&mut b) {
        Ok(n) => Ok(n > 0),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
        Err(e) => Err(e),
    }
}

impl AsFd for Conn {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }
}
