//! OpenTelemetry names → Prometheus names, and the escaping of both text formats.
//!
//! Metric names follow the OpenTelemetry specification (`compatibility/prometheus_and_openmetrics.md`,
//! "OTLP Metric points to Prometheus") as the OpenTelemetry Collector's Prometheus exporter
//! normalises them: the name is cut into its ASCII letters and digits (every other character
//! becomes one `_`), the UCUM unit is spelled out and appended unless the name already has it
//! as a word (`By` → `bytes`, `s` → `seconds`, `By/s` → `bytes_per_second`), `{...}`
//! annotations are dropped (a count of things is unitless), monotonic sums end in `_total`,
//! gauges of unit `1` in `_ratio`, and a name that would start with a digit gets a leading `_`.
//! Label names: every character outside `[A-Za-z0-9_]` becomes `_`, runs of `_` become one, a
//! leading digit gets `key_` and a leading `_` gets `key` (so no label is reserved `__...`).

use std::fmt::Write as _;

/// Prometheus type of a metric family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Type {
    /// A monotonic cumulative sum: samples `<family>_total`.
    Counter,
    /// A gauge, or a non-monotonic sum.
    Gauge,
}

impl Type {
    pub fn as_str(self) -> &'static str {
        match self {
            Type::Counter => "counter",
            Type::Gauge => "gauge",
        }
    }
}

/// A metric family's Prometheus name (without `_total`; the OpenMetrics family name) and its
/// unit as OpenMetrics `# UNIT` metadata wants it (empty: none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FamilyName {
    pub name: String,
    pub unit: String,
}

/// Units spelled out (UCUM case-sensitive codes, as the Collector's table has them).
fn unit_word(u: &str) -> &str {
    match u {
        "d" => "days",
        "h" => "hours",
        "min" => "minutes",
        "s" => "seconds",
        "ms" => "milliseconds",
        "us" => "microseconds",
        "ns" => "nanoseconds",
        "By" => "bytes",
        "KiBy" => "kibibytes",
        "MiBy" => "mebibytes",
        "GiBy" => "gibibytes",
        "TiBy" => "tebibytes",
        "KBy" => "kilobytes",
        "MBy" => "megabytes",
        "GBy" => "gigabytes",
        "TBy" => "terabytes",
        "m" => "meters",
        "V" => "volts",
        "A" => "amperes",
        "J" => "joules",
        "W" => "watts",
        "g" => "grams",
        "Cel" => "celsius",
        "Hz" => "hertz",
        "1" => "",
        "%" => "percent",
        other => other,
    }
}

/// The denominator of `x/y` units, singular.
fn per_unit_word(u: &str) -> &str {
    match u {
        "s" => "second",
        "m" => "minute",
        "h" => "hour",
        "d" => "day",
        "w" => "week",
        "mo" => "month",
        "y" => "year",
        other => other,
    }
}

/// The ASCII letter-and-digit runs of `s`.
fn words(s: &str) -> impl Iterator<Item = &str> {
    s.split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
}

