//! `vigil-ipc-bench [--quick] [--batch-only]`: latency percentiles of a collector→privhelper `ProcFdStats`
//! round trip and collector→shipper `Batch` throughput over a real SEQPACKET socket pair.
//! Prints a human summary on stderr and one JSON object on stdout (read by bench/run.py).
//! Criterion's view of the same loops: `cargo bench -p vigil-bench --bench ipc`.

use std::time::{Duration, Instant};

use vigil_bench::*;
use vigil_ipc_proto::{Channel, frame};

fn cpu_time() -> Duration {
    // SAFETY: getrusage fills the struct we own.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru
    };
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn pct(sorted: &[u64], p: f64) -> u64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let iters: usize = if quick { 5_000 } else { 50_000 };
    let mut out = serde_json::Map::new();

    let batch_only = std::env::args().any(|a| a == "--batch-only");
    let sizes: &[usize] = if batch_only { &[] } else { &[1, 64, 512] };
    for &n in sizes {
        let (mut a, b) = Channel::pair().unwrap();
        let h = spawn_fd_responder(b);
        let req = fd_request(n);
        let req_len = frame::encoded_len(&req).unwrap();
        let resp_len = frame::encoded_len(&fd_response(&req)).unwrap();
        for _ in 0..1000 {
            round_trip(&mut a, &req);
        }
        let mut ns = Vec::with_capacity(iters);
        let c0 = cpu_time();
        for _ in 0..iters {
            let t = Instant::now();
            std::hint::black_box(round_trip(&mut a, &req));
            ns.push(t.elapsed().as_nanos() as u64);
        }
        let cpu = cpu_time() - c0;
        drop(a);
        h.join().unwrap();
        ns.sort_unstable();
        let (p50, p99, p999, max) = (
            pct(&ns, 0.5),
            pct(&ns, 0.99),
            pct(&ns, 0.999),
            *ns.last().unwrap(),
        );
        eprintln!(
            "ProcFdStats round trip, {n:>3} pids (req {req_len} B, resp {resp_len} B), {iters} iters: \
             p50 {:.1} µs  p99 {:.1} µs  p99.9 {:.1} µs  max {:.1} µs  (CPU both sides {:.2} µs/rt)",
            p50 as f64 / 1e3,
            p99 as f64 / 1e3,
            p999 as f64 / 1e3,
            max as f64 / 1e3,
            cpu.as_nanos() as f64 / 1e3 / iters as f64
        );
        out.insert(
            format!("rt_{n}"),
            serde_json::json!({"pids": n, "req_bytes": req_len, "resp_bytes": resp_len, "iters": iters,
                "p50_us": p50 as f64 / 1e3, "p99_us": p99 as f64 / 1e3, "p999_us": p999 as f64 / 1e3,
                "max_us": max as f64 / 1e3, "cpu_us_per_rt": cpu.as_nanos() as f64 / 1e3 / iters as f64}),
        );
    }

    // As many records per frame as the collector puts in one (its max_batch_records), if they
    // fit.
    let per =
        records_per_frame().min(vigil_ipc_proto::CollectorConfig::default().max_batch_records);
    let records: Vec<_> = (0..per as u32).map(process_record).collect();
    let frame_len = encode_batch(&mut vigil_ipc_proto::batch::BatchFrame::new(), 0, &records).len();
    let batches: u64 = if quick { 500 } else { 3000 };
    let mut rates = Vec::new();
    let mut cpu_per_rec = Vec::new();
    for _ in 0..5 {
        let c0 = cpu_time();
        let (recs, el) = stream_batches(per, batches, 64);
        let cpu = cpu_time() - c0;
        rates.push(recs as f64 / el.as_secs_f64());
        cpu_per_rec.push(cpu.as_nanos() as f64 / recs as f64);
    }
    let mut sorted = rates.clone();
    sorted.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let mut cpr = cpu_per_rec.clone();
    cpr.sort_by(|a, b| a.partial_cmp(b).unwrap());
    eprintln!(
        "Batch stream: {per} process records/frame ({frame_len} B), {batches} frames x5: \
         median {:.0} records/s (min {:.0}, max {:.0}); CPU {:.0} ns/record (both sides)",
        sorted[2], sorted[0], sorted[4], cpr[2]
    );
    out.insert(
        "batch".into(),
        serde_json::json!({"records_per_frame": per, "frame_bytes": frame_len, "frames": batches,
            "records_per_s_median": sorted[2], "records_per_s_min": sorted[0], "records_per_s_max": sorted[4],
            "cpu_ns_per_record_median": cpr[2]}),
    );
    println!("{}", serde_json::Value::Object(out));
}
