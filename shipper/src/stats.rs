//! The shipper's own counters: answered to `StatsRequest` and exported as `vigil.shipper.*`
//! metrics like any other record.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use vigil_ipc_proto::{KeyValue, Metric, MetricKind, MetricValue, Record, RoleStats};

use crate::journal::Journal;

/// At most one message per minute of one kind; says how many were held back meanwhile.
#[derive(Debug, Default, Clone)]
pub struct RateLimit {
    last: Option<Instant>,
    held: u64,
}

impl RateLimit {
    pub const EVERY: Duration = Duration::from_secs(60);

    /// `Some(suffix)` when a message may be written now (the suffix counts the held-back
    /// ones, "" when none), `None` to hold this one back.
    pub fn allow(&mut self, now: Instant) -> Option<String> {
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < Self::EVERY)
        {
            self.held += 1;
            return None;
        }
        self.last = Some(now);
        let held = std::mem::take(&mut self.held);
        Some(if held == 0 {
            String::new()
        } else {
            format!(", {held} more since the last message")
        })
    }
}

#[derive(Debug, Default, Clone)]
pub struct Stats {
    /// Records journaled from the collector (acknowledged upstream).
    pub records_accepted: u64,
    pub batches_accepted: u64,
    /// Batches refused (full disk, I/O error, oversized record).
    pub batches_nacked: u64,
    /// Frames from the collector or the supervisor that did not decode.
    pub malformed_frames: u64,
    /// Records shipped per exporter.
    pub shipped: BTreeMap<&'static str, u64>,
    /// Failed export attempts that will be retried.
    pub retries: u64,
    /// Records dropped by the shipper, by reason (besides `journal_full`, kept by the journal).
    pub dropped: BTreeMap<&'static str, u64>,
    /// Journal appends that failed for another reason than a full disk.
    pub append_errors: u64,
    /// Log records / data points a backend rejected in a 2xx `partial_success` answer.
    pub otlp_rejected_items: u64,
    /// Failed export attempts by cause (`dns`, `connect`, `proxy`, `tls`, `io`, `timeout`,
    /// `http_retry`, ...); every one of them is retried, nothing is dropped.
    pub export_errors: BTreeMap<&'static str, u64>,
    /// Scrapes answered by the Prometheus endpoint, and requests refused there.
    pub prometheus_scrapes: u64,
    pub prometheus_refused: u64,
    /// Journal I/O failures of appends are told at most once a minute.
    pub append_warn: RateLimit,
}

impl Stats {
    pub fn add_shipped(&mut self, exporter: &'static str, n: u64) {
        *self.shipped.entry(exporter).or_default() += n;
    }
    pub fn add_dropped(&mut self, reason: &'static str, n: u64) {
        *self.dropped.entry(reason).or_default() += n;
    }
    pub fn add_export_error(&mut self, cause: &'static str) {
        *self.export_errors.entry(cause).or_default() += 1;
    }

