//! The journal on its own: append, read, acknowledge, reopen, rotation, drop-oldest,
//! corruption on disk, full filesystem.

mod common;

use common::{SmallTmpfs, segments};
use std::time::Duration;

use proptest::prelude::*;
use vigil_ipc_proto::{
    ATTR_KMSG_SEQ, AttrValue, Decoded, FsyncPolicy, KeyValue, LogRecord, Record, RecordRef,
};
use vigil_shipper::journal::{Journal, JournalConfig, JournalError};

fn cfg(max: u64, seg: u64) -> JournalConfig {
    JournalConfig {
        max_bytes: max,
        segment_bytes: seg,
        fsync: FsyncPolicy::Batch,
        fsync_interval: Duration::from_millis(100),
    }
}

fn rec(id: i64) -> Record {
    Record::Log {
        resource: vec![KeyValue::str("host.name", "h")],
        log: LogRecord {
            time_unix_nano: 1,
            observed_time_unix_nano: 2,
            severity_number: 9,
            severity_text: "INFO".into(),
            event_name: String::new(),
            body: format!("record {id} {}", "x".repeat(100)),
            attributes: vec![KeyValue::i64("test.id", id)],
        },
    }
}

fn id_of(r: &Decoded<'_>) -> i64 {
    match r.borrowed() {
        RecordRef::Log { log, .. } => log
            .attributes
            .iter()
            .find_map(|kv| match kv.value {
                AttrValue::I64(v) if kv.key == "test.id" => Some(v),
                _ => None,
            })
            .unwrap(),
        _ => panic!("not a log"),
    }
}

fn read_all(j: &mut Journal, from: u64) -> Vec<i64> {
    let b = j.read(from, usize::MAX, usize::MAX).unwrap();
    b.decode().iter().map(|(_, r)| id_of(r)).collect()
}

#[test]
fn append_read_ack_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut j = Journal::open(dir.path(), cfg(1 << 20, 1 << 16), &["a", "b"]).unwrap();
        j.append(&(0..10).map(rec).collect::<Vec<_>>()).unwrap();
        let b = j.read(0, 4, usize::MAX).unwrap();
        assert_eq!(b.len(), 4);
        assert_eq!(b.next, 4);
        j.ack("a", b.next);
        j.ack("b", 10);
    }
    let mut j = Journal::open(dir.path(), cfg(1 << 20, 1 << 16), &["a", "b"]).unwrap();
    assert_eq!(j.acked("a"), Some(4));
    assert_eq!(j.acked("b"), Some(10));
    assert_eq!(read_all(&mut j, 4), (4..10).collect::<Vec<_>>());
    assert_eq!(j.next_seq(), 10);
    assert!(j.take_warnings().is_empty());
    // A new exporter starts from the oldest record still held.
    drop(j);
    let mut j = Journal::open(dir.path(), cfg(1 << 20, 1 << 16), &["a", "c"]).unwrap();
    assert_eq!(j.acked("c"), Some(0));
    assert_eq!(read_all(&mut j, 0).len(), 10);
}

/// What every exporter shipped leaves the index, while its segment stays until it rotates out;
/// what one exporter still waits for stays readable, also after a reopen.
#[test]
fn shipped_records_leave_the_index() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut j = Journal::open(dir.path(), cfg(64 << 20, 8 << 20), &["a", "b"]).unwrap();
        for i in 0..20 {
            j.append(&(i * 500..i * 500 + 500).map(rec).collect::<Vec<_>>())
                .unwrap();
        }
        assert_eq!(j.segment_count(), 1);
        assert_eq!(j.index_len().0, 10_000);
        // One exporter shipped everything, the other nothing: every entry is still needed.
        j.ack("a", 10_000);
        assert_eq!(j.index_len().0, 10_000);
        j.ack("b", 9_990);
        let (held, room) = j.index_len();
        assert_eq!(held, 10);
        assert!(room <= 512, "room for {room} entries kept");
        assert_eq!(read_all(&mut j, 9_990), (9_990..10_000).collect::<Vec<_>>());
        j.append(&(10_000..10_005).map(rec).collect::<Vec<_>>())
            .unwrap();
        assert_eq!(j.segment_count(), 1);
        assert_eq!(read_all(&mut j, 9_995), (9_995..10_005).collect::<Vec<_>>());
        assert_eq!(j.index_len().0, 15);
    }
    // Reopened: the segment is scanned again; b's records are there from its position.
    let mut j = Journal::open(dir.path(), cfg(64 << 20, 8 << 20), &["a", "b"]).unwrap();
    assert_eq!(j.replayed_at_open(), 5 + 15);
    assert_eq!(read_all(&mut j, 9_990), (9_990..10_005).collect::<Vec<_>>());
    j.ack("a", 10_005);
    j.ack("b", 10_005);
    assert_eq!(j.index_len().0, 0);
    assert!(j.take_warnings().is_empty());
}

