//! OTLP protobuf (`ExportMetricsServiceRequest`, `ExportLogsServiceRequest`) written straight
//! from the view into one buffer.
//!
//! Why not prost with opentelemetry-proto's message types: those own every string, so one
//! process record becomes ~40 allocations and copies before a byte is encoded; the shipper's
//! bench (`cargo bench -p vigil-shipper --bench shipper`, "encode" section) measures both on
//! the same records. opentelemetry-proto stays the reference: the tests decode what this
//! writes with its prost types.
//!
//! Nested messages are length-prefixed: the length is written as one byte before the body and
//! widened (the body moved right) in the rare case it is 128 bytes or more, so every length is
//! the minimal varint, as any protobuf encoder writes it.

use std::collections::HashMap;

use vigil_ipc_proto::{LogRecord, MetricKind, MetricValue, ProcessRecord, RecordRef};

use super::cache::{ResourceCache, ResourceFormat, STATE_KEY};
use super::{Attr, Attrs, Point, Resource, ResourceDefaults, SCOPE_NAME, SCOPE_VERSION, Val};
use super::{PROCESS_SLOTS, View, exported_values, with_view};

const VARINT: u8 = 0;
const I64: u8 = 1;
const LEN: u8 = 2;

/// AggregationTemporality CUMULATIVE.
const CUMULATIVE: u64 = 2;

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn tag(out: &mut Vec<u8>, field: u32, wire: u8) {
    varint(out, (u64::from(field) << 3) | u64::from(wire));
}

fn uint(out: &mut Vec<u8>, field: u32, v: u64) {
    tag(out, field, VARINT);
    varint(out, v);
}

fn fixed64(out: &mut Vec<u8>, field: u32, v: u64) {
    tag(out, field, I64);
    out.extend_from_slice(&v.to_le_bytes());
}

fn bytes(out: &mut Vec<u8>, field: u32, b: &[u8]) {
    tag(out, field, LEN);
    varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// A length-delimited sub-message whose body `f` writes.
fn message(out: &mut Vec<u8>, field: u32, f: impl FnOnce(&mut Vec<u8>)) {
    tag(out, field, LEN);
    out.push(0);
    let start = out.len();
    f(out);
    let len = out.len() - start;
    if len < 0x80 {
        out[start - 1] = len as u8;
        return;
    }
    let mut prefix = Vec::with_capacity(10);
    varint(&mut prefix, len as u64);
    let extra = prefix.len() - 1;
    out.resize(out.len() + extra, 0);
    out.copy_within(start..start + len, start + extra);
    out[start - 1..start - 1 + prefix.len()].copy_from_slice(&prefix);
}

fn any_value(out: &mut Vec<u8>, v: Val<'_>) {
    match v {
        Val::Str(s) => bytes(out, 1, s.as_bytes()),
        Val::Bool(b) => uint(out, 2, u64::from(b)),
        // int64: negative numbers as their 64-bit two's complement (10-byte varint).
        Val::I64(i) => uint(out, 3, i as u64),
        Val::F64(f) => {
            tag(out, 4, I64);
            out.extend_from_slice(&f.to_le_bytes());
        }
        Val::StrArray(a) => array(out, a.iter().map(String::as_str)),
        Val::Args(a) => array(out, super::args(a)),
    }
}

fn array<'s>(out: &mut Vec<u8>, items: impl Iterator<Item = &'s str>) {
    message(out, 5, |out| {
        for s in items {
            message(out, 1, |out| bytes(out, 1, s.as_bytes()));
        }
    });
}

fn key_value(out: &mut Vec<u8>, field: u32, a: Attr<'_>) {
    message(out, field, |out| {
        bytes(out, 1, a.key.as_bytes());
        message(out, 2, |out| any_value(out, a.val));
    });
}

fn attributes(out: &mut Vec<u8>, field: u32, a: Attrs<'_>) {
    a.for_each(|x| key_value(out, field, x));
}

