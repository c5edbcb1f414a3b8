//! The persistent journal: every record accepted from the collector is appended here before
//! the collector gets its `Ack`, and stays until every configured exporter has shipped it.
//!
//! Layout of the journal directory:
//! - `seg-<base seq, 20 digits>.vjl`: segment files ([`segment`]), records framed with length,
//!   CRC32C and a global sequence number ([`record`]);
//! - `checkpoint.json`: per-exporter acknowledged positions, the next sequence number and the
//!   highest kmsg sequence journaled, replaced atomically (tmp + fsync + rename + fsync dir).
//!
//! On open every segment is validated: a torn tail is cut off, a corrupt region in the middle
//! is skipped (the next valid record is searched for), both counted and reported as warnings.
//! Total size is bounded: when an append would exceed `max_bytes`, whole oldest segments are
//! dropped and the records in them that some exporter had not shipped are counted.

pub mod record;
pub mod segment;

use std::collections::{BTreeMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use vigil_ipc_proto::{ATTR_KMSG_SEQ, AttrValue, Decoded, FsyncPolicy, Record, RecordRef};

use segment::{HEADER_LEN, IndexEntry};

pub const CHECKPOINT: &str = "checkpoint.json";
const CHECKPOINT_TMP: &str = "checkpoint.json.tmp";
/// Checkpoints are written at most this often (plus before segments are deleted and on close);
/// a crash replays at most this much already shipped data (duplicates, never loss).
const CHECKPOINT_EVERY: Duration = Duration::from_millis(200);

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("no space left on the journal's filesystem ({path})")]
    NoSpace { path: PathBuf },
    #[error("journal I/O on {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("cannot encode record: {0}")]
    Encode(postcard::Error),
    #[error("record of {0} bytes exceeds the journal's per-record limit")]
    RecordTooLarge(usize),
}

impl JournalError {
    fn io(path: &Path, source: io::Error) -> Self {
        if source.raw_os_error() == Some(libc::ENOSPC)
            || source.raw_os_error() == Some(libc::EDQUOT)
        {
            JournalError::NoSpace {
                path: path.to_path_buf(),
            }
        } else {
            JournalError::Io {
                path: path.to_path_buf(),
                source,
            }
        }
    }
}

#[derive(Debug, Clone)]
pub struct JournalConfig {
    pub max_bytes: u64,
    pub segment_bytes: u64,
    pub fsync: FsyncPolicy,
    pub fsync_interval: Duration,
}

