//! Compiles the BPF programs in `bpf/` with clang (the BPF target) into `$OUT_DIR`; the loader
//! embeds the objects with `aya::include_bytes_aligned!`. Set `VIGIL_CLANG` to use another
//! clang than `clang-19`.

use std::env;
use std::path::PathBuf;
use std::process::Command;

const PROGRAMS: [&str; 4] = ["exec", "flows", "task_iter", "tcp_changes"];

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR"));
    let bpf_dir = manifest.join("bpf");
    println!("cargo:rerun-if-env-changed=VIGIL_CLANG");
    for header in ["vigil_records.h", "vigil_kernel.h"] {
        println!("cargo:rerun-if-changed={}", bpf_dir.join(header).display());
    }

    let clang = env::var("VIGIL_CLANG").unwrap_or_else(|_| "clang-19".to_string());
    let multiarch = match env::var("CARGO_CFG_TARGET_ARCH").as_deref() {
        Ok("aarch64") => "aarch64-linux-gnu",
        _ => "x86_64-linux-gnu",
    };

    for name in PROGRAMS {
        let src = bpf_dir.join(format!("{name}.bpf.c"));
        let obj = out.join(format!("{name}.bpf.o"));
        println!("cargo:rerun-if-changed={}", src.display());
        let result = Command::new(&clang)
            .args(["-target", "bpf", "-g", "-O2", "-Wall", "-Werror"])
            .arg(format!("-I/usr/include/{multiarch}"))
            .arg("-I")
            .arg(&bpf_dir)
            .arg("-c")
            .arg(&src)
            .arg("-o")
            .arg(&obj)
            .output();
        match result {
            Err(e) => panic!(
                "\n\nvigil-privhelper: cannot run `{clang}` to compile the BPF programs ({e}).\n\
                 Install clang 19 and the libbpf headers (Debian: `apt-get install clang-19 \
                 libbpf-dev`), or point VIGIL_CLANG at a clang able to target BPF.\n\n"
            ),
            Ok(o) if !o.status.success() => panic!(
                "\n\nvigil-privhelper: `{clang}` failed to compile {}:\n{}\n(libbpf headers \
                 come from `apt-get install libbpf-dev`)\n\n",
                src.display(),
                String::from_utf8_lossy(&o.stderr)
            ),
            Ok(_) => {}
        }
    }
}
