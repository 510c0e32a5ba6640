#!/usr/bin/env bash
# bench/run.sh MODE ...: redis-flusher's speed and memory, measured. Everything it uses is in bench/.
#
#   flush N            populate.py N (N keys with counts 1-100, plus 1 % keys for codes not in urls,
#                      over a 2N-row urls), one `redis-flusher run`, totals checked (verify.sh);
#                      prints wall, keys/s, peak RSS
#   compare N [ROUNDS] ROUNDS (default 3) rounds on the same data; each round: the single-connection
#                      Postgres floor (pgfloor.sh: the same increments over one connection, sorted,
#                      in one transaction), then a flush with REDIS_FLUSHER_PG_CONNECTIONS=1, then one
#                      with the default (that variable unset), totals checked; prints per round and as
#                      medians: the floor, both flushers' times, each one's ratio to the floor (the
#                      median of the rounds' ratios), each one's peak RSS. Then the Python reference
#                      (reference_flusher.py) once, not with BENCH_NO_REFERENCE=1, and the ratio of
#                      each median to it. When python3 lacks its modules (redis, psycopg2), it makes
#                      bench/.venv from requirements.txt (said on stderr)
#   small [RUNS]       the whole process (start, connect, flush, exit) on 1,000 keys (counts i % 100 + 1,
#                      set again before each run) over a 2,000-row urls, RUNS times (default 30,
#                      hyperfine, 3 warm-ups); prints median, mean and max ms
#   slowlog N          Redis commands over 1 ms and over 5 ms during a flush of N keys, and the three
#                      slowest (SLOWLOG); claim-script (EVALSHA) and SCAN calls and time per call
#   pgside N B [random|sorted] [each|one] [index|planner] [unnamed|prepared]
#                      the Postgres side alone (bench/pgside.rs, built and run by cargo bench) on fresh
#                      data: N increments in batches of B; also the WAL written and how many updates
#                      were HOT
#   cluster N          N keys flushed from one Redis, then the same keys from a private 3-master
#                      Redis Cluster (populate_cluster.py), into the same table; wall and peak RSS
#                      of each, and the ratio
#   shards N [COUNTS]  N keys on a private 3-master Redis Cluster flushed by 1, then 2, then 3 shards
#                      at once (COUNTS, default "1 2 3"; --shard i/COUNT), fresh data each time; prints
#                      wall, the flusher's CPU (all shards), each master's and Postgres' CPU, peak RSS
#   serve [RUNS]       a run inside `serve` against a `run` process, on 1,000 keys (as small) over a
#                      2,000-row urls: RUNS (default 30) `run` processes timed whole (hyperfine, as small),
#                      then one `serve --interval 1s` for RUNS runs on 1,000 keys each (set again between
#                      runs) and RUNS runs on none; prints run's median, serve's mean per run of each kind
#                      (its run_duration_seconds), serve's RSS after its first run and at the end
#   stop N B           SIGTERM to a `run` (--pg-connections 1, --batch-size B) flushing N keys (batches
#                      double up to B, and no more than half the keys still to come: N = 4 B is enough), sent once a transaction that gathered
#                      0.9 B keys or more has started its merged UPDATE; prints how long the process took
#                      to exit and its code; then a second run flushes the rest and the totals are checked
#   explain ROWS [B]   EXPLAIN of one B-row batch's UPDATE (default 50000, a run's steady batch) against a
#                      ROWS-row urls, as the flusher runs it and as the planner would choose on its own
#
# Files, all in bench/: populate.py (the data; it runs FLUSHALL), verify.sh (totals), pgfloor.sh and
# pgfloor/ (the floor), reference_flusher.py and requirements.txt (the Python flusher being replaced).
# Builds: `cargo build --release` first (flush, compare, small, slowlog), and pgfloor.sh builds
# pgfloor/ into target/bench-pgfloor. BENCH_NO_BUILD=1 skips both: target/release/redis-flusher is
# used as is (it must exist), and the floor uses its helper if built, else psql's way alone.
# Redis: a private redis-server on a free port, because populate.py runs FLUSHALL (set REDIS_PORT to
# use another throwaway server instead). PostgreSQL: DB_HOST/DB_PORT/DB_USER (default
# 127.0.0.1:5432, postgres), database DB_NAME (default flusher_bench, created if missing); its `urls`
# table is dropped and rebuilt. Other REDIS_FLUSHER_* variables in the environment reach every run.
# Machines are noisy (±20 % between identical runs here): compare ratios from `compare`.
set -euo pipefail
shopt -s inherit_errexit
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0" >&2; exit 2; }
mode=${1:-}; shift || true
case "$mode" in flush|compare|small|slowlog|pgside|explain|cluster|shards|serve|stop) ;; *) usage ;; esac