/// `s` without its `{...}` annotations (an unclosed `{` drops the rest).
fn strip_annotations(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut depth = 0u32;
    for c in s.chars() {
        match c {
            '{' => depth += 1,
            '}' if depth > 0 => depth -= 1,
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out
}

/// A unit part spelled out as words joined by `_` (empty when nothing is left).
fn unit_part(part: &str, spell: fn(&str) -> &str) -> String {
    let stripped = strip_annotations(part);
    words(spell(stripped.trim())).collect::<Vec<_>>().join("_")
}

/// The family name of an OpenTelemetry metric, or `None` when nothing of its name is left
/// (a name of punctuation only).
pub fn family_name(name: &str, unit: &str, ty: Type) -> Option<FamilyName> {
    let mut tokens: Vec<String> = words(name).map(str::to_string).collect();
    let (main, per) = match unit.split_once('/') {
        Some((m, p)) => (m, Some(p)),
        None => (unit, None),
    };
    let mut unit_words = Vec::new();
    let main = unit_part(main, unit_word);
    if !main.is_empty() {
        if !tokens.contains(&main) {
            tokens.push(main.clone());
        }
        unit_words.push(main);
    }
    if let Some(per) = per.map(|p| unit_part(p, per_unit_word))
        && !per.is_empty()
    {
        if !tokens.contains(&per) {
            tokens.push("per".into());
            tokens.push(per.clone());
        }
        unit_words.push("per".into());
        unit_words.push(per);
    }
    if ty == Type::Counter {
        tokens.retain(|t| t != "total");
    }
    if ty == Type::Gauge && unit.trim() == "1" {
        tokens.retain(|t| t != "ratio");
        tokens.push("ratio".into());
        unit_words = vec!["ratio".into()];
    }
    if tokens.is_empty() {
        return None;
    }
    let mut name = tokens.join("_");
    if name.starts_with(|c: char| c.is_ascii_digit()) {
        name.insert(0, '_');
    }
    // OpenMetrics wants a family's unit to be the suffix of its name; when the name held the
    // unit's word elsewhere there is no UNIT line.
    let unit = unit_words.join("_");
    let unit = if !unit.is_empty() && name.ends_with(&format!("_{unit}")) {
        unit
    } else {
        String::new()
    };
    Some(FamilyName { name, unit })
}

/// Append the Prometheus label name for attribute key `key` to `out`; false (nothing
/// appended) for a key with nothing usable in it.
pub fn push_label_name(key: &str, out: &mut String) -> bool {
    let start = out.len();
    let mut prev_underscore = false;
    for c in key.chars() {
        let c = if c.is_ascii_alphanumeric() { c } else { '_' };
        if c == '_' && prev_underscore {
            continue;
        }
        prev_underscore = c == '_';
        out.push(c);
    }
    let first = out[start..].chars().next();
    match first {
        None => return false,
        Some(c) if c.is_ascii_digit() => out.insert_str(start, "key_"),
        Some('_') if out.len() - start == 1 => {
            out.truncate(start);
            return false;
        }
        Some('_') => out.insert_str(start, "key"),
        _ => {}
    }
    true
}

/// Append `s` escaped for a label value (`\\`, `\"`, `\n`; both formats) or, with `quote`
/// false, for 0.0.4 HELP text (`\\`, `\n`).
pub fn push_escaped(s: &str, quote: bool, out: &mut String) {
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if quote => out.push_str("\\\""),
            c => out.push(c),
        }
    }
}

