//! A small HTTP/1.1 client over `std::net::TcpStream`, enough for OTLP/HTTP.
//!
//! Why not ureq: under the shipper's Landlock ruleset nothing but the journal directory is
//! readable, so a resolver reading /etc/hosts or /etc/resolv.conf cannot work, and the run loop
//! needs a request whose response it can wait for *in its own poll loop* (sending is blocking
//! with a timeout, the response is read non-blocking when the socket is readable) so that
//! batches from the collector keep being journaled and acknowledged while the backend is slow.
//! Keep-alive connections are reused; `Retry-After` (seconds or HTTP date) is parsed.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, ToSocketAddrs};
use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const MAX_HEAD: usize = 64 * 1024;
const MAX_BODY: usize = 4 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("bad endpoint URL {0:?}: {1}")]
    BadUrl(String, &'static str),
    #[error("cannot resolve {host}: {source}")]
    Resolve { host: String, source: io::Error },
    #[error("connect to {addr}: {source}")]
    Connect { addr: SocketAddr, source: io::Error },
    #[error("I/O: {0}")]
    Io(#[from] io::Error),
    #[error("malformed response: {0}")]
    BadResponse(&'static str),
    #[error("connection closed before a complete response")]
    Closed,
}

#[derive(Debug, Clone)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    /// Path prefix without a trailing slash ("" or "/otlp").
    pub base_path: String,
}

impl Endpoint {
    pub fn parse(url: &str) -> Result<Endpoint, HttpError> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| HttpError::BadUrl(url.into(), "only http:// is supported"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, p) = v6
                .split_once(']')
                .ok_or_else(|| HttpError::BadUrl(url.into(), "unclosed ["))?;
            (h, p.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        let port = match port {
            Some(p) => p
                .parse()
                .map_err(|_| HttpError::BadUrl(url.into(), "bad port"))?,
            None => 80,
        };
        if host.is_empty() {
            return Err(HttpError::BadUrl(url.into(), "no host"));
        }
        Ok(Endpoint {
            host: host.to_string(),
            port,
            base_path: path.trim_end_matches('/').to_string(),
        })
    }

    /// Addresses to connect to. IP literals and `localhost` need no resolver (none is usable
    /// inside the sandbox); other names go through the system resolver.
    pub fn addrs(&self) -> Result<Vec<SocketAddr>, HttpError> {
        if let Ok(ip) = self.host.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, self.port)]);
        }
        if self.host.eq_ignore_ascii_case("localhost") {
            return Ok(vec![
                SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), self.port),
                SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), self.port),
            ]);
        }
        (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map(|a| a.collect())
            .map_err(|source| HttpError::Resolve {
                host: self.host.clone(),
                source,
            })
    }

    pub fn host_header(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub retry_after: Option<Duration>,
    pub keep_alive: bool,
    pub body: Vec<u8>,
}

/// One connection; at most one request in flight.
#[derive(Debug)]
pub struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    /// Requests completed on this connection (a stale keep-alive connection fails its next one).
    pub completed: u32,
}

impl Conn {
    pub fn connect(ep: &Endpoint, timeout: Duration) -> Result<Conn, HttpError> {
        let mut last = None;
        for addr in ep.addrs()? {
            match TcpStream::connect_timeout(&addr, timeout) {
                Ok(stream) => {
                    let _ = stream.set_nodelay(true);
                    return Ok(Conn {
                        stream,
                        buf: Vec::new(),
                        completed: 0,
                    });
                }
                Err(source) => last = Some(HttpError::Connect { addr, source }),
            }
        }
        Err(last.unwrap_or(HttpError::BadUrl(ep.host.clone(), "no address")))
    }

    /// True when a kept-alive connection was closed by the server meanwhile (idle timeout):
    /// it would fail the next request, so it is replaced before sending.
    pub fn is_stale(&self) -> bool {
        let mut b = [0u8; 1];
        if self.stream.set_nonblocking(true).is_err() {
            return true;
        }
        !matches!(self.stream.peek(&mut b), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }

    /// Write one request (blocking, bounded by `timeout`); the response is then read with
    /// [`Conn::poll_response`] when the socket is readable.
    pub fn send(&mut self, head: &[u8], body: &[u8], timeout: Duration) -> Result<(), HttpError> {
        self.stream.set_nonblocking(false)?;
        self.stream
            .set_write_timeout(Some(timeout.max(Duration::from_millis(1))))?;
        self.stream.write_all(head)?;
        self.stream.write_all(body)?;
        self.stream.set_nonblocking(true)?;
        self.buf.clear();
        Ok(())
    }

    /// Read what is available; `Some` once the response is complete.
    pub fn poll_response(&mut self) -> Result<Option<Response>, HttpError> {
        let mut chunk = [0u8; 16 * 1024];
        let mut eof = false;
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    if self.buf.len() > MAX_HEAD + MAX_BODY {
                        return Err(HttpError::BadResponse("response too large"));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            }
        }
        match parse_response(&self.buf, eof)? {
            Some(mut r) => {
                self.completed += 1;
                if eof {
                    r.keep_alive = false;
                }
                self.buf.clear();
                Ok(Some(r))
            }
            None if eof => Err(HttpError::Closed),
            None => Ok(None),
        }
    }
}

