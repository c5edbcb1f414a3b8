//! Kernel events from /dev/kmsg (descriptor opened by the privhelper; parsed here, with no
//! privilege). Every line goes through:
//!
//! 1. the record format ([`record`]), sequence gaps counted as lost lines;
//! 2. resume and lookback: lines the journal already holds, or (first start) older than
//!    `collector.kmsg_lookback`, are not shipped, only replayed into the conditions;
//! 3. continuation fragments joined;
//! 4. the rules ([`rules`], NPD's file format; one `RegexSet` pass, [`matcher`]): an event per
//!    matching reason, named as NPD names it, with vigil's parses ([`enrich`]), conditions and
//!    counters ([`problems`]); an oops, BUG, warning, hung task, lockup, RCU stall or OOM report
//!    is one event with its stack ([`incident`]);
//! 5. other lines at or above `collector.kmsg_log_level` become plain logs, limited per source
//!    ([`limit`]).

pub mod enrich;
pub mod incident;
pub mod limit;
pub mod matcher;
pub mod options;
pub mod problems;
pub mod record;
pub mod rules;

use std::borrow::Cow;
use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use vigil_ipc_proto::pagebuf::PageBuf;
use vigil_ipc_proto::{ATTR_KMSG_SEQ, KeyValue, LogRecord, Record};

use self::enrich::{OomContext, enrich, oom_pid};
use self::incident::{Detail, INCIDENT_EVENTS, Incident, attach, is_oom_report};
use self::limit::{Limiter, source_key};
use self::matcher::{Matcher, Target};
pub use self::options::KmsgOptions;
use self::problems::{Change, Problems};
pub use self::record::{KmsgError, KmsgRecord, MAX_MESSAGE, parse_record, severity};
pub use self::rules::{RuleError, RuleSet, RuleType};
use crate::util::{Stamp, now_unix_nano};

/// Records read per wake-up at most (one busy kernel cannot starve the loop).
pub const READ_BUDGET: usize = 4096;
/// Events of one reason at once, then [`EVENT_RATE`] per second (kernel time): generous, a
/// bound for a storm (a dying disk's I/O errors), not a filter; the counters and conditions
/// still see every match.
pub const EVENT_BURST: u32 = 5000;
pub const EVENT_RATE: u32 = 500;
/// How long a continued line waits for its next fragment.
pub const JOIN_WAIT: Duration = Duration::from_millis(100);
/// Memory-cgroup summaries kept for the OOM kill lines that follow them.
const MAX_OOM_CONTEXTS: usize = 1024;

#[derive(Debug, Default, Clone, Copy)]
pub struct KmsgStats {
    pub records: u64,
    pub events: u64,
    pub parse_errors: u64,
    /// Reads answered EPIPE: the ring overwrote records before they were read.
    pub overwritten: u64,
    /// Lines lost that way (gaps in the sequence numbers).
    pub lost: u64,
    pub skipped_resumed: u64,
    /// First start: lines older than the lookback, not shipped.
    pub skipped_lookback: u64,
    /// Already-shipped lines that restored a condition after a restart.
    pub replayed: u64,
    /// Plain lines shipped, dropped by the per-source limit, below the severity threshold.
    pub logs: u64,
    pub logs_dropped: u64,
    pub logs_below_level: u64,
    pub events_dropped: u64,
    /// Detail lines absorbed into an incident.
    pub incident_lines: u64,
    /// Continuation fragments joined to their line.
    pub joined: u64,
}

/// One kernel line as the pipeline sees it.
#[derive(Debug, Clone)]
struct Line<'a> {
    level: u8,
    facility: u32,
    seq: u64,
    ts: u64,
    msg: Cow<'a, str>,
    subsystem: Option<Cow<'a, str>>,
    device: Option<Cow<'a, str>>,
}