#[test]
fn rotation_and_gc() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = Journal::open(dir.path(), cfg(1 << 20, 4096), &["a"]).unwrap();
    for i in 0..20 {
        j.append(&(i * 10..i * 10 + 10).map(rec).collect::<Vec<_>>())
            .unwrap();
    }
    assert!(j.segment_count() > 5, "{}", j.segment_count());
    assert_eq!(read_all(&mut j, 0), (0..200).collect::<Vec<_>>());
    j.ack("a", 200);
    assert_eq!(j.segment_count(), 1);
    assert_eq!(segments(dir.path()).len(), 1);
}

#[test]
fn drop_oldest_is_counted() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = Journal::open(dir.path(), cfg(32 * 1024, 8192), &["a"]).unwrap();
    for i in 0..100 {
        j.append(&(i * 10..i * 10 + 10).map(rec).collect::<Vec<_>>())
            .unwrap();
        assert!(j.total_bytes() <= 32 * 1024 + 4096, "{}", j.total_bytes());
    }
    let left = read_all(&mut j, 0);
    let dropped = j.stats().dropped_oldest;
    assert!(dropped > 0);
    assert_eq!(left.len() as u64 + dropped, 1000);
    // What is left is the newest, contiguous.
    assert_eq!(*left.last().unwrap(), 999);
    assert_eq!(left, (1000 - left.len() as i64..1000).collect::<Vec<_>>());
    assert!(j.acked("a").unwrap() >= 1000 - left.len() as u64);
}

#[test]
fn torn_tail_cut_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut j = Journal::open(dir.path(), cfg(1 << 20, 1 << 16), &["a"]).unwrap();
        j.append(&(0..5).map(rec).collect::<Vec<_>>()).unwrap();
    }
    let seg = segments(dir.path()).pop().unwrap();
    let len = std::fs::metadata(&seg).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(len - 7)
        .unwrap();
    let mut j = Journal::open(dir.path(), cfg(1 << 20, 1 << 16), &["a"]).unwrap();
    let w = j.take_warnings();
    assert!(w.iter().any(|w| w.contains("torn tail")), "{w:?}");
    assert_eq!(j.stats().torn_tails, 1);
    assert_eq!(read_all(&mut j, 0), vec![0, 1, 2, 3]);
    // Appending continues after the cut.
    j.append(&[rec(100)]).unwrap();
    drop(j);
    let mut j = Journal::open(dir.path(), cfg(1 << 20, 1 << 16), &["a"]).unwrap();
    assert!(j.take_warnings().is_empty());
    assert_eq!(read_all(&mut j, 0), vec![0, 1, 2, 3, 100]);
}

#[test]
fn corrupt_middle_skipped_rest_replayed() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut j = Journal::open(dir.path(), cfg(1 << 20, 1 << 16), &["a"]).unwrap();
        for i in 0..3 {
            j.append(&(i * 10..i * 10 + 10).map(rec).collect::<Vec<_>>())
                .unwrap();
        }
    }
    let seg = segments(dir.path()).pop().unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    // Flip bytes in the middle of the file (inside some record of the second batch).
    let mid = bytes.len() / 2;
    for b in &mut bytes[mid..mid + 8] {
        *b ^= 0xa5;
    }
    std::fs::write(&seg, &bytes).unwrap();
    let mut j = Journal::open(dir.path(), cfg(1 << 20, 1 << 16), &["a"]).unwrap();
    let w = j.take_warnings();
    assert!(w.iter().any(|w| w.contains("corrupt region")), "{w:?}");
    let ids = read_all(&mut j, 0);
    let lost = j.stats().corrupt_records;
    assert!((1..=2).contains(&lost), "lost {lost}");
    assert_eq!(ids.len() as u64 + lost, 30);
    assert_eq!(ids[0], 0);
    assert_eq!(*ids.last().unwrap(), 29);
}

