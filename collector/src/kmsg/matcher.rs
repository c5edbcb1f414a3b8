//! Every rule's pattern compiled once. Patterns that cannot match a newline (nearly all) go
//! into one `RegexSet`, asked first whether the line matches anything at all; only then which
//! rules. The few patterns that can span lines are matched as NPD does, against the file's last
//! `bufferSize` lines joined by `\n`. The `regex` crate runs in time linear in the line: no
//! backtracking blowups whatever a user writes.
//!
//! One difference from NPD, on purpose: a single-line pattern sees only its line, so `^` is the
//! line's start (in NPD's joined buffer `^` is the buffer's start, and never matches).

use std::collections::VecDeque;

use regex::{Regex, RegexBuilder, RegexSet, RegexSetBuilder};
use regex_syntax::hir::{Class, Hir, HirKind};

use super::rules::{REGEX_SIZE_LIMIT, RuleError, RuleSet, anchored};

/// What a pattern belongs to: a rule, or a counter rule's `--revert-pattern`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Target {
    Rule(usize),
    Revert(usize),
}

impl Target {
    pub fn rule(self) -> usize {
        match self {
            Target::Rule(r) | Target::Revert(r) => r,
        }
    }
}

struct Multi {
    target: Target,
    re: Regex,
    lines: usize,
}

pub struct Matcher {
    set: RegexSet,
    targets: Vec<Target>,
    multi: Vec<Multi>,
    /// The last lines, for multi-line patterns (empty when there are none).
    buffer: VecDeque<String>,
    joined: String,
}

impl Matcher {
    pub fn new(rules: &RuleSet) -> Result<Matcher, RuleError> {
        let mut single = Vec::new();
        let mut targets = Vec::new();
        let mut multi = Vec::new();
        let mut add = |t: Target, p: &str| -> Result<(), RuleError> {
            let r = t.rule();
            if can_span_lines(p) {
                let re = RegexBuilder::new(&anchored(p))
                    .size_limit(REGEX_SIZE_LIMIT)
                    .build()
                    .map_err(|e| rules.rule_error(r, format!("bad pattern: {e}")))?;
                let lines = rules.files[rules.rules[r].file].buffer_size;
                multi.push(Multi {
                    target: t,
                    re,
                    lines,
                });
            } else {
                single.push(anchored(p));
                targets.push(t);
            }
            Ok(())
        };
        for (i, r) in rules.rules.iter().enumerate() {
            add(Target::Rule(i), &r.pattern)?;
            if let Some(rev) = r.counter.as_ref().and_then(|c| c.revert.as_ref()) {
                add(Target::Revert(i), rev)?;
            }
        }
        let set = RegexSetBuilder::new(&single)
            .size_limit(REGEX_SIZE_LIMIT.saturating_mul(single.len().max(1)))
            .build()
            .map_err(|e| RuleError::File {
                file: "(all rule files)".into(),
                reason: format!("patterns do not compile together: {e}"),
            })?;
        let depth = multi.iter().map(|m| m.lines).max().unwrap_or(0);
        Ok(Matcher {
            set,
            targets,
            multi,
            buffer: std::iter::repeat_n(String::new(), depth).collect(),
            joined: String::new(),
        })
    }

    /// The same patterns compiled again, with empty caches; the multi-line buffer is kept. The
    /// regex crate grows a lazy DFA's cache with every distinct line it sees, and never
    /// shrinks it: the ring read at start (≈ 2,000 lines on a host up a while) leaves
    /// ≈ 420 kB of states that a quiet kernel never needs again (≈ 80 kB after a few lines).
    pub fn renew(&mut self, rules: &RuleSet) -> Result<(), RuleError> {
        let fresh = Matcher::new(rules)?;
        self.set = fresh.set;
        self.multi = fresh.multi;
        Ok(())
    }

    /// The targets `line` (already trimmed, as NPD trims) matches, in rule order.
    pub fn matches(&mut self, line: &str, out: &mut Vec<Target>) {
        out.clear();
        if self.set.is_match(line) {
            out.extend(self.set.matches(line).iter().map(|i| self.targets[i]));
        }
        if self.multi.is_empty() {
            return;
        }
        self.buffer.pop_front();
        self.buffer.push_back(line.to_string());
        let mut joined_for = 0;
        for m in &self.multi {
            if joined_for != m.lines {
                let from = self.buffer.len().saturating_sub(m.lines);
                self.joined.clear();
                for (k, l) in self.buffer.range(from..).enumerate() {
                    if k > 0 {
                        self.joined.push('\n');
                    }
                    self.joined.push_str(l);
                }
                joined_for = m.lines;
            }
            if m.re.is_match(&self.joined) {
                out.push(m.target);
            }
        }
        out.sort_unstable_by_key(|t| (t.rule(), matches!(t, Target::Revert(_))));
    }
}