impl JournalConfig {
    /// Segment size actually used: small enough that dropping one segment frees a useful
    /// fraction of `max_bytes`, and at most 1 GiB (record offsets are 32-bit).
    fn segment_limit(&self) -> u64 {
        self.segment_bytes
            .min(self.max_bytes / 4)
            .clamp(4096, 1 << 30)
    }
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct JournalStats {
    /// Records lost to corruption (gaps around corrupt regions, torn tails, undecodable).
    pub corrupt_records: u64,
    /// Torn tails cut off at open.
    pub torn_tails: u64,
    /// Records dropped by the drop-oldest policy before every exporter had them.
    pub dropped_oldest: u64,
    pub checkpoint_errors: u64,
    pub fsync_errors: u64,
    /// fdatasync calls made for appended records (per batch, per group commit, per interval).
    pub data_syncs: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Checkpoint {
    version: u32,
    next_seq: u64,
    last_kmsg_seq: Option<u64>,
    acks: BTreeMap<String, u64>,
}

#[derive(Debug)]
struct Segment {
    base: u64,
    path: PathBuf,
    size: u64,
    /// Where each record not yet shipped by every exporter lives (what all of them shipped is
    /// never read again: its entries are dropped, see [`Journal::gc`]).
    index: Vec<IndexEntry>,
}

impl Segment {
    /// Whether records were written past the header (shipped ones included).
    fn has_records(&self) -> bool {
        self.size > HEADER_LEN as u64
    }
}

/// Index entries a segment keeps room for however few records wait.
const MIN_INDEX_ROOM: usize = 256;

/// Records read for an exporter, as the bytes they were journaled as; ack `next` once they
/// are shipped. The exporter decodes them ([`ReadBatch::decode`]): process records borrow
/// their strings from these bytes, so reading a batch allocates nothing per record.
#[derive(Debug, Default)]
pub struct ReadBatch {
    bytes: Vec<u8>,
    /// Sequence number and payload range in `bytes` of each record whose frame checked.
    entries: Vec<(u64, std::ops::Range<usize>)>,
    /// Sequence to acknowledge once these records are shipped (one past the last one read,
    /// corrupt records skipped included).
    pub next: u64,
}

impl ReadBatch {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The records with their sequence numbers. Every payload in the journal was decoded
    /// before it was appended (or when the journal was opened) and its checksum was checked
    /// when read, so none fails to decode; one that did would be left out.
    pub fn decode(&self) -> Vec<(u64, Decoded<'_>)> {
        self.entries
            .iter()
            .filter_map(|(seq, range)| {
                let payload = self.bytes.get(range.clone())?;
                Decoded::decode(payload).ok().map(|r| (*seq, r))
            })
            .collect()
    }
}

pub struct Journal {
    dir: PathBuf,
    cfg: JournalConfig,
    segments: VecDeque<Segment>,
    /// The last segment's file, open for appending; `None` while a new segment could not be
    /// created (the file system was full at open): the next append creates it.
    active: Option<File>,
    next_seq: u64,
    acks: BTreeMap<String, u64>,
    last_kmsg_seq: Option<u64>,
    stats: JournalStats,
    total_bytes: u64,
    unsynced: bool,
    last_sync: Instant,
    ckpt_dirty: bool,
    last_ckpt: Instant,
    warnings: Vec<String>,
    /// fsync and checkpoint failures are told at most once a minute each.
    fsync_warn: crate::stats::RateLimit,
    ckpt_warn: crate::stats::RateLimit,
    replayed: u64,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("dir", &self.dir)
            .field("segments", &self.segments.len())
            .field("next_seq", &self.next_seq)
            .field("acks", &self.acks)
            .finish()
    }
}

impl Journal {
    /// Open (or create) the journal in `dir` for these exporters. Corruption is never fatal:
    /// it is repaired, counted and described in [`Journal::take_warnings`].
    pub fn open(
        dir: &Path,
        cfg: JournalConfig,
        exporters: &[&str],
    ) -> Result<Journal, JournalError> {
        fs::create_dir_all(dir).map_err(|e| JournalError::io(dir, e))?;
        let mut rec = Recovery::default();
        let mut ckpt = read_checkpoint(dir, &mut rec.warnings);
        if ckpt.next_seq > record::MAX_SEQ {
            rec.warnings.push(format!(
                "journal: checkpoint claims sequence {}; ignoring it, replaying everything",
                ckpt.next_seq
            ));
            ckpt = Checkpoint::default();
        }
        rec.last_kmsg_seq = ckpt.last_kmsg_seq;
        let segments: VecDeque<Segment> = list_segments(dir)?
            .into_iter()
            .filter_map(|(base, path)| rec.recover(base, path))
            .collect();

        let mut next_seq = ckpt.next_seq.max(rec.max_seq.map_or(0, |m| m + 1));
        while segments
            .iter()
            .any(|s| s.path == dir.join(segment::file_name(next_seq)))
        {
            next_seq += 1;
        }
        let (acks, replayed) = resume_positions(&ckpt, &segments, next_seq, exporters);
        let mut total_bytes: u64 = segments.iter().map(|s| s.size).sum();
        let mut segments = segments;
        // A full file system must not stop the shipper from starting: it then refuses
        // batches (`NoSpace`, the collector keeps them) until space comes back.
        let active = match create_segment(dir, next_seq, cfg.fsync) {
            Ok((file, seg)) => {
                total_bytes += seg.size;
                segments.push_back(seg);
                Some(file)
            }
            Err(JournalError::NoSpace { path }) => {
                rec.warnings.push(format!(
                    "journal: no space for a new segment {}; appends are refused until there is",
                    path.display()
                ));
                None
            }
            Err(e) => return Err(e),
        };
        let now = Instant::now();
        let mut j = Journal {
            dir: dir.to_path_buf(),
            cfg,
            segments,
            active,
            next_seq,
            acks,
            last_kmsg_seq: rec.last_kmsg_seq,
            stats: rec.stats,
            total_bytes,
            unsynced: false,
            last_sync: now,
            ckpt_dirty: true,
            last_ckpt: now,
            warnings: rec.warnings,
            fsync_warn: Default::default(),
            ckpt_warn: Default::default(),
            replayed,
        };
        j.gc();
        j.flush_checkpoint();
        Ok(j)
    }

