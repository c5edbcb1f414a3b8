//! The text form of a status report.

use vigil_ipc_proto::{Role, StatusReport};

/// Capability names of a /proc mask.
pub fn cap_names(mask: u64) -> String {
    if mask == 0 {
        return "-".into();
    }
    let mut names = Vec::new();
    for c in caps::all() {
        if mask & (1u64 << c.index()) != 0 {
            names.push(c.to_string().to_lowercase());
        }
    }
    names.sort();
    if names.len() > 12 {
        return format!("{} capabilities", names.len());
    }
    names.join(",")
}

/// Whether `pid` lives in a user namespace other than ours (rootless agent seen from outside).
fn in_other_user_namespace(pid: u32) -> bool {
    match (
        std::fs::read_link(format!("/proc/{pid}/ns/user")),
        std::fs::read_link("/proc/self/ns/user"),
    ) {
        (Ok(theirs), Ok(ours)) => theirs != ours,
        _ => false,
    }
}

/// One counter of one role's pipeline stats.
fn counter(r: &StatusReport, role: Role, name: &str) -> Option<u64> {
    let (_, s) = r.stats.iter().find(|(ro, _)| *ro == role)?;
    s.counters.iter().find(|(k, _)| k == name).map(|(_, v)| *v)
}

/// The privhelper's phase in words: what it still holds and why.
fn privhelper_phase(steady: u64, cap_eff: u64) -> String {
    if steady == 0 {
        format!(
            "start-up (holds {} until the collector is ready)",
            cap_names(cap_eff)
        )
    } else if cap_eff == 0 {
        "steady state (start-up requests refused; holds no capability)".into()
    } else {
        format!(
            "steady state (start-up requests refused; keeps {} for the enabled features)",
            cap_names(cap_eff)
        )
    }
}

pub fn print_report(r: &StatusReport) {
    println!(
        "vigil {}  mount mode {}  virtual root {}  agent user {}{}",
        r.version,
        r.mount_mode,
        if r.virtual_root { "yes" } else { "no" },
        r.user,
        if r.non_root_mode {
            ""
        } else {
            " (non-root mode off)"
        }
    );
    println!(
        "{:<11} {:>7} {:>11} {:>11} {:>4} {:>7} {:<22} {:>8}  capabilities",
        "ROLE", "PID", "UID", "GID", "NNP", "SECCOMP", "LANDLOCK", "RESTARTS"
    );
    for p in &r.processes {
        let seccomp = match p.seccomp {
            0 => "off",
            1 => "strict",
            _ => "filter",
        };
        println!(
            "{:<11} {:>7} {:>11} {:>11} {:>4} {:>7} {:<22} {:>8}  eff={:#x} prm={:#x} bnd={:#x} amb={:#x} inh={:#x}",
            p.role.as_str(),
            p.pid,
            p.uids[0],
            p.gids[0],
            if p.no_new_privs { "yes" } else { "no" },
            seccomp,
            p.landlock,
            p.restarts,
            p.cap_eff,
            p.cap_prm,
            p.cap_bnd,
            p.cap_amb,
            p.cap_inh,
        );
        for (set, v) in [
            ("effective", p.cap_eff),
            ("permitted", p.cap_prm),
            ("bounding", p.cap_bnd),
            ("ambient", p.cap_amb),
            ("inheritable", p.cap_inh),
        ] {
            // Other sets only when they say something the effective set does not.
            if set == "effective" || (v != 0 && v != p.cap_eff) {
                println!("{:<11} {set}: {}", "", cap_names(v));
            }
        }
        if p.pid != 0 && (p.cap_eff | p.cap_prm | p.cap_bnd) != 0 && in_other_user_namespace(p.pid)
        {
            println!(
                "{:<11} (in its own user namespace: these capabilities do not apply on the host)",
                ""
            );
        }
        if p.role == Role::Privhelper
            && let Some(steady) = counter(r, Role::Privhelper, "steady_state")
        {
            println!("{:<11} phase: {}", "", privhelper_phase(steady, p.cap_eff));
        }
        if let Some(e) = &p.last_exit {
            println!("{:<11} last exit: {e}", "");
        }
    }
    println!();
    println!("features:");
    for f in &r.features {
        println!(
            "  {:<20} {:<4} {}",
            f.name,
            if f.enabled { "on" } else { "off" },
            f.reason
        );
    }
    println!();
    println!("pipeline:");
    for (role, s) in &r.stats {
        for (k, v) in &s.counters {
            println!("  {:<11} {:<32} {v}", role.as_str(), k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities_by_name() {
        assert_eq!(cap_names(0), "-");
        assert_eq!(cap_names((1 << 34) | (1 << 39)), "cap_bpf,cap_syslog");
        assert_eq!(cap_names(u64::MAX >> 23), "41 capabilities");
    }

    #[test]
    fn privhelper_phase_names_what_it_holds() {
        assert!(privhelper_phase(0, 1 << 21).contains("start-up (holds cap_sys_admin"));
        assert!(privhelper_phase(1, 0).contains("holds no capability"));
        assert!(privhelper_phase(1, 1 << 19).contains("keeps cap_sys_ptrace"));
    }
}
