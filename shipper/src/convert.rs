//! Records → OTLP protobuf messages (and the resource attributes every record gets).
//!
//! Records sharing a resource are grouped into one `ResourceMetrics` / `ResourceLogs`; each
//! [`vigil_ipc_proto::Metric`] becomes one OTLP metric with one number data point (gauge or
//! cumulative sum); a log record keeps its severity, body, attributes and `event_name` (also
//! set as the `event.name` attribute for backends that predate the field).

use std::collections::HashMap;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1 as common;
use opentelemetry_proto::tonic::logs::v1 as logs;
use opentelemetry_proto::tonic::metrics::v1 as metrics;
use opentelemetry_proto::tonic::resource::v1::Resource;
use vigil_ipc_proto::{AttrValue, KeyValue, LogRecord, Metric, MetricKind, MetricValue, Record};

pub const SCOPE_NAME: &str = "vigil";
pub const SERVICE_NAME: &str = "vigil";

/// Resource attributes added to every record's resource when it does not set them
/// (`service.name`, `service.version`, `host.name`).
#[derive(Debug, Clone)]
pub struct ResourceDefaults {
    pub attrs: Vec<KeyValue>,
}

impl ResourceDefaults {
    pub fn new(hostname: &str) -> Self {
        let mut attrs = vec![
            KeyValue::str("service.name", SERVICE_NAME),
            KeyValue::str("service.version", env!("CARGO_PKG_VERSION")),
        ];
        if !hostname.is_empty() {
            attrs.push(KeyValue::str("host.name", hostname));
        }
        ResourceDefaults { attrs }
    }

    /// The record's resource attributes followed by the defaults it lacks.
    pub fn complete(&self, res: &[KeyValue]) -> Vec<KeyValue> {
        let mut out = res.to_vec();
        for d in &self.attrs {
            if !res.iter().any(|kv| kv.key == d.key) {
                out.push(d.clone());
            }
        }
        out
    }
}

pub fn any_value(v: &AttrValue) -> common::AnyValue {
    use common::any_value::Value;
    let value = match v {
        AttrValue::Str(s) => Value::StringValue(s.clone()),
        AttrValue::I64(i) => Value::IntValue(*i),
        AttrValue::F64(f) => Value::DoubleValue(*f),
        AttrValue::Bool(b) => Value::BoolValue(*b),
        AttrValue::StrArray(a) => Value::ArrayValue(common::ArrayValue {
            values: a
                .iter()
                .map(|s| common::AnyValue {
                    value: Some(Value::StringValue(s.clone())),
                })
                .collect(),
        }),
    };
    common::AnyValue { value: Some(value) }
}

pub fn key_value(kv: &KeyValue) -> common::KeyValue {
    common::KeyValue {
        key: kv.key.clone(),
        value: Some(any_value(&kv.value)),
        ..Default::default()
    }
}

fn attributes(kvs: &[KeyValue]) -> Vec<common::KeyValue> {
    kvs.iter().map(key_value).collect()
}

fn resource(res: &[KeyValue], d: &ResourceDefaults) -> Resource {
    Resource {
        attributes: attributes(&d.complete(res)),
        ..Default::default()
    }
}

fn scope() -> common::InstrumentationScope {
    common::InstrumentationScope {
        name: SCOPE_NAME.into(),
        version: env!("CARGO_PKG_VERSION").into(),
        ..Default::default()
    }
}

/// A stable grouping key for a resource (its postcard bytes).
fn resource_key(res: &[KeyValue]) -> Vec<u8> {
    postcard::to_allocvec(res).unwrap_or_default()
}

pub fn metric(m: &Metric) -> metrics::Metric {
    let value = match m.value {
        MetricValue::I64(v) => metrics::number_data_point::Value::AsInt(v),
        MetricValue::F64(v) => metrics::number_data_point::Value::AsDouble(v),
    };
    let point = metrics::NumberDataPoint {
        attributes: attributes(&m.attributes),
        start_time_unix_nano: m.start_time_unix_nano,
        time_unix_nano: m.time_unix_nano,
        value: Some(value),
        ..Default::default()
    };
    let data = match m.kind {
        MetricKind::Gauge => metrics::metric::Data::Gauge(metrics::Gauge {
            data_points: vec![point],
        }),
        MetricKind::Sum { monotonic } => metrics::metric::Data::Sum(metrics::Sum {
            data_points: vec![point],
            aggregation_temporality: metrics::AggregationTemporality::Cumulative as i32,
            is_monotonic: monotonic,
        }),
    };
    metrics::Metric {
        name: m.name.clone(),
        unit: m.unit.clone(),
        data: Some(data),
        ..Default::default()
    }
}

