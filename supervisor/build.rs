//! Link the `vigil` binary as a position-dependent executable (`-no-pie`).
//!
//! A PIE's `.data.rel.ro` (vtables, tables of string slices: ≈ 370 KiB here) is rewritten by
//! the dynamic loader (or, static-pie, by the binary itself) at every start, so each of the
//! four processes holds a private dirty copy of it, and ≈ 500 KiB of `R_X86_64_RELATIVE`
//! entries are read at start. Linked at a fixed address the linker resolves them: the pages
//! stay clean and shared between the four processes (−2.2 MiB of PSS at 4,000 processes,
//! BENCHMARKS.md "PSS, third session"). The price: the executable's own image is not
//! address-randomised (heap, stack, mmap and libc still are). The objects are still compiled
//! PIC; only the `vigil` executable's link changes, not tests or build scripts.
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let features = std::env::var("CARGO_CFG_TARGET_FEATURE").unwrap_or_default();
    if os == "linux" {
        println!("cargo:rustc-link-arg-bins=-no-pie");
        // crt-static makes rustc ask for `-static-pie`; `-no-pie` alone would then leave an
        // interpreter in a binary meant for a FROM-scratch image: ask for plain `-static`.
        if features.split(',').any(|f| f == "crt-static") {
            println!("cargo:rustc-link-arg-bins=-static");
        }
    }
}