    /// Warnings gathered since the last call (corruption found at open, ...).
    pub fn take_warnings(&mut self) -> Vec<String> {
        std::mem::take(&mut self.warnings)
    }

    /// Append records (one collector batch); durable per the fsync policy when this returns
    /// `Ok`. On error nothing of the batch stays in the journal.
    pub fn append(&mut self, records: &[Record]) -> Result<(), JournalError> {
        self.append_records(records, self.cfg.fsync == FsyncPolicy::Batch)
    }

    /// Append without syncing, even under the `batch` policy: several batches are then made
    /// durable by one [`Journal::commit`] (group commit) before any of them is acknowledged.
    pub fn append_deferred(&mut self, records: &[Record]) -> Result<(), JournalError> {
        self.append_records(records, false)
    }

    fn append_records(&mut self, records: &[Record], sync: bool) -> Result<(), JournalError> {
        let payloads = records
            .iter()
            .map(|r| postcard::to_allocvec(r).map_err(JournalError::Encode))
            .collect::<Result<Vec<_>, _>>()?;
        let refs: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
        self.append_inner(
            &refs,
            records
                .iter()
                .filter_map(|r| kmsg_seq_of(r.decoded().borrowed()))
                .max(),
            sync,
        )
    }

    /// [`Journal::append_deferred`] of records already encoded (the collector's bytes, each
    /// decoded once by the caller to know it is a valid record: `kmsg` is the highest
    /// `linux.kmsg.seq` among them).
    pub fn append_encoded_deferred(
        &mut self,
        payloads: &[&[u8]],
        kmsg: Option<u64>,
    ) -> Result<(), JournalError> {
        self.append_inner(payloads, kmsg, false)
    }

    /// Under the `batch` policy, make every deferred append durable (one fdatasync).
    pub fn commit(&mut self) -> Result<(), JournalError> {
        if let Some(active) = &self.active
            && self.unsynced
            && self.cfg.fsync == FsyncPolicy::Batch
        {
            let path = self
                .segments
                .back()
                .map_or_else(|| self.dir.clone(), |s| s.path.clone());
            self.stats.data_syncs += 1;
            active.sync_data().map_err(|e| JournalError::io(&path, e))?;
            self.unsynced = false;
            self.last_sync = Instant::now();
        }
        Ok(())
    }

