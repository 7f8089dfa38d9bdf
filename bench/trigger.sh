#!/usr/bin/env bash
# Real-time latency (issue 19). First, triggered messages: a campaign triggered by "Checkout
# Started" sends its first step (no wait) at once. wrk POSTs /v1/track to
# `herald serve` at RATE events/s (paced, one event per request, each of a
# seeded customer in turn); a separate `herald worker` sends each triggered
# message to Postfix's smtp-sink on loopback. The latency of a message is
# from the event's `timestamp` (the client's clock when it sent the request,
# to the millisecond) to its delivery's `sent_at` (stamped when the relay's
# 250 is recorded), read from the database after the run: p50, p90, p99, max.
# Then transactional sends: POST /v1/send at SEND_RATE requests/s (each with
# its own Idempotency-Key and its send time in `data`), from the call to the
# relay's 250 the same way. SQLite, then PostgreSQL.
#
#   bash bench/trigger.sh                        # 2,000 events/s for 5 minutes, then 1,000 sends/s for 1
#   DURATION=30s SEND_DURATION=30s bash bench/trigger.sh  # a quick look
#   BACKENDS=postgres bash bench/trigger.sh
#
# Needs wrk (Debian package wrk), Postfix's smtp-sink (package postfix),
# sqlite3 and psql. PostgreSQL from HERALD_BENCH_PG_URL (default
# postgres://postgres@127.0.0.1:5432/postgres).
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
SEED=${SEED:-100000}
RATE=${RATE:-2000}
CONNECTIONS=${CONNECTIONS:-32}
DURATION=${DURATION:-300s}
SEND_RATE=${SEND_RATE:-1000}
SEND_DURATION=${SEND_DURATION:-60s}
CONCURRENCY=${CONCURRENCY:-16}
BACKENDS=${BACKENDS:-sqlite postgres}
PORT=${PORT:-8092}
SMTP_PORT=${SMTP_PORT:-2526}
PG_ADMIN=${HERALD_BENCH_PG_URL:-postgres://postgres@127.0.0.1:5432/postgres}
DB=herald_trigger_$$
work=$(mktemp -d)
server= worker= sink=
cleanup() {
  for p in $server $worker $sink; do kill "$p" 2>/dev/null || true; done
  if [ -n "${KEEP:-}" ]; then echo "kept $work"; else rm -rf "$work"; fi
  psql "$PG_ADMIN" -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
}
trap cleanup EXIT
command -v wrk >/dev/null || { echo "install wrk (apt-get install wrk)"; exit 1; }
command -v smtp-sink >/dev/null || { echo "install postfix (smtp-sink)"; exit 1; }

cargo build --release --quiet --bin herald
herald=$(realpath "${CARGO_TARGET_DIR:-target}")/release/herald
echo "$(machine); load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "$RATE track events/s asked (wrk -c$CONNECTIONS, paced; the rate reached is measured) for $DURATION, then $SEND_RATE sends/s for $SEND_DURATION; $SEED seeded customers, smtp_concurrency $CONCURRENCY"

mkdir -p "$work/campaigns" "$work/templates"
cat >"$work/campaigns/checkout.yaml" <<'YAML'
name: checkout
from: "Acme Shop <hello@acme.example>"
reentry: always
trigger:
  event: Checkout Started
steps:
  - id: confirm
    subject: "Your checkout of {{trigger.data.total}} {{trigger.data.currency}}"
    template: checkout
YAML
cat >"$work/campaigns/receipt.yaml" <<'YAML'
name: receipt
kind: transactional
from: "Acme Shop <orders@acme.example>"
steps:
  - id: receipt
    subject: "Your order {{data.order}}"
    template: receipt
YAML
cat >"$work/templates/receipt.html.hbs" <<'HBS'
<p>Thanks {{default customer.first_name "there"}}: order {{data.order}}, {{data.total}} EUR.</p>
HBS
cat >"$work/templates/checkout.html.hbs" <<'HBS'
<p>Hi {{default customer.first_name "there"}}, your checkout of {{trigger.data.total}} {{trigger.data.currency}} is waiting.</p>
<p><a href="https://acme.example/cart">Back to your cart</a> · <a href="{{unsubscribe_url}}">Unsubscribe</a></p>
HBS

smtp-sink -u postfix -c 127.0.0.1:$SMTP_PORT 1000 >"$work/sink.log" 2>&1 &
sink=$!

env_for() { # url: the settings both processes share
  echo HERALD_DATABASE_URL="$1" HERALD_LOG=warn HERALD_SECRET=bench-secret-0123456789 \
    HERALD_ALLOW_UNSAFE=true HERALD_API_RATE=1000000/s HERALD_HTTP_ADDR=127.0.0.1:$PORT \
    HERALD_SMTP_URL="smtp://127.0.0.1:$SMTP_PORT?tls=none" HERALD_SMTP_CONCURRENCY=$CONCURRENCY
}

drained() { # url campaign: waits (up to 60 s) until nothing of the campaign is left to send
  for _ in $(seq 1 600); do
    [ "$(sql "$1" "SELECT COUNT(*) FROM deliveries WHERE campaign = '$2' AND status IN ('queued', 'sending')")" = 0 ] && return
    sleep 0.1
  done
}

run() { # name url
  local name=$1 url=$2
  HERALD_LOG=warn "$herald" --database-url "$url" seed --customers "$SEED" --seed 1 --anchor 2026-11-01 >/dev/null
  HERALD_LOG=warn "$herald" --database-url "$url" migrate >/dev/null
  local key auth
  key=$(HERALD_LOG=warn "$herald" --database-url "$url" api-key create bench --scope ingest 2>/dev/null)
  auth="Basic $(printf '%s:' "$key" | base64 -w0)"
  # SQLite: one process, the worker serving the API itself (its writers share
  # one in-process gate; a second process would meet SQLite's file lock and
  # its busy handler's sleeps). PostgreSQL: `herald serve` beside the worker.
  local one=${ONE_PROCESS:-}
  [ -n "$one" ] || { [ "$name" = sqlite ] && one=1 || one=0; }
  local http=--no-http
  [ "$one" = 1 ] && http=
  env $(env_for "$url") HERALD_LOG=${WORKER_LOG:-warn} "$herald" worker $http --name bench \
    --campaigns "$work/campaigns" --templates "$work/templates" >"$work/worker.out" 2>&1 &
  worker=$!
  if [ "$one" = 1 ]; then
    echo "$name: one process (herald worker serving the API)"
  else
    env $(env_for "$url") "$herald" serve --campaigns "$work/campaigns" >"$work/serve.out" 2>&1 &
    server=$!
    echo "$name: herald serve and herald worker"
  fi
  for _ in $(seq 1 300); do
    curl -fs "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1 && break
    sleep 0.1
  done
  sleep 2 # the worker's start
  wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --latency -s bench/trigger.lua \
    "http://127.0.0.1:$PORT" -- "$auth" "$SEED" "$RATE" 1 >"$work/wrk.out" 2>"$work/wrk.err"
  # Whatever is still queued goes out; then both stop.
  drained "$url" checkout
  # Transactional sends.
  wrk -t1 -c"$CONNECTIONS" -d"$SEND_DURATION" --latency -s bench/send_api.lua \
    "http://127.0.0.1:$PORT" -- "$auth" "$SEED" "$SEND_RATE" 1 >"$work/send.out" 2>"$work/send.err"
  drained "$url" receipt
  local worker_cpu
  worker_cpu=$(awk '{print ($14 + $15) / 100}' "/proc/$worker/stat")
  kill -TERM $server "$worker"
  wait $server "$worker" || true
  server= worker=
  local events entered sent seconds
  events=$(sql "$url" "SELECT COUNT(*) FROM interactions WHERE kind = 'Checkout Started'")
  entered=$(sql "$url" "SELECT COUNT(*) FROM entries WHERE campaign = 'checkout'")
  sent=$(sql "$url" "SELECT COUNT(*) FROM deliveries WHERE campaign = 'checkout' AND status = 'sent'")
  seconds=$(wrk_seconds "$work/wrk.out")
  sql "$url" "SELECT d.sent_at - i.occurred_at FROM deliveries d JOIN entries e ON e.id = d.entry_id \
    JOIN interactions i ON i.id = e.cause_id WHERE d.campaign = 'checkout' AND d.status = 'sent' ORDER BY 1" >"$work/latency"
  local t
  case $url in
    sqlite://*) t="CAST(json_extract(e.data, '\$.t') AS INTEGER)" ;;
    *) t="CAST(e.data->>'t' AS BIGINT)" ;;
  esac
  sql "$url" "SELECT d.sent_at - $t FROM sends s JOIN deliveries d ON d.id = s.delivery_id \
    JOIN entries e ON e.id = d.entry_id WHERE d.status = 'sent' ORDER BY 1" >"$work/send_latency"
  local calls sent_tx send_seconds
  calls=$(sql "$url" "SELECT COUNT(*) FROM sends")
  sent_tx=$(sql "$url" "SELECT COUNT(*) FROM deliveries WHERE campaign = 'receipt' AND status = 'sent'")
  send_seconds=$(wrk_seconds "$work/send.out")
  echo "--- $name"
  sed -n '/Latency Distribution/,/99%/p' "$work/wrk.out" | sed 's/^/  POST \/v1\/track /'
  if [ -s "$work/wrk.err" ]; then echo "non-200 answers:"; sort "$work/wrk.err" | uniq -c | head; fi
  percentiles "$work/latency" "$(printf '%-9s %.0f events/s stored (%d in %ss), %d entered, %d sent; track → 250' \
    "$name" "$(echo "$events / $seconds" | bc -l)" "$events" "$seconds" "$entered" "$sent")"
  sed -n '/Latency Distribution/,/99%/p' "$work/send.out" | sed 's/^/  POST \/v1\/send /'
  if [ -s "$work/send.err" ]; then echo "non-202 answers:"; sort "$work/send.err" | uniq -c | head; fi
  percentiles "$work/send_latency" "$(printf '%-9s %.0f sends/s accepted (%d in %ss), %d sent; send → 250' \
    "$name" "$(echo "$calls / $send_seconds" | bc -l)" "$calls" "$send_seconds" "$sent_tx")"
  echo "$name worker CPU over both phases: $worker_cpu s"
}

percentiles() { # FILE LABEL: one latency in ms per line, sorted
  awk -v label="$2" '
    { v[NR] = $1 }
    END {
      n = NR
      if (n == 0) { print label ": nothing sent"; exit 1 }
      printf "%s: p50 %d ms, p90 %d ms, p99 %d ms, max %d ms\n", label, v[int(n * 0.5) + 1], v[int(n * 0.9) + 1], v[int(n * 0.99) + 1], v[n]
    }' "$1"
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