fn resource(out: &mut Vec<u8>, r: Resource<'_>) {
    message(out, 1, |out| r.for_each(|a| key_value(out, 1, a)));
}

fn scope(out: &mut Vec<u8>) {
    message(out, 1, |out| {
        bytes(out, 1, SCOPE_NAME.as_bytes());
        bytes(out, 2, SCOPE_VERSION.as_bytes());
    });
}

fn data_point(out: &mut Vec<u8>, p: &Point<'_>) {
    message(out, 1, |out| {
        fixed64(out, 2, p.start_time_unix_nano);
        fixed64(out, 3, p.time_unix_nano);
        match p.value {
            MetricValue::F64(v) => {
                tag(out, 4, I64);
                out.extend_from_slice(&v.to_le_bytes());
            }
            // sfixed64
            MetricValue::I64(v) => fixed64(out, 6, v as u64),
        }
        attributes(out, 7, p.attrs);
    });
}

fn metric(out: &mut Vec<u8>, p: &Point<'_>) {
    message(out, 2, |out| {
        bytes(out, 1, p.name.as_bytes());
        if !p.unit.is_empty() {
            bytes(out, 3, p.unit.as_bytes());
        }
        match p.kind {
            MetricKind::Gauge => message(out, 5, |out| data_point(out, p)),
            MetricKind::Sum { monotonic } => message(out, 7, |out| {
                data_point(out, p);
                uint(out, 2, CUMULATIVE);
                if monotonic {
                    uint(out, 3, 1);
                }
            }),
        }
    });
}

/// The attributes of a resource (the body of its `Resource` message), for [`ResourceCache`].
pub struct Pb;

impl ResourceFormat for Pb {
    fn write(&self, out: &mut Vec<u8>, r: Resource<'_>) -> Option<(usize, usize)> {
        let mut hole = None;
        r.for_each(|a| {
            let at = out.len();
            key_value(out, 1, a);
            if a.key == STATE_KEY && hole.is_none() {
                hole = Some((at, out.len()));
            }
        });
        hole
    }

    fn state(&self, out: &mut Vec<u8>, value: &str) {
        key_value(
            out,
            1,
            Attr {
                key: STATE_KEY,
                val: Val::Str(value),
            },
        );
    }
}

/// One process metric, encoded with placeholder times and value: all its fields but those
/// three are constant, and those are fixed64, so only they change.
struct Template {
    bytes: Vec<u8>,
    start: usize,
    time: usize,
    value: usize,
}

impl Template {
    /// `None` if the placeholders are not each found once (they are: 8 bytes no name holds).
    fn new(p: Point<'_>) -> Option<Template> {
        const START: u64 = 0x5a17_c0de_0bad_5701;
        const TIME: u64 = 0x5a17_c0de_0bad_5702;
        const VALUE: u64 = 0x5a17_c0de_0bad_5703;
        let p = Point {
            start_time_unix_nano: START,
            time_unix_nano: TIME,
            value: match p.value {
                MetricValue::F64(_) => MetricValue::F64(f64::from_bits(VALUE)),
                MetricValue::I64(_) => MetricValue::I64(VALUE as i64),
            },
            ..p
        };
        let mut bytes = Vec::new();
        metric(&mut bytes, &p);
        let at = |v: u64| {
            let pat = v.to_le_bytes();
            let mut found = bytes.windows(8).enumerate().filter(|(_, w)| *w == pat);
            match (found.next(), found.next()) {
                (Some((i, _)), None) => Some(i),
                _ => None,
            }
        };
        Some(Template {
            start: at(START)?,
            time: at(TIME)?,
            value: at(VALUE)?,
            bytes,
        })
    }

    fn write(&self, out: &mut Vec<u8>, start: u64, time: u64, value: MetricValue) {
        let base = out.len();
        out.extend_from_slice(&self.bytes);
        let value = match value {
            MetricValue::F64(v) => v.to_le_bytes(),
            MetricValue::I64(v) => v.to_le_bytes(),
        };
        for (at, b) in [
            (self.start, start.to_le_bytes()),
            (self.time, time.to_le_bytes()),
            (self.value, value),
        ] {
            out[base + at..base + at + 8].copy_from_slice(&b);
        }
    }
}

