//! Kernel lines as the collector reads them from /dev/kmsg: the record format
//! (`kmsg::parse_record`) and the whole line path of `KmsgParser::feed` with the built-in rules
//! (NPD's kernel-monitor files and vigil's): continuation joining, the `RegexSet` matcher,
//! enrichment (`enrich`, `OomContext`), incidents with their stacks, conditions and counters,
//! the per-source limiter; then `flush_expired` and `on_cycle`. The input is up to 256 records
//! separated by NUL bytes (the kernel escapes NUL in a record, so none holds one). Every record
//! produced must encode for the shipper. One parser per resume mode lives for the whole run,
//! as the collector keeps one for its life: what inputs leave behind (open incidents, OOM
//! contexts, counters, limiter buckets) is fuzzed too, and must stay bounded (-rss_limit_mb).
//! A fresh parser per input would spend each run rebuilding the rules' regex caches.

#![no_main]

use std::sync::Mutex;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use vigil_collector::kmsg::{KmsgOptions, KmsgParser, RuleSet, parse_record};
use vigil_collector::util::Stamp;

static PARSERS: [Mutex<Option<KmsgParser>>; 2] = [Mutex::new(None), Mutex::new(None)];

fn parser(resume: Option<u64>) -> KmsgParser {
    let rules = RuleSet::load(true, &[]).expect("built-in rules load");
    KmsgParser::with_rules(Vec::new(), 1, resume, rules, KmsgOptions::default())
        .expect("built-in rules compile")
}

fuzz_target!(|data: &[u8]| {
    // First byte odd: a restarted collector, resuming after sequence 100 (what the journal
    // holds is replayed into the conditions, not shipped).
    let (resume, data) = match data.split_first() {
        Some((&b, rest)) => (usize::from(b & 1), rest),
        None => (0, data),
    };
    let mut slot = PARSERS[resume].lock().expect("parser lock");
    let p = slot.get_or_insert_with(|| parser((resume == 1).then_some(100)));
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
