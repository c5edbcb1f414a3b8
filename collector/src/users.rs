//! uid/gid → names from the host's /etc/passwd and /etc/group (under `host_root`), reloaded
//! when their modification time changes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

#[derive(Debug, Default)]
pub struct Users {
    passwd: PathBuf,
    group: PathBuf,
    mtimes: (Option<SystemTime>, Option<SystemTime>),
    users: HashMap<u32, String>,
    groups: HashMap<u32, String>,
    /// Lines that did not parse (counted, skipped).
    pub parse_errors: u64,
}

/// Parse `name:x:id:...` lines (passwd: id is field 3; group: field 3 too). Returns the map and
/// the number of malformed lines.
pub fn parse_id_file(buf: &[u8]) -> (HashMap<u32, String>, u64) {
    let mut m = HashMap::new();
    let mut bad = 0;
    for line in buf.split(|&c| c == b'\n') {
        let line = line.trim_ascii();
        if line.is_empty() || line.starts_with(b"#") {
            continue;
        }
        let mut it = line.split(|&c| c == b':');
        let (Some(name), Some(_), Some(id)) = (it.next(), it.next(), it.next()) else {
            bad += 1;
            continue;
        };
        match (
            std::str::from_utf8(name),
            crate::util::parse_u64(id).and_then(|v| u32::try_from(v).ok()),
        ) {
            (Ok(n), Some(id)) if !n.is_empty() && n.len() <= 256 => {
                m.entry(id).or_insert_with(|| n.to_string());
            }
            _ => bad += 1,
        }
    }
    (m, bad)
}

impl Users {
    pub fn new(host_root: &Path) -> Self {
        let mut u = Users {
            passwd: host_root.join("etc/passwd"),
            group: host_root.join("etc/group"),
            ..Default::default()
        };
        u.refresh();
        u
    }

    /// Reload the files whose mtime changed.
    pub fn refresh(&mut self) {
        let mt = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        let (pm, gm) = (mt(&self.passwd), mt(&self.group));
        let mut buf = Vec::new();
        if pm != self.mtimes.0 || self.users.is_empty() {
            if crate::util::read_into(&self.passwd, &mut buf).is_ok() {
                let (m, bad) = parse_id_file(&buf);
                self.users = m;
                self.parse_errors += bad;
            }
            self.mtimes.0 = pm;
        }
        if gm != self.mtimes.1 || self.groups.is_empty() {
            if crate::util::read_into(&self.group, &mut buf).is_ok() {
                let (m, bad) = parse_id_file(&buf);
                self.groups = m;
                self.parse_errors += bad;
            }
            self.mtimes.1 = gm;
        }
    }

    /// The user's and the group's names, or their numbers as text when the host does not know
    /// them (remembered until the files change, so a cycle allocates nothing for them).
    pub fn names(&mut self, uid: u32, gid: u32) -> (&str, &str) {
        self.users.entry(uid).or_insert_with(|| uid.to_string());
        self.groups.entry(gid).or_insert_with(|| gid.to_string());
        (
            self.users.get(&uid).map_or("", String::as_str),
            self.groups.get(&gid).map_or("", String::as_str),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwd_lines() {
        let (m, bad) = parse_id_file(b"root:x:0:0:root:/root:/bin/bash\nnobody:x:65534:65534::/:/x\nbroken\n:x:5:\nq:x:zz:\n\xff:x:7\n");
        assert_eq!(m.get(&0).map(String::as_str), Some("root"));
        assert_eq!(m.get(&65534).map(String::as_str), Some("nobody"));
        assert_eq!(bad, 4);
    }
}