impl<'a> Line<'a> {
    fn of(r: &KmsgRecord<'a>) -> Line<'a> {
        Line {
            level: r.level,
            facility: r.facility,
            seq: r.seq,
            ts: r.ts_usec,
            msg: String::from_utf8_lossy(r.message),
            subsystem: r.dict_value(b"SUBSYSTEM").map(String::from_utf8_lossy),
            device: r.dict_value(b"DEVICE").map(String::from_utf8_lossy),
        }
    }

    fn into_owned(self) -> Line<'static> {
        let own = |c: Cow<'_, str>| Cow::Owned(c.into_owned());
        Line {
            msg: own(self.msg),
            subsystem: self.subsystem.map(own),
            device: self.device.map(own),
            ..self
        }
    }
}

/// Turns kmsg records into event log records, plain log records and the kernel metrics.
pub struct KmsgParser {
    pub boot_time_ns: u64,
    pub resume_after: Option<u64>,
    pub resource: Vec<KeyValue>,
    opts: KmsgOptions,
    rules: RuleSet,
    matcher: Matcher,
    pub problems: Problems,
    detail: Detail,
    pending: Option<Incident>,
    held: Option<(Line<'static>, Instant)>,
    /// pid → the `oom-kill:` summary naming it, for the "Killed process" line after it.
    oom: HashMap<i64, OomContext>,
    logs: Limiter,
    events: Limiter,
    next_seq: Option<u64>,
    /// Kernel time before which a first start ships nothing (lookback).
    cutoff_us: Option<u64>,
    hits: Vec<Target>,
    pub stats: KmsgStats,
}

impl KmsgParser {
    /// The built-in rules and [`KmsgOptions::default`] (every line in the ring, warning and
    /// above shipped): tests and benches.
    pub fn new(resource: Vec<KeyValue>, boot_time_ns: u64, resume_after: Option<u64>) -> Self {
        let rules = RuleSet::load(true, &[]).expect("built-in rules load (unit-tested)");
        Self::with_rules(
            resource,
            boot_time_ns,
            resume_after,
            rules,
            KmsgOptions::default(),
        )
        .expect("built-in rules compile (unit-tested)")
    }

    /// The rules' matching caches start empty again ([`Matcher::renew`]): for the end of the
    /// start-up, after the whole ring was matched.
    pub fn renew_matcher(&mut self) {
        if let Err(e) = self.matcher.renew(&self.rules) {
            tracing::warn!("kernel rules not recompiled (the old ones stay): {e}");
        }
    }

    pub fn with_rules(
        resource: Vec<KeyValue>,
        boot_time_ns: u64,
        resume_after: Option<u64>,
        rules: RuleSet,
        opts: KmsgOptions,
    ) -> Result<Self, RuleError> {
        let matcher = Matcher::new(&rules)?;
        let cutoff_us = opts
            .lookback
            .map(|d| monotonic_us().saturating_sub(d.as_micros() as u64));
        Ok(KmsgParser {
            boot_time_ns,
            resume_after,
            resource,
            logs: Limiter::new(opts.log_rate, opts.log_burst),
            events: Limiter::new(EVENT_RATE, EVENT_BURST),
            opts,
            problems: Problems::new(&rules),
            rules,
            matcher,
            detail: Detail::new(),
            pending: None,
            held: None,
            oom: HashMap::new(),
            next_seq: None,
            cutoff_us,
            hits: Vec::new(),
            stats: KmsgStats::default(),
        })
    }

    /// One raw record as read from /dev/kmsg.
    pub fn feed(&mut self, raw: &[u8], out: &mut Vec<Record>) {
        let r = match parse_record(raw) {
            Ok(r) => r,
            Err(_) => {
                self.stats.parse_errors += 1;
                return;
            }
        };
        self.stats.records += 1;
        if let Some(n) = self.next_seq
            && r.seq > n
        {
            self.stats.lost += r.seq - n;
        }
        self.next_seq = Some(r.seq.saturating_add(1));
        let line = Line::of(&r);
        let old = self.cutoff_us.is_some_and(|c| line.ts < c);
        if self.resume_after.is_some_and(|s| line.seq <= s) {
            // Shipped before the restart: conditions come back (within the lookback, as NPD
            // re-reads its lookback), nothing is shipped again.
            self.stats.skipped_resumed += 1;
            self.replay(&line, !old);
        } else if self.resume_after.is_none() && old {
            self.stats.skipped_lookback += 1;
            self.replay(&line, false);
        } else {
            self.join(line, r.flag, out);
        }
    }

