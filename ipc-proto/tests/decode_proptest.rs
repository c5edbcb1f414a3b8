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
}

fn framed(payload: &[u8]) -> Vec<u8> {
    let mut v = (payload.len() as u32).to_le_bytes().to_vec();
    v.extend_from_slice(payload);
    v
}

fn sample_batch() -> CollectorToShipper {
    CollectorToShipper::Batch(Batch {
        seq: 7,
        records: vec![Record::Metrics {
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
        }],
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
