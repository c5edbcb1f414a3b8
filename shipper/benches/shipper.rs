//! Shipper benchmark (run: `cargo bench -p vigil-shipper --bench shipper`).
//!
//! 1. Throughput: a collector stand-in pushes batches of 200 records (a 64-batch unacked
//!    window, as the collector's default) into run(); the journal is on ext4, fsync policy
//!    `batch` (no Ack before an fdatasync covers the batch; group commit: one covers all the
//!    batches waiting together); the exporter ships OTLP/HTTP gzip protobuf to a loopback
//!    receiver that decodes every body. Reported: records/s and journal MB/s until every batch is acknowledged, and
//!    records/s until the receiver has decoded every record.
//! 2. Latency collector → receiver: one record per batch every 2 ms, `max_batch_delay_ms` 0;
//!    p50/p99 of (decoded at the receiver) − (sent by the collector).

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::*;
use vigil_ipc_proto::*;

fn metrics_record(i: i64) -> Record {
    Record::Metrics {
        resource: vec![
            KeyValue::str("host.name", "bench-host"),
            KeyValue::i64("process.pid", i % 500),
            KeyValue::str("process.executable.name", "postgres"),
        ],
        metrics: (0..4)
            .map(|k| Metric {
                name: format!("process.metric.{k}"),
                unit: "By".into(),
                kind: MetricKind::Gauge,
                start_time_unix_nano: 0,
                time_unix_nano: 1_700_000_000_000_000_000,
                value: MetricValue::I64(i * k),
                attributes: vec![],
            })
            .collect(),
    }
}

fn throughput(batches: u64, per_batch: i64) {
    let rx = Receiver::start();
    rx.received.lock().unwrap().discard = true;
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let mut cfg = otlp_cfg(rx.endpoint());
    cfg.max_batch_records = 2048;
    cfg.max_batch_delay_ms = 50;
    let init = init(&dir.path().join("journal"), Some(cfg), "");
    let mut sh = Shipper::start(init);
    let window = 64u64;
    let start = Instant::now();
    let mut sent = 0u64;
    let mut acked = 0u64;
    let mut bytes = 0usize;
    while acked < batches {
        while sent < batches && sent - acked < window {
            let base = sent as i64 * per_batch;
            let records: Vec<Record> = (base..base + per_batch)
                .map(|i| {
                    if i % 2 == 0 {
                        log(i)
                    } else {
                        metrics_record(i)
                    }
                })
                .collect();
            let b = CollectorToShipper::Batch(Batch { seq: sent, records });
            bytes += vigil_ipc_proto::frame::encoded_len(&b).unwrap();
            sh.collector.send(&b).unwrap();
            sent += 1;
        }
        match sh.collector.recv::<ShipperToCollector>().unwrap() {
            ShipperToCollector::Ack { .. } => acked += 1,
            other => panic!("{other:?}"),
        }
    }
    let t_ack = start.elapsed();
    let total = batches as i64 * per_batch;
    let logs_want = (total / 2) as usize;
    loop {
        let r = rx.received.lock().unwrap();
        if r.log_count >= logs_want && r.metric_count >= logs_want * 4 {
            break;
        }
        drop(r);
        std::thread::sleep(Duration::from_millis(2));
    }
    let t_ship = start.elapsed();
    let st = sh.stats();
    println!(
        "throughput: {total} records ({:.1} MB of IPC frames) in {batches} batches, fsync policy batch ({} fdatasyncs: group commit)",
        bytes as f64 / 1e6,
        st.get("journal_data_syncs").unwrap_or(0)
    );
    println!(
        "  journaled+acked: {:.0} records/s, {:.1} MB/s ({:.2} s)",
        total as f64 / t_ack.as_secs_f64(),
        bytes as f64 / 1e6 / t_ack.as_secs_f64(),
        t_ack.as_secs_f64()
    );
    println!(
        "  journaled+acked batches/s: {:.0}",
        batches as f64 / t_ack.as_secs_f64()
    );
    raw_fsync_ceiling(batches, bytes / batches as usize);
    println!(
        "  shipped to receiver (decoded): {:.0} records/s ({:.2} s); retries {:?}",
        total as f64 / t_ship.as_secs_f64(),
        t_ship.as_secs_f64(),
        st.get("retries")
    );
    sh.shutdown();
}

