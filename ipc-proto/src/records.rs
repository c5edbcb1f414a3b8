//! The data model carried from the collector to the shipper: metrics and log records grouped by
//! the resource they describe, close to OTLP so the shipper maps them one to one.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

/// One unit of transfer and of acknowledgement on the data path.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Batch {
    /// Monotonic per collector run (restarts from the journal's view, see the shipper).
    pub seq: u64,
    pub records: Vec<Record>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Record {
    /// Metrics sharing one resource (a container, the host, a filesystem, ...).
    Metrics {
        resource: Vec<KeyValue>,
        metrics: Vec<Metric>,
    },
    /// A log record (kernel events are log records with an `event.name`).
    Log {
        resource: Vec<KeyValue>,
        log: LogRecord,
    },
    /// One process sampled in one cycle, as numbers and four strings: the bulk of the data
    /// path (thousands per cycle), so names, units and attribute keys are not carried; the
    /// shipper expands it into the `process.*` semantic conventions. Boxed: it is several
    /// times the size of the other variants (postcard encodes a box as its content).
    Process(Box<ProcessRecord>),
    /// Processes sampled at `time_unix_nano` whose record would repeat the last one sent for
    /// them (`collector.process_refresh_ms`): their pids only. The exporters send nothing for
    /// them; a store of latest values (the Prometheus endpoint) keeps them alive. The pid
    /// means the process of that pid's last `Process` record earlier in the same stream.
    ProcessesUnchanged { time_unix_nano: u64, pids: Vec<u32> },
}

/// Most pids in one [`Record::ProcessesUnchanged`] (≤ 10 KiB encoded, far below a frame).
pub const MAX_UNCHANGED_PIDS: usize = 2048;

/// Exactly how [`Record`] is encoded, from borrowed data: the collector encodes each record
/// once, straight into a batch frame ([`crate::batch::BatchFrame`]), without building owned
/// values first. The variants mirror [`Record`]'s one for one (postcard encodes an enum as its
/// variant index followed by the fields, and a slice like a `Vec`).
#[derive(Debug, Clone, Copy, Serialize)]
pub enum RecordRef<'a> {
    Metrics {
        resource: &'a [KeyValue],
        metrics: &'a [Metric],
    },
    Log {
        resource: &'a [KeyValue],
        log: &'a LogRecord,
    },
    Process(&'a ProcessRecord<&'a str>),
    ProcessesUnchanged {
        time_unix_nano: u64,
        pids: &'a [u32],
    },
}

impl Record {
    /// This record as [`Decoded`] gives it (a process record's strings lent, nothing copied).
    pub fn decoded(&self) -> Decoded<'_> {
        match self {
            Record::Process(p) => Decoded(Inner::Process(p.lend())),
            other => Decoded(Inner::Other(Cow::Borrowed(other))),
        }
    }
}

/// A record decoded from postcard bytes without copying the bulk of the data path: a process
/// record (thousands per cycle) borrows its strings from the bytes; the other kinds are decoded
/// owned. Accepts exactly what decoding a [`Record`] accepts.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded<'a>(Inner<'a>);

