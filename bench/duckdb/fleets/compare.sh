#!/bin/sh
# compare.sh HUNT DIR: runs `HUNT hunt --format jsonl` and hunt.mjs with each
# DIR/fleet-*.flags on DIR/fleet-*.jsonl (written by dump_test.go.txt) and
# reports the files whose outputs differ.
set -eu
hunt=$1 dir=$2
here=$(cd "$(dirname "$0")/.." && pwd)
same=0 differ=0 rows=0
for f in "$dir"/fleet-*.jsonl; do
	b=${f%.jsonl}
	flags=$(cat "$b.flags")
	# shellcheck disable=SC2086 # the flags are words
	"$hunt" hunt --format jsonl $flags "$f" > "$b.hunt" 2> /dev/null
	# shellcheck disable=SC2086
	node "$here/hunt.mjs" $flags "$f" > "$b.duck"
	if cmp -s "$b.hunt" "$b.duck"; then same=$((same + 1)); else differ=$((differ + 1)); echo "differ: $b"; fi
	rows=$((rows + $(wc -l < "$b.hunt")))
done
echo "$same file(s) identical, $differ differ; $rows row(s) from hunt"
[ "$differ" -eq 0 ]
