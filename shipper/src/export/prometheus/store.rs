//! The latest value of every metric series the shipper journaled, and its rendering in the
//! Prometheus text format 0.0.4 or OpenMetrics 1.0.0.
//!
//! Process records (the bulk: thousands per cycle) are kept as they came, one per pid in a
//! table sorted by pid, their command line and group name dropped and their other strings
//! shared (interned), and expanded into series only when a scrape renders them; every other
//! metric is kept per series as its label text and latest value. Entries
//! not refreshed within the TTL (two collection intervals and a second) expire, so the series
//! of a process that exited, a flow that ended or a container that was removed disappear.
//!
//! Labels are the point's attributes plus the resource attributes that tell resources apart
//! (`process.pid`, `process.executable.name`, `process.user.name`, `container.id`,
//! `k8s.pod.uid`, `linux.cgroup.path`, ...), so series of different processes or containers
//! never collide. Not copied: the agent-wide attributes every record shares (`service.*`,
//! `host.name`, the configured resource attributes), which are `target_info`'s labels, and
//! [`NOT_LABELS`]. Rendering walks families in name order and can stop after any series and
//! resume later ([`Cursor`]), so a scrape is written in bounded pieces.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Bound;
use std::rc::Rc;
use std::time::{Duration, Instant};

use vigil_ipc_proto::{KeyValue, Metric, MetricKind, MetricValue, ProcessRecord, Record};

use crate::convert::{
    Attrs, BLANK, MAX_PROCESS_ATTRS, ResourceDefaults, Val, process_points, process_resource,
};

use super::names::{Type, family_name, push_escaped, push_f64, push_label_name};

/// Resource attributes not copied into labels: unbounded (the command line), or changing over
/// a process's life (a changed label value would start a new series), or repeating another
/// label (`process.owner` is `process.user.name`; ids beside names).
pub const NOT_LABELS: &[&str] = &[
    "process.command_line",
    "process.command_args",
    "process.command",
    "process.parent_pid",
    "process.state",
    "process.creation.time",
    "process.owner",
    "process.user.id",
    "vigil.process.group.id",
    "vigil.process.group.name",
    "process.real_user.id",
    "process.real_group.id",
];

/// Bounds on what the store holds; past them new entries are dropped (and counted).
pub const MAX_PROCESSES: usize = 200_000;
pub const MAX_SERIES: usize = 200_000;
pub const MAX_FAMILIES: usize = 4_096;

/// Family names of the `target` info metric (OpenMetrics, text format).
const TARGET: &str = "target";
const TARGET_INFO: &str = "target_info";

/// Exposition format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `text/plain; version=0.0.4`.
    Text,
    /// `application/openmetrics-text; version=1.0.0`.
    OpenMetrics,
}

impl Format {
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Text => "text/plain; version=0.0.4; charset=utf-8",
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

pub fn type_of(k: MetricKind) -> Type {
    match k {
        MetricKind::Sum { monotonic: true } => Type::Counter,
        MetricKind::Gauge | MetricKind::Sum { monotonic: false } => Type::Gauge,
    }
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    value: MetricValue,
    /// Seconds since the store's epoch when last refreshed.
    seen: u32,
}

struct Family {
    ty: Type,
    /// OpenMetrics `# UNIT` (empty: none).
    unit: String,
    /// The OpenTelemetry name and unit it came from (`# HELP`).
    help: String,
    /// Label text (`a="x",b="y"`) → latest value.
    series: BTreeMap<Box<str>, Sample>,
    /// OpenTelemetry (name, unit) of the process points that belong here.
    proc_origins: Vec<(String, String)>,
}

struct Proc {
    rec: ProcessRecord<Rc<str>>,
    seen: u32,
}

/// The one shared copy of `s`.
fn intern(strings: &mut HashSet<Rc<str>>, s: &str) -> Rc<str> {
    if let Some(r) = strings.get(s) {
        return r.clone();
    }
    let r: Rc<str> = Rc::from(s);
    strings.insert(r.clone());
    r
}

/// One series' labels being assembled: names mapped, sorted, equal names merged.
#[derive(Default)]
struct LabelBuf {
    items: Vec<(String, String, String)>,
    n: usize,
    order: Vec<usize>,
}

impl LabelBuf {
    fn clear(&mut self) {
        self.n = 0;
    }

