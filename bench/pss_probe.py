#!/usr/bin/python3
"""bench/pss_probe.py BIN[,BIN...] [rounds] [settle_s]: one load (N=2000 like bench/run.py), each binary
run in turn (alternating over rounds); per role: Pss, Pss_Anon, Pss_File, Anonymous, and top
mappings by Pss; CPU per cycle per role over 10 s. Wrap in flock /tmp/vigil-bench.lock.
OUT=file.json (samples), DETAIL=1 (top mappings), DUMP=1 (/tmp/smaps-BIN-ROLE copies),
OTLP=http|https (ship to bench/run.py's rotel backend, JSON lines off: the deployed
configuration; default: the embedded defaults, JSON lines to stdout), SAMPLES=n (the PSS sum
n more times, 1 s apart, after the CPU window: it moves with the cycle's phase)."""
import sys, os, time, json, subprocess, importlib.util, collections
spec = importlib.util.spec_from_file_location("run", os.path.join(os.path.dirname(os.path.abspath(__file__)), "run.py"))
run = importlib.util.module_from_spec(spec); spec.loader.exec_module(run)
bins = sys.argv[1].split(",")
rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 1
settle = int(sys.argv[3]) if len(sys.argv) > 3 else 20
detail = os.environ.get("DETAIL")

def rollup(pid):
    d = {}
    for line in open(f"/proc/{pid}/smaps_rollup"):
        p = line.split()
        if len(p) >= 3 and p[2] == "kB":
            d[p[0].rstrip(":")] = int(p[1])
    return d

def mappings(pid):
    out = collections.Counter(); cur = None
    for line in open(f"/proc/{pid}/smaps"):
        p = line.split()
        if "-" in p[0] and len(p) >= 5 and not p[0].endswith(":"):
            name = " ".join(p[5:]) if len(p) > 5 else "[anon]"
            cur = f"{p[1]} {name}"
        elif p[0] == "Pss:":
            out[cur] += int(p[1])
    return out

res = []
otlp = os.environ.get("OTLP")
if otlp not in (None, "http", "https"):
    sys.exit(f"OTLP={otlp}: use http or https (or leave it unset for the embedded defaults)")
samples = int(os.environ.get("SAMPLES", "0"))
backend = run.OtlpBackend(otlp) if otlp else None
args = backend.args + ["--json-lines", ""] if backend else []
with run.probe_load(2000):
    for r in range(rounds):
        for b in bins:
            v = run.Vigil(b, 1000, f"{run.WORK}/vigil-rt", args, backend.env if backend else None)
            try:
                err = v.wait_collecting()
                if err: print(b, err); continue
                time.sleep(settle)
                roles = v.roles()
                c0 = {k: run.cpu_ns(p) for k, p in roles.items()}
                n0 = v.status_cycles(); time.sleep(10); n1 = v.status_cycles()
                cpu = {k: (run.cpu_ns(p) - c0[k]) / 1e6 / max(1, (n1 or 0) - (n0 or 0)) for k, p in roles.items()}
                row = {"bin": b, "round": r, "procs": len(os.listdir("/proc")), "roles": {}}
                for k, p in roles.items():
                    ru = rollup(p)
                    row["roles"][k] = {"pss": ru["Pss"], "pss_anon": ru.get("Pss_Anon"), "pss_file": ru.get("Pss_File"),
                                       "anon": ru.get("Anonymous"), "rss": ru["Rss"], "cpu_ms": round(cpu[k], 2)}
                    if os.environ.get("DUMP"):
                        open(f"/tmp/smaps-{os.path.basename(b)}-{k}","w").write(open(f"/proc/{p}/smaps").read())
                        row["roles"][k]["threads"] = len(os.listdir(f"/proc/{p}/task"))
                    if detail:
                        row["roles"][k]["top"] = mappings(p).most_common(12)
                tot = sum(x["pss"] for x in row["roles"].values())
                an = sum(x["pss_anon"] for x in row["roles"].values())
                fi = sum(x["pss_file"] for x in row["roles"].values())
                cp = sum(x["cpu_ms"] for x in row["roles"].values())
                print(f"== {os.path.basename(b)} r{r}: PSS {tot/1024:.2f} MiB (anon {an/1024:.2f}, file {fi/1024:.2f}), cpu all {cp:.1f} ms/cycle")
                if samples:
                    sums = []
                    for _ in range(samples):
                        time.sleep(1)
                        sums.append(sum(rollup(p)["Pss"] for p in roles.values()) / 1024)
                    row["pss_samples_mib"] = sums
                    ss = sorted(sums)
                    print(f"   PSS sum over {samples} more s: median {ss[len(ss)//2]:.2f} MiB ({ss[0]:.2f}-{ss[-1]:.2f})")
                for k, x in row["roles"].items():
                    print(f"   {k:10s} pss {x['pss']:6d} anon {x['pss_anon']:6d} file {x['pss_file']:6d} rss {x['rss']:6d} cpu {x['cpu_ms']:6.2f}")
                    for m in x.get("top", []):
                        print(f"        {m[1]:6d} {m[0]}")
                sys.stdout.flush()
                res.append(row)
            finally:
                v.stop()
            time.sleep(2)
if backend:
    backend.stop()
json.dump(res, open(os.environ.get("OUT", "/tmp/pss_probe.json"), "w"), indent=1)
