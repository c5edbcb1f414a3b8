#!/bin/bash
# bench/task_iter_cost.sh BIN [BIN...]: the task iterator program's own cost per run, binaries
# side by side: 2,000 sleeping processes, then per round and binary `vigil run` for ~10 s at a
# 1 s interval and the program's run_time_ns / run_cnt from the kernel's BPF statistics
# (kernel.bpf_stats_enabled, on for the run only). A run is one task (thread): non-leaders
# return at once. Prints ns per run, then each binary's median over the rounds and its ratio
# to the first binary's. Root; wrap in `flock -o /tmp/vigil-bench.lock`.
set -eu
[ $# -ge 1 ] || { echo "usage: $0 BIN [BIN...]" >&2; exit 2; }
ROUNDS=${ROUNDS:-3}
sysctl -q kernel.bpf_stats_enabled=1
trap 'sysctl -q kernel.bpf_stats_enabled=0; pkill -f "sleep 907" || true' EXIT
setsid bash -c 'for i in $(seq 2000); do sleep 907 & done; wait' &
sleep 3
echo "processes: $(ls /proc | grep -c '^[0-9]')"
out=$(mktemp)
for r in $(seq "$ROUNDS"); do
  for b in "$@"; do
    timeout -s INT 12 "$b" run --user nobody --interval-ms 1000 > /dev/null 2>&1 &
    vp=$!
    sleep 10
    bpftool prog show -j | python3 -c "
import json, sys
for p in json.load(sys.stdin):
    if p.get('name', '').startswith('vigil_task_ite') and p.get('run_cnt'):
        print('$b', $r, p['run_cnt'], round(p['run_time_ns'] / p['run_cnt']))
" | tee -a "$out"
    wait $vp || true
  done
done
python3 - "$out" "$@" <<'PY'
import sys, statistics
rows = [l.split() for l in open(sys.argv[1])]
med = {b: statistics.median(int(r[3]) for r in rows if r[0] == b) for b in sys.argv[2:]}
first = med[sys.argv[2]]
for b, m in med.items():
    print(f"{b}: median {m:.0f} ns per run, {m / first:.2f}x the first")
PY
rm -f "$out"
