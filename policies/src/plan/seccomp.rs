//! Seccomp allowlists as data: the readable `policies/seccomp/*.policy` files, parsed into a
//! typed policy. `apply::seccomp` compiles one with libseccomp; anything not allowed traps
//! with SIGSYS, and the handler
//! installed by [`crate::report`] tells the supervisor which syscall it was.

use vigil_ipc_proto::Role;

const COMMON: &str = include_str!("../../seccomp/common.policy");
const COLLECTOR: &str = include_str!("../../seccomp/collector.policy");
const SHIPPER: &str = include_str!("../../seccomp/shipper.policy");
const PRIVHELPER: &str = include_str!("../../seccomp/privhelper.policy");
const SHIPPER_DNS: &str = include_str!("../../seccomp/shipper-dns.policy");
const SHIPPER_LISTEN: &str = include_str!("../../seccomp/shipper-listen.policy");
const COLLECTOR_FLOWS: &str = include_str!("../../seccomp/collector-flows.policy");
const COLLECTOR_TASKITER: &str = include_str!("../../seccomp/collector-taskiter.policy");

/// Policy files a run may add to a role's own (see `SandboxPlan::seccomp`).
pub const EXTRAS: &[&str] = &[
    "shipper-dns",
    "shipper-listen",
    "collector-flows",
    "collector-taskiter",
];
/// Policy files of a role (see [`policy_name`]).
const ROLE_POLICIES: &[&str] = &["privhelper", "collector", "shipper"];

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("{file}:{line}: {msg}")]
    Parse {
        file: &'static str,
        line: usize,
        msg: String,
    },
    #[error("{file}: @include of unknown policy {name}")]
    Include { file: &'static str, name: String },
}

/// One allowed syscall, optionally only for some values of some arguments (every filter must
/// hold: `(arg0 == 2 || arg0 == 10) && arg1 == 0x80001`). Several rules for one syscall
/// (from different files: a run's extra policy widening the role's) allow their union.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub syscall: String,
    pub args: Vec<ArgFilter>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgFilter {
    pub index: u32,
    /// Any of these values is allowed.
    pub values: Vec<Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Value {
    Const(u64),
    /// The calling process's pid, known when the filter is built.
    OwnPid,
}

/// The policy of a role, all includes resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// The files it was built from, `+`-joined (`shipper+shipper-dns`).
    pub name: String,
    pub rules: Vec<Rule>,
}

fn source(name: &str) -> Option<(&'static str, &'static str)> {
    Some(match name {
        "common" => ("common.policy", COMMON),
        "collector" => ("collector.policy", COLLECTOR),
        "shipper" => ("shipper.policy", SHIPPER),
        "privhelper" => ("privhelper.policy", PRIVHELPER),
        "shipper-dns" => ("shipper-dns.policy", SHIPPER_DNS),
        "shipper-listen" => ("shipper-listen.policy", SHIPPER_LISTEN),
        "collector-flows" => ("collector-flows.policy", COLLECTOR_FLOWS),
        "collector-taskiter" => ("collector-taskiter.policy", COLLECTOR_TASKITER),
        _ => return None,
    })
}

/// The policy file name of a role, if the role has one.
pub fn policy_name(role: Role) -> Option<&'static str> {
    match role {
        Role::Privhelper => Some("privhelper"),
        Role::Collector => Some("collector"),
        Role::Shipper => Some("shipper"),
        Role::Supervisor | Role::StatusClient => None,
    }
}

impl Policy {
    pub fn for_role(role: Role) -> Result<Policy, PolicyError> {
        let name = policy_name(role).ok_or_else(|| PolicyError::Include {
            file: "-",
            name: role.to_string(),
        })?;
        Self::load(name)
    }

    pub fn load(name: &str) -> Result<Policy, PolicyError> {
        let (file, text) = source(name).ok_or_else(|| PolicyError::Include {
            file: "-",
            name: name.to_string(),
        })?;
        let mut rules = Vec::new();
        parse_into(file, text, &mut rules, 0)?;
        Ok(Policy {
            name: file.trim_end_matches(".policy").to_string(),
            rules,
        })
    }

    /// The policy of a plan's files: a role's own first, then the extras this run needs
    /// (whose rules widen the role's for a syscall both list).
    pub fn from_files(files: &[String]) -> Result<Policy, PolicyError> {
        let unknown = |name: &str| PolicyError::Include {
            file: "plan",
            name: name.to_string(),
        };
        let (first, extras) = files.split_first().ok_or_else(|| unknown("(none)"))?;
        if !ROLE_POLICIES.contains(&first.as_str()) {
            return Err(unknown(first));
        }
        let mut p = Self::load(first)?;
        for name in extras {
            // An extra widens its own role only (`collector-flows` is the collector's).
            let (file, text) = source(name)
                .filter(|_| EXTRAS.contains(&name.as_str()))
                .filter(|_| name.starts_with(&format!("{first}-")))
                .ok_or_else(|| unknown(name))?;
            let mut rules = Vec::new();
            parse_into(file, text, &mut rules, 0)?;
            p.rules.extend(rules);
            p.name = format!("{}+{name}", p.name);
        }
        Ok(p)
    }

