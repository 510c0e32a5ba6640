#!/usr/bin/env bash
# pgfloor.sh N: the single-connection Postgres floor for one flush of N keys: the same increments
# populate.py N makes (codes c1..cN with its counts), sorted by code, applied over one connection
# in one transaction, each way on a freshly populated urls; the floor is the best of two ways:
#   psql_values_1000_s  psql -1 -f of UPDATEs with 1,000-row literal VALUES lists (the time
#                       includes psql's start and connection)
#   unnest_10000_s      pgfloor/ (a small Rust program): UPDATE ... FROM unnest($1::text[], $2::int8[])
#                       with 10,000-element arrays bound as parameters, timed from BEGIN to COMMIT
# After each way, sum(access_count) must equal populate.py's expected total, or it fails.
# Prints pg_floor_s=... last.
#
# pgfloor/ is built (cargo build --release) into target/bench-pgfloor/ of this repository.
# BENCH_NO_BUILD=1 uses the binary there as is; when there is none, the floor is psql's way
# alone (said on stderr), which can only be slower than the best of both.
# populate.py runs FLUSHALL on REDIS_PORT's server: point it at a throwaway one (run.sh does).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd); root=$(cd "$here/.." && pwd)
export PGPASSWORD=${PGPASSWORD:-postgres}
N=${1:?usage: pgfloor.sh N}
psql_() { psql -qX -v ON_ERROR_STOP=1 -h "${DB_HOST:-localhost}" -p "${DB_PORT:-5432}" -U "${DB_USER:-postgres}" -d "${DB_NAME:-flusher_bench}" "$@"; }
check() {
  local got; got=$(psql_ -tAc "SELECT coalesce(sum(access_count), 0) FROM urls")
  [ "$got" = "$2" ] || { echo "pgfloor: after $1, sum(access_count)=$got, expected $2" >&2; exit 1; }
}
case "${BENCH_NO_BUILD:-}" in ""|0) build=1 ;; *) build= ;; esac
target=$root/target/bench-pgfloor; pgfloor=$target/release/pgfloor

tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
python3 - "$N" "$tmp" <<'PY'
import sys, random
n, d = int(sys.argv[1]), sys.argv[2]; rng = random.Random(42)
rows = sorted(('c%d' % i, rng.randint(1, 100)) for i in range(1, n + 1))
with open(d + '/values.sql', 'w') as f:
    for s in range(0, n, 1000):
        f.write('UPDATE urls SET access_count = access_count + d.count FROM (VALUES ' + ','.join("('%s',%d)" % r for r in rows[s:s+1000]) + ') AS d(short_code, count) WHERE urls.short_code = d.short_code;\n')
with open(d + '/rows.txt', 'w') as f:
    f.write(''.join('%s %d\n' % r for r in rows))
PY

expected=$("$here/populate.py" "$N" 0)
s=$(date +%s.%N); psql_ -1 -f "$tmp/values.sql"; e=$(date +%s.%N)
check "psql VALUES" "$expected"
v=$(python3 -c "print('%.3f' % ($e-$s))"); echo "psql_values_1000_s=$v"

[ -z "$build" ] || CARGO_TARGET_DIR=$target cargo build -q --release --manifest-path "$here/pgfloor/Cargo.toml"
if [ -x "$pgfloor" ]; then
  expected=$("$here/populate.py" "$N" 0)
  u=$("$pgfloor" "$N" 10000 unnest "$tmp/rows.txt" | cut -d= -f2)
  [ -n "$u" ] || { echo "pgfloor: $pgfloor printed no time" >&2; exit 1; }
  check "unnest" "$expected"
  echo "unnest_10000_s=$u"
else
  echo "pgfloor: no $pgfloor (BENCH_NO_BUILD): the floor is psql's VALUES way alone, not the best of two" >&2
  echo "unnest_10000_s=skipped"; u=
fi
python3 -c "import sys; print('pg_floor_s=%.3f' % min(map(float, sys.argv[1:])))" "$v" ${u:+"$u"}
