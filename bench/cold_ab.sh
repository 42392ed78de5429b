#!/usr/bin/env bash
# The server's cold start, before and after a change: bench/server_cold run
# on several builds of imgsvc in turns (ITERATIONS turns of 3 rounds each,
# each build with a fresh data directory), then each build's median exec to
# first /health, its median ratio to the static hello world and its median
# RSS. Alternating matters: on this shared VM a start's cost drifts within
# minutes by more than most changes to it. Builds server_cold and
# hello_static (Release) when missing; the imgsvc binaries are yours, e.g.
# a worktree's (see docs/benchmarks.md, "One change, before and after").
# Usage: bench/cold_ab.sh ITERATIONS IMGSVC_BINARY...
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 2 ]; then
  echo "usage: bench/cold_ab.sh ITERATIONS IMGSVC_BINARY..." >&2
  exit 2
fi
ITERATIONS=$1
shift
BUILD_DIR=${BUILD_DIR:-build-release}
for target in server_cold hello_static; do
  [ -x "$BUILD_DIR/bench/$target" ] || BUILD_DIR=$BUILD_DIR BUILD_TYPE=Release TARGET=$target scripts/build >/dev/null
done
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
for _ in $(seq "$ITERATIONS"); do
  for binary in "$@"; do
    rm -rf "$WORK/data"
    "$BUILD_DIR/bench/server_cold" --imgsvc="$binary" --hello="$BUILD_DIR/bench/hello_static" \
      --data-dir="$WORK/data" --rounds=3 | grep '"round"' | sed "s|^|$binary |" >>"$WORK/rounds"
  done
done
node -e '
  const median = (values) => { const v = [...values].sort((a, b) => a - b); const m = v.length >> 1;
                               return v.length % 2 ? v[m] : (v[m - 1] + v[m]) / 2; };
  const rounds = {};
  for (const line of require("fs").readFileSync(process.argv[1], "utf8").trim().split("\n")) {
    const space = line.indexOf(" {");
    (rounds[line.slice(0, space)] ??= []).push(JSON.parse(line.slice(space + 1)));
  }
  for (const binary of process.argv.slice(2)) {
    const r = rounds[binary];
    console.log(JSON.stringify({ imgsvc: binary, rounds: r.length,
      median_cold_ms: median(r.map((x) => x.cold_ms)), median_ratio_to_hello: median(r.map((x) => x.ratio_to_hello)),
      median_rss_kib: median(r.map((x) => x.vm_rss_kib)) }));
  }' "$WORK/rounds" "$@"