export DB_HOST=${DB_HOST:-127.0.0.1} DB_PORT=${DB_PORT:-5432} DB_USER=${DB_USER:-postgres}
export DB_NAME=${DB_NAME:-flusher_bench} REDIS_HOST=${REDIS_HOST:-127.0.0.1}
psql_() { psql -qX -v ON_ERROR_STOP=1 -h "$DB_HOST" -p "$DB_PORT" -U "$DB_USER" "$@"; }

tmp=$(mktemp -d)
cleanup() { [ -z "${rdir:-}" ] || { kill "$(cat "$rdir/redis.pid")" 2>/dev/null; rm -rf "$rdir"; }; rm -rf "$tmp"; }
trap cleanup EXIT
if [ -z "${REDIS_PORT:-}" ]; then
  REDIS_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  rdir=$(mktemp -d)
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$rdir" \
    --daemonize yes --pidfile "$rdir/redis.pid" >/dev/null
  for _ in $(seq 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
  redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 || { echo "bench: redis-server on port $REDIS_PORT did not start" >&2; exit 1; }
fi
export REDIS_PORT
rcli() { redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" "$@"; }

bin=$root/target/release/redis-flusher
# BENCH_NO_BUILD=1 (any value but empty or 0): no cargo build, the binary as it is.
no_build() { case "${BENCH_NO_BUILD:-}" in ""|0) return 1 ;; *) return 0 ;; esac; }
need_bin() {
  if no_build; then
    [ -x "$bin" ] || { echo "bench: BENCH_NO_BUILD is set and $bin does not exist" >&2; exit 2; }
  else
    (cd "$root" && cargo build --release --quiet)
  fi
}

median() { sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

# populate.py's FLUSHALL also wipes redis-flusher's journal index, which a Redis where it has run
# before keeps; the first run on such a Redis scans the whole keyspace once for journals (about 6 s
# at 10M keys; docs/performance.md). An untimed run on a pattern that matches nothing makes the
# index, so that the timed run is the steady state cron sees.
warm_index() {
  [ -x "$bin" ] || return 0
  "$bin" run --pattern 'redis_flusher_bench_nothing:*' >/dev/null 2>"$tmp/warm" || { cat "$tmp/warm" >&2; exit 1; }
}

# A private 3-master Redis Cluster on free ports (each bus port, port + 10000, free too);
# sets `ports`, and removes it at exit.
start_cluster() {
  ports=() cdir=$(mktemp -d)
  for i in 1 2 3; do
    # A cluster node's bus is its port + 10000, so a port above 55535 is refused, and the
    # bus port must be free too.
    p=$(python3 -c '
import random, socket
while True:
    p = random.randint(20000, 55000)
    try:
        for q in (p, p + 10000):
            s = socket.socket(); s.bind(("127.0.0.1", q)); s.close()
        print(p); break
    except OSError:
        pass')
    mkdir "$cdir/$p"
    redis-server --port "$p" --bind 127.0.0.1 --save "" --appendonly no --dir "$cdir/$p" \
      --cluster-enabled yes --cluster-config-file nodes.conf --daemonize yes --pidfile "$cdir/$p/pid" >/dev/null
    ports+=("$p")
  done
  trap 'for p in "${ports[@]}"; do kill "$(cat "$cdir/$p/pid")" 2>/dev/null; done; rm -rf "$cdir"; cleanup' EXIT
  for p in "${ports[@]}"; do for _ in $(seq 50); do redis-cli -p "$p" ping >/dev/null 2>&1 && break; sleep 0.1; done; done
  redis-cli --cluster create $(printf '127.0.0.1:%s ' "${ports[@]}") --cluster-replicas 0 --cluster-yes >/dev/null
  for _ in $(seq 100); do redis-cli -p "${ports[0]}" cluster info | grep -q 'cluster_state:ok' && break; sleep 0.1; done
}

# populate N, run CMD under /usr/bin/time, verify; prints "wall_s rss_kb"
timed_flush() {
  local n=$1; shift
  local expected
  expected=$("$here/populate.py" "$n")
  warm_index
  /usr/bin/time -f "%e %M" -o "$tmp/time" "$@" >/dev/null 2>"$tmp/err" || { cat "$tmp/err" >&2; exit 1; }
  "$here/verify.sh" "$expected" >/dev/null || { echo "bench: totals wrong after: $*" >&2; "$here/verify.sh" "$expected" >&2; exit 1; }
  cat "$tmp/time"
}

# The interpreter for reference_flusher.py: python3 when it has redis and psycopg2, else
# bench/.venv, made from requirements.txt the first time.
reference_python() {
  local venv=$here/.venv
  if python3 -c 'import redis, psycopg2' 2>/dev/null; then echo python3; return; fi
  if ! "$venv/bin/python" -c 'import redis, psycopg2' 2>/dev/null; then
    echo "bench: python3 lacks redis/psycopg2 for the reference; installing bench/requirements.txt into bench/.venv" >&2
    python3 -m venv "$venv" >&2 || { echo "bench: could not make $venv (python3-venv?)" >&2; exit 2; }
    "$venv/bin/pip" install -q -r "$here/requirements.txt" >&2 ||
      { echo "bench: could not install $here/requirements.txt into $venv" >&2; exit 2; }
  fi
  echo "$venv/bin/python"
}

case "$mode" in
flush)
  n=${1:?N}
  need_bin
  out=$(timed_flush "$n" "$bin" run); read -r wall rss <<<"$out"
  python3 -c "import sys; n,w,r=int(sys.argv[1]),float(sys.argv[2]),int(sys.argv[3]); print(f'keys={n} wall_s={w:.2f} keys_per_s={n/w:,.0f} peak_rss_mib={r/1024:.1f} totals=exact')" "$n" "$wall" "$rss"
  ;;
compare)
  n=${1:?N}; rounds=${2:-3}
  need_bin
  # Settled before the rounds, so that a missing module does not end a long run at its end.
  [ -n "${BENCH_NO_REFERENCE:-}" ] || refpy=$(reference_python)
  : >"$tmp/rounds"
  for r in $(seq "$rounds"); do
    floor=$("$here/pgfloor.sh" "$n" | sed -n 's/^pg_floor_s=//p')
    [ -n "$floor" ] || { echo "bench: pgfloor.sh printed no pg_floor_s" >&2; exit 1; }
    out=$(timed_flush "$n" env REDIS_FLUSHER_PG_CONNECTIONS=1 "$bin" run); read -r w1 m1 <<<"$out"
    out=$(timed_flush "$n" env -u REDIS_FLUSHER_PG_CONNECTIONS "$bin" run); read -r wd md <<<"$out"
    echo "$floor $w1 $m1 $wd $md" >>"$tmp/rounds"
    python3 - "$r" "$floor" "$w1" "$m1" "$wd" "$md" <<'PY'
import sys
r, (floor, w1, m1, wd, md) = sys.argv[1], map(float, sys.argv[2:])
print(f"round {r}: pg_floor_s={floor:.3f} flusher_n1_s={w1:.2f} flusher_default_s={wd:.2f} "
      f"n1_to_floor={w1/floor:.3f} default_to_floor={wd/floor:.3f} "
      f"n1_peak_rss_mib={m1/1024:.1f} default_peak_rss_mib={md/1024:.1f}")
PY
  done
  if [ -n "${BENCH_NO_REFERENCE:-}" ]; then
    ref=nan refrss=nan
  else
    out=$(timed_flush "$n" "$refpy" "$here/reference_flusher.py"); read -r ref refrss <<<"$out"
  fi
  python3 - "$n" "$ref" "$refrss" "$tmp/rounds" <<'PY'
import sys
from statistics import median
n, ref, refrss = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
rounds = [list(map(float, line.split())) for line in open(sys.argv[4])]
floor, w1, m1, wd, md = (median(c) for c in zip(*rounds))
r1 = median(r[1] / r[0] for r in rounds); rd = median(r[3] / r[0] for r in rounds)
print(f"keys={n} rounds={len(rounds)} median_pg_floor_s={floor:.3f} median_flusher_n1_s={w1:.2f} "
      f"median_flusher_default_s={wd:.2f} reference_s={ref:.2f}")
