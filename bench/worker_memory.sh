#!/usr/bin/env bash
# Peak memory of `herald worker` sending one run to a whole audience: N seeded
# customers, one campaign without a rate limit, Postfix's smtp-sink on
# loopback. Reports wall time, messages/s and peak RSS per backend.
#
#   bash bench/worker_memory.sh [CUSTOMERS]     default 10000; try 1000000
#
# Seeds only when the database holds fewer customers than asked (seed 3,
# anchor 2026-11-01; the same databases as bench/audience.sh), and clears
# earlier runs of the campaign first so every customer is sent to again.
# Environment: BENCH_DIR (SQLite files, default /tmp/herald-bench), BENCH_PG
# (server URL without database, default postgres://postgres@127.0.0.1:5432;
# "" skips PostgreSQL), CONCURRENCY (smtp_concurrency, default 32).
set -euo pipefail
N=${1:-10000}
CONCURRENCY=${CONCURRENCY:-32}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
source "$ROOT/bench/lib.sh"
BENCH_DIR=${BENCH_DIR:-/tmp/herald-bench}
BENCH_PG=${BENCH_PG-postgres://postgres@127.0.0.1:5432}
PORT=${PORT:-2527}
command -v smtp-sink >/dev/null || { echo "install postfix (smtp-sink)"; exit 1; }
(cd "$ROOT" && cargo build --release --quiet --bin herald)
HERALD=${CARGO_TARGET_DIR:-$ROOT/target}/release/herald
work=$(mktemp -d)
smtp-sink -u postfix -c 127.0.0.1:$PORT 1000 >"$work/sink.log" 2>&1 &
sink=$!
trap 'kill $sink 2>/dev/null; rm -rf "$work"' EXIT
mkdir -p "$BENCH_DIR" "$work/campaigns"
newsletter_campaign "$work/campaigns/everyone.yaml" everyone "reentry: always"
echo "$(machine); N=$N, smtp_concurrency=$CONCURRENCY"

bench() { # NAME URL
    local name=$1 url=$2 have
    have=$( (sql "$url" "SELECT COUNT(*) FROM customers" 2>/dev/null) || echo 0)
    if (( ${have:-0} < N )); then
        HERALD_LOG=warn HERALD_DATABASE_URL=$url "$HERALD" seed --customers "$N" --seed 3 --anchor 2026-11-01 >/dev/null
    fi
    HERALD_DATABASE_URL=$url "$HERALD" migrate >/dev/null
    # Finish earlier runs of the campaign so that this one sends to everyone.
    sql "$url" "UPDATE entries SET state = 'completed' WHERE campaign = 'everyone'; UPDATE runs SET status = 'done' WHERE campaign = 'everyone'"
    local before
    before=$(sql "$url" "SELECT COUNT(*) FROM runs WHERE campaign = 'everyone'")
    local start end
    start=$(date +%s.%N)
    HERALD_LOG=warn HERALD_DATABASE_URL=$url HERALD_SMTP_URL="smtp://127.0.0.1:$PORT?tls=none" HERALD_ALLOW_UNSAFE=true \
        HERALD_SMTP_CONCURRENCY="$CONCURRENCY" HERALD_SECRET=bench-secret-0123456789 \
        /usr/bin/time -f '%M' -o "$work/rss" \
        "$HERALD" worker --no-http --campaigns "$work/campaigns" --templates "$ROOT/templates" --now everyone &
    local worker=$!
    # Wait for the run to be planned and then finished.
    until [[ $(sql "$url" "SELECT COUNT(*) FROM runs WHERE campaign = 'everyone' AND status = 'done'") -gt $before ]]; do
        sleep 0.5
    done
    end=$(date +%s.%N)
    pkill -TERM -f "^$HERALD worker --no-http --campaigns $work/campaigns" || true
    wait $worker || true
    local sent
    sent=$(sql "$url" "SELECT planned FROM runs WHERE campaign = 'everyone' ORDER BY id DESC LIMIT 1")
    printf '%-10s %8d sent in %6.1f s = %7.1f msgs/s, worker peak RSS %d MB\n' "$name" "$sent" \
        "$(echo "$end - $start" | bc)" "$(echo "$sent / ($end - $start)" | bc -l)" $(( $(cat "$work/rss") / 1024 ))
}

bench sqlite "sqlite://$BENCH_DIR/herald-$N.db"
if [[ -n "$BENCH_PG" ]]; then
    db=herald_bench_$N
    psql "$BENCH_PG/postgres" -qtc "SELECT 1 FROM pg_database WHERE datname = '$db'" | grep -q 1 ||
        psql "$BENCH_PG/postgres" -qc "CREATE DATABASE $db"
    bench postgres "$BENCH_PG/$db"
fi
