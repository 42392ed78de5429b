#!/usr/bin/env bash
# GET /api/v1/images/{id} on the AWS backend, against the local peers
# (tests/support/local_aws.mjs: dynalite, s3rver, the Secrets Manager
# stand-in), in two parts:
#  (a) AWS calls and new connections per GET at steady state, counted by a
#      TCP proxy (bench/count_proxy.mjs) between imgsvc and each peer, at 4
#      and at [connections] concurrent clients;
#  (b) wrk req/s, p50, p99 of that GET on the AWS backend (straight to the
#      emulators, no proxy, no signature-checking front) beside the embedded
#      backend serving the same image and beside dynalite alone answering the
#      GetItem the GET makes; rounds alternate the three, medians reported,
#      with the CPU time imgsvc and the peers' node process spent per request.
# Prints JSON lines, then a summary. imgsvc's IMGSVC_* settings pass through
# (e.g. IMGSVC_WORKERS=16). Figures: docs/benchmarks.md.
# Usage: bench/get_aws.sh [connections=64] [seconds=10] [rounds=3]
set -euo pipefail
cd "$(dirname "$0")/.."
CONNS=${1:-64}
SECS=${2:-10}
ROUNDS=${3:-3}
scripts/install-deps >/dev/null

BUILD_DIR=${BUILD_DIR:-build-release}
BUILD_TYPE=${BUILD_TYPE:-Release}
BUILD_DIR=$BUILD_DIR BUILD_TYPE=$BUILD_TYPE TARGET=imgsvc scripts/build >/dev/null
BIN=$BUILD_DIR/src/app/imgsvc

source bench/helpers.sh
wait_healthy() {  # port
  for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$1/health" >/dev/null && return 0
    sleep 0.1
  done
  echo "imgsvc on port $1 did not start" >&2
  exit 1
}

start_json_helper peers node --openssl-legacy-provider tests/support/local_aws.mjs
PEERS_PID=${PIDS[-1]}
export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test-secret AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true
BUCKET=bench-images
TABLE=BenchImages
SECRET=bench_api_token
TOKEN=bench-token-0123456789abcdef
KEY="alice:$TOKEN"
STORE_FLAGS=(--bucket "$BUCKET" --table "$TABLE" --token-secret "$SECRET")
# Provisioned through the signature-checking fronts, as a deployment would be.
AWS_ENDPOINT_URL_S3=$(field peers s3) AWS_ENDPOINT_URL_DYNAMODB=$(field peers dynamodb) \
  AWS_ENDPOINT_URL_SECRETS_MANAGER=$(field peers secretsmanager) \
  "$BIN" init "${STORE_FLAGS[@]}" --api-token "$TOKEN" >"$WORK/init.log"

start_aws_imgsvc() {  # port s3 dynamodb secretsmanager (base URLs) -> PIDS += pid
  AWS_ENDPOINT_URL_S3=$2 AWS_ENDPOINT_URL_DYNAMODB=$3 AWS_ENDPOINT_URL_SECRETS_MANAGER=$4 \
    "$BIN" serve --storage aws "${STORE_FLAGS[@]}" --port "$1" --log-level info >"$WORK/imgsvc-$1.log" 2>&1 &
  PIDS+=($!)
  wait_healthy "$1"
}

# A 64x64 PNG header and random bytes (the service never decodes pixels).
printf '\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x40\x00\x00\x00\x40\x08\x06\x00\x00\x00\xaa\x69\x71\xde' >"$WORK/img.png"
head -c 4096 /dev/urandom >>"$WORK/img.png"
upload() {  # port -> image id
  curl -sf -H "x-api-key: $KEY" -F user_id=alice -F visibility=public -F files=@"$WORK/img.png" \
    "http://127.0.0.1:$1/api/v1/images" | sed -n 's/.*"image_id":"\([^"]*\)".*/\1/p'
}

run_wrk() {  # scenario connections seconds wrk-arguments... -> JSON line
  local name=$1 conns=$2 secs=$3
  shift 3
  local out
  out=$(wrk -t2 -c"$conns" -d"${secs}s" --latency "$@")
  local requests rps p50 p99 errors
  requests=$(awk '/requests in/ {print $1}' <<<"$out")
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p50=$(awk '$1=="50%" {print $2}' <<<"$out")
  p99=$(awk '$1=="99%" {print $2}' <<<"$out")
  errors=$(awk '/Non-2xx|Socket errors/ {print}' <<<"$out" | tr '\n' ' ')
  printf '{"scenario":"%s","connections":%s,"seconds":%s,"requests":%s,"rps":%s,"p50":"%s","p99":"%s","errors":"%s"}\n' \
    "$name" "$conns" "$secs" "$requests" "$rps" "$p50" "$p99" "$errors"
}