#[test]
fn garbage_header_and_garbage_files() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("seg-00000000000000000000.vjl"), b"garbage").unwrap();
    std::fs::write(dir.path().join("checkpoint.json"), b"{not json").unwrap();
    let mut j = Journal::open(dir.path(), cfg(1 << 20, 1 << 16), &["a"]).unwrap();
    assert!(!j.take_warnings().is_empty());
    j.append(&[rec(1)]).unwrap();
    assert_eq!(read_all(&mut j, 0), vec![1]);
}

#[test]
fn kmsg_seq_survives_gc_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut r = rec(1);
    if let Record::Log { log, .. } = &mut r {
        log.attributes.push(KeyValue::i64(ATTR_KMSG_SEQ, 4242));
    }
    {
        let mut j = Journal::open(dir.path(), cfg(1 << 20, 4096), &["a"]).unwrap();
        j.append(&[r]).unwrap();
        j.append(&(0..40).map(rec).collect::<Vec<_>>()).unwrap();
        j.append(&[rec(99)]).unwrap();
        assert_eq!(j.last_kmsg_seq(), Some(4242));
        j.ack("a", j.next_seq());
    }
    let j = Journal::open(dir.path(), cfg(1 << 20, 4096), &["a"]).unwrap();
    assert_eq!(j.last_kmsg_seq(), Some(4242));
    assert_eq!(j.next_seq(), 42);
}

/// Root: a real full filesystem. Appends fail with NoSpace, nothing already appended is lost,
/// and appending works again once space is freed.
#[test]
fn full_tmpfs() {
    let fs = SmallTmpfs::mount();
    let jdir = fs.mnt.join("journal");
    let mut ok = Vec::new();
    let mut nospace = 0;
    {
        let mut j = Journal::open(&jdir, cfg(16 << 20, 32 * 1024), &["a"]).unwrap();
        for i in 0..400 {
            let batch: Vec<_> = (i * 10..i * 10 + 10).map(rec).collect();
            match j.append(&batch) {
                Ok(()) => ok.extend(i * 10..i * 10 + 10),
                Err(JournalError::NoSpace { .. }) => nospace += 1,
                Err(e) => panic!("unexpected {e}"),
            }
        }
        assert!(nospace > 0);
        assert_eq!(read_all(&mut j, 0), ok);
        // Ship everything: old segments go, space comes back, appends work again.
        j.ack("a", j.next_seq());
        j.append(&[rec(100_000)]).unwrap();
        ok.push(100_000);
    }
    let mut j = Journal::open(&jdir, cfg(16 << 20, 32 * 1024), &["a"]).unwrap();
    let from = j.acked("a").unwrap();
    assert_eq!(read_all(&mut j, from), vec![100_000]);
}

/// Root: a shipper started while its journal's file system is full opens the journal (no
/// new segment can be made), refuses appends with NoSpace, serves what the journal holds, and
/// appends again once space comes back, instead of exiting and taking the group down.
#[test]
fn opens_on_a_full_filesystem() {
    let fs = SmallTmpfs::mount();
    let jdir = fs.mnt.join("journal");
    {
        let mut j = Journal::open(&jdir, cfg(16 << 20, 32 * 1024), &["a"]).unwrap();
        j.append(&[rec(1), rec(2)]).unwrap();
    }
    let filler = fs.fill();
    let mut j = Journal::open(&jdir, cfg(16 << 20, 32 * 1024), &["a"]).unwrap();
    let warnings = j.take_warnings();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("no space for a new segment")),
        "{warnings:?}"
    );
    assert_eq!(read_all(&mut j, 0), vec![1, 2]);
    for _ in 0..3 {
        match j.append(&[rec(3)]) {
            Err(JournalError::NoSpace { .. }) => {}
            other => panic!("append on a full file system: {other:?}"),
        }
    }
    std::fs::remove_file(filler).unwrap();
    j.append(&[rec(3)]).unwrap();
    j.append(&[rec(4)]).unwrap();
    assert_eq!(read_all(&mut j, 0), vec![1, 2, 3, 4]);
    drop(j);
    let mut j = Journal::open(&jdir, cfg(16 << 20, 32 * 1024), &["a"]).unwrap();
    assert_eq!(read_all(&mut j, 0), vec![1, 2, 3, 4]);
    assert_eq!(j.stats().corrupt_records, 0);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    #[test]
    fn arbitrary_segment_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096),
                                          valid_prefix in any::<bool>()) {
        let _ = vigil_shipper::journal::segment::scan(&bytes);
        let dir = tempfile::tempdir().unwrap();
        let mut content = Vec::new();
        if valid_prefix {
            content.extend_from_slice(&vigil_shipper::journal::segment::header(0));
        }
        content.extend_from_slice(&bytes);
        std::fs::write(dir.path().join("seg-00000000000000000000.vjl"), &content).unwrap();
        let mut j = Journal::open(dir.path(), cfg(1 << 20, 1 << 16), &["a"]).unwrap();
        let _ = j.read(0, usize::MAX, usize::MAX).unwrap();
        j.append(&[rec(7)]).unwrap();
        let b = j.read(0, usize::MAX, usize::MAX).unwrap();
        prop_assert_eq!(b.decode().last().map(|(_, r)| id_of(r)), Some(7));
    }
}

