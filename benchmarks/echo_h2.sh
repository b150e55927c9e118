#!/bin/bash
# server CPU per echo, HTTP/1.1 vs HTTP/2 (each bench connection its own h2 connection)
B=${1:?usage: benchmarks/echo_h2.sh SWITCHBOARD_BINARY}
for run in 1 2 3; do
for mode in h1 h2; do
  port=$((19700 + run))
  taskset -c 0 $B serve --listen 127.0.0.1:$port --workers 1 --max-connections-per-ip 100000 >/dev/null 2>&1 &
  SP=$!; sleep 0.5
  extra=""; [ $mode = h2 ] && extra="--http2"
  c0=$(awk '{print $14+$15}' /proc/$SP/stat)
  out=$(taskset -c 1 $B bench echo ws://127.0.0.1:$port/echo --connections 100 --payload 20 --duration 5 $extra --json 2>/dev/null | tail -1)
  c1=$(awk '{print $14+$15}' /proc/$SP/stat)
  kill $SP; wait $SP 2>/dev/null
  python3 -c "
import json,sys; d=json.loads('''$out'''); n=d['received']; cpu=($c1-$c0)/100
print('run $run $mode: %d echoes, %.0f/s, server %.2f us CPU per echo, p50 %s us' % (n, d['msgs_per_sec'], cpu/n*1e6, d.get('latency_us',{}).get('p50')))"
done; done
