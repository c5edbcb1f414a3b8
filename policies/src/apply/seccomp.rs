//! Compiling a seccomp [`Policy`] with libseccomp into the filter a child loads on itself.

use libseccomp::{ScmpAction, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall};

use crate::plan::seccomp::{Policy, Value};

#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    #[error("seccomp: {0}")]
    Seccomp(#[from] libseccomp::error::SeccompError),
    #[error("syscall {0} is not known to libseccomp")]
    UnknownSyscall(String),
}

/// Build the filter (default action: trap) for the calling process.
pub fn compile(policy: &Policy) -> Result<ScmpFilterContext, CompileError> {
    compile_with_default(policy, ScmpAction::Trap)
}

/// Build the filter with another action for what it does not allow (tests: ENOSYS).
pub fn compile_with_default(
    policy: &Policy,
    default: ScmpAction,
) -> Result<ScmpFilterContext, CompileError> {
    let pid = std::process::id() as u64;
    let mut ctx = ScmpFilterContext::new(default)?;
    // We set NoNewPrivs ourselves before, and report it; keep libseccomp from hiding it.
    ctx.set_ctl_nnp(true)?;
    for rule in &policy.rules {
        let sc = match ScmpSyscall::from_name(&rule.syscall) {
            Ok(s) => s,
            Err(_) => return Err(CompileError::UnknownSyscall(rule.syscall.clone())),
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

/// Name of a syscall number on this architecture, for reports.
pub fn syscall_name(nr: u32) -> String {
    ScmpSyscall::from(nr as i32)
        .get_name()
        .unwrap_or_else(|_| format!("syscall#{nr}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::seccomp::Rule;
    use vigil_ipc_proto::Role;

    #[test]
    fn every_policy_compiles_and_every_name_resolves() {
        for role in [Role::Privhelper, Role::Collector, Role::Shipper] {
            let p = Policy::for_role(role).unwrap();
            assert!(p.rules.len() > 40, "{role}: {}", p.rules.len());
            for r in &p.rules {
                let nr = ScmpSyscall::from_name(&r.syscall)
                    .unwrap_or_else(|_| panic!("{role}: unknown syscall {}", r.syscall));
                assert!(i32::from(nr) >= 0, "{role}: {} not on this arch", r.syscall);
            }
            compile(&p).unwrap();
        }
        let all: Vec<String> = ["shipper", "shipper-dns", "shipper-listen"]
            .map(String::from)
            .to_vec();
        compile(&Policy::from_files(&all).unwrap()).unwrap();
    }

    /// The shipper's socket rule, with and without the DNS extra, enforced by a real filter
    /// in a forked child (ENOSYS instead of a trap, so the child can tell).
    #[test]
    fn socket_types_follow_the_extra_policies() {
        fn try_in_child(extras: &[String]) -> [bool; 4] {
            let files: Vec<String> = std::iter::once("shipper".to_string())
                .chain(extras.iter().cloned())
                .collect();
            let p = Policy::from_files(&files).unwrap();
            let filter = compile_with_default(&p, ScmpAction::Errno(libc::ENOSYS)).unwrap();
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
        assert!(matches!(compile(&p), Err(CompileError::UnknownSyscall(n)) if n == "raed"));
    }

    #[test]
    fn names_of_numbers() {
        assert_eq!(syscall_name(libc::SYS_bpf as u32), "bpf");
        assert_eq!(syscall_name(libc::SYS_ptrace as u32), "ptrace");
    }
}
