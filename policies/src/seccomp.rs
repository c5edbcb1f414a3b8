//! Seccomp allowlists: the readable `policies/seccomp/*.policy` files, parsed into a typed
//! policy and compiled with libseccomp. Anything not allowed traps with SIGSYS; the handler
//! installed by [`crate::report`] tells the supervisor which syscall it was.

use libseccomp::{ScmpAction, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall};
use vigil_ipc_proto::Role;

const COMMON: &str = include_str!("../seccomp/common.policy");
const COLLECTOR: &str = include_str!("../seccomp/collector.policy");
const SHIPPER: &str = include_str!("../seccomp/shipper.policy");
const PRIVHELPER: &str = include_str!("../seccomp/privhelper.policy");
const SHIPPER_DNS: &str = include_str!("../seccomp/shipper-dns.policy");
const SHIPPER_LISTEN: &str = include_str!("../seccomp/shipper-listen.policy");

/// Policy files a run may add to a role's own (see `SandboxPlan::seccomp_extra`).
pub const EXTRAS: &[&str] = &["shipper-dns", "shipper-listen"];

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
    #[error("seccomp: {0}")]
    Seccomp(#[from] libseccomp::error::SeccompError),
    #[error("syscall {0} is not known to libseccomp")]
    UnknownSyscall(String),
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

    /// The role's policy plus the run's extra files (a syscall listed twice is an error).
    pub fn for_plan(role: Role, extras: &[String]) -> Result<Policy, PolicyError> {
        let mut p = Self::for_role(role)?;
        for name in extras {
            let (file, text) = source(name)
                .filter(|_| EXTRAS.contains(&name.as_str()))
                .ok_or_else(|| PolicyError::Include {
                    file: "plan",
                    name: name.clone(),
                })?;
            // An extra file may list a syscall of the role's again: its rules widen them.
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

    /// Build the filter (default action: trap) for the calling process.
    pub fn compile(&self) -> Result<ScmpFilterContext, PolicyError> {
        self.compile_with_default(ScmpAction::Trap)
    }

    /// Build the filter with another action for what it does not allow (tests: ENOSYS).
    pub fn compile_with_default(
        &self,
        default: ScmpAction,
    ) -> Result<ScmpFilterContext, PolicyError> {
        let pid = std::process::id() as u64;
        let mut ctx = ScmpFilterContext::new(default)?;
        // We set NoNewPrivs ourselves before, and report it; keep libseccomp from hiding it.
        ctx.set_ctl_nnp(true)?;
        for rule in &self.rules {
            let sc = match ScmpSyscall::from_name(&rule.syscall) {
                Ok(s) => s,
                Err(_) => return Err(PolicyError::UnknownSyscall(rule.syscall.clone())),
            };
            if i32::from(sc) < 0 {
                // Known to libseccomp but absent on this architecture (e.g. `open` on aarch64).
                tracing::debug!(syscall = %rule.syscall, "not on this architecture, skipped");
                continue;
            }
            if rule.args.is_empty() {
                ctx.add_rule(ScmpAction::Allow, sc)?;
                continue;
            }
            // One libseccomp rule per combination of allowed values: rules OR, the
            // comparisons inside one rule AND.
            let mut combos: Vec<Vec<ScmpArgCompare>> = vec![Vec::new()];
            for f in &rule.args {
                let mut next = Vec::new();
                for c in &combos {
                    for v in &f.values {
                        let val = match v {
                            Value::Const(c) => *c,
                            Value::OwnPid => pid,
                        };
                        let mut c = c.clone();
                        c.push(ScmpArgCompare::new(f.index, ScmpCompareOp::Equal, val));
                        next.push(c);
                    }
                }
                combos = next;
            }
            for c in combos {
                ctx.add_rule_conditional(ScmpAction::Allow, sc, &c)?;
            }
        }
        Ok(ctx)
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

/// Name of a syscall number on this architecture, for reports.
pub fn syscall_name(nr: u32) -> String {
    ScmpSyscall::from(nr as i32)
        .get_name()
        .unwrap_or_else(|_| format!("syscall#{nr}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_policy_parses_and_every_name_resolves() {
        for role in [Role::Privhelper, Role::Collector, Role::Shipper] {
            let p = Policy::for_role(role).unwrap();
            assert!(p.rules.len() > 40, "{role}: {}", p.rules.len());
            for r in &p.rules {
                let nr = ScmpSyscall::from_name(&r.syscall)
                    .unwrap_or_else(|_| panic!("{role}: unknown syscall {}", r.syscall));
                assert!(i32::from(nr) >= 0, "{role}: {} not on this arch", r.syscall);
            }
            p.compile().unwrap();
        }
        let p = Policy::for_plan(
            Role::Shipper,
            &["shipper-dns".into(), "shipper-listen".into()],
        )
        .unwrap();
        assert_eq!(p.name, "shipper+shipper-dns+shipper-listen");
        assert!(p.allows("accept4") && !p.allows("bind") && !p.allows("listen"));
        assert_eq!(p.rules.iter().filter(|r| r.syscall == "socket").count(), 2);
        assert!(!Policy::for_role(Role::Shipper).unwrap().allows("accept4"));
        p.compile().unwrap();
        assert!(Policy::for_plan(Role::Shipper, &["collector".into()]).is_err());
        assert!(Policy::for_plan(Role::Shipper, &["nope".into()]).is_err());
    }

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
        let all_extras: Vec<String> = EXTRAS.iter().map(|s| s.to_string()).collect();
        for p in [
            Policy::for_role(Role::Collector).unwrap(),
            Policy::for_plan(Role::Shipper, &all_extras).unwrap(),
        ] {
            let role = &p.name;
            for f in forbidden {
                assert!(!p.allows(f), "{role} allows {f}");
            }
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

    /// The shipper's socket rule, with and without the DNS extra, enforced by a real filter
    /// in a forked child (ENOSYS instead of a trap, so the child can tell).
    #[test]
    fn socket_types_follow_the_extra_policies() {
        fn try_in_child(extras: &[String]) -> [bool; 4] {
            let p = Policy::for_plan(Role::Shipper, extras).unwrap();
            let filter = p
                .compile_with_default(ScmpAction::Errno(libc::ENOSYS))
                .unwrap();
            let (r, w) = nix::unistd::pipe().unwrap();
            // SAFETY: the child only makes raw syscalls and exits; no allocation after fork.
            match unsafe { nix::unistd::fork() }.unwrap() {
                nix::unistd::ForkResult::Child => {
                    let _ = filter.load();
                    let mut out = [0u8; 4];
                    let kinds = [
                        (libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC),
                        (
                            libc::AF_INET6,
                            libc::SOCK_DGRAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                        ),
                        (
                            libc::AF_INET,
                            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                        ),
                        (libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC),
                    ];
                    for (i, (fam, ty)) in kinds.iter().enumerate() {
                        // SAFETY: plain syscalls on our own descriptors.
                        let fd = unsafe { libc::socket(*fam, *ty, 0) };
                        out[i] = u8::from(fd >= 0);
                    }
                    // SAFETY: write to our pipe end, then leave without unwinding.
                    unsafe {
                        libc::write(std::os::fd::AsRawFd::as_raw_fd(&w), out.as_ptr().cast(), 4);
                        libc::_exit(0);
                    }
                }
                nix::unistd::ForkResult::Parent { child } => {
                    drop(w);
                    let mut out = [0u8; 4];
                    nix::unistd::read(&r, &mut out).unwrap();
                    nix::sys::wait::waitpid(child, None).unwrap();
                    out.map(|b| b == 1)
                }
            }
        }
        // TCP client sockets only; no UDP, no AF_UNIX.
        assert_eq!(try_in_child(&[]), [true, false, false, false]);
        // With a name to resolve: the resolver's UDP and non-blocking TCP sockets too.
        assert_eq!(
            try_in_child(&["shipper-dns".into()]),
            [true, true, true, false]
        );
    }

    #[test]
    fn misspelled_syscall_fails_to_compile() {
        let p = Policy {
            name: "t".into(),
            rules: vec![Rule {
                syscall: "raed".into(),
                args: Vec::new(),
            }],
        };
        assert!(matches!(p.compile(), Err(PolicyError::UnknownSyscall(n)) if n == "raed"));
    }

    #[test]
    fn names_of_numbers() {
        assert_eq!(syscall_name(libc::SYS_bpf as u32), "bpf");
        assert_eq!(syscall_name(libc::SYS_ptrace as u32), "ptrace");
    }
}