    fn push(&mut self, key: &str, val: Val<'_>) {
        if self.n == self.items.len() {
            self.items.push(Default::default());
        }
        let (name, orig, value) = &mut self.items[self.n];
        name.clear();
        if !push_label_name(key, name) {
            return;
        }
        orig.clear();
        orig.push_str(key);
        value.clear();
        push_value(val, value);
        self.n += 1;
    }

    /// `a="x",b="y"`: sorted by label name; attributes whose names map to the same label are
    /// one label, their values joined by `;` in the order of the original keys.
    fn write(&mut self, out: &mut String) {
        self.order.clear();
        self.order.extend(0..self.n);
        let items = &self.items;
        self.order
            .sort_by(|&a, &b| (&items[a].0, &items[a].1).cmp(&(&items[b].0, &items[b].1)));
        let mut prev: Option<&str> = None;
        for &i in &self.order {
            let (name, _, value) = &items[i];
            if prev == Some(name.as_str()) {
                out.pop();
                out.push(';');
            } else {
                if prev.is_some() {
                    out.push(',');
                }
                out.push_str(name);
                out.push_str("=\"");
            }
            push_escaped(value, true, out);
            out.push('"');
            prev = Some(name);
        }
    }
}

/// An attribute value as label text (non-string values as the attribute specification
/// writes them: numbers, `true`/`false`, arrays as JSON).
fn push_value(v: Val<'_>, out: &mut String) {
    use std::fmt::Write as _;
    match v {
        Val::Str(s) => out.push_str(s),
        Val::I64(i) => {
            let _ = write!(out, "{i}");
        }
        Val::F64(f) => push_f64(f, out),
        Val::Bool(b) => out.push_str(if b { "true" } else { "false" }),
        Val::StrArray(a) => out.push_str(&serde_json::to_string(a).unwrap_or_default()),
        Val::Args(a) => {
            let v: Vec<&str> = crate::convert::args(a).collect();
            out.push_str(&serde_json::to_string(&v).unwrap_or_default())
        }
    }
}

fn push_sample_value(v: MetricValue, out: &mut String) {
    match v {
        MetricValue::I64(i) => push_value(Val::I64(i), out),
        MetricValue::F64(f) => push_f64(f, out),
    }
}

/// One sample line.
fn push_line(family: &str, ty: Type, labels: &str, v: MetricValue, out: &mut String) {
    out.push_str(family);
    if ty == Type::Counter {
        out.push_str("_total");
    }
    if !labels.is_empty() {
        out.push('{');
        out.push_str(labels);
        out.push('}');
    }
    out.push(' ');
    push_sample_value(v, out);
    out.push('\n');
}

/// Where a rendering stopped.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub enum Cursor {
    #[default]
    Start,
    Family {
        name: String,
        stage: Stage,
    },
    End,
    Done,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stage {
    Head,
    /// After this label text.
    Series(Option<Box<str>>),
    /// After this pid.
    Procs(Option<u32>),
}

pub struct Store {
    families: Vec<Family>,
    by_name: BTreeMap<String, usize>,
    /// `name \x1f unit \x1f type` → family (`None`: no usable name, or a clash).
    names: HashMap<String, Option<usize>>,
    /// Sorted by pid.
    procs: Vec<Proc>,
    /// The processes' strings, one copy each.
    strings: HashSet<Rc<str>>,
    series: usize,
    epoch: Instant,
    ttl: u32,
    /// Resource attribute keys not copied into labels.
    skip: Vec<String>,
    /// `target_info`'s label text.
    target: String,
    labels: LabelBuf,
    line: String,
    key: String,
    /// Points not stored: no usable name, a type clash, or a bound reached.
    pub dropped: u64,
}

impl Store {
    /// `ttl`: how long an entry lives without being refreshed.
    pub fn new(defaults: &ResourceDefaults, ttl: Duration, now: Instant) -> Self {
        let mut labels = LabelBuf::default();
        Attrs::Kv(&defaults.attrs).for_each(|a| labels.push(a.key, a.val));
        let mut target = String::new();
        labels.write(&mut target);
        let mut skip: Vec<String> = NOT_LABELS.iter().map(|s| s.to_string()).collect();
        skip.extend(defaults.attrs.iter().map(|kv| kv.key.clone()));
        Store {
            families: Vec::new(),
            by_name: BTreeMap::new(),
            names: HashMap::new(),
            procs: Vec::new(),
            strings: HashSet::new(),
            series: 0,
            epoch: now,
            ttl: u32::try_from(ttl.as_secs().max(1)).unwrap_or(u32::MAX),
            skip,
            target,
            labels,
            line: String::new(),
            key: String::new(),
            dropped: 0,
        }
    }

