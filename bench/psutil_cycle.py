#!/usr/bin/python3
"""One psutil "collector": the same per-process fields as vigil's collector, K cycles,
CPU time of this process per cycle measured in-process (time.process_time, user+sys).

    psutil_cycle.py K  ->  one JSON object on stdout
"""
import json
import sys
import time

import psutil

ATTRS = ["cpu_times", "memory_info", "num_threads", "status", "create_time", "ppid",
         "cmdline", "name", "username", "num_fds"]


def cycle():
    n = 0
    for p in psutil.process_iter(ATTRS, ad_value=None):
        n += 1
        _ = p.info  # the dict psutil built (oneshot() under the hood)
    return n


def main():
    k = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    cycle()  # warm-up: fills psutil's cache of Process objects, as a long-running agent has it
    ms, procs = [], 0
    for _ in range(k):
        t0 = time.process_time()
        procs = cycle()
        ms.append((time.process_time() - t0) * 1000.0)
    # VmHWM, not ru_maxrss: ru_maxrss survives exec and would report the harness's peak.
    rss_kib = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
    print(json.dumps({"cycle_cpu_ms": ms, "processes": procs, "max_rss_kib": rss_kib,
                      "psutil": psutil.__version__}))


if __name__ == "__main__":
    main()