pub fn log_record(l: &LogRecord) -> logs::LogRecord {
    let mut attrs = attributes(&l.attributes);
    if !l.event_name.is_empty() && !l.attributes.iter().any(|kv| kv.key == "event.name") {
        attrs.push(key_value(&KeyValue::str(
            "event.name",
            l.event_name.clone(),
        )));
    }
    logs::LogRecord {
        time_unix_nano: l.time_unix_nano,
        observed_time_unix_nano: l.observed_time_unix_nano,
        severity_number: i32::from(l.severity_number.min(24)),
        severity_text: l.severity_text.clone(),
        body: Some(common::AnyValue {
            value: Some(common::any_value::Value::StringValue(l.body.clone())),
        }),
        attributes: attrs,
        event_name: l.event_name.clone(),
        ..Default::default()
    }
}

/// The metrics of these records, grouped by resource. `None` when there are none.
pub fn metrics_request<'a>(
    records: impl IntoIterator<Item = &'a Record>,
    d: &ResourceDefaults,
) -> Option<ExportMetricsServiceRequest> {
    let mut groups: Vec<metrics::ResourceMetrics> = Vec::new();
    let mut by_key: HashMap<Vec<u8>, usize> = HashMap::new();
    for r in records {
        let Record::Metrics {
            resource: res,
            metrics: ms,
        } = r
        else {
            continue;
        };
        let i = *by_key.entry(resource_key(res)).or_insert_with(|| {
            groups.push(metrics::ResourceMetrics {
                resource: Some(resource(res, d)),
                scope_metrics: vec![metrics::ScopeMetrics {
                    scope: Some(scope()),
                    ..Default::default()
                }],
                ..Default::default()
            });
            groups.len() - 1
        });
        groups[i].scope_metrics[0]
            .metrics
            .extend(ms.iter().map(metric));
    }
    (!groups.is_empty()).then_some(ExportMetricsServiceRequest {
        resource_metrics: groups,
    })
}

/// The log records among these records, grouped by resource. `None` when there are none.
pub fn logs_request<'a>(
    records: impl IntoIterator<Item = &'a Record>,
    d: &ResourceDefaults,
) -> Option<ExportLogsServiceRequest> {
    let mut groups: Vec<logs::ResourceLogs> = Vec::new();
    let mut by_key: HashMap<Vec<u8>, usize> = HashMap::new();
    for r in records {
        let Record::Log { resource: res, log } = r else {
            continue;
        };
        let i = *by_key.entry(resource_key(res)).or_insert_with(|| {
            groups.push(logs::ResourceLogs {
                resource: Some(resource(res, d)),
                scope_logs: vec![logs::ScopeLogs {
                    scope: Some(scope()),
                    ..Default::default()
                }],
                ..Default::default()
            });
            groups.len() - 1
        });
        groups[i].scope_logs[0].log_records.push(log_record(log));
    }
    (!groups.is_empty()).then_some(ExportLogsServiceRequest {
        resource_logs: groups,
    })
}

/// Readable JSON of an attribute value.
pub fn json_value(v: &AttrValue) -> serde_json::Value {
    match v {
        AttrValue::Str(s) => s.clone().into(),
        AttrValue::I64(i) => (*i).into(),
        AttrValue::F64(f) => (*f).into(),
        AttrValue::Bool(b) => (*b).into(),
        AttrValue::StrArray(a) => a.clone().into(),
    }
}

/// Attributes as one flat JSON object (`{"host.name": "a", "process.pid": 1}`).
pub fn json_attrs(kvs: &[KeyValue]) -> serde_json::Value {
    serde_json::Value::Object(
        kvs.iter()
            .map(|kv| (kv.key.clone(), json_value(&kv.value)))
            .collect(),
    )
}

/// One JSON object per metric point and per log record.
pub fn json_lines(r: &Record, d: &ResourceDefaults, out: &mut Vec<serde_json::Value>) {
    use serde_json::json;
    match r {
        Record::Metrics {
            resource: res,
            metrics: ms,
        } => {
            let res = json_attrs(&d.complete(res));
            for m in ms {
                let (kind, monotonic) = match m.kind {
                    MetricKind::Gauge => ("gauge", false),
                    MetricKind::Sum { monotonic } => ("sum", monotonic),
                };
                let value = match m.value {
                    MetricValue::I64(v) => json!(v),
                    MetricValue::F64(v) => json!(v),
                };
                out.push(json!({
                    "type": "metric",
                    "name": m.name,
                    "unit": m.unit,
                    "kind": kind,
                    "monotonic": monotonic,
                    "value": value,
                    "start_time_unix_nano": m.start_time_unix_nano,
                    "time_unix_nano": m.time_unix_nano,
                    "attributes": json_attrs(&m.attributes),
                    "resource": res,
                }));
            }
        }
        Record::Log { resource: res, log } => out.push(json!({
            "type": "log",
            "time_unix_nano": log.time_unix_nano,
            "observed_time_unix_nano": log.observed_time_unix_nano,
            "severity_number": log.severity_number,
            "severity_text": log.severity_text,
            "event_name": log.event_name,
            "body": log.body,
            "attributes": json_attrs(&log.attributes),
            "resource": json_attrs(&d.complete(res)),
        })),
    }
}
