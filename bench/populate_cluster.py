#!/usr/bin/env python3
"""populate_cluster.py N PORT...: writes into the Redis Cluster whose masters listen on 127.0.0.1:PORT...
the keys populate.py N writes into one Redis (url_hits:c1..cN with the same counts, and the same 1 %
of url_hits:zz* keys for codes not in the table), each to the master owning its slot, after a
FLUSHALL of every master. Run populate.py N first for the table (and the expected total).
Used by `bench/run.sh cluster`."""
import subprocess, sys, random

n, ports = int(sys.argv[1]), sys.argv[2:]
unknown = 1.0

def crc16(data: bytes) -> int:  # CRC16-XMODEM, as Redis Cluster's key slot
    crc = 0
    for b in data:
        crc ^= b << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
        crc &= 0xFFFF
    return crc

# A table of the CRC of every byte value makes 1M keys take seconds, not minutes.
TABLE = []
for i in range(256):
    c = i << 8
    for _ in range(8):
        c = ((c << 1) ^ 0x1021) if c & 0x8000 else c << 1
    TABLE.append(c & 0xFFFF)

def slot(key: bytes) -> int:
    crc = 0
    for b in key:
        crc = ((crc << 8) & 0xFFFF) ^ TABLE[(crc >> 8) ^ b]
    return crc % 16384

assert crc16(b"123456789") == 0x31C3 and slot(b"123456789") == crc16(b"123456789") % 16384

owner = [None] * 16384
for port in ports:
    subprocess.run(["redis-cli", "-p", port, "FLUSHALL"], check=True, stdout=subprocess.DEVNULL)
nodes = subprocess.run(["redis-cli", "-p", ports[0], "CLUSTER", "NODES"], capture_output=True, text=True, check=True).stdout
for line in nodes.splitlines():
    f = line.split()
    if "master" not in f[2]:
        continue
    port = f[1].split("@")[0].rsplit(":", 1)[1]
    for r in f[8:]:
        lo, _, hi = r.partition("-")
        for s in range(int(lo), int(hi or lo) + 1):
            owner[s] = port
assert all(owner), "some slots have no master"

lines = {p: [] for p in set(owner)}
rng = random.Random(42)  # populate.py's seed and draws: the same counts
for i in range(1, n + 1):
    key = f"url_hits:c{i}"
    lines[owner[slot(key.encode())]].append(f"SET {key} {rng.randint(1, 100)}\r\n")
for i in range(int(n * unknown / 100)):
    key = f"url_hits:zz{i}"
    lines[owner[slot(key.encode())]].append(f"SET {key} 7\r\n")
for port, ls in lines.items():
    subprocess.run(["redis-cli", "-p", port, "--pipe"], input="".join(ls).encode(), check=True,
                   stdout=subprocess.DEVNULL)
print(" ".join(f"{p}:{len(ls)}" for p, ls in sorted(lines.items())))