    fn secs(&self, now: Instant) -> u32 {
        u32::try_from(now.saturating_duration_since(self.epoch).as_secs()).unwrap_or(u32::MAX)
    }

    /// Processes and other series held.
    pub fn len(&self) -> (usize, usize) {
        (self.procs.len(), self.series)
    }

    pub fn is_empty(&self) -> bool {
        self.procs.is_empty() && self.series == 0
    }

    /// Keep the latest values of a journaled record (log records are not metrics: ignored).
    pub fn ingest(&mut self, r: Record, now: Instant) {
        let t = self.secs(now);
        match r {
            Record::Metrics { resource, metrics } => self.ingest_metrics(&resource, &metrics, t),
            Record::Process(p) => self.ingest_process(*p, t),
            Record::ProcessesUnchanged {
                time_unix_nano,
                pids,
            } => self.refresh_processes(time_unix_nano, &pids, t),
            Record::Log { .. } => {}
        }
    }

    /// Whether a family named `name` of type `ty` would show a name or type another family
    /// already has in either format (`x` counter vs `x` gauge in OpenMetrics, `x_total` gauge
    /// vs `x` counter in the text format), or the `target` info metric's.
    fn clashes(&self, name: &str, ty: Type) -> bool {
        let gauge_named = |n: &str| {
            self.by_name
                .get(n)
                .is_some_and(|&i| self.families[i].ty == Type::Gauge)
        };
        let counter_named = |n: &str| {
            self.by_name
                .get(n)
                .is_some_and(|&i| self.families[i].ty == Type::Counter)
        };
        if name == TARGET || name == TARGET_INFO {
            return true;
        }
        match ty {
            Type::Counter => gauge_named(name) || gauge_named(&format!("{name}_total")),
            Type::Gauge => {
                counter_named(name) || name.strip_suffix("_total").is_some_and(counter_named)
            }
        }
    }

    /// The family of an OpenTelemetry metric, made on first sight.
    fn family_for(&mut self, name: &str, unit: &str, ty: Type) -> Option<usize> {
        self.key.clear();
        self.key.push_str(name);
        self.key.push('\x1f');
        self.key.push_str(unit);
        self.key.push('\x1f');
        self.key.push_str(ty.as_str());
        if let Some(f) = self.names.get(self.key.as_str()) {
            return *f;
        }
        let found = family_name(name, unit, ty).and_then(|f| match self.by_name.get(&f.name) {
            Some(&i) if self.families[i].ty == ty => Some(i),
            Some(_) => None,
            None if self.families.len() >= MAX_FAMILIES || self.clashes(&f.name, ty) => None,
            None => {
                self.families.push(Family {
                    ty,
                    unit: f.unit,
                    help: if unit.is_empty() {
                        format!("OpenTelemetry metric {name}")
                    } else {
                        format!("OpenTelemetry metric {name}, unit {unit}")
                    },
                    series: BTreeMap::new(),
                    proc_origins: Vec::new(),
                });
                self.by_name.insert(f.name, self.families.len() - 1);
                Some(self.families.len() - 1)
            }
        });
        if found.is_none() {
            tracing::warn!(
                "prometheus: metric {name:?} ({unit:?}, {}) has no usable or unique Prometheus name; not exported there",
                ty.as_str()
            );
        }
        if self.names.len() < MAX_FAMILIES * 4 {
            self.names.insert(self.key.clone(), found);
        }
        found
    }

    fn keep(skip: &[String], key: &str) -> bool {
        !skip.iter().any(|s| s == key)
    }

