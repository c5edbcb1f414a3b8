//! Records → what the exporters write, through one borrowed view.
//!
//! Every journal record is seen as a resource (its attributes plus [`ResourceDefaults`]) with
//! either metric points or one log record. A `Record::Metrics` lends its own key/values; a
//! compact `Record::Process` is expanded here, once, into the OpenTelemetry `process.*`
//! semantic conventions (names, units, attribute keys are `'static`). The two writers, JSON
//! lines ([`json`]) and OTLP protobuf ([`pb`]), walk the view; neither builds owned
//! intermediate messages, so shipping a record allocates nothing per attribute or point.

pub mod cache;
pub mod json;
pub mod pb;

use vigil_ipc_proto::{
    AttrValue, KeyValue, LogRecord, Metric, MetricKind, MetricValue, ProcessRecord, RecordRef,
};

pub const SCOPE_NAME: &str = "vigil";
pub const SERVICE_NAME: &str = "vigil";
pub const SCOPE_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Resource attributes added to every record's resource when it does not set them
/// (`service.name`, `service.version`, `host.name`).
#[derive(Debug, Clone)]
pub struct ResourceDefaults {
    pub attrs: Vec<KeyValue>,
}

impl ResourceDefaults {
    pub fn new(hostname: &str) -> Self {
        Self::with_attributes(hostname, &Default::default())
    }

    /// Defaults plus the configured resource attributes (`OTEL_RESOURCE_ATTRIBUTES`,
    /// `OTEL_SERVICE_NAME`), which replace vigil's own defaults of the same key.
    pub fn with_attributes(
        hostname: &str,
        extra: &std::collections::BTreeMap<String, String>,
    ) -> Self {
        let mut attrs = vec![
            KeyValue::str("service.name", SERVICE_NAME),
            KeyValue::str("service.version", env!("CARGO_PKG_VERSION")),
        ];
        if !hostname.is_empty() {
            attrs.push(KeyValue::str("host.name", hostname));
        }
        for (k, v) in extra {
            attrs.retain(|a| &a.key != k);
            attrs.push(KeyValue::str(k, v));
        }
        ResourceDefaults { attrs }
    }
}