/// Bytes of a length-delimited field (a one-byte tag) with a body of `len` bytes.
fn field_len(len: usize) -> usize {
    let mut v = len as u64;
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    1 + n + len
}

/// Writes process records: each one `ResourceMetrics` whose resource comes from a
/// [`ResourceCache`] and whose metrics are [`Template`]s with their numbers filled in; every
/// length is known before its message is written, so nothing is moved. The bytes are exactly
/// those the generic writer ([`resource`], [`metric`]) gives (tested).
pub struct ProcessEncoder {
    pub resources: ResourceCache<Pb>,
    /// Per slot of [`PROCESS_SLOTS`]: the template for an `F64` and for an `I64` value.
    templates: Vec<[Option<Template>; 2]>,
    /// The scope field of a `ScopeMetrics`.
    scope: Vec<u8>,
}

impl Default for ProcessEncoder {
    fn default() -> Self {
        let templates = PROCESS_SLOTS
            .iter()
            .map(|s| {
                [MetricValue::F64(0.0), MetricValue::I64(0)].map(|value| {
                    Template::new(Point {
                        name: s.name,
                        unit: s.unit,
                        kind: s.kind,
                        start_time_unix_nano: 0,
                        time_unix_nano: 0,
                        value,
                        attrs: Attrs::Fixed(s.attrs),
                    })
                })
            })
            .collect();
        let mut scope_field = Vec::new();
        scope(&mut scope_field);
        ProcessEncoder {
            resources: ResourceCache::new(Pb),
            templates,
            scope: scope_field,
        }
    }
}

impl ProcessEncoder {
    /// Append the `ResourceMetrics` (field 1 of a request) of `p`; returns its data points.
    pub fn write<S: AsRef<str>>(
        &mut self,
        out: &mut Vec<u8>,
        p: &ProcessRecord<S>,
        d: &ResourceDefaults,
    ) -> usize {
        let values = exported_values(p);
        let variant = |v: &MetricValue| usize::from(matches!(v, MetricValue::I64(_)));
        let template = |i: usize, v: &MetricValue| self.templates[i][variant(v)].as_ref();
        if values
            .iter()
            .enumerate()
            .any(|(i, v)| v.as_ref().is_some_and(|v| template(i, v).is_none()))
        {
            // No template (cannot happen): the generic writer.
            message(out, 1, |out| {
                let r = self.resources.get(p, d);
                message(out, 1, |out| r.write(out));
                message(out, 2, |out| {
                    out.extend_from_slice(&self.scope);
                    for pt in super::exported_points(p) {
                        metric(out, &pt);
                    }
                });
            });
            return values.iter().flatten().count();
        }
        let metrics: usize = values
            .iter()
            .enumerate()
            .filter_map(|(i, v)| Some(template(i, v.as_ref()?)?.bytes.len()))
            .sum();
        let scope_metrics = self.scope.len() + metrics;
        let r = self.resources.get(p, d);
        tag(out, 1, LEN);
        varint(out, (field_len(r.len()) + field_len(scope_metrics)) as u64);
        tag(out, 1, LEN);
        varint(out, r.len() as u64);
        r.write(out);
        tag(out, 2, LEN);
        varint(out, scope_metrics as u64);
        out.extend_from_slice(&self.scope);
        let mut n = 0;
        for (i, v) in values.into_iter().enumerate() {
            let Some(v) = v else { continue };
            if let Some(t) = self.templates[i][variant(&v)].as_ref() {
                t.write(out, p.start_time_unix_nano, p.time_unix_nano, v);
                n += 1;
            }
        }
        n
    }
}

