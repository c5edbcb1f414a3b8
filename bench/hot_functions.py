#!/usr/bin/python3
"""bench/hot_functions.py BIN [settle_s] [runs] > link/hot-functions.txt

Which functions each role runs once started, for the link-time function order (link/cc).

BIN: `vigil` built with every function at a 64 KiB boundary, in v0 mangling:
    RUSTFLAGS="-C llvm-args=-align-all-functions=16 -C symbol-mangling-version=v0" \
        CARGO_TARGET_DIR=/tmp/t cargo build --release -p vigil-supervisor
The kernel maps file-backed code in 64 KiB windows around each page touched (fault-around);
with every function starting a window of its own, a window resident in a role is a function it
ran. After settle_s (default 60) under bench/run.py's load (N = 2,000, interval 1 s; `vigil
status` and a real segfault's kernel line every 10 s), each role's resident pages of the binary's code, read from
/proc/PID/pagemap, are the functions it ran since its last code release
(`ipc_proto::heap::release_startup_code`: end of start-up, and after the third interval in the
collector and the shipper); the list is their union over `runs` starts (default 4: what runs
now and then, a refresh or a rare line, differs between runs), alternating over the
configurations in CONFIGS (default "default,otlp": the embedded defaults' JSON lines, and OTLP/HTTP
with gzip, JSON lines off, the deployed configuration, whose encoder, deflate and HTTP code the
first never runs). Names are demangled with the crate
disambiguators dropped, so the list holds across builds; link/order maps them back to the
symbols of the binary being linked.

Output order: groups by the set of roles that ran a function, in a reflected Gray code over
(collector, shipper, supervisor, privhelper), so the collector's groups are one stretch, the
shipper's one; within a group, the profile binary's address order (module order).
Root; wrap in flock -o /tmp/vigil-bench.lock. BENCHMARKS.md "Hot code grouped at link time".
"""
import bisect, collections, importlib.util, os, subprocess, sys, time

HERE = os.path.dirname(os.path.abspath(__file__))
spec = importlib.util.spec_from_file_location("run", os.path.join(HERE, "run.py"))
run = importlib.util.module_from_spec(spec)
spec.loader.exec_module(run)

ROLES = ("supervisor", "privhelper", "collector", "shipper")
WINDOW = 64 * 1024  # the kernel's fault-around


def functions(binary):
    """Sorted (start, end, name) of the sized code symbols of `binary`, named by link/names
    (the rule link/order matches the list with)."""
    out = subprocess.run([os.path.join(HERE, "..", "link", "names"), binary],
                         capture_output=True, text=True, check=True).stdout.splitlines()
    rows = [l.split("\t") for l in out]
    return sorted((int(a, 16), int(a, 16) + int(n, 16), name)
                  for name, _, a, n in rows if int(n, 16) > 0)


def load_bias(pid, path):
    """Address where the file's offset 0 is mapped: the load bias (the first segment is at
    vaddr 0), which must keep the functions' 64 KiB alignment for the windows to be exact."""
    for line in open(f"/proc/{pid}/maps"):
        p = line.split()
        if len(p) > 5 and p[5] == path and int(p[2], 16) == 0:
            bias = int(p[0].split("-")[0], 16)
            if bias % WINDOW:
                raise SystemExit(f"{path} loaded at {bias:#x} in {pid}: not 64 KiB aligned")
            return bias
    raise SystemExit(f"{path} not mapped at offset 0 in {pid}")


def resident_code(pid, path):
    """ELF vaddrs of the resident pages of `path`'s executable mappings in `pid`."""
    load_bias(pid, path)  # the alignment check
    return run.resident_pages(pid, path, executable_only=True)


def profile_run(path, settle, funcs, starts, ran, first, config):
    """One start of the agent in `config` ("default": the embedded defaults, JSON lines to
    stdout; "otlp": OTLP/HTTP with gzip to bench/run.py's rotel backend and JSON lines off, the
    deployed configuration): add what each role ran after `settle` s to `ran` and `first`."""
    backend = run.OtlpBackend("http") if config == "otlp" else None
    args = backend.args + ["--json-lines", ""] if backend else []
    v = run.Vigil(path, 1000, f"{run.WORK}/vigil-rt", args, backend.env if backend else None)
    try:
        err = v.wait_collecting()
        if err:
            raise SystemExit(err)
        # Every 10 s `vigil status`, as bench/run.py and bench/pss_probe.py ask it (and a probe
        # in a deployment would): the supervisor's status path and the children's statistics
        # answers are steady code too. And a real kernel line: a process that segfaults (the
        # kernel logs it, a built-in rule matches it), so the collector's incident path, which
        # runs whenever the kernel logs, is in the list though the benchmarks log nothing.
        for _ in range(max(1, settle // 10)):
            time.sleep(settle / max(1, settle // 10))
            v.status_cycles()
            subprocess.run(["python3", "-c", "import ctypes; ctypes.string_at(0)"],
                           stderr=subprocess.DEVNULL, check=False)
        roles = v.roles()
        missing = [r for r in ROLES if r not in roles]
        if missing:
            raise SystemExit(f"roles not running: {missing}")
        for role in ROLES:
            pages = resident_code(roles[role], path)
            for page in pages:
                i = bisect.bisect_right(starts, page + 4095) - 1
                while i >= 0 and funcs[i][1] > page:
                    # C and assembly (ring's) are not aligned: they share a window with the
                    # function before them, cannot be told apart and keep the default order.
                    if funcs[i][0] % WINDOW == 0:
                        name = funcs[i][2]
                        ran[name].add(role)
                        first[name] = min(first.get(name, funcs[i][0]), funcs[i][0])
                    i -= 1
            print(f"{role} ({config}): {len(pages)} pages resident", file=sys.stderr)
    finally:
        v.stop()
        if backend:
            backend.stop()


def main():
    binary = sys.argv[1]
    settle = int(sys.argv[2]) if len(sys.argv) > 2 else 60
    runs = int(sys.argv[3]) if len(sys.argv) > 3 else 4
    configs = os.environ.get("CONFIGS", "default,otlp").split(",")
    if not configs or any(c not in ("default", "otlp") for c in configs):
        raise SystemExit(f"CONFIGS={','.join(configs)}: a comma-separated list of default, otlp")
    funcs = functions(binary)
    starts = [f[0] for f in funcs]
    misaligned = [f for f in funcs if f[0] % WINDOW and f[1] > f[0]]
    if len(misaligned) > len(funcs) // 20:  # a few from C objects and assembly
        raise SystemExit(f"{len(misaligned)} of {len(funcs)} functions not 64 KiB aligned: "
                         "build BIN as this script's help says")
    path = os.path.realpath(binary)
    ran = collections.defaultdict(set)  # name -> roles
    first = {}  # name -> address (profile order within a group)
    with run.probe_load(2000):
        for r in range(runs):
            profile_run(path, settle, funcs, starts, ran, first, configs[r % len(configs)])
            print(f"run {r + 1} of {runs}: {len(ran)} functions so far", file=sys.stderr)

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
    for name, roles in ran.items():
        groups[frozenset(roles)].append(name)
    print("# Functions each role runs once started (bench/hot_functions.py, N = 2,000, interval 1 s),")
    print("# v0-demangled without crate hashes; link/cc places their code first, in this order.")
    print("# Regenerate after large changes: a stale list costs memory, never correctness.")
    for roles in sorted(groups, key=group_key):
        names = sorted(groups[roles], key=lambda n: first[n])
        print(f"## {' '.join(sorted(roles, key=ROLES.index))}: {len(names)}")
        for n in names:
            print(n)


if __name__ == "__main__":
    main()