    fn ingest_metrics(&mut self, resource: &[KeyValue], metrics: &[Metric], t: u32) {
        for m in metrics {
            let Some(fi) = self.family_for(&m.name, &m.unit, type_of(m.kind)) else {
                self.dropped += 1;
                continue;
            };
            self.labels.clear();
            Attrs::Kv(&m.attributes).for_each(|a| self.labels.push(a.key, a.val));
            for kv in resource {
                if Self::keep(&self.skip, &kv.key) {
                    self.labels.push(&kv.key, (&kv.value).into());
                }
            }
            self.line.clear();
            self.labels.write(&mut self.line);
            let sample = Sample {
                value: m.value,
                seen: t,
            };
            let series = &mut self.families[fi].series;
            if let Some(s) = series.get_mut(self.line.as_str()) {
                *s = sample;
            } else if self.series < MAX_SERIES {
                series.insert(self.line.as_str().into(), sample);
                self.series += 1;
            } else {
                self.dropped += 1;
            }
        }
    }

    fn ingest_process(&mut self, mut p: ProcessRecord, t: u32) {
        for pt in process_points(&p) {
            if let Some(fi) = self.family_for(pt.name, pt.unit, type_of(pt.kind)) {
                let o = &mut self.families[fi].proc_origins;
                if !o.iter().any(|(n, u)| n == pt.name && u == pt.unit) {
                    o.push((pt.name.to_string(), pt.unit.to_string()));
                }
            }
        }
        // Not labels, and the command line is the record's largest part.
        p.command_args.clear();
        p.group_name.clear();
        let strings = RefCell::new(&mut self.strings);
        let rec = p.map_strings(|s| intern(&mut strings.borrow_mut(), s));
        let proc = Proc { rec, seen: t };
        match self.procs.binary_search_by_key(&p.pid, |q| q.rec.pid) {
            Ok(i) => self.procs[i] = proc,
            Err(i) if self.procs.len() < MAX_PROCESSES => self.procs.insert(i, proc),
            Err(_) => self.dropped += 1,
        }
    }

    /// Processes that did not change since their last record: still alive, sampled at
    /// `time_unix_nano` (their uptime moves on).
    fn refresh_processes(&mut self, time_unix_nano: u64, pids: &[u32], t: u32) {
        for pid in pids {
            if let Ok(i) = self.procs.binary_search_by_key(pid, |q| q.rec.pid) {
                let p = &mut self.procs[i];
                p.rec.time_unix_nano = time_unix_nano;
                p.seen = t;
            }
        }
    }

    /// Forget what was not refreshed within the TTL.
    pub fn expire(&mut self, now: Instant) {
        let t = self.secs(now);
        let ttl = self.ttl;
        let fresh = move |seen: u32| t.saturating_sub(seen) <= ttl;
        self.procs.retain(|p| fresh(p.seen));
        if self.procs.capacity() > 2 * self.procs.len() + 64 {
            self.procs.shrink_to_fit();
        }
        self.strings.retain(|s| Rc::strong_count(s) > 1);
        let mut n = 0;
        for f in &mut self.families {
            f.series.retain(|_, s| fresh(s.seen));
            n += f.series.len();
        }
        self.series = n;
    }

    /// Render from `cur` on until about `budget` more bytes are in `out` (a whole line more
    /// at most) or the end; true once everything (with `# EOF` in OpenMetrics) is written.
    pub fn render(
        &mut self,
        fmt: Format,
        cur: &mut Cursor,
        out: &mut String,
        budget: usize,
    ) -> bool {
        let limit = out.len().saturating_add(budget);
        // Every step writes something (or passes an empty family), so this ends.
        loop {
            *cur = match std::mem::take(cur) {
                Cursor::Start => {
                    self.write_target_info(fmt, out);
                    self.family_after(None)
                }
                Cursor::Family { name, stage } => self.render_family(fmt, name, stage, out, limit),
                Cursor::End => {
                    if fmt == Format::OpenMetrics {
                        out.push_str("# EOF\n");
                    }
                    Cursor::Done
                }
                Cursor::Done => Cursor::Done,
            };
            if *cur == Cursor::Done || out.len() >= limit {
                return *cur == Cursor::Done;
            }
        }
    }

