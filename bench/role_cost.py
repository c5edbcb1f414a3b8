#!/usr/bin/env python3
"""CPU per collection cycle of each vigil role, with N sleeping extra processes, for a set of
configurations (issue 12: what the opt-in process_io costs, in the collector and the
privhelper that reads /proc/PID/io and /proc/PID/exe for it).

  python3 bench/role_cost.py [--vigil target/release/vigil] [--n 2000] [--secs 20]

For each configuration: start `vigil run --user nobody --interval-ms 1000 --json-lines ""`,
wait 5 s (first cycles read command lines, cgroups, executable paths), then sample each role's
utime+stime (/proc/PID/stat) and the collector's `cycles` counter (`vigil status --json`)
over --secs seconds; print ms of CPU per cycle per role.
"""

import json
import os
import subprocess
import sys
import tempfile
import time

HZ = os.sysconf("SC_CLK_TCK")


def cpu_ms(pid):
    with open(f"/proc/{pid}/stat") as f:
        rest = f.read().rsplit(")", 1)[1].split()
    return (int(rest[11]) + int(rest[12])) * 1000.0 / HZ


def status(vigil, rt):
    out = subprocess.run([vigil, "status", "--json", "--runtime-dir", rt], capture_output=True, text=True)
    return json.loads(out.stdout)


def roles(st):
    return {str(p["role"]).lower(): p["pid"] for p in st["processes"]}


def cycles(st):
    for role, rs in st["stats"]:
        if str(role).lower() == "collector":
            for k, v in rs["counters"]:
                if k == "cycles":
                    return v
    return None


def run(vigil, toml, secs):
    with tempfile.TemporaryDirectory(prefix="vigil-rolecost-") as d:
        os.chmod(d, 0o755)
        cfg = os.path.join(d, "vigil.toml")
        with open(cfg, "w") as f:
            f.write("[collector]\ninterval_ms = 1000\n" + toml + "[shipper]\njson_lines = \"\"\n")
        rt = os.path.join(d, "rt")
        os.mkdir(rt)
        os.chmod(rt, 0o755)
        agent = subprocess.Popen([vigil, "run", "--user", "nobody", "--config", cfg, "--runtime-dir", rt],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            time.sleep(5)
            st = status(vigil, rt)
            pids = roles(st)
            c0, t0 = cycles(st), {r: cpu_ms(p) for r, p in pids.items()}
            time.sleep(secs)
            st = status(vigil, rt)
            c1, t1 = cycles(st), {r: cpu_ms(p) for r, p in pids.items()}
            n = max((c1 or 0) - (c0 or 0), 1)
            return {r: (t1[r] - t0[r]) / n for r in pids}, n
        finally:
            agent.terminate()
            agent.wait(timeout=20)


def main(argv):
    args = dict(zip(argv[::2], argv[1::2]))
    vigil = args.get("--vigil", "target/release/vigil")
    n = int(args.get("--n", "2000"))
    secs = int(args.get("--secs", "20"))
    kids = [subprocess.Popen(["sleep", "3600"]) for _ in range(n)]
    try:
        for name, toml in [("default", ""), ("process_io", "process_io = true\n")]:
            per, cyc = run(vigil, toml, secs)
            row = "  ".join(f"{r} {v:7.2f}" for r, v in sorted(per.items()))
            print(f"{name:<11} cycles {cyc:3d}  ms CPU/cycle: {row}", flush=True)
    finally:
        for k in kids:
            k.kill()
            k.wait()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
