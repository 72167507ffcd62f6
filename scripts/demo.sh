#!/usr/bin/env bash
# Runs the whole chain on loopback and shows what each kind of request gets:
#
#   curl → Envoy :8080 → usage-authz :9001 → usage-check-stub :9100
#                      → demo-upstream :8081 (echoes what reached it)
#
# Usage: scripts/demo.sh [--keep]
#   --keep  leave everything running after the requests, until Ctrl-C.
#
# Keys and their outcomes are in demo/keys.toml; usage-authz settings are in
# demo/usage-authz.toml. Every process listens on 127.0.0.1 only.
set -euo pipefail
cd "$(dirname "$0")/.."

keep=false
case "${1:-}" in
    "") ;;
    --keep) keep=true ;;
    *)
        echo "usage: scripts/demo.sh [--keep]" >&2
        exit 64
        ;;
esac

ENVOY_URL=http://127.0.0.1:8080
ENVOY_ADMIN=http://127.0.0.1:9901
# Ports from envoy/envoy.yaml, demo/usage-authz.toml and the stub's flag.
PORTS=(8080 9901 9001 9002 9003 8081 9100)

for port in "${PORTS[@]}"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        echo "error: port $port on 127.0.0.1 is already in use; stop the process listening there (see: ss -ltnp 'sport = :$port') and run again" >&2
        exit 1
    fi
done

echo "== building the binaries (debug)"
cargo build --bins --quiet
ENVOY_BIN=$(scripts/install-envoy.sh)

LOG_DIR=$(mktemp -d "${TMPDIR:-/tmp}/usage-authz-demo.XXXXXX")
PIDS=()

stop_all() {
    # Stop only the processes this script started, newest first.
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
        kill "${PIDS[i]}" 2>/dev/null || true
    done
    wait 2>/dev/null || true
    echo "== stopped; logs are in $LOG_DIR"
}
trap stop_all EXIT
trap 'exit 130' INT TERM

start() {
    local name=$1
    shift
    "$@" >"$LOG_DIR/$name.log" 2>&1 &
    PIDS+=("$!")
}

# Waits until `check` succeeds, failing with the process log after 30 s.
wait_until() {
    local name=$1
    shift
    for _ in $(seq 300); do
        if "$@" >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.1
    done
    echo "error: $name did not become ready within 30 s; its log follows" >&2
    cat "$LOG_DIR/$name.log" >&2
    exit 1
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
envoy_live() { [[ $(curl -s --noproxy '*' "$ENVOY_ADMIN/ready") == LIVE ]]; }

echo "== starting the stack (logs in $LOG_DIR)"
start usage-check-stub target/debug/usage-check-stub --addr 127.0.0.1:9100 --keys demo/keys.toml
start demo-upstream target/debug/demo-upstream --addr 127.0.0.1:8081
# The demo config must win over any USAGE_AUTHZ_* variable of the caller's shell.
start usage-authz env $(env | grep -o '^USAGE_AUTHZ_[A-Za-z0-9_]*' | sed 's/^/-u /') \
    RUST_LOG="${RUST_LOG:-info}" target/debug/usage-authz --config demo/usage-authz.toml
start envoy "$ENVOY_BIN" -c envoy/envoy.yaml --disable-hot-restart --log-level warning \
    --file-flush-interval-msec 500

wait_until usage-check-stub port_open 9100
wait_until demo-upstream port_open 8081
wait_until usage-authz port_open 9001
wait_until envoy envoy_live

# Sends one request through Envoy and prints the status, the x-workspace-id
# response header, and either the JSON error body or, for a request that
# reached the upstream, the x-workspace-id values the upstream received.
# The request itself is described by $1 and never printed, since it may
# carry a key.
show() {
    local title=$1
    shift
    local body headers status
    body=$(mktemp "$LOG_DIR/body.XXXXXX")
    headers=$(mktemp "$LOG_DIR/headers.XXXXXX")
    status=$(curl -s --noproxy '*' -o "$body" -D "$headers" -w '%{http_code}' "$@")

    echo
    echo "-- $title"
    echo "   HTTP $status"
    grep -i '^x-workspace-id:' "$headers" | tr -d '\r' | sed 's/^/   response header: /' || true
    python3 - "$body" "$status" <<'PY'
import json, sys
path, status = sys.argv[1], sys.argv[2]
text = open(path, encoding="utf-8", errors="replace").read()
try:
    body = json.loads(text)
except ValueError:
    print("   body: " + text[:200])
    sys.exit(0)
if status == "200" and "headers" in body:
    seen = body["headers"].get("x-workspace-id")
    print(f"   upstream got {body['method']} {body['path']} with x-workspace-id: {', '.join(seen) if seen else '(none)'}")
else:
    print("   body: " + json.dumps(body))
PY
}

echo
echo "== requests through Envoy at $ENVOY_URL"
show "allowed key in the api_key query parameter" \
    "$ENVOY_URL/predict?api_key=demo-allowed-key"
show "allowed key as Authorization: Bearer, with a spoofed x-workspace-id: evil" \
    -H "Authorization: Bearer demo-allowed-key" -H "x-workspace-id: evil" "$ENVOY_URL/predict"
show "allowed key in a JSON body" \
    -H "content-type: application/json" -d '{"api_key": "demo-allowed-key", "inputs": "hi"}' "$ENVOY_URL/predict"
show "key the usage-check API rejects (401)" \
    "$ENVOY_URL/predict?api_key=demo-revoked-key"
show "key that is not in demo/keys.toml (401)" \
    "$ENVOY_URL/predict?api_key=demo-unknown-key"
show "key whose workspace has no credits (402)" \
    "$ENVOY_URL/predict?api_key=demo-no-credits-key"
show "no key at all (401, no usage-check call)" \
    "$ENVOY_URL/predict"
show "skipped route /healthz with a spoofed x-workspace-id: evil (header removed)" \
    -H "x-workspace-id: evil" "$ENVOY_URL/healthz"
show "key whose usage check fails with 500 (503, not cached)" \
    "$ENVOY_URL/predict?api_key=demo-flaky-backend-key"

if ! $keep; then
    echo
    exit 0
fi

cat <<EOF

== the stack keeps running; press Ctrl-C to stop it
Send requests through Envoy, with a key from demo/keys.toml:
  curl -i '$ENVOY_URL/predict?api_key=<key>'
  curl -i -H 'Authorization: Bearer <key>' $ENVOY_URL/predict
Edit demo/keys.toml (e.g. set the no_credits key to status = "allow"); the
stub reads it on every request, and usage-authz asks again once its cached
verdict expires (deny_ttl_secs = 5, ok_ttl_secs = 10 in demo/usage-authz.toml).
Logs: $LOG_DIR   Envoy admin: $ENVOY_ADMIN
EOF
wait
