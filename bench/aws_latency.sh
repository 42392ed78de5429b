#!/usr/bin/env bash
# GET /api/v1/images/{id} (or, with SCENARIO=upload_64k, the upload of a
# 64 KiB image) on the AWS backend when every answer of S3 and DynamoDB comes
# some milliseconds late, as from AWS itself rather than from emulators on
# loopback: a proxy (bench/count_proxy.mjs --delay-ms) holds each answer
# between the emulators and imgsvc. Two settings of --aws-concurrency take
# turns, round after round, on one set of peers. While each request waits
# that long on AWS, the requests allowed to wait at once bound the requests
# per second, whatever the CPU left. Per round: req/s, p50, p99, imgsvc's CPU
# per request, its peak RSS, and the new AWS connections it opened per 1000
# requests (counted by the proxy). Prints JSON lines, then the medians.
# Figures: docs/benchmarks.md.
# Usage: [SCENARIO=get_one|upload_64k] bench/aws_latency.sh [delay_ms=10] [connections=256]
#        [seconds=5] [rounds=3] [concurrency_a=32] [concurrency_b=256]
set -euo pipefail
cd "$(dirname "$0")/.."
DELAY_MS=${1:-10}
CONNS=${2:-256}
SECS=${3:-5}
ROUNDS=${4:-3}
SETTINGS=("${5:-32}" "${6:-256}")
SCENARIO=${SCENARIO:-get_one}
case "$SCENARIO" in get_one | upload_64k) ;; *) echo "SCENARIO is get_one or upload_64k" >&2; exit 2 ;; esac
scripts/install-deps >/dev/null

BUILD_DIR=${BUILD_DIR:-build-release}
BUILD_DIR=$BUILD_DIR BUILD_TYPE=${BUILD_TYPE:-Release} TARGET=imgsvc scripts/build >/dev/null
BIN=$BUILD_DIR/src/app/imgsvc

source bench/helpers.sh

start_json_helper peers node --openssl-legacy-provider tests/support/local_aws.mjs
export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test-secret AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true
STORE_FLAGS=(--bucket bench-images --table BenchImages --token-secret bench_api_token)
TOKEN=bench-token-0123456789abcdef
KEY="alice:$TOKEN"
AWS_ENDPOINT_URL_S3=$(field peers s3) AWS_ENDPOINT_URL_DYNAMODB=$(field peers dynamodb) \
  AWS_ENDPOINT_URL_SECRETS_MANAGER=$(field peers secretsmanager) \
  "$BIN" init "${STORE_FLAGS[@]}" --api-token "$TOKEN" >"$WORK/init.log"
start_json_helper proxy node bench/count_proxy.mjs --delay-ms="$DELAY_MS" \
  "dynamodb=$(field peers dynamodb_direct)" "s3=$(field peers s3_direct)"

PORT=18093
start_imgsvc() {  # concurrency -> SVC_PID
  AWS_ENDPOINT_URL_S3=$(field proxy s3) AWS_ENDPOINT_URL_DYNAMODB=$(field proxy dynamodb) \
    AWS_ENDPOINT_URL_SECRETS_MANAGER=$(field peers secretsmanager) \
    "$BIN" serve --storage aws "${STORE_FLAGS[@]}" --port $PORT --aws-concurrency "$1" --log-level info \
    >>"$WORK/imgsvc.log" 2>&1 &
  SVC_PID=$!
  PIDS+=("$SVC_PID")
  for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$PORT/health" >/dev/null && return 0
    sleep 0.1
  done
  echo "imgsvc did not start" >&2
  tail -5 "$WORK/imgsvc.log" >&2
  exit 1
}
stop_imgsvc() {
  kill "$SVC_PID"
  wait "$SVC_PID" 2>/dev/null || true
  local others=() pid
  for pid in "${PIDS[@]}"; do [ "$pid" = "$SVC_PID" ] || others+=("$pid"); done
  PIDS=("${others[@]}")  # not to be signalled again at exit, its number maybe reused
}
aws_connections() {  # -> connections the proxy has accepted so far, both services
  curl -sf "$(field proxy stats)" | node -e \
    'const s = JSON.parse(require("fs").readFileSync(0, "utf8")); console.log(s.dynamodb.connections + s.s3.connections)'
}

# A 64x64 PNG header and random bytes (the service never decodes pixels).
printf '\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x40\x00\x00\x00\x40\x08\x06\x00\x00\x00\xaa\x69\x71\xde' >"$WORK/img.png"
head -c 4096 /dev/urandom >>"$WORK/img.png"
start_imgsvc "${SETTINGS[0]}"
ID=$(curl -sf -H "x-api-key: $KEY" -F user_id=alice -F visibility=public -F files=@"$WORK/img.png" \
  "http://127.0.0.1:$PORT/api/v1/images" | sed -n 's/.*"image_id":"\([^"]*\)".*/\1/p')
