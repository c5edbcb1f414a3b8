//! The whole kernel-line path as the collector runs it (`KmsgParser::new` + `feed`), nothing
//! else: the same source builds against the parser before the rules (for the comparison in
//! BENCHMARKS.md) and after.
//!
//! `cargo bench -p vigil-collector --bench kmsg_feed` (plain binary, prints one line).

#[path = "kmsg/corpus.rs"]
mod corpus;

use vigil_collector::kmsg::KmsgParser;

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let records = corpus::records(200_000);
    let mut p = KmsgParser::new(Vec::new(), 0, None);
    let per_s = corpus::rate(&records, 3, |rs| {
        let mut out = Vec::new();
        for r in rs {
            p.feed(r, &mut out);
            out.clear();
        }
        std::hint::black_box(p.stats.records);
    });
    corpus::report(
        "KmsgParser::feed (the collector's whole kernel-line path)",
        per_s,
    );
}
