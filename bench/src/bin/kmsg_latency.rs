//! `vigil-kmsg-latency [N]` (root): kernel event to backend, end to end, with the real agent.
//!
//! Starts `vigil run` (release binary: `VIGIL_BIN`, default `target/release/vigil`) with its
//! default configuration but an OTLP/HTTP endpoint on loopback and no JSON lines, waits until
//! it is ready, then writes N kernel events to /dev/kmsg (`EXT4-fs (<marker>): Remounting
//! filesystem read-only`, which the collector turns into a `FilesystemIsReadOnly` log record (NPD's reason; condition ReadonlyFilesystem);
//! a fresh open per line: the kernel rate-limits each opener), 20 ms apart, and times each
//! from the `write(2)` until the
//! receiver has gunzipped and decoded the OTLP logs request holding it. The path timed is the
//! whole data path: kernel → the privhelper's /dev/kmsg descriptor in the collector → parse →
//! batch → shipper → journal (fdatasync before the ack) → OTLP exporter → HTTP → receiver.
//! Prints p50/p90/p99/max on stderr and one JSON object on stdout.

use std::collections::HashMap;
use std::io::Write;
use std::time::{Duration, Instant};

use vigil_tests::Agent;
use vigil_tests::otlp::Receiver;

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(300);
    assert_eq!(
        nix::unistd::geteuid().as_raw(),
        0,
        "root: writes /dev/kmsg, runs the agent with its capabilities"
    );
    if std::env::var_os("VIGIL_BIN").is_none() {
        // SAFETY: single-threaded here, before any thread reads the environment.
        unsafe { std::env::set_var("VIGIL_BIN", "target/release/vigil") };
    }
    let rx = Receiver::start();
    let mut agent = Agent::builder()
        .args(["--user", "nobody", "--json-lines", "", "--otlp-endpoint"])
        .arg(rx.endpoint())
        .env("RUST_LOG", "warn")
        .start();
    agent.wait_ready(Duration::from_secs(30));
    // Let the first cycle's metrics go out before timing events.
    std::thread::sleep(Duration::from_secs(2));

    let tag = format!("vigil-lat-{}", std::process::id());
    let mut written = HashMap::new();
    for i in 0..n {
        let line = format!("<2>EXT4-fs ({tag}-{i}): Remounting filesystem read-only\n");
        let t = Instant::now();
        std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/kmsg")
            .and_then(|mut f| f.write_all(line.as_bytes()))
            .expect("write /dev/kmsg");
        written.insert(format!("{tag}-{i}"), t);
        std::thread::sleep(Duration::from_millis(20));
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    let lat = loop {
        let mut lat = Vec::new();
        for l in rx.logs() {
            let body = vigil_tests::otlp::any_to_string(&l.log.body);
            let marker = body
                .split_once('(')
                .and_then(|(_, r)| r.split_once(')'))
                .map(|(m, _)| m);
            if let Some(t) = marker.and_then(|m| written.get(m)) {
                lat.push(l.arrived.duration_since(*t));
            }
        }
        if lat.len() >= n || Instant::now() > deadline {
            break lat;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    agent.stop();
    let mut ms: Vec<f64> = lat.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    ms.sort_by(|a, b| a.total_cmp(b));
    assert!(!ms.is_empty(), "no marker reached the receiver");
    let p = |q: f64| ms[((ms.len() as f64 - 1.0) * q).round() as usize];
    eprintln!(
        "kmsg line → decoded at the OTLP receiver: {} of {n} events, p50 {:.2} ms, p90 {:.2} ms, \
         p99 {:.2} ms, max {:.2} ms",
        ms.len(),
        p(0.5),
        p(0.9),
        p(0.99),
        ms[ms.len() - 1]
    );
    println!(
        "{}",
        serde_json::json!({"events": n, "received": ms.len(), "p50_ms": p(0.5),
            "p90_ms": p(0.9), "p99_ms": p(0.99), "max_ms": ms[ms.len() - 1]})
    );
}