# (a) Calls and connections per GET ------------------------------------------
start_json_helper proxy node bench/count_proxy.mjs \
  "dynamodb=$(field peers dynamodb_direct)" "s3=$(field peers s3_direct)" \
  "secretsmanager=$(field peers secretsmanager)"
COUNTED_PORT=18090
start_aws_imgsvc $COUNTED_PORT "$(field proxy s3)" "$(field proxy dynamodb)" "$(field proxy secretsmanager)"
COUNTED_PID=${PIDS[-1]}
ID=$(upload $COUNTED_PORT)
[ -n "$ID" ] || { echo "upload failed" >&2; cat "$WORK/imgsvc-$COUNTED_PORT.log" >&2; exit 1; }
GET_PATH="/api/v1/images/$ID"
curl -sf -H "x-api-key: $KEY" "http://127.0.0.1:$COUNTED_PORT$GET_PATH" >/dev/null

logged_gets() {  # status-pattern -> the GETs of the image imgsvc has logged with that status
  grep -c "\"path\":\"$GET_PATH\",\"status\":$1" "$WORK/imgsvc-$COUNTED_PORT.log" || true
}
CALL_LINES=()
for conns in 4 "$CONNS"; do
  # Warm-up: the connection pool fills, the secret is fetched and cached.
  run_wrk warmup "$conns" 2 -H "x-api-key: $KEY" "http://127.0.0.1:$COUNTED_PORT$GET_PATH" >/dev/null
  sleep 1  # let the last answers reach the proxy and the log
  BEFORE=$(curl -sf "$(field proxy stats)")
  GETS_BEFORE=$(logged_gets 200)
  FAILED_BEFORE=$(logged_gets '[^2]')
  run_wrk counted "$conns" 3 -H "x-api-key: $KEY" "http://127.0.0.1:$COUNTED_PORT$GET_PATH" >/dev/null
  sleep 1
  AFTER=$(curl -sf "$(field proxy stats)")
  GETS=$(($(logged_gets 200) - GETS_BEFORE))
  FAILED=$(($(logged_gets '[^2]') - FAILED_BEFORE))
  LINE=$(node -e '
    const [before, after, gets, failed, conns] = [JSON.parse(process.argv[1]), JSON.parse(process.argv[2]),
                                                  Number(process.argv[3]), Number(process.argv[4]),
                                                  Number(process.argv[5])];
    const delta = (service, field) => after[service][field] - before[service][field];
    const op = (service, name) => (after[service].operations[name] ?? 0) - (before[service].operations[name] ?? 0);
    const round = (value) => Math.round(value * 1000) / 1000;
    // Per successful GET; failed ones (none expected) are shown beside.
    const line = { measurement: "calls_per_get", client_connections: conns, gets, failed_gets: failed };
    for (const service of ["dynamodb", "s3", "secretsmanager"]) {
      line[`${service}_calls_per_get`] = round(delta(service, "requests") / gets);
      line[`${service}_new_connections_per_1000_gets`] = round(1000 * delta(service, "connections") / gets);
    }
    line.dynamodb_getitem_per_get = round(op("dynamodb", "GetItem") / gets);
    line.unframed_connections = ["dynamodb", "s3", "secretsmanager"].reduce((n, s) => n + delta(s, "unframed"), 0);
    console.log(JSON.stringify(line));
  ' "$BEFORE" "$AFTER" "$GETS" "$FAILED" "$conns")
  echo "$LINE"
  CALL_LINES+=("$LINE")
done
kill "$COUNTED_PID"  # the proxy idles from here on

# (b) Throughput ---------------------------------------------------------------
AWS_PORT=18091
EMBEDDED_PORT=18092
start_aws_imgsvc $AWS_PORT "$(field peers s3_direct)" "$(field peers dynamodb_direct)" "$(field peers secretsmanager)"
AWS_PID=${PIDS[-1]}
IMGSVC_API_TOKEN=$TOKEN "$BIN" serve --port $EMBEDDED_PORT --data-dir "$WORK/data" --log-level info \
  >"$WORK/imgsvc-embedded.log" 2>&1 &
PIDS+=($!)
EMBEDDED_PID=$!
wait_healthy $EMBEDDED_PORT
EMBEDDED_ID=$(upload $EMBEDDED_PORT)
AWS_URL="http://127.0.0.1:$AWS_PORT$GET_PATH"
EMBEDDED_URL="http://127.0.0.1:$EMBEDDED_PORT/api/v1/images/$EMBEDDED_ID"
curl -sf -H "x-api-key: $KEY" "$AWS_URL" >/dev/null
curl -sf -H "x-api-key: $KEY" "$EMBEDDED_URL" >/dev/null

# dynalite alone: the GetItem body imgsvc sends for this GET. dynalite checks
# only the shape of the Authorization header, not the signature.
DYNAMODB_URL=$(field peers dynamodb_direct)
GETITEM_BODY="{\"TableName\":\"$TABLE\",\"Key\":{\"image_id\":{\"S\":\"$ID\"}},\"ConsistentRead\":true}"
AMZ_DATE=$(date -u +%Y%m%dT%H%M%SZ)
AUTHORIZATION="AWS4-HMAC-SHA256 Credential=test/${AMZ_DATE:0:8}/us-east-1/dynamodb/aws4_request, SignedHeaders=content-type;host;x-amz-date;x-amz-target, Signature=$(printf '0%.0s' $(seq 64))"
cat >"$WORK/getitem.lua" <<EOF
wrk.method = "POST"
wrk.body = '$GETITEM_BODY'
wrk.headers["Content-Type"] = "application/x-amz-json-1.0"
wrk.headers["X-Amz-Target"] = "DynamoDB_20120810.GetItem"
wrk.headers["X-Amz-Date"] = "$AMZ_DATE"
wrk.headers["Authorization"] = "$AUTHORIZATION"
EOF
curl -sf -X POST -H "Content-Type: application/x-amz-json-1.0" -H "X-Amz-Target: DynamoDB_20120810.GetItem" \
  -H "X-Amz-Date: $AMZ_DATE" -H "Authorization: $AUTHORIZATION" -d "$GETITEM_BODY" "$DYNAMODB_URL" |
  grep -q '"Item"' || { echo "dynalite GetItem did not return the item" >&2; exit 1; }

RPS_EMBEDDED=()
RPS_AWS=()
RPS_DYNALITE=()
RATIOS_TO_DYNALITE=()
RATIOS_TO_EMBEDDED=()
LINES=()
rps_of() { sed -n 's/.*"rps":\([0-9.]*\).*/\1/p' <<<"$1"; }
# CPU time of a process (user + system), in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
TICKS_PER_SECOND=$(getconf CLK_TCK)
# The CPU a process used since `ticks`, as JSON fields: percent of one core
# over the run (2 cores: 200 at most) and microseconds per request answered.
cpu_fields() {  # prefix pid ticks requests
  awk -v p="$1" -v t="$(($(cpu_ticks "$2") - $3))" -v hz="$TICKS_PER_SECOND" -v s="$SECS" -v n="$4" \
    'BEGIN {printf "\"%s_cpu_pct\":%.0f,\"%s_cpu_us_per_request\":%.1f", p, 100 * t / hz / s, p, 1e6 * t / hz / n}'
}
for round in $(seq "$ROUNDS"); do
  for scenario in embedded aws dynalite_getitem; do
    [ $scenario = embedded ] && SERVICE_PID=$EMBEDDED_PID || SERVICE_PID=$AWS_PID
    SERVICE_TICKS=$(cpu_ticks "$SERVICE_PID")
    PEERS_TICKS=$(cpu_ticks "$PEERS_PID")
    case $scenario in
      embedded) LINE=$(run_wrk imgsvc_embedded_get "$CONNS" "$SECS" -H "x-api-key: $KEY" "$EMBEDDED_URL") ;;
      aws) LINE=$(run_wrk imgsvc_aws_get "$CONNS" "$SECS" -H "x-api-key: $KEY" "$AWS_URL") ;;
      dynalite_getitem) LINE=$(run_wrk dynalite_getitem "$CONNS" "$SECS" -s "$WORK/getitem.lua" "$DYNAMODB_URL") ;;
    esac
    # imgsvc: the one serving this scenario (idle for dynalite alone); peers:
    # the node process running dynalite and s3rver.
    REQUESTS=$(sed -n 's/.*"requests":\([0-9]*\).*/\1/p' <<<"$LINE")
    LINE="${LINE%\}},$(cpu_fields imgsvc "$SERVICE_PID" "$SERVICE_TICKS" "$REQUESTS"),$(cpu_fields peers "$PEERS_PID" "$PEERS_TICKS" "$REQUESTS"),\"round\":$round}"
    echo "$LINE"
    LINES+=("$LINE")
    case $scenario in
      embedded) RPS_EMBEDDED+=("$(rps_of "$LINE")") ;;
      aws) RPS_AWS+=("$(rps_of "$LINE")") ;;
      dynalite_getitem) RPS_DYNALITE+=("$(rps_of "$LINE")") ;;
    esac
  done
  # Same-round ratios: a stretch of CPU steal on a shared machine hits all three.
  RATIOS_TO_DYNALITE+=("$(awk -v a="${RPS_AWS[-1]}" -v d="${RPS_DYNALITE[-1]}" 'BEGIN {printf "%.3f", a/d}')")
  RATIOS_TO_EMBEDDED+=("$(awk -v a="${RPS_AWS[-1]}" -v e="${RPS_EMBEDDED[-1]}" 'BEGIN {printf "%.3f", a/e}')")
