//! The link-time function order (link/cc, link/order, link/hot-functions.txt): the ordering
//! file link/order makes from a list, checked on this test binary's own symbols, and that the
//! workspace's binaries really go through link/cc and lld (dev.sh installs lld-19).

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

#[inline(never)]
fn probe_a() -> u32 {
    std::hint::black_box(1)
}

#[inline(never)]
fn probe_b() -> u32 {
    std::hint::black_box(2)
}

#[inline(never)]
fn probe_gen<T: Default>() -> T {
    std::hint::black_box(T::default())
}

/// Keep every probe (and both instances of the generic one) in the binary.
fn use_probes() {
    let fns: [fn() -> u64; 4] = [
        || probe_a().into(),
        || probe_b().into(),
        || probe_gen::<u8>().into(),
        || probe_gen::<u16>().into(),
    ];
    for f in std::hint::black_box(fns) {
        std::hint::black_box(f());
    }
}

/// "a[0123456789abcdef]::b" -> "a::b": v0 names without their crate disambiguators.
fn strip_crate_hashes(name: &str) -> String {
    let mut out = String::new();
    let mut rest = name;
    while let Some(i) = rest.find('[') {
        let hex = rest.get(i + 1..i + 17);
        if hex.is_some_and(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))
            && rest.get(i + 17..i + 18) == Some("]")
        {
            out.push_str(&rest[..i]);
            rest = &rest[i + 18..];
        } else {
            out.push_str(&rest[..=i]);
            rest = &rest[i + 1..];
        }
    }
    out.push_str(rest);
    out
}

/// This binary's code symbols of this file, by the name link/order gives them.
fn symbols(exe: &Path) -> HashMap<String, Vec<String>> {
    let out = Command::new("nm")
        .arg("--defined-only")
        .arg(exe)
        .output()
        .expect("nm (binutils)");
    assert!(out.status.success());
    let syms: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 3 && (f[1] == "t" || f[1] == "T") && f[2].contains("link_order"))
                .then(|| f[2].to_string())
        })
        .collect();
    let mut filt = Command::new("c++filt")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("c++filt (binutils)");
    let mut input = filt.stdin.take().unwrap();
    input.write_all(syms.join("\n").as_bytes()).unwrap();
    drop(input);
    let names = String::from_utf8(filt.wait_with_output().unwrap().stdout).unwrap();
    let mut by_name: HashMap<String, Vec<String>> = HashMap::new();
    for (name, sym) in names.lines().zip(syms) {
        by_name
            .entry(strip_crate_hashes(name))
            .or_default()
            .push(sym);
    }
    by_name
}

#[test]
fn order_file_lists_the_named_instances_in_the_lists_order() {
    use_probes();
    let exe = std::env::current_exe().unwrap();
    let syms = symbols(&exe);
    let one = |name: &str| -> String {
        let s = syms
            .get(name)
            .unwrap_or_else(|| panic!("{name} not in {:?}", syms.keys()));
        assert_eq!(s.len(), 1, "{name}: {s:?}");
        s[0].clone()
    };
    let (a, b) = (one("link_order::probe_a"), one("link_order::probe_b"));
    let (g8, g16) = (
        one("link_order::probe_gen::<u8>"),
        one("link_order::probe_gen::<u16>"),
    );
    assert_ne!(g8, g16);

    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("hot.txt");
    std::fs::write(
        &list,
        "# a comment\n## collector: 4\nlink_order::probe_b\nlink_order::probe_gen::<u16>\n\
         link_order::absent\nlink_order::probe_a\nlink_order::probe_b\n",
    )
    .unwrap();
    let out = Command::new(repo().join("link/order"))
        .arg(&list)
        .arg(&exe)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    // probe_b first (listed twice: its first place counts), then only the u16 instance of the
    // generic function, nothing for the absent name, probe_a last.
    assert_eq!(got, [b, g16, a]);
}

#[test]
fn workspace_binaries_are_linked_by_lld_through_link_cc() {
    let exe = std::env::current_exe().unwrap();
    let out = Command::new("readelf")
        .args(["-p", ".comment"])
        .arg(&exe)
        .output()
        .expect("readelf (binutils)");
    let comment = String::from_utf8_lossy(&out.stdout);
    assert!(
        comment.contains("Linker: Debian LLD"),
        "this test binary was not linked by lld (is lld-19 installed, does .cargo/config.toml \
         name link/cc?): {comment}"
    );
}

#[test]
fn hot_function_list_is_well_formed() {
    let text = std::fs::read_to_string(repo().join("link/hot-functions.txt")).unwrap();
    let mut entries = 0;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        assert!(!line.is_empty() && !line.contains('\t'), "{line:?}");
        assert_eq!(
            strip_crate_hashes(line),
            line,
            "keeps a crate hash: {line:?}"
        );
        assert!(
            !line.starts_with("_ZN") && !line.starts_with("_R"),
            "not demangled: {line:?}"
        );
        entries += 1;
    }
    // Every role's group is there (the list comes from a run of all four).
    for role in ["collector", "shipper", "supervisor", "privhelper"] {
        assert!(
            text.lines()
                .any(|l| l.starts_with("## ") && l.contains(role)),
            "no group of the {role}"
        );
    }
    assert!(entries > 100, "{entries} entries");
}
