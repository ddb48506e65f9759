#!/usr/bin/env bash
# Runs the feedloop-server test suite against a real, throwaway PostgreSQL cluster on loopback.
#
#   server/tests/postgres.sh [extra test-binary args, e.g. a test name filter]
#
# Installs PostgreSQL with apt if initdb/pg_ctl are missing, initdb's a fresh cluster in a temp
# dir (as the `postgres` user when run as root), starts it on 127.0.0.1 on a free port with its
# socket in /tmp, creates a database, exports DATABASE_URL and FEEDLOOP_TEST_POSTGRES_URL, runs
# feedloop-server's test binaries (lib, api, crash), and stops and deletes the cluster on exit (pass
# or fail).
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"

find_pg_bin() {
    if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
        dirname "$(readlink -f "$(command -v initdb)")"
        return 0
    fi
    local d
    d="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
    if [[ -n "$d" && -x "$d/initdb" && -x "$d/pg_ctl" ]]; then
        echo "$d"
        return 0
    fi
    return 1
}

if ! pg_bin="$(find_pg_bin)"; then
    echo "postgres.sh: PostgreSQL not found; installing it with apt-get" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y postgresql >/dev/null || { apt-get update >/dev/null && apt-get install -y postgresql >/dev/null; }
    pg_bin="$(find_pg_bin)"
fi

# initdb refuses to run as root: use the postgres user then.
run_pg() { "$@"; }
if [[ "$(id -u)" == 0 ]]; then
    id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
    run_pg() { runuser -u postgres -- "$@"; }
fi

port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' 2>/dev/null || echo $((20000 + RANDOM % 20000)))"
workdir="$(mktemp -d /tmp/feedloop-pg.XXXXXX)"
chmod 755 "$workdir"
[[ "$(id -u)" == 0 ]] && chown postgres "$workdir"

cleanup() {
    run_pg "$pg_bin/pg_ctl" -D "$workdir/data" -m fast -w stop >/dev/null 2>&1 || true
    rm -rf "$workdir"
}
trap cleanup EXIT

run_pg "$pg_bin/initdb" -D "$workdir/data" -U postgres --auth=trust -E UTF8 >/dev/null
run_pg "$pg_bin/pg_ctl" -D "$workdir/data" -l "$workdir/postgres.log" -w \
    -o "-c listen_addresses=127.0.0.1 -p $port -k /tmp -c fsync=off" start >/dev/null
run_pg "$pg_bin/createdb" -h 127.0.0.1 -p "$port" -U postgres feedloop_test

export DATABASE_URL="postgres://postgres@127.0.0.1:$port/feedloop_test"
export FEEDLOOP_TEST_POSTGRES_URL="$DATABASE_URL"
echo "postgres.sh: PostgreSQL $("$pg_bin/postgres" --version | awk '{print $3}') on 127.0.0.1:$port ($workdir)" >&2

cd "$repo_root"
# The test binaries of `cargo test --workspace --all-targets` (what `make test-native` built), run
# directly: `cargo test -p feedloop-server` would resolve dependency features for another package
# selection and rebuild the whole server stack. Building them also builds the CLI that
# tests/crash.rs runs. Extra arguments go to each test binary (a name filter, --nocapture).
mapfile -t test_bins < <(cargo test --workspace --all-targets --no-run --message-format=json |
    python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if (m.get("reason") == "compiler-artifact" and m["profile"]["test"] and m.get("executable")
            and m["manifest_path"].endswith("/server/Cargo.toml")):
        print(m["executable"])')
[[ ${#test_bins[@]} -gt 0 ]] || { echo "postgres.sh: no feedloop-server test binaries were built" >&2; exit 1; }
cd "$repo_root/server"  # where cargo runs them (CARGO_MANIFEST_DIR)
for bin in "${test_bins[@]}"; do
    echo "postgres.sh: $(basename "$bin")" >&2
    "$bin" "$@"
done
