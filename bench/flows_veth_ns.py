#!/usr/bin/python3
"""bench/flows_veth_ns.py BENCH_A,BENCH_B [rounds] [secs]: ns per run of the tracepoint flow
programs on traffic that leaves through a real (non-loopback) device — a 64-byte UDP flood from
this namespace over a veth pair into a namespace made here — for two ebpf_bench builds,
alternating in each round (root; needs iperf3 and bpftool). Each build holds the tracepoint
source attached and read (EBPF_BENCH_HOLD) while the kernel's BPF statistics are on
(kernel.bpf_stats_enabled, restored after); prints per program the median ns per run of each
build and B/A. The transmit program runs in full here (on loopback it returns at once), the
receive program returns early (the peer device is in the other namespace). Wrap in flock
/tmp/vigil-bench.lock."""
import json, os, statistics, subprocess, sys, time

benches = sys.argv[1].split(",") if len(sys.argv) > 1 else []
if len(benches) != 2 or not all(os.path.exists(b) for b in benches):
    sys.exit("usage: flows_veth_ns.py BENCH_A,BENCH_B [rounds] [secs] (two ebpf_bench builds)")
rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 5
secs = int(sys.argv[3]) if len(sys.argv) > 3 else 8
NS, HOST, PEER, PORT = "vigil-vethbench", "vvb-host", "vvb-peer", "5421"


def sh(*a, check=True):
    return subprocess.run(a, check=check, capture_output=True, text=True).stdout


def setup():
    sh("ip", "netns", "add", NS)
    sh("ip", "link", "add", HOST, "type", "veth", "peer", "name", PEER)
    sh("ip", "link", "set", PEER, "netns", NS)
    sh("ip", "addr", "add", "10.231.0.1/24", "dev", HOST)
    sh("ip", "link", "set", HOST, "up")
    sh("ip", "netns", "exec", NS, "ip", "addr", "add", "10.231.0.2/24", "dev", PEER)
    sh("ip", "netns", "exec", NS, "ip", "link", "set", PEER, "up")


def teardown():
    sh("ip", "link", "del", HOST, check=False)
    sh("ip", "netns", "del", NS, check=False)


def one(bench):
    """{program name: ns per run} and datagrams/s of one flood with `bench` holding the programs."""
    srv = subprocess.Popen(["ip", "netns", "exec", NS, "iperf3", "-s", "-1", "-p", PORT],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    env = dict(os.environ, EBPF_BENCH_HOLD=str(secs + 4), EBPF_BENCH_SOURCE="tracepoint")
    hold = subprocess.Popen([bench], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in hold.stdout:
        if "attached for" in line:
            break
    else:
        sys.exit(f"{bench} did not attach the tracepoints")
    time.sleep(0.5)
    out = sh("iperf3", "-c", "10.231.0.2", "-p", PORT, "-u", "-l", "64", "-b", "0", "-t", str(secs), "-J")
    ns = {}
    for p in json.loads(sh("bpftool", "prog", "show", "-j")):
        if p.get("name", "").startswith("vigil_flow_tp") and p.get("run_cnt"):
            ns[p["name"]] = p["run_time_ns"] / p["run_cnt"]
    hold.communicate()
    srv.wait()
    s = json.loads(out)["end"]["sum"]
    return ns, s["packets"] / s["seconds"]


def main():
    before = sh("sysctl", "-n", "kernel.bpf_stats_enabled").strip()
    teardown()
    setup()
    res = [[], []]
    try:
        sh("sysctl", "-q", "kernel.bpf_stats_enabled=1")
        for r in range(rounds):
            order = [0, 1] if r % 2 == 0 else [1, 0]
            for i in order:
                res[i].append(one(benches[i]))
            print(f"round {r + 1} of {rounds}: " + ", ".join(
                f"{'AB'[i]} tx {res[i][-1][0].get('vigil_flow_tp_tx', 0):.1f} ns" for i in (0, 1)), file=sys.stderr)
    finally:
        sh("sysctl", "-q", f"kernel.bpf_stats_enabled={before}")
        teardown()
    print(f"64-byte UDP over veth into a namespace, {rounds} rounds of {secs} s, order alternating; BPF statistics on")
    print(f"A = {benches[0]}\nB = {benches[1]}")
    for name in ("vigil_flow_tp_tx", "vigil_flow_tp_rx"):
        a = statistics.median(x[0].get(name, float("nan")) for x in res[0])
        b = statistics.median(x[0].get(name, float("nan")) for x in res[1])
        per = [round(x[0].get(name, 0), 1) for x in res[0]], [round(x[0].get(name, 0), 1) for x in res[1]]
        print(f"{name}: A {a:.1f} ns per run, B {b:.1f}, B/A {b / a:.3f} (per round A {per[0]}, B {per[1]})")
    ra = statistics.median(x[1] for x in res[0])
    rb = statistics.median(x[1] for x in res[1])
    print(f"datagrams/s (statistics on): A {ra:.0f}, B {rb:.0f}, B/A {rb / ra:.3f}")


if __name__ == "__main__":
    main()