impl AsFd for Conn {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.stream.as_fd()
    }
}

/// Request head for a POST of `body_len` bytes.
pub fn request_head(
    ep: &Endpoint,
    path: &str,
    content_type: &str,
    gzip: bool,
    headers: &[(String, String)],
    body_len: usize,
) -> Vec<u8> {
    let mut h = format!(
        "POST {}{} HTTP/1.1\r\nHost: {}\r\nUser-Agent: vigil/{}\r\nContent-Type: {}\r\nContent-Length: {}\r\n",
        ep.base_path,
        path,
        ep.host_header(),
        env!("CARGO_PKG_VERSION"),
        content_type,
        body_len
    );
    if gzip {
        h.push_str("Content-Encoding: gzip\r\n");
    }
    for (k, v) in headers {
        // Header injection from config is refused silently (no CR/LF in names or values).
        if k.contains(['\r', '\n', ':']) || v.contains(['\r', '\n']) {
            continue;
        }
        h.push_str(k);
        h.push_str(": ");
        h.push_str(v);
        h.push_str("\r\n");
    }
    h.push_str("\r\n");
    h.into_bytes()
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Parse a complete response from `buf` (`eof`: the peer closed). `Ok(None)`: need more bytes.
pub fn parse_response(buf: &[u8], eof: bool) -> Result<Option<Response>, HttpError> {
    let mut start = 0;
    loop {
        let Some(end) = find(&buf[start..], b"\r\n\r\n") else {
            if buf.len() - start > MAX_HEAD {
                return Err(HttpError::BadResponse("header too large"));
            }
            return Ok(None);
        };
        let head = std::str::from_utf8(&buf[start..start + end])
            .map_err(|_| HttpError::BadResponse("header not UTF-8"))?;
        let body_start = start + end + 4;
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or("");
        let mut parts = status_line.split_ascii_whitespace();
        let version = parts.next().unwrap_or("");
        if !version.starts_with("HTTP/1.") {
            return Err(HttpError::BadResponse("not HTTP/1.x"));
        }
        let status: u16 = parts
            .next()
            .and_then(|s| s.parse().ok())
            .filter(|s| (100..1000).contains(s))
            .ok_or(HttpError::BadResponse("bad status"))?;
        let mut content_length = None;
        let mut chunked = false;
        let mut keep_alive = version != "HTTP/1.0";
        let mut retry_after = None;
        for line in lines {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            match name.trim().to_ascii_lowercase().as_str() {
                "content-length" => {
                    content_length = Some(
                        value
                            .parse::<usize>()
                            .map_err(|_| HttpError::BadResponse("bad content-length"))?,
                    )
                }
                "transfer-encoding" => chunked = value.to_ascii_lowercase().contains("chunked"),
                "connection" => {
                    let v = value.to_ascii_lowercase();
                    if v.contains("close") {
                        keep_alive = false;
                    } else if v.contains("keep-alive") {
                        keep_alive = true;
                    }
                }
                "retry-after" => retry_after = parse_retry_after(value, SystemTime::now()),
                _ => {}
            }
        }
        if (100..200).contains(&status) {
            // Interim response (100 Continue): skip it.
            start = body_start;
            continue;
        }
        let rest = &buf[body_start..];
        let body = if status == 204 || status == 304 {
            Vec::new()
        } else if chunked {
            match dechunk(rest)? {
                Some(b) => b,
                None => return Ok(None),
            }
        } else if let Some(n) = content_length {
            if n > MAX_BODY {
                return Err(HttpError::BadResponse("body too large"));
            }
            match rest.get(..n) {
                Some(b) => b.to_vec(),
                None => return Ok(None),
            }
        } else {
            // Body delimited by the connection's end.
            if !eof {
                return Ok(None);
            }
            keep_alive = false;
            rest.to_vec()
        };
        return Ok(Some(Response {
            status,
            retry_after,
            keep_alive,
            body,
        }));
    }
}

fn dechunk(mut buf: &[u8]) -> Result<Option<Vec<u8>>, HttpError> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = find(buf, b"\r\n") else {
            return Ok(None);
        };
        let line = std::str::from_utf8(&buf[..eol]).map_err(|_| HttpError::BadResponse("chunk"))?;
        let size_str = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_str, 16)
            .map_err(|_| HttpError::BadResponse("bad chunk size"))?;
        buf = &buf[eol + 2..];
        if size == 0 {
            // Optional trailers, then an empty line.
            if buf.starts_with(b"\r\n") || find(buf, b"\r\n\r\n").is_some() {
                return Ok(Some(out));
            }
            return Ok(None);
        }
        if size > MAX_BODY || out.len() + size > MAX_BODY {
            return Err(HttpError::BadResponse("body too large"));
        }
        if buf.len() < size + 2 {
            return Ok(None);
        }
        out.extend_from_slice(&buf[..size]);
        buf = &buf[size + 2..];
    }
}