    fn append_inner(
        &mut self,
        payloads: &[&[u8]],
        kmsg: Option<u64>,
        sync: bool,
    ) -> Result<(), JournalError> {
        if payloads.is_empty() {
            return Ok(());
        }
        let total: usize = payloads
            .iter()
            .map(|p| p.len() + record::FRAME_HEADER)
            .sum();
        let mut buf = Vec::with_capacity(total);
        let mut offsets = Vec::with_capacity(payloads.len());
        for (i, payload) in payloads.iter().enumerate() {
            if payload.len() > record::MAX_PAYLOAD {
                return Err(JournalError::RecordTooLarge(payload.len()));
            }
            let off = buf.len();
            record::encode(self.next_seq + i as u64, payload, &mut buf);
            offsets.push((off, buf.len() - off));
        }
        let active_size = self.segments.back().map_or(0, |s| s.size);
        let active_has_records = self.segments.back().is_some_and(Segment::has_records);
        if self.active.is_none()
            || (active_has_records && active_size + buf.len() as u64 > self.cfg.segment_limit())
        {
            self.rotate()?;
        }
        self.make_room(buf.len() as u64);
        let (Some(seg), Some(active)) = (self.segments.back_mut(), self.active.as_ref()) else {
            return Err(JournalError::Io {
                path: self.dir.clone(),
                source: io::Error::other("no active segment"),
            });
        };
        let pos = seg.size;
        let written = active.write_all_at(&buf, pos).and_then(|_| {
            if sync {
                self.stats.data_syncs += 1;
                active.sync_data()
            } else {
                Ok(())
            }
        });
        if let Err(e) = written {
            // Leave nothing of this batch behind (a later append continues at `pos`).
            let _ = active.set_len(pos);
            return Err(JournalError::io(&seg.path, e));
        }
        for (i, (off, len)) in offsets.into_iter().enumerate() {
            seg.index.push(IndexEntry {
                seq: self.next_seq + i as u64,
                offset: (pos as usize + off) as u32,
                len: len as u32,
            });
        }
        seg.size += buf.len() as u64;
        self.total_bytes += buf.len() as u64;
        self.next_seq += payloads.len() as u64;
        if !sync {
            self.unsynced = true;
        }
        if let Some(k) = kmsg {
            self.last_kmsg_seq = Some(self.last_kmsg_seq.map_or(k, |l| l.max(k)));
        }
        Ok(())
    }

    fn rotate(&mut self) -> Result<(), JournalError> {
        if self.unsynced && self.cfg.fsync != FsyncPolicy::Never {
            self.sync();
        }
        let (file, seg) = create_segment(&self.dir, self.next_seq, self.cfg.fsync)?;
        self.active = Some(file);
        self.total_bytes += seg.size;
        self.segments.push_back(seg);
        Ok(())
    }

    /// Drop whole oldest segments until `extra` more bytes fit in `max_bytes`.
    fn make_room(&mut self, extra: u64) {
        while self.total_bytes + extra > self.cfg.max_bytes {
            if self.segments.len() <= 1 {
                let has_records = self.segments.back().is_some_and(Segment::has_records);
                if !has_records || self.rotate().is_err() {
                    return;
                }
                continue;
            }
            let Some(seg) = self.segments.pop_front() else {
                return;
            };
            let min_ack = self.min_ack();
            let lost = seg.index.iter().filter(|e| e.seq >= min_ack).count() as u64;
            self.stats.dropped_oldest += lost;
            let _ = fs::remove_file(&seg.path);
            self.total_bytes = self.total_bytes.saturating_sub(seg.size);
            let oldest = self.segments.front().map_or(self.next_seq, |s| s.base);
            for a in self.acks.values_mut() {
                if *a < oldest {
                    *a = oldest;
                }
            }
            self.ckpt_dirty = true;
        }
    }

    fn min_ack(&self) -> u64 {
        self.acks.values().copied().min().unwrap_or(self.next_seq)
    }

