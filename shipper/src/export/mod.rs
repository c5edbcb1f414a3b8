//! Exporters. Each one reads the journal from its own acknowledged position and acknowledges
//! what it shipped; a segment is deleted once every exporter is past it. The Prometheus
//! endpoint is not one of them: it keeps only the latest values, fed as records are journaled,
//! and holds back no segment.

pub mod gzip;
pub mod json;
pub mod otlp;
pub mod prometheus;

pub const JSON: &str = "json";
pub const OTLP: &str = "otlp";

/// Most bytes of journal records read for one export batch.
pub const MAX_READ_BYTES: usize = 4 * 1024 * 1024;
