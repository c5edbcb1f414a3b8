//! `collector.kmsg_rules`: the rule files are read here, at start, before any sandbox or virtual
//! root (so any path the operator can name works, in every mount mode and in a container),
//! checked with the collector's own loader together with the built-in rules, and handed to the
//! collector in its Init. A bad file is one error naming file, rule and reason, and `vigil run`
//! exits: nothing a user writes reaches a sandboxed role that would fail and be restarted.

use vigil_collector::kmsg::{KmsgOptions, RuleSet, rules::MAX_FILE_BYTES};
use vigil_ipc_proto::{AgentConfig, RuleFileText};

use crate::error::{Error, Result};

/// Rule text all files together may have: it travels in the collector's Init, one frame of at
/// most 64 KiB.
pub const MAX_RULE_TEXT: usize = 48 * 1024;

/// Read and check every rule file, and the other `kmsg_*` keys; the texts go into the config.
pub fn load(cfg: &mut AgentConfig) -> Result<()> {
    let c = &mut cfg.collector;
    KmsgOptions::from_config(c).map_err(|e| Error::Other(e.to_string()))?;
    let mut files = Vec::with_capacity(c.kmsg_rules.len());
    let mut total = 0;
    for path in &c.kmsg_rules {
        let text = read(path)?;
        total += text.len();
        files.push((path.clone(), text));
    }
    if total > MAX_RULE_TEXT {
        return Err(Error::Other(format!(
            "collector.kmsg_rules: {total} bytes of rules in all, more than {MAX_RULE_TEXT}"
        )));
    }
    RuleSet::load(c.kmsg_builtin_rules, &files).map_err(|e| Error::Other(e.to_string()))?;
    c.kmsg_rule_files = files
        .into_iter()
        .map(|(path, text)| RuleFileText { path, text })
        .collect();
    Ok(())
}

fn read(path: &str) -> Result<String> {
    let err = |msg: String| Error::Other(format!("kmsg rule file {path}: {msg}"));
    let bytes = crate::files::read_bounded(std::path::Path::new(path), MAX_FILE_BYTES as u64)
        .map_err(|e| err(e.to_string()))?;
    String::from_utf8(bytes).map_err(|_| err("not UTF-8 text".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_read_checked_and_carried() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.json");
        std::fs::write(
            &good,
            r#"{"plugin":"kmsg","source":"mine","rules":[
                {"type":"temporary","reason":"Mine","pattern":"my line \\d+"}]}"#,
        )
        .unwrap();
        let mut cfg = AgentConfig::default();
        cfg.collector.kmsg_rules = vec![good.display().to_string()];
        load(&mut cfg).unwrap();
        assert_eq!(cfg.collector.kmsg_rule_files.len(), 1);
        assert!(cfg.collector.kmsg_rule_files[0].text.contains("Mine"));

        let bad = dir.path().join("bad.json");
        std::fs::write(
            &bad,
            r#"{"plugin":"kmsg","rules":[{"type":"temporary","reason":"Bad","pattern":"(x"}]}"#,
        )
        .unwrap();
        cfg.collector.kmsg_rules = vec![good.display().to_string(), bad.display().to_string()];
        let e = load(&mut cfg).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!(
                "kmsg rule file {}: rule 0 (reason \"Bad\"): bad pattern",
                bad.display()
            )),
            "{e}"
        );
        cfg.collector.kmsg_rules = vec!["/nonexistent/rules.json".into()];
        let e = load(&mut cfg).unwrap_err().to_string();
        assert!(
            e.starts_with("kmsg rule file /nonexistent/rules.json: "),
            "{e}"
        );
        cfg.collector.kmsg_rules.clear();
        cfg.collector.kmsg_lookback = "soon".into();
        assert!(
            load(&mut cfg)
                .unwrap_err()
                .to_string()
                .contains("kmsg_lookback")
        );
    }
}