    /// Records with sequence >= `from`, at most `max_records` and about `max_bytes`.
    pub fn read(
        &mut self,
        from: u64,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<ReadBatch, JournalError> {
        let max_records = max_records.max(1);
        let mut out = ReadBatch {
            next: from,
            ..ReadBatch::default()
        };
        let start = self
            .segments
            .partition_point(|s| s.base <= from)
            .saturating_sub(1);
        let mut bytes = 0usize;
        let mut complete = true;
        for seg in self.segments.iter().skip(start) {
            let i0 = seg.index.partition_point(|e| e.seq < from);
            let entries = &seg.index[i0..];
            if entries.is_empty() {
                continue;
            }
            let mut k = 0;
            while k < entries.len() && out.entries.len() + k < max_records {
                if k > 0 && bytes + entries[k].len as usize > max_bytes {
                    break;
                }
                bytes += entries[k].len as usize;
                k += 1;
            }
            let take = &entries[..k];
            let first = take[0].offset as u64;
            let last = take[k - 1];
            let end = last.offset as u64 + last.len as u64;
            // This segment's frames go after the previous segments' in one buffer.
            let at = out.bytes.len();
            out.bytes.resize(at + (end - first) as usize, 0);
            let read =
                File::open(&seg.path).and_then(|f| f.read_exact_at(&mut out.bytes[at..], first));
            match read {
                Ok(()) => {
                    for e in take {
                        let rel = at + (e.offset as u64 - first) as usize;
                        let range = rel..rel + e.len as usize;
                        let frame = out.bytes.get(range.clone()).unwrap_or(&[]);
                        match record::parse(frame) {
                            record::Parsed::Valid { seq, .. } if seq == e.seq => out
                                .entries
                                .push((e.seq, range.start + record::FRAME_HEADER..range.end)),
                            _ => self.stats.corrupt_records += 1,
                        }
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::NotFound | io::ErrorKind::UnexpectedEof
                    ) =>
                {
                    out.bytes.truncate(at);
                    self.stats.corrupt_records += take.len() as u64;
                }
                Err(e) => return Err(JournalError::io(&seg.path, e)),
            }
            out.next = last.seq + 1;
            if k < entries.len() {
                complete = false;
                break;
            }
            if out.entries.len() >= max_records || bytes >= max_bytes {
                complete = false;
                break;
            }
        }
        if complete {
            out.next = out.next.max(self.next_seq);
        }
        Ok(out)
    }

    /// Records counted as dropped that an exporter had in memory and delivered after all.
    pub fn uncount_dropped(&mut self, n: u64) {
        self.stats.dropped_oldest = self.stats.dropped_oldest.saturating_sub(n);
    }

    /// `exporter` shipped everything below `next`.
    pub fn ack(&mut self, exporter: &str, next: u64) {
        let next_seq = self.next_seq;
        if let Some(a) = self.acks.get_mut(exporter)
            && next > *a
        {
            *a = next.min(next_seq);
            self.ckpt_dirty = true;
        }
        self.gc();
    }

    /// Delete segments every exporter has shipped entirely (never the active one), and drop
    /// the index entries of the records every exporter has shipped in the oldest one left:
    /// 16 bytes a record, the active segment's index otherwise grew to ≈ 1 MB (an 8 MiB
    /// segment of process records) before each rotation, shipped or not.
    fn gc(&mut self) {
        let min_ack = self.min_ack();
        let mut n = 0;
        while n + 1 < self.segments.len() && self.segments[n + 1].base <= min_ack {
            n += 1;
        }
        if n > 0 {
            self.flush_checkpoint();
            for seg in self.segments.drain(..n) {
                let _ = fs::remove_file(&seg.path);
                self.total_bytes = self.total_bytes.saturating_sub(seg.size);
            }
        }
        // Only the oldest segment can hold shipped records: the next one starts past min_ack.
        if let Some(seg) = self.segments.front_mut() {
            let shipped = seg.index.partition_point(|e| e.seq < min_ack);
            if shipped > 0 {
                seg.index.drain(..shipped);
                let room = seg.index.len().max(MIN_INDEX_ROOM);
                if seg.index.capacity() > 2 * room {
                    seg.index.shrink_to(room);
                }
            }
        }
    }

    /// Periodic work: interval fsync, throttled checkpoint. Returns when to call again.
    pub fn tick(&mut self, now: Instant) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        if self.unsynced && self.cfg.fsync == FsyncPolicy::Interval {
            let due = self
                .last_sync
                .checked_add(self.cfg.fsync_interval)
                .unwrap_or(now);
            if now >= due {
                self.sync();
            } else {
                next = Some(due);
            }
        }
        if self.ckpt_dirty {
            let due = self.last_ckpt + CHECKPOINT_EVERY;
            if now >= due {
                self.flush_checkpoint();
            }
            if self.ckpt_dirty {
                let due = due.max(now + Duration::from_millis(10));
                next = Some(next.map_or(due, |n| n.min(due)));
            }
        }
        next
    }

    fn sync(&mut self) {
        let Some(active) = &self.active else {
            self.unsynced = false;
            return;
        };
        self.stats.data_syncs += 1;
        match active.sync_data() {
            Ok(()) => self.unsynced = false,
            Err(e) => {
                self.stats.fsync_errors += 1;
                let path = self.segments.back().map_or(&self.dir, |s| &s.path);
                if let Some(more) = self.fsync_warn.allow(Instant::now()) {
                    self.warnings.push(format!(
                        "journal: fdatasync {}: {e} (fsync_errors {}{more})",
                        path.display(),
                        self.stats.fsync_errors
                    ));
                }
            }
        }
        self.last_sync = Instant::now();
    }

    /// Write the checkpoint now (atomically). Failures are counted and retried later.
    pub fn flush_checkpoint(&mut self) {
        self.last_ckpt = Instant::now();
        let ckpt = Checkpoint {
            version: 1,
            next_seq: self.next_seq,
            last_kmsg_seq: self.last_kmsg_seq,
            acks: self.acks.clone(),
        };
        match write_checkpoint(&self.dir, &ckpt, self.cfg.fsync != FsyncPolicy::Never) {
            Ok(()) => self.ckpt_dirty = false,
            Err(e) => {
                self.stats.checkpoint_errors += 1;
                self.ckpt_dirty = true;
                if let Some(more) = self.ckpt_warn.allow(Instant::now()) {
                    self.warnings.push(format!(
                        "journal: checkpoint {}: {e} (checkpoint_errors {}{more}; retried)",
                        self.dir.join(CHECKPOINT).display(),
                        self.stats.checkpoint_errors
                    ));
                }
            }
        }
    }

    /// Make everything durable (shutdown).
    pub fn close(&mut self) {
        if self.unsynced && self.cfg.fsync != FsyncPolicy::Never {
            self.sync();
        }
        self.flush_checkpoint();
    }

    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }
    pub fn acked(&self, exporter: &str) -> Option<u64> {
        self.acks.get(exporter).copied()
    }
    pub fn last_kmsg_seq(&self) -> Option<u64> {
        self.last_kmsg_seq
    }
    pub fn stats(&self) -> &JournalStats {
        &self.stats
    }
    pub fn total_bytes(&self) -> u64 {
        self.total_bytes
    }
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }
    /// Index entries held (records some exporter has not shipped), and room for how many.
    pub fn index_len(&self) -> (usize, usize) {
        self.segments.iter().fold((0, 0), |(n, c), s| {
            (n + s.index.len(), c + s.index.capacity())
        })
    }
    /// Records that were waiting for some exporter when the journal was opened.
    pub fn replayed_at_open(&self) -> u64 {
        self.replayed
    }
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        self.close();
    }
}

