//! The endpoint's HTTP/1.x: parsing a request head (pure, bounded, never panics) and the
//! response heads it answers with. Only `GET` and `HEAD` of `/metrics` are served; a request
//! that carries a body is refused and its body never read (the endpoint takes no writes).

use super::store::Format;
use crate::http::find;

/// Longest request head accepted (request line and headers).
pub const MAX_HEAD: usize = 8 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
}

/// A request to answer with metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    pub method: Method,
    pub format: Format,
    /// HTTP/1.1 (chunked body, keep-alive by default) rather than 1.0.
    pub http11: bool,
    pub keep_alive: bool,
}

/// What a buffer holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// No complete head yet (and not too large yet).
    Partial,
    /// A request to serve; the head was this many bytes.
    Metrics(Request, usize),
    /// A request refused with this status (the connection is closed after the answer).
    Refuse(u16),
}

/// Where the head ends (after its empty line), CRLF or bare LF line ends.
fn head_end(buf: &[u8]) -> Option<usize> {
    let crlf = find(buf, b"\r\n\r\n").map(|i| i + 4);
    let lf = find(buf, b"\n\n").map(|i| i + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Parse the request at the start of `buf`.
pub fn parse(buf: &[u8]) -> Parsed {
    // Empty lines before a request line are ignored (RFC 9112 2.2).
    let skip = buf
        .iter()
        .take_while(|&&b| b == b'\r' || b == b'\n')
        .count();
    let Some(end) = head_end(&buf[skip..]) else {
        return if buf.len() >= MAX_HEAD {
            Parsed::Refuse(431)
        } else {
            Parsed::Partial
        };
    };
    if skip + end > MAX_HEAD {
        return Parsed::Refuse(431);
    }
    let Ok(head) = std::str::from_utf8(&buf[skip..skip + end]) else {
        return Parsed::Refuse(400);
    };
    match parse_head(head) {
        Ok(r) => Parsed::Metrics(r, skip + end),
        Err(status) => Parsed::Refuse(status),
    }
}

/// Whether an `Accept` value prefers OpenMetrics (q-values honoured; ties go to OpenMetrics,
/// as Prometheus asks for it first).
pub fn wants_openmetrics(accept: &str) -> bool {
    let mut om = 0.0f32;
    let mut text = 0.0f32;
    for range in accept.split(',') {
        let mut parts = range.split(';');
        let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let mut q = 1.0f32;
        for p in parts {
            if let Some((k, v)) = p.split_once('=')
                && k.trim().eq_ignore_ascii_case("q")
            {
                q = v.trim().parse().unwrap_or(0.0);
            }
        }
        if !q.is_finite() {
            q = 0.0;
        }
        match media.as_str() {
            "application/openmetrics-text" => om = om.max(q),
            "text/plain" | "text/*" | "*/*" => text = text.max(q),
            _ => {}
        }
    }
    om > 0.0 && om >= text
}

fn parse_head(head: &str) -> Result<Request, u16> {
    let mut lines = head.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let request_line = lines.next().unwrap_or("");
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(400);
    };
    let http11 = match version {
        "HTTP/1.1" => true,
        "HTTP/1.0" => false,
        v if v.starts_with("HTTP/") => return Err(505),
        _ => return Err(400),
    };
    let mut keep_alive = http11;
    let mut format = Format::Text;
    let mut body = false;
    for line in lines.filter(|l| !l.is_empty()) {
        if line.starts_with([' ', '\t']) {
            return Err(400); // obsolete line folding
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(400);
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("connection") {
            for token in value.split(',').map(str::trim) {
                if token.eq_ignore_ascii_case("close") {
                    keep_alive = false;
                } else if token.eq_ignore_ascii_case("keep-alive") {
                    keep_alive = true;
                }
            }
        } else if name.eq_ignore_ascii_case("accept") {
            if wants_openmetrics(value) {
                format = Format::OpenMetrics;
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding")
            || (name.eq_ignore_ascii_case("content-length") && value != "0")
        {
            body = true;
        }
    }
    let path = target.split('?').next().unwrap_or("");
    if path != "/metrics" {
        return Err(404);
    }
    let method = match method {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        _ => return Err(405),
    };
    if body {
        return Err(400);
    }
    Ok(Request {
        method,
        format,
        http11,
        keep_alive,
    })
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Error",
    }
}

/// A refusal: status line, a one-line body, and the end of the connection.
pub fn refusal(status: u16) -> String {
    let body = format!("{status} {}\n", reason(status));
    let allow = if status == 405 {
        "Allow: GET, HEAD\r\n"
    } else {
        ""
    };
    format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n{allow}Connection: close\r\n\r\n{body}",
        reason(status),
        body.len()
    )
}

/// The head of a metrics answer: chunked in HTTP/1.1, delimited by the connection's end in
/// HTTP/1.0 (then `keep_alive` must be false).
pub fn metrics_head(r: &Request, keep_alive: bool) -> String {
    let mut h = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: {}\r\nCache-Control: no-store\r\n",
        r.format.content_type()
    );
    if r.http11 {
        h.push_str("Transfer-Encoding: chunked\r\n");
    }
    h.push_str(if keep_alive {
        "Connection: keep-alive\r\n\r\n"
    } else {
        "Connection: close\r\n\r\n"
    });
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

    fn get(extra: &str) -> Vec<u8> {
        format!("GET /metrics HTTP/1.1\r\nHost: x\r\n{extra}\r\n").into_bytes()
    }

    #[test]
    fn scrapes_are_parsed() {
        let req = get(&format!("Accept: {PROMETHEUS_ACCEPT}\r\n"));
        let Parsed::Metrics(r, n) = parse(&req) else {
            panic!("{:?}", parse(&req))
        };
        assert_eq!(n, req.len());
        assert_eq!(r.format, Format::OpenMetrics);
        assert!(r.http11 && r.keep_alive);
        assert_eq!(r.method, Method::Get);

        let Parsed::Metrics(r, _) = parse(b"HEAD /metrics?x=1 HTTP/1.0\n\n") else {
            panic!()
        };
        assert_eq!(
            (r.method, r.format, r.http11, r.keep_alive),
            (Method::Head, Format::Text, false, false)
        );
        let Parsed::Metrics(r, _) = parse(&get("Connection: close\r\n")) else {
            panic!()
        };
        assert!(!r.keep_alive);
        // Pipelined: the first head's length only.
        let mut two = get("");
        let first = two.len();
        two.extend(get(""));
        assert!(matches!(parse(&two), Parsed::Metrics(_, n) if n == first));
        // Leading empty lines.
        assert!(matches!(
            parse(b"\r\nGET /metrics HTTP/1.1\r\n\r\n"),
            Parsed::Metrics(_, 27)
        ));
    }

    #[test]
    fn everything_else_is_refused() {
        let cases: &[(&[u8], u16)] = &[
            (
                b"POST /metrics HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
                405,
            ),
            (b"PUT /metrics HTTP/1.1\r\n\r\n", 405),
            (b"DELETE /metrics HTTP/1.1\r\n\r\n", 405),
            (b"GET / HTTP/1.1\r\n\r\n", 404),
            (b"GET /metrics/x HTTP/1.1\r\n\r\n", 404),
            (b"GET /metrics HTTP/2.0\r\n\r\n", 505),
            (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505),
            (b"GET /metrics\r\n\r\n", 400),
            (b"GET  /metrics HTTP/1.1\r\n\r\n", 400),
            (b"GET /metrics HTTP/1.1\r\nbad header\r\n\r\n", 400),
            (b"GET /metrics HTTP/1.1\r\nA: b\r\n folded\r\n\r\n", 400),
            (
                b"GET /metrics HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
                400,
            ),
            (
                b"GET /metrics HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
                400,
            ),
            (b"GET /metrics HTTP/1.1\r\nX: \xff\r\n\r\n", 400),
        ];
        for (req, status) in cases {
            assert_eq!(
                parse(req),
                Parsed::Refuse(*status),
                "{}",
                String::from_utf8_lossy(req)
            );
        }
        assert_eq!(
            parse(b"GET /metrics HTTP/1.1\r\nHost: x\r\n"),
            Parsed::Partial
        );
        assert_eq!(parse(&vec![b'a'; MAX_HEAD]), Parsed::Refuse(431));
        let mut long = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
        long.extend(vec![b'a'; MAX_HEAD]);
        long.extend(b"\r\n\r\n");
        assert_eq!(parse(&long), Parsed::Refuse(431));
    }

    #[test]
    fn accept_negotiation() {
        assert!(wants_openmetrics(PROMETHEUS_ACCEPT));
        assert!(wants_openmetrics("application/openmetrics-text"));
        assert!(!wants_openmetrics("text/plain;version=0.0.4"));
        assert!(!wants_openmetrics("*/*"));
        assert!(!wants_openmetrics(
            "application/openmetrics-text;q=0, text/plain"
        ));
        assert!(!wants_openmetrics(
            "text/plain;q=0.9,application/openmetrics-text;q=0.5"
        ));
        assert!(!wants_openmetrics("application/openmetrics-text;q=NaN"));
        assert!(!wants_openmetrics(""));
    }

    #[test]
    fn response_heads() {
        let r = refusal(405);
        assert!(r.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"));
        assert!(r.contains("Allow: GET, HEAD\r\n") && r.contains("Connection: close\r\n"));
        let parsed = crate::http::parse_response(r.as_bytes(), true)
            .unwrap()
            .unwrap();
        assert_eq!(parsed.status, 405);
        assert_eq!(parsed.body, b"405 Method Not Allowed\n");
        let req = Request {
            method: Method::Get,
            format: Format::OpenMetrics,
            http11: true,
            keep_alive: true,
        };
        let h = metrics_head(&req, true);
        assert!(h.contains(
            "Content-Type: application/openmetrics-text; version=1.0.0; charset=utf-8\r\n"
        ));
        assert!(h.contains("Transfer-Encoding: chunked\r\n") && h.ends_with("keep-alive\r\n\r\n"));
    }

    proptest! {
        #[test]
        fn parsing_never_panics(buf in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = parse(&buf);
        }

        #[test]
        fn parsing_request_like_input_never_panics(
            method in "GET|HEAD|POST|[A-Z]{0,8}",
            path in "/metrics|/[a-z?=&%]{0,12}",
            headers in proptest::collection::vec(("[A-Za-z-]{0,16}", "[ -~]{0,40}"), 0..8),
            version in "HTTP/1\\.[01]|HTTP/[0-9.]{0,4}|",
        ) {
            let mut req = format!("{method} {path} {version}\r\n");
            for (k, v) in &headers {
                req.push_str(&format!("{k}: {v}\r\n"));
            }
            req.push_str("\r\n");
            match parse(req.as_bytes()) {
                Parsed::Metrics(r, n) => {
                    prop_assert_eq!(n, req.len());
                    prop_assert!(method == "GET" || method == "HEAD");
                    prop_assert!(r.http11 || !r.keep_alive || headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("connection")));
                }
                Parsed::Refuse(s) => prop_assert!([400, 404, 405, 431, 505].contains(&s)),
                Parsed::Partial => prop_assert!(false, "a whole head is never partial"),
            }
        }
    }
}