    pub fn allows(&self, syscall: &str) -> bool {
        self.rules.iter().any(|r| r.syscall == syscall)
    }
}

fn parse_into(
    file: &'static str,
    text: &str,
    out: &mut Vec<Rule>,
    depth: usize,
) -> Result<(), PolicyError> {
    for (i, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let err = |msg: String| PolicyError::Parse {
            file,
            line: i + 1,
            msg,
        };
        if let Some(name) = line.strip_prefix("@include ") {
            let name = name.trim();
            let (f, t) = source(name).ok_or_else(|| PolicyError::Include {
                file,
                name: name.to_string(),
            })?;
            if depth > 4 {
                return Err(err("includes nested too deep".into()));
            }
            parse_into(f, t, out, depth + 1)?;
            continue;
        }
        let (name, cond) = match line.split_once(':') {
            Some((n, c)) => (n.trim(), Some(c.trim())),
            None => (line, None),
        };
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err(err(format!("bad syscall name {name:?}")));
        }
        let args = match cond {
            None => Vec::new(),
            Some(c) => parse_conds(c).map_err(err)?,
        };
        // Within one file and what it includes a syscall is listed once.
        if out.iter().any(|r| r.syscall == name) {
            return Err(err(format!("{name} listed twice")));
        }
        out.push(Rule {
            syscall: name.to_string(),
            args,
        });
    }
    Ok(())
}

/// `(argN == V || argN == V) && argM == W ...`: each `&&` part lists the allowed values of one
/// argument, all parts must hold, one part per argument.
fn parse_conds(c: &str) -> Result<Vec<ArgFilter>, String> {
    let mut out: Vec<ArgFilter> = Vec::new();
    for part in c.split("&&") {
        let part = part.trim();
        let part = part
            .strip_prefix('(')
            .and_then(|p| p.strip_suffix(')'))
            .unwrap_or(part);
        let f = parse_cond(part)?;
        if out.iter().any(|o| o.index == f.index) {
            return Err(format!("arg{} appears in two && parts", f.index));
        }
        out.push(f);
    }
    Ok(out)
}

