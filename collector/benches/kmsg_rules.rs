//! Cost of the kernel-line path, stage by stage, in lines per second of one core (CPU time of
//! this process, getrusage) over 200,000 records of a busy node's ring (`kmsg/corpus.rs`):
//! the record format alone, the rules' first pass (one `RegexSet`), the rules with their events
//! and counters, the whole path with plain lines, and the whole path with NPD's kernel-monitor
//! file loaded a second time as a user file (more patterns in the set).
//!
//! `cargo bench -p vigil-collector --bench kmsg_rules` (plain binary, prints a table).

#[path = "kmsg/corpus.rs"]
mod corpus;

use std::hint::black_box;

use vigil_collector::kmsg::matcher::Matcher;
use vigil_collector::kmsg::{KmsgOptions, KmsgParser, RuleSet, parse_record};

fn feed(p: &mut KmsgParser, rs: &[Vec<u8>]) {
    let mut out = Vec::new();
    for r in rs {
        p.feed(r, &mut out);
        out.clear();
    }
    black_box(p.stats.records);
}

fn parser(rules: RuleSet, opts: KmsgOptions) -> KmsgParser {
    KmsgParser::with_rules(Vec::new(), 0, None, rules, opts).unwrap()
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let records = corpus::records(200_000);
    let builtin = RuleSet::load(true, &[]).unwrap();
    println!(
        "{} records, {} built-in rules in {} files\n",
        records.len(),
        builtin.rules.len(),
        builtin.files.len()
    );

    let per_s = corpus::rate(&records, 3, |rs| {
        for r in rs {
            black_box(parse_record(r).map(|r| r.seq).ok());
        }
    });
    corpus::report("record format only (parse_record)", per_s);

    let mut m = Matcher::new(&builtin).unwrap();
    let messages: Vec<String> = records
        .iter()
        .map(|r| {
            let r = parse_record(r).unwrap();
            String::from_utf8_lossy(r.message).trim().to_string()
        })
        .collect();
    let mut hits = Vec::new();
    let mut matched = 0usize;
    let per_s = corpus::rate(&records, 3, |_| {
        for msg in &messages {
            m.matches(msg, &mut hits);
            matched += hits.len();
        }
    });
    black_box(matched);
    corpus::report("rules' first pass only (RegexSet over the message)", per_s);

    let quiet = KmsgOptions {
        log_level: None,
        ..KmsgOptions::default()
    };
    let mut p = parser(builtin.clone(), quiet);
    let per_s = corpus::rate(&records, 3, |rs| feed(&mut p, rs));
    corpus::report("feed: rules, events, counters (no plain lines)", per_s);

    let mut p = parser(builtin, KmsgOptions::default());
    let per_s = corpus::rate(&records, 3, |rs| feed(&mut p, rs));
    corpus::report(
        "feed: the whole path (plain lines >= warning, limited)",
        per_s,
    );

    let npd = (
        "kernel-monitor.json".to_string(),
        include_str!("../src/kmsg/rules/npd/kernel-monitor.json").to_string(),
    );
    let more = RuleSet::load(true, &[npd]).unwrap();
    let n = more.rules.len();
    let mut p = parser(more, KmsgOptions::default());
    let per_s = corpus::rate(&records, 3, |rs| feed(&mut p, rs));
    corpus::report(
        &format!("feed: the whole path, {n} rules (NPD's file again)"),
        per_s,
    );
}
