//! The shipper's journal read back from disk after a crash, whatever the disk holds: the
//! segment scan (`segment::scan`: header, record frames and checksums, resynchronisation over
//! corrupt regions, torn tails) on the raw bytes, then a whole journal directory of such
//! segments and a checkpoint opened (`Journal::open`: repair, undecodable records dropped,
//! acks clamped), read back (`Journal::read`), acknowledged, appended to and reopened. Every
//! record the scan keeps must be one `record::parse` accepts with the same sequence.

#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use vigil_ipc_proto::{FsyncPolicy, KeyValue, LogRecord, Record};
use vigil_shipper::journal::record::{self, Parsed};
use vigil_shipper::journal::segment::{self, file_name};
use vigil_shipper::journal::{CHECKPOINT, Journal, JournalConfig};

/// One segment file, built from valid records and then damaged, so the scan sees both what
/// the shipper writes and every way a crash or a disk can spoil it.
#[derive(Debug, Arbitrary)]
struct Seg {
    /// Base sequence in the file name and (when `header`) in the header.
    base: u16,
    header: bool,
    /// Records: the step from the previous sequence (0 repeats it), then the payload.
    records: Vec<(u8, Payload)>,
    /// Bytes to XOR, at an offset taken modulo the length.
    flips: Vec<(u16, u8)>,
    /// Length to cut the file to (modulo its length + 1).
    cut: Option<u16>,
    /// Garbage appended after the cut.
    tail: Vec<u8>,
}

#[derive(Debug, Arbitrary)]
enum Payload {
    /// A log record with this body, as the shipper journals them.
    Log(String),
    /// Any bytes with a valid frame and checksum (a record of another version).
    Raw(Vec<u8>),
}

#[derive(Debug, Arbitrary)]
struct Input {
    segments: Vec<Seg>,
    /// Checkpoint fields: next_seq, last_kmsg_seq, the exporter's ack.
    checkpoint: Option<(u64, Option<u64>, Option<u64>)>,
    /// Or a checkpoint file of any text.
    raw_checkpoint: Option<String>,
}

impl Seg {
    fn bytes(&self) -> Vec<u8> {
        let base = u64::from(self.base);
        let mut b = if self.header {
            segment::header(base).to_vec()
        } else {
            vec![0; segment::HEADER_LEN]
        };
        let mut seq = base;
        for (i, (step, p)) in self.records.iter().take(64).enumerate() {
            if i > 0 {
                seq += u64::from(*step);
            }
            let payload = match p {
                Payload::Log(body) => {
                    postcard::to_stdvec(&log(body)).expect("a log record encodes")
                }
                Payload::Raw(raw) => raw.clone(),
            };
            record::encode(seq, &payload, &mut b);
        }
        let n = b.len();
        for &(off, x) in &self.flips {
            b[usize::from(off) % n] ^= x;
        }
        if let Some(c) = self.cut {
            b.truncate(usize::from(c) % (n + 1));
        }
        b.extend_from_slice(&self.tail);
        b
    }
}

static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();

fn check_scan(buf: &[u8]) {
    let s = segment::scan(buf);
    assert!(s.valid_end <= buf.len());
    let mut last = None;
    for e in &s.index {
        assert!(last.is_none_or(|l| e.seq > l), "sequences not increasing");
        last = Some(e.seq);
        let start = e.offset as usize;
        let frame = &buf[start..start + e.len as usize];
        assert_eq!(
            record::parse(frame),
            Parsed::Valid {
                seq: e.seq,
                total: e.len as usize
            }
        );
    }
}

fn config() -> JournalConfig {
    JournalConfig {
        max_bytes: 1 << 20,
        segment_bytes: 64 << 10,
        fsync: FsyncPolicy::Never,
        fsync_interval: Duration::from_secs(1),
    }
}

fn log(body: &str) -> Record {
    Record::Log {
        resource: Vec::<KeyValue>::new(),
        log: LogRecord {
            time_unix_nano: 1,
            observed_time_unix_nano: 1,
            severity_number: 9,
            severity_text: "INFO".into(),
            event_name: String::new(),
            body: body.into(),
            attributes: Vec::new(),
        },
    }
}

fn read_all(j: &mut Journal) {
    let mut from = j.acked("otlp").unwrap_or(0);
    for _ in 0..64 {
        let Ok(b) = j.read(from, 100, 64 << 10) else {
            return;
        };
        // What passed the read's checks decodes (the exporters rely on it).
        assert_eq!(b.decode().len(), b.len());
        if b.next <= from {
            break;
        }
        from = b.next;
        j.ack("otlp", from);
    }
}

fuzz_target!(|input: Input| {
    let segments: Vec<(u64, Vec<u8>)> = input
        .segments
        .iter()
        .take(4)
        .map(|s| (u64::from(s.base), s.bytes()))
        .collect();
    for (_, bytes) in &segments {
        check_scan(bytes);
    }
    let dir = DIR
        .get_or_init(|| tempfile::tempdir().expect("temp dir"))
        .path();
    for e in std::fs::read_dir(dir).expect("read temp dir") {
        let _ = std::fs::remove_file(e.expect("dir entry").path());
    }
    for (base, bytes) in &segments {
        std::fs::write(dir.join(file_name(*base)), bytes).expect("write segment");
    }
    let ckpt = match (&input.checkpoint, &input.raw_checkpoint) {
        (Some((next, kmsg, ack)), _) => Some(format!(
            r#"{{"version":1,"next_seq":{next},"last_kmsg_seq":{},"acks":{{{}}}}}"#,
            kmsg.map_or("null".to_string(), |k| k.to_string()),
            ack.map_or(String::new(), |a| format!(r#""otlp":{a}"#)),
        )),
        (None, Some(raw)) => Some(raw.clone()),
        (None, None) => None,
    };
    if let Some(c) = ckpt {
        std::fs::write(dir.join(CHECKPOINT), c).expect("write checkpoint");
    }
    let Ok(mut j) = Journal::open(dir, config(), &["otlp"]) else {
        return;
    };
    read_all(&mut j);
    let _ = j.append(&[log("appended")]);
    let _ = j.commit();
    j.close();
    drop(j);
    if let Ok(mut j) = Journal::open(dir, config(), &["otlp"]) {
        read_all(&mut j);
    }
});
