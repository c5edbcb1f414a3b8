//! JSON lines: one object per metric point and per log record, written straight from the view
//! (strings escaped and numbers formatted by serde_json's own writers).
//!
//! ```text
//! {"type":"metric","name":"process.cpu.time","unit":"s","kind":"sum","monotonic":true,
//!  "value":1.5,"start_time_unix_nano":1,"time_unix_nano":2,"attributes":{"cpu.mode":"user"},
//!  "resource":{"process.pid":4242,...,"host.name":"h"}}
//! {"type":"log","time_unix_nano":3,"observed_time_unix_nano":4,"severity_number":17,
//!  "severity_text":"ERROR","event_name":"OOMKilling","body":"...","attributes":{...},
//!  "resource":{...}}
//! ```

use vigil_ipc_proto::{MetricKind, MetricValue, RecordRef};

use super::cache::{Cached, ResourceCache, ResourceFormat, STATE_KEY};
use super::{Attrs, Point, Resource, ResourceDefaults, Val, View, exported_points, with_view};

fn raw(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(s.as_bytes());
}

fn string(out: &mut Vec<u8>, s: &str) {
    // Writing into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

fn int(out: &mut Vec<u8>, v: impl serde::Serialize) {
    let _ = serde_json::to_writer(&mut *out, &v);
}

/// Finite floats as JSON numbers; NaN and infinities (not JSON) as `null`, like serde_json.
fn float(out: &mut Vec<u8>, v: f64) {
    let _ = serde_json::to_writer(&mut *out, &v);
}

fn value(out: &mut Vec<u8>, v: Val<'_>) {
    match v {
        Val::Str(s) => string(out, s),
        Val::I64(i) => int(out, i),
        Val::F64(f) => float(out, f),
        Val::Bool(b) => raw(out, if b { "true" } else { "false" }),
        Val::StrArray(a) => array(out, a.iter().map(String::as_str)),
        Val::Args(a) => array(out, super::args(a)),
    }
}

fn array<'s>(out: &mut Vec<u8>, items: impl Iterator<Item = &'s str>) {
    out.push(b'[');
    for (k, s) in items.enumerate() {
        if k > 0 {
            out.push(b',');
        }
        string(out, s);
    }
    out.push(b']');
}

/// `"k":v`, one member of an object.
fn member(out: &mut Vec<u8>, k: &str, v: Val<'_>) {
    string(out, k);
    out.push(b':');
    value(out, v);
}

