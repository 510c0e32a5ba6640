#!/usr/bin/env python3
"""serve_cost.py BIN RUNS RUN_JSON: the `serve` half of `bench/run.sh serve` (which sets the
environment: REDIS_HOST/REDIS_PORT of a throwaway Redis, DB_* of the bench database, urls of
2,000 rows). Starts `BIN serve --interval 1s --listen` on a free port, and:

  - for RUNS runs, sets the 1,000 keys again half an interval after each run ends (runs take
    milliseconds, so the next run finds them all), then RUNS runs with nothing to flush;
  - reads /metrics after each phase: runs, keys and run_duration_seconds (sum and count);
  - reads the process' RSS from /proc after its first run and at the end (VmRSS, VmHWM).

Prints one line of figures, with run's median from RUN_JSON (hyperfine's export) beside them.
Fails when a run failed or a phase flushed other than 1,000 keys a run."""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request

bin_, runs, run_json = sys.argv[1], int(sys.argv[2]), sys.argv[3]
rcli = ["redis-cli", "-h", os.environ["REDIS_HOST"], "-p", os.environ["REDIS_PORT"]]
keys = "".join("SET url_hits:c%d %d\r\n" % (i, i % 100 + 1) for i in range(1, 1001))

s = socket.socket()
s.bind(("127.0.0.1", 0))
port = s.getsockname()[1]
s.close()


def set_keys():
    subprocess.run(rcli + ["--pipe"], input=keys.encode(), check=True, stdout=subprocess.DEVNULL)


def metrics():
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    m = {}
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        m[name] = float(value)
    return m


def finished(m):
    return sum(v for k, v in m.items() if k.startswith("redis_flusher_runs_total"))


def rss_kib(pid):
    status = open(f"/proc/{pid}/status").read()
    return {k: int(re.search(rf"^{k}:\s+(\d+) kB", status, re.M).group(1)) for k in ("VmRSS", "VmHWM")}


def wait_runs(n, before, reset):
    """Waits for n more finished runs; after each, half an interval later, `reset` (if any)."""
    done = before
    while done < before + n:
        time.sleep(0.02)
        now = finished(metrics())
        if now > done:
            done = now
            if reset and done < before + n:
                time.sleep(0.5)
                reset()


set_keys()
proc = subprocess.Popen([bin_, "serve", "--interval", "1s", "--listen", f"127.0.0.1:{port}"],
                        stdout=subprocess.DEVNULL, stderr=open(os.devnull, "w"))
try:
    for _ in range(200):
        try:
            m = metrics()
            break
        except OSError:
            time.sleep(0.05)
    else:
        sys.exit("serve_cost.py: serve did not answer on /metrics")
    wait_runs(1, 0, None)
    first_rss = rss_kib(proc.pid)
    set_keys()
    m0 = metrics()
    wait_runs(runs - 1, finished(m0), set_keys)
    m1 = metrics()
    wait_runs(runs, finished(m1), None)
    m2 = metrics()
    end_rss = rss_kib(proc.pid)
finally:
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)

ok = 'redis_flusher_runs_total{result="ok"}'
if m2.get(ok, 0) != finished(m2):
    sys.exit(f"serve_cost.py: not every run ended ok: {({k: v for k, v in m2.items() if 'runs_total' in k})}")
count, total = "redis_flusher_run_duration_seconds_count", "redis_flusher_run_duration_seconds_sum"
flushed = m2["redis_flusher_keys_flushed_total"]
if flushed != 1000 * runs:
    sys.exit(f"serve_cost.py: serve flushed {flushed:.0f} keys in {runs} runs of 1,000 keys")
full = (m1[total] - 0) / m1[count]
# The first phase includes the first run, which also made the journal index's first check.
full_later = (m1[total] - m0[total]) / (m1[count] - m0[count])
empty = (m2[total] - m1[total]) / (m2[count] - m1[count])
r = json.load(open(run_json))["results"][0]
print(f"run_process_median_ms={r['median'] * 1000:.1f} serve_run_1000_keys_mean_ms={full_later * 1000:.1f} "
      f"serve_run_nothing_mean_ms={empty * 1000:.1f} serve_first_run_included_mean_ms={full * 1000:.1f} "
      f"runs={runs} serve_rss_after_first_run_mib={first_rss['VmRSS'] / 1024:.1f} "
      f"serve_rss_at_end_mib={end_rss['VmRSS'] / 1024:.1f} serve_peak_rss_mib={end_rss['VmHWM'] / 1024:.1f}")
