//! The agent user, resolved in the *host's* /etc/passwd and /etc/group (under the host root),
//! parsed directly: no NSS, so a container's own user database never answers for the host.

use std::path::Path;

use crate::error::{Error, Result};
use crate::files::read_text_bounded;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (from /etc/group member lists), primary group first.
    pub groups: Vec<u32>,
}

/// /etc/passwd and /etc/group are parsed by the root supervisor: bounded (16 MiB holds a few
/// hundred thousand users of a directory export).
const MAX_USER_DB: u64 = 16 << 20;

/// Look `name` up under `host_root`.
pub fn lookup(host_root: &Path, name: &str) -> Result<HostUser> {
    let passwd = host_root.join("etc/passwd");
    let text = read_text_bounded(&passwd, MAX_USER_DB).map_err(|source| Error::Read {
        path: passwd.clone(),
        source,
    })?;
    let (uid, gid) = parse_passwd(&text, name).ok_or_else(|| Error::NoSuchUser {
        user: name.into(),
        passwd: passwd.clone(),
    })?;
    let group = host_root.join("etc/group");
    let gtext = read_text_bounded(&group, MAX_USER_DB).unwrap_or_else(|e| {
        tracing::warn!(
            "reading {}: {e}; {name} gets no supplementary groups",
            group.display()
        );
        String::new()
    });
    let mut groups = vec![gid];
    for g in supplementary(&gtext, name) {
        if !groups.contains(&g) {
            groups.push(g);
        }
    }
    Ok(HostUser {
        name: name.into(),
        uid,
        gid,
        groups,
    })
}

fn parse_passwd(text: &str, name: &str) -> Option<(u32, u32)> {
    text.lines().find_map(|l| {
        let mut f = l.split(':');
        if f.next()? != name {
            return None;
        }
        let _pw = f.next()?;
        let uid = f.next()?.parse().ok()?;
        let gid = f.next()?.parse().ok()?;
        Some((uid, gid))
    })
}

fn supplementary(text: &str, name: &str) -> Vec<u32> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 4 {
                return None;
            }
            let gid: u32 = f[2].parse().ok()?;
            f[3].split(',').any(|m| m.trim() == name).then_some(gid)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_users_and_groups_in_the_host_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        std::fs::write(
            dir.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/bash\nbroken\nvigil:x:990:985::/nonexistent:/usr/sbin/nologin\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("etc/group"),
            "vigil:x:985:\nadm:x:4:syslog,vigil\nsys:x:3:\nbad\n",
        )
        .unwrap();
        let u = lookup(dir.path(), "vigil").unwrap();
        assert_eq!((u.uid, u.gid, u.groups), (990, 985, vec![985, 4]));
        let e = lookup(dir.path(), "nope").unwrap_err().to_string();
        assert!(e.contains("nope") && e.contains("passwd"), "{e}");
        // How to fix it, in the message.
        assert!(
            e.contains("useradd --system") && e.contains("--user"),
            "{e}"
        );
    }

    #[test]
    fn hostile_or_near_miss_lines_never_answer_for_the_user() {
        let passwd = "vigil2:x:1:1::/:/bin/sh\n:x:2:2::/:/bin/sh\nvigil:x:notanumber:3::/:/x\n\
                      vigil:x:4294967296:3::/:/x\nvigil\nvigil:x:7:8::/:/bin/sh\n";
        // Near misses are skipped; the first well-formed entry wins.
        assert_eq!(parse_passwd(passwd, "vigil"), Some((7, 8)));
        assert_eq!(parse_passwd(passwd, "vigil3"), None);
        assert_eq!(parse_passwd("", "vigil"), None);
        let group = "g:x:10:vigil2,xvigil\nh:x:11: vigil ,other\ni:x:bad:vigil\nj:x:12\n";
        assert_eq!(supplementary(group, "vigil"), vec![11]);
    }
}
