#!/usr/bin/env bash
# Seed and CSV-import benchmark (issue: foundation). Measures, on SQLite and on
# PostgreSQL, `herald seed --customers N` and `herald import customers` of an
# N-row CSV: wall time and peak resident memory (GNU time's %M).
#
#   bash bench/seed_import.sh            # N=1000000
#   N=100000 bash bench/seed_import.sh
#
# PostgreSQL: HERALD_BENCH_PG_URL (default postgres://postgres@127.0.0.1:5432/postgres);
# a scratch database is created and dropped. Run on a quiet machine.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-1000000}
PG_ADMIN=${HERALD_BENCH_PG_URL:-postgres://postgres@127.0.0.1:5432/postgres}
PG_BASE=${PG_ADMIN%/*}
DB=herald_bench_$$
work=$(mktemp -d)
trap 'rm -rf "$work"; psql "$PG_ADMIN" -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true' EXIT

cargo build --release --quiet
herald=${CARGO_TARGET_DIR:-$PWD/target}/release/herald
python3 bench/gen_customers.py "$N" "$work/customers.csv"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(free -g | awk '/Mem:/{print $2}') GiB"
echo "customers: $N; CSV $(du -h "$work/customers.csv" | cut -f1)"

measure() { # label, then the command
  local label=$1; shift
  if ! /usr/bin/time -f '%e %M' -o "$work/time" "$@" >/dev/null 2>"$work/err"; then
    echo "$label failed:"; cat "$work/err"; return 1
  fi
  read -r secs kb <"$work/time"
  printf '%-40s %8.1f s %6d MB\n' "$label" "$secs" $((kb / 1024))
}

run_backend() { # name url
  local name=$1 url=$2
  measure "$name: seed --customers $N" env HERALD_LOG=warn "$herald" --database-url "$url" seed --customers "$N" --anchor 2026-11-01
  measure "$name: import customers ($N rows)" env HERALD_LOG=warn "$herald" --database-url "$url" import customers "$work/customers.csv"
}

printf '%-40s %10s %9s\n' "case" "wall" "peak RSS"
(cd "$work" && run_backend sqlite "sqlite://$work/bench.db")
psql "$PG_ADMIN" -qc "CREATE DATABASE $DB"
run_backend postgres "$PG_BASE/$DB"