/// The disk's ceiling for the same work: append `batches` chunks of `bytes_per_batch` bytes to
/// one file with fdatasync after each (what the journal must do at least).
fn raw_fsync_ceiling(batches: u64, bytes_per_batch: usize) {
    use std::io::Write;
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let mut f = std::fs::File::create(dir.path().join("raw")).unwrap();
    let chunk = vec![0x5au8; bytes_per_batch];
    let start = Instant::now();
    for _ in 0..batches {
        f.write_all(&chunk).unwrap();
        f.sync_data().unwrap();
    }
    let t = start.elapsed();
    println!(
        "  ceiling (write + fdatasync per batch, same bytes, no IPC/encoding): {:.0} batches/s, {:.1} MB/s",
        batches as f64 / t.as_secs_f64(),
        (batches as usize * bytes_per_batch) as f64 / 1e6 / t.as_secs_f64()
    );
}

/// The journal alone (no exporter configured): append + fsync + ack.
fn journal_only(batches: u64, per_batch: i64) {
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let mut sh = Shipper::start(init(&dir.path().join("journal"), None, ""));
    let window = 64u64;
    let start = Instant::now();
    let (mut sent, mut acked) = (0u64, 0u64);
    while acked < batches {
        while sent < batches && sent - acked < window {
            let base = sent as i64 * per_batch;
            let records: Vec<Record> = (base..base + per_batch)
                .map(|i| {
                    if i % 2 == 0 {
                        log(i)
                    } else {
                        metrics_record(i)
                    }
                })
                .collect();
            sh.collector
                .send(&CollectorToShipper::Batch(Batch { seq: sent, records }))
                .unwrap();
            sent += 1;
        }
        match sh.collector.recv::<ShipperToCollector>().unwrap() {
            ShipperToCollector::Ack { .. } => acked += 1,
            other => panic!("{other:?}"),
        }
    }
    let t = start.elapsed();
    println!(
        "  journal only (no exporter): {:.0} records/s, {:.0} batches/s",
        (batches as i64 * per_batch) as f64 / t.as_secs_f64(),
        batches as f64 / t.as_secs_f64()
    );
    sh.shutdown();
}

fn latency(n: i64) {
    let rx = Receiver::start();
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let mut cfg = otlp_cfg(rx.endpoint());
    cfg.max_batch_delay_ms = 0;
    cfg.gzip = true;
    let mut sh = Shipper::start(init(&dir.path().join("journal"), Some(cfg), ""));
    let mut sent_at = HashMap::new();
    for i in 0..n {
        sent_at.insert(i, Instant::now());
        assert!(sh.send(i as u64, vec![log(i)]));
        std::thread::sleep(Duration::from_millis(2));
    }
    let want = (0..n).collect();
    rx.wait_ids(&want, Duration::from_secs(30));
    let mut lat = Vec::new();
    let r = rx.received.lock().unwrap();
    for l in &r.logs {
        let id: i64 = attr_map(&l.log.attributes)["test.id"].parse().unwrap();
        if let Some(s) = sent_at.get(&id) {
            lat.push(l.arrived.duration_since(*s));
        }
    }
    drop(r);
    lat.sort();
    let p = |q: f64| lat[((lat.len() as f64 - 1.0) * q) as usize];
    println!(
        "latency collector→receiver ({} records, batch delay 0, fdatasync before each ack, gzip): p50 {:?}, p99 {:?}, max {:?}",
        lat.len(),
        p(0.5),
        p(0.99),
        lat[lat.len() - 1]
    );
    sh.shutdown();
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` runs a quick smoke.
    let quick = !std::env::args().any(|a| a == "--bench");
    if quick {
        throughput(20, 50);
        journal_only(20, 50);
        latency(20);
    } else {
        throughput(2000, 200);
        journal_only(2000, 200);
        latency(1000);
    }
}
