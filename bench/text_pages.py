#!/usr/bin/python3
"""bench/text_pages.py BIN [settle_s]: under bench/run.py's load (N = 2,000), run BIN and, after
settle_s, read each role's /proc/PID/pagemap over its mappings of BIN: resident kB per ELF
section (readelf -S) per role, and the union over the four (what the file pages in PSS add up
to). Root; wrap in flock -o /tmp/vigil-bench.lock. BENCHMARKS.md "Start-up code released"."""
import sys, os, time, subprocess, importlib.util, collections
spec = importlib.util.spec_from_file_location("run", os.path.join(os.path.dirname(os.path.abspath(__file__)), "run.py"))
run = importlib.util.module_from_spec(spec); spec.loader.exec_module(run)
b = sys.argv[1]; settle = int(sys.argv[2]) if len(sys.argv) > 2 else 20
secs=[]
for l in subprocess.run(["readelf","-SW",b],capture_output=True,text=True).stdout.splitlines():
    l=l.replace("[ ","[")
    p=l.split()
    if len(p)>6 and p[0].startswith("[") and p[0]!="[Nr]" and p[2] not in ("NULL","NOBITS"):
        try: addr=int(p[3],16); size=int(p[5],16)
        except: continue
        if addr: secs.append((addr,addr+size,p[1]))
def sec(off):
    for a,e,n in secs:
        if a<=off<e: return n
    return "?"
with run.probe_load(2000):
    v = run.Vigil(b, 1000, f"{run.WORK}/vigil-rt")
    try:
        v.wait_collecting(); time.sleep(settle)
        union=collections.Counter(); per={}
        allpages=collections.defaultdict(set)
        for k,pid in v.roles().items():
            c=collections.Counter()
            for vaddr in run.resident_pages(pid, b):
                n=sec(vaddr); c[n]+=4; allpages[n].add(vaddr)
            per[k]=c
            print(k, sorted(c.items(), key=lambda x:-x[1])[:8])
        print("union", sorted(((n,len(s)*4) for n,s in allpages.items()), key=lambda x:-x[1]))
    finally: v.stop()
