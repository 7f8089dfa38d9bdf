#!/usr/bin/env bash
# Times `herald stats` and `herald report` on a seeded database with one large
# synthetic campaign: deliveries for every 5th customer (two steps), email_sent
# for each, ~40 % opens (a fifth by machines), ~8 % clicks on three links,
# ~0.5 % unsubscribes, sent in October 2026 so that the seeded purchases
# (before the anchor 2026-11-01) give conversions.
#
#   bench/stats.sh [CUSTOMERS]           default 1000000 (about 10 interactions each)
#
# Environment:
#   HERALD        the binary (default: target/release/herald, built if missing)
#   BENCH_DIR     where the SQLite file lives (default: /tmp/herald-stats-bench)
#   BENCH_PG      PostgreSQL server URL without database
#                 (default: postgres://postgres@127.0.0.1:5432); set to "" to skip
#   RUNS          timed runs per backend (default 3)
#
# Uses its own databases (herald-stats-N.db, herald_stats_N): seeds them when
# they hold fewer customers than asked, adds the campaign once.
set -euo pipefail

N=${1:-1000000}
RUNS=${RUNS:-3}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BENCH_DIR=${BENCH_DIR:-/tmp/herald-stats-bench}
BENCH_PG=${BENCH_PG-postgres://postgres@127.0.0.1:5432}

if [[ -z "${HERALD:-}" ]]; then
    HERALD="${CARGO_TARGET_DIR:-$ROOT/target}/release/herald"
    [[ -x "$HERALD" ]] || (cd "$ROOT" && cargo build --release --bin herald)
fi
mkdir -p "$BENCH_DIR"
cd "$BENCH_DIR"

# The campaign, in SQL both backends accept (integer division, no JSON
# functions); @J marks where PostgreSQL needs a cast of text to jsonb.
CAMPAIGN_SQL="
INSERT INTO runs (id, campaign, trigger, status, created_at) VALUES (900001, 'bench', 'manual', 'done', 1790812800000);
INSERT INTO entries (id, campaign, customer_id, seq, run_id, entered_at, updated_at)
  SELECT 9000000000 + id, 'bench', id, 1, 900001, 1790812800000, 1790812800000 FROM customers WHERE id % 5 = 0;
INSERT INTO deliveries (run_id, entry_id, campaign, step, customer_id, status, reason, sent_at, created_at, updated_at)
  SELECT 900001, 9000000000 + id, 'bench', 'offer', id,
         CASE WHEN id % 97 = 0 THEN 'bounced' WHEN id % 89 = 0 THEN 'skipped' ELSE 'sent' END,
         CASE WHEN id % 97 = 0 THEN '550 5.1.1 no such user' WHEN id % 89 = 0 THEN 'frequency_cap' END,
         CASE WHEN id % 97 <> 0 AND id % 89 <> 0 THEN 1790812800000 + (id % 3600) * 1000 END,
         1790812800000, 1790812800000
  FROM customers WHERE id % 5 = 0;
INSERT INTO deliveries (run_id, entry_id, campaign, step, customer_id, status, sent_at, created_at, updated_at)
  SELECT 900001, 9000000000 + id, 'bench', 'reminder', id, 'sent', 1791072000000 + (id % 3600) * 1000, 1791072000000, 1791072000000
  FROM customers WHERE id % 10 = 0;
INSERT INTO interactions (customer_id, kind, occurred_at, campaign, step, delivery_id, data)
  SELECT customer_id, 'email_sent', sent_at, campaign, step, id, '{}' FROM deliveries WHERE campaign = 'bench' AND status = 'sent';
INSERT INTO interactions (customer_id, kind, occurred_at, campaign, step, delivery_id, data)
  SELECT customer_id, 'email_opened', sent_at + (customer_id % 86400) * 1000, campaign, step, id,
         CASE WHEN customer_id % 25 = 0 THEN '{\"machine\": true}' ELSE '{\"machine\": false}' END@J
  FROM deliveries WHERE campaign = 'bench' AND status = 'sent' AND customer_id % 5 IN (0, 2) AND (customer_id / 5) % 5 < 2;
INSERT INTO interactions (customer_id, kind, occurred_at, campaign, step, delivery_id, data)
  SELECT customer_id, 'email_clicked', sent_at + (customer_id % 86400) * 1000 + 60000, campaign, step, id,
         CASE customer_id % 3 WHEN 0 THEN '{\"url\": \"https://acme.example/a\"}'
                              WHEN 1 THEN '{\"url\": \"https://acme.example/b\"}'
                              ELSE '{\"url\": \"https://acme.example/c\"}' END@J
  FROM deliveries WHERE campaign = 'bench' AND status = 'sent' AND (customer_id / 5) % 25 < 2;
INSERT INTO interactions (customer_id, kind, occurred_at, campaign, step, delivery_id, data)
  SELECT customer_id, 'unsubscribed', sent_at + 7200000, campaign, step, id, '{}'
  FROM deliveries WHERE campaign = 'bench' AND status = 'sent' AND customer_id % 1000 = 0;
"

prepare() { # URL
    local url=$1 have
    case $url in
        sqlite://*) have=$( [[ -f ${url#sqlite://} ]] && sqlite3 "${url#sqlite://}" "SELECT COUNT(*) FROM customers" 2>/dev/null || echo 0) ;;
        *) have=$(psql "$url" -qtAc "SELECT COUNT(*) FROM customers" 2>/dev/null || echo 0) ;;
    esac
    if (( have < N )); then
        echo "seeding $N customers into $url"
        HERALD_DATABASE_URL=$url "$HERALD" seed --customers "$N" --seed 3 --anchor 2026-11-01 >/dev/null
    fi
    HERALD_DATABASE_URL=$url "$HERALD" migrate >/dev/null
    local runs
    case $url in
        sqlite://*) runs=$(sqlite3 "${url#sqlite://}" "SELECT COUNT(*) FROM runs WHERE id = 900001") ;;
        *) runs=$(psql "$url" -qtAc "SELECT COUNT(*) FROM runs WHERE id = 900001") ;;
    esac
    if (( runs == 0 )); then
        echo "adding the bench campaign"
        case $url in
            sqlite://*) sqlite3 "${url#sqlite://}" "BEGIN; ${CAMPAIGN_SQL//@J/} COMMIT; ANALYZE;" ;;
            *) psql -q "$url" -v ON_ERROR_STOP=1 -c "BEGIN; ${CAMPAIGN_SQL//@J/::jsonb} COMMIT;" -c "ANALYZE" ;;
        esac
    fi
}

