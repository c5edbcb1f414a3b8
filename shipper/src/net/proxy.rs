//! HTTP CONNECT through an egress proxy (RFC 9110 §9.3.6): the tunnel carries the TLS session
//! to an https:// target end to end. The proxy's credentials travel in `Proxy-Authorization`
//! and are never logged.

use std::io::{Read, Write};
use std::net::TcpStream;

use vigil_ipc_proto::delivery::{Endpoint, Proxy};

/// Largest response head a proxy may send before the tunnel is open.
const MAX_HEAD: usize = 16 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("proxy {proxy}: CONNECT {target} refused: HTTP {status}{hint}")]
    Refused {
        proxy: String,
        target: String,
        status: u16,
        hint: &'static str,
    },
    #[error("proxy {proxy}: malformed answer to CONNECT: {why}")]
    Malformed { proxy: String, why: &'static str },
    #[error("proxy {proxy}: {source}")]
    Io {
        proxy: String,
        source: std::io::Error,
    },
}

/// The CONNECT request for `target`.
pub fn connect_request(target: &Endpoint, proxy: &Proxy) -> Vec<u8> {
    let auth = target.authority();
    let mut r = format!(
        "CONNECT {auth} HTTP/1.1\r\nHost: {auth}\r\nUser-Agent: vigil/{}\r\n",
        env!("CARGO_PKG_VERSION")
    );
    if let Some(a) = &proxy.authorization {
        r.push_str("Proxy-Authorization: ");
        r.push_str(a.expose());
        r.push_str("\r\n");
    }
    r.push_str("\r\n");
    r.into_bytes()
}

/// Open the tunnel on a connected, blocking stream (its timeouts bound the wait). Reads the
/// answer byte by byte so nothing of the tunnel is consumed.
pub fn open_tunnel(
    sock: &mut TcpStream,
    target: &Endpoint,
    proxy: &Proxy,
) -> Result<(), ProxyError> {
    let io = |source| ProxyError::Io {
        proxy: proxy.authority(),
        source,
    };
    sock.write_all(&connect_request(target, proxy))
        .map_err(io)?;
    let mut head = Vec::with_capacity(256);
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() >= MAX_HEAD {
            return Err(ProxyError::Malformed {
                proxy: proxy.authority(),
                why: "answer head too large",
            });
        }
        match sock.read(&mut b) {
            Ok(0) => {
                return Err(ProxyError::Malformed {
                    proxy: proxy.authority(),
                    why: "connection closed before the answer ended",
                });
            }
            Ok(_) => head.push(b[0]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io(e)),
        }
    }
    let status = parse_status(&head).ok_or(ProxyError::Malformed {
        proxy: proxy.authority(),
        why: "no HTTP status line",
    })?;
    if (200..300).contains(&status) {
        return Ok(());
    }
    Err(ProxyError::Refused {
        proxy: proxy.authority(),
        target: target.authority(),
        status,
        hint: match status {
            407 => " (proxy authentication required: put user:password in the proxy URL)",
            403 => " (the proxy forbids this destination or port)",
            _ => "",
        },
    })
}

/// Status code of a proxy's answer to CONNECT, from its status line. Public for the fuzz
/// target only.
#[doc(hidden)]
pub fn parse_status(head: &[u8]) -> Option<u16> {
    let line = head.split(|&b| b == b'\r').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split_ascii_whitespace();
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    parts
        .next()?
        .parse()
        .ok()
        .filter(|s| (100..1000).contains(s))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use vigil_ipc_proto::delivery::Secret;

    fn target() -> Endpoint {
        Endpoint::parse("https://otlp.example:4318/v1/metrics").unwrap()
    }

    #[test]
    fn request_shape() {
        let p = Proxy {
            host: "proxy".into(),
            port: 3128,
            authorization: Some(Secret::new("Basic dTpw")),
        };
        let r = String::from_utf8(connect_request(&target(), &p)).unwrap();
        assert!(r.starts_with("CONNECT otlp.example:4318 HTTP/1.1\r\nHost: otlp.example:4318\r\n"));
        assert!(r.contains("Proxy-Authorization: Basic dTpw\r\n") && r.ends_with("\r\n\r\n"));
    }

    fn tunnel_with_answer(answer: &'static [u8]) -> Result<Vec<u8>, ProxyError> {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let t = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut req = Vec::new();
            let mut b = [0u8; 1];
            while !req.ends_with(b"\r\n\r\n") {
                s.read_exact(&mut b).unwrap();
                req.push(b[0]);
            }
            s.write_all(answer).unwrap();
            // The tunnel's first bytes must still be there for the client.
            s.write_all(b"TUNNEL").unwrap();
        });
        let p = Proxy {
            host: "127.0.0.1".into(),
            port,
            authorization: None,
        };
        let mut sock = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let r = open_tunnel(&mut sock, &target(), &p);
        let mut rest = Vec::new();
        if r.is_ok() {
            sock.read_to_end(&mut rest).unwrap();
        }
        t.join().unwrap();
        r.map(|_| rest)
    }

    #[test]
    fn tunnel_opens_and_keeps_its_bytes() {
        let rest =
            tunnel_with_answer(b"HTTP/1.1 200 Connection established\r\nVia: x\r\n\r\n").unwrap();
        assert_eq!(rest, b"TUNNEL");
    }

    #[test]
    fn refusals_are_explained() {
        let e = tunnel_with_answer(b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("407") && e.contains("authentication"), "{e}");
        let e = tunnel_with_answer(b"SSH-2.0-nope\r\n\r\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("malformed"), "{e}");
    }
}
