//! Landlock rulesets as data: templates per role in `policies/landlock/*.toml`, filled by the
//! supervisor with this run's paths and ports. `apply::landlock` restricts a child with one.

use serde::Deserialize;
use vigil_ipc_proto::{LandlockPlan, Role};

const COLLECTOR: &str = include_str!("../../landlock/collector.toml");
const SHIPPER: &str = include_str!("../../landlock/shipper.toml");
const PRIVHELPER: &str = include_str!("../../landlock/privhelper.toml");

#[derive(Debug, thiserror::Error)]
pub enum LandlockError {
    #[error("landlock template of {role}: {msg}")]
    Template { role: Role, msg: String },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Template {
    read_only: Vec<String>,
    read_write: Vec<String>,
    connect_tcp: Vec<String>,
}

/// Values substituted into the templates.
#[derive(Debug, Clone, Default)]
pub struct LandlockVars {
    pub host_root: String,
    pub runtime_dir: String,
    pub journal_dir: String,
    /// TCP ports the shipper connects to: its OTLP endpoints (or their proxy), 53 when a
    /// name must be resolved (DNS over TCP after a truncated UDP answer).
    pub connect_ports: Vec<u16>,
}

fn template(role: Role) -> Option<&'static str> {
    match role {
        Role::Collector => Some(COLLECTOR),
        Role::Shipper => Some(SHIPPER),
        Role::Privhelper => Some(PRIVHELPER),
        _ => None,
    }
}

/// One template entry → zero or more values (`{connect_ports}` is a list).
fn subst(s: &str, v: &LandlockVars) -> Vec<String> {
    if s == "{connect_ports}" {
        return v.connect_ports.iter().map(u16::to_string).collect();
    }
    vec![
        s.replace("{host_root}", &v.host_root)
            .replace("{runtime_dir}", &v.runtime_dir)
            .replace("{journal_dir}", &v.journal_dir),
    ]
}

/// The plan of a role for this run (pure: templates + variables).
pub fn landlock_plan(role: Role, vars: &LandlockVars) -> Result<LandlockPlan, LandlockError> {
    let text = template(role).ok_or_else(|| LandlockError::Template {
        role,
        msg: "no template".into(),
    })?;
    let t: Template = toml::from_str(text).map_err(|e| LandlockError::Template {
        role,
        msg: e.to_string(),
    })?;
    let paths = |v: &[String]| v.iter().flat_map(|s| subst(s, vars)).collect::<Vec<_>>();
    let mut connect_tcp = Vec::new();
    for p in t.connect_tcp.iter().flat_map(|s| subst(s, vars)) {
        connect_tcp.push(p.parse().map_err(|_| LandlockError::Template {
            role,
            msg: format!("bad port {p}"),
        })?);
    }
    Ok(LandlockPlan {
        enabled: true,
        read_only: paths(&t.read_only),
        read_write: paths(&t.read_write),
        connect_tcp,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> LandlockVars {
        LandlockVars {
            host_root: "/".into(),
            runtime_dir: "/run/vigil".into(),
            journal_dir: "/run/vigil/journal".into(),
            connect_ports: vec![53, 4318],
        }
    }

    #[test]
    fn plans_per_role() {
        let c = landlock_plan(Role::Collector, &vars()).unwrap();
        assert!(c.read_write.is_empty() && c.connect_tcp.is_empty());
        assert!(c.read_only.contains(&"/proc".to_string()));
        let s = landlock_plan(Role::Shipper, &vars()).unwrap();
        assert_eq!(s.read_write, vec!["/run/vigil/journal".to_string()]);
        assert_eq!(s.connect_tcp, vec![53, 4318]);
        let mut v = vars();
        v.connect_ports.clear();
        assert!(
            landlock_plan(Role::Shipper, &v)
                .unwrap()
                .connect_tcp
                .is_empty()
        );
        let p = landlock_plan(Role::Privhelper, &vars()).unwrap();
        assert!(p.read_only.contains(&"/dev/kmsg".to_string()));
        assert!(p.read_write.is_empty());
    }
}
