//! What the shipper parses from the network: the OTLP/HTTP backend's response
//! (`http::parse_response`: status line, headers, Content-Length, chunked and close-delimited
//! bodies, interim 1xx, `Retry-After` as seconds or HTTP date), fed whole and cut at an
//! arbitrary point as a non-blocking read sees it; the `partial_success` protobuf body of a 2xx
//! (`otlp::partial_rejections`); a proxy's answer to CONNECT (`net::proxy::parse_status`);
//! and the Prometheus endpoint's request heads (`prometheus::http::parse`, `wants_openmetrics`).

#![no_main]

use std::time::{Duration, UNIX_EPOCH};

use libfuzzer_sys::fuzz_target;
use vigil_ipc_proto::delivery::Signal;
use vigil_shipper::export::otlp::partial_rejections;
use vigil_shipper::export::prometheus::http as prom;
use vigil_shipper::http::{self, MAX_BODY};
use vigil_shipper::net::proxy::parse_status;

fuzz_target!(|data: &[u8]| {
    let Some((&ctl, buf)) = data.split_first() else {
        return;
    };
    let eof = ctl & 1 == 1;
    let signal = if ctl & 2 == 0 {
        Signal::Metrics
    } else {
        Signal::Logs
    };
    let cut = (usize::from(ctl >> 2) * buf.len()) / 63;
    let _ = http::parse_response(&buf[..cut.min(buf.len())], false);
    if let Ok(Some(r)) = http::parse_response(buf, eof) {
        assert!((200..1000).contains(&r.status));
        assert!(r.body.len() <= MAX_BODY.max(buf.len()));
        let _ = partial_rejections(signal, &r.body);
    }
    let _ = partial_rejections(signal, buf);
    let _ = parse_status(buf);

    let text = String::from_utf8_lossy(buf);
    let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let _ = http::parse_retry_after(&text, now);
    let _ = http::parse_http_date(&text);

    if let prom::Parsed::Metrics(_, n) = prom::parse(buf) {
        assert!(n <= buf.len());
    }
    let _ = prom::wants_openmetrics(&text);
});
