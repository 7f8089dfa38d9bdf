#!/usr/bin/env bash
# API ingestion benchmark (issue 18): wrk POSTs /v1/batch to `herald serve`
# on loopback, BATCH track events per request over keep-alive connections,
# each event of a seeded customer (by userId) with its own messageId, on
# SQLite and on PostgreSQL. Reports events persisted per second (counted in
# the database after the server drained), wrk's latency percentiles, and the
# server's peak memory (VmHWM). Then replays batches the first run sent: they
# must add no row. Then, with GET=1, GET /v1/customers/{email} on the seeded
# customers (the 360° view), for its p99.
#
#   bash bench/ingest.sh                          # 100,000 customers, 60 s
#   DURATION=600s bash bench/ingest.sh            # the 10-minute run
#   SEED=1000000 GET=1 BACKENDS=postgres bash bench/ingest.sh
#
# Needs wrk (Debian package wrk), sqlite3 and psql. PostgreSQL from
# HERALD_BENCH_PG_URL (default postgres://postgres@127.0.0.1:5432/postgres).
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
SEED=${SEED:-100000}
BATCH=${BATCH:-100}
CONNECTIONS=${CONNECTIONS:-16}
THREADS=1 # the replay relies on one counter
DURATION=${DURATION:-60s}
REPLAY=${REPLAY:-20s}
GET=${GET:-0}
BACKENDS=${BACKENDS:-sqlite postgres}
PORT=${PORT:-8091}
PG_ADMIN=${HERALD_BENCH_PG_URL:-postgres://postgres@127.0.0.1:5432/postgres}
DB=herald_ingest_$$
work=$(mktemp -d)
server=
cleanup() {
  [ -n "$server" ] && kill "$server" 2>/dev/null || true
  if [ -n "${KEEP:-}" ]; then echo "kept $work"; else rm -rf "$work"; fi
  psql "$PG_ADMIN" -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
}
trap cleanup EXIT
command -v wrk >/dev/null || { echo "install wrk (apt-get install wrk)"; exit 1; }

cargo build --release --quiet --bin herald
herald=$(realpath "${CARGO_TARGET_DIR:-target}")/release/herald
echo "$(machine); load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "wrk -t$THREADS -c$CONNECTIONS -d$DURATION, $BATCH track events per POST /v1/batch, $SEED seeded customers"

events() { sql "$1" "SELECT COUNT(*) FROM interactions WHERE kind = 'Viewed Product'"; }

start_server() { # url
  HERALD_DATABASE_URL=$1 HERALD_HTTP_ADDR=127.0.0.1:$PORT HERALD_LOG=warn \
    HERALD_API_RATE=1000000/s "$herald" serve >"$work/serve.out" &
  server=$!
  for _ in $(seq 1 300); do
    curl -fs "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1 && return
    sleep 0.1
  done
  echo "herald serve did not start" >&2
  exit 1
}

peak=
stop_server() { # sets $peak: the server's peak RSS in MB (not in a subshell: it waits for its child)
  peak=$(awk '/VmHWM/ {print int($2 / 1024)}' "/proc/$server/status")
  kill -TERM "$server"
  wait "$server"
  server=
}

# p99 in milliseconds from wrk --latency output.
p99() { awk '$1 == "99%" { v = $2; if (v ~ /us$/) { sub(/us/, "", v); v /= 1000 } else if (v ~ /ms$/) { sub(/ms/, "", v) } else if (v ~ /s$/) { sub(/s/, "", v); v *= 1000 } print v }' "$1"; }

run() { # name url
  local name=$1 url=$2
  HERALD_LOG=warn "$herald" --database-url "$url" seed --customers "$SEED" --seed 1 --anchor 2026-11-01 >/dev/null
  local key auth
  key=$(HERALD_LOG=warn "$herald" --database-url "$url" api-key create bench --scope admin 2>/dev/null)
  auth="Basic $(printf '%s:' "$key" | base64 -w0)"
  local before after requests seconds
  before=$(events "$url")
  start_server "$url"
  wrk -t$THREADS -c"$CONNECTIONS" -d"$DURATION" --latency -s bench/ingest.lua \
    "http://127.0.0.1:$PORT" -- "$auth" "$SEED" "$BATCH" 0 1 >"$work/wrk.out" 2>"$work/wrk.err"
  stop_server
  after=$(events "$url")
  requests=$(grep -o '[0-9]* requests in' "$work/wrk.out" | cut -d' ' -f1)
  seconds=$(wrk_seconds "$work/wrk.out")
  echo "--- $name"
  sed -n '/Thread Stats/,$p' "$work/wrk.out"
  if [ -s "$work/wrk.err" ]; then echo "non-200 answers:"; sort "$work/wrk.err" | uniq -c | head; fi
  local persisted=$((after - before))
  printf '%-9s %8.0f events/s persisted (%d in %ss; %d requests answered = %d events), p99 %s ms, peak RSS %s MB\n' \
    "$name" "$(echo "$persisted / $seconds" | bc -l)" "$persisted" "$seconds" "$requests" "$((requests * BATCH))" \
    "$(p99 "$work/wrk.out")" "$peak"
  if [ "$persisted" -lt "$((requests * BATCH))" ]; then
    echo "FAIL: fewer events persisted than answered" >&2
    exit 1
  fi

  # The replay: batches 0 … requests-CONNECTIONS-1 of the first run (all of
  # them answered), sent again in a loop.
  local modulo=$((requests - CONNECTIONS))
  start_server "$url"
  wrk -t$THREADS -c"$CONNECTIONS" -d"$REPLAY" --latency -s bench/ingest.lua \
    "http://127.0.0.1:$PORT" -- "$auth" "$SEED" "$BATCH" "$modulo" 1 >"$work/replay.out" 2>>"$work/wrk.err"
  stop_server
  local replayed again
  replayed=$(grep -o '[0-9]* requests in' "$work/replay.out" | cut -d' ' -f1)
  again=$(events "$url")
  printf '%-9s replay: %d requests (%d events) of already-sent batches added %d rows\n' \
    "$name" "$replayed" "$((replayed * BATCH))" "$((again - after))"
  if [ "$again" -ne "$after" ]; then
    echo "FAIL: the replay added rows" >&2
    exit 1
  fi

  if [ "$GET" = 1 ]; then
    sql "$url" "SELECT email FROM customers ORDER BY id LIMIT 20000" | awk 'NR % 2 == 0' >"$work/emails.txt"
    start_server "$url"
    wrk -t1 -c8 -d20s --latency -s bench/ingest_get.lua \
      "http://127.0.0.1:$PORT" -- "$auth" "$work/emails.txt" >"$work/get.out"
    stop_server
    sed -n '/Latency Distribution/,$p' "$work/get.out"
    printf '%-9s GET /v1/customers/{email}: p99 %s ms over %s customers\n' "$name" "$(p99 "$work/get.out")" "$SEED"
  fi
}

for backend in $BACKENDS; do
  case $backend in
    sqlite) run sqlite "sqlite://$work/bench.db" ;;
    postgres)
      psql "$PG_ADMIN" -qc "CREATE DATABASE $DB"
      run postgres "${PG_ADMIN%/*}/$DB"
      ;;
  esac
done