print(f"median_n1_to_floor={r1:.3f} median_default_to_floor={rd:.3f} "
      f"n1_to_reference={w1/ref:.3f} default_to_reference={wd/ref:.3f}")
print(f"median_n1_peak_rss_mib={m1/1024:.1f} median_default_peak_rss_mib={md/1024:.1f} "
      f"reference_peak_rss_mib={refrss/1024:.1f}")
PY
  ;;
small)
  runs=${1:-30}
  command -v hyperfine >/dev/null || { echo "bench: small needs hyperfine: apt-get install hyperfine" >&2; exit 2; }
  need_bin
  "$here/populate.py" 1000 0 >/dev/null
  prep="python3 -c \"import sys; sys.stdout.write(''.join('SET url_hits:c%d %d\\r\\n' % (i, i % 100 + 1) for i in range(1, 1001)))\" | redis-cli -h $REDIS_HOST -p $REDIS_PORT --pipe >/dev/null"
  hyperfine --shell=bash --runs "$runs" --warmup 3 --prepare "$prep" --export-json "$tmp/small.json" "$bin run" >&2
  python3 -c "import json, sys; r=json.load(open(sys.argv[1]))['results'][0]; print(f'keys=1000 runs={len(r[\"times\"])} median_ms={r[\"median\"]*1000:.1f} mean_ms={r[\"mean\"]*1000:.1f} max_ms={r[\"max\"]*1000:.1f}')" "$tmp/small.json"
  ;;
shards)
  n=${1:?N}; counts=${2:-1 2 3}
  need_bin
  start_cluster
  # CPU seconds (user + system, and of reaped children) of every process named $1.
  cpu_of() {
    local t=0 pid
    for pid in $(pgrep -x "$1"); do
      t=$(awk -v t="$t" '{ print t + ($14 + $15 + $16 + $17) / 100 }' "/proc/$pid/stat" 2>/dev/null || echo "$t")
    done
    echo "$t"
  }
  redis_cpu() { redis-cli -p "$1" info cpu | tr -d '\r' | awk -F: '/^used_cpu_(user|sys):/ { t += $2 } END { print t }'; }
  for count in $counts; do
    expected=$("$here/populate.py" "$n")
    "$here/populate_cluster.py" "$n" "${ports[@]}" >/dev/null
    rc0=(); for p in "${ports[@]}"; do rc0+=("$(redis_cpu "$p")"); done
    pg0=$(cpu_of postgres)
    t0=$(date +%s.%N)
    pids=()
    for ((i = 0; i < count; i++)); do
      /usr/bin/time -f "%e %U %S %M" -o "$tmp/time.$i" env REDIS_CLUSTER=true \
        REDIS_URL="redis://127.0.0.1:${ports[0]}" "$bin" run --shard "$i/$count" >/dev/null 2>"$tmp/err.$i" &
      pids+=($!)
    done
    for i in "${!pids[@]}"; do wait "${pids[$i]}" || { cat "$tmp/err.$i" >&2; exit 1; }; done
    t1=$(date +%s.%N)
    pg1=$(cpu_of postgres)
    per_master=""
    for j in "${!ports[@]}"; do
      per_master+=$(python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.2f} ', end='')" "${rc0[$j]}" "$(redis_cpu "${ports[$j]}")")
    done
    got=$(psql_ -d "$DB_NAME" -tAc "SELECT coalesce(sum(access_count), 0) FROM urls")
    left=0; for p in "${ports[@]}"; do left=$((left + $(redis-cli -p "$p" --scan --pattern 'url_hits:c*' | wc -l))); done
    [ "$got" = "$expected" ] && [ "$left" = 0 ] || { echo "bench: $count shards: got $got of $expected, $left keys left" >&2; exit 1; }
    cat "$tmp"/time.* | awk -v n="$n" -v c="$count" -v t0="$t0" -v t1="$t1" -v pg0="$pg0" -v pg1="$pg1" -v rm="$per_master" '
      { cpu += $2 + $3; if ($4 > rss) rss = $4 }
      END { printf "keys=%d shards=%d wall_s=%.2f flusher_cpu_s=%.2f redis_cpu_s_per_master=%s postgres_cpu_s=%.2f peak_rss_mib_per_shard=%.1f totals=exact\n", n, c, t1 - t0, cpu, rm, pg1 - pg0, rss / 1024 }'
    rm -f "$tmp"/time.* "$tmp"/err.*
  done
  ;;