done
median() { printf '%s\n' "$@" | sort -g | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
median_field() {  # scenario field -> median over the rounds (latencies as wrk prints them)
  printf '%s\n' "${LINES[@]}" | grep "\"scenario\":\"$1\"" | sed -n "s/.*\"$2\":\"\([^\"]*\)\".*/\1/p" |
    awk '{v=$1; u=v; sub(/[0-9.]+/, "", u); sub(/[a-z]+$/, "", v);
          f = (u=="us") ? 0.001 : (u=="s") ? 1000 : 1; print v*f}' |
    sort -g | awk '{v[NR]=$1} END {printf "%.2f ms", v[int((NR+1)/2)]}'
}
median_number() {  # scenario field -> median over the rounds
  median $(printf '%s\n' "${LINES[@]}" | grep "\"scenario\":\"$1\"" | sed -n "s/.*\"$2\":\([0-9.]*\).*/\1/p")
}
RSS=$(awk '/VmHWM/ {print $2}' "/proc/$AWS_PID/status")
printf '{"summary":true,"connections":%s,"seconds":%s,"rounds":%s,"median_rps_embedded":%s,"median_rps_aws":%s,"median_rps_dynalite_getitem":%s,"median_ratio_aws_to_dynalite_getitem":%s,"round_ratios_aws_to_dynalite_getitem":"%s","median_ratio_aws_to_embedded":%s,"round_ratios_aws_to_embedded":"%s","aws_imgsvc_peak_rss_kib":%s}\n' \
  "$CONNS" "$SECS" "$ROUNDS" "$(median "${RPS_EMBEDDED[@]}")" "$(median "${RPS_AWS[@]}")" \
  "$(median "${RPS_DYNALITE[@]}")" "$(median "${RATIOS_TO_DYNALITE[@]}")" "${RATIOS_TO_DYNALITE[*]}" \
  "$(median "${RATIOS_TO_EMBEDDED[@]}")" "${RATIOS_TO_EMBEDDED[*]}" "$RSS"