/// The object of the members `each` gives; the span in `out` of the first member keyed
/// `mark`, if any.
fn object_of(
    out: &mut Vec<u8>,
    each: impl FnOnce(&mut dyn FnMut(&str, Val<'_>)),
    mark: Option<&str>,
) -> Option<(usize, usize)> {
    out.push(b'{');
    let mut first = true;
    let mut span = None;
    each(&mut |k, v| {
        if !first {
            out.push(b',');
        }
        first = false;
        let at = out.len();
        member(out, k, v);
        if span.is_none() && mark == Some(k) {
            span = Some((at, out.len()));
        }
    });
    out.push(b'}');
    span
}

fn attrs(out: &mut Vec<u8>, a: Attrs<'_>) {
    object_of(out, |f| a.for_each(|x| f(x.key, x.val)), None);
}

fn resource(out: &mut Vec<u8>, r: Resource<'_>, mark: Option<&str>) -> Option<(usize, usize)> {
    object_of(out, |f| r.for_each(|x| f(x.key, x.val)), mark)
}

/// A resource as one JSON object, for [`ResourceCache`].
pub struct Json;

impl ResourceFormat for Json {
    fn write(&self, out: &mut Vec<u8>, r: Resource<'_>) -> Option<(usize, usize)> {
        resource(out, r, Some(STATE_KEY))
    }

    fn state(&self, out: &mut Vec<u8>, v: &str) {
        member(out, STATE_KEY, Val::Str(v));
    }
}

/// The line of one metric point, its resource already rendered.
fn point_line(out: &mut Vec<u8>, p: &Point<'_>, res: Cached<'_>) {
    let (kind, monotonic) = match p.kind {
        MetricKind::Gauge => ("gauge", false),
        MetricKind::Sum { monotonic } => ("sum", monotonic),
    };
    raw(out, "{\"type\":\"metric\",\"name\":");
    string(out, p.name);
    raw(out, ",\"unit\":");
    string(out, p.unit);
    raw(out, ",\"kind\":\"");
    raw(out, kind);
    raw(out, "\",\"monotonic\":");
    raw(out, if monotonic { "true" } else { "false" });
    raw(out, ",\"value\":");
    match p.value {
        MetricValue::I64(v) => int(out, v),
        MetricValue::F64(v) => float(out, v),
    }
    raw(out, ",\"start_time_unix_nano\":");
    int(out, p.start_time_unix_nano);
    raw(out, ",\"time_unix_nano\":");
    int(out, p.time_unix_nano);
    raw(out, ",\"attributes\":");
    attrs(out, p.attrs);
    raw(out, ",\"resource\":");
    res.write(out);
    raw(out, "}\n");
}

/// Append the JSON lines of one record (each ending in `\n`) to `out`. The resource object is
/// rendered once per record and repeated on each of its lines.
pub fn write_record(r: RecordRef<'_>, d: &ResourceDefaults, out: &mut Vec<u8>) {
    with_view(r, d, |v| match v {
        View::Metrics {
            resource: res,
            points,
        } => {
            let mut res_json = Vec::with_capacity(256);
            resource(&mut res_json, res, None);
            let res = Cached::whole(&res_json);
            for p in points {
                point_line(out, &p, res);
            }
        }
        View::Log { resource: res, log } => {
            raw(out, "{\"type\":\"log\",\"time_unix_nano\":");
            int(out, log.time_unix_nano);
            raw(out, ",\"observed_time_unix_nano\":");
            int(out, log.observed_time_unix_nano);
            raw(out, ",\"severity_number\":");
            int(out, log.severity_number);
            raw(out, ",\"severity_text\":");
            string(out, &log.severity_text);
            raw(out, ",\"event_name\":");
            string(out, &log.event_name);
            raw(out, ",\"body\":");
            string(out, &log.body);
            raw(out, ",\"attributes\":");
            attrs(out, Attrs::Kv(&log.attributes));
            raw(out, ",\"resource\":");
            resource(out, res, None);
            raw(out, "}\n");
        }
    })
}

/// [`write_record`], a process record's resource from (or into) `cache`: the same bytes.
pub fn write_record_cached(
    r: RecordRef<'_>,
    d: &ResourceDefaults,
    cache: &mut ResourceCache<Json>,
    out: &mut Vec<u8>,
) {
    let RecordRef::Process(p) = r else {
        return write_record(r, d, out);
    };
    let res = cache.get(p, d);
    for pt in exported_points(p) {
        point_line(out, &pt, res);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_ipc_proto::{AttrValue, KeyValue, LogRecord, Metric, ProcessRecord, Record};

    fn lines(r: &Record) -> Vec<serde_json::Value> {
        let mut out = Vec::new();
        write_record(
            r.decoded().borrowed(),
            &ResourceDefaults::new("h"),
            &mut out,
        );
        assert!(out.ends_with(b"\n"));
        out.split(|&c| c == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).expect("valid JSON"))
            .collect()
    }

    #[test]
    fn process_lines_parse_and_carry_everything() {
        let v = lines(&Record::Process(Box::new(crate::convert::tests::process())));
        assert_eq!(v.len(), 9);
        assert_eq!(v[0]["type"], "metric");
        assert_eq!(v[0]["name"], "process.cpu.time");
        assert_eq!(v[0]["kind"], "sum");
        assert_eq!(v[0]["monotonic"], true);
        assert_eq!(v[0]["value"], 1.5);
        assert_eq!(v[0]["attributes"]["cpu.mode"], "user");
        assert_eq!(v[0]["resource"]["process.pid"], 4242);
        assert!(v[0]["resource"].get("process.command_line").is_none());
        assert_eq!(
            v[0]["resource"]["process.command_args"],
            serde_json::json!(["postgres", "-D", "/var/lib/pg", "\"x\""])
        );
        assert_eq!(v[0]["resource"]["host.name"], "h");
        assert_eq!(v[6]["name"], "process.unix.file_descriptor.count");
        assert_eq!(v[6]["value"], 12);
        assert_eq!(v[6]["kind"], "sum");
        assert_eq!(v[6]["monotonic"], false);
    }

    /// From the cache or not, the same lines: a first sight, again, a new state, a changed
    /// field, a reused pid.
    #[test]
    fn cached_resources_are_the_same_lines() {
        let d = ResourceDefaults::new("h");
        let mut cache = ResourceCache::new(Json);
        let p = crate::convert::tests::process();
        let steps = [
            p.clone(),
            p.clone(),
            ProcessRecord {
                state: b'R',
                ..p.clone()
            },
            ProcessRecord {
                group_name: "wheel".into(),
                ..p.clone()
            },
            ProcessRecord {
                start_time_unix_nano: 7,
                ..p.clone()
            },
            ProcessRecord {
                unchanged: vigil_ipc_proto::process_field::CPU_SYSTEM,
                start_time_unix_nano: 7,
                ..p.clone()
            },
        ];
        for (k, p) in steps.into_iter().enumerate() {
            let r = Record::Process(Box::new(p));
            let (mut a, mut b) = (Vec::new(), Vec::new());
            write_record(r.decoded().borrowed(), &d, &mut a);
            write_record_cached(r.decoded().borrowed(), &d, &mut cache, &mut b);
            assert_eq!(
                String::from_utf8(b).unwrap(),
                String::from_utf8(a).unwrap(),
                "step {k}"
            );
        }
        assert_eq!((cache.stats.hits, cache.stats.misses), (3, 3));
    }

    /// The strings are compared by a hash of each with its length: bytes moved from one field
    /// to the next are a change, not a hit.
    #[test]
    fn strings_moved_between_fields_are_a_change() {
        let d = ResourceDefaults::new("h");
        let mut cache = ResourceCache::new(Json);
        let p = crate::convert::tests::process();
        let a = ProcessRecord {
            executable_name: "ab".into(),
            executable_path: "c".into(),
            ..p.clone()
        };
        let b = ProcessRecord {
            executable_name: "a".into(),
            executable_path: "bc".into(),
            ..p.clone()
        };
        for (k, p) in [a.clone(), b, a.clone(), a].into_iter().enumerate() {
            let r = Record::Process(Box::new(p));
            let (mut plain, mut cached) = (Vec::new(), Vec::new());
            write_record(r.decoded().borrowed(), &d, &mut plain);
            write_record_cached(r.decoded().borrowed(), &d, &mut cache, &mut cached);
            assert_eq!(cached, plain, "step {k}");
        }
        assert_eq!((cache.stats.hits, cache.stats.misses), (1, 3));
    }

    #[test]
    fn hostile_strings_and_values_stay_valid_json() {
        let r = Record::Metrics {
            resource: vec![
                KeyValue::str("k\"\\\n\u{1}", "v\u{7f}\u{2028}é\"\n"),
                KeyValue {
                    key: "arr".into(),
                    value: AttrValue::StrArray(vec!["a\"".into(), String::new()]),
                },
                KeyValue {
                    key: "b".into(),
                    value: AttrValue::Bool(true),
                },
                KeyValue {
                    key: "host.name".into(),
                    value: AttrValue::F64(f64::NAN),
                },
            ],
            metrics: vec![Metric {
                name: "m\u{0}".into(),
                unit: "".into(),
                kind: MetricKind::Gauge,
                start_time_unix_nano: u64::MAX,
                time_unix_nano: 0,
                value: MetricValue::F64(f64::INFINITY),
                attributes: vec![],
            }],
        };
        let v = lines(&r);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0]["name"], "m\u{0}");
        assert_eq!(v[0]["value"], serde_json::Value::Null);
        assert_eq!(v[0]["start_time_unix_nano"], u64::MAX);
        assert_eq!(v[0]["resource"]["k\"\\\n\u{1}"], "v\u{7f}\u{2028}é\"\n");
        assert_eq!(v[0]["resource"]["arr"][0], "a\"");
        assert_eq!(v[0]["resource"]["b"], true);
        // The record sets host.name (to NaN → null): the default does not override it.
        assert_eq!(v[0]["resource"]["host.name"], serde_json::Value::Null);
        let log = Record::Log {
            resource: vec![],
            log: LogRecord {
                time_unix_nano: 3,
                observed_time_unix_nano: 4,
                severity_number: 17,
                severity_text: "ERROR".into(),
                event_name: "OOMKilling".into(),
                body: "Out of memory: Killed process 12 (python3)".into(),
                attributes: vec![KeyValue::i64("linux.kmsg.seq", 9)],
            },
        };
        let v = lines(&log);
        assert_eq!(v[0]["type"], "log");
        assert_eq!(v[0]["event_name"], "OOMKilling");
        assert_eq!(v[0]["attributes"]["linux.kmsg.seq"], 9);
        assert_eq!(v[0]["resource"]["service.name"], "vigil");
    }
}
