#!/usr/bin/env bash
# Profiles usage-authz against the no-op authorizer with repeatable counts:
# callgrind instructions per Check call, and a DHAT heap profile of the
# verdict cache. perf's hardware counters are not available on every VM, so
# this uses valgrind, whose counts do not depend on machine load.
#
# Usage: bench/profile.sh [calls]      (default 20000 calls per case)
#
# Output: a table on stdout and the raw profiles in target/bench-profile/,
# readable with callgrind_annotate and DHAT's dh_view.html.
#
# NOTE: valgrind 3.19 does not emulate the SHA extensions, so under
# callgrind the sha2 crate falls back to its software SHA-256 (about 3,500
# instructions per key). Natively, on a CPU with sha_ni, sha2 takes the
# hardware path, which is far cheaper. Discount it in the usage-authz rows.
set -euo pipefail

cd "$(dirname "$0")/.."

calls="${1:-20000}"
out=target/bench-profile
port=19401
stub_port=19405
bench=target/release/usage-authz-bench
# Simulated caches: this host's L1 data cache and L3 (from
# /sys/devices/system/cpu/cpu0/cache), since valgrind otherwise sizes its
# last level from what the VM's CPUID reports.
cache_sim=(--cache-sim=yes --D1=49152,12,64 --LL=33554432,16,64)
mkdir -p "$out"

if ! command -v valgrind >/dev/null; then
    echo "bench/profile.sh: installing valgrind" >&2
    apt-get install -y valgrind
fi

cargo build --release -p usage-authz --bin usage-authz
cargo build --release -p usage-authz-bench

wait_for_port() {
    local tries
    for tries in $(seq 1 200); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    echo "bench/profile.sh: nothing listens on 127.0.0.1:$port after 20 s" >&2
    return 1
}

# Runs one case: SERVER (noop or usage-authz), KIND (hot, skip or
# random-pool), calls in flight, connections. Prints, per call: instructions
# of the whole process and inside the Check handler, and the simulated L1
# and last-level data-cache misses of the whole process.
run_case() {
    local server=$1 kind=$2 concurrency=$3 connections=$4
    local profile="$out/callgrind.$server.$kind.$concurrency"
    local fill=()
    if [[ "$kind" == random-pool ]]; then
        fill=(--fill)
    fi
    rm -f "$profile"*
    if [[ "$server" == noop ]]; then
        taskset -c 0 valgrind --tool=callgrind "${cache_sim[@]}" --callgrind-out-file="$profile" \
            "$bench" noop-server --addr "127.0.0.1:$port" >"$profile.log" 2>&1 &
    else
        env RUST_LOG=warn \
            USAGE_AUTHZ_SERVER__GRPC_ADDR="127.0.0.1:$port" \
            USAGE_AUTHZ_SERVER__METRICS_ADDR="127.0.0.1:$((port + 2))" \
            USAGE_AUTHZ_ADMIN__ADDR="127.0.0.1:$((port + 3))" \
            USAGE_AUTHZ_USAGE_CHECK__URL="http://127.0.0.1:$stub_port/serverless/usage-check" \
            taskset -c 0 valgrind --tool=callgrind "${cache_sim[@]}" --callgrind-out-file="$profile" \
            target/release/usage-authz >"$profile.log" 2>&1 &
    fi
    local pid=$!
    wait_for_port
    # Warm-up: connections, the hot key's usage check, the random keys' fill.
    taskset -c 1 "$bench" load --addr "127.0.0.1:$port" --kind "$kind" --keys 100000 "${fill[@]}" \
        --calls 2000 --concurrency "$concurrency" --connections "$connections" \
        --stub-addr "127.0.0.1:$stub_port" >/dev/null
    callgrind_control --zero "$pid" >/dev/null 2>&1
    taskset -c 1 "$bench" load --addr "127.0.0.1:$port" --kind "$kind" --keys 100000 \
        --calls "$calls" --concurrency "$concurrency" --connections "$connections" \
        --stub-addr "127.0.0.1:$stub_port" >/dev/null
    callgrind_control --dump "$pid" >/dev/null 2>&1
    sleep 1
    kill "$pid"
    wait "$pid" 2>/dev/null || true

    local dump="$profile.1"
    local handler
    handler=$(callgrind_annotate --inclusive=yes "$dump" \
        | awk '/Authorization>::check::\{\{closure\}\} \[/ && !found { gsub(",", "", $1); print $1; found = 1 }')
    # PROGRAM TOTALS lists Ir I1mr ILmr Dr D1mr DLmr Dw D1mw DLmw.
    callgrind_annotate "$dump" | awk -v calls="$calls" -v handler="${handler:-0}" \
        -v row="| $server | $kind | $concurrency | $connections" '
        /PROGRAM TOTALS/ {
            for (i = 1; i <= NF; i++) gsub(",", "", $i)
            printf "%s | %.0f | %.0f | %.1f | %.1f |\n", row, $1 / calls, handler / calls, ($5 + $8) / calls, ($6 + $9) / calls
        }'
}

echo "Per Check call, $calls calls per case (callgrind, simulated 48 KiB L1 data and 32 MiB last-level caches):"
echo
echo "| server | request | in flight | connections | instructions | in the Check handler | L1 data misses | last-level data misses |"
echo "|---|---|---:|---:|---:|---:|---:|---:|"
run_case noop hot 64 4
run_case usage-authz hot 64 4
run_case usage-authz random-pool 64 4
run_case usage-authz skip 64 4
run_case noop hot 1 1
run_case usage-authz hot 1 1

echo
echo "Heap of an in-process VerdictCache with 100,000 entries (DHAT):"
valgrind --tool=dhat --dhat-out-file="$out/dhat.cache.json" "$bench" cache-fill --entries 100000 2>/dev/null
python3 - "$out/dhat.cache.json" <<'EOF'
import json
import sys

# Allocation sites live at the heap's peak, per cache entry, labelled by the
# first frame that names moka or usage-authz. One-off allocations outside
# the cache (the benchmark's own list of digests) are left out.
ENTRIES = 100_000
profile = json.load(open(sys.argv[1]))
frames = profile["ftbl"]
rows = {}
for point in profile["pps"]:
    if not point.get("gb"):
        continue
    names = [frames[index] for index in point["fs"]]
    in_cache = any("moka" in name or "usage_authz::cache" in name for name in names)
    per_entry = point["gbk"] / ENTRIES >= 0.5
    if not in_cache and not per_entry:
        continue
    label = next(
        (name for name in names if "moka" in name or "usage_authz::" in name),
        next((name for name in names if "usage_authz" in name), names[0]),
    )
    label = label.split(": ", 1)[-1][:140]
    bytes_, blocks = rows.get(label, (0, 0))
    rows[label] = (bytes_ + point["gb"], blocks + point["gbk"])
print()
print("| bytes per entry | blocks per entry | allocated in |")
print("|---:|---:|---|")
for label, (bytes_, blocks) in sorted(rows.items(), key=lambda row: -row[1][0])[:12]:
    print(f"| {bytes_ / ENTRIES:.1f} | {blocks / ENTRIES:.2f} | `{label}` |")
EOF
