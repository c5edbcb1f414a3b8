//! Records → what the exporters write, through one borrowed view.
//!
//! Every journal record is seen as a resource (its attributes plus [`ResourceDefaults`]) with
//! either metric points or one log record. A `Record::Metrics` lends its own key/values; a
//! compact `Record::Process` is expanded here, once, into the OpenTelemetry `process.*`
//! semantic conventions (names, units, attribute keys are `'static`). The two writers, JSON
//! lines ([`json`]) and OTLP protobuf ([`pb`]), walk the view; neither builds owned
//! intermediate messages, so shipping a record allocates nothing per attribute or point.

pub mod json;
pub mod pb;

use vigil_ipc_proto::{
    AttrValue, KeyValue, LogRecord, Metric, MetricKind, MetricValue, ProcessRecord, Record,
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

const CPU_USER: &[Attr<'static>] = &[Attr {
    key: "cpu.mode",
    val: Val::Str("user"),
}];
const CPU_SYSTEM: &[Attr<'static>] = &[Attr {
    key: "cpu.mode",
    val: Val::Str("system"),
}];

/// `R`, `S`, `D`, ... as text without allocating (non-ASCII states become `?`).
fn state_str(s: &u8) -> &str {
    if s.is_ascii_graphic() {
        std::str::from_utf8(std::slice::from_ref(s)).unwrap_or("?")
    } else {
        "?"
    }
}

fn i(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The `process.*` resource attributes of a process record (host.name comes from the
/// defaults), whatever holds its strings.
pub fn process_resource<S: AsRef<str>>(p: &ProcessRecord<S>) -> [Attr<'_>; 11] {
    [
        Attr {
            key: "process.pid",
            val: Val::I64(p.pid.into()),
        },
        Attr {
            key: "process.parent_pid",
            val: Val::I64(p.ppid.into()),
        },
        Attr {
            key: "process.executable.name",
            val: Val::Str(p.executable_name.as_ref()),
        },
        Attr {
            key: "process.command_line",
            val: Val::Str(p.command_line.as_ref()),
        },
        Attr {
            key: "process.owner",
            val: Val::Str(p.user_name.as_ref()),
        },
        Attr {
            key: "process.user.name",
            val: Val::Str(p.user_name.as_ref()),
        },
        Attr {
            key: "process.user.id",
            val: Val::I64(p.uid.into()),
        },
        Attr {
            key: "process.group.name",
            val: Val::Str(p.group_name.as_ref()),
        },
        Attr {
            key: "process.group.id",
            val: Val::I64(p.gid.into()),
        },
        Attr {
            key: "process.linux.state",
            val: Val::Str(state_str(&p.state)),
        },
        Attr {
            key: "process.start_time_unix_nano",
            val: Val::I64(i(p.start_time_unix_nano)),
        },
    ]
}

/// The `process.*` metrics of a process record, in a fixed order; fd and socket counts only
/// when they were counted.
pub fn process_points<'a, S>(p: &'a ProcessRecord<S>) -> impl Iterator<Item = Point<'a>> + 'a {
    let sum: Point<'a> = Point {
        name: "process.cpu.time",
        unit: "s",
        kind: MetricKind::Sum { monotonic: true },
        start_time_unix_nano: p.start_time_unix_nano,
        time_unix_nano: p.time_unix_nano,
        value: MetricValue::F64(p.cpu_user_ns as f64 / 1e9),
        attrs: Attrs::Fixed(CPU_USER),
    };
    let gauge = |name, unit, value| Point {
        name,
        unit,
        kind: MetricKind::Gauge,
        attrs: Attrs::NONE,
        value,
        ..sum
    };
    let uptime = p.time_unix_nano.saturating_sub(p.start_time_unix_nano) as f64 / 1e9;
    [
        Some(sum),
        Some(Point {
            value: MetricValue::F64(p.cpu_system_ns as f64 / 1e9),
            attrs: Attrs::Fixed(CPU_SYSTEM),
            ..sum
        }),
        Some(gauge(
            "process.memory.usage",
            "By",
            MetricValue::I64(i(p.memory_rss_bytes)),
        )),
        Some(gauge(
            "process.memory.virtual",
            "By",
            MetricValue::I64(i(p.memory_virtual_bytes)),
        )),
        Some(gauge(
            "process.thread.count",
            "{thread}",
            MetricValue::I64(p.threads.into()),
        )),
        Some(gauge("process.uptime", "s", MetricValue::F64(uptime))),
        p.open_fds.map(|n| {
            gauge(
                "process.open_file_descriptor.count",
                "{file_descriptor}",
                MetricValue::I64(n.into()),
            )
        }),
        p.sockets.map(|n| {
            gauge(
                "process.linux.socket.count",
                "{socket}",
                MetricValue::I64(n.into()),
            )
        }),
    ]
    .into_iter()
    .flatten()
}

/// Call `f` with the view of `r`.
pub fn with_view<T>(r: &Record, d: &ResourceDefaults, f: impl FnOnce(View<'_, '_>) -> T) -> T {
    match r {
        Record::Metrics { resource, metrics } => {
            let mut points = metrics.iter().map(Point::from);
            f(View::Metrics {
                resource: Resource {
                    own: Attrs::Kv(resource),
                    defaults: d,
                },
                points: &mut points,
            })
        }
        Record::Log { resource, log } => f(View::Log {
            resource: Resource {
                own: Attrs::Kv(resource),
                defaults: d,
            },
            log,
        }),
        Record::Process(p) => {
            let attrs = process_resource(p);
            let mut points = process_points(p);
            f(View::Metrics {
                resource: Resource {
                    own: Attrs::Fixed(&attrs),
                    defaults: d,
                },
                points: &mut points,
            })
        }
    }
}

/// Whether a record goes to `/v1/metrics` (else `/v1/logs`).
pub fn is_metrics(r: &Record) -> bool {
    !matches!(r, Record::Log { .. })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

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
            executable_name: "postgres".into(),
            command_line: "postgres -D /var/lib/pg \"x\"".into(),
            user_name: "alice".into(),
            group_name: "users".into(),
        }
    }

    #[test]
    fn process_view_follows_the_semantic_conventions() {
        let d = ResourceDefaults::new("h");
        let r = Record::Process(process());
        with_view(&r, &d, |v| {
            let View::Metrics { resource, points } = v else {
                panic!("metrics")
            };
            let mut keys = Vec::new();
            resource.for_each(|a| keys.push((a.key.to_string(), a.val)));
            assert!(keys.contains(&("process.pid".into(), Val::I64(4242))));
            assert!(keys.contains(&("process.owner".into(), Val::Str("alice"))));
            assert!(keys.contains(&("process.linux.state".into(), Val::Str("S"))));
            assert!(keys.contains(&("host.name".into(), Val::Str("h"))));
            assert!(keys.contains(&("service.name".into(), Val::Str("vigil"))));
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
                    "process.open_file_descriptor.count"
                ]
            );
            assert_eq!(pts[0].value, MetricValue::F64(1.5));
            assert_eq!(pts[1].value, MetricValue::F64(0.25));
            assert_eq!(pts[5].value, MetricValue::F64(1000.0));
            assert!(matches!(pts[0].kind, MetricKind::Sum { monotonic: true }));
        });
        assert_eq!(state_str(&0), "?");
    }
}
