#!/usr/bin/env bash
# bench/run.sh MODE ...: redis-flusher's speed and memory, measured.
#
#   flush N            build N keys over a 2N-row urls, flush, check totals; wall, keys/s, peak RSS
#   compare N [ROUNDS] ROUNDS (default 3) interleaved rounds of the Postgres floor and the
#                      flusher on the same data, then the Python reference once (not with
#                      BENCH_NO_REFERENCE=1); medians, ratios
#   small [RUNS]       1,000 keys, the whole process (start, connect, flush, exit), RUNS times
#                      (default 30, hyperfine); prints the median
#   slowlog N          Redis commands over 1 ms and over 5 ms during a flush of N keys, and
#                      the three slowest (SLOWLOG); claim-script and SCAN time per call
#   pgside N B [random|sorted] [each|one] [index|planner]
#                      the Postgres side alone (bench/pgside.rs) on fresh data: N increments
#                      in batches of B; also the WAL written and how many updates were HOT
#   explain ROWS [B]   EXPLAIN of one B-row batch's UPDATE (default 50000, the default batch)
#                      against a ROWS-row urls, as the flusher runs it and as the planner
#                      would choose on its own
#
# Data comes from ../shared/bench (populate.py, verify.sh, pgfloor.sh, reference_flusher.py;
# BENCH_SHARED overrides the path). Redis: a private redis-server on a free port, because
# populate.py runs FLUSHALL (set REDIS_PORT to use another throwaway server). PostgreSQL:
# DB_HOST/DB_PORT/DB_USER (default localhost:5432, postgres), database DB_NAME (default
# flusher_bench, created if missing); its `urls` table is dropped and rebuilt.
# Machines are noisy (±20 % between identical runs here): compare ratios from `compare`.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
shared=${BENCH_SHARED:-$root/../shared/bench}
[ -x "$shared/populate.py" ] || { echo "bench: $shared/populate.py not found; set BENCH_SHARED" >&2; exit 2; }

export DB_HOST=${DB_HOST:-127.0.0.1} DB_PORT=${DB_PORT:-5432} DB_USER=${DB_USER:-postgres}
export DB_NAME=${DB_NAME:-flusher_bench} REDIS_HOST=${REDIS_HOST:-127.0.0.1}
psql_() { psql -qX -v ON_ERROR_STOP=1 -h "$DB_HOST" -p "$DB_PORT" -U "$DB_USER" "$@"; }

if [ -z "${REDIS_PORT:-}" ]; then
  REDIS_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  rdir=$(mktemp -d)
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$rdir" \
    --daemonize yes --pidfile "$rdir/redis.pid" >/dev/null
  trap 'kill "$(cat "$rdir/redis.pid")" 2>/dev/null; rm -rf "$rdir"' EXIT
  for _ in $(seq 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
fi
export REDIS_PORT
rcli() { redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" "$@"; }

bin=$root/target/release/redis-flusher
(cd "$root" && cargo build --release --quiet)

median() { sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

# populate N, run CMD under /usr/bin/time, verify; prints "wall rss_kb"
timed_flush() {
  local n=$1; shift
  local expected out
  expected=$("$shared/populate.py" "$n")
  out=$(mktemp)
  /usr/bin/time -f "%e %M" -o "$out" "$@" >/dev/null 2>"$out.err" || { cat "$out.err" >&2; exit 1; }
  "$shared/verify.sh" "$expected" >/dev/null || { echo "bench: totals wrong after: $*" >&2; "$shared/verify.sh" "$expected" >&2; exit 1; }
  cat "$out"; rm -f "$out" "$out.err"
}

mode=${1:-}; shift || true
case "$mode" in
flush)
  n=${1:?N}
  read -r wall rss < <(timed_flush "$n" "$bin" run)
  python3 -c "import sys; n,w,r=int(sys.argv[1]),float(sys.argv[2]),int(sys.argv[3]); print(f'keys={n} wall_s={w:.2f} keys_per_s={n/w:,.0f} peak_rss_mib={r/1024:.1f} totals=exact')" "$n" "$wall" "$rss"
  ;;
compare)
  n=${1:?N}; rounds=${2:-3}
  floors=() flushes=() rsss=()
  for r in $(seq "$rounds"); do
    f=$("$shared/pgfloor.sh" "$n" | sed -n 's/^pg_floor_s=//p')
    read -r wall rss < <(timed_flush "$n" "$bin" run)
    echo "round $r: pg_floor_s=$f redis_flusher_s=$wall peak_rss_kb=$rss"
    floors+=("$f") flushes+=("$wall") rsss+=("$rss")
  done
  if [ -n "${BENCH_NO_REFERENCE:-}" ]; then
    ref=nan refrss=nan
  else
    python3 -c 'import redis, psycopg2' 2>/dev/null || { echo "bench: the reference needs: pip install redis psycopg2-binary" >&2; exit 2; }
    read -r ref refrss < <(timed_flush "$n" "$shared/reference_flusher.py")
  fi
  fm=$(printf '%s\n' "${floors[@]}" | median); wm=$(printf '%s\n' "${flushes[@]}" | median)
  rm_=$(printf '%s\n' "${rsss[@]}" | sort -g | tail -1)
  python3 - "$n" "$fm" "$wm" "$ref" "$rm_" "$refrss" <<'PY'
import sys
n, floor, ours, ref, rss, refrss = int(sys.argv[1]), *map(float, sys.argv[2:])
print(f"keys={n} median_pg_floor_s={floor:.2f} median_redis_flusher_s={ours:.2f} reference_s={ref:.2f}")
print(f"ratio_to_floor={ours/floor:.3f} ratio_to_reference={ours/ref:.3f} "
      f"peak_rss_mib={rss/1024:.1f} reference_peak_rss_mib={refrss/1024:.1f}")
PY
  ;;
small)
  runs=${1:-30}
  command -v hyperfine >/dev/null || { echo "bench: small needs hyperfine: apt-get install hyperfine" >&2; exit 2; }
  "$shared/populate.py" 1000 0 >/dev/null
  prep="python3 -c \"import sys; sys.stdout.write(''.join('SET url_hits:c%d %d\\r\\n' % (i, i % 100 + 1) for i in range(1, 1001)))\" | redis-cli -h $REDIS_HOST -p $REDIS_PORT --pipe >/dev/null"
  hyperfine --shell=bash --runs "$runs" --warmup 3 --prepare "$prep" --export-json /tmp/bench-small.json "$bin run" >&2
  python3 -c "import json; r=json.load(open('/tmp/bench-small.json'))['results'][0]; print(f'keys=1000 runs={len(r[\"times\"])} median_ms={r[\"median\"]*1000:.1f} mean_ms={r[\"mean\"]*1000:.1f} max_ms={r[\"max\"]*1000:.1f}')"
  ;;
