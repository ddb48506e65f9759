#!/usr/bin/env bash
# Ingest under load, local DP against secure aggregation, in one run of the same binary:
# `feedloop loadtest` against a leader on SQLite with automatic local rounds, then against a
# leader and its helper (two processes, two SQLite files) with automatic secure rounds, where
# every upload is a sealed Prio3 report both aggregators verify before it is acknowledged.
# Prints one JSON object per mode (BENCHMARKS.md, "Server under load").
#
#   tools/bench-loadtest.sh BIN [SECONDS] [CLIENTS]
#   MODES="local secure" (the default) or one of them; HELPER_FLAGS: more `serve` flags for the
#   helper (e.g. `--sqlite-synchronous normal`, to see what its per-report commit costs).
#   (BIN: `cargo build --profile release-native -p feedloop-cli` → target/release-native/feedloop)
set -euo pipefail
bin="$1" seconds="${2:-60}" clients="${3:-200}"
dir="$(mktemp -d)"
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; mkdir -p /tmp/bench-loadtest-logs; cp "$dir"/*.log /tmp/bench-loadtest-logs/; rm -rf "$dir"' EXIT
deployment_key="bench-deployment-key-0123"
admin_key="bench-admin-key-0123456"
leader_token="bench-leader-token-0123"

wait_for() {
    for _ in $(seq 200); do
        python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' "$1" \
            2>/dev/null && return 0
        sleep 0.1
    done
    echo "$1 did not answer" >&2
    return 1
}

run() { # mode leader-port [extra serve flags...]
    local mode="$1" port="$2"
    shift 2
    "$bin" serve --addr "127.0.0.1:$port" --database "sqlite://$dir/$mode-leader.db" \
        --deployment-key "bench=$deployment_key" --admin-key "$admin_key" \
        --register-rate-per-minute 0 "$@" >"$dir/$mode-leader.log" 2>&1 &
    local leader=$!
    pids+=("$leader")
    wait_for "http://127.0.0.1:$port/healthz"
    "$bin" loadtest --url "http://127.0.0.1:$port" --deployment-key "$deployment_key" \
        --clients "$clients" --seconds "$seconds" --ceiling-seconds 5 \
        --verify-database "sqlite://$dir/$mode-leader.db"
    kill "$leader"
    wait "$leader" 2>/dev/null || true
}

round='"clipNorm":1,"granularity":0.01,"noiseStddev":4,"minCohort":100,"targetCount":5000'
modes="${MODES:-local secure}"
if [[ " $modes " == *" local "* ]]; then
    run local 18301 --auto-round "{$round}"
fi
[[ " $modes " == *" secure "* ]] || exit 0

"$bin" serve --role helper --addr 127.0.0.1:18302 --database "sqlite://$dir/helper.db" \
    --leader-token "$leader_token" --helper-noise-multiplier 2 --helper-min-reports 100 \
    ${HELPER_FLAGS:-} >"$dir/helper.log" 2>&1 &
pids+=("$!")
wait_for "http://127.0.0.1:18302/v1/helper"
run secure 18303 --helper-url http://127.0.0.1:18302 --helper-token "$leader_token" \
    --auto-round "{$round,\"aggregation\":\"secure\"}"
