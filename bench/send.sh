#!/usr/bin/env bash
# End-to-end sending benchmark (delivery pipeline issue): plan, render, SMTP and
# bookkeeping for N seeded customers into Postfix's smtp-sink on loopback, with
# no rate limit, on SQLite and on PostgreSQL; beside it, smtp-source blasting the
# same sink over 8 reused connections (the raw ceiling of the machine).
#
#   bash bench/send.sh            # N=100000, smtp_concurrency 128 (see docs/performance.md)
#   N=10000 CONCURRENCY=16 bash bench/send.sh
#   SKIP_SQLITE=1 bash bench/send.sh   # PostgreSQL only
#
# Needs Debian's postfix package (smtp-sink, smtp-source); as root smtp-sink
# runs with -u postfix. PostgreSQL from HERALD_BENCH_PG_URL
# (default postgres://postgres@127.0.0.1:5432/postgres).
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
N=${N:-100000}
CONCURRENCY=${CONCURRENCY:-128}
PORT=${PORT:-2525}
PG_ADMIN=${HERALD_BENCH_PG_URL:-postgres://postgres@127.0.0.1:5432/postgres}
DB=herald_send_$$
work=$(mktemp -d)
command -v smtp-sink >/dev/null || { echo "install postfix (smtp-sink)"; exit 1; }
smtp-sink -u postfix -c 127.0.0.1:$PORT 1000 >"$work/sink.log" 2>&1 &
sink=$!
trap 'kill $sink 2>/dev/null; rm -rf "$work"; psql "$PG_ADMIN" -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true' EXIT

cargo build --release --quiet
herald=${CARGO_TARGET_DIR:-$PWD/target}/release/herald
mkdir -p "$work/campaigns"
newsletter_campaign "$work/campaigns/blast.yaml" blast "tracking: true"
echo "$(machine); N=$N, smtp_concurrency=$CONCURRENCY"

sleep 0.5
start=$(date +%s.%N)
smtp-source -d -s 8 -m "$N" -l 4096 -f bench@acme.example -t sink@example.com 127.0.0.1:$PORT
end=$(date +%s.%N)
printf '%-44s %8.1f msgs/s\n' "smtp-source -d -s 8, 4 KB messages" "$(echo "$N / ($end - $start)" | bc -l)"

run() { # name url
  local name=$1 url=$2
  HERALD_LOG=warn "$herald" --database-url "$url" seed --customers "$N" --seed 7 --anchor 2026-11-01 >/dev/null
  /usr/bin/time -f '%e %M' -o "$work/time" env HERALD_LOG=warn HERALD_DATABASE_URL="$url" \
    HERALD_SMTP_URL="smtp://127.0.0.1:$PORT?tls=none" HERALD_SMTP_CONCURRENCY="$CONCURRENCY" HERALD_ALLOW_UNSAFE=true \
    HERALD_SECRET=bench-secret-0123456789 \
    "$herald" run blast --campaigns "$work/campaigns" --templates templates >"$work/out"
  read -r secs kb <"$work/time"
  local sent
  sent=$(grep -o 'sent [0-9]*' "$work/out" | head -1 | cut -d' ' -f2)
  printf '%-44s %8.1f msgs/s  (%s sent in %.1f s, peak RSS %d MB)\n' \
    "herald run, $name" "$(echo "$sent / $secs" | bc -l)" "$sent" "$secs" $((kb / 1024))
}

[[ ${SKIP_SQLITE:-0} = 1 ]] || run sqlite "sqlite://$work/bench.db"
psql "$PG_ADMIN" -qc "CREATE DATABASE $DB"
run postgres "${PG_ADMIN%/*}/$DB"
