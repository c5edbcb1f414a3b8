//! The link-time function order (link/cc, link/order, link/hot-functions.txt): the ordering
//! file link/order makes from a list, checked on this test binary's own symbols, and that the
//! workspace's binaries really go through link/cc and lld (dev.sh installs lld-19).

use std::path::{Path, PathBuf};
use std::process::Command;

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

#[inline(never)]
fn probe_pick<T: Default>() -> T {
    std::hint::black_box(T::default())
}

/// Keep every probe (and both instances of each generic one) in the binary.
fn use_probes() {
    let fns: [fn() -> u64; 6] = [
        || probe_a().into(),
        || probe_b().into(),
        || probe_gen::<u8>().into(),
        || probe_gen::<u16>().into(),
        || probe_pick::<u8>().into(),
        || probe_pick::<u16>().into(),
    ];
    for f in std::hint::black_box(fns) {
        std::hint::black_box(f());
    }
}

/// This binary's code symbols whose mangled name contains `part`, in `nm`'s order.
fn symbols(exe: &Path, part: &str) -> Vec<String> {
    let out = Command::new("nm")
        .arg("--defined-only")
        .arg(exe)
        .output()
        .expect("nm (binutils)");
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 3 && (f[1] == "t" || f[1] == "T") && f[2].contains(part))
                .then(|| f[2].to_string())
        })
        .collect()
}

#[test]
fn order_file_lists_exact_symbols_then_every_instance_of_a_stale_name() {
    use_probes();
    let exe = std::env::current_exe().unwrap();
    let a = symbols(&exe, "10link_order7probe_a17h");
    let b = symbols(&exe, "10link_order7probe_b17h");
    let gen_ = symbols(&exe, "10link_order9probe_gen17h");
    let pick = symbols(&exe, "10link_order10probe_pick17h");
    assert_eq!((a.len(), b.len()), (1, 1), "{a:?} {b:?}");
    assert_eq!((gen_.len(), pick.len()), (2, 2), "{gen_:?} {pick:?}");

    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("hot.txt");
    std::fs::write(
        &list,
        format!(
            "# a comment\n## collector: 4\n\
             link_order::probe_b\t{}\n\
             link_order::probe_gen\t_ZN10link_order9probe_gen17h0000000000000000E\n\
             link_order::probe_pick\t{}\n\
             link_order::absent\t_ZN10link_order6absent17h0000000000000000E\n\
             link_order::probe_a\t{}\n\
             link_order::probe_b\t{}\n",
            b[0], pick[1], a[0], b[0]
        ),
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
    // probe_b first (listed twice: its first place counts); probe_gen's listed symbol is not in
    // the binary, so both its instances; of probe_pick only the instance listed; nothing for
    // the absent name; probe_a last.
    let want = [
        b[0].clone(),
        gen_[0].clone(),
        gen_[1].clone(),
        pick[1].clone(),
        a[0].clone(),
    ];
    assert_eq!(got, want);
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
        let f: Vec<&str> = line.split('\t').collect();
        assert_eq!(f.len(), 2, "not NAME<TAB>SYMBOL: {line:?}");
        let hash = f[0].rsplit("::").next().unwrap_or("");
        assert!(
            !(hash.len() == 17 && hash.starts_with('h')),
            "name keeps its hash: {line:?}"
        );
        assert!(
            !f[1].is_empty() && !f[1].contains(char::is_whitespace),
            "{line:?}"
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
