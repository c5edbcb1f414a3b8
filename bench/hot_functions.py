#!/usr/bin/python3
"""bench/hot_functions.py BIN [settle_s] > link/hot-functions.txt

Which functions each role runs once started, for the link-time function order (link/cc).

BIN: `vigil` built with every function on a page of its own:
    RUSTFLAGS="-C llvm-args=-align-all-functions=12" CARGO_TARGET_DIR=/tmp/t \
        cargo build --release -p vigil-supervisor
It is copied to an ext4 image on a loop device with readahead off, so a fault reads only the
page faulted and the kernel's fault-around (64 KiB) can map only pages already in the page
cache, that is pages some role ran. After settle_s (default 60) under bench/run.py's load
(N = 2,000, interval 1 s), each role's resident pages of the binary's code, read from
/proc/PID/pagemap, are the functions it ran since its last code release
(`ipc_proto::heap::release_startup_code`: end of start-up, and after the third interval in the
collector and the shipper). The names are demangled without their hash, so the list survives
rebuilds; link/cc maps them back to the symbols of the binary it links.

Output order: functions run by more roles first (their pages count once in the sum of PSS),
then each role's own; within a group, the profile binary's address order (module order).
Root; wrap in flock -o /tmp/vigil-bench.lock. BENCHMARKS.md "Hot code grouped at link time".
"""
import bisect, collections, importlib.util, os, re, shutil, struct, subprocess, sys, time

HERE = os.path.dirname(os.path.abspath(__file__))
spec = importlib.util.spec_from_file_location("run", os.path.join(HERE, "run.py"))
run = importlib.util.module_from_spec(spec)
spec.loader.exec_module(run)

ROLES = ("supervisor", "privhelper", "collector", "shipper")
# What differs between builds of the same code: legacy mangling's hash suffix, v0's crate
# disambiguators (std's symbols).
HASH = re.compile(r"::h[0-9a-f]{16}$|\[[0-9a-f]{16}\]")


def functions(binary):
    """Sorted (start, end, demangled name without hash, symbol) of the code symbols of `binary`."""
    nm = subprocess.run(["nm", "-n", "-S", "--defined-only", binary],
                        capture_output=True, text=True, check=True).stdout.splitlines()
    rows = [l.split() for l in nm]
    rows = [r for r in rows if len(r) == 4 and r[2] in ("t", "T")]
    names = subprocess.run(["c++filt"], input="\n".join(r[3] for r in rows), capture_output=True,
                           text=True, check=True).stdout.splitlines()
    out = [(int(r[0], 16), int(r[0], 16) + int(r[1], 16), HASH.sub("", n), r[3])
           for r, n in zip(rows, names)]
    return sorted(out)


def load_bias(pid, path):
    """Address where the file's offset 0 is mapped (ELF vaddr = address - bias for ld's layout)."""
    for line in open(f"/proc/{pid}/maps"):
        p = line.split()
        if len(p) > 5 and p[5] == path and int(p[2], 16) == 0:
            return int(p[0].split("-")[0], 16)
    raise SystemExit(f"{path} not mapped at offset 0 in {pid}")


