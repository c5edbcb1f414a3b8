//! Which mounts a per-mount read-only remount must visit: the fallback of the one-call
//! `mount_setattr(AT_RECURSIVE)` on kernels without it. Parsing /proc/self/mountinfo is pure
//! and unit-tested; the remounts themselves are in [`super::apply`].

use std::path::{Path, PathBuf};

/// Undo mountinfo's octal escapes (`\040` space, `\011` tab, `\012` newline, `\134` backslash).
fn unescape(field: &str) -> PathBuf {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') as u32 * 64
                + (b[i + 2] - b'0') as u32 * 8
                + (b[i + 3] - b'0') as u32;
            if let Ok(byte) = u8::try_from(v) {
                out.push(byte);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    use std::os::unix::ffi::OsStringExt;
    PathBuf::from(std::ffi::OsString::from_vec(out))
}

/// Mount points at or below `target`, parents before children (fewest components first, then
/// in mountinfo order). Malformed lines are skipped.
pub fn mounts_under(mountinfo: &str, target: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape)
        .filter(|p| p.starts_with(target))
        .collect();
    out.dedup();
    out.sort_by_key(|p| p.components().count());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
25 22 0:23 / /run rw,nosuid,nodev shared:5 - tmpfs tmpfs rw
80 25 8:1 / /run/vigil/.root rw,relatime - ext4 /dev/sda1 rw
81 80 0:5 / /run/vigil/.root/proc rw - proc proc rw
82 80 0:40 / /run/vigil/.root/my\\040dir rw - tmpfs tmpfs rw
83 25 0:41 / /run/vigil/.root2 rw - tmpfs tmpfs rw
84 81 0:42 / /run/vigil/.root/proc/sys/fs/binfmt_misc rw - binfmt_misc binfmt_misc rw
garbage
";

    #[test]
    fn finds_the_tree_parents_first_and_nothing_beside_it() {
        let got = mounts_under(MOUNTINFO, Path::new("/run/vigil/.root"));
        assert_eq!(
            got,
            vec![
                PathBuf::from("/run/vigil/.root"),
                PathBuf::from("/run/vigil/.root/proc"),
                PathBuf::from("/run/vigil/.root/my dir"),
                PathBuf::from("/run/vigil/.root/proc/sys/fs/binfmt_misc"),
            ]
        );
    }

    #[test]
    fn escapes_and_hostile_lines() {
        assert_eq!(unescape("a\\040b\\134c"), PathBuf::from("a b\\c"));
        assert_eq!(unescape("trail\\04"), PathBuf::from("trail\\04"));
        assert_eq!(unescape("\\777x"), PathBuf::from("\\777x"));
        assert!(mounts_under("1 2\n\n   \n", Path::new("/")).is_empty());
    }

    #[test]
    fn reads_this_machines_mountinfo() {
        let mi = std::fs::read_to_string("/proc/self/mountinfo").expect("procfs is mounted");
        let all = mounts_under(&mi, Path::new("/"));
        assert_eq!(all.first(), Some(&PathBuf::from("/")));
        assert!(all.iter().any(|p| p == Path::new("/proc")));
    }
}