/// A stable grouping key for the resource of a `Record::Metrics` or `Record::Log` (its
/// postcard bytes); process records are each their own resource.
fn resource_key(r: RecordRef<'_>) -> Option<Vec<u8>> {
    match r {
        RecordRef::Metrics { resource, .. } | RecordRef::Log { resource, .. } => {
            postcard::to_allocvec(resource).ok()
        }
        RecordRef::Process(_) | RecordRef::ProcessesUnchanged { .. } => None,
    }
}

/// Records of one signal in output order, those sharing a resource merged into one group (the
/// collector sends the host's metrics in several records; kernel events share the host's).
/// Process records are each their own resource: no key, no allocation for them.
enum Group<'a> {
    One(RecordRef<'a>),
    Shared(Vec<RecordRef<'a>>),
}

impl<'a> Group<'a> {
    fn records(&self) -> &[RecordRef<'a>] {
        match self {
            Group::One(r) => std::slice::from_ref(r),
            Group::Shared(v) => v,
        }
    }
}

fn groups<'a>(records: impl IntoIterator<Item = RecordRef<'a>>, metrics: bool) -> Vec<Group<'a>> {
    let mut groups: Vec<Group<'a>> = Vec::new();
    let mut by_key: HashMap<Vec<u8>, usize> = HashMap::new();
    for r in records {
        if super::is_metrics(r) != metrics || !super::is_exported(r) {
            continue;
        }
        match resource_key(r) {
            Some(k) => match by_key.get(&k) {
                Some(&i) => {
                    if let Group::Shared(v) = &mut groups[i] {
                        v.push(r);
                    }
                }
                None => {
                    by_key.insert(k, groups.len());
                    groups.push(Group::Shared(vec![r]));
                }
            },
            None => groups.push(Group::One(r)),
        }
    }
    groups
}

/// A request body is handed on in pieces of about this size (at resource boundaries): the
/// exporter compresses each piece as it comes, so the uncompressed request is never whole in
/// memory.
pub const CHUNK: usize = 32 * 1024;

/// Append an `ExportMetricsServiceRequest` of the metric records among `records` to `out`.
/// Returns the number of data points written (0: nothing to send). Nothing kept from one call
/// to the next (an exporter keeps a [`ProcessEncoder`] and calls [`metrics_request_chunked`]).
pub fn metrics_request<'a>(
    records: impl IntoIterator<Item = RecordRef<'a>>,
    d: &ResourceDefaults,
    out: &mut Vec<u8>,
) -> usize {
    metrics_request_chunked(records, d, &mut ProcessEncoder::default(), out, |_| {})
}

/// [`metrics_request`], calling `chunk` with `out` whenever it holds [`CHUNK`] bytes or more
/// and once at the end: the request is the concatenation of what `out` held at each call
/// (`chunk` may take the bytes out). A request's top level is a repeated field, so it may be
/// cut between resources. Process records go through `procs`.
pub fn metrics_request_chunked<'a>(
    records: impl IntoIterator<Item = RecordRef<'a>>,
    d: &ResourceDefaults,
    procs: &mut ProcessEncoder,
    out: &mut Vec<u8>,
    mut chunk: impl FnMut(&mut Vec<u8>),
) -> usize {
    let mut points = 0;
    for group in groups(records, true) {
        if out.len() >= CHUNK {
            chunk(out);
        }
        if let Group::One(RecordRef::Process(p)) = group {
            points += procs.write(out, p, d);
            continue;
        }
        let group = group.records();
        message(out, 1, |out| {
            if let Some(r) = group.first() {
                with_view(*r, d, |v| {
                    if let View::Metrics { resource: res, .. } = v {
                        resource(out, res);
                    }
                });
            }
            message(out, 2, |out| {
                scope(out);
                for r in group {
                    with_view(*r, d, |v| {
                        if let View::Metrics { points: ps, .. } = v {
                            for p in ps {
                                metric(out, &p);
                                points += 1;
                            }
                        }
                    });
                }
            });
        });
    }
    chunk(out);
    points
}

