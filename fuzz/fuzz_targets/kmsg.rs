//! Kernel lines as the collector reads them from /dev/kmsg: the record format
//! (`kmsg::parse_record`) and the whole line path of `KmsgParser::feed` with the built-in rules
//! (NPD's kernel-monitor files and vigil's): continuation joining, the `RegexSet` matcher,
//! enrichment (`enrich`, `OomContext`), incidents with their stacks, conditions and counters,
//! the per-source limiter; then `flush_expired` and `on_cycle`. The input is up to 256 records
//! separated by NUL bytes (the kernel escapes NUL in a record, so none holds one). Every record
//! produced must encode for the shipper.

#![no_main]

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use vigil_collector::kmsg::{KmsgOptions, KmsgParser, RuleSet, parse_record};
use vigil_collector::util::Stamp;

static RULES: OnceLock<RuleSet> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let rules = RULES
        .get_or_init(|| RuleSet::load(true, &[]).expect("built-in rules load"))
        .clone();
    // First byte: resume point (a restarted collector skips what the journal holds) or none.
    let (resume, data) = match data.split_first() {
        Some((&b, rest)) if b & 1 == 1 => (Some(u64::from(b >> 1)), rest),
        Some((_, rest)) => (None, rest),
        None => (None, data),
    };
    let mut p = KmsgParser::with_rules(Vec::new(), 1, resume, rules, KmsgOptions::default())
        .expect("built-in rules compile");
    let mut out = Vec::new();
    for raw in data.split(|&b| b == 0).take(256) {
        let _ = parse_record(raw);
        p.feed(raw, &mut out);
    }
    p.flush_expired(Instant::now() + Duration::from_secs(3600), &mut out);
    p.on_cycle(Stamp { start: 0, now: 1 }, &mut out);
    for r in &out {
        postcard::to_stdvec(r).expect("a kmsg record encodes");
    }
});
