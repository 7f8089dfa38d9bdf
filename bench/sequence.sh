#!/usr/bin/env bash
# Advancing a sequence: N customers wait after a campaign's first step (sent
# two days ago, a third of them opened it); `herald advance` evaluates the
# second step's `when: { not: { opened: first } }` for all of them and queues
# it for the others, in set-based statements. Target (sequences issue): under
# 10 s for 1,000,000 customers on PostgreSQL.
#
#   bash bench/sequence.sh [CUSTOMERS]     default 1000000
#
# Uses the databases of bench/audience.sh (seeds when needed: seed 3, anchor
# 2026-11-01), and builds the waiting state with SQL (a run, an entry and a
# sent first-step delivery per customer, human opens for every third).
# Environment: BENCH_DIR (SQLite files, default /tmp/herald-bench), BENCH_PG
# (server URL without database, default postgres://postgres@127.0.0.1:5432;
# "" skips PostgreSQL), SQLITE=0 skips SQLite.
set -euo pipefail
N=${1:-1000000}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
source "$ROOT/bench/lib.sh"
BENCH_DIR=${BENCH_DIR:-/tmp/herald-bench}
BENCH_PG=${BENCH_PG-postgres://postgres@127.0.0.1:5432}
(cd "$ROOT" && cargo build --release --quiet --bin herald)
HERALD=${CARGO_TARGET_DIR:-$ROOT/target}/release/herald
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$BENCH_DIR" "$work/campaigns"
cat >"$work/campaigns/followup.yaml" <<'YAML'
name: followup
from: "Acme Shop <hello@acme.example>"
audience:
  attribute: country
  exists: true
steps:
  - id: first
    subject: "Hello"
    template: newsletter
  - id: second
    wait: 1d
    when:
      not: { opened: first }
    subject: "Did you see this?"
    template: newsletter
YAML
echo "$(machine); N=$N"

bench() { # NAME URL
    local name=$1 url=$2 have now
    have=$( (sql "$url" "SELECT COUNT(*) FROM customers" 2>/dev/null) || echo 0)
    if (( ${have:-0} < N )); then
        HERALD_LOG=warn HERALD_DATABASE_URL=$url "$HERALD" seed --customers "$N" --seed 3 --anchor 2026-11-01 >/dev/null
    fi
    HERALD_DATABASE_URL=$url "$HERALD" migrate >/dev/null
    now=$(( $(date +%s) * 1000 ))
    local sent=$(( now - 2 * 86400000 ))
    echo "== $name: building the waiting state"
    sql "$url" "DELETE FROM interactions WHERE campaign = 'followup';
        DELETE FROM deliveries WHERE campaign = 'followup';
        DELETE FROM entries WHERE campaign = 'followup';
        DELETE FROM runs WHERE campaign = 'followup';
        INSERT INTO runs (campaign, trigger, status, created_at, planned) VALUES ('followup', 'manual', 'done', $sent, 0);
        INSERT INTO entries (campaign, customer_id, seq, run_id, entered_at, state, updated_at)
          SELECT 'followup', id, 1, (SELECT MAX(id) FROM runs WHERE campaign = 'followup'), $sent, 'active', $sent
          FROM customers WHERE id <= $N;
        INSERT INTO deliveries (run_id, entry_id, campaign, step, customer_id, status, attempts, sent_at, created_at, updated_at)
          SELECT run_id, id, campaign, 'first', customer_id, 'sent', 1, $sent, $sent, $sent FROM entries WHERE campaign = 'followup';
        INSERT INTO interactions (customer_id, kind, occurred_at, campaign, step, delivery_id, data)
          SELECT customer_id, 'email_opened', $sent + 3600000, campaign, step, id, '{\"machine\": false}'
          FROM deliveries WHERE campaign = 'followup' AND customer_id % 3 = 0;" >/dev/null
    if [[ $name == postgres ]]; then sql "$url" "VACUUM ANALYZE" >/dev/null; sql "$url" "CHECKPOINT" >/dev/null; else sql "$url" "ANALYZE" >/dev/null; fi
    echo "== $name: $(sql "$url" "SELECT COUNT(*) FROM entries WHERE campaign = 'followup' AND state = 'active'") customers waiting"
    local start end
    start=$(date +%s.%N)
    HERALD_LOG=warn HERALD_DATABASE_URL=$url HERALD_SECRET=bench-secret-0123456789 \
        "$HERALD" advance followup --campaigns "$work/campaigns" --templates "$ROOT/templates"
    end=$(date +%s.%N)
    printf '   herald advance, whole process: %.2f s\n' "$(echo "$end - $start" | bc)"
}

if [[ ${SQLITE:-1} != 0 ]]; then bench sqlite "sqlite://$BENCH_DIR/herald-$N.db"; fi
if [[ -n "$BENCH_PG" ]]; then
    db=herald_bench_$N
    psql "$BENCH_PG/postgres" -qtc "SELECT 1 FROM pg_database WHERE datname = '$db'" | grep -q 1 ||
        psql "$BENCH_PG/postgres" -qc "CREATE DATABASE $db"
    bench postgres "$BENCH_PG/$db"
fi