/// The highest `linux.kmsg.seq` among these records.
pub fn max_kmsg_seq<'a>(records: impl IntoIterator<Item = RecordRef<'a>>) -> Option<u64> {
    records.into_iter().filter_map(kmsg_seq_of).max()
}

fn kmsg_seq_of(r: RecordRef<'_>) -> Option<u64> {
    match r {
        RecordRef::Log { log, .. } => log.attributes.iter().find_map(|kv| match kv.value {
            AttrValue::I64(v) if kv.key == ATTR_KMSG_SEQ && v >= 0 => Some(v as u64),
            _ => None,
        }),
        RecordRef::Metrics { .. }
        | RecordRef::Process(_)
        | RecordRef::ProcessesUnchanged { .. } => None,
    }
}

fn create_segment(
    dir: &Path,
    base: u64,
    fsync: FsyncPolicy,
) -> Result<(File, Segment), JournalError> {
    let path = dir.join(segment::file_name(base));
    let result = (|| {
        let mut f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)?;
        f.write_all(&segment::header(base))?;
        if fsync != FsyncPolicy::Never {
            f.sync_all()?;
            File::open(dir)?.sync_all()?;
        }
        Ok::<File, io::Error>(f)
    })();
    match result {
        Ok(f) => Ok((
            f,
            Segment {
                base,
                path,
                size: HEADER_LEN as u64,
                index: Vec::new(),
            },
        )),
        Err(e) => {
            let _ = fs::remove_file(&path);
            Err(JournalError::io(&path, e))
        }
    }
}