def resident_code(pid, path):
    """ELF vaddrs of the resident pages of `path`'s executable mappings in `pid`."""
    bias = load_bias(pid, path)
    pages = set()
    with open(f"/proc/{pid}/pagemap", "rb") as pm:
        for line in open(f"/proc/{pid}/maps"):
            p = line.split()
            if len(p) > 5 and p[5] == path and "x" in p[1]:
                s, e = (int(x, 16) for x in p[0].split("-"))
                for va in range(s, e, 4096):
                    pm.seek(va // 4096 * 8)
                    if struct.unpack("Q", pm.read(8))[0] >> 63:
                        pages.add(va - bias)
    return pages


class LoopCopy:
    """BIN copied to a fresh ext4 image on a loop device, readahead off, page cache emptied."""

    def __init__(self, binary):
        self.dir = "/tmp/vigil-hot"
        shutil.rmtree(self.dir, ignore_errors=True)
        os.makedirs(f"{self.dir}/mnt")
        img = f"{self.dir}/fs.img"
        with open(img, "wb") as f:
            f.truncate(os.path.getsize(binary) * 2 + (64 << 20))
        run.sh("mkfs.ext4", "-q", img)
        self.dev = subprocess.run(["losetup", "-f", "--show", img], capture_output=True,
                                  text=True, check=True).stdout.strip()
        run.sh("mount", self.dev, f"{self.dir}/mnt")
        os.chmod(f"{self.dir}/mnt", 0o755)
        run.sh("blockdev", "--setra", "0", self.dev)
        open(f"/sys/block/{os.path.basename(self.dev)}/queue/read_ahead_kb", "w").write("0")
        self.path = f"{self.dir}/mnt/vigil"
        shutil.copy2(binary, self.path)
        fd = os.open(self.path, os.O_RDONLY)
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(fd)

    def close(self):
        run.sh("umount", f"{self.dir}/mnt", check=False)
        run.sh("losetup", "-d", self.dev, check=False)
        shutil.rmtree(self.dir, ignore_errors=True)


def main():
    binary = sys.argv[1]
    settle = int(sys.argv[2]) if len(sys.argv) > 2 else 60
    funcs = functions(binary)
    starts = [f[0] for f in funcs]
    copy = LoopCopy(binary)
    os.makedirs(run.WORK, exist_ok=True)
    subprocess.run(["gcc", "-O2", "-o", f"{run.WORK}/loadgen", os.path.join(HERE, "loadgen.c")],
                   check=True)
    ns = run.netns_up()
    load = run.Load(2000, 2000, 20, 1000)
    load.place_in_cgroups()
    time.sleep(3)
    ran = collections.defaultdict(set)  # (name, symbol) -> roles
    first = {}  # (name, symbol) -> address (profile order within a group)
    try:
        v = run.Vigil(copy.path, 1000, f"{run.WORK}/vigil-rt")
        try:
            err = v.wait_collecting()
            if err:
                raise SystemExit(err)
            time.sleep(settle)
            roles = v.roles()
            missing = [r for r in ROLES if r not in roles]
            if missing:
                raise SystemExit(f"roles not running: {missing}")
            for role in ROLES:
                pages = resident_code(roles[role], copy.path)
                for page in pages:
                    i = bisect.bisect_right(starts, page + 4095) - 1
                    while i >= 0 and funcs[i][1] > page:
                        key = (funcs[i][2], funcs[i][3])
                        ran[key].add(role)
                        first[key] = funcs[i][0]
                        i -= 1
                print(f"{role}: {len(pages)} pages resident", file=sys.stderr)
        finally:
            v.stop()
    finally:
        load.stop()
        ns.kill()
        run.netns_down()
        run.remove_cgroups()
        copy.close()

    def group_key(roles):
        # Reflected Gray code over (collector, shipper, supervisor, privhelper): the collector's
        # groups form one run, the shipper's one run, the supervisor's two and the privhelper's
        # four (the two smallest), so each role's code lies in few stretches.
        g = 0
        for r in ("collector", "shipper", "supervisor", "privhelper"):
            g = g << 1 | (r in roles)
        rank = 0
        while g:  # inverse Gray code: the position of g in the sequence
            rank ^= g
            g >>= 1
        return rank

    groups = collections.defaultdict(list)
    for key, roles in ran.items():
        groups[frozenset(roles)].append(key)
    print("# Functions each role runs once started (bench/hot_functions.py, N = 2,000, interval 1 s):")
    print("# demangled name without hashes, tab, symbol. link/cc places their code first, in this")
    print("# order: the symbol where the binary has it, else every symbol of the name. Regenerate")
    print("# after large changes; a stale list costs memory, never correctness.")
    for roles in sorted(groups, key=group_key):
        keys = sorted(groups[roles], key=lambda k: first[k])
        print(f"## {' '.join(sorted(roles, key=ROLES.index))}: {len(keys)}")
        for name, symbol in keys:
            print(f"{name}\t{symbol}")


if __name__ == "__main__":
    main()