    fn family_after(&self, name: Option<&str>) -> Cursor {
        let bound = match name {
            Some(n) => Bound::Excluded(n),
            None => Bound::Unbounded,
        };
        match self
            .by_name
            .range::<str, _>((bound, Bound::Unbounded))
            .next()
        {
            Some((n, _)) => Cursor::Family {
                name: n.clone(),
                stage: Stage::Head,
            },
            None => Cursor::End,
        }
    }

    fn write_target_info(&self, fmt: Format, out: &mut String) {
        let (family, ty) = match fmt {
            Format::Text => (TARGET_INFO, "gauge"),
            Format::OpenMetrics => (TARGET, "info"),
        };
        out.push_str(&format!(
            "# HELP {family} Target metadata\n# TYPE {family} {ty}\n{TARGET_INFO}{{{}}} 1\n",
            self.target
        ));
    }

    fn write_head(fmt: Format, name: &str, f: &Family, out: &mut String) {
        let suffix = if fmt == Format::Text && f.ty == Type::Counter {
            "_total"
        } else {
            ""
        };
        out.push_str(&format!("# HELP {name}{suffix} "));
        push_escaped(&f.help, fmt == Format::OpenMetrics, out);
        out.push_str(&format!("\n# TYPE {name}{suffix} {}\n", f.ty.as_str()));
        if fmt == Format::OpenMetrics && !f.unit.is_empty() {
            out.push_str(&format!("# UNIT {name} {}\n", f.unit));
        }
    }

    /// One step within a family: its head, some of its series, some of its processes.
    fn render_family(
        &mut self,
        fmt: Format,
        name: String,
        stage: Stage,
        out: &mut String,
        limit: usize,
    ) -> Cursor {
        let Some(&fi) = self.by_name.get(&name) else {
            return self.family_after(Some(&name));
        };
        let Store {
            families,
            procs,
            labels,
            skip,
            line,
            ..
        } = self;
        let f = &families[fi];
        let has_procs = !f.proc_origins.is_empty() && !procs.is_empty();
        let next = match stage {
            Stage::Head if f.series.is_empty() && !has_procs => None,
            Stage::Head => {
                Self::write_head(fmt, &name, f, out);
                Some(Stage::Series(None))
            }
            Stage::Series(after) => {
                let from = match &after {
                    Some(k) => Bound::Excluded(&**k),
                    None => Bound::Unbounded,
                };
                let mut last = None;
                for (k, s) in f.series.range::<str, _>((from, Bound::Unbounded)) {
                    push_line(&name, f.ty, k, s.value, out);
                    if out.len() >= limit {
                        last = Some(k.clone());
                        break;
                    }
                }
                Some(match last {
                    Some(k) => Stage::Series(Some(k)),
                    None => Stage::Procs(None),
                })
            }
            Stage::Procs(_) if !has_procs => None,
            Stage::Procs(after) => {
                let from = after.map_or(0, |pid| procs.partition_point(|q| q.rec.pid <= pid));
                let mut last = None;
                for p in &procs[from..] {
                    Self::write_process(&name, f, &p.rec, (labels, line), skip, out);
                    if out.len() >= limit {
                        last = Some(p.rec.pid);
                        break;
                    }
                }
                last.map(|pid| Stage::Procs(Some(pid)))
            }
        };
        match next {
            Some(stage) => Cursor::Family { name, stage },
            None => self.family_after(Some(&name)),
        }
    }

