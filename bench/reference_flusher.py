#!/usr/bin/env python3
"""THE REFERENCE BEING REPLACED: the Python flusher that redis-flusher replaces, kept as the baseline that
`bench/run.sh compare` measures against. Do not fix it: its figures are only comparable as long as it does
what the old flusher did. Needs bench/requirements.txt (run.sh makes bench/.venv from it when missing).

What it does: SCAN url_hits:*, GETDEL every key in pipelines of 1,000 (each count leaves Redis there and
then), keep them all in memory, then one execute_values bulk UPDATE (pages of 10,000 rows) and one commit.

What it does wrong, which redis-flusher exists to fix:
- It deletes before the Postgres commit. Every count is GETDEL'd from Redis before the UPDATE is even sent;
  if Postgres is down, times out, refuses a row, or the process dies or is killed in between, those hits
  are gone from Redis and never reach Postgres: lost, with nothing to retry from.
- Hits for codes not in urls are deleted too and silently dropped (the UPDATE matches no row).
- A value that is not an integer raises after earlier keys are already deleted: every hit claimed up to
  then is lost.
- Everything is held in memory at once (all keys, then all counts: about 250 MB at 1M keys), and written
  in one transaction that holds every updated row's lock until the end.

Config from the env names it always used (REDIS_HOST/PORT, DB_HOST/PORT/NAME/USER/PASSWORD).
Same as the original shared reference_flusher.py, with this comment added."""
import os, sys, time
import redis, psycopg2
from psycopg2.extras import execute_values

SQL = """UPDATE urls SET access_count = access_count + data.count
FROM (VALUES %s) AS data(short_code, count)
WHERE urls.short_code = data.short_code"""

def main():
    r = redis.Redis(host=os.getenv("REDIS_HOST", "localhost"), port=int(os.getenv("REDIS_PORT", 6379)),
                    password=os.getenv("REDIS_PASSWORD") or None)
    conn = psycopg2.connect(host=os.getenv("DB_HOST", "localhost"), port=os.getenv("DB_PORT", 5432),
                            dbname=os.getenv("DB_NAME", "flusher_bench"), user=os.getenv("DB_USER", "postgres"),
                            password=os.getenv("DB_PASSWORD") or None)
    keys = list(r.scan_iter(match="url_hits:*", count=1000))
    if not keys:
        print("No keys to flush!")
        return
    data = []
    for i in range(0, len(keys), 1000):
        chunk = keys[i:i + 1000]
        pipe = r.pipeline(transaction=False)
        for k in chunk:
            pipe.getdel(k)
        for k, v in zip(chunk, pipe.execute()):
            if v is not None:
                data.append((k.decode()[len("url_hits:"):], int(v)))
    with conn:
        with conn.cursor() as cur:
            execute_values(cur, SQL, data, page_size=10000)
    print(f"Flushed {len(data)} keys.")

if __name__ == "__main__":
    main()