echo
echo "GET /api/v1/images/{id}: $CONNS connections, ${SECS}s x $ROUNDS rounds (medians)"
printf '%-22s %10s %10s %10s %18s %18s\n' scenario req/s p50 p99 "imgsvc CPU us/req" "peers CPU us/req"
for pair in imgsvc_embedded_get:RPS_EMBEDDED imgsvc_aws_get:RPS_AWS dynalite_getitem:RPS_DYNALITE; do
  name=${pair%%:*}
  array="${pair#*:}[@]"
  printf '%-22s %10s %10s %10s %18s %18s\n' "$name" "$(median "${!array}")" "$(median_field "$name" p50)" \
    "$(median_field "$name" p99)" "$(median_number "$name" imgsvc_cpu_us_per_request)" \
    "$(median_number "$name" peers_cpu_us_per_request)"
done
echo
echo "AWS calls per GET at steady state (counting proxy)"
printf '%-8s %9s %7s %9s %9s %9s %24s\n' clients gets failed dynamodb s3 secrets "new conns / 1000 GETs"
for line in "${CALL_LINES[@]}"; do
  node -e '
    const l = JSON.parse(process.argv[1]);
    const conns = l.dynamodb_new_connections_per_1000_gets + l.s3_new_connections_per_1000_gets +
                  l.secretsmanager_new_connections_per_1000_gets;
    console.log([String(l.client_connections).padEnd(8), String(l.gets).padStart(9), String(l.failed_gets).padStart(7),
                 String(l.dynamodb_calls_per_get).padStart(9), String(l.s3_calls_per_get).padStart(9),
                 String(l.secretsmanager_calls_per_get).padStart(9), String(conns).padStart(24)].join(" "));
  ' "$line"
done
