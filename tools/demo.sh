#!/usr/bin/env bash
# `make demo`: the demo and the dashboard, served by a real leader, with a real helper aggregator
# beside it — two `feedloop serve` processes, two SQLite files under data/ — and one secure round
# always open. A person alone sees versions appear: the round publishes once 2 devices contributed,
# or after 30 s with at least 1 (two tabs share one IndexedDB and count as one device). The demo
# page pins the helper's fingerprint from its URL (a real site pins it in its code).
#
#   tools/demo.sh BIN ADDR PORT DEPLOYMENT_KEY ADMIN_KEY
set -euo pipefail
bin="$1" addr="$2" port="$3" deployment_key="$4" admin_key="$5"
helper_port=$((port + 1))
leader_token="feedloop-demo-leader-token"
mkdir -p data

"$bin" serve --role helper --addr "$addr:$helper_port" --database sqlite://data/demo-helper.db \
    --leader-token "$leader_token" --helper-noise-multiplier 4 --helper-min-reports 1 &
helper=$!
trap 'kill "$helper" 2>/dev/null || true' EXIT
for _ in $(seq 100); do
    # python3's urllib, not curl: nothing beyond what `make demo` already needs.
    info="$(python3 -c 'import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=2).read().decode())' \
        "http://$addr:$helper_port/v1/helper" 2>/dev/null)" && break
    sleep 0.1
done
fingerprint="$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["fingerprint"])' "${info:?the helper did not start}")"

echo "feedloop helper:    http://$addr:$helper_port/v1/helper ($fingerprint)"
echo "feedloop demo:      http://$addr:$port/?helper=$fingerprint&minBatch=1"
echo "feedloop dashboard: http://$addr:$port/dashboard.html (admin key: $admin_key)"
"$bin" serve --addr "$addr:$port" --database sqlite://data/demo.db --static-dir www/dist \
    --deployment-key "demo=$deployment_key" --admin-key "$admin_key" --server-lr 0.1 \
    --helper-url "http://$addr:$helper_port" --helper-token "$leader_token" \
    --auto-round '{"clipNorm":1,"granularity":0.001,"noiseStddev":4,"minCohort":1,"targetCount":2,"durationSeconds":30,"aggregation":"secure"}'
