//! HTTP/1.1 for OTLP: the request head (origin-form, or absolute-form through a proxy) and an
//! incremental response parser (Content-Length, chunked, close-delimited; interim 1xx skipped;
//! `Retry-After` as seconds or HTTP date). The connections themselves are in [`crate::net`].
//!
//! Why not a client crate: the run loop needs a request whose response it can wait for *in its
//! own poll loop* (sending is blocking with a timeout, the response is read non-blocking when
//! the socket is readable) so that batches from the collector keep being journaled and
//! acknowledged while the backend is slow, and everything it opens must fit the shipper's
//! seccomp and Landlock rules.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use vigil_ipc_proto::Compression;
use vigil_ipc_proto::delivery::{Scheme, Target, valid_header_name, valid_header_value};

pub const MAX_HEAD: usize = 64 * 1024;
pub const MAX_BODY: usize = 4 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("malformed response: {0}")]
    BadResponse(&'static str),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub retry_after: Option<Duration>,
    pub keep_alive: bool,
    pub body: Vec<u8>,
}

/// Request head for a POST of `body_len` bytes to `t`. Through a proxy, an http:// target gets
/// the absolute-form request line and the proxy's credentials (an https:// one goes through a
/// CONNECT tunnel and looks direct).
pub fn request_head(t: &Target, content_type: &str, body_len: usize) -> Vec<u8> {
    let ep = &t.endpoint;
    let via_proxy = t.proxy.as_ref().filter(|_| ep.scheme == Scheme::Http);
    let target = match via_proxy {
        Some(_) => format!("{}{}", ep.origin(), ep.path),
        None => ep.path.clone(),
    };
    let mut h = format!(
        "POST {target} HTTP/1.1\r\nHost: {}\r\nUser-Agent: vigil/{}\r\nContent-Type: {}\r\nContent-Length: {}\r\n",
        ep.authority(),
        env!("CARGO_PKG_VERSION"),
        content_type,
        body_len
    );
    if t.compression == Compression::Gzip {
        h.push_str("Content-Encoding: gzip\r\n");
    }
    if let Some(a) = via_proxy.and_then(|p| p.authorization.as_ref()) {
        h.push_str("Proxy-Authorization: ");
        h.push_str(a.expose());
        h.push_str("\r\n");
    }
    for (k, v) in &t.headers {
        // Checked when the configuration was loaded; never inject CR/LF whatever happens.
        if !valid_header_name(k) || !valid_header_value(v.expose()) {
            continue;
        }
        h.push_str(k);
        h.push_str(": ");
        h.push_str(v.expose());
        h.push_str("\r\n");
    }
    h.push_str("\r\n");
    h.into_bytes()
}

pub(crate) fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
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
    // IMF-fixdate has a four-digit year; a larger one would overflow the arithmetic below
    // and `SystemTime` (a panic on a backend's header).
    if it.next()? != "GMT"
        || !(1..=31).contains(&day)
        || !(1970..=9999).contains(&year)
        || h > 23
        || m > 59
        || sec > 60
    {
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

    use vigil_ipc_proto::OtlpConfig;
    use vigil_ipc_proto::delivery::Secret;

    fn head_of(cfg: OtlpConfig, i: usize) -> String {
        let t = cfg.targets().unwrap().remove(i);
        String::from_utf8(request_head(&t, "application/x-protobuf", 10)).unwrap()
    }

    #[test]
    fn heads() {
        let mut cfg = OtlpConfig {
            endpoint: "http://[::1]:9/otlp/".into(),
            ..Default::default()
        };
        cfg.headers
            .insert("Authorization".into(), Secret::new("Bearer t"));
        let h = head_of(cfg.clone(), 0);
        assert!(
            h.starts_with("POST /otlp/v1/metrics HTTP/1.1\r\nHost: [::1]:9\r\n"),
            "{h}"
        );
        assert!(h.contains("Content-Length: 10\r\nContent-Encoding: gzip\r\n"));
        assert!(h.contains("Authorization: Bearer t\r\n") && h.ends_with("\r\n\r\n"));
        // Plain HTTP through a proxy: absolute-form and the proxy's credentials.
        cfg.endpoint = "http://otlp.example:4318".into();
        cfg.http_proxy = Some(Secret::new("http://u:p@proxy:3128"));
        cfg.compression = Compression::None;
        let h = head_of(cfg.clone(), 1);
        assert!(
            h.starts_with("POST http://otlp.example:4318/v1/logs HTTP/1.1\r\n"),
            "{h}"
        );
        assert!(h.contains("Proxy-Authorization: Basic dTpw\r\n") && !h.contains("gzip"));
        // HTTPS through a proxy is tunnelled: origin-form, no proxy credentials.
        cfg.endpoint = "https://otlp.example:4318".into();
        cfg.https_proxy = cfg.http_proxy.clone();
        let h = head_of(cfg, 0);
        assert!(h.starts_with("POST /v1/metrics HTTP/1.1\r\n") && !h.contains("Proxy-"));
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

    /// A `Retry-After` date with a year of any size is refused, never a panic: years past
    /// 9999 overflowed the day arithmetic (debug) or `SystemTime` (release too).
    #[test]
    fn http_date_years_out_of_range() {
        for y in [
            "299999999999",
            "99999999999999999",
            "9223372036854775807",
            "-9223372036854775808",
            "10000",
            "1969",
        ] {
            let d = format!("Sun, 06 Nov {y} 08:49:37 GMT");
            assert_eq!(parse_http_date(&d), None, "{d}");
            assert_eq!(parse_retry_after(&d, SystemTime::now()), None, "{d}");
        }
        let head = b"HTTP/1.1 429 x\r\nRetry-After: Sun, 06 Nov 299999999999 08:49:37 GMT\r\n\
                     Content-Length: 0\r\n\r\n";
        let r = parse_response(head, false).unwrap().unwrap();
        assert_eq!((r.status, r.retry_after), (429, None));
        assert!(parse_http_date("Fri, 31 Dec 9999 23:59:59 GMT").is_some());
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
