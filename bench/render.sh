#!/usr/bin/env bash
# Render + build throughput on one core (templates issue): a ~3 KB HTML
# template with 10 variables, an `#each` over 3 purchases, link tracking and
# the open pixel, rendered (subject, HTML, text), built with lettre and
# formatted, for N customers. A render-only figure: its old target (50,000
# messages/s on one core) is retired; what counts is CPU per message end to
# end (bench/send_ab.sh, docs/performance.md).
#
#   bench/render.sh [N]          default 100000
#
# Environment:
#   RUNS          timed runs (default 3)
#   CALLGRIND=1   also count instructions per message under callgrind (needs
#                 valgrind): repeatable on a busy machine, unlike wall clock
set -euo pipefail

N=${1:-100000}
RUNS=${RUNS:-3}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

cd "$ROOT"
BIN=$(cargo bench --bench render --no-run --message-format=json 2>/dev/null \
    | python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("target", {}).get("name") == "render" and m.get("executable"):
        print(m["executable"])')
[[ -x "$BIN" ]] || { echo "could not build benches/render.rs" >&2; exit 1; }

machine
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
for _ in $(seq "$RUNS"); do
    N=$N "$BIN" | tail -1
done
if [[ "${CALLGRIND:-}" == 1 ]]; then
    count() {
        N=$1 valgrind --tool=callgrind --callgrind-out-file=/dev/stdout "$BIN" 2>/dev/null \
            | awk '/^(summary|totals):/ {print $2; exit}'
    }
    a=$(count 1000)
    b=$(count 2000)
    echo "callgrind: $(( (b - a) / 1000 )) instructions per message (N=2000 minus N=1000)"
fi