#[test]
fn interval_and_never_fsync_policies() {
    for policy in [FsyncPolicy::Interval, FsyncPolicy::Never] {
        let dir = tempfile::tempdir().unwrap();
        let mut c = cfg(1 << 20, 4096);
        c.fsync = policy;
        c.fsync_interval = Duration::from_millis(10);
        {
            let mut j = Journal::open(dir.path(), c.clone(), &["a"]).unwrap();
            for i in 0..30 {
                j.append(&[rec(i)]).unwrap();
            }
            let next = j.tick(std::time::Instant::now());
            if policy == FsyncPolicy::Interval {
                // Either synced now or asks to be called back within the interval.
                assert!(next.is_none_or(|t| t <= std::time::Instant::now() + Duration::from_millis(250)));
            }
            std::thread::sleep(Duration::from_millis(20));
            j.tick(std::time::Instant::now());
        }
        let mut j = Journal::open(dir.path(), c, &["a"]).unwrap();
        assert_eq!(
            read_all(&mut j, 0),
            (0..30).collect::<Vec<_>>(),
            "{policy:?}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// A crash can cut the active segment at any byte: every record wholly before the cut
    /// survives, nothing after it is invented, and appending works again.
    #[test]
    fn truncation_at_any_byte_keeps_the_prefix(cut_frac in 0.0f64..1.0) {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut j = Journal::open(dir.path(), cfg(1 << 20, 1 << 20), &["a"]).unwrap();
            // Ids of equal width, so every record has the same size on disk.
            for i in 10..30 {
                j.append(&[rec(i)]).unwrap();
            }
        }
        let seg = segments(dir.path()).pop().unwrap();
        let len = std::fs::metadata(&seg).unwrap().len();
        let cut = (len as f64 * cut_frac) as u64;
        std::fs::OpenOptions::new().write(true).open(&seg).unwrap().set_len(cut).unwrap();
        let mut j = Journal::open(dir.path(), cfg(1 << 20, 1 << 20), &["a"]).unwrap();
        let ids = read_all(&mut j, 0);
        let n = ids.len() as i64;
        prop_assert_eq!(ids, (10..10 + n).collect::<Vec<_>>());
        // Each record here is the same size, so the survivors are exactly those before the cut.
        let rec_len = (len - 24) / 20;
        let whole = cut.saturating_sub(24) / rec_len;
        prop_assert_eq!(n as u64, whole.min(20));
        j.append(&[rec(100)]).unwrap();
        let after = read_all(&mut j, 0);
        prop_assert_eq!(after.last().copied(), Some(100));
    }
}

#[test]
fn misnamed_segment_is_read_by_its_records() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut j = Journal::open(dir.path(), cfg(1 << 20, 1 << 16), &["a"]).unwrap();
        j.append(&(0..5).map(rec).collect::<Vec<_>>()).unwrap();
    }
    std::fs::remove_file(dir.path().join("checkpoint.json")).unwrap();
    let seg = segments(dir.path()).remove(0);
    std::fs::rename(&seg, dir.path().join("seg-00000000000000099999.vjl")).unwrap();
    let mut j = Journal::open(dir.path(), cfg(1 << 20, 1 << 16), &["a"]).unwrap();
    assert!(!j.take_warnings().is_empty());
    assert_eq!(read_all(&mut j, 0), vec![0, 1, 2, 3, 4]);
    j.append(&[rec(5)]).unwrap();
    assert_eq!(read_all(&mut j, 0), vec![0, 1, 2, 3, 4, 5]);
    j.ack("a", j.next_seq());
    drop(j);
    let mut j = Journal::open(dir.path(), cfg(1 << 20, 1 << 16), &["a"]).unwrap();
    let from = j.acked("a").unwrap();
    assert!(read_all(&mut j, from).is_empty());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(100))]
    /// Any directory content (segments with arbitrary names and bytes, an arbitrary checkpoint)
    /// opens without panicking and the journal works afterwards.
    #[test]
    fn arbitrary_directory_never_panics(
        files in proptest::collection::vec(
            (any::<u64>(), any::<bool>(), proptest::collection::vec(any::<u8>(), 0..600)),
            0..4,
        ),
        ckpt in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..200)),
        ckpt_acks in proptest::option::of((any::<u64>(), any::<u64>())),
    ) {
        let dir = tempfile::tempdir().unwrap();
        for (base, header, bytes) in &files {
            let mut content = Vec::new();
            if *header {
                content.extend_from_slice(&vigil_shipper::journal::segment::header(*base));
            }
            content.extend_from_slice(bytes);
            let name = vigil_shipper::journal::segment::file_name(*base);
            std::fs::write(dir.path().join(name), &content).unwrap();
        }
        if let Some(c) = ckpt {
            std::fs::write(dir.path().join("checkpoint.json"), c).unwrap();
        } else if let Some((next, ack)) = ckpt_acks {
            let j = format!(r#"{{"version":1,"next_seq":{next},"last_kmsg_seq":null,"acks":{{"a":{ack}}}}}"#);
            std::fs::write(dir.path().join("checkpoint.json"), j).unwrap();
        }
        let mut j = Journal::open(dir.path(), cfg(1 << 20, 1 << 16), &["a"]).unwrap();
        let from = j.acked("a").unwrap();
        let _ = j.read(from, usize::MAX, usize::MAX).unwrap();
        j.append(&[rec(7)]).unwrap();
        let b = j.read(j.next_seq() - 1, usize::MAX, usize::MAX).unwrap();
        prop_assert_eq!(b.decode().last().map(|(_, r)| id_of(r)), Some(7));
        j.ack("a", j.next_seq());
    }
}