/// `Retry-After`: delay-seconds or an HTTP date (IMF-fixdate), relative to `now`.
pub fn parse_retry_after(v: &str, now: SystemTime) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = parse_http_date(v)?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

/// "Sun, 06 Nov 1994 08:49:37 GMT".
pub fn parse_http_date(s: &str) -> Option<SystemTime> {
    let (_, rest) = s.split_once(", ")?;
    let mut it = rest.split_ascii_whitespace();
    let day: u32 = it.next()?.parse().ok()?;
    let month = match it.next()? {
        "Jan" => 1,
        "Feb" => 2,
        "Mar" => 3,
        "Apr" => 4,
        "May" => 5,
        "Jun" => 6,
        "Jul" => 7,
        "Aug" => 8,
        "Sep" => 9,
        "Oct" => 10,
        "Nov" => 11,
        "Dec" => 12,
        _ => return None,
    };
    let year: i64 = it.next()?.parse().ok()?;
    let mut hms = it.next()?.split(':');
    let h: u64 = hms.next()?.parse().ok()?;
    let m: u64 = hms.next()?.parse().ok()?;
    let sec: u64 = hms.next()?.parse().ok()?;
    if it.next()? != "GMT" || !(1..=31).contains(&day) || h > 23 || m > 59 || sec > 60 {
        return None;
    }
    let days = days_from_civil(year, month, day);
    if days < 0 {
        return None;
    }
    Some(UNIX_EPOCH + Duration::from_secs(days as u64 * 86_400 + h * 3600 + m * 60 + sec))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        let e = Endpoint::parse("http://127.0.0.1:4318").unwrap();
        assert_eq!(
            (e.host.as_str(), e.port, e.base_path.as_str()),
            ("127.0.0.1", 4318, "")
        );
        let e = Endpoint::parse("http://[::1]:9/otlp/").unwrap();
        assert_eq!(
            (e.host.as_str(), e.port, e.base_path.as_str()),
            ("::1", 9, "/otlp")
        );
        assert_eq!(e.host_header(), "[::1]:9");
        assert!(Endpoint::parse("https://x").is_err());
        assert!(Endpoint::parse("http://:80").is_err());
        assert!(Endpoint::parse("http://h:99999").is_err());
    }

    #[test]
    fn responses() {
        let r = parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false)
            .unwrap()
            .unwrap();
        assert_eq!(
            (r.status, r.keep_alive, r.body.as_slice()),
            (200, true, &b"ok"[..])
        );
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nok", false).unwrap(),
            None
        );
        let r = parse_response(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n1\r\nc\r\n0\r\n\r\n",
            false,
        )
        .unwrap()
        .unwrap();
        assert_eq!(r.body, b"abc");
        let r = parse_response(
            b"HTTP/1.1 429 Too Many\r\nRetry-After: 3\r\nConnection: close\r\n\r\n",
            true,
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            (r.status, r.retry_after, r.keep_alive),
            (429, Some(Duration::from_secs(3)), false)
        );
        let r = parse_response(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 503 x\r\nContent-Length: 0\r\n\r\n",
            false,
        )
        .unwrap()
        .unwrap();
        assert_eq!(r.status, 503);
        assert!(parse_response(b"SSH-2.0\r\n\r\n", false).is_err());
        assert!(parse_response(b"HTTP/1.1 abc\r\n\r\n", false).is_err());
    }

    #[test]
    fn http_dates() {
        let t = parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        assert_eq!(t.duration_since(UNIX_EPOCH).unwrap().as_secs(), 784_111_777);
        let now = UNIX_EPOCH + Duration::from_secs(784_111_770);
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now),
            Some(Duration::from_secs(7))
        );
        assert_eq!(parse_retry_after("garbage", now), None);
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_responses_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512), eof in proptest::prelude::any::<bool>()) {
            let _ = parse_response(&bytes, eof);
            let mut framed = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            framed.extend_from_slice(&bytes);
            let _ = parse_response(&framed, eof);
            let _ = parse_retry_after(&String::from_utf8_lossy(&bytes), SystemTime::now());
        }
    }
}