serve)
  runs=${1:-30}
  command -v hyperfine >/dev/null || { echo "bench: serve needs hyperfine: apt-get install hyperfine" >&2; exit 2; }
  need_bin
  "$here/populate.py" 1000 0 >/dev/null
  warm_index
  prep="python3 -c \"import sys; sys.stdout.write(''.join('SET url_hits:c%d %d\\r\\n' % (i, i % 100 + 1) for i in range(1, 1001)))\" | redis-cli -h $REDIS_HOST -p $REDIS_PORT --pipe >/dev/null"
  hyperfine --shell=bash --runs "$runs" --warmup 3 --prepare "$prep" --export-json "$tmp/run.json" "$bin run" >&2
  "$here/serve_cost.py" "$bin" "$runs" "$tmp/run.json"
  ;;
stop)
  n=${1:?N}; b=${2:?B}
  need_bin
  expected=$("$here/populate.py" "$n")
  warm_index
  RUST_LOG=debug "$bin" run --pg-connections 1 --batch-size "$b" 2>"$tmp/err" &
  pid=$!
  # A transaction of 0.9 B keys or more (src/postgres/stage.rs logs "N batches (K keys)
  # gathered" before its merged UPDATE), then that UPDATE running: WITH done AS (UPDATE ...).
  want=$((b * 9 / 10)) seen=""
  while kill -0 "$pid" 2>/dev/null; do
    if [ -z "$seen" ]; then
      seen=$(sed -n 's/.* batches (\([0-9]*\) keys) gathered.*/\1/p' "$tmp/err" | awk -v w="$want" '$1 >= w { print; exit }')
    else
      busy=$(psql_ -d "$DB_NAME" -tAc "SELECT count(*) FROM pg_stat_activity WHERE state = 'active'
        AND query LIKE 'WITH done AS (UPDATE%redis_flusher_merged%'")
      [ "$busy" = 0 ] || break
    fi
    sleep 0.05
  done
  kill -0 "$pid" 2>/dev/null || {
    echo "bench: the run ended before a transaction of $want keys or more was applying; its transactions (keys):" \
      "$(sed -n 's/.* batches (\([0-9]*\) keys) gathered.*/\1/p' "$tmp/err" | tr '\n' ' ')" >&2
    grep -v DEBUG "$tmp/err" >&2; exit 1; }
  t0=$(date +%s.%N)
  kill -TERM "$pid"
  set +e; wait "$pid"; rc=$?; set -e
  t1=$(date +%s.%N)
  flushed=$(psql_ -d "$DB_NAME" -tAc "SELECT coalesce(sum(access_count), 0) FROM urls")
  grep -v DEBUG "$tmp/err" | grep -E 'SIGTERM|stopp' | sed 's/^/  log: /' >&2 || true
  "$bin" run >/dev/null 2>"$tmp/err2" || { cat "$tmp/err2" >&2; exit 1; }
  "$here/verify.sh" "$expected" >/dev/null || { echo "bench: totals wrong after the stop and a second run" >&2; "$here/verify.sh" "$expected" >&2; exit 1; }
  python3 -c "import sys; n,k,a,b,rc,f,e=int(sys.argv[1]),int(sys.argv[2]),float(sys.argv[3]),float(sys.argv[4]),sys.argv[5],int(sys.argv[6]),int(sys.argv[7]); print(f'keys={n} transaction_in_flight_keys={k} sigterm_to_exit_s={b-a:.2f} exit_code={rc} hits_applied_by_the_stopped_run={f} of {e} totals_after_next_run=exact')" "$n" "$seen" "$t0" "$t1" "$rc" "$flushed" "$expected"
  ;;
slowlog)
  n=${1:?N}
  need_bin
  "$here/populate.py" "$n" >/dev/null
  warm_index
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
  "$here/populate.py" "$n" 0 >/dev/null
  q() { psql_ -d "$DB_NAME" -tAc "$1"; }
  lsn=$(q "SELECT pg_current_wal_lsn()")
  (cd "$root" && cargo bench --quiet --bench pgside -- "$n" "$b" "$@")
  q "SELECT 'wal_mb=' || pg_wal_lsn_diff(pg_current_wal_lsn(), '$lsn') / 1048576 || ' hot_updates=' || n_tup_hot_upd
     FROM pg_stat_user_tables WHERE relname = 'urls'" | sed 's/\.[0-9]*//'
  ;;
