//! The data model carried from the collector to the shipper: metrics and log records grouped by
//! the resource they describe, close to OTLP so the shipper maps them one to one.

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
    /// Metrics sharing one resource (a process, a container, the host, ...).
    Metrics {
        resource: Vec<KeyValue>,
        metrics: Vec<Metric>,
    },
    /// A log record (kernel events are log records with an `event.name`).
    Log {
        resource: Vec<KeyValue>,
        log: LogRecord,
    },
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

/// Log attribute (I64) carrying the `/dev/kmsg` sequence number of a kernel event. The shipper
/// remembers the highest one it journaled and sends it in `ShipperToCollector::Resume`.
pub const ATTR_KMSG_SEQ: &str = "linux.kmsg.seq";