    /// The lines of family `f` that process `p` has.
    fn write_process(
        name: &str,
        f: &Family,
        p: &ProcessRecord<Rc<str>>,
        (labels, text): (&mut LabelBuf, &mut String),
        skip: &[String],
        out: &mut String,
    ) {
        // The command line and creation time are not labels: not built here.
        let mut attrs = [BLANK; MAX_PROCESS_ATTRS];
        let n = process_resource(p, "", &mut attrs);
        let resource = &attrs[..n];
        for pt in process_points(p) {
            if type_of(pt.kind) != f.ty
                || !f
                    .proc_origins
                    .iter()
                    .any(|(n, u)| n == pt.name && u == pt.unit)
            {
                continue;
            }
            labels.clear();
            pt.attrs.for_each(|a| labels.push(a.key, a.val));
            for a in resource.iter().filter(|a| Self::keep(skip, a.key)) {
                labels.push(a.key, a.val);
            }
            text.clear();
            labels.write(text);
            push_line(name, f.ty, text, pt.value, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::convert::tests::process;

    fn defaults() -> ResourceDefaults {
        ResourceDefaults::new("host-a")
    }

    fn metric(
        name: &str,
        unit: &str,
        kind: MetricKind,
        v: MetricValue,
        attrs: Vec<KeyValue>,
    ) -> Metric {
        Metric {
            name: name.into(),
            unit: unit.into(),
            kind,
            start_time_unix_nano: 1,
            time_unix_nano: 2,
            value: v,
            attributes: attrs,
        }
    }

    fn host_record() -> Record {
        Record::Metrics {
            resource: vec![KeyValue::str("host.name", "host-a")],
            metrics: vec![
                metric(
                    "system.memory.usage",
                    "By",
                    MetricKind::Gauge,
                    MetricValue::I64(1024),
                    vec![KeyValue::str("system.memory.state", "used")],
                ),
                metric(
                    "system.cpu.time",
                    "s",
                    MetricKind::Sum { monotonic: true },
                    MetricValue::F64(12.5),
                    vec![KeyValue::str("cpu.mode", "user")],
                ),
            ],
        }
    }

    fn render_all(s: &mut Store, fmt: Format, budget: usize) -> String {
        let mut cur = Cursor::default();
        let mut out = String::new();
        let mut steps = 0;
        while !s.render(fmt, &mut cur, &mut out, budget) {
            steps += 1;
            assert!(steps < 100_000, "render does not end");
        }
        out
    }

    #[test]
    fn text_format_of_hosts_and_processes() {
        let t0 = Instant::now();
        let mut s = Store::new(&defaults(), Duration::from_secs(3), t0);
        s.ingest(host_record(), t0);
        s.ingest(Record::Process(Box::new(process())), t0);
        let mut other = process();
        other.pid = 7;
        other.executable_name = "sshd".into();
        s.ingest(Record::Process(Box::new(other)), t0);
        let text = render_all(&mut s, Format::Text, 1 << 20);
        let want = [
            "# HELP target_info Target metadata",
            "# TYPE target_info gauge",
            r#"target_info{host_name="host-a",service_name="vigil",service_version=""#,
            "# HELP process_cpu_time_seconds_total OpenTelemetry metric process.cpu.time, unit s",
            "# TYPE process_cpu_time_seconds_total counter",
            r#"process_cpu_time_seconds_total{cpu_mode="user",process_executable_name="sshd",process_pid="7",process_user_name="alice"} 1.5"#,
            r#"process_cpu_time_seconds_total{cpu_mode="system",process_executable_name="postgres",process_pid="4242",process_user_name="alice"} 0.25"#,
            "# TYPE process_memory_usage_bytes gauge",
            r#"process_memory_usage_bytes{process_executable_name="postgres",process_pid="4242",process_user_name="alice"} 1048576"#,
            "# TYPE process_unix_file_descriptor_count gauge",
            "# TYPE system_cpu_time_seconds_total counter",
            r#"system_cpu_time_seconds_total{cpu_mode="user"} 12.5"#,
            r#"system_memory_usage_bytes{system_memory_state="used"} 1024"#,
        ];
        for w in want {
            assert!(text.contains(w), "missing {w:?} in\n{text}");
        }
        for absent in [
            "command_line",
            "linux_state",
            "parent_pid",
            "# EOF",
            "# UNIT",
            "group",
        ] {
            assert!(!text.contains(absent), "{absent:?} in\n{text}");
        }
        // Families are grouped: each TYPE line once, all of a family's samples together.
        let types: Vec<&str> = text.lines().filter(|l| l.starts_with("# TYPE")).collect();
        let mut sorted = types.clone();
        sorted.dedup();
        assert_eq!(types, sorted);
        let pos = |p: &str| text.find(p).unwrap();
        assert!(
            pos("process_memory_usage_bytes{")
                > pos(
                    "process_cpu_time_seconds_total{cpu_mode=\"system\",process_executable_name=\"sshd\""
                )
        );
    }

    #[test]
    fn openmetrics_format() {
        let t0 = Instant::now();
        let mut s = Store::new(&defaults(), Duration::from_secs(3), t0);
        s.ingest(host_record(), t0);
        s.ingest(Record::Process(Box::new(process())), t0);
        let om = render_all(&mut s, Format::OpenMetrics, 1 << 20);
        for w in [
            "# TYPE target info\n",
            "target_info{",
            "# HELP process_cpu_time_seconds OpenTelemetry metric process.cpu.time, unit s\n# TYPE process_cpu_time_seconds counter\n# UNIT process_cpu_time_seconds seconds\n",
            "process_cpu_time_seconds_total{cpu_mode=\"user\"",
            "# TYPE process_thread_count gauge\nprocess_thread_count{",
            "# UNIT system_memory_usage_bytes bytes\n",
        ] {
            assert!(om.contains(w), "missing {w:?} in\n{om}");
        }
        assert!(om.ends_with("\n# EOF\n"), "{om}");
        assert!(!om.contains("# UNIT process_thread_count"));
    }

    #[test]
    fn small_budgets_give_the_same_text() {
        let t0 = Instant::now();
        let mut s = Store::new(&defaults(), Duration::from_secs(3), t0);
        s.ingest(host_record(), t0);
        for pid in 1..50 {
            let mut p = process();
            p.pid = pid;
            s.ingest(Record::Process(Box::new(p)), t0);
        }
        for fmt in [Format::Text, Format::OpenMetrics] {
            let whole = render_all(&mut s, fmt, usize::MAX);
            for budget in [0, 1, 7, 100, 4096] {
                assert_eq!(render_all(&mut s, fmt, budget), whole, "budget {budget}");
            }
        }
    }

    #[test]
    fn entries_expire_and_logs_are_not_metrics() {
        let t0 = Instant::now();
        let mut s = Store::new(&defaults(), Duration::from_secs(3), t0);
        s.ingest(host_record(), t0);
        s.ingest(Record::Process(Box::new(process())), t0);
        s.ingest(
            Record::Log {
                resource: vec![],
                log: vigil_ipc_proto::LogRecord {
                    time_unix_nano: 1,
                    observed_time_unix_nano: 1,
                    severity_number: 9,
                    severity_text: "INFO".into(),
                    event_name: "Segfault".into(),
                    body: "x".into(),
                    attributes: vec![],
                },
            },
            t0,
        );
        assert_eq!(s.len(), (1, 2));
        // Refreshed host, silent process.
        s.ingest(host_record(), t0 + Duration::from_secs(3));
        s.expire(t0 + Duration::from_secs(3));
        assert_eq!(s.len(), (1, 2));
        s.expire(t0 + Duration::from_secs(5));
        assert_eq!(s.len(), (0, 2));
        let text = render_all(&mut s, Format::Text, 1 << 20);
        assert!(!text.contains("process_"), "{text}");
        s.expire(t0 + Duration::from_secs(10));
        assert!(s.is_empty());
        assert!(
            s.strings.is_empty(),
            "interned names outlive their processes"
        );
        let text = render_all(&mut s, Format::Text, 1 << 20);
        assert_eq!(text.lines().count(), 3, "only target_info: {text}");
    }

    /// A process listed as unchanged stays (past the TTL of its record) with its uptime
    /// moved to the list's time; one not listed expires; an unknown pid is ignored.
    #[test]
    fn unchanged_processes_stay_alive() {
        let t0 = Instant::now();
        let mut s = Store::new(&defaults(), Duration::from_secs(3), t0);
        let mut other = process();
        other.pid = 7;
        s.ingest(Record::Process(Box::new(process())), t0);
        s.ingest(Record::Process(Box::new(other)), t0);
        let at = |secs| t0 + Duration::from_secs(secs);
        for secs in [2, 4, 6] {
            s.ingest(
                Record::ProcessesUnchanged {
                    time_unix_nano: 2_000_000_000_000 + secs * 1_000_000_000,
                    pids: vec![4242, 99],
                },
                at(secs),
            );
            s.expire(at(secs));
        }
        assert_eq!(s.len(), (1, 0), "pid 7 expired, 4242 kept alive");
        let text = render_all(&mut s, Format::Text, 1 << 20);
        let uptime = text
            .lines()
            .find(|l| l.starts_with("process_uptime") && l.contains("4242"))
            .unwrap_or_else(|| panic!("{text}"));
        assert!(uptime.ends_with(" 1006.0"), "{uptime}");
    }

    /// Numbers marked unchanged (left out by the exporters) are still the store's values.
    #[test]
    fn numbers_marked_unchanged_are_kept() {
        let t0 = Instant::now();
        let mut s = Store::new(&defaults(), Duration::from_secs(3), t0);
        let mut p = process();
        p.unchanged = u16::MAX;
        s.ingest(Record::Process(Box::new(p)), t0);
        let text = render_all(&mut s, Format::Text, 1 << 20);
        let rss = text
            .lines()
            .find(|l| l.starts_with("process_memory_usage") && l.contains("4242"))
            .unwrap_or_else(|| panic!("{text}"));
        assert!(
            rss.ends_with(&format!(" {}", process().memory_rss_bytes)),
            "{rss}"
        );
    }

    #[test]
    fn resources_tell_series_apart_and_defaults_are_not_labels() {
        let t0 = Instant::now();
        let mut s = Store::new(&defaults(), Duration::from_secs(3), t0);
        let cg = |id: &str, v: i64| Record::Metrics {
            resource: vec![
                KeyValue::str("host.name", "host-a"),
                KeyValue::str("container.id", id),
                KeyValue::str("service.name", "vigil"),
            ],
            metrics: vec![metric(
                "container.memory.usage",
                "By",
                MetricKind::Gauge,
                MetricValue::I64(v),
                vec![],
            )],
        };
        s.ingest(cg("aaa", 1), t0);
        s.ingest(cg("bbb", 2), t0);
        s.ingest(cg("aaa", 3), t0);
        let text = render_all(&mut s, Format::Text, 1 << 20);
        assert!(
            text.contains("container_memory_usage_bytes{container_id=\"aaa\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("container_memory_usage_bytes{container_id=\"bbb\"} 2\n"),
            "{text}"
        );
        assert_eq!(s.len(), (0, 2));
    }

    #[test]
    fn label_values_are_escaped_and_colliding_names_merged() {
        let t0 = Instant::now();
        let mut s = Store::new(&defaults(), Duration::from_secs(3), t0);
        s.ingest(
            Record::Metrics {
                resource: vec![KeyValue::str("linux.cgroup.path", "/a\"b\\c\nd")],
                metrics: vec![metric(
                    "m",
                    "",
                    MetricKind::Gauge,
                    MetricValue::F64(f64::NAN),
                    vec![
                        KeyValue::str("a.b", "2"),
                        KeyValue::str("a_b", "1"),
                        KeyValue::i64("n", -3),
                    ],
                )],
            },
            t0,
        );
        let text = render_all(&mut s, Format::Text, 1 << 20);
        assert!(
            text.contains(r#"m{a_b="2;1",linux_cgroup_path="/a\"b\\c\nd",n="-3"} NaN"#),
            "{text}"
        );
    }

    #[test]
    fn clashing_types_drop_the_later_metric() {
        let t0 = Instant::now();
        let mut s = Store::new(&defaults(), Duration::from_secs(3), t0);
        let rec = |name: &str, kind| Record::Metrics {
            resource: vec![],
            metrics: vec![metric(name, "", kind, MetricValue::I64(1), vec![])],
        };
        s.ingest(rec("x", MetricKind::Gauge), t0);
        s.ingest(rec("x", MetricKind::Sum { monotonic: true }), t0);
        s.ingest(rec("y", MetricKind::Sum { monotonic: true }), t0);
        s.ingest(rec("y_total", MetricKind::Gauge), t0);
        s.ingest(rec("target", MetricKind::Gauge), t0);
        s.ingest(rec("z", MetricKind::Sum { monotonic: false }), t0);
        assert_eq!(s.dropped, 3);
        let text = render_all(&mut s, Format::Text, 1 << 20);
        assert!(text.contains("# TYPE x gauge\n"), "{text}");
        assert!(text.contains("# TYPE y_total counter\n"), "{text}");
        assert!(text.contains("# TYPE z gauge\n"), "{text}");
        assert_eq!(text.matches("# TYPE").count(), 4, "{text}");
    }
}
