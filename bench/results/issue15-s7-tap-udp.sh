#!/bin/bash
# udp.sh ROUNDS SECS: alternate no tap / cBPF ret0 tap, print sent datagrams/s
iperf3 -s -p 5398 >/dev/null 2>&1 & S=$!
sleep 0.5
for r in $(seq 1 $1); do
  for mode in off on; do
    if [ $mode = on ]; then python3 /tmp/s7/tap.py >/dev/null & T=$!; sleep 0.5; fi
    v=$(iperf3 -c 127.0.0.1 -p 5398 -u -b 0 -l 64 -t $2 -J | python3 -c 'import json,sys; print(int(json.load(sys.stdin)["end"]["sum"]["packets"]/'$2'))')
    [ $mode = on ] && kill $T
    echo "$r $mode $v"
  done
done
kill $S
