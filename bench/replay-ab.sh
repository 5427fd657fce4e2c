#!/usr/bin/env bash
# Alternates two beacon binaries replaying one topic, with a raw kcat
# consume of the same topic after each pair, and checks that both wrote
# the same beacon set and alerts (docs/performance.md quotes its output).
#
#   bench/replay-ab.sh BIN_A BIN_B PAIRS [replay flags...]
#
# BROKERS (default 127.0.0.1:19092) and TOPIC (default sim) name the
# topic, e.g. two simulated days on a broker on loopback:
#   beacon simulate --brokers 127.0.0.1:19092 --topic sim --hours 48 --devices 200 --quiet --seed 11
set -euo pipefail
if [ $# -lt 3 ]; then
  sed -n '2,10p' "$0" >&2
  exit 2
fi
A=$1 B=$2 N=$3
shift 3
brokers=${BROKERS:-127.0.0.1:19092}
topic=${TOPIC:-sim}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for _ in $(seq "$N"); do
  for X in A B; do
    bin=${!X}
    /usr/bin/time -f "$X %e s wall %U s user %S s sys %M KB" \
      "$bin" replay --brokers "$brokers" --topic "$topic" --alerts "$out/$X.alerts" "$@" \
      > "$out/$X.out" 2> "$out/$X.err" || { cat "$out/$X.err" >&2; exit 1; }
    tail -1 "$out/$X.err"
  done
  /usr/bin/time -f "kcat %e s wall %U s user %S s sys" \
    kcat -C -b "$brokers" -t "$topic" -o beginning -e -q -X broker.address.family=v4 > /dev/null
  if cmp -s "$out/A.out" "$out/B.out" && cmp -s "$out/A.alerts" "$out/B.alerts"; then
    echo same
  else
    echo "DIFFERENT output" >&2
    exit 1
  fi
done
cat /proc/loadavg