/// Whether a pattern can match a `\n` (a literal or a class holding it, `(?s).`): such a
/// pattern is matched against the joined buffer, as NPD does.
pub fn can_span_lines(p: &str) -> bool {
    match regex_syntax::Parser::new().parse(p) {
        Ok(h) => holds_newline(&h),
        // Not parsed here: the regex crate will say why; treat it as the general case.
        Err(_) => true,
    }
}

fn holds_newline(h: &Hir) -> bool {
    match h.kind() {
        HirKind::Empty | HirKind::Look(_) => false,
        HirKind::Literal(l) => l.0.contains(&b'\n'),
        HirKind::Class(Class::Unicode(c)) => c
            .ranges()
            .iter()
            .any(|r| r.start() <= '\n' && '\n' <= r.end()),
        HirKind::Class(Class::Bytes(c)) => c
            .ranges()
            .iter()
            .any(|r| r.start() <= b'\n' && b'\n' <= r.end()),
        HirKind::Repetition(r) => holds_newline(&r.sub),
        HirKind::Capture(c) => holds_newline(&c.sub),
        HirKind::Concat(v) | HirKind::Alternation(v) => v.iter().any(holds_newline),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(rules: &str) -> (RuleSet, Matcher) {
        let s = RuleSet::load(false, &[("t.json".into(), rules.into())]).unwrap();
        let m = Matcher::new(&s).unwrap();
        (s, m)
    }

    #[test]
    fn single_and_multi_line() {
        assert!(!can_span_lines(
            r"task [\S ]+:\w+ blocked for more than \w+ seconds\."
        ));
        assert!(!can_span_lines(
            r".*\[Hardware Error\]: event severity: fatal$"
        ));
        assert!(can_span_lines(r"Kill process \d+\nKilled process \d+"));
        assert!(can_span_lines(r"(?s)a.b"));
        assert!(can_span_lines(r"a\sb"));
        assert!(!can_span_lines(r"a[^\n]b"));
    }

    /// The built-in patterns are all single-line: one `RegexSet` pass per line.
    #[test]
    fn builtin_patterns_are_single_line() {
        let s = RuleSet::load(true, &[]).unwrap();
        for r in &s.rules {
            assert!(!can_span_lines(&r.pattern), "{}: {}", r.reason, r.pattern);
        }
        assert!(Matcher::new(&s).unwrap().multi.is_empty());
    }

    /// Compiled again, the patterns match what they matched, and a multi-line pattern still
    /// sees the lines read before.
    #[test]
    fn renewed_matcher_matches_the_same_and_keeps_the_buffer() {
        let (s, mut m) = set(r#"{"plugin":"kmsg","bufferSize":3,"rules":[
            {"type":"temporary","reason":"Div","pattern":"divide error: 0000 \\[#\\d+\\] SMP"},
            {"type":"temporary","reason":"Two","pattern":"first line\\nsecond line"}]}"#);
        let mut out = Vec::new();
        m.matches("divide error: 0000 [#1] SMP", &mut out);
        assert_eq!(out, [Target::Rule(0)]);
        m.matches("first line", &mut out);
        m.renew(&s).unwrap();
        m.matches("second line", &mut out);
        assert_eq!(
            out,
            [Target::Rule(1)],
            "the line before the renewal is still seen"
        );
        m.matches("divide error: 0000 [#2] SMP", &mut out);
        assert_eq!(out, [Target::Rule(0)]);
        m.matches("divide error: 0000 [#2] PREEMPT", &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn npd_end_anchoring_and_buffer() {
        let (_, mut m) = set(r#"{"plugin":"kmsg","bufferSize":3,"rules":[
            {"type":"temporary","reason":"Div","pattern":"divide error: 0000 \\[#\\d+\\] SMP"},
            {"type":"temporary","reason":"Two","pattern":"first line\\nsecond line"},
            {"type":"temporary","reason":"Start","pattern":"^Kernel"}]}"#);
        let mut out = Vec::new();
        // NPD: the pattern must reach the end of the line.
        m.matches("divide error: 0000 [#1] SMP", &mut out);
        assert_eq!(out, [Target::Rule(0)]);
        m.matches("divide error: 0000 [#1] PREEMPT SMP NOPTI", &mut out);
        assert!(out.is_empty());
        m.matches("Oops: divide error: 0000 [#1] SMP", &mut out);
        assert_eq!(out, [Target::Rule(0)]);
        m.matches("first line", &mut out);
        assert!(out.is_empty());
        m.matches("second line", &mut out);
        assert_eq!(out, [Target::Rule(1)]);
        m.matches("Kernel", &mut out);
        assert_eq!(out, [Target::Rule(2)]);
    }
}