/// An attribute value, borrowed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Val<'a> {
    Str(&'a str),
    I64(i64),
    F64(f64),
    Bool(bool),
    StrArray(&'a [String]),
    /// A string array held as NUL-terminated items in one string (a process's arguments, as
    /// /proc/PID/cmdline has them): written as an array without building one.
    Args(&'a str),
}

/// The items of a [`Val::Args`] string.
pub fn args(s: &str) -> impl Iterator<Item = &str> {
    s.strip_suffix('\0')
        .unwrap_or(s)
        .split('\0')
        .filter(|_| !s.is_empty())
}

impl<'a> From<&'a AttrValue> for Val<'a> {
    fn from(v: &'a AttrValue) -> Self {
        match v {
            AttrValue::Str(s) => Val::Str(s),
            AttrValue::I64(i) => Val::I64(*i),
            AttrValue::F64(f) => Val::F64(*f),
            AttrValue::Bool(b) => Val::Bool(*b),
            AttrValue::StrArray(a) => Val::StrArray(a),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Attr<'a> {
    pub key: &'a str,
    pub val: Val<'a>,
}

/// A list of attributes: a record's own key/values, or fixed ones built for it here.
#[derive(Debug, Clone, Copy)]
pub enum Attrs<'a> {
    Kv(&'a [KeyValue]),
    Fixed(&'a [Attr<'a>]),
}

impl<'a> Attrs<'a> {
    pub const NONE: Attrs<'static> = Attrs::Fixed(&[]);

    pub fn for_each(&self, mut f: impl FnMut(Attr<'a>)) {
        match *self {
            Attrs::Kv(kvs) => kvs.iter().for_each(|kv| {
                f(Attr {
                    key: &kv.key,
                    val: (&kv.value).into(),
                })
            }),
            Attrs::Fixed(a) => a.iter().for_each(|a| f(*a)),
        }
    }

    pub fn has(&self, key: &str) -> bool {
        match *self {
            Attrs::Kv(kvs) => kvs.iter().any(|kv| kv.key == key),
            Attrs::Fixed(a) => a.iter().any(|a| a.key == key),
        }
    }
}

/// A resource: the record's attributes, then the defaults it does not set.
#[derive(Debug, Clone, Copy)]
pub struct Resource<'a> {
    pub own: Attrs<'a>,
    pub defaults: &'a ResourceDefaults,
}

impl<'a> Resource<'a> {
    pub fn for_each(&self, mut f: impl FnMut(Attr<'a>)) {
        self.own.for_each(&mut f);
        for d in &self.defaults.attrs {
            if !self.own.has(&d.key) {
                f(Attr {
                    key: &d.key,
                    val: (&d.value).into(),
                });
            }
        }
    }
}

/// One metric with one number data point.
#[derive(Debug, Clone, Copy)]
pub struct Point<'a> {
    pub name: &'a str,
    pub unit: &'a str,
    pub kind: MetricKind,
    pub start_time_unix_nano: u64,
    pub time_unix_nano: u64,
    pub value: MetricValue,
    pub attrs: Attrs<'a>,
}

impl<'a> From<&'a Metric> for Point<'a> {
    fn from(m: &'a Metric) -> Self {
        Point {
            name: &m.name,
            unit: &m.unit,
            kind: m.kind,
            start_time_unix_nano: m.start_time_unix_nano,
            time_unix_nano: m.time_unix_nano,
            value: m.value,
            attrs: Attrs::Kv(&m.attributes),
        }
    }
}

/// What a record is, for a writer (`'a`: the record's data, `'i`: the point iterator).
pub enum View<'a, 'i> {
    Metrics {
        resource: Resource<'a>,
        points: &'i mut dyn Iterator<Item = Point<'a>>,
    },
    Log {
        resource: Resource<'a>,
        log: &'a LogRecord,
    },
}

/// A fixed attribute list of one value.
macro_rules! one {
    ($k:expr, $v:expr) => {
        &[Attr {
            key: $k,
            val: Val::Str($v),
        }]
    };
}
const CPU_USER: &[Attr<'static>] = one!("cpu.mode", "user");
const CPU_SYSTEM: &[Attr<'static>] = one!("cpu.mode", "system");
const FAULT_MINOR: &[Attr<'static>] = one!("system.paging.fault.type", "minor");
const FAULT_MAJOR: &[Attr<'static>] = one!("system.paging.fault.type", "major");
const SWITCH_VOLUNTARY: &[Attr<'static>] = one!("process.context_switch.type", "voluntary");
const SWITCH_INVOLUNTARY: &[Attr<'static>] = one!("process.context_switch.type", "involuntary");
const DISK_READ: &[Attr<'static>] = one!("disk.io.direction", "read");
const DISK_WRITE: &[Attr<'static>] = one!("disk.io.direction", "write");

/// The conventions' `process.state` of a /proc/PID/stat state letter: `R` running, `T`/`t`
/// stopped, `Z`/`X` defunct, every other (`S`, `D`, `I`, ...) sleeping.
pub fn process_state(s: u8) -> &'static str {
    match s {
        b'R' => "running",
        b'T' | b't' => "stopped",
        b'Z' | b'X' | b'x' => "defunct",
        _ => "sleeping",
    }
}

fn i(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Nanoseconds since the epoch as RFC 3339 UTC with milliseconds
/// (`2024-05-01T12:00:00.250Z`), written into `buf` (`process.creation.time`).
pub fn rfc3339(unix_nano: u64, buf: &mut [u8; 24]) -> &str {
    let secs = unix_nano / 1_000_000_000;
    let ms = (unix_nano / 1_000_000) % 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    // Written digit by digit: through `format_args!` this was ≈ 5 % of the shipper's CPU
    // per process record.
    let fields: [(u64, usize); 7] = [
        (y.clamp(0, 9999) as u64, 4),
        (m as u64, 2),
        (d as u64, 2),
        (rem / 3600, 2),
        (rem / 60 % 60, 2),
        (rem % 60, 2),
        (ms, 3),
    ];
    let mut at = 0;
    for ((mut v, width), sep) in fields.into_iter().zip(*b"--T::.Z") {
        for i in (at..at + width).rev() {
            buf[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
        buf[at + width] = sep;
        at += width + 1;
    }
    std::str::from_utf8(&buf[..]).unwrap_or("")
}

/// Most resource attributes of a process record.
pub const MAX_PROCESS_ATTRS: usize = 22;

/// An attribute slot before it is filled.
pub const BLANK: Attr<'static> = Attr {
    key: "",
    val: Val::I64(0),
};

/// The resource attributes of a process record (host.name comes from the defaults), whatever
/// holds its strings: the `process.*` conventions, and the container / Kubernetes ones when
/// known, each unknown (empty) string left out. `created` is the creation time as text (empty:
/// left out too). No `process.command_line`: the conventions say not to set it when it has to
/// be assembled (here it would be, from the NUL-separated /proc/PID/cmdline), and to send
/// `process.command_args` instead.
pub fn process_resource<'a, S: AsRef<str>>(
    p: &'a ProcessRecord<S>,
    created: &'a str,
    out: &mut [Attr<'a>; MAX_PROCESS_ATTRS],
) -> usize {
    let mut n = 0;
    let mut push = |key: &'static str, val: Val<'a>| {
        let skip = matches!(val, Val::Str(s) | Val::Args(s) if s.is_empty());
        if !skip && n < MAX_PROCESS_ATTRS {
            out[n] = Attr { key, val };
            n += 1;
        }
    };
    push("process.pid", Val::I64(p.pid.into()));
    push("process.parent_pid", Val::I64(p.ppid.into()));
    push(
        "process.executable.name",
        Val::Str(p.executable_name.as_ref()),
    );
    push(
        "process.executable.path",
        Val::Str(p.executable_path.as_ref()),
    );
    push(
        "process.command",
        Val::Str(args(p.command_args.as_ref()).next().unwrap_or("")),
    );
    push("process.command_args", Val::Args(p.command_args.as_ref()));
    push("process.owner", Val::Str(p.user_name.as_ref()));
    push("process.user.name", Val::Str(p.user_name.as_ref()));
    push("process.user.id", Val::I64(p.uid.into()));
    push("vigil.process.group.name", Val::Str(p.group_name.as_ref()));
    push("vigil.process.group.id", Val::I64(p.gid.into()));
    push("process.state", Val::Str(process_state(p.state)));
    push("process.creation.time", Val::Str(created));
    push("container.id", Val::Str(p.container_id.as_ref()));
    push("k8s.pod.uid", Val::Str(p.k8s_pod_uid.as_ref()));
    push("k8s.namespace.name", Val::Str(p.k8s_namespace.as_ref()));
    push("k8s.pod.name", Val::Str(p.k8s_pod_name.as_ref()));
    push(
        "k8s.container.name",
        Val::Str(p.k8s_container_name.as_ref()),
    );
    n
}

/// One of the metrics a process record may have: everything but the values and times.
#[derive(Debug, Clone, Copy)]
pub struct ProcessSlot {
    pub name: &'static str,
    pub unit: &'static str,
    pub kind: MetricKind,
    pub attrs: &'static [Attr<'static>],
    /// Its bit of [`ProcessRecord::unchanged`] (0: never marked, the uptime).
    pub field: u16,
}

const fn slot(
    name: &'static str,
    unit: &'static str,
    kind: MetricKind,
    attrs: &'static [Attr<'static>],
    field: u16,
) -> ProcessSlot {
    ProcessSlot {
        name,
        unit,
        kind,
        attrs,
        field,
    }
}

const COUNTER: MetricKind = MetricKind::Sum { monotonic: true };
const UPDOWN: MetricKind = MetricKind::Sum { monotonic: false };

/// The `process.*` metrics of a process record, in their fixed order; [`process_values`]
/// gives each its value (or none).
pub const PROCESS_SLOTS: [ProcessSlot; 16] = {
    use vigil_ipc_proto::process_field as f;
    [
        slot("process.cpu.time", "s", COUNTER, CPU_USER, f::CPU_USER),
        slot("process.cpu.time", "s", COUNTER, CPU_SYSTEM, f::CPU_SYSTEM),
        slot("process.memory.usage", "By", UPDOWN, &[], f::MEMORY_RSS),
        slot(
            "process.memory.virtual",
            "By",
            UPDOWN,
            &[],
            f::MEMORY_VIRTUAL,
        ),
        slot("process.thread.count", "{thread}", UPDOWN, &[], f::THREADS),
        slot("process.uptime", "s", MetricKind::Gauge, &[], 0),
        slot(
            "process.unix.file_descriptor.count",
            "{file_descriptor}",
            UPDOWN,
            &[],
            f::OPEN_FDS,
        ),
        slot(
            "process.linux.socket.count",
            "{socket}",
            UPDOWN,
            &[],
            f::SOCKETS,
        ),
        slot(
            "process.paging.faults",
            "{fault}",
            COUNTER,
            FAULT_MINOR,
            f::MINOR_FAULTS,
        ),
        slot(
            "process.paging.faults",
            "{fault}",
            COUNTER,
            FAULT_MAJOR,
            f::MAJOR_FAULTS,
        ),
        slot(
            "process.context_switches",
            "{context_switch}",
            COUNTER,
            SWITCH_VOLUNTARY,
            f::VOLUNTARY_SWITCHES,
        ),
        slot(
            "process.context_switches",
            "{context_switch}",
            COUNTER,
            SWITCH_INVOLUNTARY,
            f::INVOLUNTARY_SWITCHES,
        ),
        slot(
            "process.disk.io",
            "By",
            COUNTER,
            DISK_READ,
            f::IO_READ_BYTES,
        ),
        slot(
            "process.disk.io",
            "By",
            COUNTER,
            DISK_WRITE,
            f::IO_WRITE_BYTES,
        ),
        slot(
            "process.disk.operations",
            "{operation}",
            COUNTER,
            DISK_READ,
            f::IO_READ_OPS,
        ),
        slot(
            "process.disk.operations",
            "{operation}",
            COUNTER,
            DISK_WRITE,
            f::IO_WRITE_OPS,
        ),
    ]
};

/// The value of each of [`PROCESS_SLOTS`] for a process record: the number its `field` names
/// ([`ProcessRecord::numbers`], so a slot's value and its bit of `unchanged` are one), the
/// uptime for the slot without one; what was not read (fd and socket counts, context
/// switches, disk I/O) is none. Each slot's value is always of the same variant (its unit `s`:
/// nanoseconds as `F64` seconds; counts as `I64`). All of them, marked unchanged or not: what
/// a store of latest values takes.
pub fn process_values<S>(p: &ProcessRecord<S>) -> [Option<MetricValue>; 16] {
    let numbers = p.numbers();
    let uptime = p.time_unix_nano.saturating_sub(p.start_time_unix_nano);
    PROCESS_SLOTS.map(|s| {
        let v = match s.field {
            0 => Some(uptime),
            bit => numbers[bit.trailing_zeros() as usize],
        }?;
        Some(if s.unit == "s" {
            MetricValue::F64(v as f64 / 1e9)
        } else {
            MetricValue::I64(i(v))
        })
    })
}

/// [`process_values`] without those the record marks unchanged: what the exporters send.
pub fn exported_values<S>(p: &ProcessRecord<S>) -> [Option<MetricValue>; 16] {
    let mut values = process_values(p);
    for (v, s) in values.iter_mut().zip(&PROCESS_SLOTS) {
        if p.unchanged & s.field != 0 {
            *v = None;
        }
    }
    values
}

/// The `process.*` metrics of a process record, in a fixed order; what was not read (fd and
/// socket counts, context switches, disk I/O) is left out. All of them: see
/// [`exported_points`] for what the exporters send.
pub fn process_points<'a, S>(p: &'a ProcessRecord<S>) -> impl Iterator<Item = Point<'a>> + 'a {
    points_of(p, process_values(p))
}

/// [`process_points`] without those the record marks unchanged.
pub fn exported_points<'a, S>(p: &'a ProcessRecord<S>) -> impl Iterator<Item = Point<'a>> + 'a {
    points_of(p, exported_values(p))
}

fn points_of<'a, S>(
    p: &'a ProcessRecord<S>,
    values: [Option<MetricValue>; 16],
) -> impl Iterator<Item = Point<'a>> + 'a {
    let (start, time) = (p.start_time_unix_nano, p.time_unix_nano);
    PROCESS_SLOTS.iter().zip(values).filter_map(move |(s, v)| {
        Some(Point {
            name: s.name,
            unit: s.unit,
            kind: s.kind,
            start_time_unix_nano: start,
            time_unix_nano: time,
            value: v?,
            attrs: Attrs::Fixed(s.attrs),
        })
    })
}

/// Call `f` with the view of `r`.
pub fn with_view<T>(
    r: RecordRef<'_>,
    d: &ResourceDefaults,
    f: impl FnOnce(View<'_, '_>) -> T,
) -> T {
    match r {
        RecordRef::Metrics { resource, metrics } => {
            let mut points = metrics.iter().map(Point::from);
            f(View::Metrics {
                resource: Resource {
                    own: Attrs::Kv(resource),
                    defaults: d,
                },
                points: &mut points,
            })
        }
        RecordRef::Log { resource, log } => f(View::Log {
            resource: Resource {
                own: Attrs::Kv(resource),
                defaults: d,
            },
            log,
        }),
        // No points, no resource: nothing is written for it.
        RecordRef::ProcessesUnchanged { .. } => f(View::Metrics {
            resource: Resource {
                own: Attrs::Kv(&[]),
                defaults: d,
            },
            points: &mut std::iter::empty(),
        }),
        RecordRef::Process(p) => {
            let mut buf = [0u8; 24];
            let created = rfc3339(p.start_time_unix_nano, &mut buf);
            let mut attrs = [BLANK; MAX_PROCESS_ATTRS];
            let n = process_resource(p, created, &mut attrs);
            let mut points = exported_points(p);
            f(View::Metrics {
                resource: Resource {
                    own: Attrs::Fixed(&attrs[..n]),
                    defaults: d,
                },
                points: &mut points,
            })
        }
    }
}

/// Whether a record goes to `/v1/metrics` (else `/v1/logs`), when it is exported at all.
pub fn is_metrics(r: RecordRef<'_>) -> bool {
    !matches!(r, RecordRef::Log { .. })
}

/// Whether a record becomes data points or log records: not a list of unchanged processes
/// (only the Prometheus store takes those, to keep the processes alive).
pub fn is_exported(r: RecordRef<'_>) -> bool {
    !matches!(r, RecordRef::ProcessesUnchanged { .. })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use vigil_ipc_proto::Record;

    pub fn process() -> ProcessRecord {
        ProcessRecord {
            time_unix_nano: 2_000_000_000_000,
            start_time_unix_nano: 1_000_000_000_000,
            pid: 4242,
            ppid: 1,
            uid: 1000,
            gid: 100,
            state: b'S',
            threads: 3,
            cpu_user_ns: 1_500_000_000,
            cpu_system_ns: 250_000_000,
            memory_rss_bytes: 1 << 20,
            memory_virtual_bytes: 1 << 30,
            open_fds: Some(12),
            sockets: None,
            minor_faults: 10,
            major_faults: 1,
            executable_name: "postgres".into(),
            command_args: "postgres\0-D\0/var/lib/pg\0\"x\"\0".into(),
            user_name: "alice".into(),
            group_name: "users".into(),
            ..ProcessRecord::default()
        }
    }

    /// A list of unchanged processes becomes nothing in either output, beside a record that
    /// does become something.
    #[test]
    fn unchanged_processes_are_not_exported() {
        let d = ResourceDefaults::new("h");
        let u = Record::ProcessesUnchanged {
            time_unix_nano: 1,
            pids: vec![1, 2],
        };
        let p = Record::Process(Box::new(process()));
        let (u, p) = (u.decoded(), p.decoded());
        let mut out = Vec::new();
        assert_eq!(pb::metrics_request([u.borrowed()], &d, &mut out), 0);
        assert_eq!(pb::logs_request([u.borrowed()], &d, &mut out), 0);
        assert!(out.is_empty());
        let mut alone = Vec::new();
        pb::metrics_request([p.borrowed()], &d, &mut alone);
        pb::metrics_request([u.borrowed(), p.borrowed(), u.borrowed()], &d, &mut out);
        assert_eq!(out, alone);
        out.clear();
        json::write_record(u.borrowed(), &d, &mut out);
        assert!(out.is_empty());
        assert!(is_metrics(u.borrowed()) && !is_exported(u.borrowed()));
    }

    /// Every number a record can mark is one slot's; a marked one is left out of what the
    /// exporters write and kept in what a store takes; the uptime is never marked.
    #[test]
    fn numbers_marked_unchanged_are_not_exported() {
        let bits: Vec<u16> = PROCESS_SLOTS.iter().map(|s| s.field).collect();
        for i in 0..vigil_ipc_proto::process_field::COUNT {
            assert_eq!(bits.iter().filter(|&&b| b == 1 << i).count(), 1, "bit {i}");
        }
        let mut p = process();
        p.io = Some(vigil_ipc_proto::ProcessIo::default());
        /// Name and attribute values of each point.
        fn names<'a>(pts: impl Iterator<Item = Point<'a>>) -> Vec<String> {
            pts.map(|pt| {
                let mut s = pt.name.to_owned();
                pt.attrs.for_each(|a| s += &format!(" {:?}", a.val));
                s
            })
            .collect()
        }
        let all = names(process_points(&p));
        assert_eq!(names(exported_points(&p)), all);
        p.unchanged = vigil_ipc_proto::process_field::CPU_USER
            | vigil_ipc_proto::process_field::THREADS
            | vigil_ipc_proto::process_field::IO_WRITE_OPS;
        let sent = names(exported_points(&p));
        assert_eq!(sent.len(), all.len() - 3);
        let mut want = all.clone();
        want.retain(|n| {
            !n.starts_with("process.thread.count")
                && ![all[0].as_str(), all[all.len() - 1].as_str()].contains(&n.as_str())
        });
        assert_eq!(
            sent, want,
            "all but the user time, threads and write operations"
        );
        assert_eq!(names(process_points(&p)), all, "a store takes all");
        p.unchanged = u16::MAX;
        assert_eq!(names(exported_points(&p)), ["process.uptime"]);
    }

    #[test]
    fn process_view_follows_the_semantic_conventions() {
        let d = ResourceDefaults::new("h");
        let r = Record::Process(Box::new(process()));
        with_view(r.decoded().borrowed(), &d, |v| {
            let View::Metrics { resource, points } = v else {
                panic!("metrics")
            };
            let mut keys = Vec::new();
            resource.for_each(|a| keys.push((a.key.to_string(), a.val)));
            assert!(keys.contains(&("process.pid".into(), Val::I64(4242))));
            assert!(keys.contains(&("process.owner".into(), Val::Str("alice"))));
            assert!(keys.contains(&("process.state".into(), Val::Str("sleeping"))));
            assert!(keys.contains(&("process.command".into(), Val::Str("postgres"))));
            // Assembled from the arguments, so not set (the conventions): command_args is.
            assert!(!keys.iter().any(|(k, _)| k == "process.command_line"));
            assert!(keys.contains(&(
                "process.command_args".into(),
                Val::Args("postgres\0-D\0/var/lib/pg\0\"x\"\0")
            )));
            assert!(keys.contains(&(
                "process.creation.time".into(),
                Val::Str("1970-01-01T00:16:40.000Z")
            )));
            assert!(keys.contains(&("host.name".into(), Val::Str("h"))));
            assert!(keys.contains(&("service.name".into(), Val::Str("vigil"))));
            // Unknown strings are left out, not sent empty.
            assert!(
                !keys
                    .iter()
                    .any(|(k, _)| k == "process.executable.path" || k == "container.id")
            );
            let pts: Vec<Point> = points.collect();
            let names: Vec<&str> = pts.iter().map(|p| p.name).collect();
            assert_eq!(
                names,
                [
                    "process.cpu.time",
                    "process.cpu.time",
                    "process.memory.usage",
                    "process.memory.virtual",
                    "process.thread.count",
                    "process.uptime",
                    "process.unix.file_descriptor.count",
                    "process.paging.faults",
                    "process.paging.faults",
                ]
            );
            assert_eq!(pts[0].value, MetricValue::F64(1.5));
            assert_eq!(pts[1].value, MetricValue::F64(0.25));
            assert_eq!(pts[5].value, MetricValue::F64(1000.0));
            assert!(matches!(pts[0].kind, MetricKind::Sum { monotonic: true }));
            assert!(matches!(pts[2].kind, MetricKind::Sum { monotonic: false }));
            assert_eq!(pts[7].value, MetricValue::I64(10));
        });
        assert_eq!(process_state(0), "sleeping");
        assert_eq!(process_state(b'Z'), "defunct");
        assert_eq!(args("a\0b c\0").collect::<Vec<_>>(), ["a", "b c"]);
        assert_eq!(args("").count(), 0);
    }

    #[test]
    fn creation_time_as_rfc3339() {
        let mut b = [0u8; 24];
        assert_eq!(rfc3339(0, &mut b), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            rfc3339(1_709_251_199_999_000_000, &mut b),
            "2024-02-29T23:59:59.999Z"
        );
        assert_eq!(
            rfc3339(951_782_400_000_000_000, &mut b),
            "2000-02-29T00:00:00.000Z"
        );
        assert_eq!(rfc3339(u64::MAX, &mut b).len(), 24);
    }
}