    fn dropped_all(&self, j: &Journal) -> BTreeMap<&'static str, u64> {
        let mut d = self.dropped.clone();
        *d.entry("journal_full").or_default() += j.stats().dropped_oldest;
        d
    }

    /// Flat counters (`records_shipped.otlp`, `records_dropped.journal_full`, ...).
    pub fn role_stats(&self, j: &Journal, exporters: &[&'static str]) -> RoleStats {
        let js = j.stats();
        let mut c: Vec<(String, u64)> = vec![
            ("records_accepted".into(), self.records_accepted),
            ("batches_accepted".into(), self.batches_accepted),
            ("batches_nacked".into(), self.batches_nacked),
            ("malformed_frames".into(), self.malformed_frames),
            ("retries".into(), self.retries),
            ("append_errors".into(), self.append_errors),
            ("otlp_rejected_items".into(), self.otlp_rejected_items),
            ("journal_bytes".into(), j.total_bytes()),
            ("journal_segments".into(), j.segment_count() as u64),
            ("corrupt_records".into(), js.corrupt_records),
            ("torn_tails".into(), js.torn_tails),
            ("checkpoint_errors".into(), js.checkpoint_errors),
            ("journal_data_syncs".into(), js.data_syncs),
            ("records_replayed".into(), j.replayed_at_open()),
        ];
        for e in exporters {
            c.push((
                format!("records_shipped.{e}"),
                self.shipped.get(e).copied().unwrap_or(0),
            ));
            let pending = j.next_seq().saturating_sub(j.acked(e).unwrap_or(0));
            c.push((format!("records_pending.{e}"), pending));
        }
        for (reason, n) in self.dropped_all(j) {
            c.push((format!("records_dropped.{reason}"), n));
        }
        for (cause, n) in &self.export_errors {
            c.push((format!("export_errors.{cause}"), *n));
        }
        c.push(("prometheus_scrapes".into(), self.prometheus_scrapes));
        c.push(("prometheus_refused".into(), self.prometheus_refused));
        RoleStats { counters: c }
    }

    /// The same counters as OpenTelemetry metrics `vigil.shipper.*`.
    pub fn self_metrics(
        &self,
        j: &Journal,
        exporters: &[&'static str],
        start_ns: u64,
        now_ns: u64,
    ) -> Record {
        let sum = |name: &str, unit: &str, v: u64, attrs: Vec<KeyValue>| Metric {
            name: format!("vigil.shipper.{name}"),
            unit: unit.into(),
            kind: MetricKind::Sum { monotonic: true },
            start_time_unix_nano: start_ns,
            time_unix_nano: now_ns,
            value: MetricValue::I64(v as i64),
            attributes: attrs,
        };
        let gauge = |name: &str, unit: &str, v: u64| Metric {
            name: format!("vigil.shipper.{name}"),
            unit: unit.into(),
            kind: MetricKind::Gauge,
            start_time_unix_nano: 0,
            time_unix_nano: now_ns,
            value: MetricValue::I64(v as i64),
            attributes: Vec::new(),
        };
        let mut m = vec![
            sum(
                "records_accepted",
                "{record}",
                self.records_accepted,
                vec![],
            ),
            sum("retries", "{attempt}", self.retries, vec![]),
            sum(
                "corrupt_records",
                "{record}",
                j.stats().corrupt_records,
                vec![],
            ),
            sum("malformed_frames", "{frame}", self.malformed_frames, vec![]),
            gauge("journal_bytes", "By", j.total_bytes()),
            gauge("journal_segments", "{segment}", j.segment_count() as u64),
        ];
        for e in exporters {
            m.push(sum(
                "records_shipped",
                "{record}",
                self.shipped.get(e).copied().unwrap_or(0),
                vec![KeyValue::str("exporter", *e)],
            ));
        }
        for (reason, n) in self.dropped_all(j) {
            m.push(sum(
                "records_dropped",
                "{record}",
                n,
                vec![KeyValue::str("reason", reason)],
            ));
        }
        for (cause, n) in &self.export_errors {
            m.push(sum(
                "export.errors",
                "{attempt}",
                *n,
                vec![KeyValue::str("cause", *cause)],
            ));
        }
        // The scrape endpoint's, once it has seen a request.
        if self.prometheus_scrapes + self.prometheus_refused > 0 {
            m.push(sum(
                "prometheus.scrapes",
                "{scrape}",
                self.prometheus_scrapes,
                vec![],
            ));
            m.push(sum(
                "prometheus.refused",
                "{request}",
                self.prometheus_refused,
                vec![],
            ));
        }
        Record::Metrics {
            resource: vec![KeyValue::str("service.name", "vigil")],
            metrics: m,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_counts_what_it_held_back() {
        let mut r = RateLimit::default();
        let t0 = Instant::now();
        assert_eq!(r.allow(t0).as_deref(), Some(""));
        assert_eq!(r.allow(t0 + Duration::from_secs(1)), None);
        assert_eq!(r.allow(t0 + Duration::from_secs(59)), None);
        assert_eq!(
            r.allow(t0 + RateLimit::EVERY).as_deref(),
            Some(", 2 more since the last message")
        );
    }
}
