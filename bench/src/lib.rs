//! Shared fixtures of vigil's IPC benchmarks: realistic messages of the two hot channels
//! (collector ↔ privhelper `ProcFdStats`, collector → shipper `Batch`) and the loops that
//! drive them over a real `SOCK_SEQPACKET` pair ([`vigil_ipc_proto::Channel::pair`]).

use std::time::{Duration, Instant};

use vigil_ipc_proto::frame::{self, HEADER_LEN, MAX_FRAME};
use vigil_ipc_proto::{
    AttrValue, Batch, Channel, CollectorToShipper, KeyValue, Metric, MetricKind, MetricValue,
    PrivRequest, PrivResponse, ProcFdStat, Record, ShipperToCollector,
};

/// A `ProcFdStats` request for `n` pids (what the collector asks the privhelper per cycle for
/// other users' processes).
pub fn fd_request(n: usize) -> PrivRequest {
    PrivRequest::ProcFdStats {
        pids: (0..n as u32).map(|i| 1000 + i * 7).collect(),
    }
}

/// The matching answer: one `ProcFdStat` per pid.
pub fn fd_response(req: &PrivRequest) -> PrivResponse {
    match req {
        PrivRequest::ProcFdStats { pids } => PrivResponse::FdStats(
            pids.iter()
                .map(|&pid| ProcFdStat {
                    pid,
                    fds: Some(pid % 64 + 3),
                    sockets: Some(pid % 5),
                })
                .collect(),
        ),
        _ => unreachable!(),
    }
}

fn metric(
    name: &str,
    unit: &str,
    kind: MetricKind,
    v: MetricValue,
    attrs: Vec<KeyValue>,
) -> Metric {
    Metric {
        name: name.into(),
        unit: unit.into(),
        kind,
        start_time_unix_nano: 1_700_000_000_000_000_000,
        time_unix_nano: 1_700_000_010_000_000_000,
        value: v,
        attributes: attrs,
    }
}

/// One process's record as the collector produces it (OpenTelemetry process semantic
/// conventions): resource attributes plus cpu time (user, system), memory (rss, virtual),
/// threads, open fds, status — the per-process fields every peer in `bench/run.py` collects.
pub fn process_record(i: u32) -> Record {
    let sum = MetricKind::Sum { monotonic: true };
    let gauge = MetricKind::Gauge;
    Record::Metrics {
        resource: vec![
            KeyValue::i64("process.pid", 4000 + i as i64),
            KeyValue::i64("process.parent_pid", 1234),
            KeyValue::str("process.executable.name", "lg-busy"),
            KeyValue::str(
                "process.command_line",
                "/tmp/vigil-bench/loadgen 1000 1000 20 1000",
            ),
            KeyValue::str("process.owner", "root"),
            KeyValue::i64("process.creation.time", 1_700_000_000 + i as i64),
            KeyValue::str("host.name", "bench-host"),
        ],
        metrics: vec![
            metric(
                "process.cpu.time",
                "s",
                sum,
                MetricValue::F64(1.25 + i as f64),
                vec![KeyValue::str("cpu.mode", "user")],
            ),
            metric(
                "process.cpu.time",
                "s",
                sum,
                MetricValue::F64(0.5 + i as f64),
                vec![KeyValue::str("cpu.mode", "system")],
            ),
            metric(
                "process.memory.usage",
                "By",
                gauge,
                MetricValue::I64(1_400_000 + i as i64),
                vec![],
            ),
            metric(
                "process.memory.virtual",
                "By",
                gauge,
                MetricValue::I64(2_600_000 + i as i64),
                vec![],
            ),
            metric(
                "process.thread.count",
                "{thread}",
                gauge,
                MetricValue::I64(1),
                vec![],
            ),
            metric(
                "process.open_file_descriptor.count",
                "{file_descriptor}",
                gauge,
                MetricValue::I64(3),
                vec![],
            ),
            metric(
                "process.status",
                "1",
                gauge,
                MetricValue::I64(1),
                vec![KeyValue {
                    key: "process.state".into(),
                    value: AttrValue::Str("S".into()),
                }],
            ),
        ],
    }
}

/// The most process records one `Batch` frame can hold (frames are at most `MAX_FRAME`).
pub fn records_per_frame() -> usize {
    let mut n = 1;
    loop {
        let b = batch(0, n + 1);
        if frame::encoded_len(&b).unwrap() > MAX_FRAME - HEADER_LEN {
            return n;
        }
        n += 1;
    }
}

pub fn batch(seq: u64, n: usize) -> CollectorToShipper {
    CollectorToShipper::Batch(Batch {
        seq,
        records: (0..n as u32).map(process_record).collect(),
    })
}

/// Spawn a privhelper-like responder: decodes each request, answers with the canned response.
/// Validation and /proc work of the real privhelper are not included (IPC cost only).
pub fn spawn_fd_responder(mut ch: Channel) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        loop {
            let req: PrivRequest = match ch.recv() {
                Ok(r) => r,
                Err(_) => return,
            };
            if ch.send(&fd_response(&req)).is_err() {
                return;
            }
        }
    })
}

/// One request/response round trip (encode, sendmsg, peer decode+encode+send, recvmsg, decode).
pub fn round_trip(ch: &mut Channel, req: &PrivRequest) -> PrivResponse {
    ch.send(req).unwrap();
    ch.recv().unwrap()
}

/// Send `total_batches` frames of `per_batch` records with at most `window` unacknowledged
/// (the collector's `max_unacked_batches`); the receiver decodes every frame fully and acks.
/// Returns (records sent, elapsed).
pub fn stream_batches(per_batch: usize, total_batches: u64, window: u64) -> (u64, Duration) {
    let (mut tx, mut rx) = Channel::pair().unwrap();
    let recv = std::thread::spawn(move || {
        let mut records = 0u64;
        loop {
            let m: CollectorToShipper = match rx.recv() {
                Ok(m) => m,
                Err(_) => return records,
            };
            let CollectorToShipper::Batch(b) = m;
            records += b.records.len() as u64;
            if rx.send(&ShipperToCollector::Ack { seq: b.seq }).is_err() {
                return records;
            }
        }
    });
    // Records are built once; each send encodes them again (as the collector encodes each batch).
    let mut msg = batch(0, per_batch);
    let start = Instant::now();
    let mut acked = 0u64;
    for seq in 0..total_batches {
        while seq - acked >= window {
            let _: ShipperToCollector = tx.recv().unwrap();
            acked += 1;
        }
        let CollectorToShipper::Batch(b) = &mut msg;
        b.seq = seq;
        tx.send(&msg).unwrap();
    }
    while acked < total_batches {
        let _: ShipperToCollector = tx.recv().unwrap();
        acked += 1;
    }
    let elapsed = start.elapsed();
    drop(tx);
    let got = recv.join().unwrap();
    assert_eq!(got, per_batch as u64 * total_batches);
    (got, elapsed)
}