fn log_record(out: &mut Vec<u8>, l: &LogRecord) {
    message(out, 2, |out| {
        fixed64(out, 1, l.time_unix_nano);
        uint(out, 2, u64::from(l.severity_number.min(24)));
        if !l.severity_text.is_empty() {
            bytes(out, 3, l.severity_text.as_bytes());
        }
        message(out, 5, |out| bytes(out, 1, l.body.as_bytes()));
        let own = Attrs::Kv(&l.attributes);
        attributes(out, 6, own);
        // Also as an attribute, for backends that predate the field.
        if !l.event_name.is_empty() && !own.has("event.name") {
            key_value(
                out,
                6,
                Attr {
                    key: "event.name",
                    val: Val::Str(&l.event_name),
                },
            );
        }
        fixed64(out, 11, l.observed_time_unix_nano);
        if !l.event_name.is_empty() {
            bytes(out, 12, l.event_name.as_bytes());
        }
    });
}

/// Append an `ExportLogsServiceRequest` of the log records among `records` to `out`. Returns
/// the number of log records written.
pub fn logs_request<'a>(
    records: impl IntoIterator<Item = RecordRef<'a>>,
    d: &ResourceDefaults,
    out: &mut Vec<u8>,
) -> usize {
    logs_request_chunked(records, d, out, |_| {})
}

