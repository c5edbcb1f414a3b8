//! Conditions and counters users alert on: NPD's problem_gauge as `vigil.kernel.condition`
//! (1 while a condition holds with that reason, else 0, for every (type, reason) a permanent
//! rule can set) and NPD's problem_counter as `vigil.kernel.problems` (every rule match, per
//! reason). A permanent rule's condition holds until the agent restarts, as in NPD; a
//! log-counter rule's holds while enough matches fall in its window, and clears when they no
//! longer do (NPD's custom plugin semantics).

use std::collections::VecDeque;

use vigil_ipc_proto::{KeyValue, Metric};

use super::rules::{Rule, RuleSet, RuleType};
use crate::util::{Stamp, gauge_i64, i, sum_i64};

/// Matches a counter rule remembers (older ones are forgotten first).
pub const MAX_WINDOW_ENTRIES: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    pub kind: String,
    /// Reason and message while false (the file's `conditions` entry).
    pub default_reason: String,
    pub default_message: String,
    pub status: bool,
    pub reason: String,
}

/// A condition that changed, for the event that says so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub kind: String,
    pub status: bool,
    pub reason: String,
    pub message: String,
}

#[derive(Debug, Default)]
struct Window {
    /// (kernel time µs, +1 match / -1 revert), oldest first.
    hits: VecDeque<(u64, i32)>,
}

pub struct Problems {
    reasons: Vec<String>,
    counts: Vec<u64>,
    /// Rule → index into `reasons` (None: its file does not report metrics).
    reason_of: Vec<Option<usize>>,
    /// Rule → index into `conditions` (permanent rules).
    condition_of: Vec<Option<usize>>,
    pub conditions: Vec<Condition>,
    /// (condition, reason) pairs a rule can set, each a `vigil.kernel.condition` series.
    gauges: Vec<(usize, String)>,
    windows: Vec<Option<Window>>,
}

impl Problems {
    pub fn new(set: &RuleSet) -> Self {
        let conditions: Vec<Condition> = set
            .conditions
            .iter()
            .map(|c| Condition {
                kind: c.kind.clone(),
                default_reason: c.reason.clone(),
                default_message: c.message.clone(),
                status: false,
                reason: c.reason.clone(),
            })
            .collect();
        let mut p = Problems {
            reasons: Vec::new(),
            counts: Vec::new(),
            reason_of: Vec::with_capacity(set.rules.len()),
            condition_of: Vec::with_capacity(set.rules.len()),
            conditions,
            gauges: Vec::new(),
            windows: Vec::with_capacity(set.rules.len()),
        };
        for r in &set.rules {
            let metrics = set.files[r.file].metrics;
            p.add_rule(r, metrics);
        }
        p
    }

    fn add_rule(&mut self, r: &Rule, metrics: bool) {
        let reason = metrics.then(|| {
            self.reasons
                .iter()
                .position(|x| *x == r.reason)
                .unwrap_or_else(|| {
                    self.reasons.push(r.reason.clone());
                    self.counts.push(0);
                    self.reasons.len() - 1
                })
        });
        self.reason_of.push(reason);
        let cond = r
            .condition
            .as_ref()
            .filter(|_| r.kind == RuleType::Permanent)
            .and_then(|c| self.conditions.iter().position(|x| x.kind == *c));
        if let Some(c) = cond.filter(|_| metrics)
            && !self.gauges.iter().any(|(k, s)| *k == c && *s == r.reason)
        {
            self.gauges.push((c, r.reason.clone()));
        }
        self.condition_of.push(cond);
        self.windows
            .push(r.counter.as_ref().map(|_| Window::default()));
    }

    /// One match of `rule`'s reason (once per line and reason).
    pub fn count(&mut self, rule: usize) {
        if let Some(k) = self.reason_of[rule] {
            self.counts[k] += 1;
        }
    }

    pub fn count_of(&self, reason: &str) -> Option<u64> {
        let k = self.reasons.iter().position(|r| r == reason)?;
        Some(self.counts[k])
    }

    /// Whether `rule` sets a condition, and which.
    pub fn condition_of(&self, rule: usize) -> Option<&Condition> {
        self.condition_of[rule].map(|c| &self.conditions[c])
    }

    /// A permanent rule matched: its condition holds with its reason. `Some` when that is a
    /// change.
    pub fn set(&mut self, rule: usize, reason: &str, message: &str) -> Option<Change> {
        let c = &mut self.conditions[self.condition_of[rule]?];
        if c.status && c.reason == reason {
            return None;
        }
        c.status = true;
        c.reason = reason.to_string();
        Some(Change {
            kind: c.kind.clone(),
            status: true,
            reason: reason.to_string(),
            message: message.to_string(),
        })
    }

    /// A counter rule's pattern (`+1`) or revert pattern (`-1`) matched at kernel time `ts`:
    /// whether the rule's threshold is now reached.
    pub fn counter_hit(&mut self, rule: &Rule, idx: usize, ts: u64, delta: i32) -> bool {
        let (Some(c), Some(Some(w))) = (&rule.counter, self.windows.get_mut(idx)) else {
            return false;
        };
        if ts < c.delay_us {
            return false;
        }
        if w.hits.len() >= MAX_WINDOW_ENTRIES {
            w.hits.pop_front();
        }
        w.hits.push_back((ts, delta));
        window_count(w, ts.saturating_sub(c.window_us)) >= i64::from(c.count)
    }

