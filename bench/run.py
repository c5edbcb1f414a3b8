#!/usr/bin/python3
"""vigil vs. peers on one synthetic load, in one run (issue 7). Run as root:

    bench/run.py                       # N = 100, 2000, 10000; K = 10 cycles per tool
    bench/run.py --n 2000 --k 5        # quicker
    bench/run.py --no-idle             # skip the 60 s idle measurement
    bench/run.py --json bench/results/latest.json

Load per N: N sleeping + N busy-ish processes (bench/loadgen.c, each busy one burns ~BUSY_US
of CPU every second), a few cgroups (v1 memory/cpu/pids + cgroup2 at /sys/fs/cgroup/unified,
kubepods-like paths, 10 load processes in each), a network namespace with a veth pair.

Per tool, CPU time (user+sys, all threads, from /proc/PID/task/*/sched se.sum_exec_runtime, ns
resolution) of ONE collection cycle:
  process-exporter  catch-all config, scrape 127.0.0.1:19256/metrics K times; delta per scrape
                    (-threads=false -gather-smaps=false: the same data as vigil; the default
                    config is measured too as "process-exporter(defaults)")
  node-exporter     default collectors, scrape 127.0.0.1:19100/metrics K times (host metrics,
                    not per-process: listed, not used for the ratio)
  psutil            bench/psutil_cycle.py: the same per-process fields as vigil, in-process
  proc-floor        bench/src/bin/proc_floor.rs: only the raw /proc reads of vigil's field list
                    (a lower bound, not a peer); proc-floor(lean): stat + fd count by st_size;
                    proc-floor(cached-fds): lean, with /proc/PID/stat kept open (pread)
  apps.plugin       netdata's collector run standalone (`apps.plugin 1`), delta per cycle
  vigil             `vigil run --user nobody --interval-ms I`: collector CPU delta per cycle;
                    RSS of all four processes; idle cost at 10 s / 500 processes. Processes come
                    from the BPF task iterator where it works (issue 15; the collector's
                    `procs_from_iter` counter says how many)
  vigil(proc)       the same with `process_iter = false`: processes read from /proc/PID/*
For both vigil rows the table also prints the CPU of all four processes per cycle and its ratio
to apps.plugin's (the issue 15 budget: <= 0.10x).
--vigil-otlp http|https also ships everything over OTLP to a real collector (rotel from the
/opt/vigil-deploy-venv of deploy/ci-deps.sh, blackhole exporter), for https behind stunnel4 with
a CA made by openssl for the run: the PSS and CPU of the four processes with TLS on.
--vigil-json-lines off turns vigil's JSON-lines stdout off (the deployed configuration of
deploy/: OTLP only); vigil is then taken as collecting once the shipper reports OTLP records.
Prints a table; --json writes every sample. Installs what it needs with apt-get when missing:
prometheus-process-exporter, prometheus-node-exporter, python3-psutil, netdata-core
(apps.plugin), gcc.
"""
import argparse
import contextlib
import glob
import json
import os
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
import urllib.request
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
WORK = "/tmp/vigil-bench"
NETNS = "vigil-bench"
CG_V1 = ["memory", "cpu", "pids"]
CG_V2 = "/sys/fs/cgroup/unified"
PE_PORT, NE_PORT = 19256, 19100
APPS_PLUGIN = "/usr/lib/netdata/plugins.d/apps.plugin"
PY = "/usr/bin/python3"  # Debian's python3 (python3-psutil lives there)


def log(*a):
    print(time.strftime("%H:%M:%S"), *a, file=sys.stderr, flush=True)


def sh(*cmd, check=True):
    return subprocess.run(cmd, check=check, capture_output=True, text=True)


# --------------------------------------------------------------------------------------------
# measurement
# --------------------------------------------------------------------------------------------

def cpu_ns(pid):
    """CPU time (user+sys) of all live threads of pid, in ns (se.sum_exec_runtime)."""
    total = 0.0
    for f in glob.glob(f"/proc/{pid}/task/*/sched"):
        try:
            with open(f) as fh:
                for line in fh:
                    if line.startswith("se.sum_exec_runtime"):
                        total += float(line.split(":")[1])
                        break
        except (FileNotFoundError, ProcessLookupError):
            pass
    return int(total * 1e6)


def cpu_ticks_ns(pid):
    """utime+stime from /proc/PID/stat (10 ms ticks; includes exited threads)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1_000_000_000 // os.sysconf("SC_CLK_TCK")


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except FileNotFoundError:
        pass
    return 0


def pss_kib(pid):
    """Proportional set size: shared pages (the binary, libc) divided among the processes
    mapping them, so the four vigil processes' sum counts each page once."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except (FileNotFoundError, PermissionError):
        pass
    return 0


