#!/usr/bin/env bash
# Two herald binaries side by side on the send of bench/send.sh, PostgreSQL,
# alternating, so a noisy machine affects both alike:
#
#   OLD=/tmp/herald-old NEW=target/release/herald N=20000 bash bench/send_ab.sh
#
# Build the old one from a worktree (`git worktree add /tmp/old REV`, then
# `cargo build --release` there). Needs smtp-sink (Debian's postfix).
set -euo pipefail
cd "$(dirname "$0")/.."
OLD=$(realpath "${OLD:?the older binary}"); NEW=$(realpath "${NEW:?the newer binary}")
source bench/lib.sh
N=${N:-20000}; PORT=${PORT:-2526}; PG_ADMIN=${HERALD_BENCH_PG_URL:-postgres://postgres@127.0.0.1:5432/postgres}
work=$(mktemp -d)
smtp-sink -u postfix -c 127.0.0.1:$PORT 1000 >"$work/sink.log" 2>&1 &
sink=$!
trap 'kill $sink 2>/dev/null; rm -rf "$work"' EXIT
mkdir -p "$work/campaigns"
newsletter_campaign "$work/campaigns/blast.yaml" blast "tracking: true"
sleep 0.5
for round in ${ROUNDS:-1 2}; do
for which in ${WHICH:-old new}; do
  if [ "$which" = old ]; then herald=$OLD; else herald=$NEW; fi
  DB=herald_ab_${which}_$$_$round
  psql "$PG_ADMIN" -qc "CREATE DATABASE $DB"
  url="${PG_ADMIN%/*}/$DB"
  HERALD_LOG=warn "$herald" --database-url "$url" seed --customers "$N" --seed 7 --anchor 2026-11-01 >/dev/null
  start=$(date +%s.%N)
  HERALD_LOG=error HERALD_DATABASE_URL="$url" HERALD_SMTP_URL="smtp://127.0.0.1:$PORT?tls=none" HERALD_SMTP_CONCURRENCY=128 \
    HERALD_ALLOW_UNSAFE=true HERALD_SECRET=bench-secret-0123456789 "$herald" run blast --campaigns "$work/campaigns" --templates templates >"$work/out"
  end=$(date +%s.%N)
  sent=$(grep -o 'sent [0-9]*' "$work/out" | head -1 | cut -d' ' -f2)
  printf '%s round %s: %8.1f msgs/s (%s sent)\n' "$which" "$round" "$(echo "$sent / ($end - $start)" | bc -l)" "$sent"
  psql "$PG_ADMIN" -qc "DROP DATABASE $DB WITH (FORCE)"
done; done
