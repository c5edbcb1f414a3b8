//! `collector.kmsg_rules`: the rule files are read here, at start, before any sandbox or virtual
//! root (so any path the operator can name works, in every mount mode and in a container),
//! bounded in size, and handed to the collector in its Init. The root supervisor does not parse
//! them: the collector checks them first thing (with the other `kmsg_*` keys), and a bad file
//! is its `ConfigError`, one error naming file, rule and reason, after which `vigil run` exits
//! without a restart.

use vigil_ipc_proto::config::{KMSG_RULE_FILE_MAX, KMSG_RULE_TEXT_MAX};
use vigil_ipc_proto::{AgentConfig, RuleFileText};

use crate::error::{Error, Result};

/// Read every rule file; the texts go into the config.
pub fn load(cfg: &mut AgentConfig) -> Result<()> {
    let c = &mut cfg.collector;
    let mut files = Vec::with_capacity(c.kmsg_rules.len());
    let mut total = 0;
    for path in &c.kmsg_rules {
        let text = read(path)?;
        total += text.len();
        files.push(RuleFileText {
            path: path.clone(),
            text,
        });
    }
    if total > KMSG_RULE_TEXT_MAX {
        return Err(Error::Other(format!(
            "collector.kmsg_rules: {total} bytes of rules in all, more than {KMSG_RULE_TEXT_MAX}"
        )));
    }
    c.kmsg_rule_files = files;
    Ok(())
}

fn read(path: &str) -> Result<String> {
    crate::files::read_text_bounded(std::path::Path::new(path), KMSG_RULE_FILE_MAX as u64)
        .map_err(|e| Error::Other(format!("kmsg rule file {path}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_read_bounded_and_carried_unparsed() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.json");
        std::fs::write(&good, r#"{"plugin":"kmsg","rules":[]}"#).unwrap();
        // Not parsed here: a broken rule travels to the collector, which refuses it.
        let broken = dir.path().join("broken.json");
        std::fs::write(&broken, "{ not json").unwrap();
        let mut cfg = AgentConfig::default();
        cfg.collector.kmsg_rules = vec![good.display().to_string(), broken.display().to_string()];
        load(&mut cfg).unwrap();
        assert_eq!(cfg.collector.kmsg_rule_files.len(), 2);
        assert_eq!(cfg.collector.kmsg_rule_files[1].text, "{ not json");

        cfg.collector.kmsg_rules = vec!["/nonexistent/rules.json".into()];
        let e = load(&mut cfg).unwrap_err().to_string();
        assert!(
            e.starts_with("kmsg rule file /nonexistent/rules.json: "),
            "{e}"
        );
        // A device or a FIFO would block or never end; a file past the bound is refused.
        cfg.collector.kmsg_rules = vec!["/dev/zero".into()];
        assert!(load(&mut cfg).is_err());
        let big = dir.path().join("big.json");
        std::fs::write(&big, vec![b' '; KMSG_RULE_FILE_MAX + 1]).unwrap();
        cfg.collector.kmsg_rules = vec![big.display().to_string()];
        assert!(
            load(&mut cfg)
                .unwrap_err()
                .to_string()
                .contains("larger than")
        );
        // All files together must fit in the collector's Init.
        let half = dir.path().join("half.json");
        std::fs::write(&half, vec![b' '; KMSG_RULE_TEXT_MAX / 2 + 1]).unwrap();
        cfg.collector.kmsg_rules = vec![half.display().to_string(); 2];
        assert!(load(&mut cfg).unwrap_err().to_string().contains("in all"));
    }
}
