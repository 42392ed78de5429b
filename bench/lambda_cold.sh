#!/usr/bin/env bash
# imgsvc as an AWS Lambda function (issue 4): cold start of the packaged
# bootstrap (build-release/function/bootstrap) from exec to its first
# response to a fake Runtime API, for GET /health and for
# GET /api/v1/images/{id}, each beside a static hello world's exec-to-exit
# time in the same round; RSS after the first invocation; warm invocation
# durations; the zip's size. The driver is bench/lambda_cold.cc (how it
# measures is described there).
#
# The function runs on the local AWS peers (tests/support/local_aws.mjs),
# provisioned with `imgsvc init` through the signature-checking fronts, then
# reached as the benchmark of the GET does (bench/get_aws.sh): S3 and
# DynamoDB directly at the emulators, and Secrets Manager at its stand-in's
# port that skips the signature check, so that the JavaScript checking
# signatures (about 1 ms a call) does not dominate.
# The function's environment is only what Lambda would set for it here.
# Prints JSON lines, then a summary. Figures: docs/benchmarks.md.
# Usage: bench/lambda_cold.sh [rounds=20] [warm invocations per cold start=200]
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-20}
WARM=${2:-200}
scripts/install-deps >/dev/null

WORK=$(mktemp -d)
PEERS_PID=
cleanup() {
  if [ -n "$PEERS_PID" ]; then
    kill "$PEERS_PID" 2>/dev/null || true
    wait "$PEERS_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

BUILD_DIR=${BUILD_DIR:-build-release}
BUILD_TYPE=${BUILD_TYPE:-Release}
# The driver depends on function_zip and hello_static. bench/run builds it
# before its suite starts (IMGSVC_BENCH_BUILT=1), so that a source edited
# while the suite runs cannot put another build in the middle of its figures.
if [ "${IMGSVC_BENCH_BUILT:-}" != 1 ]; then
  BUILD_DIR=$BUILD_DIR BUILD_TYPE=$BUILD_TYPE TARGET=lambda_cold scripts/build >"$WORK/build.log" 2>&1 ||
    { cat "$WORK/build.log" >&2; exit 1; }
fi
BIN=$BUILD_DIR/src/app/imgsvc

node --openssl-legacy-provider tests/support/local_aws.mjs >"$WORK/peers.json" 2>"$WORK/peers.err" &
PEERS_PID=$!
for _ in $(seq 100); do
  [ -s "$WORK/peers.json" ] && break
  sleep 0.1
done
[ -s "$WORK/peers.json" ] || { echo "local AWS peers did not start:" >&2; cat "$WORK/peers.err" >&2; exit 1; }
field() {  # key -> value from the peers' JSON line
  node -p "JSON.parse(require('fs').readFileSync('$WORK/peers.json', 'utf8')).$1"
}

BUCKET=bench-lambda-images
TABLE=BenchLambdaImages
SECRET=bench_lambda_api_token
TOKEN=bench-token-0123456789abcdef
CREDENTIALS=(AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test-secret AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true)
env "${CREDENTIALS[@]}" AWS_ENDPOINT_URL_S3="$(field s3)" AWS_ENDPOINT_URL_DYNAMODB="$(field dynamodb)" \
  AWS_ENDPOINT_URL_SECRETS_MANAGER="$(field secretsmanager)" \
  "$BIN" init --bucket "$BUCKET" --table "$TABLE" --token-secret "$SECRET" --api-token "$TOKEN" >"$WORK/init.log"

# A clean environment, as Lambda gives its functions (PATH and TZ as there),
# plus the endpoints of the peers.
env -i PATH=/usr/local/bin:/usr/bin:/bin TZ=:UTC "${CREDENTIALS[@]}" \
  AWS_ENDPOINT_URL_S3="$(field s3_direct)" AWS_ENDPOINT_URL_DYNAMODB="$(field dynamodb_direct)" \
  AWS_ENDPOINT_URL_SECRETS_MANAGER="$(field secretsmanager_direct)" \
  IMGSVC_STORAGE=aws IMGSVC_BUCKET="$BUCKET" IMGSVC_TABLE="$TABLE" IMGSVC_TOKEN_SECRET="$SECRET" \
  "$BUILD_DIR/bench/lambda_cold" --bootstrap="${BOOTSTRAP:-$BUILD_DIR/function/bootstrap}" --hello="$BUILD_DIR/bench/hello_static" \
  --zip="$BUILD_DIR/function.zip" --api-key="alice:$TOKEN" --user=alice --rounds="$ROUNDS" --warm="$WARM" \
  --log="$WORK/function.log" || { echo "function log tail:" >&2; tail -20 "$WORK/function.log" >&2; exit 1; }