/// The segment files in `dir`, oldest first (left-over `.tmp` files removed).
fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, JournalError> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| JournalError::io(dir, e))? {
        let entry = entry.map_err(|e| JournalError::io(dir, e))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if let Some(base) = segment::parse_file_name(&name) {
            found.push((base, entry.path()));
        } else if name.ends_with(".tmp") {
            let _ = fs::remove_file(entry.path());
        }
    }
    found.sort();
    Ok(found)
}

/// Where every exporter resumes (its acknowledged sequence, within what the journal holds)
/// and how many records that replays.
fn resume_positions(
    ckpt: &Checkpoint,
    segments: &VecDeque<Segment>,
    next_seq: u64,
    exporters: &[&str],
) -> (BTreeMap<String, u64>, u64) {
    let oldest = segments.front().map_or(next_seq, |s| s.base.min(next_seq));
    let mut acks = BTreeMap::new();
    let mut replayed = 0;
    for name in exporters {
        let a = ckpt
            .acks
            .get(*name)
            .copied()
            .unwrap_or(oldest)
            .clamp(oldest, next_seq);
        replayed += segments
            .iter()
            .map(|s| s.index.iter().filter(|e| e.seq >= a).count() as u64)
            .sum::<u64>();
        acks.insert(name.to_string(), a);
    }
    (acks, replayed)
}

/// What opening the journal learns from its segments, one after the other.
#[derive(Default)]
struct Recovery {
    warnings: Vec<String>,
    stats: JournalStats,
    last_kmsg_seq: Option<u64>,
    /// The last sequence of the segments recovered so far.
    max_seq: Option<u64>,
}

