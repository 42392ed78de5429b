#!/usr/bin/env bash
# GET /api/v1/images/{id} on the embedded backend beside nginx serving a copy
# of the same response, same run, same machine. Prints JSON lines and the
# ratio. Usage: bench/get_one.sh [connections=64] [seconds=10] [rounds=5]
set -euo pipefail
cd "$(dirname "$0")/.."
CONNS=${1:-64}
SECS=${2:-10}
ROUNDS=${3:-5}
scripts/install-deps >/dev/null
# Release by default; BUILD_DIR=build BUILD_TYPE=RelWithDebInfo reuses the test build.
BUILD_DIR=${BUILD_DIR:-build-release}
BUILD_DIR=$BUILD_DIR BUILD_TYPE=${BUILD_TYPE:-Release} TARGET=imgsvc scripts/build >/dev/null
BIN=$BUILD_DIR/src/app/imgsvc

WORK=$(mktemp -d)
cleanup() {
  [ -n "${SVC_PID:-}" ] && kill "$SVC_PID" 2>/dev/null && wait "$SVC_PID" 2>/dev/null || true
  [ -f "$WORK/nginx.pid" ] && kill "$(cat "$WORK/nginx.pid")" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

SVC_PORT=18080
NGINX_PORT=18081
KEY="alice:6f0ced3f-5028-4b1c-8294-3d894c48c645"
"$BIN" serve --port $SVC_PORT --data-dir "$WORK/data" --log-level info >"$WORK/imgsvc.log" 2>&1 &
SVC_PID=$!
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$SVC_PORT/health" >/dev/null && break; sleep 0.1; done

# A public 64x64 PNG (header-valid; the service never decodes pixels).
printf '\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x40\x00\x00\x00\x40\x08\x06\x00\x00\x00\xaa\x69\x71\xde' >"$WORK/img.png"
head -c 4096 /dev/urandom >>"$WORK/img.png"
ID=$(curl -sf -H "x-api-key: $KEY" -F user_id=alice -F visibility=public -F files=@"$WORK/img.png" \
  "http://127.0.0.1:$SVC_PORT/api/v1/images" | sed -n 's/.*"image_id":"\([^"]*\)".*/\1/p')
URL="http://127.0.0.1:$SVC_PORT/api/v1/images/$ID"

mkdir -p "$WORK/www"
curl -sf "$URL" >"$WORK/www/image.json"
chmod -R a+rX "$WORK"  # nginx's workers run unprivileged
sed -e "s|@DIR@|$WORK|g" -e "s|@PORT@|$NGINX_PORT|g" bench/nginx.conf.in >"$WORK/nginx.conf"
nginx -c "$WORK/nginx.conf" -p "$WORK"

run_wrk() {  # name url -> JSON line
  local out
  out=$(wrk -t2 -c"$CONNS" -d"${SECS}s" --latency "$2")
  local rps p50 p99 errors
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p50=$(awk '$1=="50%" {print $2}' <<<"$out")
  p99=$(awk '$1=="99%" {print $2}' <<<"$out")
  errors=$(awk '/Non-2xx|Socket errors/ {print}' <<<"$out" | tr '\n' ' ')
  printf '{"scenario":"%s","connections":%s,"seconds":%s,"rps":%s,"p50":"%s","p99":"%s","errors":"%s"}\n' \
    "$1" "$CONNS" "$SECS" "$rps" "$p50" "$p99" "$errors"
}
# Rounds alternate nginx and imgsvc, so a stretch of CPU steal on a shared
# machine hits both; the ratio reported is the median of the rounds' ratios.
RATIOS=()
for round in $(seq "$ROUNDS"); do
  NGINX_LINE=$(run_wrk nginx_static_copy "http://127.0.0.1:$NGINX_PORT/image.json")
  SVC_LINE=$(run_wrk imgsvc_get_one "$URL")
  echo "${NGINX_LINE%\}},\"round\":$round}"
  echo "${SVC_LINE%\}},\"round\":$round}"
  N=$(sed -n 's/.*"rps":\([0-9.]*\).*/\1/p' <<<"$NGINX_LINE")
  S=$(sed -n 's/.*"rps":\([0-9.]*\).*/\1/p' <<<"$SVC_LINE")
  RATIOS+=("$(awk -v s="$S" -v n="$N" 'BEGIN {printf "%.3f", s/n}')")
done
MEDIAN=$(printf '%s\n' "${RATIOS[@]}" | sort -n | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}')
RSS=$(awk '/VmHWM/ {print $2}' /proc/$SVC_PID/status)
printf '{"median_ratio_imgsvc_to_nginx":%s,"round_ratios":"%s","imgsvc_peak_rss_kib":%s,"response_bytes":%s}\n' \
  "$MEDIAN" "${RATIOS[*]}" "$RSS" "$(wc -c <"$WORK/www/image.json")"
