//! Property tests of the decoder on untrusted bytes: any input either decodes or yields an
//! error; it never panics, and a valid frame with any single byte flipped never panics either.

use proptest::prelude::*;
use vigil_ipc_proto::frame::{HEADER_LEN, decode, encode};
use vigil_ipc_proto::*;

fn try_all(bytes: &[u8]) {
    let _ = decode::<Hello>(bytes);
    let _ = decode::<PrivRequest>(bytes);
    let _ = decode::<PrivResponse>(bytes);
    let _ = decode::<SupervisorToChild>(bytes);
    let _ = decode::<ChildToSupervisor>(bytes);
    let _ = decode::<CollectorToShipper>(bytes);
    let _ = decode::<ShipperToCollector>(bytes);
    let _ = decode::<ClientRequest>(bytes);
    let _ = decode::<ClientResponse>(bytes);
    let _ = vigil_ipc_proto::batch::split_batch(bytes);
}

fn framed(payload: &[u8]) -> Vec<u8> {
    let mut v = (payload.len() as u32).to_le_bytes().to_vec();
    v.extend_from_slice(payload);
    v
}

fn sample_batch() -> CollectorToShipper {
    CollectorToShipper::Batch(Batch {
        seq: 7,
        records: vec![
            Record::Metrics {
                resource: vec![KeyValue::i64("process.pid", 42)],
                metrics: vec![Metric {
                    name: "process.cpu.time".into(),
                    unit: "s".into(),
                    kind: MetricKind::Sum { monotonic: true },
                    start_time_unix_nano: 1,
                    time_unix_nano: 2,
                    value: MetricValue::F64(1.5),
                    attributes: vec![KeyValue::str("cpu.mode", "user")],
                }],
            },
            Record::Process(Box::new(ProcessRecord {
                time_unix_nano: 2,
                start_time_unix_nano: 1,
                pid: 42,
                ppid: 1,
                uid: 1000,
                gid: 1000,
                state: b'S',
                threads: 1,
                cpu_user_ns: 10,
                cpu_system_ns: 20,
                memory_rss_bytes: 4096,
                memory_virtual_bytes: 8192,
                open_fds: Some(3),
                sockets: None,
                executable_name: "sleep".into(),
                minor_faults: 5,
                voluntary_switches: Some(2),
                involuntary_switches: Some(0),
                command_args: "sleep\x001\x00".into(),
                user_name: "alice".into(),
                group_name: "users".into(),
                container_id: "c".into(),
                k8s_namespace: "default".into(),
                ..ProcessRecord::default()
            })),
        ],
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        try_all(&bytes);
        try_all(&framed(&bytes));
    }

    #[test]
    fn mutated_valid_frames_never_panic(pos in 0usize..4096, val in any::<u8>()) {
        let mut f = encode(&sample_batch()).unwrap();
        let i = HEADER_LEN + pos % (f.len() - HEADER_LEN);
        f[i] = val;
        try_all(&f);
    }

    /// Any batch, built record by record, is the serde frame and splits back into its records.
    #[test]
    fn batch_frames_agree_with_serde(
        pids in proptest::collection::vec(any::<u32>(), 0..40),
        names in proptest::collection::vec(".{0,40}", 1..4),
        seq in any::<u64>(),
    ) {
        let records: Vec<Record> = pids.iter().enumerate().map(|(i, &pid)| {
            let name = names[i % names.len()].clone();
            if i % 3 == 0 {
                Record::Metrics { resource: vec![KeyValue::str(name.clone(), name)], metrics: Vec::new() }
            } else {
                Record::Process(Box::new(ProcessRecord {
                    time_unix_nano: u64::from(pid) * 7, start_time_unix_nano: 1, pid, ppid: pid / 2,
                    uid: pid % 7, gid: 0, state: b'R', threads: pid % 100, cpu_user_ns: u64::MAX,
                    cpu_system_ns: 0, memory_rss_bytes: 1, memory_virtual_bytes: 2,
                    open_fds: (pid % 2 == 0).then_some(pid), sockets: None,
                    major_faults: u64::from(pid), io: (pid % 3 == 0).then_some(ProcessIo { read_bytes: 1, write_bytes: 2, read_ops: 3, write_ops: u64::MAX }),
                    executable_name: name.clone(), command_args: name.clone(),
                    user_name: String::new(), k8s_pod_name: name.clone(), group_name: name,
                    ..ProcessRecord::default()
                }))
            }
        }).collect();
        let mut b = vigil_ipc_proto::batch::BatchFrame::new();
        for r in &records { b.push(r).unwrap(); }
        let e = b.take(seq);
        let want = CollectorToShipper::Batch(Batch { seq, records: records.clone() });
        prop_assert_eq!(&e.frame, &encode(&want).unwrap());
        let s = vigil_ipc_proto::batch::split_batch(&e.frame).unwrap();
        prop_assert_eq!(s.seq, seq);
        let got: Vec<Record> = s.records.iter().map(|(r, _)| r.clone().into_owned()).collect();
        prop_assert_eq!(got, records);
    }

    #[test]
    fn huge_length_claims_are_cheap(claim in any::<u32>()) {
        // A varint length claiming up to 4 GiB elements must fail fast, not allocate it.
        let mut payload = vec![1u8]; // PrivRequest::ProcFdStats
        let mut c = claim as u64;
        loop {
            let b = (c & 0x7f) as u8;
            c >>= 7;
            if c == 0 { payload.push(b); break; }
            payload.push(b | 0x80);
        }
        let r = decode::<PrivRequest>(&framed(&payload));
        prop_assert!(claim == 0 || r.is_err());
    }
}