    /// Counter conditions whose matches fell out of their window by kernel time `now` clear
    /// (only when it was that rule's reason that set them).
    pub fn expire(&mut self, rules: &[Rule], now: u64) -> Vec<Change> {
        let mut out = Vec::new();
        for (idx, rule) in rules.iter().enumerate() {
            let (Some(c), Some(Some(w))) = (&rule.counter, self.windows.get_mut(idx)) else {
                continue;
            };
            let below = window_count(w, now.saturating_sub(c.window_us)) < i64::from(c.count);
            let Some(k) = self.condition_of[idx] else {
                continue;
            };
            let cond = &mut self.conditions[k];
            if below && cond.status && cond.reason == rule.reason {
                cond.status = false;
                cond.reason = cond.default_reason.clone();
                out.push(Change {
                    kind: cond.kind.clone(),
                    status: false,
                    reason: cond.default_reason.clone(),
                    message: cond.default_message.clone(),
                });
            }
        }
        out
    }

    /// `vigil.kernel.condition` per (type, reason) and `vigil.kernel.problems` per reason.
    pub fn metrics(&self, st: Stamp, out: &mut Vec<Metric>) {
        for (c, reason) in &self.gauges {
            let cond = &self.conditions[*c];
            let on = cond.status && cond.reason == *reason;
            out.push(gauge_i64(
                "vigil.kernel.condition",
                "1",
                st,
                i64::from(on),
                vec![
                    KeyValue::str("type", cond.kind.as_str()),
                    KeyValue::str("reason", reason.as_str()),
                ],
            ));
        }
        for (reason, n) in self.reasons.iter().zip(&self.counts) {
            out.push(sum_i64(
                "vigil.kernel.problems",
                "{problem}",
                st,
                i(*n),
                vec![KeyValue::str("reason", reason.as_str())],
            ));
        }
    }
}

/// Matches minus reverts at or after `from`; older entries are dropped.
fn window_count(w: &mut Window, from: u64) -> i64 {
    while w.hits.front().is_some_and(|(t, _)| *t < from) {
        w.hits.pop_front();
    }
    w.hits.iter().map(|(_, d)| i64::from(*d)).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st() -> Stamp {
        Stamp { start: 1, now: 2 }
    }

    fn value(m: &[Metric], name: &str, attrs: &[(&str, &str)]) -> Option<i64> {
        m.iter()
            .find(|x| {
                x.name == name
                    && attrs.iter().all(|(k, v)| {
                        x.attributes.iter().any(|a| {
                            a.key == *k && a.value == vigil_ipc_proto::AttrValue::Str((*v).into())
                        })
                    })
            })
            .map(|x| match x.value {
                vigil_ipc_proto::MetricValue::I64(v) => v,
                vigil_ipc_proto::MetricValue::F64(v) => v as i64,
            })
    }

    #[test]
    fn builtin_series_start_at_zero_and_permanent_conditions_hold() {
        let set = RuleSet::load(true, &[]).unwrap();
        let mut p = Problems::new(&set);
        let mut m = Vec::new();
        p.metrics(st(), &mut m);
        let kd = [("type", "KernelDeadlock"), ("reason", "DockerHung")];
        assert_eq!(value(&m, "vigil.kernel.condition", &kd), Some(0));
        assert_eq!(
            value(&m, "vigil.kernel.problems", &[("reason", "OOMKilling")]),
            Some(0)
        );
        let docker = set
            .rules
            .iter()
            .position(|r| r.reason == "DockerHung")
            .unwrap();
        let ch = p
            .set(docker, "DockerHung", "task docker:1 blocked")
            .unwrap();
        assert_eq!((ch.kind.as_str(), ch.status), ("KernelDeadlock", true));
        assert!(
            p.set(docker, "DockerHung", "again").is_none(),
            "no change, no event"
        );
        p.count(docker);
        m.clear();
        p.metrics(st(), &mut m);
        assert_eq!(value(&m, "vigil.kernel.condition", &kd), Some(1));
        assert_eq!(
            value(&m, "vigil.kernel.problems", &[("reason", "DockerHung")]),
            Some(1)
        );
        // Held: nothing clears a permanent condition.
        assert!(p.expire(&set.rules, u64::MAX).is_empty());
    }

    #[test]
    fn counter_condition_holds_within_its_window() {
        let set = RuleSet::load(true, &[]).unwrap();
        let mut p = Problems::new(&set);
        let idx = set.rules.iter().position(|r| r.counter.is_some()).unwrap();
        let r = &set.rules[idx];
        let min = 60_000_000u64;
        assert!(!p.counter_hit(r, idx, min, 1));
        assert!(!p.counter_hit(r, idx, 2 * min, 1));
        assert!(p.counter_hit(r, idx, 3 * min, 1), "3 in 20 minutes");
        assert!(p.set(idx, "UnregisterNetDevice", "m").is_some());
        assert!(
            p.expire(&set.rules, 20 * min).is_empty(),
            "still 3 in the window"
        );
        let ch = p.expire(&set.rules, 22 * min);
        assert_eq!(ch.len(), 1);
        assert_eq!(
            (ch[0].kind.as_str(), ch[0].status, ch[0].reason.as_str()),
            (
                "FrequentUnregisterNetDevice",
                false,
                "NoFrequentUnregisterNetDevice"
            )
        );
        // Spread out, the threshold is never reached.
        assert!(!p.counter_hit(r, idx, 50 * min, 1));
        assert!(!p.counter_hit(r, idx, 71 * min, 1));
        assert!(!p.counter_hit(r, idx, 92 * min, 1));
    }
}
