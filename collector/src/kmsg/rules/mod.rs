//! Rules as data, in node-problem-detector's own file format (kernel-monitor.json): `source`,
//! `conditions` (`type`, `reason`, `message`), `rules` (`type` temporary|permanent,
//! `condition`, `reason`, `pattern`, `patternGeneratedMessageSuffix`), and the counter
//! plugin's form (kernel-monitor-counter.json: a `custom` plugin running `log-counter` with
//! `--pattern`, `--count`, `--lookback`, `--revert-pattern`, `--delay`). The built-in files are
//! NPD's own (`npd/`) and vigil's (`vigil-kernel-monitor.json`), loaded by the same code as a
//! user's files; every error names the file, the rule and the reason.
//!
//! One vigil extension: `"firstMatch": true` on a file makes only its first matching rule count
//! for a line (vigil's own file: `BUG: soft lockup` is a SoftLockup, not also a KernelBug).

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use super::options::parse_duration;

/// Largest rule file read.
pub const MAX_FILE_BYTES: usize = vigil_ipc_proto::config::KMSG_RULE_FILE_MAX;
/// Rules in all files together.
pub const MAX_RULES: usize = 1024;
/// Longest pattern.
pub const MAX_PATTERN: usize = 4096;
/// Compiled size one pattern may reach (the `regex` crate refuses bigger ones).
pub const REGEX_SIZE_LIMIT: usize = 1 << 20;
/// Largest `bufferSize` (lines a multi-line pattern is matched against).
pub const MAX_BUFFER_SIZE: usize = 100;

/// Label and text of each built-in file, in the order they apply.
pub const BUILTIN: &[(&str, &str)] = &[
    (
        "builtin:npd/kernel-monitor.json",
        include_str!("npd/kernel-monitor.json"),
    ),
    (
        "builtin:npd/readonly-monitor.json",
        include_str!("npd/readonly-monitor.json"),
    ),
    (
        "builtin:npd/kernel-monitor-counter.json",
        include_str!("npd/kernel-monitor-counter.json"),
    ),
    (
        "builtin:vigil-kernel-monitor.json",
        include_str!("vigil-kernel-monitor.json"),
    ),
];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    #[error("kmsg rule file {file}: {reason}")]
    File { file: String, reason: String },
    #[error("kmsg rule file {file}: rule {index} (reason {name:?}): {reason}")]
    Rule {
        file: String,
        /// Position in the file's `rules`, from 0.
        index: usize,
        name: String,
        reason: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleType {
    /// An event per match.
    Temporary,
    /// Sets a condition (held until the agent restarts, as NPD does).
    Permanent,
}

impl RuleType {
    pub fn as_str(self) -> &'static str {
        match self {
            RuleType::Temporary => "temporary",
            RuleType::Permanent => "permanent",
        }
    }
}

/// The log-counter form: the condition holds while `count` matches (minus those of `revert`)
/// fall within `window_us` of kernel time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counter {
    pub count: u32,
    pub window_us: u64,
    /// Lines earlier than this after boot are not counted (`--delay`).
    pub delay_us: u64,
    pub revert: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Index into [`RuleSet::files`].
    pub file: usize,
    /// Position in its file's `rules`.
    pub index: usize,
    pub kind: RuleType,
    pub condition: Option<String>,
    pub reason: String,
    pub pattern: String,
    /// `patternGeneratedMessageSuffix`: appended to the event's body after `"; "`.
    pub suffix: Option<String>,
    pub counter: Option<Counter>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileInfo {
    /// Path (or `builtin:...`), for messages.
    pub name: String,
    /// NPD's `source` (`kernel-monitor`, ...).
    pub source: String,
    /// `metricsReporting`: the file's rules count in `vigil.kernel.problems` and conditions.
    pub metrics: bool,
    pub first_match: bool,
    /// `bufferSize`: lines a multi-line pattern sees.
    pub buffer_size: usize,
    /// `skipList`: lines holding one of these are not matched against this file's rules.
    pub skip: Vec<String>,
}

