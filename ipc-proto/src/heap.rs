//! Memory housekeeping shared by every vigil process (they all link this crate): the
//! allocator's free pages, and the executable's pages that only the start-up ran.

/// Give the heap's free pages back to the kernel (glibc's `malloc_trim`; nothing elsewhere).
/// For a process after a burst it will not repeat soon: the callers say which.
pub fn release_free_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: glibc's malloc_trim takes no pointer and only returns free memory to the system.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Segments an executable has that are never written: two (constants, code) for ours.
const MAX_SEGMENTS: usize = 8;

/// Page ranges `[start, end)` of this executable's segments that are never written (code,
/// constants, relocation tables).
struct Segments {
    ranges: [(usize, usize); MAX_SEGMENTS],
    n: usize,
}

/// `dl_iterate_phdr`'s callback: the first object it reports is the executable itself.
unsafe extern "C" fn executable_segments(
    info: *mut libc::dl_phdr_info,
    _size: libc::size_t,
    data: *mut libc::c_void,
) -> libc::c_int {
    // SAFETY: glibc passes a valid dl_phdr_info for the call's duration, and `data` is the
    // `Segments` that `release_startup_code` lent for it.
    let (info, out) = unsafe { (&*info, &mut *data.cast::<Segments>()) };
    // SAFETY: dlpi_phdr points at dlpi_phnum program headers of a loaded object.
    let phdrs = unsafe { std::slice::from_raw_parts(info.dlpi_phdr, usize::from(info.dlpi_phnum)) };
    out.n = readonly_pages(info.dlpi_addr as usize, phdrs, page_size(), &mut out.ranges);
    // Stop: only the executable.
    1
}

/// The system's page size (4096 when sysconf cannot say): one place for every vigil process.
pub fn page_size() -> usize {
    nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .and_then(|p| usize::try_from(p).ok())
        .filter(|p| *p > 0)
        .unwrap_or(4096)
}

/// The whole pages of the loaded segments without `PF_W`, minus every page a writable segment
/// (or the relocated read-only-after-relocation part) touches: those hold this process's own
/// data, which `MADV_DONTNEED` would throw away.
fn readonly_pages(
    bias: usize,
    phdrs: &[libc::Elf64_Phdr],
    page: usize,
    out: &mut [(usize, usize); MAX_SEGMENTS],
) -> usize {
    let span = |p: &libc::Elf64_Phdr| {
        let start = bias.wrapping_add(p.p_vaddr as usize);
        (
            start & !(page - 1),
            start
                .wrapping_add(p.p_memsz as usize)
                .next_multiple_of(page),
        )
    };
    let written = |p: &libc::Elf64_Phdr| {
        (p.p_type == libc::PT_LOAD && p.p_flags & libc::PF_W != 0) || p.p_type == libc::PT_GNU_RELRO
    };
    let mut n = 0;
    for p in phdrs
        .iter()
        .filter(|p| p.p_type == libc::PT_LOAD && p.p_flags & libc::PF_W == 0)
    {
        let (mut start, mut end) = span(p);
        for w in phdrs.iter().filter(|p| written(p)) {
            let (ws, we) = span(w);
            if ws < end && start < we {
                // Keep the part before or after the written pages, whichever is larger.
                if ws - start.min(ws) >= end.saturating_sub(we) {
                    end = ws.max(start);
                } else {
                    start = we.min(end);
                }
            }
        }
        if start < end && n < out.len() {
            out[n] = (start, end);
            n += 1;
        }
    }
    n
}

/// Unmap this process's pages of the executable's code and constants (`MADV_DONTNEED`; they
/// stay in the page cache, and what runs again faults back in). For a process at the end of
/// its start-up: the start-up's code (configuration, sandbox, BPF loading) is not run again,
/// and would otherwise stay mapped — and counted in its PSS — for life (each role ran and kept
/// 3.1–3.5 MB of the 6.6 MB of code, the kernel mapping 64–128 KiB around every page touched;
/// BENCHMARKS.md "Start-up code released, ..."). Returns the bytes advised.
///
/// Only the segments without `PF_W`: the relocated ones (`.data.rel.ro`, `.got`) and the data
/// are this process's own pages. A uprobe placed on the executable before the call stops
/// firing in this process (its breakpoint lived in the page dropped).
pub fn release_startup_code() -> usize {
    let mut segs = Segments {
        ranges: [(0, 0); MAX_SEGMENTS],
        n: 0,
    };
    // SAFETY: the callback only reads what glibc passes and writes `segs`, which outlives the
    // call.
    unsafe {
        libc::dl_iterate_phdr(
            Some(executable_segments),
            (&raw mut segs).cast::<libc::c_void>(),
        );
    }
    let mut bytes = 0;
    for &(start, end) in &segs.ranges[..segs.n] {
        // SAFETY: whole pages of this executable's never-written segments: private file
        // mappings with no page of their own, so dropping them loses nothing; the kernel
        // maps them again from the page cache on the next access.
        if unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED) }
            == 0
        {
            bytes += end - start;
        }
    }
    bytes
}

/// The first intervals of a role's work are start-up too (the collector's first cycle sees
/// every process as new, the shipper's first exports encode every resource): after the
/// `n`-th [`tick`](Self::tick), [`release_startup_code`] once more.
#[derive(Debug)]
pub struct WarmUp(u32);

