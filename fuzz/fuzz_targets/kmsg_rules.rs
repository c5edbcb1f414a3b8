//! The kmsg rule-file loader fed arbitrary text, as a user's `kmsg_rules` file reaches it
//! (`RuleSet::load` / `add_file`: NPD's JSON format, patterns compiled under a size limit,
//! conditions, counters, durations), after the built-in files or alone; a file that loads must
//! build a parser (`KmsgParser::with_rules`, the `RegexSet` matcher) that takes a few lines.
//! Also the kmsg options' level and duration parsers on the same text.

#![no_main]

use libfuzzer_sys::fuzz_target;
use vigil_collector::kmsg::options::{parse_duration, parse_level};
use vigil_collector::kmsg::{KmsgOptions, KmsgParser, RuleSet};

const LINES: &[&[u8]] = &[
    b"3,1,100,-;Out of memory: Killed process 4242 (stress) total-vm:1kB",
    b"4,2,200,-;INFO: task kworker/0:1:42 blocked for more than 120 seconds.",
    b"2,3,300,-;BUG: unable to handle page fault for address: 0000000000001234",
    b"4,4,400,-;Call Trace:",
    b"4,5,500,c; <TASK>",
    b"6,6,600,-;EXT4-fs error (device sda1): ext4_find_entry:1455: inode #2: comm ls",
];

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest).into_owned();
    let _ = parse_level(&text);
    let _ = parse_duration(&text);
    let user = [("fuzz.json".to_string(), text)];
    // After the built-in files for one input in eight (conflicts with them; slow to compile).
    let Ok(rules) = RuleSet::load(mode & 7 == 0, &user) else {
        return;
    };
    if let Ok(mut p) = KmsgParser::with_rules(Vec::new(), 0, None, rules, KmsgOptions::default()) {
        let mut out = Vec::new();
        for l in LINES {
            p.feed(l, &mut out);
        }
    }
});