#[test]
fn group_commit() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut j = Journal::open(dir.path(), cfg(1 << 20, 4096), &["a"]).unwrap();
        for b in 0..30 {
            j.append_deferred(&(b * 5..b * 5 + 5).map(rec).collect::<Vec<_>>())
                .unwrap();
        }
        j.commit().unwrap();
        j.commit().unwrap();
        assert!(j.segment_count() > 1, "rotation while deferred");
    }
    let mut j = Journal::open(dir.path(), cfg(1 << 20, 4096), &["a"]).unwrap();
    assert_eq!(read_all(&mut j, 0), (0..150).collect::<Vec<_>>());
}

/// A checkpoint that cannot be written (here: a directory squats its temporary name) is
/// counted, retried, and told once with the path and the reason, not once per attempt.
#[test]
fn checkpoint_failures_are_logged_rate_limited() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = Journal::open(dir.path(), cfg(1 << 20, 1 << 16), &["otlp"]).unwrap();
    let _ = j.take_warnings();
    std::fs::create_dir(dir.path().join("checkpoint.json.tmp")).unwrap();
    j.append(&[rec(1)]).unwrap();
    for _ in 0..5 {
        j.flush_checkpoint();
    }
    assert_eq!(j.stats().checkpoint_errors, 5);
    let w = j.take_warnings();
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].contains("checkpoint.json") && w[0].contains("checkpoint_errors 1"),
        "{w:?}"
    );
    std::fs::remove_dir(dir.path().join("checkpoint.json.tmp")).unwrap();
    j.flush_checkpoint();
    assert_eq!(j.stats().checkpoint_errors, 5);
}
