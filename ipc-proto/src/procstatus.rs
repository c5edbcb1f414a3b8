//! The fields of `/proc/PID/status` that say what a process may do: ids, capability sets,
//! NoNewPrivs, seccomp mode. Parsed once here for `vigil status` (the supervisor reads its
//! children) and the tests (which check the kernel's word against the report; they read the
//! other lines, `State`, `VmRSS`, with [`status_line`]).

/// What one `/proc/PID/status` says (ids as this process's user namespace sees them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct ProcStatusFields {
    /// Real, effective, saved, filesystem.
    pub uids: [u32; 4],
    pub gids: [u32; 4],
    pub cap_inh: u64,
    pub cap_prm: u64,
    pub cap_eff: u64,
    pub cap_bnd: u64,
    pub cap_amb: u64,
    pub no_new_privs: bool,
    /// 0 off, 1 strict, 2 filter.
    pub seccomp: u8,
}

impl ProcStatusFields {
    /// Parse the text of a `/proc/PID/status`; `None` when a field is missing or malformed.
    pub fn parse(text: &str) -> Option<ProcStatusFields> {
        let field = |k: &str| status_line(text, k);
        let ids = |k: &str| -> Option<[u32; 4]> {
            let mut out = [0; 4];
            let mut it = field(k)?.split_whitespace();
            for slot in &mut out {
                *slot = it.next()?.parse().ok()?;
            }
            Some(out)
        };
        let hex = |k: &str| u64::from_str_radix(field(k)?, 16).ok();
        Some(ProcStatusFields {
            uids: ids("Uid")?,
            gids: ids("Gid")?,
            cap_inh: hex("CapInh")?,
            cap_prm: hex("CapPrm")?,
            cap_eff: hex("CapEff")?,
            cap_bnd: hex("CapBnd")?,
            cap_amb: hex("CapAmb")?,
            no_new_privs: field("NoNewPrivs")? == "1",
            seccomp: field("Seccomp")?.parse().ok()?,
        })
    }

    /// Read and parse `/proc/PID/status`.
    pub fn of(pid: u32) -> Option<ProcStatusFields> {
        Self::parse(&std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?)
    }
}

/// The value of line `key` (`"Uid"`, `"State"`: the name without its colon) of a
/// `/proc/PID/status` text, trimmed.
pub fn status_line<'t>(text: &'t str, key: &str) -> Option<&'t str> {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':').map(str::trim))
}

/// An id as the kernel shows it in our user namespace, translated to the parent namespace
/// with a `uid_map`/`gid_map` text (`inside outside count` per line). Unmapped ids (and an
/// unreadable map) stay as they are.
pub fn to_parent_id(id: u32, map: &str) -> u32 {
    for l in map.lines() {
        let f: Vec<u64> = l
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        if let [inside, outside, count] = f[..]
            && (inside..inside.saturating_add(count)).contains(&u64::from(id))
            && let Ok(v) = u32::try_from(outside + (u64::from(id) - inside))
        {
            return v;
        }
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_our_own_status() {
        let me = ProcStatusFields::of(std::process::id()).expect("our own /proc status");
        // SAFETY: getuid has no preconditions.
        assert_eq!(me.uids[0], unsafe { libc::getuid() });
        let eff = std::fs::read_to_string("/proc/self/status")
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("CapEff:").map(|v| v.trim().to_string()))
            .unwrap();
        assert_eq!(me.cap_eff, u64::from_str_radix(&eff, 16).unwrap());
        assert!(ProcStatusFields::of(u32::MAX).is_none());
        assert_eq!(ProcStatusFields::parse("Uid: 1 2\n"), None);
        assert_eq!(ProcStatusFields::parse(""), None);
        assert_eq!(
            status_line("State:\tS (sleeping)\nUid:\t1\n", "State"),
            Some("S (sleeping)")
        );
        assert_eq!(status_line("VmRSS:  12 kB\n", "VmRSS"), Some("12 kB"));
        assert_eq!(status_line("CapEffX: 1\n", "CapEff"), None);
    }

    #[test]
    fn ids_are_translated_to_the_parent_namespace() {
        let rootless = "         0      65534          1\n";
        assert_eq!(to_parent_id(0, rootless), 65534);
        assert_eq!(to_parent_id(5, rootless), 5, "unmapped stays");
        let identity = "         0          0 4294967295\n";
        assert_eq!(to_parent_id(1000, identity), 1000);
        assert_eq!(to_parent_id(u32::MAX - 1, identity), u32::MAX - 1);
        let ranges = "0 1000 1\n1 100000 65536\n";
        assert_eq!(to_parent_id(1, ranges), 100000);
        assert_eq!(to_parent_id(65536, ranges), 165535);
        assert_eq!(to_parent_id(65537, ranges), 65537);
        for hostile in ["", "x y z", "1 2", "0 4294967295 10", "\n\n 1 2 3 4"] {
            let _ = to_parent_id(3, hostile);
        }
        assert_eq!(
            to_parent_id(3, "0 4294967295 10"),
            3,
            "overflow is not a mapping"
        );
    }
}
