//! /proc/PID/mountinfo parser (shared by the cgroup discovery and the disk collector).

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub dev: String,
    pub root: String,
    pub mount_point: String,
    pub fstype: String,
    pub source: String,
    /// Per-mount options (`rw,nosuid,...`).
    pub opts: String,
    pub super_opts: String,
}

impl Mount {
    /// `rw` or `ro`, from the per-mount options.
    pub fn mode(&self) -> &'static str {
        if self.opts.split(',').any(|o| o == "ro") {
            "ro"
        } else {
            "rw"
        }
    }
}

/// Undo the octal escapes of mountinfo (`\040` = space, `\011`, `\012`, `\134`).
pub fn unescape(s: &[u8]) -> String {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'\\'
            && i + 3 < s.len()
            && s[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = u32::from(s[i + 1] - b'0') * 64
                + u32::from(s[i + 2] - b'0') * 8
                + u32::from(s[i + 3] - b'0');
            out.push(u8::try_from(v).unwrap_or(b'?'));
            i += 4;
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One line; `None` when malformed.
pub fn parse_line(line: &[u8]) -> Option<Mount> {
    let mut f = line.split(|&c| c == b' ').filter(|s| !s.is_empty());
    let _id = f.next()?;
    let _parent = f.next()?;
    let dev = f.next()?;
    let root = f.next()?;
    let mp = f.next()?;
    let opts = f.next()?;
    // Optional fields until "-".
    loop {
        if f.next()? == b"-" {
            break;
        }
    }
    let fstype = f.next()?;
    let source = f.next()?;
    let super_opts = f.next().unwrap_or(b"");
    Some(Mount {
        dev: String::from_utf8_lossy(dev).into_owned(),
        root: unescape(root),
        mount_point: unescape(mp),
        fstype: String::from_utf8_lossy(fstype).into_owned(),
        source: unescape(source),
        opts: String::from_utf8_lossy(opts).into_owned(),
        super_opts: String::from_utf8_lossy(super_opts).into_owned(),
    })
}

/// Every well-formed line, and the count of malformed ones.
pub fn parse(buf: &[u8]) -> (Vec<Mount>, u64) {
    crate::util::parse_lines(buf, usize::MAX, parse_line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_escapes() {
        let m = parse_line(
            b"36 35 98:0 /mnt1 /mnt\\0402 rw,noatime master:1 - ext3 /dev/root rw,errors=continue",
        )
        .unwrap();
        assert_eq!(m.mount_point, "/mnt 2");
        assert_eq!(m.fstype, "ext3");
        assert_eq!(m.dev, "98:0");
        assert_eq!(m.super_opts, "rw,errors=continue");
        assert_eq!(m.mode(), "rw");
        let ro = parse_line(b"1 2 3:4 / /r ro,nosuid - ext4 /dev/x rw").unwrap();
        assert_eq!(ro.mode(), "ro");
        assert!(parse_line(b"36 35 98:0 /mnt1 /mnt2 rw shared:1").is_none());
        assert!(parse_line(b"\xff").is_none());
        assert_eq!(unescape(b"a\\"), "a\\");
        assert_eq!(unescape(b"a\\04"), "a\\04");
        assert_eq!(parse(b"garbage\n\n1 2 3:4 / / rw - ext4 /dev/x rw\n").1, 1);
    }
}
