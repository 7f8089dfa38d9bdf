# Shared by the bench scripts (sourced, not run): the machine line, a query
# helper for either backend, and the newsletter campaign they send.

# "machine: 2 cores, AMD EPYC …" — callers append what they measure.
machine() {
    echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
}

sql() { # URL SQL: one statement on SQLite or PostgreSQL, rows as plain text
    case $1 in
        sqlite://*) sqlite3 -cmd ".timeout 10000" "${1#sqlite://}" "$2" ;;
        *) psql "$1" -qtAc "$2" ;;
    esac
}

# newsletter_campaign FILE NAME [YAML LINE …]: the one-step newsletter to
# everyone with a country, with extra top-level lines (`tracking: true`, …).
newsletter_campaign() {
    local file=$1 name=$2 line
    shift 2
    {
        echo "name: $name"
        echo 'from: "Acme Journal <journal@acme.example>"'
        for line in "$@"; do echo "$line"; done
        cat <<'YAML'
audience:
  attribute: country
  exists: true
steps:
  - id: issue
    subject: "The Acme Journal: what's new this month"
    template: newsletter
YAML
    } >"$file"
}

wrk_seconds() { # FILE: how long a wrk run lasted, in seconds, from its output
    grep -o 'requests in [0-9.]*[a-z]*' "$1" | awk '{v = $3; if (v ~ /m$/) { sub(/m/, "", v); v *= 60 } else sub(/s/, "", v); print v}'
}