class MachineLoad:
    """Busy share of all CPUs between start() and stop() (/proc/stat), to document noise."""

    @staticmethod
    def _read():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        idle = v[3] + v[4]
        return sum(v) - idle, sum(v)

    def __init__(self):
        self.b0, self.t0 = self._read()

    def busy_pct(self):
        b1, t1 = self._read()
        return 100.0 * (b1 - self.b0) / max(1, t1 - self.t0)


def summary(samples):
    s = sorted(samples)
    return {"median": statistics.median(s), "min": s[0], "max": s[-1], "n": len(s)}


# --------------------------------------------------------------------------------------------
# load: processes, cgroups, netns
# --------------------------------------------------------------------------------------------

class Load:
    def __init__(self, n, busy_n, busy_us, period_ms):
        self.n, self.busy_n = n, busy_n
        self.proc = subprocess.Popen(
            [f"{WORK}/loadgen", str(n), str(busy_n), str(busy_us), str(period_ms)],
            stdout=subprocess.PIPE, text=True, start_new_session=True)
        line = self.proc.stdout.readline()
        if not line.startswith("ready"):
            raise RuntimeError(f"loadgen failed: {line!r}")
        self.children = [int(p) for p in open(
            f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read().split()]
        self.cgroups = []

    def place_in_cgroups(self, per_cg=10):
        """kubepods-like cgroups in each v1 hierarchy and in cgroup2, 10 load processes each."""
        pods = [str(uuid.uuid4()) for _ in range(2)]
        leaves = [f"vigil-bench/kubepods/pod{pods[0]}/{uuid.uuid4().hex}{uuid.uuid4().hex}",
                  f"vigil-bench/kubepods/pod{pods[0]}/{uuid.uuid4().hex}{uuid.uuid4().hex}",
                  f"vigil-bench/kubepods/pod{pods[1]}/{uuid.uuid4().hex}{uuid.uuid4().hex}"]
        roots = [f"/sys/fs/cgroup/{c}" for c in CG_V1] + [CG_V2]
        i = 0
        for leaf in leaves:
            pids = self.children[i:i + per_cg] + self.children[self.n + i:self.n + i + per_cg]
            i += per_cg
            for root in roots:
                if not os.path.isdir(root):
                    continue
                d = os.path.join(root, leaf)
                os.makedirs(d, exist_ok=True)
                self.cgroups.append(d)
                if root.endswith("/memory"):
                    with open(f"{d}/memory.limit_in_bytes", "w") as f:
                        f.write(str(1 << 30))
                for p in pids:
                    try:
                        with open(f"{d}/cgroup.procs", "w") as f:
                            f.write(str(p))
                    except OSError as e:
                        log(f"cgroup {d}: {p}: {e}")
        return len(leaves)

    def stop(self):
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()
        deadline = time.time() + 10
        while any(os.path.exists(f"/proc/{p}") for p in self.children[:50]) and time.time() < deadline:
            time.sleep(0.1)
        remove_cgroups()


def remove_cgroups():
    for root in [f"/sys/fs/cgroup/{c}" for c in CG_V1] + [CG_V2]:
        top = os.path.join(root, "vigil-bench")
        if not os.path.isdir(top):
            continue
        for d, _, _ in sorted(os.walk(top), key=lambda t: -t[0].count("/")):
            for _ in range(50):
                try:
                    os.rmdir(d)
                    break
                except OSError:
                    time.sleep(0.1)


def netns_up():
    netns_down()
    sh("ip", "netns", "add", NETNS)
    sh("ip", "link", "add", "vb-host", "type", "veth", "peer", "name", "vb-ns", "netns", NETNS)
    sh("ip", "addr", "add", "10.213.0.1/30", "dev", "vb-host")
    sh("ip", "link", "set", "vb-host", "up")
    sh("ip", "-n", NETNS, "addr", "add", "10.213.0.2/30", "dev", "vb-ns")
    sh("ip", "-n", NETNS, "link", "set", "vb-ns", "up")
    sh("ip", "-n", NETNS, "link", "set", "lo", "up")
    # A process living in the namespace, as a container's would.
    return subprocess.Popen(["ip", "netns", "exec", NETNS, "sleep", "infinity"])


def netns_down():
    sh("ip", "netns", "del", NETNS, check=False)
    sh("ip", "link", "del", "vb-host", check=False)


# --------------------------------------------------------------------------------------------
# tools
# --------------------------------------------------------------------------------------------

@contextlib.contextmanager
def probe_load(n=2000):
    """The load of one N (N sleeping + N busy-ish loadgen processes in their cgroups, the
    netns with its interfaces) for the probes beside this file (pss_probe, text_pages,
    hot_functions); taken down on exit."""
    os.makedirs(WORK, exist_ok=True)
    subprocess.run(["gcc", "-O2", "-o", f"{WORK}/loadgen", os.path.join(HERE, "loadgen.c")],
                   check=True)
    ns = netns_up()
    load = Load(n, n, 20, 1000)
    try:
        load.place_in_cgroups()
        time.sleep(3)
        yield load
    finally:
        load.stop()
        ns.kill()
        netns_down()
        remove_cgroups()


def resident_pages(pid, path, executable_only=False):
    """ELF vaddrs of the resident pages of `path`'s mappings in `pid` (its executable ones
    only, if asked), from /proc/PID/pagemap; the file's first mapping is at vaddr 0."""
    path = os.path.realpath(path)
    maps = [l.split() for l in open(f"/proc/{pid}/maps")]
    maps = [m for m in maps if len(m) > 5 and m[5] == path]
    if not maps:
        return set()
    first = maps[0]
    base = int(first[0].split("-")[0], 16) - int(first[2], 16)
    pages = set()
    with open(f"/proc/{pid}/pagemap", "rb") as pm:
        for m in maps:
            if executable_only and "x" not in m[1]:
                continue
            s, e = (int(x, 16) for x in m[0].split("-"))
            for va in range(s, e, 4096):
                pm.seek(va // 4096 * 8)
                if struct.unpack("Q", pm.read(8))[0] >> 63:
                    pages.add(va - base)
    return pages


def wait_http(url, timeout=15):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=5).read()
            return True
        except OSError:
            time.sleep(0.2)
    return False


class Exporter:
    def __init__(self, name, argv, url):
        self.name, self.url = name, url
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if not wait_http(url):
            raise RuntimeError(f"{name} did not answer on {url}")

    def measure(self, k, gap=0.3):
        """K scrapes after 2 warm-ups; per scrape: CPU delta from the end of the previous
        scrape to the end of this one (so background work such as GC is charged too)."""
        for _ in range(2):
            urllib.request.urlopen(self.url, timeout=120).read()
        time.sleep(gap)
        ml = MachineLoad()
        samples, wall, size = [], [], 0
        c_prev = cpu_ns(self.proc.pid)
        t_prev = cpu_ticks_ns(self.proc.pid)
        for _ in range(k):
            t = time.monotonic()
            body = urllib.request.urlopen(self.url, timeout=120).read()
            wall.append((time.monotonic() - t) * 1e3)
            size = len(body)
            time.sleep(gap)
            c = cpu_ns(self.proc.pid)
            samples.append((c - c_prev) / 1e6)
            c_prev = c
        ticks_ms = (cpu_ticks_ns(self.proc.pid) - t_prev) / 1e6 / k
        return {"cpu_ms": samples, "stat_ticks_ms_per_cycle": ticks_ms, "wall_ms": wall,
                "rss_kib": rss_kib(self.proc.pid), "bytes": size, "machine_busy_pct": ml.busy_pct(),
                "series": body.count(b"\n")}

    def stop(self):
        self.proc.terminate()
        self.proc.wait()


def measure_psutil(k):
    ml = MachineLoad()
    out = subprocess.run([PY, os.path.join(HERE, "psutil_cycle.py"), str(k)],
                         check=True, capture_output=True, text=True).stdout
    r = json.loads(out)
    return {"cpu_ms": r["cycle_cpu_ms"], "rss_kib": r["max_rss_kib"], "processes": r["processes"],
            "machine_busy_pct": ml.busy_pct()}


def measure_proc_floor(k, mode):
    """bench/src/bin/proc_floor.rs: the raw /proc reads of vigil's field list, nothing else."""
    exe = os.path.join(REPO, "target/release/vigil-proc-floor")
    if not os.access(exe, os.X_OK):
        return {"error": "cargo build --release -p vigil-bench"}
    ml = MachineLoad()
    r = json.loads(subprocess.run([exe, str(k)] + ([mode] if mode else []), check=True,
                                  capture_output=True, text=True).stdout)
    return {"cpu_ms": r["cycle_cpu_ms"], "rss_kib": r["max_rss_kib"], "processes": r["processes"],
            "read_by_path_per_cycle": r.get("read_by_path_per_cycle", 0),
            "machine_busy_pct": ml.busy_pct()}


def measure_apps_plugin(k):
    """netdata's apps.plugin standalone: `apps.plugin 1` (1 s cycles, netdata's plugin protocol
    on stdout; it exits when its stdin closes, so it gets a pipe). A cycle ends at each
    `BEGIN apps.cpu` line; CPU is sampled there."""
    if not os.path.exists(APPS_PLUGIN):
        return {"error": "apps.plugin not installed (apt-get install netdata-core)"}
    p = subprocess.Popen([APPS_PLUGIN, "1"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, cwd=WORK)
    marks = []

    def reader():
        for line in p.stdout:
            if line.startswith(b"BEGIN apps.cpu "):
                marks.append(cpu_ns(p.pid))

    th = threading.Thread(target=reader, daemon=True)
    th.start()
    ml = MachineLoad()
    deadline = time.time() + k + 30
    while len(marks) < k + 3 and time.time() < deadline and p.poll() is None:
        time.sleep(0.2)
    rss = rss_kib(p.pid)
    p.kill()
    p.wait()
    if len(marks) < 4:
        return {"error": f"apps.plugin produced {len(marks)} cycles"}
    # Skip the first two cycles (start-up, first full scan of /proc).
    samples = [(b - a) / 1e6 for a, b in zip(marks[2:], marks[3:])]
    return {"cpu_ms": samples, "rss_kib": rss, "machine_busy_pct": ml.busy_pct()}


def find_collector_counter(doc, names, role="collector"):
    """In `vigil status --json`, stats are `[[role, {"counters": [[name, value], ...]}], ...]`
    (or a dict keyed by role): the first counter of the collector whose name is in `names`."""
    def counter_in(x):
        if isinstance(x, list) and len(x) == 2 and isinstance(x[0], str) and x[0] in names \
                and isinstance(x[1], int):
            return x[1]
        if isinstance(x, dict):
            for k, v in x.items():
                if k in names and isinstance(v, int):
                    return v
            x = list(x.values())
        if isinstance(x, list):
            for y in x:
                r = counter_in(y)
                if r is not None:
                    return r
        return None

    def walk(x):
        if isinstance(x, dict):
            for k, v in x.items():
                if k.lower() == role:
                    r = counter_in(v)
                    if r is not None:
                        return r
                r = walk(v)
                if r is not None:
                    return r
        elif isinstance(x, list):
            if len(x) == 2 and isinstance(x[0], str) and x[0].lower() == role:
                r = counter_in(x[1])
                if r is not None:
                    return r
            for y in x:
                r = walk(y)
                if r is not None:
                    return r
        return None
    return walk(doc)


# The collector keeps two descriptors per process open between cycles, as RLIMIT_NOFILE allows
# (past it, processes are read by path: slower, not wrong). The systemd unit sets this limit
# (LimitNOFILE=); container runtimes give 1048576 by default. Raising the hard limit needs
# CAP_SYS_RESOURCE: where the harness lacks it, vigil runs with the limit it inherits (logged).
NOFILE = 1 << 20


def nofile_limit():
    import resource
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (NOFILE, NOFILE))
    except (ValueError, OSError):
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class OtlpBackend:
    """rotel (blackhole) on loopback; for https, stunnel4 in front with a fresh test CA.
    `args`/`env` are what vigil needs to ship there."""

    def __init__(self, scheme):
        d = f"{WORK}/otlp"
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
        rotel = glob.glob("/opt/vigil-deploy-venv/lib/python3*/site-packages/rotel/rotel-agent")
        if not rotel:
            sys.exit("rotel-agent missing: run deploy/ci-deps.sh")
        self.procs = [subprocess.Popen(
            [rotel[0], "start", "--otlp-http-endpoint", "127.0.0.1:19318",
             "--otlp-grpc-endpoint", "127.0.0.1:19317", "--exporter", "blackhole",
             "--pid-file", f"{d}/rotel.pid", "--log-file", f"{d}/rotel.log"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
        self.env = {}
        if scheme == "https":
            for c in (
                f"openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout {d}/ca.key "
                f"-out {d}/ca.pem -days 2 -subj /CN=bench-ca",
                f"openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout {d}/srv.key "
                f"-out {d}/srv.csr -subj /CN=localhost",
                f"printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\\nbasicConstraints=CA:FALSE\\n' > {d}/ext && "
                f"openssl x509 -req -in {d}/srv.csr -CA {d}/ca.pem -CAkey {d}/ca.key -CAcreateserial "
                f"-out {d}/srv.pem -days 2 -extfile {d}/ext",
            ):
                subprocess.run(c, shell=True, check=True, capture_output=True)
            with open(f"{d}/stunnel.conf", "w") as f:
                f.write(f"foreground = yes\npid =\n[otlp]\naccept = 127.0.0.1:19443\n"
                        f"connect = 127.0.0.1:19318\ncert = {d}/srv.pem\nkey = {d}/srv.key\n")
            self.procs.append(subprocess.Popen(["stunnel4", f"{d}/stunnel.conf"],
                                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            self.args = ["--otlp-endpoint", "https://localhost:19443"]
            self.env = {"SSL_CERT_FILE": f"{d}/ca.pem"}
        else:
            self.args = ["--otlp-endpoint", "http://127.0.0.1:19318"]
        # Until the receiver listens (rotel's first start after boot takes seconds): an agent
        # started before would run its retry and warning code, and a profile would count it.
        deadline = time.time() + 30
        for port in [19318] + ([19443] if scheme == "https" else []):
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if time.time() > deadline:
                        self.stop()
                        sys.exit(f"OTLP backend not listening on 127.0.0.1:{port} after 30 s")
                    time.sleep(0.1)

    def stop(self):
        for p in self.procs:
            p.kill()
            p.wait()


class Vigil:
    def __init__(self, binary, interval_ms, runtime, extra_args=(), extra_env=None):
        self.binary, self.interval_ms, self.runtime = binary, interval_ms, runtime
        self.json_off = "--json-lines" in extra_args
        shutil.rmtree(runtime, ignore_errors=True)
        os.makedirs(runtime, mode=0o755)
        os.chmod(runtime, 0o755)
        self.stdout_lines = 0
        self.process_lines = 0
        self.proc = subprocess.Popen(
            [binary, "run", "--runtime-dir", runtime, "--user", "nobody",
             "--interval-ms", str(interval_ms), *extra_args],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=open(f"{WORK}/vigil-{interval_ms}.stderr", "w"),
            env=dict(os.environ, RUST_LOG="warn", **(extra_env or {})), preexec_fn=nofile_limit)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.stdout_lines += 1
            if b'"process.' in line:
                self.process_lines += 1

    def roles(self):
        """pid of each role: the supervisor and its children by their `__child ROLE` argv."""
        out = {"supervisor": self.proc.pid}
        try:
            kids = open(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read().split()
        except FileNotFoundError:
            return out
        for k in kids:
            try:
                argv = open(f"/proc/{k}/cmdline", "rb").read().split(b"\0")
            except FileNotFoundError:
                continue
            if b"__child" in argv:
                role = argv[argv.index(b"__child") + 1].decode()
                out[role] = int(k)
        return out

    def wait_collecting(self, timeout=60):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                return f"vigil exited with {self.proc.returncode} (see {WORK}/vigil-*.stderr)"
            r = self.roles()
            if all(x in r for x in ("privhelper", "collector", "shipper")) and (
                    self.process_lines > 0 or (self.json_off and (self.status_counter(
                        ("records_shipped.otlp",), role="shipper") or 0) > 0)):
                return None
            time.sleep(0.2)
        return (f"no process metrics on stdout after {timeout}s (roles {sorted(self.roles())}, "
                f"{self.stdout_lines} stdout lines)")

    def status_cycles(self):
        """The collector's `cycles` counter from `vigil status --json`, if it reports one."""
        try:
            out = subprocess.run([self.binary, "status", "--json", "--runtime-dir", self.runtime],
                                 capture_output=True, text=True, timeout=10).stdout
            doc = json.loads(out)
        except (OSError, ValueError, subprocess.SubprocessError):
            return None
        return find_collector_counter(doc, ("cycles", "collection_cycles", "collect_cycles"))

    def status_counter(self, names, role="collector"):
        try:
            out = subprocess.run([self.binary, "status", "--json", "--runtime-dir", self.runtime],
                                 capture_output=True, text=True, timeout=10).stdout
            return find_collector_counter(json.loads(out), names, role)
        except (OSError, ValueError, subprocess.SubprocessError):
            return None

    def measure(self, cycles):
        """CPU of the collector per cycle: sampled once per interval for `cycles` intervals;
        the cycle count over the window comes from the status counter if there is one."""
        r = self.roles()
        col = r["collector"]
        iv = self.interval_ms / 1000.0
        time.sleep(2 * iv)
        ml = MachineLoad()
        roles0 = {role: cpu_ns(pid) for role, pid in r.items()}
        c0, n0, t0 = cpu_ns(col), self.status_cycles(), time.monotonic()
        samples, prev = [], c0
        for _ in range(cycles):
            time.sleep(iv)
            c = cpu_ns(col)
            samples.append((c - prev) / 1e6)
            prev = c
        n1, t1 = self.status_cycles(), time.monotonic()
        # The status counter is the supervisor's last poll of the collector (every 2 s), so
        # over a 10 s window it says 8 to 12 cycles: ±20 %. While a cycle's CPU is well under
        # the interval the collector runs exactly one cycle per interval, so the window's
        # length counts them; the counter only where cycles may overrun.
        wall = (t1 - t0) / iv
        counted = (n1 - n0) if n0 is not None and n1 is not None and n1 > n0 else None
        overrun = sorted(samples)[len(samples) // 2] > 0.5 * iv * 1000
        if counted is not None and overrun:
            ncyc, src = counted, f"status cycles counter ({counted})"
        else:
            ncyc, src = wall, f"interval ({wall:.2f} cycles; status counter {counted})"
        per = (prev - c0) / 1e6 / ncyc
        per_role = {role: (cpu_ns(pid) - roles0.get(role, 0)) / 1e6 / ncyc
                    for role, pid in r.items()}
        rss = {role: rss_kib(pid) for role, pid in self.roles().items()}
        pss = {role: pss_kib(pid) for role, pid in self.roles().items()}
        return {"cpu_ms": samples, "mean_cpu_ms_per_cycle": per, "cycles_from": src,
                "per_role_cpu_ms_per_cycle": per_role, "stdout_lines": self.stdout_lines,
                "rss_kib": rss, "rss_total_kib": sum(rss.values()),
                "pss_kib": pss, "pss_total_kib": sum(pss.values()),
                "all_roles_cpu_ms_per_cycle": sum(per_role.values()),
                "procs_from_iter": self.status_counter(("procs_from_iter",)),
                "machine_busy_pct": ml.busy_pct()}

    def all_cpu_ns(self):
        return sum(cpu_ns(p) for p in self.roles().values())

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# --------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------

def find_vigil(arg):
    for c in [arg, os.path.join(REPO, "target/release/vigil")]:
        if c and os.access(c, os.X_OK):
            return c
    return None


# Debian package of each tool the harness runs (gcc builds the load generator).
PACKAGES = {
    "process-exporter": "prometheus-process-exporter",
    "process-exporter(defaults)": "prometheus-process-exporter",
    "node-exporter": "prometheus-node-exporter",
    "psutil": "python3-psutil",
    "apps.plugin": "netdata-core",
}


def install_peers(tools):
    """Install the peers' Debian packages that are missing (and gcc), with apt-get."""
    want = sorted({PACKAGES[t] for t in tools if t in PACKAGES} | {"gcc"})
    missing = [p for p in want
               if "install ok installed" not in sh("dpkg-query", "-W", "-f=${Status}", p,
                                                     check=False).stdout]
    if missing:
        log(f"installing {' '.join(missing)}")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", *missing], check=True, env=env,
                       stdout=subprocess.DEVNULL)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", default="100,2000,10000", help="comma-separated N (N sleeping + N busy)")
    ap.add_argument("--k", type=int, default=10, help="cycles/scrapes per tool (5 at N >= 10000)")
    ap.add_argument("--busy-us", type=int, default=20, help="CPU burnt per busy process per period")
    ap.add_argument("--period-ms", type=int, default=1000)
    ap.add_argument("--no-busy-at", type=int, default=0,
                    help="from this N on, start no busy processes (0: always start them)")
    ap.add_argument("--vigil", default=None, help="vigil binary (default target/release/vigil)")
    ap.add_argument("--vigil-interval-ms", type=int, default=1000)
    ap.add_argument("--vigil-otlp", choices=["none", "http", "https"], default="none",
                    help="also ship over OTLP to rotel (https: behind stunnel4)")
    ap.add_argument("--vigil-json-lines", choices=["stdout", "off"], default="stdout",
                    help="vigil's JSON-lines output (off: only OTLP, as deploy/ configures it)")
    ap.add_argument("--no-idle", action="store_true", help="skip the idle measurement")
    ap.add_argument("--idle-seconds", type=int, default=60)
    ap.add_argument("--tools", default="process-exporter,process-exporter(defaults),node-exporter,psutil,proc-floor,proc-floor(lean),proc-floor(cached-fds),apps.plugin,vigil,vigil(proc)")
    ap.add_argument("--json", default=None, help="write all samples here")
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root (cgroups, netns, other users' /proc)")
    tools = a.tools.split(",")
    install_peers(tools)
    os.makedirs(WORK, exist_ok=True)
    subprocess.run(["gcc", "-O2", "-o", f"{WORK}/loadgen", os.path.join(HERE, "loadgen.c")], check=True)
    with open(f"{WORK}/pe.yml", "w") as f:
        f.write('process_names:\n  - name: "{{.Comm}}"\n    cmdline:\n    - \'.+\'\n')
    vigil_bin = find_vigil(a.vigil)

    results = {"machine": machine(), "args": vars(a), "runs": [], "idle": None}
    import resource
    log(f"RLIMIT_NOFILE for vigil: wanted {NOFILE}, this harness may give "
        f"{resource.getrlimit(resource.RLIMIT_NOFILE)[1]} (hard)")
    netns_proc = netns_up()
    exporters = {}
    load = None
    try:
        if "process-exporter" in tools:
            exporters["process-exporter"] = Exporter("process-exporter", [
                "prometheus-process-exporter", "-config.path", f"{WORK}/pe.yml",
                "-threads=false", "-gather-smaps=false",
                "-web.listen-address", f"127.0.0.1:{PE_PORT}"], f"http://127.0.0.1:{PE_PORT}/metrics")
        if "process-exporter(defaults)" in tools:
            exporters["process-exporter(defaults)"] = Exporter("process-exporter(defaults)", [
                "prometheus-process-exporter", "-config.path", f"{WORK}/pe.yml",
                "-web.listen-address", f"127.0.0.1:{PE_PORT + 1}"], f"http://127.0.0.1:{PE_PORT + 1}/metrics")
        if "node-exporter" in tools:
            exporters["node-exporter"] = Exporter("node-exporter", [
                "prometheus-node-exporter", f"--web.listen-address=127.0.0.1:{NE_PORT}"],
                f"http://127.0.0.1:{NE_PORT}/metrics")

        for n in [int(x) for x in a.n.split(",")]:
            k = a.k if n < 10000 else max(3, a.k // 2)
            busy = 0 if (a.no_busy_at and n >= a.no_busy_at) else n
            log(f"N={n}: starting {n} sleeping + {busy} busy processes")
            ml = MachineLoad()
            load = Load(n, busy, a.busy_us, a.period_ms)
            ncg = load.place_in_cgroups()
            time.sleep(3)
            run = {"n": n, "busy": busy, "cgroups": ncg, "k": k,
                   "processes_on_host": len(glob.glob("/proc/[0-9]*")), "tools": {}}
            for name, ex in exporters.items():
                log(f"N={n}: {name}, {k} scrapes")
                run["tools"][name] = ex.measure(k)
            if "psutil" in tools:
                log(f"N={n}: psutil, {k} cycles")
                run["tools"]["psutil"] = measure_psutil(k)
            for name, mode in (("proc-floor", None), ("proc-floor(lean)", "--lean"),
                               ("proc-floor(cached-fds)", "--cached-fds")):
                if name in tools:
                    log(f"N={n}: {name}, {k} cycles")
                    run["tools"][name] = measure_proc_floor(k, mode)
            if "apps.plugin" in tools:
                log(f"N={n}: apps.plugin, {k} cycles")
                run["tools"]["apps.plugin"] = measure_apps_plugin(k)
            if "vigil" in tools:
                run["tools"]["vigil"] = measure_vigil(vigil_bin, a, k)
            if "vigil(proc)" in tools:
                run["tools"]["vigil(proc)"] = measure_vigil(vigil_bin, a, k, process_iter=False)
            run["load_busy_pct_whole_run"] = ml.busy_pct()
            load.stop()
            load = None
            results["runs"].append(run)
            print_table(results)

        if "vigil" in tools and not a.no_idle:
            results["idle"] = measure_idle(vigil_bin, a)
    finally:
        if load:
            load.stop()
        for ex in exporters.values():
            ex.stop()
        netns_proc.kill()
        netns_down()
        remove_cgroups()
    print_table(results)
    if a.json:
        os.makedirs(os.path.dirname(os.path.abspath(a.json)), exist_ok=True)
        with open(a.json, "w") as f:
            json.dump(results, f, indent=1)
        log(f"wrote {a.json}")


def measure_vigil(vigil_bin, a, k, process_iter=True):
    if not vigil_bin:
        return {"error": "no vigil binary (cargo build --release -p vigil-supervisor)"}
    log(f"vigil: {vigil_bin} --interval-ms {a.vigil_interval_ms}, {k} cycles, OTLP {a.vigil_otlp}, "
        f"process_iter {process_iter}")
    backend = OtlpBackend(a.vigil_otlp) if a.vigil_otlp != "none" else None
    args = list(backend.args) if backend else []
    if a.vigil_json_lines == "off":
        args += ["--json-lines", ""]
    if not process_iter:
        with open(f"{WORK}/vigil-proc.toml", "w") as f:
            f.write("[collector]\nprocess_iter = false\n")
        args += ["--config", f"{WORK}/vigil-proc.toml"]
    v = Vigil(vigil_bin, a.vigil_interval_ms, f"{WORK}/vigil-rt", args,
              backend.env if backend else None)
    try:
        err = v.wait_collecting()
        if err:
            return {"error": err}
        r = v.measure(k)
        r["otlp"] = a.vigil_otlp
        r["json_lines"] = a.vigil_json_lines
        return r
    finally:
        v.stop()
        if backend:
            backend.stop()


def measure_idle(vigil_bin, a):
    """All four vigil processes' CPU over `idle_seconds` at a 10 s interval, 500 processes
    (250 sleeping + 250 busy), as % of one core."""
    if not vigil_bin:
        return {"error": "no vigil binary"}
    load = Load(250, 250, a.busy_us, a.period_ms)
    v = None
    try:
        v = Vigil(vigil_bin, 10_000, f"{WORK}/vigil-idle")
        err = v.wait_collecting(timeout=40)
        if err:
            return {"error": err}
        log(f"idle: vigil at 10 s interval, 500 processes, {a.idle_seconds} s")
        time.sleep(2)
        c0, t0 = v.all_cpu_ns(), time.monotonic()
        per_role0 = {r: cpu_ns(p) for r, p in v.roles().items()}
        time.sleep(a.idle_seconds)
        c1, t1 = v.all_cpu_ns(), time.monotonic()
        per_role = {r: (cpu_ns(p) - per_role0.get(r, 0)) / 1e6 for r, p in v.roles().items()}
        return {"cpu_pct_one_core": 100.0 * (c1 - c0) / 1e9 / (t1 - t0), "seconds": t1 - t0,
                "per_role_cpu_ms": per_role}
    finally:
        if v:
            v.stop()
        load.stop()


def machine():
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    return {"nproc": os.cpu_count(), "kernel": os.uname().release, "cpu": cpu,
            "loadavg": open("/proc/loadavg").read().split()[:3],
            "mem_kib": int(open("/proc/meminfo").readline().split()[1]),
            "nofile_hard": __import__("resource").getrlimit(__import__("resource").RLIMIT_NOFILE)[1]}


PER_PROCESS_PEERS = ("process-exporter", "psutil", "apps.plugin")


def print_table(results):
    out = []
    out.append(f"{'tool':28} {'N':>6} {'CPU ms/cycle median (min-max)':>32} {'vigil/fastest':>14} "
               f"{'RSS MiB':>8} {'host busy%':>10} {'µs/proc':>8}")
    for run in results["runs"]:
        meds = {}
        for name, r in run["tools"].items():
            if "cpu_ms" in r:
                meds[name] = statistics.median(r["cpu_ms"])
        peers = {k: v for k, v in meds.items() if k in PER_PROCESS_PEERS}
        fastest = min(peers.items(), key=lambda kv: kv[1]) if peers else None
        for name, r in run["tools"].items():
            if "error" in r:
                out.append(f"{name:28} {run['n']:>6}   {'n/a: ' + r['error'][:70]}")
                continue
            s = summary(r["cpu_ms"])
            ratio = ""
            if name.startswith("vigil") and fastest:
                ratio = f"{s['median'] / fastest[1]:.2f} ({fastest[0]})"
            rss = r.get("rss_total_kib", r.get("rss_kib", 0))
            out.append(f"{name:28} {run['n']:>6} {s['median']:>14.2f} ({s['min']:.2f}-{s['max']:.2f})"
                       f"{'':>4} {ratio:>14} {rss / 1024:>8.1f} {r.get('machine_busy_pct', 0):>10.0f}"
                       f" {1000 * s['median'] / run['processes_on_host']:>8.1f}")
            if name.startswith("vigil") and "all_roles_cpu_ms_per_cycle" in r:
                allr = r["all_roles_cpu_ms_per_cycle"]
                ap = meds.get("apps.plugin")
                vs = f" = {allr / ap:.3f}x apps.plugin's median" if ap else ""
                out.append(f"{'':28}        all four processes {allr:.2f} ms/cycle{vs}; "
                           f"processes from the task iterator: {r.get('procs_from_iter')}")
            if name.startswith("vigil") and "per_role_cpu_ms_per_cycle" in r:
                roles = ", ".join(f"{k} {v:.2f}" for k, v in r["per_role_cpu_ms_per_cycle"].items())
                out.append(f"{'':28}        per role, ms/cycle ({r.get('cycles_from', '?')}): {roles}; "
                           f"RSS sum {r['rss_total_kib'] / 1024:.1f} MiB, "
                           f"PSS sum {r.get('pss_total_kib', 0) / 1024:.1f} MiB")
    idle = results.get("idle")
    if idle:
        if "error" in idle:
            out.append(f"idle (vigil, 10 s interval, 500 procs): n/a: {idle['error']}")
        else:
            out.append(f"idle (vigil, 10 s interval, 500 procs, {idle['seconds']:.0f} s): "
                       f"{idle['cpu_pct_one_core']:.3f} % of one core (target < 0.5 %)")
    print("\n".join(out), flush=True)
    return out


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--table":
        print_table(json.load(open(sys.argv[2])))  # re-print the table of a --json file
    else:
        main()