    /// An already-shipped or too-old line: counter windows always (they reach back on their
    /// own), permanent conditions when `conditions`; no event, no count.
    fn replay(&mut self, l: &Line<'_>, conditions: bool) {
        let t = l.msg.trim();
        let mut hits = std::mem::take(&mut self.hits);
        self.matcher.matches(t, &mut hits);
        self.filter_hits(t, &mut hits);
        let mut restored = false;
        for h in &hits {
            let (idx, delta) = match *h {
                Target::Rule(i) => (i, 1),
                Target::Revert(i) => (i, -1),
            };
            let rule = &self.rules.rules[idx];
            let sets = match rule.counter {
                Some(_) => self.problems.counter_hit(rule, idx, l.ts, delta),
                None => conditions && rule.kind == RuleType::Permanent,
            };
            if sets && delta > 0 {
                restored |= self.problems.set(idx, &rule.reason, t).is_some();
            }
        }
        self.stats.replayed += u64::from(restored);
        self.hits = hits;
    }

    /// Continuation fragments: a `c` record waits [`JOIN_WAIT`] for the `+` records that
    /// continue it (kernels before 5.10); on newer kernels a `c` fragment arrives alone.
    fn join(&mut self, line: Line<'_>, flag: u8, out: &mut Vec<Record>) {
        if flag == b'+'
            && let Some((h, _)) = &mut self.held
        {
            h.msg.to_mut().push_str(&line.msg);
            self.stats.joined += 1;
            return;
        }
        if let Some((h, _)) = self.held.take() {
            self.live(h, out);
        }
        if flag == b'c' {
            self.held = Some((line.into_owned(), Instant::now()));
            return;
        }
        self.live(line, out);
    }

    fn live(&mut self, l: Line<'_>, out: &mut Vec<Record>) {
        let now = Instant::now();
        let t = l.msg.trim();
        let mut hits = std::mem::take(&mut self.hits);
        self.matcher.matches(t, &mut hits);
        self.filter_hits(t, &mut hits);
        if let Some(ctx) = OomContext::parse(t) {
            if self.oom.len() >= MAX_OOM_CONTEXTS {
                self.oom.clear();
            }
            self.oom.insert(ctx.pid, ctx);
        }
        if !self.absorbed(&l, t, &hits, now, out) {
            if hits.is_empty() {
                self.no_rule(&l, t, now, out);
            } else {
                self.rule_hits(&l, t, &hits, now, out);
            }
        }
        self.hits = hits;
    }

    /// A file's `skipList` lines do not match its rules; in a `firstMatch` file only the first
    /// matching rule counts.
    fn filter_hits(&self, t: &str, hits: &mut Vec<Target>) {
        let mut seen = Vec::new();
        hits.retain(|h| {
            let f = self.rules.rules[h.rule()].file;
            let file = &self.rules.files[f];
            if file.skip.iter().any(|s| t.contains(s.as_str())) {
                return false;
            }
            if !file.first_match || matches!(h, Target::Revert(_)) {
                return true;
            }
            if seen.contains(&f) {
                return false;
            }
            seen.push(f);
            true
        });
    }

    /// Does the open incident take this line (a detail line, or an oops's die header)?
    fn absorbed(
        &mut self,
        l: &Line<'_>,
        t: &str,
        hits: &[Target],
        now: Instant,
        out: &mut Vec<Record>,
    ) -> bool {
        let Some(p) = &mut self.pending else {
            return false;
        };
        if !p.open_at(l.ts, now) {
            self.flush(out);
            return false;
        }
        let takes = if hits.is_empty() {
            self.detail.is_detail(&l.msg)
        } else {
            p.takes_die_header() && self.detail.is_die_header(t)
        };
        if takes {
            p.absorb(&l.msg, now);
            self.stats.incident_lines += 1;
        }
        takes
    }