cluster)
  n=${1:?N}
  need_bin
  # Redis time and calls of a run's commands on a server (INFO commandstats since a reset).
  redis_time() {
    redis-cli -p "$1" info commandstats | tr -d '\r' | awk -F'[:=,]' -v what="$2" '
      /^cmdstat_/ { calls += $3; usec += $5; sub(/^cmdstat_/, "", $1); if ($5 > 50000) top = top sprintf(" %s %d calls %.2f s;", $1, $3, $5 / 1e6) }
      END { printf "%s: %d commands, %.2f s of Redis time:%s\n", what, calls, usec / 1e6, top }'
  }
  expected=$("$here/populate.py" "$n")
  warm_index
  rcli config resetstat >/dev/null
  /usr/bin/time -f "%e %M" -o "$tmp/time" "$bin" run >/dev/null 2>"$tmp/err" || { cat "$tmp/err" >&2; exit 1; }
  "$here/verify.sh" "$expected" >/dev/null || { echo "bench: totals wrong after the one-Redis run" >&2; exit 1; }
  read -r ws ms <"$tmp/time"
  redis_time "$REDIS_PORT" "one Redis"
  start_cluster
  expected=$("$here/populate.py" "$n")
  "$here/populate_cluster.py" "$n" "${ports[@]}" >/dev/null
  for p in "${ports[@]}"; do redis-cli -p "$p" config resetstat >/dev/null; done
  /usr/bin/time -f "%e %M" -o "$tmp/time" env REDIS_CLUSTER=true \
    REDIS_URL="redis://127.0.0.1:${ports[0]}" "$bin" run >/dev/null 2>"$tmp/err" || { cat "$tmp/err" >&2; exit 1; }
  for p in "${ports[@]}"; do redis_time "$p" "cluster master :$p"; done
  read -r wc mc <"$tmp/time"
  got=$(psql_ -d "$DB_NAME" -tAc "SELECT coalesce(sum(access_count), 0) FROM urls")
  left=0; for p in "${ports[@]}"; do left=$((left + $(redis-cli -p "$p" --scan --pattern 'url_hits:c*' | wc -l))); done
  [ "$got" = "$expected" ] && [ "$left" = 0 ] || { echo "bench: cluster totals wrong: got $got of $expected, $left keys left" >&2; exit 1; }
  python3 -c "import sys; n,ws,ms,wc,mc=int(sys.argv[1]),float(sys.argv[2]),int(sys.argv[3]),float(sys.argv[4]),int(sys.argv[5]); print(f'keys={n} one_redis_s={ws:.2f} cluster_3_masters_s={wc:.2f} ratio={wc/ws:.2f} one_redis_rss_mib={ms/1024:.1f} cluster_rss_mib={mc/1024:.1f} totals=exact')" "$n" "$ws" "$ms" "$wc" "$mc"
  ;;
explain)
  rows=${1:?ROWS}; b=${2:-50000}
  psql_ -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$DB_NAME'" | grep -q 1 || psql_ -d postgres -c "CREATE DATABASE \"$DB_NAME\""
  psql_ -d "$DB_NAME" -c "DROP TABLE IF EXISTS urls;
    CREATE TABLE urls (id serial PRIMARY KEY, short_code varchar(255) UNIQUE NOT NULL,
      original_url text NOT NULL, access_count integer DEFAULT 0);
    INSERT INTO urls (short_code, original_url) SELECT 'c'||g, 'https://example.com/'||g FROM generate_series(1, $rows) g;"
  psql_ -d "$DB_NAME" -c "VACUUM ANALYZE urls"
  # The statement src/postgres/apply.rs builds (update_sql, unnest form), with one batch of
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
esac