impl Recovery {
    /// One segment file: scanned, its corruption cut off and counted; `None` when nothing of
    /// it is usable (an empty one is removed, an oversized or unreadable one left in place).
    fn recover(&mut self, base: u64, path: PathBuf) -> Option<Segment> {
        // Larger than any segment this journal writes (1 GiB + a batch): not read into
        // memory, left in place for the operator.
        let too_large = fs::metadata(&path).is_ok_and(|m| m.len() > (1 << 30) + (16 << 20));
        if too_large {
            self.warnings.push(format!(
                "journal: {} is larger than any segment; ignored",
                path.display()
            ));
            return None;
        }
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) => {
                self.warnings
                    .push(format!("journal: cannot read {}: {e}", path.display()));
                return None;
            }
        };
        let mut scan = segment::scan(&bytes);
        if let Some(m) = self.max_seq {
            let before = scan.index.len();
            scan.index.retain(|e| e.seq > m);
            self.stats.corrupt_records += (before - scan.index.len()) as u64;
        }
        self.count_damage(&path, &scan, bytes.len());
        self.drop_undecodable(&path, &bytes, &mut scan);
        if scan.index.is_empty() {
            let _ = fs::remove_file(&path);
            return None;
        }
        if scan.torn_tail_bytes > 0
            && let Err(e) = OpenOptions::new()
                .write(true)
                .open(&path)
                .and_then(|f| f.set_len(scan.valid_end as u64).and_then(|_| f.sync_all()))
        {
            self.warnings
                .push(format!("journal: cannot truncate {}: {e}", path.display()));
        }
        self.max_seq = scan.index.last().map(|e| e.seq);
        if scan.index[0].seq != base {
            self.warnings.push(format!(
                "journal: {} starts at record {}, not at its name's {base}",
                path.display(),
                scan.index[0].seq
            ));
        }
        Some(Segment {
            // What the records say, whatever the file is called.
            base: scan.index[0].seq,
            path,
            size: scan.valid_end as u64,
            index: scan.index,
        })
    }

    /// A corrupt header, corrupt regions and a torn tail: counted and told.
    fn count_damage(&mut self, path: &Path, scan: &segment::Scan, len: usize) {
        if scan.header_base.is_none() && len >= HEADER_LEN {
            self.warnings.push(format!(
                "journal: {} has a corrupt header; keeping its {} valid records",
                path.display(),
                scan.index.len()
            ));
        }
        if scan.corrupt_regions > 0 {
            self.stats.corrupt_records += scan.lost_records;
            self.warnings.push(format!(
                "journal: {}: {} corrupt region(s) skipped, {} record(s) lost",
                path.display(),
                scan.corrupt_regions,
                scan.lost_records
            ));
        }
        if scan.torn_tail_bytes > 0 {
            self.stats.torn_tails += 1;
            self.stats.corrupt_records += 1;
            self.warnings.push(format!(
                "journal: {}: torn tail of {} bytes cut off",
                path.display(),
                scan.torn_tail_bytes
            ));
        }
    }

    /// Drop records that do not decode (a valid checksum over a payload of another version):
    /// counted, never fatal. The kernel-line sequence of those that do is noted.
    fn drop_undecodable(&mut self, path: &Path, bytes: &[u8], scan: &mut segment::Scan) {
        let mut undecodable = 0u64;
        let last_kmsg_seq = &mut self.last_kmsg_seq;
        scan.index.retain(|e| {
            let start = e.offset as usize + record::FRAME_HEADER;
            let end = e.offset as usize + e.len as usize;
            match bytes.get(start..end).map(Decoded::decode) {
                Some(Ok(r)) => {
                    if let Some(k) = kmsg_seq_of(r.borrowed()) {
                        *last_kmsg_seq = Some(last_kmsg_seq.map_or(k, |l| l.max(k)));
                    }
                    true
                }
                _ => {
                    undecodable += 1;
                    false
                }
            }
        });
        if undecodable > 0 {
            self.stats.corrupt_records += undecodable;
            self.warnings.push(format!(
                "journal: {}: {undecodable} record(s) with a valid checksum do not decode",
                path.display()
            ));
        }
    }
}

fn read_checkpoint(dir: &Path, warnings: &mut Vec<String>) -> Checkpoint {
    let path = dir.join(CHECKPOINT);
    match fs::read(&path) {
        Ok(bytes) => match serde_json::from_slice::<Checkpoint>(&bytes) {
            Ok(c) => c,
            Err(e) => {
                warnings.push(format!(
                    "journal: checkpoint {} is corrupt ({e}); replaying everything journaled",
                    path.display()
                ));
                Checkpoint::default()
            }
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => Checkpoint::default(),
        Err(e) => {
            warnings.push(format!("journal: cannot read {}: {e}", path.display()));
            Checkpoint::default()
        }
    }
}

fn write_checkpoint(dir: &Path, ckpt: &Checkpoint, durable: bool) -> io::Result<()> {
    let tmp = dir.join(CHECKPOINT_TMP);
    let bytes = serde_json::to_vec(ckpt).map_err(io::Error::other)?;
    let result = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(&bytes)?;
        if durable {
            f.sync_all()?;
        }
        fs::rename(&tmp, dir.join(CHECKPOINT))?;
        if durable {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}