    fn no_rule(&mut self, l: &Line<'_>, t: &str, now: Instant, out: &mut Vec<Record>) {
        if is_oom_report(t) {
            // "python3 invoked oom-killer: gfp_mask=...": the report ends with the kill.
            self.flush(out);
            self.pending = Some(Incident::new(None, l.ts, now));
            self.stats.incident_lines += 1;
            return;
        }
        self.plain(l, t, out);
    }

    /// Every reason the line matched is one event; counter rules count, revert patterns
    /// uncount.
    fn rule_hits(
        &mut self,
        l: &Line<'_>,
        t: &str,
        hits: &[Target],
        now: Instant,
        out: &mut Vec<Record>,
    ) {
        let mut reasons: Vec<(&str, Vec<usize>)> = Vec::new();
        for h in hits {
            match *h {
                Target::Revert(i) => {
                    self.problems.counter_hit(&self.rules.rules[i], i, l.ts, -1);
                }
                Target::Rule(i) => {
                    let reason = self.rules.rules[i].reason.as_str();
                    match reasons.iter_mut().find(|(r, _)| *r == reason) {
                        Some((_, v)) => v.push(i),
                        None => reasons.push((reason, vec![i])),
                    }
                }
            }
        }
        let reasons: Vec<(String, Vec<usize>)> = reasons
            .into_iter()
            .map(|(r, v)| (r.to_string(), v))
            .collect();
        for (reason, rules) in reasons {
            self.event(l, t, &reason, &rules, now, out);
        }
    }

    /// One event: attributes, conditions, count, rate limit, then shipped, or opened as an
    /// incident, or ending the OOM report it belongs to.
    fn event(
        &mut self,
        l: &Line<'_>,
        t: &str,
        reason: &str,
        rules: &[usize],
        now: Instant,
        out: &mut Vec<Record>,
    ) {
        let first = &self.rules.rules[rules[0]];
        let body = match &first.suffix {
            Some(s) => format!("{t}; {s}"),
            None => t.to_string(),
        };
        let mut attrs = Vec::new();
        enrich(reason, t, &mut attrs);
        if reason == "OOMKilling"
            && let Some(ctx) = oom_pid(t).and_then(|p| self.oom.remove(&p))
        {
            ctx.cgroup_attributes(&mut attrs);
        }
        attrs.push(KeyValue::str(
            "vigil.kernel.source",
            self.rules.files[first.file].source.as_str(),
        ));
        // Permanent when the match sets a condition (a counter rule only past its count).
        let kind = match self.conditions(l, reason, rules, &body, &mut attrs) {
            true => RuleType::Permanent,
            false => RuleType::Temporary,
        };
        attrs.push(KeyValue::str("vigil.kernel.rule.type", kind.as_str()));
        if let Some(&r) = rules
            .iter()
            .find(|&&r| self.rules.files[self.rules.rules[r].file].metrics)
        {
            self.problems.count(r);
        }
        if self.events.admit(reason, l.ts).is_none() {
            self.stats.events_dropped += 1;
            return;
        }
        let mut rec = self.log(l, reason, body, attrs);
        if INCIDENT_EVENTS.contains(&reason) {
            self.flush(out);
            self.pending = Some(Incident::new(Some(rec), l.ts, now));
            return;
        }
        if reason == "OOMKilling"
            && let Some(mut p) = self.pending.take_if(|p| p.is_oom_report())
            && let Record::Log { log, .. } = &mut rec
        {
            attach(&mut log.attributes, p.take_stack());
        }
        self.stats.events += 1;
        out.push(rec);
    }

    /// The conditions this match sets (permanent rules; counter rules past their count);
    /// whether there was one.
    fn conditions(
        &mut self,
        l: &Line<'_>,
        reason: &str,
        rules: &[usize],
        body: &str,
        attrs: &mut Vec<KeyValue>,
    ) -> bool {
        let mut named: Option<(String, bool)> = None;
        for &r in rules {
            let rule = &self.rules.rules[r];
            let sets = match rule.counter {
                Some(_) => self.problems.counter_hit(rule, r, l.ts, 1),
                None => rule.kind == RuleType::Permanent,
            };
            if !sets {
                continue;
            }
            let changed = self.problems.set(r, reason, body).is_some();
            if let Some(c) = self.problems.condition_of(r)
                && named.as_ref().is_none_or(|(_, ch)| !ch && changed)
            {
                named = Some((c.kind.clone(), changed));
            }
        }
        let set = named.is_some();
        if let Some((kind, changed)) = named {
            condition_attrs(&kind, true, changed, attrs);
        }
        set
    }

