#!/usr/bin/env bash
# Two herald binaries side by side on the send of bench/send.sh, alternating,
# so a noisy machine affects both alike:
#
#   OLD=/tmp/herald-old NEW=target/release/herald N=20000 bash bench/send_ab.sh
#   OLD=… NEW=… N=100000 BACKENDS="sqlite postgres" CONCURRENCY="64 128" ROUNDS="1 2 3" bash bench/send_ab.sh
#
# Each binary seeds its own database once per backend (seed 7, N customers);
# every run sends from a fresh copy of it (SQLite: the file copied;
# PostgreSQL: CREATE DATABASE … TEMPLATE). One line per run: messages per
# second (wall clock of `herald run`, planning included) and the herald
# process's CPU time (user + system, GNU time) per message sent, which a busy
# machine disturbs less than the rate.
#
# Build the old one from a worktree (`git worktree add /tmp/old REV`, then
# `cargo build --release` there). Needs smtp-sink (Debian's postfix).
set -euo pipefail
cd "$(dirname "$0")/.."
OLD=$(realpath "${OLD:?the older binary}"); NEW=$(realpath "${NEW:?the newer binary}")
source bench/lib.sh
N=${N:-20000}; PORT=${PORT:-2526}; PG_ADMIN=${HERALD_BENCH_PG_URL:-postgres://postgres@127.0.0.1:5432/postgres}
BACKENDS=${BACKENDS:-postgres}; CONCURRENCY=${CONCURRENCY:-128}
work=$(mktemp -d)
tag=$$
smtp-sink -u postfix -c 127.0.0.1:$PORT 1000 >"$work/sink.log" 2>&1 &
sink=$!
drop_all() {
  for db in $(psql "$PG_ADMIN" -qtAc "SELECT datname FROM pg_database WHERE datname LIKE 'herald_ab_%_$tag%'"); do
    psql "$PG_ADMIN" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
  done
}
trap 'kill $sink 2>/dev/null; rm -rf "$work"; drop_all' EXIT
mkdir -p "$work/campaigns"
newsletter_campaign "$work/campaigns/blast.yaml" blast "tracking: true"
echo "$(machine); N=$N; load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "old: $OLD"
echo "new: $NEW"

binary() { if [ "$1" = old ]; then echo "$OLD"; else echo "$NEW"; fi; }

# The seeded originals, one per binary and backend.
for backend in $BACKENDS; do
  for which in old new; do
    herald=$(binary $which)
    case $backend in
      sqlite) url="sqlite://$work/seed_$which.db" ;;
      postgres)
        psql "$PG_ADMIN" -qc "CREATE DATABASE herald_ab_seed_${which}_$tag"
        url="${PG_ADMIN%/*}/herald_ab_seed_${which}_$tag" ;;
    esac
    HERALD_LOG=warn "$herald" --database-url "$url" seed --customers "$N" --seed 7 --anchor 2026-11-01 >/dev/null
  done
done

for round in ${ROUNDS:-1 2}; do
for backend in $BACKENDS; do
for concurrency in $CONCURRENCY; do
for which in ${WHICH:-old new}; do
  herald=$(binary $which)
  case $backend in
    sqlite)
      rm -f "$work"/run.db*
      for f in "$work/seed_$which.db"*; do cp "$f" "$work/run.db${f#"$work/seed_$which.db"}"; done
      url="sqlite://$work/run.db" ;;
    postgres)
      DB=herald_ab_run_$tag
      psql "$PG_ADMIN" -qc "CREATE DATABASE $DB TEMPLATE herald_ab_seed_${which}_$tag"
      url="${PG_ADMIN%/*}/$DB" ;;
  esac
  sleep 1
  /usr/bin/time -f '%e %U %S %M' -o "$work/time" env HERALD_LOG=error HERALD_DATABASE_URL="$url" \
    HERALD_SMTP_URL="smtp://127.0.0.1:$PORT?tls=none" HERALD_SMTP_CONCURRENCY="$concurrency" \
    HERALD_ALLOW_UNSAFE=true HERALD_SECRET=bench-secret-0123456789 \
    "$herald" run blast --campaigns "$work/campaigns" --templates templates >"$work/out"
  read -r secs user sys kb <"$work/time"
  sent=$(grep -o 'sent [0-9]*' "$work/out" | head -1 | cut -d' ' -f2)
  printf '%s %-8s c=%-3s round %s: %8.1f msgs/s  %6.1f µs CPU/msg (user %s s, sys %s s, %s sent in %s s, peak RSS %d MB)\n' \
    "$which" "$backend" "$concurrency" "$round" "$(echo "$sent / $secs" | bc -l)" \
    "$(echo "($user + $sys) * 1000000 / $sent" | bc -l)" "$user" "$sys" "$sent" "$secs" $((kb / 1024))
  [ "$backend" = postgres ] && psql "$PG_ADMIN" -qc "DROP DATABASE $DB WITH (FORCE)"
done; done; done; done