/// Private, so that a process record is always the borrowed `Process` (what
/// [`Decoded::borrowed`] relies on): `Other` never holds one.
#[derive(Debug, Clone, PartialEq)]
enum Inner<'a> {
    Process(ProcessRecord<&'a str>),
    Other(Cow<'a, Record>),
}

/// [`Record::Process`]'s variant index (postcard writes an enum as its index, a varint, then
/// the variant's fields; a box as its content).
const PROCESS_VARIANT: u32 = 2;

impl<'a> Decoded<'a> {
    /// Decode one record from the front of `bytes`; returns it and the bytes after it.
    pub fn take(bytes: &'a [u8]) -> Result<(Decoded<'a>, &'a [u8]), postcard::Error> {
        let (variant, fields): (u32, _) = postcard::take_from_bytes(bytes)?;
        if variant == PROCESS_VARIANT {
            let (p, rest) = postcard::take_from_bytes::<ProcessRecord<&str>>(fields)?;
            Ok((Decoded(Inner::Process(p)), rest))
        } else {
            let (r, rest) = postcard::take_from_bytes::<Record>(bytes)?;
            Ok((Decoded(Inner::Other(Cow::Owned(r))), rest))
        }
    }

    /// Decode `bytes`, which must hold exactly one record.
    pub fn decode(bytes: &'a [u8]) -> Result<Decoded<'a>, postcard::Error> {
        match Decoded::take(bytes)? {
            (d, []) => Ok(d),
            _ => Err(postcard::Error::DeserializeBadEncoding),
        }
    }

    /// The view the shipper's converters take.
    pub fn borrowed(&self) -> RecordRef<'_> {
        match &self.0 {
            Inner::Process(p) => RecordRef::Process(p),
            Inner::Other(r) => match r.as_ref() {
                Record::Metrics { resource, metrics } => RecordRef::Metrics { resource, metrics },
                Record::Log { resource, log } => RecordRef::Log { resource, log },
                Record::ProcessesUnchanged {
                    time_unix_nano,
                    pids,
                } => RecordRef::ProcessesUnchanged {
                    time_unix_nano: *time_unix_nano,
                    pids,
                },
                Record::Process(_) => unreachable!("a decoded process record is never `Other`"),
            },
        }
    }

    pub fn into_owned(self) -> Record {
        match self.0 {
            Inner::Process(p) => Record::Process(Box::new(p.to_owned_record())),
            Inner::Other(r) => r.into_owned(),
        }
    }
}

/// What [`crate::batch::BatchFrame::push`] accepts: a value whose postcard encoding is that of
/// one [`Record`]. Sealed: only the two types whose encodings are tested to agree.
pub trait EncodesAsRecord: Serialize + sealed::Sealed {
    /// A log record (kernel event): batches holding one are never superseded.
    fn is_log(&self) -> bool;
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::Record {}
    impl Sealed for super::RecordRef<'_> {}
}

impl EncodesAsRecord for Record {
    fn is_log(&self) -> bool {
        matches!(self, Record::Log { .. })
    }
}

impl EncodesAsRecord for RecordRef<'_> {
    fn is_log(&self) -> bool {
        matches!(self, RecordRef::Log { .. })
    }
}

/// A process as the collector saw it in one cycle. `S` is `String` when decoded and `&str`
/// when encoded from the collector's buffers (same bytes either way).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessRecord<S = String> {
    /// When the sample was taken (the cycle's clock).
    pub time_unix_nano: u64,
    /// When the process started (boot time + starttime of /proc/PID/stat).
    pub start_time_unix_nano: u64,
    pub pid: u32,
    pub ppid: u32,
    /// Owner (real uid/gid of the process, from its /proc/PID directory).
    pub uid: u32,
    pub gid: u32,
    /// State letter of /proc/PID/stat (`R`, `S`, `D`, `Z`, ...).
    pub state: u8,
    pub threads: u32,
    pub cpu_user_ns: u64,
    pub cpu_system_ns: u64,
    pub memory_rss_bytes: u64,
    pub memory_virtual_bytes: u64,
    /// Open descriptors, when counted (feature `process_fds`).
    pub open_fds: Option<u32>,
    /// Sockets among them, when counted (feature `process_sockets`).
    pub sockets: Option<u32>,
    /// Page faults that did not / did need I/O (minflt, majflt of /proc/PID/stat).
    pub minor_faults: u64,
    pub major_faults: u64,
    /// Context switches of the main thread (/proc/PID/status), when read.
    pub voluntary_switches: Option<u64>,
    pub involuntary_switches: Option<u64>,
    /// /proc/PID/io, when read (feature `process_io`).
    pub io: Option<ProcessIo>,
    /// `comm` (at most 15 bytes, lossy UTF-8).
    pub executable_name: S,
    /// Target of /proc/PID/exe (feature `process_io`); empty when unknown.
    pub executable_path: S,
    /// The arguments, each followed by NUL as in /proc/PID/cmdline (bounded, lossy UTF-8).
    pub command_args: S,
    /// Owner's names from the host's /etc/passwd and /etc/group (the number when unknown).
    pub user_name: S,
    pub group_name: S,
    /// Container id and Kubernetes pod UID from the process's cgroup, names from the kubelet's
    /// log directories; empty when unknown.
    pub container_id: S,
    pub k8s_pod_uid: S,
    pub k8s_namespace: S,
    pub k8s_pod_name: S,
    pub k8s_container_name: S,
    /// The numbers that repeat the last record sent for this process, one bit each
    /// ([`process_field`], the order of [`ProcessRecord::numbers`]): still given, so that a
    /// store of latest values holds them all, but the exporters leave them out. Last, so that
    /// a record of the layout before it fails to decode instead of decoding wrong.
    pub unchanged: u16,
}