/// The collector's cycles and the shipper's metric intervals after which their code is
/// released again: by the third, each runs what it runs from then on.
pub const WARM_UP_INTERVALS: u32 = 3;

impl WarmUp {
    pub const fn after(n: u32) -> WarmUp {
        WarmUp(n)
    }

    /// The next [`tick`](Self::tick) ends the warm-up: the last moment to drop what only the
    /// warm-up needed, before its code is released.
    pub fn ending(&self) -> bool {
        self.0 == 1
    }

    /// One interval done; true when this one ended the warm-up (and the code was released).
    pub fn tick(&mut self) -> bool {
        match self.0 {
            0 => false,
            1 => {
                self.0 = 0;
                release_startup_code();
                true
            }
            n => {
                self.0 = n - 1;
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(flags: u32, vaddr: u64, memsz: u64) -> libc::Elf64_Phdr {
        libc::Elf64_Phdr {
            p_type: libc::PT_LOAD,
            p_flags: flags,
            p_offset: 0,
            p_vaddr: vaddr,
            p_paddr: vaddr,
            p_filesz: memsz,
            p_memsz: memsz,
            p_align: 0x1000,
        }
    }

    /// Our release binary's layout (readelf -l): constants, code, relocated data, data.
    #[test]
    fn readonly_pages_of_the_segments_without_write() {
        let (r, x, w) = (libc::PF_R, libc::PF_R | libc::PF_X, libc::PF_R | libc::PF_W);
        let mut relro = load(w, 0x8a_4110, 0x6_2ef0);
        let mut phdrs = vec![
            load(r, 0, 0x25_51d8),
            load(x, 0x25_6200, 0x64_cf10),
            relro,
            load(w, 0x90_7e98, 0x4dd0),
        ];
        relro.p_type = libc::PT_GNU_RELRO;
        phdrs.push(relro);
        let bias = 0x5555_0000_0000;
        let mut out = [(0, 0); MAX_SEGMENTS];
        assert_eq!(readonly_pages(bias, &phdrs, 0x1000, &mut out), 2);
        assert_eq!(out[0], (bias, bias + 0x25_6000));
        assert_eq!(out[1], (bias + 0x25_6000, bias + 0x8a_4000));
        // Code whose last page is also the first of the relocated data: that page is kept.
        phdrs[2].p_vaddr = 0x8a_3200;
        phdrs[4].p_vaddr = 0x8a_3200;
        assert_eq!(readonly_pages(bias, &phdrs, 0x1000, &mut out), 2);
        assert_eq!(out[1], (bias + 0x25_6000, bias + 0x8a_3000));
        // A writable segment over all of it: nothing.
        phdrs[2].p_vaddr = 0;
        phdrs[2].p_memsz = 0x90_0000;
        assert_eq!(readonly_pages(bias, &phdrs, 0x1000, &mut out), 0);
    }

    /// The release comes at the n-th tick, once.
    #[test]
    fn warm_up_releases_once_after_n_ticks() {
        let mut w = WarmUp::after(3);
        let mut seen = Vec::new();
        for _ in 0..5 {
            let ending = w.ending();
            seen.push((ending, w.tick()));
        }
        assert_eq!(
            seen,
            [
                (false, false),
                (false, false),
                (true, true),
                (false, false),
                (false, false)
            ]
        );
        let mut none = WarmUp::after(0);
        assert!(!none.tick());
    }

    /// (resident kB, of which anonymous) of this test binary's read-only and writable
    /// mappings, from /proc/self/smaps.
    fn exe_kb() -> ((u64, u64), (u64, u64)) {
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        let exe = exe.to_str().unwrap();
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let (mut ro, mut rw, mut cur) = ((0, 0), (0, 0), None);
        for line in smaps.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.first()
                .is_some_and(|a| a.contains('-') && !a.ends_with(':'))
            {
                cur = (f.len() > 5 && f[5] == exe).then(|| f[1].contains('w'));
                continue;
            }
            let (Some(writable), Some(kb)) = (cur, f.get(1).and_then(|v| v.parse::<u64>().ok()))
            else {
                continue;
            };
            let m = if writable { &mut rw } else { &mut ro };
            match f[0] {
                "Rss:" => m.0 += kb,
                "Anonymous:" => m.1 += kb,
                _ => {}
            }
        }
        (ro, rw)
    }

    /// On this kernel: the code and constants leave this process's resident set; the
    /// relocated and written pages (the read-only-after-relocation mapping counts as read-only
    /// in smaps, its pages are anonymous) stay; the code still runs.
    #[test]
    fn startup_code_is_unmapped_and_data_kept() {
        let (ro, rw) = exe_kb();
        let advised = release_startup_code();
        let (ro2, rw2) = exe_kb();
        assert!(advised > 1 << 20, "{advised}");
        assert!(ro2.0 < ro.0, "read-only resident {} -> {} kB", ro.0, ro2.0);
        assert_eq!(ro2.1, ro.1, "relocated pages dropped");
        // (Other tests of this process may write a static for the first time meanwhile.)
        assert!(
            rw2.1 >= rw.1,
            "data pages dropped: {} -> {} kB",
            rw.1,
            rw2.1
        );
        assert!(ro2.0 >= ro2.1);
        // Formatting goes through vtables in the relocated pages and code paged back in.
        assert_eq!(format!("{:?}", Some(advised)), format!("Some({advised})"));
    }
}
