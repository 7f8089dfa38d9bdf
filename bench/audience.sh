#!/usr/bin/env bash
# Times `herald audience winback` (counting the win-back audience: attribute
# conditions plus two event windows) on SQLite and PostgreSQL.
#
#   bench/audience.sh [CUSTOMERS]        default 1000000 (about 10 interactions each)
#
# Environment:
#   HERALD        the binary (default: target/release/herald, built if missing)
#   BENCH_DIR     where the SQLite file lives (default: /tmp/herald-bench)
#   BENCH_PG      PostgreSQL server URL without database
#                 (default: postgres://postgres@127.0.0.1:5432); set to "" to skip
#   RUNS          timed runs per backend (default 3)
#
# Seeds only when the database holds fewer customers than asked (seed 3, anchor
# 2026-11-01, so the data is the same each time) and evaluates as of that anchor.
set -euo pipefail

N=${1:-1000000}
RUNS=${RUNS:-3}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BENCH_DIR=${BENCH_DIR:-/tmp/herald-bench}
BENCH_PG=${BENCH_PG-postgres://postgres@127.0.0.1:5432}
AT=2026-11-01T00:00:00Z

if [[ -z "${HERALD:-}" ]]; then
    HERALD="${CARGO_TARGET_DIR:-$ROOT/target}/release/herald"
    [[ -x "$HERALD" ]] || (cd "$ROOT" && cargo build --release --bin herald)
fi
mkdir -p "$BENCH_DIR"
cd "$ROOT" # campaigns/ is read from here

customers() { # URL
    local sql="SELECT COUNT(*) FROM customers"
    case $1 in
        sqlite://*) [[ -f ${1#sqlite://} ]] && sqlite3 "${1#sqlite://}" "$sql" 2>/dev/null || echo 0 ;;
        *) psql "$1" -qtAc "$sql" 2>/dev/null || echo 0 ;;
    esac
}

bench() { # NAME URL
    local name=$1 url=$2 have
    have=$(customers "$url")
    if (( ${have:-0} < N )); then
        echo "== $name: seeding $N customers (has ${have:-0})"
        HERALD_DATABASE_URL=$url "$HERALD" seed --customers "$N" --seed 3 --anchor 2026-11-01
    fi
    # Fresh statistics on PostgreSQL, as autovacuum would give; SQLite as shipped.
    if [[ $name == postgres ]]; then psql "$url" -qc "VACUUM ANALYZE"; fi
    echo "== $name: $(customers "$url") customers"
    for i in $(seq "$RUNS"); do
        local start end
        start=$(date +%s.%N)
        HERALD_DATABASE_URL=$url "$HERALD" audience winback --at "$AT"
        end=$(date +%s.%N)
        printf '   run %d: %.2f s\n' "$i" "$(echo "$end - $start" | bc)"
    done
}

bench sqlite "sqlite://$BENCH_DIR/herald-$N.db"
if [[ -n "$BENCH_PG" ]]; then
    db=herald_bench_$N
    psql "$BENCH_PG/postgres" -qtc "SELECT 1 FROM pg_database WHERE datname = '$db'" | grep -q 1 ||
        psql "$BENCH_PG/postgres" -qc "CREATE DATABASE $db"
    bench postgres "$BENCH_PG/$db"
fi
