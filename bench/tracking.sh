#!/usr/bin/env bash
# Tracking-service benchmark (issue 6): wrk hammers the open pixel of `herald
# serve` on loopback with valid tokens of real deliveries, on SQLite and on
# PostgreSQL; every open must be persisted (the interaction count is checked
# against wrk's request count after a SIGTERM flush).
#
#   bash bench/tracking.sh                    # 20,000 deliveries, 64 connections, 20 s
#   N=5000 CONNECTIONS=128 DURATION=30s THREADS=1 bash bench/tracking.sh
#
# Needs wrk (Debian package wrk), sqlite3 and psql. PostgreSQL from
# HERALD_BENCH_PG_URL (default postgres://postgres@127.0.0.1:5432/postgres).
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
N=${N:-20000}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-1}
DURATION=${DURATION:-20s}
PORT=${PORT:-8089}
PG_ADMIN=${HERALD_BENCH_PG_URL:-postgres://postgres@127.0.0.1:5432/postgres}
DB=herald_track_$$
SECRET=bench-secret-0123456789
work=$(mktemp -d)
server=
cleanup() {
  [ -n "$server" ] && kill "$server" 2>/dev/null || true
  rm -rf "$work"
  psql "$PG_ADMIN" -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
}
trap cleanup EXIT
command -v wrk >/dev/null || { echo "install wrk (apt-get install wrk)"; exit 1; }

cargo build --release --quiet --bin herald --example tokens
target=$(realpath "${CARGO_TARGET_DIR:-target}")/release
herald=$target/herald
tokens=$target/examples/tokens
mkdir -p "$work/campaigns"
newsletter_campaign "$work/campaigns/blast.yaml" blast
echo "$(machine); load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "wrk -t$THREADS -c$CONNECTIONS -d$DURATION over up to $N tokens"

count_opens() { # name url
  case $1 in
    sqlite) sqlite3 "${2#sqlite://}" "SELECT COUNT(*) FROM interactions WHERE kind = 'email_opened'" ;;
    postgres) psql "$2" -Atc "SELECT COUNT(*) FROM interactions WHERE kind = 'email_opened'" ;;
  esac
}

run() { # name url
  local name=$1 url=$2
  export HERALD_LOG=warn HERALD_DATABASE_URL=$url HERALD_SECRET=$SECRET
  "$herald" seed --customers "$N" --seed 7 --anchor 2026-11-01 >/dev/null
  HERALD_OUTBOX_DIR="$work/outbox-$name" HERALD_PUBLIC_URL="http://127.0.0.1:$PORT" \
    "$herald" run blast --campaigns "$work/campaigns" --templates templates >/dev/null
  "$tokens" "$N" >"$work/tokens.txt"
  local before
  before=$(count_opens "$name" "$url")
  HERALD_HTTP_ADDR=127.0.0.1:$PORT "$herald" serve >"$work/serve.out" &
  server=$!
  for _ in $(seq 1 100); do
    curl -fs "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1 && break
    sleep 0.1
  done
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency -s bench/tracking.lua \
    "http://127.0.0.1:$PORT" -- "$work/tokens.txt" >"$work/wrk.out"
  kill -TERM "$server"
  wait "$server"
  server=
  local after requests rps
  after=$(count_opens "$name" "$url")
  requests=$(grep -o '[0-9]* requests in' "$work/wrk.out" | cut -d' ' -f1)
  rps=$(grep 'Requests/sec' "$work/wrk.out" | awk '{print $2}')
  echo "--- $name: $(wc -l <"$work/tokens.txt") tokens"
  sed -n '/Thread Stats/,$p' "$work/wrk.out"
  tail -n 1 "$work/serve.out"
  printf '%-10s %10s req/s; wrk completed %s requests; %s opens persisted\n' \
    "$name" "$rps" "$requests" "$((after - before))"
  if [ "$((after - before))" -lt "$requests" ]; then
    echo "FAIL: fewer opens persisted than requests answered" >&2
    exit 1
  fi
}

run sqlite "sqlite://$work/bench.db"
psql "$PG_ADMIN" -qc "CREATE DATABASE $DB"
run postgres "${PG_ADMIN%/*}/$DB"
