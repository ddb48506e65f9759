#!/usr/bin/env bash
# Property-based HTTP fuzzing of the real server over its generated OpenAPI document
# (schemathesis, pinned in tools/requirements-test.txt): every operation gets generated valid and
# invalid requests — with the admin key, with a client token, and without credentials — and every
# answer is checked: no server error, a documented status, content type and schema, valid data
# accepted, invalid data refused.
#
#   server/tests/fuzz-openapi.sh [path/to/feedloop] [max examples per operation, default 25]
#
# Starts `feedloop serve` on a throwaway SQLite database on a free loopback port, and stops it
# and deletes the database on exit (pass or fail).
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
bin="${1:-${CARGO_TARGET_DIR:-$repo_root/target}/debug/feedloop}"
examples="${2:-25}"
st="$repo_root/.venv/bin/schemathesis"
[[ -x "$bin" ]] || { echo "fuzz-openapi.sh: $bin is missing (cargo build -p feedloop-cli)" >&2; exit 1; }
[[ -x "$st" ]] || { echo "fuzz-openapi.sh: $st is missing (make setup-python)" >&2; exit 1; }

site_key="site-key-0123456789abcdef"
admin_key="admin-key-0123456789abcdef"
workdir="$(mktemp -d /tmp/feedloop-fuzz.XXXXXX)"
port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
base="http://127.0.0.1:$port"

cleanup() {
    [[ -n "${server_pid:-}" ]] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
    [[ -n "${helper_pid:-}" ]] && kill "$helper_pid" 2>/dev/null && wait "$helper_pid" 2>/dev/null
    rm -rf "$workdir"
}
trap cleanup EXIT

# Rate limits off: the fuzzer sends thousands of requests from one address.
"$bin" serve --addr "127.0.0.1:$port" --database "sqlite://$workdir/feedloop.db" \
    --deployment-key "site=$site_key" --admin-key "$admin_key" \
    --auto-round '{"clipNorm":1,"granularity":0.01,"noiseStddev":4,"minCohort":1000,"durationSeconds":3600}' \
    --register-rate-per-minute 0 --admin-rate-per-minute 0 --log warn 2>"$workdir/server.log" &
server_pid=$!
# python3's urllib, not curl: nothing beyond what `make test` already needs.
healthy() { python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' "$base/healthz" 2>/dev/null; }
for _ in $(seq 1 100); do
    healthy && break
    sleep 0.1
done
healthy || { cat "$workdir/server.log" >&2; exit 1; }

token="$(python3 - "$base" "$site_key" <<'PY'
import json, sys, urllib.request
request = urllib.request.Request(sys.argv[1] + "/v1/clients/register", method="POST",
                                 headers={"x-feedloop-deployment-key": sys.argv[2]})
print(json.load(urllib.request.urlopen(request, timeout=10))["token"])
PY
)"

# One worker: hypothesis parses lambda sources with `ast` on each worker thread, and CPython 3.11's
# parser is not safe for that ("AST constructor recursion depth mismatch", seen once in CI).
run() {
    local who="$1"; shift
    echo "fuzz-openapi.sh: $who" >&2
    "$st" --config-file "$repo_root/server/tests/schemathesis.toml" run "$base/openapi.json" --max-examples "$examples" \
        --generation-deterministic --no-color --seed 1 \
        --workers 1 --request-timeout 30 "$@"
}
run "as an admin" -H "Authorization: Bearer $admin_key" -H "x-feedloop-deployment-key: $site_key"
run "as a client" -H "Authorization: Bearer $token" -H "x-feedloop-deployment-key: $site_key"
run "without credentials"

# The helper aggregator: its own process and database, fuzzed as its leader and without a token.
leader_token="leader-token-0123456789abcdef"
helper_port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
"$bin" serve --role helper --addr "127.0.0.1:$helper_port" --database "sqlite://$workdir/helper.db" \
    --leader-token "$leader_token" --admin-rate-per-minute 0 --log warn 2>"$workdir/helper.log" &
helper_pid=$!
base="http://127.0.0.1:$helper_port"
for _ in $(seq 1 100); do
    healthy && break
    sleep 0.1
done
healthy || { cat "$workdir/helper.log" >&2; exit 1; }
run "the helper, as its leader" -H "Authorization: Bearer $leader_token"
run "the helper, without credentials"
kill "$helper_pid" 2>/dev/null && wait "$helper_pid" 2>/dev/null || true
helper_pid=""
cat "$workdir/helper.log" >> "$workdir/server.log"

if grep -q "panicked" "$workdir/server.log"; then
    echo "fuzz-openapi.sh: a handler panicked:" >&2
    grep -A3 panicked "$workdir/server.log" >&2
    exit 1
fi
echo "fuzz-openapi.sh: no failures" >&2