/// The bits of [`ProcessRecord::unchanged`], in the order of [`ProcessRecord::numbers`].
pub mod process_field {
    pub const CPU_USER: u16 = 1 << 0;
    pub const CPU_SYSTEM: u16 = 1 << 1;
    pub const MEMORY_RSS: u16 = 1 << 2;
    pub const MEMORY_VIRTUAL: u16 = 1 << 3;
    pub const THREADS: u16 = 1 << 4;
    pub const OPEN_FDS: u16 = 1 << 5;
    pub const SOCKETS: u16 = 1 << 6;
    pub const MINOR_FAULTS: u16 = 1 << 7;
    pub const MAJOR_FAULTS: u16 = 1 << 8;
    pub const VOLUNTARY_SWITCHES: u16 = 1 << 9;
    pub const INVOLUNTARY_SWITCHES: u16 = 1 << 10;
    pub const IO_READ_BYTES: u16 = 1 << 11;
    pub const IO_WRITE_BYTES: u16 = 1 << 12;
    pub const IO_READ_OPS: u16 = 1 << 13;
    pub const IO_WRITE_OPS: u16 = 1 << 14;
    /// How many there are.
    pub const COUNT: usize = 15;
}

/// Storage I/O of a process (/proc/PID/io): bytes and read/write system calls.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessIo {
    /// `read_bytes`, `write_bytes`: what the process caused to be fetched from / sent to the
    /// storage layer.
    pub read_bytes: u64,
    pub write_bytes: u64,
    /// `syscr`, `syscw`.
    pub read_ops: u64,
    pub write_ops: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metric {
    /// OpenTelemetry semantic-convention name, e.g. `process.cpu.time`.
    pub name: String,
    /// UCUM unit, e.g. `s`, `By`, `{process}`.
    pub unit: String,
    pub kind: MetricKind,
    pub start_time_unix_nano: u64,
    pub time_unix_nano: u64,
    pub value: MetricValue,
    pub attributes: Vec<KeyValue>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetricKind {
    Gauge,
    /// Cumulative sum.
    Sum {
        monotonic: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum MetricValue {
    I64(i64),
    F64(f64),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogRecord {
    pub time_unix_nano: u64,
    pub observed_time_unix_nano: u64,
    /// OpenTelemetry severity number (1..=24).
    pub severity_number: u8,
    pub severity_text: String,
    /// Short event name (`OOMKilling`, `TaskHung`, ...) or empty for plain logs.
    pub event_name: String,
    pub body: String,
    pub attributes: Vec<KeyValue>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyValue {
    pub key: String,
    pub value: AttrValue,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AttrValue {
    Str(String),
    I64(i64),
    F64(f64),
    Bool(bool),
    StrArray(Vec<String>),
}

impl KeyValue {
    pub fn str(key: impl Into<String>, v: impl Into<String>) -> Self {
        KeyValue {
            key: key.into(),
            value: AttrValue::Str(v.into()),
        }
    }
    pub fn i64(key: impl Into<String>, v: i64) -> Self {
        KeyValue {
            key: key.into(),
            value: AttrValue::I64(v),
        }
    }
}

impl<S> ProcessRecord<S> {
    /// The same numbers with each string mapped by `f`.
    pub fn map_strings<'a, T>(&'a self, f: impl Fn(&'a S) -> T) -> ProcessRecord<T> {
        ProcessRecord {
            time_unix_nano: self.time_unix_nano,
            start_time_unix_nano: self.start_time_unix_nano,
            pid: self.pid,
            ppid: self.ppid,
            uid: self.uid,
            gid: self.gid,
            state: self.state,
            threads: self.threads,
            cpu_user_ns: self.cpu_user_ns,
            cpu_system_ns: self.cpu_system_ns,
            memory_rss_bytes: self.memory_rss_bytes,
            memory_virtual_bytes: self.memory_virtual_bytes,
            open_fds: self.open_fds,
            sockets: self.sockets,
            minor_faults: self.minor_faults,
            major_faults: self.major_faults,
            voluntary_switches: self.voluntary_switches,
            involuntary_switches: self.involuntary_switches,
            io: self.io,
            executable_name: f(&self.executable_name),
            executable_path: f(&self.executable_path),
            command_args: f(&self.command_args),
            user_name: f(&self.user_name),
            group_name: f(&self.group_name),
            container_id: f(&self.container_id),
            k8s_pod_uid: f(&self.k8s_pod_uid),
            k8s_namespace: f(&self.k8s_namespace),
            k8s_pod_name: f(&self.k8s_pod_name),
            k8s_container_name: f(&self.k8s_container_name),
            unchanged: self.unchanged,
        }
    }

    /// The numbers [`ProcessRecord::unchanged`] may mark, bit `i` for number `i` (none: not
    /// read this cycle).
    pub fn numbers(&self) -> [Option<u64>; process_field::COUNT] {
        let io = self.io;
        [
            Some(self.cpu_user_ns),
            Some(self.cpu_system_ns),
            Some(self.memory_rss_bytes),
            Some(self.memory_virtual_bytes),
            Some(self.threads.into()),
            self.open_fds.map(u64::from),
            self.sockets.map(u64::from),
            Some(self.minor_faults),
            Some(self.major_faults),
            self.voluntary_switches,
            self.involuntary_switches,
            io.map(|x| x.read_bytes),
            io.map(|x| x.write_bytes),
            io.map(|x| x.read_ops),
            io.map(|x| x.write_ops),
        ]
    }
}

impl ProcessRecord {
    /// The same record with its strings lent (what the collector encodes).
    pub fn lend(&self) -> ProcessRecord<&str> {
        self.map_strings(String::as_str)
    }
}

impl ProcessRecord<&str> {
    /// The owned record these borrowed strings describe.
    pub fn to_owned_record(&self) -> ProcessRecord {
        self.map_strings(|s| (*s).to_owned())
    }
}

/// Log attribute (I64) carrying the `/dev/kmsg` sequence number of a kernel event. The shipper
/// remembers the highest one it journaled and sends it in `ShipperToCollector::Resume`.
pub const ATTR_KMSG_SEQ: &str = "linux.kmsg.seq";

#[cfg(test)]
mod tests {
    use super::*;

    fn process() -> ProcessRecord {
        ProcessRecord {
            time_unix_nano: 1_700_000_000_000_000_000,
            start_time_unix_nano: 1_699_999_000_000_000_000,
            pid: 4242,
            ppid: 1,
            uid: 1000,
            gid: 1000,
            state: b'S',
            threads: 3,
            cpu_user_ns: 170_000_000,
            cpu_system_ns: 50_000_000,
            memory_rss_bytes: 1 << 20,
            memory_virtual_bytes: 1 << 30,
            open_fds: Some(12),
            sockets: None,
            minor_faults: 100,
            major_faults: 2,
            voluntary_switches: Some(7),
            involuntary_switches: Some(1),
            io: Some(ProcessIo {
                read_bytes: 4096,
                write_bytes: 0,
                read_ops: 3,
                write_ops: 1,
            }),
            executable_name: "sleep".into(),
            executable_path: "/usr/bin/sleep".into(),
            command_args: "sleep\x00100\x00".into(),
            user_name: "alice".into(),
            group_name: "users".into(),
            container_id: String::new(),
            k8s_pod_uid: String::new(),
            k8s_namespace: String::new(),
            k8s_pod_name: String::new(),
            k8s_container_name: String::new(),
            unchanged: process_field::MEMORY_RSS | process_field::IO_WRITE_OPS,
        }
    }

    /// The borrowed encoder view and the owned record give the same bytes, variant by variant.
    #[test]
    fn record_ref_encodes_like_record() {
        let p = process();
        let borrowed = p.lend();
        assert_eq!(borrowed.to_owned_record(), p);
        let owned = Record::Process(Box::new(p.clone()));
        let by_ref = RecordRef::Process(&borrowed);
        assert_eq!(
            postcard::to_allocvec(&owned).unwrap(),
            postcard::to_allocvec(&by_ref).unwrap()
        );
        let resource = vec![KeyValue::str("host.name", "h")];
        let metrics = vec![Metric {
            name: "system.memory.usage".into(),
            unit: "By".into(),
            kind: MetricKind::Gauge,
            start_time_unix_nano: 1,
            time_unix_nano: 2,
            value: MetricValue::I64(5),
            attributes: vec![KeyValue::str("state", "used")],
        }];
        let log = LogRecord {
            time_unix_nano: 3,
            observed_time_unix_nano: 4,
            severity_number: 17,
            severity_text: "ERROR".into(),
            event_name: "OOMKilling".into(),
            body: "Out of memory".into(),
            attributes: vec![KeyValue::i64(ATTR_KMSG_SEQ, 9)],
        };
        let m = Record::Metrics {
            resource: resource.clone(),
            metrics: metrics.clone(),
        };
        let l = Record::Log {
            resource: resource.clone(),
            log: log.clone(),
        };
        let pids = [1, 300, u32::MAX];
        let u = Record::ProcessesUnchanged {
            time_unix_nano: 7,
            pids: pids.to_vec(),
        };
        for (r, v) in [
            (
                &m,
                RecordRef::Metrics {
                    resource: &resource,
                    metrics: &metrics,
                },
            ),
            (
                &l,
                RecordRef::Log {
                    resource: &resource,
                    log: &log,
                },
            ),
            (
                &u,
                RecordRef::ProcessesUnchanged {
                    time_unix_nano: 7,
                    pids: &pids,
                },
            ),
        ] {
            assert_eq!(
                postcard::to_allocvec(r).unwrap(),
                postcard::to_allocvec(&v).unwrap()
            );
            assert_eq!(r.is_log(), v.is_log());
        }
    }

    /// The borrowing decoder gives back every kind of record, process records without a copy
    /// of their strings, and refuses what decoding a `Record` refuses.
    #[test]
    fn decoded_matches_the_owned_decoder() {
        let p = Record::Process(Box::new(process()));
        let m = Record::Metrics {
            resource: vec![KeyValue::str("host.name", "h")],
            metrics: vec![],
        };
        let l = Record::Log {
            resource: vec![],
            log: LogRecord {
                time_unix_nano: 3,
                observed_time_unix_nano: 4,
                severity_number: 9,
                severity_text: "INFO".into(),
                event_name: String::new(),
                body: "b".into(),
                attributes: vec![],
            },
        };
        let u = Record::ProcessesUnchanged {
            time_unix_nano: 5,
            pids: vec![4, 4242],
        };
        for r in [&p, &m, &l, &u] {
            let bytes = postcard::to_allocvec(r).unwrap();
            let d = Decoded::decode(&bytes).unwrap();
            assert_eq!(d.borrowed().is_log(), r.is_log());
            assert_eq!(postcard::to_allocvec(&d.borrowed()).unwrap(), bytes);
            assert_eq!(&d.clone().into_owned(), r);
            assert_eq!(r.decoded(), d);
            if let RecordRef::Process(q) = d.borrowed() {
                let range = bytes.as_ptr_range();
                assert!(
                    range.contains(&q.command_args.as_ptr()),
                    "borrowed, not copied"
                );
            }
            // Cut anywhere, or with a byte more: an error, as for the owned decoder.
            for cut in 0..bytes.len() {
                assert!(Decoded::decode(&bytes[..cut]).is_err());
                assert!(postcard::from_bytes::<Record>(&bytes[..cut]).is_err());
            }
            let mut longer = bytes.clone();
            longer.push(0);
            assert!(Decoded::decode(&longer).is_err());
            let (d2, rest) = Decoded::take(&longer).unwrap();
            assert_eq!(d2.into_owned(), *r);
            assert_eq!(rest, [0]);
        }
        // An unknown variant.
        assert!(Decoded::decode(&[4]).is_err());
        assert!(Decoded::decode(&[]).is_err());
    }
}