/// `argN == V || argN == V ...` (one argument).
fn parse_cond(c: &str) -> Result<ArgFilter, String> {
    let mut index = None;
    let mut values = Vec::new();
    for alt in c.split("||") {
        let (lhs, rhs) = alt
            .split_once("==")
            .ok_or_else(|| format!("expected `argN == VALUE` in {alt:?}"))?;
        let idx: u32 = lhs
            .trim()
            .strip_prefix("arg")
            .and_then(|n| n.parse().ok())
            .filter(|n| *n < 6)
            .ok_or_else(|| format!("bad argument {lhs:?}"))?;
        if *index.get_or_insert(idx) != idx {
            return Err("one argument per rule".into());
        }
        let rhs = rhs.trim();
        let v = if rhs == "$PID" {
            Value::OwnPid
        } else if let Some(hex) = rhs.strip_prefix("0x") {
            Value::Const(u64::from_str_radix(hex, 16).map_err(|e| format!("{rhs}: {e}"))?)
        } else {
            Value::Const(rhs.parse().map_err(|e| format!("{rhs}: {e}"))?)
        };
        values.push(v);
    }
    Ok(ArgFilter {
        index: index.ok_or("empty condition")?,
        values,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dangerous_syscalls_are_not_allowed_to_unprivileged_roles() {
        let forbidden = [
            "bpf",
            "ptrace",
            "process_vm_readv",
            "process_vm_writev",
            "setns",
            "unshare",
            "mount",
            "umount2",
            "pivot_root",
            "chroot",
            "init_module",
            "finit_module",
            "delete_module",
            "kexec_load",
            "kexec_file_load",
            "perf_event_open",
            "keyctl",
            "add_key",
            "request_key",
            "open_by_handle_at",
            "setuid",
            "setresuid",
            "setgid",
            "setgroups",
            "capset",
            "personality",
            "userfaultfd",
            "io_uring_setup",
            "clone",
            "clone3",
            "fork",
            "vfork",
            "execve",
            "execveat",
            "kill",
            "reboot",
            "swapon",
            "acct",
            "listen",
        ];
        let all = |role: &str| -> Vec<String> {
            std::iter::once(role)
                .chain(EXTRAS.iter().copied().filter(|e| e.starts_with(role)))
                .map(str::to_string)
                .collect()
        };
        for p in [
            Policy::for_role(Role::Collector).unwrap(),
            Policy::from_files(&all("shipper")).unwrap(),
            Policy::from_files(&all("collector")).unwrap(),
        ] {
            let role = &p.name;
            for f in forbidden {
                // The collector's extras allow bpf() by command only (tested below).
                if f == "bpf" && role.starts_with("collector+") {
                    continue;
                }
                assert!(!p.allows(f), "{role} allows {f}");
            }
        }
        // With flows on, the collector may call bpf() with the two map lookup commands only:
        // that one rule is all collector-flows adds.
        let lookups = Rule {
            syscall: "bpf".into(),
            args: vec![ArgFilter {
                index: 0,
                values: vec![Value::Const(1), Value::Const(24)],
            }],
        };
        assert_eq!(
            Policy::load("collector-flows").unwrap().rules,
            vec![lookups.clone()]
        );
        let flows = Policy::from_files(&["collector".into(), "collector-flows".into()]).unwrap();
        assert!(flows.rules.contains(&lookups));
        for f in forbidden.iter().filter(|f| **f != "bpf") {
            assert!(!flows.allows(f), "collector+collector-flows allows {f}");
        }
        let p = Policy::for_role(Role::Privhelper).unwrap();
        for f in [
            "mount",
            "ptrace",
            "finit_module",
            "init_module",
            "kexec_load",
            "setuid",
            "setresuid",
            "execve",
            "unshare",
            "pivot_root",
        ] {
            assert!(!p.allows(f), "privhelper allows {f}");
        }
        // capset only to lower its sets at the end of start-up (it cannot raise permitted).
        assert!(p.allows("capset"));
        assert!(p.allows("bpf") && p.allows("setns"));
    }

    #[test]
    fn conditions_parse() {
        let f = parse_cond("arg0 == 2 || arg0 == 0x10").unwrap();
        assert_eq!(f.index, 0);
        assert_eq!(f.values, vec![Value::Const(2), Value::Const(16)]);
        assert_eq!(
            parse_cond("arg0 == $PID").unwrap().values,
            vec![Value::OwnPid]
        );
        assert!(parse_cond("arg0 == 1 || arg1 == 2").is_err());
        assert!(parse_cond("arg9 == 1").is_err());
        assert!(parse_cond("arg0 = 1").is_err());
        let mut v = Vec::new();
        assert!(parse_into("t", "Bad-Name\n", &mut v, 0).is_err());
        assert!(parse_into("t", "read\nread\n", &mut v, 0).is_err());
        assert!(parse_into("t", "@include nope\n", &mut Vec::new(), 0).is_err());
        let f = parse_conds("(arg0 == 2 || arg0 == 10) && arg1 == 0x80001").unwrap();
        assert_eq!(f.len(), 2);
        assert_eq!((f[0].index, f[0].values.len()), (0, 2));
        assert_eq!(
            (f[1].index, f[1].values.clone()),
            (1, vec![Value::Const(0x80001)])
        );
        assert!(parse_conds("arg0 == 1 && arg0 == 2").is_err());
    }

    #[test]
    fn a_plan_names_its_files_role_first() {
        let files = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let p = Policy::from_files(&files(&["shipper", "shipper-dns", "shipper-listen"])).unwrap();
        assert_eq!(p.name, "shipper+shipper-dns+shipper-listen");
        assert!(p.allows("accept4") && !p.allows("bind") && !p.allows("listen"));
        assert_eq!(p.rules.iter().filter(|r| r.syscall == "socket").count(), 2);
        assert!(!Policy::for_role(Role::Shipper).unwrap().allows("accept4"));
        // An extra first, a role second, an unknown file, nothing: refused.
        for bad in [
            &["shipper-dns"][..],
            &["shipper", "collector"],
            &["shipper", "nope"],
            &["shipper", "collector-flows"],
            &["collector", "shipper-dns"],
            &[],
        ] {
            assert!(Policy::from_files(&files(bad)).is_err(), "{bad:?}");
        }
    }

    /// The task iterator's extra lets the collector call bpf() with BPF_ITER_CREATE (33) only.
    #[test]
    fn the_collector_may_create_iterators_and_nothing_else_of_bpf() {
        let files = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(!Policy::for_role(Role::Collector).unwrap().allows("bpf"));
        let p = Policy::from_files(&files(&["collector", "collector-taskiter"])).unwrap();
        let bpf: Vec<_> = p.rules.iter().filter(|r| r.syscall == "bpf").collect();
        assert_eq!(bpf.len(), 1);
        assert_eq!(bpf[0].args.len(), 1);
        assert_eq!(
            (bpf[0].args[0].index, bpf[0].args[0].values.clone()),
            (0, vec![Value::Const(33)])
        );
    }
}