[ -n "$ID" ] || { echo "upload failed" >&2; tail -5 "$WORK/imgsvc.log" >&2; exit 1; }
stop_imgsvc
URL="http://127.0.0.1:$PORT/api/v1/images/$ID"
WRK_ARGS=(-H "x-api-key: $KEY")
if [ "$SCENARIO" = upload_64k ]; then
  URL="http://127.0.0.1:$PORT/api/v1/images"
  # One multipart body, sent again and again: each upload is a new image.
  head -c 65536 /dev/urandom >"$WORK/pixels"
  node -e '
    const fs = require("fs");
    const [work] = process.argv.slice(1);
    const png = Buffer.concat([fs.readFileSync(`${work}/img.png`).subarray(0, 33), fs.readFileSync(`${work}/pixels`)]);
    const boundary = "imgsvc-bench-boundary";
    const field = (name, value) => `--${boundary}\r\nContent-Disposition: form-data; name="${name}"\r\n\r\n${value}\r\n`;
    const body = Buffer.concat([
      Buffer.from(field("user_id", "alice") + field("visibility", "public") +
        `--${boundary}\r\nContent-Disposition: form-data; name="files"; filename="b.png"\r\nContent-Type: image/png\r\n\r\n`),
      png, Buffer.from(`\r\n--${boundary}--\r\n`)]);
    fs.writeFileSync(`${work}/upload.body`, body);
    fs.writeFileSync(`${work}/upload.lua`, [
      `local f = io.open("${work}/upload.body", "rb")`,
      "wrk.body = f:read(\"*a\")", "f:close()", "wrk.method = \"POST\"",
      `wrk.headers["Content-Type"] = "multipart/form-data; boundary=${boundary}"`].join("\n"));
  ' "$WORK"
  WRK_ARGS+=(-s "$WORK/upload.lua")
fi
TICKS_PER_SECOND=$(getconf CLK_TCK)

LINES=()
for round in $(seq "$ROUNDS"); do
  # Turns: the setting that goes first alternates, so drift hits both alike.
  order=("${SETTINGS[@]}")
  [ $((round % 2)) -eq 0 ] && order=("${SETTINGS[1]}" "${SETTINGS[0]}")
  for concurrency in "${order[@]}"; do
    start_imgsvc "$concurrency"
    # Warm-up: the secret is fetched, the connection pools fill. They grow
    # to the most calls at once, which 2 s at 256 uploads do not reach
    # (DynamoDB's calls come after S3's): warmed again, up to 5 times, until
    # a pass opens no connection.
    for _ in 1 2 3 4 5; do
      warm_before=$(aws_connections)
      wrk -t2 -c"$CONNS" -d2s "${WRK_ARGS[@]}" "$URL" >/dev/null
      [ "$(aws_connections)" = "$warm_before" ] && break
    done
    ticks_before=$(awk '{print $14 + $15}' "/proc/$SVC_PID/stat")
    connections_before=$(aws_connections)
    out=$(wrk -t2 -c"$CONNS" -d"${SECS}s" --latency "${WRK_ARGS[@]}" "$URL")
    ticks_after=$(awk '{print $14 + $15}' "/proc/$SVC_PID/stat")
    connections_after=$(aws_connections)
    peak_rss_kib=$(awk '/VmHWM/ {print $2}' "/proc/$SVC_PID/status")
    stop_imgsvc
    LINE=$(node -e '
      const [out, conc, round, delay, conns, ticks, tps, connections, rss, scenario] = process.argv.slice(1);
      const pick = (re) => (re.exec(out) ?? [])[1];
      const ms = (text) => text === undefined ? null
        : Number(text.replace(/[a-z]+$/, "")) * ({ us: 0.001, ms: 1, s: 1000 })[text.match(/[a-z]+$/)[0]];
      const requests = Number(pick(/(\d+) requests in/));
      const round3 = (x) => Math.round(x * 1000) / 1000;
      console.log(JSON.stringify({
        scenario: `aws_${scenario}_with_latency`, delay_ms: Number(delay), connections: Number(conns),
        aws_concurrency: Number(conc), round: Number(round), requests,
        rps: round3(Number(pick(/Requests\/sec:\s+([\d.]+)/))),
        p50_ms: round3(ms(pick(/50%\s+([\d.]+[a-z]+)/))), p99_ms: round3(ms(pick(/99%\s+([\d.]+[a-z]+)/))),
        non_2xx: Number(pick(/Non-2xx or 3xx responses: (\d+)/) ?? 0),
        cpu_us_per_request: round3(Number(ticks) / Number(tps) * 1e6 / requests),
        new_aws_connections_per_1000: round3(1000 * Number(connections) / requests),
        peak_rss_mib: round3(Number(rss) / 1024),
      }));
    ' "$out" "$concurrency" "$round" "$DELAY_MS" "$CONNS" $((ticks_after - ticks_before)) "$TICKS_PER_SECOND" \
      $((connections_after - connections_before)) "$peak_rss_kib" "$SCENARIO")
    echo "$LINE"
    LINES+=("$LINE")
  done
done

printf '%s\n' "${LINES[@]}" | node -e '
  const lines = require("fs").readFileSync(0, "utf8").trim().split("\n").map(JSON.parse);
  const median = (xs) => { const s = [...xs].sort((a, b) => a - b); return s[Math.floor(s.length / 2)]; };
  const fields = ["rps", "p50_ms", "p99_ms", "cpu_us_per_request", "new_aws_connections_per_1000", "peak_rss_mib"];
  console.log(`\nmedians of ${lines.length / 2} rounds, answers ${lines[0].delay_ms} ms late, ${lines[0].connections} connections:`);
  console.log(["--aws-concurrency", ...fields].join(" | "));
  for (const conc of [...new Set(lines.map((l) => l.aws_concurrency))]) {
    const mine = lines.filter((l) => l.aws_concurrency === conc);
    console.log([conc, ...fields.map((f) => median(mine.map((l) => l[f])))].join(" | "));
  }
'
