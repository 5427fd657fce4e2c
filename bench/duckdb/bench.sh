#!/bin/sh
# bench.sh HUNT FILE [ROUNDS]: times `HUNT hunt --format jsonl FILE` and
# `node hunt.mjs FILE` (DuckDB: node start-up, load and query, as a user
# runs it) alternately, ROUNDS times each (default 5), checks that both
# print the same bytes, and prints every run and the min and median of
# wall time and of CPU (user + sys) with the ratio hunt/DuckDB; and the
# wall time of DuckDB's own part (instance, macros, view and query, as
# hunt.mjs --timing reports it: without Node's start-up and the module's
# load), with the ratio hunt/that. BENCH_DUCK_FLAGS (e.g. --scan-only)
# are passed to hunt.mjs; the outputs are then not compared.
set -eu
hunt=$1 file=$2 rounds=${3:-5}
dir=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
i=0
while [ "$i" -lt "$rounds" ]; do
	i=$((i + 1))
	/usr/bin/time -f "hunt %e %U %S %M" -a -o "$tmp/times" "$hunt" hunt --format jsonl "$file" > "$tmp/hunt.out" 2> /dev/null
	/usr/bin/time -f "duckdb %e %U %S %M" -a -o "$tmp/times"  node "$dir/hunt.mjs" --timing ${BENCH_DUCK_FLAGS:-} "$file" > "$tmp/duck.out" 2> "$tmp/duck.err"
	sed -n 's/.*; duckdb \([0-9]*\) ms$/inproc \1/p' "$tmp/duck.err" >> "$tmp/times"
	[ -n "${BENCH_DUCK_FLAGS:-}" ] || cmp -s "$tmp/hunt.out" "$tmp/duck.out" || { echo "bench.sh: round $i: the outputs differ" >&2; exit 1; }
done
awk -v flags="${BENCH_DUCK_FLAGS:-}" -v rows="$(wc -l < "$tmp/hunt.out")" -v file="$file" '
	$1 == "inproc" { print "    (DuckDB itself: " $2 " ms)"; ni++; ip["inproc", ni] = $2 / 1000; next }
	{ print "  " $1 ": " $2 " s wall, " $3 " s user, " $4 " s sys, " $5 " KB max RSS"
	  n[$1]++; w[$1, n[$1]] = $2; c[$1, n[$1]] = $3 + $4 }
	function sort(a, k, m,    i, j, t) { for (i = 1; i <= m; i++) for (j = i + 1; j <= m; j++) if (a[k, j] < a[k, i]) { t = a[k, i]; a[k, i] = a[k, j]; a[k, j] = t } }
	function med(a, k, m) { return m % 2 ? a[k, (m + 1) / 2] : (a[k, m / 2] + a[k, m / 2 + 1]) / 2 }
	END {
		sort(w, "hunt", n["hunt"]); sort(w, "duckdb", n["duckdb"]); sort(c, "hunt", n["hunt"]); sort(c, "duckdb", n["duckdb"]); sort(ip, "inproc", ni)
		printf "%s: %d rows%s; %d runs each, alternated\n", file, rows, flags == "" ? ", identical in every round" : ", DuckDB with " flags, n["hunt"]
		printf "  wall  min hunt %.2f s, DuckDB %.2f s: ratio %.3f; median %.2f s, %.2f s: ratio %.3f\n",
			w["hunt", 1], w["duckdb", 1], w["hunt", 1] / w["duckdb", 1], med(w, "hunt", n["hunt"]), med(w, "duckdb", n["duckdb"]), med(w, "hunt", n["hunt"]) / med(w, "duckdb", n["duckdb"])
		printf "  CPU   min hunt %.2f s, DuckDB %.2f s: ratio %.3f; median %.2f s, %.2f s: ratio %.3f\n",
			c["hunt", 1], c["duckdb", 1], c["hunt", 1] / c["duckdb", 1], med(c, "hunt", n["hunt"]), med(c, "duckdb", n["duckdb"]), med(c, "hunt", n["hunt"]) / med(c, "duckdb", n["duckdb"])
		printf "  wall, DuckDB without Node start-up: min %.2f s: ratio %.3f; median %.2f s: ratio %.3f\n",
			ip["inproc", 1], w["hunt", 1] / ip["inproc", 1], med(ip, "inproc", ni), med(w, "hunt", n["hunt"]) / med(ip, "inproc", ni)
	}' "$tmp/times"