/// [`logs_request`] handed on in pieces, as [`metrics_request_chunked`].
pub fn logs_request_chunked<'a>(
    records: impl IntoIterator<Item = RecordRef<'a>>,
    d: &ResourceDefaults,
    out: &mut Vec<u8>,
    mut chunk: impl FnMut(&mut Vec<u8>),
) -> usize {
    let mut n = 0;
    for group in groups(records, false) {
        if out.len() >= CHUNK {
            chunk(out);
        }
        let group = group.records();
        message(out, 1, |out| {
            if let Some(r) = group.first() {
                with_view(*r, d, |v| {
                    if let View::Log { resource: res, .. } = v {
                        resource(out, res);
                    }
                });
            }
            message(out, 2, |out| {
                scope(out);
                for r in group {
                    with_view(*r, d, |v| {
                        if let View::Log { log, .. } = v {
                            log_record(out, log);
                            n += 1;
                        }
                    });
                }
            });
        });
    }
    chunk(out);
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
    use opentelemetry_proto::tonic::common::v1::any_value::Value as AV;
    use opentelemetry_proto::tonic::metrics::v1::metric::Data;
    use opentelemetry_proto::tonic::metrics::v1::number_data_point::Value as NV;
    use prost::Message;
    use vigil_ipc_proto::{AttrValue, KeyValue, Metric, process_field};
    use vigil_ipc_proto::{Decoded, Record};

    fn attr(kvs: &[opentelemetry_proto::tonic::common::v1::KeyValue], k: &str) -> Option<AV> {
        kvs.iter()
            .find(|kv| kv.key == k)
            .and_then(|kv| kv.value.clone())
            .and_then(|v| v.value)
    }

    #[test]
    fn varints_and_long_messages() {
        for v in [0u64, 1, 127, 128, 300, 16_383, 16_384, u64::MAX] {
            let mut b = Vec::new();
            varint(&mut b, v);
            assert_eq!(
                prost::encoding::decode_varint(&mut &b[..]).unwrap(),
                v,
                "{v}"
            );
        }
        // Bodies around the one-byte length limit and far past it.
        for n in [0usize, 1, 126, 127, 128, 129, 16_383, 16_384, 70_000] {
            let s = "x".repeat(n);
            let mut b = Vec::new();
            message(&mut b, 1, |out| bytes(out, 1, s.as_bytes()));
            let any = opentelemetry_proto::tonic::common::v1::ArrayValue::decode(&b[..]).unwrap();
            assert_eq!(any.values[0].value, Some(AV::StringValue(s)), "{n}");
        }
    }

    #[test]
    fn metrics_decode_with_opentelemetry_proto() {
        let d = ResourceDefaults::new("h");
        let host = vec![KeyValue::str("host.name", "h2")];
        let m = |name: &str, v: MetricValue, attrs| Metric {
            name: name.into(),
            unit: "By".into(),
            kind: MetricKind::Gauge,
            start_time_unix_nano: 5,
            time_unix_nano: 6,
            value: v,
            attributes: attrs,
        };
        let records = [
            Record::Metrics {
                resource: host.clone(),
                metrics: vec![m(
                    "system.memory.usage",
                    MetricValue::I64(-3),
                    vec![KeyValue::str("state", "used")],
                )],
            },
            Record::Process(Box::new(crate::convert::tests::process())),
            Record::Metrics {
                resource: host.clone(),
                metrics: vec![m(
                    "system.network.io",
                    MetricValue::F64(2.5),
                    vec![
                        KeyValue {
                            key: "a".into(),
                            value: AttrValue::StrArray(vec!["x".into(), "y".into()]),
                        },
                        KeyValue {
                            key: "b".into(),
                            value: AttrValue::Bool(true),
                        },
                    ],
                )],
            },
        ];
        let mut buf = Vec::new();
        let decoded: Vec<_> = records.iter().map(Record::decoded).collect();
        let n = metrics_request(decoded.iter().map(Decoded::borrowed), &d, &mut buf);
        assert_eq!(n, 2 + 9);
        let req = ExportMetricsServiceRequest::decode(&buf[..]).unwrap();
        assert_eq!(req.resource_metrics.len(), 2, "the host's records merge");
        let host_rm = &req.resource_metrics[0];
        let res = &host_rm.resource.as_ref().unwrap().attributes;
        assert_eq!(attr(res, "host.name"), Some(AV::StringValue("h2".into())));
        assert_eq!(
            attr(res, "service.name"),
            Some(AV::StringValue("vigil".into()))
        );
        let sm = &host_rm.scope_metrics[0];
        assert_eq!(sm.scope.as_ref().unwrap().name, "vigil");
        assert_eq!(sm.metrics.len(), 2);
        let Some(Data::Gauge(g)) = &sm.metrics[0].data else {
            panic!("gauge")
        };
        assert_eq!(g.data_points[0].value, Some(NV::AsInt(-3)));
        assert_eq!(g.data_points[0].start_time_unix_nano, 5);
        assert_eq!(g.data_points[0].time_unix_nano, 6);
        assert_eq!(
            attr(&g.data_points[0].attributes, "state"),
            Some(AV::StringValue("used".into()))
        );
        let Some(Data::Gauge(g)) = &sm.metrics[1].data else {
            panic!("gauge")
        };
        assert_eq!(g.data_points[0].value, Some(NV::AsDouble(2.5)));
        assert_eq!(
            attr(&g.data_points[0].attributes, "b"),
            Some(AV::BoolValue(true))
        );
        let Some(AV::ArrayValue(a)) = attr(&g.data_points[0].attributes, "a") else {
            panic!("array")
        };
        assert_eq!(a.values[1].value, Some(AV::StringValue("y".into())));

        let p = &req.resource_metrics[1];
        let res = &p.resource.as_ref().unwrap().attributes;
        assert_eq!(attr(res, "process.pid"), Some(AV::IntValue(4242)));
        assert_eq!(attr(res, "process.command_line"), None);
        assert_eq!(attr(res, "host.name"), Some(AV::StringValue("h".into())));
        let ms = &p.scope_metrics[0].metrics;
        assert_eq!(ms[0].name, "process.cpu.time");
        assert_eq!(ms[0].unit, "s");
        let Some(Data::Sum(s)) = &ms[0].data else {
            panic!("sum")
        };
        assert!(s.is_monotonic);
        assert_eq!(s.aggregation_temporality, 2);
        assert_eq!(s.data_points[0].value, Some(NV::AsDouble(1.5)));
        assert_eq!(
            attr(&s.data_points[0].attributes, "cpu.mode"),
            Some(AV::StringValue("user".into()))
        );
        assert_eq!(ms[6].name, "process.unix.file_descriptor.count");
        let Some(AV::ArrayValue(a)) = attr(res, "process.command_args") else {
            panic!("command_args array")
        };
        assert_eq!(a.values.len(), 4);
        let mut empty = Vec::new();
        assert_eq!(metrics_request(std::iter::empty(), &d, &mut empty), 0);
        assert!(empty.is_empty());
    }

    /// A process record as the generic writer gives it (no cache, no templates).
    fn generic(r: RecordRef<'_>, d: &ResourceDefaults) -> Vec<u8> {
        let mut out = Vec::new();
        message(&mut out, 1, |out| {
            with_view(r, d, |v| {
                let View::Metrics {
                    resource: res,
                    points,
                } = v
                else {
                    panic!("metrics")
                };
                resource(out, res);
                message(out, 2, |out| {
                    scope(out);
                    for p in points {
                        metric(out, &p);
                    }
                });
            })
        });
        out
    }

    /// The cached encoder writes exactly the generic writer's bytes: on a first sight, on the
    /// same record again (from the cache), with a new state (from the cache), with a changed
    /// resource field (encoded afresh), and for a pid reused by a new process (new start time).
    #[test]
    fn cached_resources_are_the_generic_bytes() {
        use vigil_ipc_proto::ProcessIo;
        let d = ResourceDefaults::with_attributes(
            "h",
            &[("deployment.environment".to_string(), "prod".to_string())].into(),
        );
        let mut enc = ProcessEncoder::default();
        let base = crate::convert::tests::process();
        let mut steps: Vec<(ProcessRecord, (u64, u64))> = Vec::new();
        steps.push((base.clone(), (0, 1)));
        let mut later = base.clone();
        later.time_unix_nano += 10_000_000_000;
        later.cpu_user_ns += 7;
        later.open_fds = None;
        later.voluntary_switches = Some(5);
        later.io = Some(ProcessIo {
            read_bytes: 1,
            write_bytes: 2,
            read_ops: 3,
            write_ops: 4,
        });
        steps.push((later.clone(), (1, 0)));
        for st in [b'R', b'D', b'Z', b'T'] {
            steps.push((
                ProcessRecord {
                    state: st,
                    ..later.clone()
                },
                (1, 0),
            ));
        }
        steps.push((
            ProcessRecord {
                user_name: "bob".into(),
                ..later.clone()
            },
            (0, 1),
        ));
        steps.push((
            ProcessRecord {
                command_args: "postgres\0-D\0/other\0".into(),
                ..later.clone()
            },
            (0, 1),
        ));
        steps.push((
            ProcessRecord {
                ppid: 7,
                container_id: "c0ffee".into(),
                ..later.clone()
            },
            (0, 1),
        ));
        // The pid reused by a new process: a new entry beside the old one.
        steps.push((
            ProcessRecord {
                start_time_unix_nano: base.start_time_unix_nano + 1_000_000_000,
                ..later.clone()
            },
            (0, 1),
        ));
        steps.push((later.clone(), (0, 1)));
        steps.push((later.clone(), (1, 0)));
        // Numbers marked unchanged: left out, the same way by both writers.
        for unchanged in [
            process_field::MEMORY_RSS | process_field::THREADS | process_field::IO_READ_OPS,
            u16::MAX,
        ] {
            steps.push((
                ProcessRecord {
                    unchanged,
                    ..later.clone()
                },
                (1, 0),
            ));
        }
        for (k, (p, (hits, misses))) in steps.into_iter().enumerate() {
            let r = Record::Process(Box::new(p));
            let dec = r.decoded();
            let before = enc.resources.stats;
            let mut out = Vec::new();
            let RecordRef::Process(pr) = dec.borrowed() else {
                panic!("process")
            };
            let n = enc.write(&mut out, pr, &d);
            assert_eq!(n, super::super::exported_points(pr).count());
            let want = generic(dec.borrowed(), &d);
            assert_eq!(out, want, "step {k}");
            let after = enc.resources.stats;
            assert_eq!(
                (after.hits - before.hits, after.misses - before.misses),
                (hits, misses),
                "step {k}"
            );
            // And what a backend decodes: the same request.
            let mut req = Vec::new();
            let mut enc2 = ProcessEncoder::default();
            metrics_request_chunked([dec.borrowed()], &d, &mut enc2, &mut req, |_| {});
            let a = ExportMetricsServiceRequest::decode(&req[..]).unwrap();
            let b = ExportMetricsServiceRequest::decode(&out[..]).unwrap();
            assert_eq!(a, b, "step {k}");
        }
        // Both processes of the reused pid are held: the old start time, and the new one.
        assert_eq!(enc.resources.len(), 2);
    }

    /// Entries of processes no longer seen are dropped after a while; the bytes held follow.
    #[test]
    fn the_cache_forgets_gone_processes() {
        let d = ResourceDefaults::new("h");
        let mut enc = ProcessEncoder::default();
        let mut out = Vec::new();
        let gen_of = |g: u32, i: u32| {
            let mut p = crate::convert::tests::process();
            p.pid = g * 100_000 + i;
            p
        };
        for (g, cycles) in [(0, 4), (1, 16)] {
            for _cycle in 0..cycles {
                for i in 0..500 {
                    let r = Record::Process(Box::new(gen_of(g, i)));
                    let dec = r.decoded();
                    let RecordRef::Process(p) = dec.borrowed() else {
                        panic!()
                    };
                    out.clear();
                    enc.write(&mut out, p, &d);
                }
            }
        }
        // 500 live entries, the first 500 gone; held bytes are those of the live ones.
        let c = &enc.resources;
        assert!(c.stats.expired >= 500, "{:?}", c.stats);
        assert_eq!(c.len(), 500, "{:?}", c.stats);
        let per = c.bytes() / c.len();
        assert!((300..1200).contains(&per), "{per} bytes per entry");
        assert_eq!(c.stats.misses, 1000, "{:?}", c.stats);
    }

    #[test]
    fn logs_decode_with_opentelemetry_proto() {
        let d = ResourceDefaults::new("h");
        let log = |seq: i64| Record::Log {
            resource: vec![KeyValue::str("host.name", "h")],
            log: LogRecord {
                time_unix_nano: 10,
                observed_time_unix_nano: 11,
                severity_number: 200,
                severity_text: "ERROR".into(),
                event_name: "OOMKilling".into(),
                body: "Out of memory: Killed process 12 (python3)".into(),
                attributes: vec![KeyValue::i64("linux.kmsg.seq", seq)],
            },
        };
        let records = [
            log(1),
            Record::Process(Box::new(crate::convert::tests::process())),
            log(-2),
        ];
        let mut buf = Vec::new();
        assert_eq!(
            logs_request(
                records
                    .iter()
                    .map(Record::decoded)
                    .collect::<Vec<_>>()
                    .iter()
                    .map(Decoded::borrowed),
                &d,
                &mut buf
            ),
            2
        );
        let req = ExportLogsServiceRequest::decode(&buf[..]).unwrap();
        assert_eq!(req.resource_logs.len(), 1);
        let lr = &req.resource_logs[0].scope_logs[0].log_records;
        assert_eq!(lr.len(), 2);
        assert_eq!(lr[0].time_unix_nano, 10);
        assert_eq!(lr[0].observed_time_unix_nano, 11);
        assert_eq!(lr[0].severity_number, 24, "clamped to the OTLP range");
        assert_eq!(lr[0].severity_text, "ERROR");
        assert_eq!(lr[0].event_name, "OOMKilling");
        assert_eq!(
            lr[0].body.as_ref().unwrap().value,
            Some(AV::StringValue(
                "Out of memory: Killed process 12 (python3)".into()
            ))
        );
        assert_eq!(
            attr(&lr[0].attributes, "event.name"),
            Some(AV::StringValue("OOMKilling".into()))
        );
        assert_eq!(
            attr(&lr[1].attributes, "linux.kmsg.seq"),
            Some(AV::IntValue(-2))
        );
    }
}