slowlog)
  n=${1:?N}
  "$shared/populate.py" "$n" >/dev/null
  # Logged from 1 ms, so that the slowest command is known even when none passes 5 ms.
  rcli config set slowlog-log-slower-than 1000 >/dev/null; rcli config set slowlog-max-len 100000 >/dev/null
  rcli slowlog reset >/dev/null; rcli config resetstat >/dev/null
  "$bin" run 2>/dev/null
  # In each entry, the line after the Unix timestamp is the duration in microseconds.
  rcli slowlog get 100000 | awk 'prev ~ /^[0-9]+$/ && length(prev) >= 9 { print $1 } { prev = $0 }' | sort -g |
    awk -v n="$n" '{ d[NR] = $1; if ($1 > 5000) over++ }
      END { printf "keys=%d commands_over_1ms=%d commands_over_5ms=%d slowest_us: %s %s %s\n", n, NR, over, d[NR-2], d[NR-1], d[NR] }'
  rcli info commandstats | grep -E 'cmdstat_(evalsha|scan):' | sed 's/,rejected_calls.*//'
  ;;
pgside)
  n=${1:?N}; b=${2:?BATCH}; shift 2
  (cd "$root" && cargo build --release --quiet --bench pgside)
  "$shared/populate.py" "$n" 0 >/dev/null
  q() { psql_ -d "$DB_NAME" -tAc "$1"; }
  lsn=$(q "SELECT pg_current_wal_lsn()")
  (cd "$root" && cargo bench --quiet --bench pgside -- "$n" "$b" "$@")
  q "SELECT 'wal_mb=' || pg_wal_lsn_diff(pg_current_wal_lsn(), '$lsn') / 1048576 || ' hot_updates=' || n_tup_hot_upd
     FROM pg_stat_user_tables WHERE relname = 'urls'" | sed 's/\.[0-9]*//'
  ;;
explain)
  rows=${1:?ROWS}; b=${2:-50000}
  psql_ -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$DB_NAME'" | grep -q 1 || psql_ -d postgres -c "CREATE DATABASE \"$DB_NAME\""
  psql_ -d "$DB_NAME" -c "DROP TABLE IF EXISTS urls;
    CREATE TABLE urls (id serial PRIMARY KEY, short_code varchar(255) UNIQUE NOT NULL,
      original_url text NOT NULL, access_count integer DEFAULT 0);
    INSERT INTO urls (short_code, original_url) SELECT 'c'||g, 'https://example.com/'||g FROM generate_series(1, $rows) g;"
  psql_ -d "$DB_NAME" -c "VACUUM ANALYZE urls"
  # The statement src/postgres_sink.rs prepares (update_sql, unnest form), with one batch of
  # B random codes as its parameters, so that the plan is the custom plan a run gets.
  codes=$(python3 -c "import sys; r, b = map(int, sys.argv[1:]); print(','.join(sorted('c%d' % (1 + i * 7919 % r) for i in range(1, b + 1))))" "$rows" "$b")
  ones=$(python3 -c "import sys; print(','.join(['1'] * int(sys.argv[1])))" "$b")
  q="PREPARE u(text[], int8[]) AS UPDATE urls AS u SET access_count = u.access_count + d.count
       FROM unnest(\$1, \$2) AS d(code, count) WHERE u.short_code = d.code RETURNING d.code;
     EXPLAIN EXECUTE u('{$codes}', '{$ones}');"
  echo "== $b-row batch, $rows rows, as redis-flusher runs it (hash and merge joins off for its session)"
  printf 'SET enable_hashjoin = off; SET enable_mergejoin = off;\n%s\n' "$q" | psql_ -d "$DB_NAME" -f -
  echo "== $b-row batch, $rows rows, the planner's own choice"
  printf '%s\n' "$q" | psql_ -d "$DB_NAME" -f -
  ;;
*)
  sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
  ;;
esac
