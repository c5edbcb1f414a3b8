//! Path resolution inside the view being assembled: a host's absolute symlinks
//! (`/var/run -> /run`) must land inside the view, never on the supervisor's own root.

use std::path::{Path, PathBuf};

/// Resolve `path` (absolute) as seen from inside `root`: symlinks are followed with absolute
/// targets taken relative to `root`, never to our own root (a host's `/var/run -> /run` must
/// land on the host's /run, not the container's).
pub fn resolve_in(root: &Path, path: &Path) -> PathBuf {
    let mut out = root.to_path_buf();
    let mut pending: Vec<std::ffi::OsString> = path
        .components()
        .rev()
        .filter_map(|c| match c {
            std::path::Component::Normal(n) => Some(n.to_os_string()),
            _ => None,
        })
        .collect();
    let mut hops = 0;
    while let Some(name) = pending.pop() {
        let next = out.join(&name);
        match std::fs::read_link(&next) {
            Ok(target) if hops < 40 => {
                hops += 1;
                if target.is_absolute() {
                    out = root.to_path_buf();
                }
                for c in target.components().rev() {
                    match c {
                        std::path::Component::Normal(n) => pending.push(n.to_os_string()),
                        std::path::Component::ParentDir => pending.push("..".into()),
                        _ => {}
                    }
                }
            }
            _ if name == ".." => {
                if out != root {
                    out.pop();
                }
            }
            _ => out = next,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> PathBuf {
        PathBuf::from(s)
    }

    #[test]
    fn symlinks_resolve_inside_the_view() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        std::fs::create_dir_all(root.join("run/vigil")).unwrap();
        std::fs::create_dir_all(root.join("var")).unwrap();
        std::os::unix::fs::symlink("/run", root.join("var/run")).unwrap();
        std::os::unix::fs::symlink("../run", root.join("var/rel")).unwrap();
        assert_eq!(
            resolve_in(root, &p("/var/run/vigil")),
            root.join("run/vigil")
        );
        assert_eq!(
            resolve_in(root, &p("/var/rel/vigil")),
            root.join("run/vigil")
        );
        assert_eq!(resolve_in(root, &p("/../../etc")), root.join("etc"));
    }
}