/// Append a sample value: integers as they are, floats in their shortest exact form,
/// `NaN`, `+Inf`, `-Inf`.
pub fn push_f64(v: f64, out: &mut String) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
    } else {
        let _ = write!(out, "{v:?}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn fam(name: &str, unit: &str, ty: Type) -> (String, String) {
        let f = family_name(name, unit, ty).expect("a name");
        (f.name, f.unit)
    }

    /// The mapping table of the README, plus the Collector's normalisation cases.
    #[test]
    fn metric_names_follow_the_compatibility_rules() {
        let c = Type::Counter;
        let g = Type::Gauge;
        let table: &[(&str, &str, Type, &str, &str)] = &[
            (
                "process.cpu.time",
                "s",
                c,
                "process_cpu_time_seconds",
                "seconds",
            ),
            (
                "process.memory.usage",
                "By",
                g,
                "process_memory_usage_bytes",
                "bytes",
            ),
            (
                "process.thread.count",
                "{thread}",
                g,
                "process_thread_count",
                "",
            ),
            (
                "system.memory.usage",
                "By",
                g,
                "system_memory_usage_bytes",
                "bytes",
            ),
            (
                "system.network.io",
                "By",
                c,
                "system_network_io_bytes",
                "bytes",
            ),
            (
                "network.flow.packets",
                "{packet}",
                c,
                "network_flow_packets",
                "",
            ),
            (
                "system.cpu.utilization",
                "1",
                g,
                "system_cpu_utilization_ratio",
                "ratio",
            ),
            (
                "system.cpu.load_average.1m",
                "{thread}",
                g,
                "system_cpu_load_average_1m",
                "",
            ),
            (
                "container.cpu.usage.total",
                "s",
                c,
                "container_cpu_usage_seconds",
                "seconds",
            ),
            (
                "vigil.shipper.journal_bytes",
                "By",
                g,
                "vigil_shipper_journal_bytes",
                "bytes",
            ),
            (
                "vigil.shipper.export.errors",
                "{attempt}",
                c,
                "vigil_shipper_export_errors",
                "",
            ),
            (
                "disk.throughput",
                "By/s",
                g,
                "disk_throughput_bytes_per_second",
                "bytes_per_second",
            ),
            (
                "packets",
                "{packet}/s",
                g,
                "packets_per_second",
                "per_second",
            ),
            ("latency", "ms", g, "latency_milliseconds", "milliseconds"),
            ("temp", "Cel", g, "temp_celsius", "celsius"),
            ("hits", "1", c, "hits", ""),
            ("odd", "weird unit", g, "odd_weird_unit", "weird_unit"),
            ("9lives", "", g, "_9lives", ""),
            ("a..b__c", "", g, "a_b_c", ""),
            ("größe", "By", g, "gr_e_bytes", "bytes"),
            ("ratio.x", "1", g, "x_ratio", "ratio"),
            ("total.seconds", "s", c, "seconds", ""),
        ];
        for (name, unit, ty, want, want_unit) in table {
            assert_eq!(
                fam(name, unit, *ty),
                (want.to_string(), want_unit.to_string()),
                "{name} [{unit}] {ty:?}"
            );
        }
        assert_eq!(family_name("...", "", g), None);
        assert_eq!(family_name("total", "", c), None);
        // The unit's word elsewhere in the name: no suffix added, and then no UNIT either
        // (OpenMetrics wants the unit as the name's suffix).
        assert_eq!(
            fam("bytes.in.flight", "By", g),
            ("bytes_in_flight".into(), "".into())
        );
    }

    #[test]
    fn label_names() {
        let l = |k: &str| {
            let mut s = String::new();
            push_label_name(k, &mut s).then_some(s)
        };
        assert_eq!(l("process.pid").as_deref(), Some("process_pid"));
        assert_eq!(l("k8s.pod.uid").as_deref(), Some("k8s_pod_uid"));
        assert_eq!(l("a..b").as_deref(), Some("a_b"));
        assert_eq!(l("1st").as_deref(), Some("key_1st"));
        assert_eq!(l("_x").as_deref(), Some("key_x"));
        assert_eq!(l("__x").as_deref(), Some("key_x"));
        assert_eq!(l("é").as_deref(), None);
        assert_eq!(l("").as_deref(), None);
        assert_eq!(l("ok_Name9").as_deref(), Some("ok_Name9"));
    }

    #[test]
    fn escaping_and_values() {
        let mut s = String::new();
        push_escaped("a\\b\"c\nd", true, &mut s);
        assert_eq!(s, r#"a\\b\"c\nd"#);
        s.clear();
        push_escaped("a\\b\"c\nd", false, &mut s);
        assert_eq!(s, r#"a\\b"c\nd"#);
        let v = |x: f64| {
            let mut s = String::new();
            push_f64(x, &mut s);
            s
        };
        assert_eq!(v(1.5), "1.5");
        assert_eq!(v(1.0), "1.0");
        assert_eq!(v(1e300), "1e300");
        assert_eq!(v(f64::NAN), "NaN");
        assert_eq!(v(f64::INFINITY), "+Inf");
        assert_eq!(v(f64::NEG_INFINITY), "-Inf");
    }

    fn valid_metric_name(s: &str) -> bool {
        let mut cs = s.chars();
        cs.next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
            && cs.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    }

    proptest! {
        #[test]
        fn any_name_maps_to_a_valid_one(name in "\\PC{0,40}", unit in "\\PC{0,12}", counter: bool) {
            let ty = if counter { Type::Counter } else { Type::Gauge };
            if let Some(f) = family_name(&name, &unit, ty) {
                prop_assert!(valid_metric_name(&f.name), "{:?}", f.name);
                prop_assert!(!f.name.contains("__"));
                let suffix = format!("_{}", f.unit);
                prop_assert!(f.unit.is_empty() || f.name.ends_with(&suffix));
            }
        }

        #[test]
        fn any_key_maps_to_a_valid_label(key in "\\PC{0,40}") {
            let mut s = String::new();
            if push_label_name(&key, &mut s) {
                prop_assert!(valid_metric_name(&s) && !s.contains(':'), "{:?}", s);
                prop_assert!(!s.starts_with("__") && !s.contains("__"));
            }
        }

        #[test]
        fn escaped_values_have_no_raw_quote_or_newline(v in "\\PC{0,40}|[\"\\\\\n]{0,8}") {
            let mut s = String::new();
            push_escaped(&v, true, &mut s);
            let mut chars = s.chars();
            while let Some(c) = chars.next() {
                prop_assert!(c != '\n' && c != '"');
                if c == '\\' {
                    prop_assert!(matches!(chars.next(), Some('\\' | '"' | 'n')));
                }
            }
        }
    }
}