bench() { # NAME URL
    local name=$1 url=$2
    prepare "$url"
    for i in $(seq 1 "$RUNS"); do
        local t0 t1 t2
        t0=$(date +%s.%N)
        HERALD_DATABASE_URL=$url "$HERALD" stats bench --conversion-event purchase >/dev/null
        t1=$(date +%s.%N)
        HERALD_DATABASE_URL=$url "$HERALD" report bench --conversion-event purchase --out "$BENCH_DIR/bench.html" >/dev/null
        t2=$(date +%s.%N)
        printf '%s run %d: stats %.2f s, report %.2f s\n' "$name" "$i" "$(echo "$t1 - $t0" | bc)" "$(echo "$t2 - $t1" | bc)"
    done
    HERALD_DATABASE_URL=$url "$HERALD" stats bench --conversion-event purchase
}

bench sqlite "sqlite://$BENCH_DIR/herald-stats-$N.db"
if [[ -n "$BENCH_PG" ]]; then
    db="herald_stats_$N"
    psql "$BENCH_PG/postgres" -qtAc "SELECT 1 FROM pg_database WHERE datname = '$db'" | grep -q 1 \
        || psql "$BENCH_PG/postgres" -qc "CREATE DATABASE $db"
    bench postgres "$BENCH_PG/$db"
fi