    fn plain(&mut self, l: &Line<'_>, t: &str, out: &mut Vec<Record>) {
        if self.opts.log_level.is_none_or(|max| l.level > max) {
            self.stats.logs_below_level += 1;
            return;
        }
        if t.is_empty() || self.detail.is_cut_here(t) {
            return;
        }
        let dropped = match self.logs.admit(source_key(t), l.ts) {
            Some(n) => n,
            None => {
                self.stats.logs_dropped += 1;
                return;
            }
        };
        let mut attrs = Vec::new();
        if let Some(s) = &l.subsystem {
            attrs.push(KeyValue::str("linux.kmsg.subsystem", s.as_ref()));
        }
        if let Some(d) = &l.device {
            attrs.push(KeyValue::str("linux.kmsg.device", d.as_ref()));
        }
        if dropped > 0 {
            attrs.push(KeyValue::i64("linux.kmsg.dropped", crate::util::i(dropped)));
        }
        self.stats.logs += 1;
        out.push(self.log(l, "", l.msg.trim_end().to_string(), attrs));
    }

    fn log(&self, l: &Line<'_>, event: &str, body: String, mut attrs: Vec<KeyValue>) -> Record {
        let (sev, text) = severity(l.level);
        attrs.push(KeyValue::i64(ATTR_KMSG_SEQ, crate::util::i(l.seq)));
        attrs.push(KeyValue::i64("linux.kmsg.facility", i64::from(l.facility)));
        Record::Log {
            resource: self.resource.clone(),
            log: LogRecord {
                time_unix_nano: self.boot_time_ns.saturating_add(l.ts.saturating_mul(1000)),
                observed_time_unix_nano: now_unix_nano(),
                severity_number: sev,
                severity_text: text.into(),
                event_name: event.into(),
                body,
                attributes: attrs,
            },
        }
    }

    fn flush(&mut self, out: &mut Vec<Record>) {
        if let Some(rec) = self.pending.take().and_then(Incident::finish) {
            self.stats.events += 1;
            out.push(rec);
        }
    }

    /// Ship the incident whose lines stopped coming, and a continued line nothing continued.
    pub fn flush_expired(&mut self, now: Instant, out: &mut Vec<Record>) {
        if self.pending.as_ref().is_some_and(|p| now >= p.deadline()) {
            self.flush(out);
        }
        if self
            .held
            .as_ref()
            .is_some_and(|(_, since)| now >= *since + JOIN_WAIT)
            && let Some((h, _)) = self.held.take()
        {
            self.live(h, out);
        }
    }

    pub fn deadline(&self) -> Option<Instant> {
        let p = self.pending.as_ref().map(Incident::deadline);
        let h = self.held.as_ref().map(|(_, since)| *since + JOIN_WAIT);
        p.into_iter().chain(h).min()
    }

    /// Every cycle: counter conditions that cleared (an event each), then the condition
    /// gauges and problem counters.
    pub fn on_cycle(&mut self, st: Stamp, out: &mut Vec<Record>) {
        for ch in self.problems.expire(&self.rules.rules, monotonic_us()) {
            out.push(self.change_event(&ch));
        }
        let mut metrics = Vec::new();
        self.problems.metrics(st, &mut metrics);
        if !metrics.is_empty() {
            out.push(Record::Metrics {
                resource: self.resource.clone(),
                metrics,
            });
        }
    }

