# Sourced by the bench scripts that start background processes (the AWS
# peers, the counting proxy, imgsvc): a work directory, and the processes
# started, stopped at exit with the directory removed.
WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

# Starts a node helper in the background and waits for its JSON line.
start_json_helper() {  # name command... -> PIDS += pid; $WORK/name.json
  local name=$1
  shift
  "$@" >"$WORK/$name.json" 2>"$WORK/$name.err" &
  PIDS+=($!)
  for _ in $(seq 100); do
    [ -s "$WORK/$name.json" ] && return 0
    sleep 0.1
  done
  echo "$name did not start:" >&2
  cat "$WORK/$name.err" >&2
  exit 1
}
field() {  # name key -> value from $WORK/name.json
  node -p "JSON.parse(require('fs').readFileSync('$WORK/$1.json', 'utf8')).$2"
}
