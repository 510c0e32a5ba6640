#!/usr/bin/env python3
"""populate.py N [UNKNOWN_PCT]: WIPES the Redis server (FLUSHALL) and the table urls in DB_NAME (default flusher_bench), then builds: fresh urls table with 2N rows (c1..c2N, access_count 0), Redis keys
url_hits:c1..url_hits:cN with counts 1..100 (deterministic), plus UNKNOWN_PCT% keys for codes not in the table.
Prints the expected sum of access_count after one correct flush.

The data is the same as the original shared populate.py made (same keys, counts, table): figures stay comparable.
Unlike it, REDIS_PORT must be given (no default of 6379): this script runs FLUSHALL on that server, so point it
at a throwaway redis-server (bench/run.sh starts a private one)."""
import os, sys, subprocess, random
n = int(sys.argv[1]); unknown = float(sys.argv[2]) if len(sys.argv) > 2 else 1.0
if not os.getenv("REDIS_PORT"):
    sys.exit("populate.py: set REDIS_PORT to a throwaway Redis server: this script runs FLUSHALL on it")
db = os.getenv("DB_NAME", "flusher_bench")
host = os.getenv("DB_HOST", "localhost"); port = os.getenv("DB_PORT", "5432"); user = os.getenv("DB_USER", "postgres")
rcli = ["redis-cli", "-h", os.getenv("REDIS_HOST", "127.0.0.1"), "-p", os.environ["REDIS_PORT"]]
base = ["psql", "-q", "-v", "ON_ERROR_STOP=1", "-h", host, "-p", port, "-U", user]
exists = subprocess.run(base + ["-d", "postgres", "-tAc", f"SELECT 1 FROM pg_database WHERE datname = '{db}'"],
                        check=True, capture_output=True, text=True).stdout.strip()
if not exists:
    subprocess.run(base + ["-d", "postgres", "-c", f'CREATE DATABASE "{db}"'], check=True)
psql = base + ["-d", db]
subprocess.run(psql + ["-c", f"""
DROP TABLE IF EXISTS urls;
CREATE TABLE urls (id SERIAL PRIMARY KEY, short_code VARCHAR(255) UNIQUE NOT NULL,
  original_url TEXT NOT NULL, access_count INTEGER DEFAULT 0, created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP);
INSERT INTO urls (short_code, original_url) SELECT 'c'||g, 'https://example.com/'||g FROM generate_series(1,{2*n}) g;"""], check=True)
subprocess.run(psql + ["-c", "VACUUM ANALYZE urls"], check=True)
subprocess.run(psql + ["-c", "CHECKPOINT"], check=True)
subprocess.run(rcli + ["FLUSHALL"], check=True, stdout=subprocess.DEVNULL)
rng = random.Random(42)
expected = 0
lines = []
for i in range(1, n + 1):
    c = rng.randint(1, 100); expected += c
    lines.append(f"SET url_hits:c{i} {c}\r\n")
for i in range(int(n * unknown / 100)):
    lines.append(f"SET url_hits:zz{i} 7\r\n")
subprocess.run(rcli + ["--pipe"], input="".join(lines).encode(), check=True, stdout=subprocess.DEVNULL)
print(expected)
