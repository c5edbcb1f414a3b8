//! Shared fixtures of vigil's IPC benchmarks: realistic messages of the two hot channels
//! (collector ↔ privhelper `ProcFdStats`, collector → shipper `Batch`) and the loops that
//! drive them over a real `SOCK_SEQPACKET` pair ([`vigil_ipc_proto::Channel::pair`]).

use std::time::{Duration, Instant};

use vigil_ipc_proto::batch::{BatchFrame, split_batch};
use vigil_ipc_proto::{
    Channel, PrivRequest, PrivResponse, ProcFdStat, ProcessRecord, Record, RecordRef,
    ShipperToCollector,
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

/// One process as the collector samples it (the per-process fields every peer in
/// `bench/run.py` collects): numbers plus executable, command line, user and group names, with
/// the string lengths of the load generator's processes.
pub fn process_record(i: u32) -> ProcessRecord {
    ProcessRecord {
        time_unix_nano: 1_700_000_010_000_000_000,
        start_time_unix_nano: 1_700_000_000_000_000_000 + u64::from(i) * 1_000_000,
        pid: 4000 + i,
        ppid: 1234,
        uid: 0,
        gid: 0,
        state: b'S',
        threads: 1,
        cpu_user_ns: 1_250_000_000 + u64::from(i) * 10_000_000,
        cpu_system_ns: 500_000_000 + u64::from(i) * 10_000_000,
        memory_rss_bytes: 1_400_000 + u64::from(i) * 4096,
        memory_virtual_bytes: 2_600_000 + u64::from(i) * 4096,
        open_fds: Some(3),
        sockets: None,
        executable_name: "lg-busy".into(),
        minor_faults: 120,
        major_faults: 0,
        voluntary_switches: Some(1000),
        involuntary_switches: Some(3),
        command_args: "/tmp/vigil-bench/loadgen\x001000\x001000\x0020\x001000\x00".into(),
        user_name: "root".into(),
        group_name: "root".into(),
        ..ProcessRecord::default()
    }
}

/// Encode `n` process records into one batch frame the way the collector does: each record
/// lent (`&str` into the owner's strings) and encoded once, straight into the frame.
pub fn encode_batch(frame: &mut BatchFrame, seq: u64, records: &[ProcessRecord]) -> Vec<u8> {
    for p in records {
        let lent = p.lend();
        frame
            .push(&RecordRef::Process(&lent))
            .expect("records_per_frame() records fit");
    }
    frame.take(seq).frame
}

/// The most process records one `Batch` frame can hold (frames are at most `MAX_FRAME`).
pub fn records_per_frame() -> usize {
    let mut f = BatchFrame::new();
    let mut n = 0;
    while f
        .push(&Record::Process(Box::new(process_record(n as u32))))
        .is_ok()
    {
        n += 1;
    }
    n
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
/// (the collector's `max_unacked_batches`). The sender encodes every batch afresh as the
/// collector does ([`encode_batch`]); the receiver takes every frame apart and decodes every
/// record as the shipper does (`split_batch`), then acks. Returns (records sent, elapsed).
pub fn stream_batches(per_batch: usize, total_batches: u64, window: u64) -> (u64, Duration) {
    let (mut tx, mut rx) = Channel::pair().unwrap();
    let recv = std::thread::spawn(move || {
        let mut records = 0u64;
        loop {
            let seq = match rx.recv_bytes().and_then(split_batch) {
                Ok(b) => {
                    records += b.records.len() as u64;
                    b.seq
                }
                Err(_) => return records,
            };
            if rx.send(&ShipperToCollector::Ack { seq }).is_err() {
                return records;
            }
        }
    });
    let records: Vec<ProcessRecord> = (0..per_batch as u32).map(process_record).collect();
    let mut frame = BatchFrame::new();
    let start = Instant::now();
    let mut acked = 0u64;
    for seq in 0..total_batches {
        while seq - acked >= window {
            let _: ShipperToCollector = tx.recv().unwrap();
            acked += 1;
        }
        tx.send_raw(&encode_batch(&mut frame, seq, &records))
            .unwrap();
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