/// A condition as a file declares it: its type and the reason and message it has while false.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConditionDef {
    pub kind: String,
    pub reason: String,
    pub message: String,
}

/// Every rule of every file, validated (patterns compile), in the order they apply.
#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    pub files: Vec<FileInfo>,
    pub rules: Vec<Rule>,
    /// Conditions by type (the first file declaring a type sets its false reason/message).
    pub conditions: Vec<ConditionDef>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct FileJson {
    #[serde(default)]
    plugin: String,
    #[serde(default)]
    plugin_config: Option<BTreeMap<String, Value>>,
    #[serde(default)]
    log_path: String,
    #[serde(default)]
    lookback: String,
    #[serde(default)]
    delay: String,
    #[serde(default)]
    skip_list: Vec<String>,
    #[serde(default)]
    buffer_size: Option<usize>,
    #[serde(default)]
    source: String,
    #[serde(default)]
    metrics_reporting: Option<bool>,
    #[serde(default)]
    conditions: Vec<Value>,
    #[serde(default)]
    rules: Vec<Value>,
    #[serde(default)]
    first_match: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConditionJson {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    message: String,
    #[serde(default)]
    #[allow(dead_code)]
    status: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    transition: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RuleJson {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    condition: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    pattern: Option<String>,
    #[serde(default)]
    pattern_generated_message_suffix: Option<String>,
    // The custom plugin's rule fields.
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    args: Option<Vec<String>>,
    #[serde(default)]
    #[allow(dead_code)]
    timeout: Option<String>,
    #[serde(default, rename = "invoke_interval")]
    #[allow(dead_code)]
    invoke_interval: Option<String>,
}

/// Keys of the custom plugin's `pluginConfig` (NPD's `pluginGlobalConfig`).
const CUSTOM_PLUGIN_CONFIG: &[&str] = &[
    "invoke_interval",
    "timeout",
    "max_output_length",
    "concurrency",
    "enable_message_change_based_condition_update",
    "skip_initial_status",
];

impl RuleSet {
    /// The built-in files (when `builtin`), then `user` (path, text) in order.
    pub fn load(builtin: bool, user: &[(String, String)]) -> Result<RuleSet, RuleError> {
        let mut set = RuleSet::default();
        if builtin {
            for (name, text) in BUILTIN {
                set.add_file(name, text)?;
            }
        }
        for (name, text) in user {
            set.add_file(name, text)?;
        }
        Ok(set)
    }

    /// Parse, validate and append one file.
    pub fn add_file(&mut self, name: &str, text: &str) -> Result<(), RuleError> {
        let ferr = |reason: String| RuleError::File {
            file: name.to_string(),
            reason,
        };
        if text.len() > MAX_FILE_BYTES {
            return Err(ferr(format!("larger than {MAX_FILE_BYTES} bytes")));
        }
        let f: FileJson = serde_json::from_str(text).map_err(|e| ferr(e.to_string()))?;
        let counter_file = check_plugin(&f).map_err(ferr)?;
        for v in [&f.lookback, &f.delay] {
            if !v.is_empty() {
                parse_duration(v).map_err(ferr)?;
            }
        }
        let buffer_size = f.buffer_size.unwrap_or(10);
        if !(1..=MAX_BUFFER_SIZE).contains(&buffer_size) {
            return Err(ferr(format!("bufferSize must be 1..={MAX_BUFFER_SIZE}")));
        }
        let mut declared = Vec::new();
        for (i, c) in f.conditions.into_iter().enumerate() {
            let c: ConditionJson =
                serde_json::from_value(c).map_err(|e| ferr(format!("condition {i}: {e}")))?;
            if c.kind.is_empty() || c.reason.is_empty() {
                return Err(ferr(format!("condition {i}: type and reason must be set")));
            }
            declared.push(c.kind.clone());
            if !self.conditions.iter().any(|d| d.kind == c.kind) {
                self.conditions.push(ConditionDef {
                    kind: c.kind,
                    reason: c.reason,
                    message: c.message,
                });
            }
        }
        let file = self.files.len();
        let mut rules = Vec::with_capacity(f.rules.len());
        for (index, v) in f.rules.into_iter().enumerate() {
            let name_of = v
                .get("reason")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let rerr = |reason: String| RuleError::Rule {
                file: name.to_string(),
                index,
                name: name_of.clone(),
                reason,
            };
            let r: RuleJson = serde_json::from_value(v).map_err(|e| rerr(e.to_string()))?;
            let rule = check_rule(r, counter_file, &declared).map_err(rerr)?;
            rules.push(Rule {
                file,
                index,
                ..rule
            });
        }
        if self.rules.len() + rules.len() > MAX_RULES {
            return Err(ferr(format!("more than {MAX_RULES} rules in all files")));
        }
        self.rules.extend(rules);
        self.files.push(FileInfo {
            name: name.to_string(),
            source: f.source,
            metrics: f.metrics_reporting.unwrap_or(true),
            first_match: f.first_match,
            buffer_size,
            skip: f.skip_list,
        });
        Ok(())
    }

    /// The error of one rule, for failures found after loading (compiling the set).
    pub fn rule_error(&self, rule: usize, reason: String) -> RuleError {
        let r = &self.rules[rule];
        RuleError::Rule {
            file: self.files[r.file].name.clone(),
            index: r.index,
            name: r.reason.clone(),
            reason,
        }
    }
}

/// Which plugins read the kernel log; `Ok(true)` for the counter (custom) form.
fn check_plugin(f: &FileJson) -> Result<bool, String> {
    let cfg = f.plugin_config.as_ref();
    let cfg_str = |k: &str| cfg.and_then(|c| c.get(k)).and_then(Value::as_str);
    match f.plugin.as_str() {
        "kmsg" => Ok(false),
        "filelog" if f.log_path.ends_with("kern.log") => Ok(false),
        "journald" if cfg_str("source") == Some("kernel") => Ok(false),
        "custom" => {
            if let Some(k) = cfg
                .into_iter()
                .flat_map(|c| c.keys())
                .find(|k| !CUSTOM_PLUGIN_CONFIG.contains(&k.as_str()))
            {
                return Err(format!("unknown pluginConfig field `{k}`"));
            }
            Ok(true)
        }
        "" => Err("no `plugin` (kmsg, or custom for log-counter rules)".into()),
        p => Err(format!(
            "plugin {p:?} (log {:?}) is not the kernel log: vigil applies rules to /dev/kmsg \
             lines only (plugin kmsg, filelog of kern.log, journald of source kernel, or the \
             custom log-counter of journald source kernel)",
            f.log_path
        )),
    }
}

fn check_rule(r: RuleJson, counter_file: bool, declared: &[String]) -> Result<Rule, String> {
    if r.reason.is_empty() {
        return Err("`reason` must be set".into());
    }
    let kind = match r.kind.as_str() {
        "temporary" => RuleType::Temporary,
        "permanent" => RuleType::Permanent,
        t => return Err(format!("type {t:?} is neither temporary nor permanent")),
    };
    let condition = match kind {
        RuleType::Permanent if r.condition.is_empty() => {
            return Err("a permanent rule needs a `condition`".into());
        }
        RuleType::Permanent if !declared.contains(&r.condition) => {
            return Err(format!(
                "condition {:?} is not declared in the file's `conditions`",
                r.condition
            ));
        }
        RuleType::Permanent => Some(r.condition),
        RuleType::Temporary => None,
    };
    let (pattern, counter) = if counter_file {
        if r.pattern.is_some() {
            return Err("`pattern` is not a field of custom plugin rules (use --pattern)".into());
        }
        if kind != RuleType::Permanent {
            return Err("a log-counter rule sets a condition: its type must be permanent".into());
        }
        let (p, c) = log_counter(r.path.as_deref(), r.args.as_deref().unwrap_or_default())?;
        (p, Some(c))
    } else {
        if r.path.is_some() || r.args.is_some() {
            return Err("`path` and `args` belong to the custom plugin's rules".into());
        }
        (r.pattern.unwrap_or_default(), None)
    };
    check_pattern(&pattern)?;
    if let Some(rev) = counter.as_ref().and_then(|c| c.revert.as_ref()) {
        check_pattern(rev).map_err(|e| format!("revert-pattern: {e}"))?;
    }
    Ok(Rule {
        file: 0,
        index: 0,
        kind,
        condition,
        reason: r.reason,
        pattern,
        suffix: r.pattern_generated_message_suffix.filter(|s| !s.is_empty()),
        counter,
    })
}

/// The arguments of NPD's `log-counter`: `--pattern=...`, `--count=N`, `--lookback=20m`,
/// `--delay=5m`, `--revert-pattern=...`, `--journald-source=kernel`, `--log-path=...`.
fn log_counter(path: Option<&str>, args: &[String]) -> Result<(String, Counter), String> {
    let exe = path.unwrap_or_default();
    if exe.rsplit('/').next() != Some("log-counter") {
        return Err(format!(
            "custom plugin rule runs {exe:?}: vigil runs no plugins, only NPD's log-counter \
             rules are understood"
        ));
    }
    let mut pattern = None;
    let mut c = Counter {
        count: 1,
        window_us: 0,
        delay_us: 0,
        revert: None,
    };
    for a in args {
        let Some((k, v)) = a.strip_prefix("--").and_then(|a| a.split_once('=')) else {
            return Err(format!("argument {a:?}: expected --name=value"));
        };
        let dur = || parse_duration(v).map(|d| d.as_micros() as u64);
        match k {
            "pattern" => pattern = Some(v.to_string()),
            "revert-pattern" => c.revert = Some(v.to_string()).filter(|v| !v.is_empty()),
            "count" => {
                c.count = v
                    .parse()
                    .ok()
                    .filter(|n| *n >= 1)
                    .ok_or_else(|| format!("--count={v}: not a count of at least 1"))?;
            }
            "lookback" => c.window_us = dur().map_err(|e| format!("--lookback: {e}"))?,
            "delay" => c.delay_us = dur().map_err(|e| format!("--delay: {e}"))?,
            "journald-source" if v == "kernel" => {}
            "journald-source" => {
                return Err(format!(
                    "--journald-source={v}: vigil counts kernel lines only (journald source \
                     kernel)"
                ));
            }
            "log-path" => {}
            _ => return Err(format!("unknown log-counter argument --{k}")),
        }
    }
    if c.window_us == 0 {
        return Err("log-counter needs --lookback (the counting window)".into());
    }
    let pattern = pattern.ok_or("log-counter needs --pattern")?;
    Ok((pattern, c))
}

/// A pattern compiles as NPD uses it (`pattern` + `\z`) within the size limit.
fn check_pattern(p: &str) -> Result<(), String> {
    if p.is_empty() {
        return Err("empty pattern".into());
    }
    if p.len() > MAX_PATTERN {
        return Err(format!("pattern longer than {MAX_PATTERN} bytes"));
    }
    if let Err(e) = regex_syntax::Parser::new().parse(p) {
        // One line: what and where (the regex crate's own message spans several lines).
        let (what, at) = match &e {
            regex_syntax::Error::Parse(e) => (e.kind().to_string(), e.span().start.offset),
            regex_syntax::Error::Translate(e) => (e.kind().to_string(), e.span().start.offset),
            other => (other.to_string(), 0),
        };
        return Err(format!("bad pattern: {what} at byte {at} of {p:?}"));
    }
    regex::RegexBuilder::new(&anchored(p))
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map(drop)
        .map_err(|e| {
            let e = e.to_string();
            format!(
                "bad pattern: {}",
                e.split_whitespace().collect::<Vec<_>>().join(" ")
            )
        })
}

/// A rule's pattern as NPD's Go `regexp` reads it, matched at the end of the text as NPD does
/// (`(?:pattern)\z`): `\d`, `\w`, `\s` and `\b` are ASCII in Go (RE2), Unicode in the
/// `regex` crate. Spelled out as the ASCII classes they are, the patterns match what they match
/// under NPD, and their automata are a fraction of the size (the built-in rules: 2.3 → 1.1 MB
/// of the collector's heap after a busy ring, at the same speed; BENCHMARKS.md).
pub fn anchored(p: &str) -> String {
    format!("(?:{})\\z", go_classes(p))
}

/// `p` with every Perl class (`\d \D \w \W \s \S`, also inside brackets) written as the
/// bracketed ASCII class Go gives it, and `\b`/`\B` as ASCII word boundaries. A pattern that
/// does not parse is returned as it is (the regex crate then says why).
pub fn go_classes(p: &str) -> String {
    use regex_syntax::ast::{self, Ast};
    struct Spans(Vec<(usize, usize, &'static str)>);
    fn class(c: &ast::ClassPerl) -> &'static str {
        use ast::ClassPerlKind::{Digit, Space, Word};
        match (&c.kind, c.negated) {
            (Digit, false) => "[0-9]",
            (Digit, true) => "[^0-9]",
            (Word, false) => "[0-9A-Za-z_]",
            (Word, true) => "[^0-9A-Za-z_]",
            // Go: [\t\n\f\r ].
            (Space, false) => r"[\t\n\f\r ]",
            (Space, true) => r"[^\t\n\f\r ]",
        }
    }
    impl ast::Visitor for Spans {
        type Output = Vec<(usize, usize, &'static str)>;
        type Err = std::convert::Infallible;
        fn finish(self) -> Result<Self::Output, Self::Err> {
            Ok(self.0)
        }
        fn visit_pre(&mut self, a: &Ast) -> Result<(), Self::Err> {
            let with = match a {
                Ast::ClassPerl(c) => Some((&c.span, class(c))),
                Ast::Assertion(x) => match x.kind {
                    ast::AssertionKind::WordBoundary => Some((&x.span, r"(?-u:\b)")),
                    ast::AssertionKind::NotWordBoundary => Some((&x.span, r"(?-u:\B)")),
                    _ => None,
                },
                _ => None,
            };
            if let Some((span, with)) = with {
                self.0.push((span.start.offset, span.end.offset, with));
            }
            Ok(())
        }
        fn visit_class_set_item_pre(&mut self, item: &ast::ClassSetItem) -> Result<(), Self::Err> {
            if let ast::ClassSetItem::Perl(c) = item {
                self.0
                    .push((c.span.start.offset, c.span.end.offset, class(c)));
            }
            Ok(())
        }
    }
    let Ok(tree) = ast::parse::Parser::new().parse(p) else {
        return p.to_string();
    };
    let Ok(mut spans) = ast::visit(&tree, Spans(Vec::new()));
    spans.sort_unstable_by_key(|s| s.0);
    let mut out = String::with_capacity(p.len() + 16 * spans.len());
    let mut at = 0;
    for (start, end, with) in spans {
        out.push_str(&p[at..start]);
        out.push_str(with);
        at = end;
    }
    out.push_str(&p[at..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<RuleSet, RuleError> {
        RuleSet::load(false, &[("/etc/r.json".into(), text.into())])
    }

    /// Perl classes and word boundaries as Go's RE2 has them (ASCII), inside brackets too;
    /// escaped backslashes and everything else as written.
    #[test]
    fn perl_classes_are_ascii_as_in_go() {
        assert_eq!(
            go_classes(r"\d+ \D \w\W \s\S"),
            concat!(
                "[0-9]+ [^0-9] [0-9A-Za-z_][^0-9A-Za-z_] ",
                r"[\t\n\f\r ][^\t\n\f\r ]"
            )
        );
        assert_eq!(go_classes(r"[\w ,.()-]*?\["), r"[[0-9A-Za-z_] ,.()-]*?\[");
        assert_eq!(go_classes(r"\bsd\B\\d\z"), r"(?-u:\b)sd(?-u:\B)\\d\z");
        assert_eq!(go_classes(r"(unclosed \d"), r"(unclosed \d");
        let re = |p: &str| regex::Regex::new(&anchored(p)).unwrap();
        // Arabic-Indic digits and a Unicode letter: digits / word characters to the regex
        // crate, not to Go.
        assert!(!re(r"error \d+").is_match("error \u{661}\u{662}"));
        assert!(re(r"error \d+").is_match("error 12"));
        assert!(!re(r"\w+").is_match("d\u{e9}j\u{e0}"));
        // \S is every character but the ASCII spaces, as in Go.
        assert!(re(r"name \S+").is_match("name d\u{e9}j\u{e0}"));
        assert!(!re(r"a\sb").is_match("a\u{a0}b"));
        assert!(re(r"[\w ,.()-]+: 0000").is_match("general protection fault, probably (x): 0000"));
        assert!(re(r"\bblocked").is_match("task blocked"));
        assert!(!re(r"\bblocked").is_match("taskblocked"));
    }

    #[test]
    fn builtin_files_load() {
        let s = RuleSet::load(true, &[]).unwrap();
        assert_eq!(s.files.len(), 4);
        assert_eq!(s.files[0].source, "kernel-monitor");
        // NPD's 14 kernel-monitor rules, its readonly rule, its counter rule.
        assert_eq!(s.rules.iter().filter(|r| r.file == 0).count(), 14);
        let counter = s.rules.iter().find(|r| r.counter.is_some()).unwrap();
        assert_eq!(counter.reason, "UnregisterNetDevice");
        assert_eq!(
            counter.condition.as_deref(),
            Some("FrequentUnregisterNetDevice")
        );
        assert_eq!(
            counter.counter,
            Some(Counter {
                count: 3,
                window_us: 20 * 60 * 1_000_000,
                delay_us: 0,
                revert: None
            })
        );
        let kinds: Vec<&str> = s.conditions.iter().map(|c| c.kind.as_str()).collect();
        assert_eq!(
            kinds,
            [
                "KernelDeadlock",
                "XfsShutdown",
                "CperHardwareErrorFatal",
                "ReadonlyFilesystem",
                "FrequentUnregisterNetDevice"
            ]
        );
        assert!(s.files[3].first_match);
    }

    #[test]
    fn errors_name_file_rule_and_reason() {
        let e = load(
            r#"{"plugin":"kmsg","source":"x","rules":[
                {"type":"temporary","reason":"Fine","pattern":"ok"},
                {"type":"temporary","reason":"Broken","pattern":"a(b"}]}"#,
        )
        .unwrap_err();
        let s = e.to_string();
        assert_eq!(
            s,
            "kmsg rule file /etc/r.json: rule 1 (reason \"Broken\"): bad pattern: unclosed \
             group at byte 1 of \"a(b\""
        );
        let e =
            load(r#"{"plugin":"kmsg","rules":[{"type":"temporary","reason":"T","patern":"x"}]}"#)
                .unwrap_err();
        assert!(
            e.to_string()
                .contains("rule 0 (reason \"T\"): unknown field `patern`"),
            "{e}"
        );
        let e = load(r#"{"plugin":"kmsg","rulez":[]}"#).unwrap_err();
        assert!(e.to_string().contains("unknown field `rulez`"), "{e}");
        let e = load("{not json").unwrap_err();
        assert!(
            e.to_string().starts_with("kmsg rule file /etc/r.json: "),
            "{e}"
        );
    }

    #[test]
    fn rule_checks() {
        let one = |rule: &str| {
            load(&format!(
                r#"{{"plugin":"kmsg","conditions":[{{"type":"C","reason":"NoC","message":"m"}}],
                "rules":[{rule}]}}"#
            ))
        };
        assert!(one(r#"{"type":"permanent","condition":"C","reason":"R","pattern":"x"}"#).is_ok());
        for (rule, why) in [
            (
                r#"{"type":"permanent","reason":"R","pattern":"x"}"#,
                "needs a `condition`",
            ),
            (
                r#"{"type":"permanent","condition":"D","reason":"R","pattern":"x"}"#,
                "not declared",
            ),
            (
                r#"{"type":"sometimes","reason":"R","pattern":"x"}"#,
                "neither",
            ),
            (
                r#"{"type":"temporary","reason":"","pattern":"x"}"#,
                "`reason`",
            ),
            (
                r#"{"type":"temporary","reason":"R","pattern":""}"#,
                "empty pattern",
            ),
            (
                r#"{"type":"temporary","reason":"R","pattern":"x","path":"/bin/x"}"#,
                "custom",
            ),
            (
                r#"{"type":"temporary","reason":"R","pattern":"(?<n"}"#,
                "bad pattern",
            ),
            (
                r#"{"type":"temporary","reason":"R","pattern":"(?:a{1000}){1000}"}"#,
                "bad pattern",
            ),
        ] {
            let e = one(rule).unwrap_err().to_string();
            assert!(e.contains(why), "{rule}: {e}");
        }
    }

    #[test]
    fn plugins_other_than_the_kernel_log_are_refused() {
        for (f, why) in [
            (
                r#"{"plugin":"journald","pluginConfig":{"source":"dockerd"}}"#,
                "not the kernel",
            ),
            (
                r#"{"plugin":"filelog","logPath":"/var/log/syslog"}"#,
                "not the kernel",
            ),
            (r#"{"source":"x"}"#, "no `plugin`"),
            (
                r#"{"plugin":"custom","pluginConfig":{"invoke_intervl":"5m"}}"#,
                "invoke_intervl",
            ),
        ] {
            let e = load(f).unwrap_err().to_string();
            assert!(e.contains(why), "{f}: {e}");
        }
        assert!(load(r#"{"plugin":"filelog","logPath":"/var/log/kern.log"}"#).is_ok());
        assert!(load(r#"{"plugin":"journald","pluginConfig":{"source":"kernel"}}"#).is_ok());
    }

    #[test]
    fn counter_rules() {
        let f = |args: &str, path: &str| {
            load(&format!(
                r#"{{"plugin":"custom","pluginConfig":{{"invoke_interval":"5m"}},
                "conditions":[{{"type":"Frequent","reason":"NotFrequent","message":"ok"}}],
                "rules":[{{"type":"permanent","condition":"Frequent","reason":"Often",
                "path":"{path}","args":[{args}],"timeout":"1m"}}]}}"#
            ))
        };
        let s = f(
            r#""--journald-source=kernel","--lookback=10m","--count=2","--delay=1m",
               "--pattern=x \\d+","--revert-pattern=y""#,
            "/home/kubernetes/bin/log-counter",
        )
        .unwrap();
        let c = s.rules[0].counter.clone().unwrap();
        assert_eq!(
            (c.count, c.window_us, c.delay_us),
            (2, 600_000_000, 60_000_000)
        );
        assert_eq!(c.revert.as_deref(), Some("y"));
        assert_eq!(s.rules[0].pattern, "x \\d+");
        for (args, path, why) in [
            (
                r#""--lookback=1m","--pattern=x""#,
                "/opt/check.sh",
                "runs no plugins",
            ),
            (r#""--lookback=1m""#, "log-counter", "needs --pattern"),
            (r#""--pattern=x""#, "log-counter", "needs --lookback"),
            (
                r#""--lookback=1m","--pattern=x","--journald-source=systemd""#,
                "log-counter",
                "kernel lines only",
            ),
            (
                r#""--lookback=1m","--pattern=x","--count=0""#,
                "log-counter",
                "--count=0",
            ),
            (
                r#""--lookback=1m","--pattern=x","--colour=red""#,
                "log-counter",
                "--colour",
            ),
            (
                r#""--lookback=1m","--pattern=x(""#,
                "log-counter",
                "bad pattern",
            ),
        ] {
            let e = f(args, path).unwrap_err().to_string();
            assert!(e.contains(why), "{args}: {e}");
        }
    }
}