    /// A condition going back to false: an event named by its false reason.
    fn change_event(&mut self, ch: &Change) -> Record {
        let mut attributes = Vec::new();
        condition_attrs(&ch.kind, ch.status, true, &mut attributes);
        self.stats.events += 1;
        let now = now_unix_nano();
        Record::Log {
            resource: self.resource.clone(),
            log: LogRecord {
                time_unix_nano: now,
                observed_time_unix_nano: now,
                severity_number: 9,
                severity_text: "INFO".into(),
                event_name: ch.reason.clone(),
                body: ch.message.clone(),
                attributes,
            },
        }
    }
}

fn condition_attrs(kind: &str, status: bool, changed: bool, attrs: &mut Vec<KeyValue>) {
    attrs.push(KeyValue::str("vigil.kernel.condition.type", kind));
    attrs.push(KeyValue::str(
        "vigil.kernel.condition.status",
        if status { "True" } else { "False" },
    ));
    attrs.push(KeyValue {
        key: "vigil.kernel.condition.changed".into(),
        value: vigil_ipc_proto::AttrValue::Bool(changed),
    });
}

/// CLOCK_MONOTONIC in µs: the clock of the kernel lines' timestamps (both leave out suspend).
pub fn monotonic_us() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into the valid, owned `ts`.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    if rc != 0 {
        return 0;
    }
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000)
        .saturating_add(ts.tv_nsec as u64 / 1000)
}

/// The /dev/kmsg descriptor in the event loop.
pub struct KmsgSource {
    fd: OwnedFd,
    buf: PageBuf,
    pub parser: KmsgParser,
}

impl KmsgSource {
    pub fn new(fd: OwnedFd, parser: KmsgParser) -> Self {
        KmsgSource {
            fd,
            buf: PageBuf::new(16 * 1024),
            parser,
        }
    }

    /// Read what is there, at most [`READ_BUDGET`] records; how many were read.
    fn read_some(&mut self, out: &mut Vec<Record>) -> usize {
        let mut n = 0;
        while n < READ_BUDGET {
            match nix::unistd::read(&self.fd, &mut self.buf) {
                Ok(0) => break,
                Ok(len) => {
                    n += 1;
                    let (buf, parser) = (&self.buf[..len], &mut self.parser);
                    parser.feed(buf, out);
                }
                // Overwritten before we read it: the kernel moved us to the oldest record left.
                Err(nix::errno::Errno::EPIPE) => self.parser.stats.overwritten += 1,
                Err(nix::errno::Errno::EINTR) => {}
                Err(_) => break,
            }
        }
        n
    }

    /// At start, before the first cycle: the whole ring (conditions restored before the
    /// first metrics go out).
    pub fn drain(&mut self, out: &mut Vec<Record>) {
        for _ in 0..64 {
            if self.read_some(out) < READ_BUDGET {
                break;
            }
        }
    }
}

impl crate::event_loop::Source for KmsgSource {
    fn watch(&self, out: &mut Vec<RawFd>) {
        out.push(self.fd.as_raw_fd());
    }

    fn on_readable(&mut self, out: &mut Vec<Record>) {
        self.read_some(out);
    }

    fn on_tick(&mut self, now: Instant, out: &mut Vec<Record>) {
        self.parser.flush_expired(now, out);
    }

    fn on_cycle(&mut self, st: Stamp, out: &mut Vec<Record>) {
        self.parser.on_cycle(st, out);
    }

    fn end_warm_up(&mut self) {
        self.parser.renew_matcher();
    }

    fn deadline(&self) -> Option<Instant> {
        self.parser.deadline()
    }

    fn counters(&self) -> Vec<(String, u64)> {
        let s = self.parser.stats;
        [
            ("kmsg_records", s.records),
            ("kmsg_events", s.events),
            ("kmsg_parse_errors", s.parse_errors),
            ("kmsg_overwritten", s.overwritten),
            ("kmsg_lost", s.lost),
            ("kmsg_skipped_resumed", s.skipped_resumed),
            ("kmsg_skipped_lookback", s.skipped_lookback),
            ("kmsg_replayed", s.replayed),
            ("kmsg_logs", s.logs),
            ("kmsg_logs_dropped", s.logs_dropped),
            ("kmsg_logs_below_level", s.logs_below_level),
            ("kmsg_events_dropped", s.events_dropped),
            ("kmsg_incident_lines", s.incident_lines),
            ("kmsg_joined", s.joined),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }
}
