#!/bin/bash
# bench/flows_cgroup_cost.sh [ROUNDS] [SECS]: what cgroup_skb programs on the root of the cgroup v2
# hierarchy would cost a loopback 64-byte UDP flood (iperf3 -u -l 64 -b 0), against nothing
# attached: the flow program (privhelper/bpf/flows.bpf.c's handle(), same map and runs) as
# cgroup_skb egress + ingress ("both", what counting both directions needs), egress only, and an
# empty egress program ("nop": the hook's own cost). A measurement, not a feature: vigil has no
# cgroup_skb flow source (BENCHMARKS.md, "Flows from cgroup_skb"). Root; needs clang-19,
# bpftool, iperf3. Prints one line per run and the medians' ratios to "off".
set -euo pipefail
ROUNDS=${1:-7}; SECS=${2:-5}
REPO=$(cd "$(dirname "$0")/.." && pwd)
CG=$(awk '$3 == "cgroup2" { print $2; exit }' /proc/mounts)
[ -n "$CG" ] || { echo "no cgroup2 mount" >&2; exit 1; }
T=$(mktemp -d); P=/sys/fs/bpf/vigil_cg_bench_$$
cleanup() {
  for x in egress:vigil_flow_cg_eg ingress:vigil_flow_cg_in egress:vigil_cg_nop; do
    bpftool cgroup detach "$CG" "${x%%:*}" pinned "$P/${x#*:}" 2>/dev/null || true
  done
  rm -rf "$P" "$T"; pkill -f "iperf3 -s -p 5398" || true
}
trap cleanup EXIT
cp "$REPO"/privhelper/bpf/flows.bpf.c "$REPO"/privhelper/bpf/vigil_records.h "$T"/
sed -i 's/^char LICENSE\[\] SEC("license").*$//' "$T"/flows.bpf.c
cat >> "$T"/flows.bpf.c <<'C'
SEC("cgroup_skb/egress")
int vigil_flow_cg_eg(struct __sk_buff *skb)
{
	handle(skb, VIGIL_DIR_EGRESS, VIGIL_SRC_TC, 0);
	return 1;
}

SEC("cgroup_skb/ingress")
int vigil_flow_cg_in(struct __sk_buff *skb)
{
	handle(skb, VIGIL_DIR_INGRESS, VIGIL_SRC_TC, 0);
	return 1;
}

SEC("cgroup_skb/egress")
int vigil_cg_nop(struct __sk_buff *skb)
{
	return 1;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
C
clang-19 -target bpf -g -O2 -Wall -I/usr/include/"$(gcc -print-multiarch)" -I"$T" -c "$T"/flows.bpf.c -o "$T"/flows_cg.o
bpftool prog loadall "$T"/flows_cg.o "$P"
att() { for x in "$@"; do bpftool cgroup attach "$CG" "${x%%:*}" pinned "$P/${x#*:}" multi; done; }
det() { for x in "$@"; do bpftool cgroup detach "$CG" "${x%%:*}" pinned "$P/${x#*:}"; done; }
iperf3 -s -p 5398 -D --logfile "$T"/srv.log; sleep 0.5
pps() {
  iperf3 -c 127.0.0.1 -p 5398 -t "$SECS" -J -u -b 0 -l 64 | python3 -c \
    'import json,sys; d=json.load(sys.stdin)["end"]["sum"]; print(round(d["packets"]/d["seconds"]))'
}
CASES=("off" "both:egress:vigil_flow_cg_eg,ingress:vigil_flow_cg_in" "egress:egress:vigil_flow_cg_eg" "nop:egress:vigil_cg_nop")
echo "# $(date -u +%H:%M:%S) load $(cut -d' ' -f1-3 /proc/loadavg); cgroup2 at $CG; udp 64 B, $ROUNDS rounds of ${SECS} s"
OUT=$T/runs
for r in $(seq "$ROUNDS"); do
  n=${#CASES[@]}
  for i in $(seq 0 $((n - 1))); do
    c=${CASES[$(((i + r) % n))]}; name=${c%%:*}; xs=()
    [ "$name" = off ] || IFS=, read -ra xs <<< "${c#*:}"
    att "${xs[@]}"; v=$(pps); det "${xs[@]}"
    echo "udp $r $name $v" | tee -a "$OUT"
  done
done
echo "# $(date -u +%H:%M:%S) load $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$OUT" <<'PY'
import collections, statistics, sys
d = collections.defaultdict(list)
for line in open(sys.argv[1]):
    _, _, name, v = line.split()
    d[name].append(float(v))
off = statistics.median(d["off"])
for name in ("off", "nop", "egress", "both"):
    m = statistics.median(d[name])
    print(f"{name:7} median {m:9.0f} packets/s  ratio to off {m / off:.3f}  (runs {len(d[name])})")
PY
