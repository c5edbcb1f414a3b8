#!/usr/bin/python3
"""bench/flows_profile.py [SOURCES] [rounds] [secs]: where a 64-byte UDP datagram's time goes with
a flow program attached, by profile rather than by throughput alone (root; needs perf, iperf3 and
target/release/examples/ebpf_bench). SOURCES: flow sources as `collector.flows_source` names them,
comma-separated (default `tracepoint`); each round runs no program and then each source (the order
rotating), a loopback `iperf3 -u -l 64 -b 0` flood while `perf record -a` samples both CPUs; the
program is attached and read by `ebpf_bench` (EBPF_BENCH_HOLD) exactly as in its throughput runs.
A source written `name@path` is attached by the ebpf_bench at path instead (another build, e.g.
one with empty programs: BENCHMARKS.md), so two builds are measured in the same rounds.

Per case, medians over rounds: datagrams/s and its ratio to no program; CPU per datagram on both
CPUs (busy, idle excluded) and in the kernel's BPF path (the programs, their dispatch — bpf_trace_run,
trampolines' enter/exit — and the helpers they call): its share of the busy CPU per datagram, less
what no program shows (this VM's environment runs BPF of its own on the send path). The BPF path's
share is what the program costs the packets; the throughput ratio adds what two saturated vCPUs
make of it (a slower sender leaves the receiver idle, whose wake-ups the sender then pays).
Wrap in flock /tmp/vigil-bench.lock."""
import collections, json, os, re, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "target/release/examples/ebpf_bench")
SOURCES = (sys.argv[1] if len(sys.argv) > 1 else "tracepoint").split(",")
ROUNDS = int(sys.argv[2]) if len(sys.argv) > 2 else 5
SECS = int(sys.argv[3]) if len(sys.argv) > 3 else 8
FREQ = 1999
PORT = "5411"
IDLE = re.compile(r"^(pv_native_safe_halt|default_idle|native_safe_halt|cpu_idle_poll|poll_idle|acpi_idle_do_entry|intel_idle)")
BPF = re.compile(r"^(bpf_prog_[0-9a-f]{16}|bpf_trace_run|__bpf_trace_|__traceiter_|__bpf_prog_enter|"
                 r"__bpf_prog_exit|bpf_trampoline_|copy_from_kernel_nofault|bpf_probe_read_kernel|"
                 r"bpf_skb_load_bytes|bpf_skb_cgroup_id|htab_|__htab_|bpf_ktime_get_ns|bpf_map_)")


def median(v):
    v = sorted(v)
    return v[len(v) // 2] if v else float("nan")


def profile(source, tmp):
    """One flood: (datagrams/s, busy ns per datagram, BPF-path ns per datagram, top BPF symbols)."""
    hold = None
    if source:
        name, _, bench = source.partition("@")
        env = dict(os.environ, EBPF_BENCH_HOLD=str(SECS + 6), EBPF_BENCH_SOURCE=name)
        hold = subprocess.Popen([bench or BENCH], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for line in hold.stdout:
            if "attached for" in line:
                break
        else:
            sys.exit(f"ebpf_bench did not attach {source}")
    srv = subprocess.Popen(["iperf3", "-s", "-1", "-p", PORT], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    cli = subprocess.Popen(["iperf3", "-c", "127.0.0.1", "-p", PORT, "-u", "-l", "64", "-b", "0", "-t", str(SECS + 2), "-J"],
                           stdout=subprocess.PIPE, text=True)
    time.sleep(1.0)
    data = os.path.join(tmp, "perf.data")
    subprocess.run(["perf", "record", "-a", "-F", str(FREQ), "-o", data, "--", "sleep", str(SECS)],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    out, _ = cli.communicate()
    srv.wait()
    if hold:
        hold.wait()
    s = json.loads(out)["end"]["sum"]
    rate = s["packets"] / s["seconds"]
    rep = subprocess.run(["perf", "report", "-i", data, "--sort", "sym", "--stdio", "-n"],
                         capture_output=True, text=True, check=True).stdout
    busy = 0
    bpf = collections.Counter()
    for line in rep.splitlines():
        f = line.split()
        if len(f) < 4 or line.startswith("#") or not f[1].isdigit():
            continue
        n, sym = int(f[1]), f[3]
        if IDLE.match(sym):
            continue
        busy += n
        if BPF.match(sym):
            bpf[re.sub(r"^bpf_prog_[0-9a-f]{16}_", "prog ", sym)] += n
    per = 1e9 / FREQ / (rate * SECS)  # ns per datagram of one sample
    return rate, busy * per, sum(bpf.values()) * per, {k: v * per for k, v in bpf.items()}


def main():
    for b in [BENCH] + [s.partition("@")[2] for s in SOURCES if "@" in s]:
        if not os.path.exists(b):
            sys.exit(f"{b}: build it first (cargo build --release --locked --example ebpf_bench -p vigil-privhelper)")
    cases = [None] + SOURCES
    res = {c: [] for c in cases}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(ROUNDS):
            order = [cases[(i + r) % len(cases)] for i in range(len(cases))]
            for c in order:
                res[c].append(profile(c, tmp))
            print(f"round {r + 1} of {ROUNDS}: " + ", ".join(f"{c or 'none'} {res[c][-1][0]:.0f}/s" for c in cases),
                  file=sys.stderr, flush=True)
    base = res[None]
    base_rate = median([x[0] for x in base])
    base_bpf = median([x[2] for x in base])
    print(f"loopback iperf3 -u -l 64, {ROUNDS} rounds of {SECS} s per case (order rotating), perf at {FREQ} Hz on both CPUs")
    w = max(12, *(len(c) for c in SOURCES))
    print(f"{'case':<{w}} {'datagrams/s':>12} {'ratio':>6} {'busy ns/dgram':>14} {'BPF ns/dgram':>13} {'BPF share':>10}  BPF path (ns per datagram)")
    for c in cases:
        xs = res[c]
        rate = median([x[0] for x in xs])
        ratios = [x[0] / b[0] for x, b in zip(xs, base)]
        busy = median([x[1] for x in xs])
        extra = median([x[2] - base_bpf for x in xs]) if c else 0.0
        share = median([(x[2] - base_bpf) / x[1] for x in xs]) if c else 0.0
        syms = collections.Counter()
        for x in xs:
            for k, v in x[3].items():
                syms[k] += v / len(xs)
        top = ", ".join(f"{k} {v:.1f}" for k, v in syms.most_common(6))
        ratio = median(ratios) if c else 1.0
        print(f"{c or 'none':<{w}} {rate:>12.0f} {ratio:>6.3f} {busy:>14.0f} {extra:>13.1f} {100 * share:>9.2f}%  {top}")
    print(f"(no program: {base_rate:.0f} datagrams/s, {base_bpf:.1f} ns per datagram in BPF already — the environment's own programs)")


if __name__ == "__main__":
    main()
