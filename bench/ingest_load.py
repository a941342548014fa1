"""Ingest benchmark: drives `driftwatch serve` over HTTP from this (second)
process with batches of 500 events x 20 features and prints sustained
events/s, request latency percentiles and the collector's resident memory
after N and after 10 x N events (it should stay flat: windows are bounded).

usage: ingest_load.py DRIFTWATCH_BINARY [EVENTS] [THREADS]
Request ids are made as the agent makes them (BENCH_IDS=agent, the
default): 32 hex digits, the first 12 the milliseconds since 1970 and the
rest random, so they arrive nearly in key order. BENCH_IDS=random uses
32 random hex digits (ids a caller sends in `x-request-id`, or a
`traceparent`'s: each key lands on a random page of the store's index);
BENCH_IDS=sequential the oldest ids (`<prefix><batch>-<i>`, in key order:
SQLite and flattering). Standard library only.
"""

import http.client
import json
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone

import dwserve

BATCH = 500
NUMERIC = [f"n{i:02d}" for i in range(15)]
CATEGORICAL = [f"c{i:02d}" for i in range(5)]
LEVELS = ["a", "b", "c", "d", "e", "f"]
IDS = os.environ.get("BENCH_IDS", "agent")
if IDS not in ("agent", "random", "sequential"):
    sys.exit(f"BENCH_IDS={IDS}: use agent (the default), random or sequential")


def write_reference(path, rows=10000):
    rng = random.Random(1)
    with open(path, "w") as f:
        f.write(",".join(NUMERIC + CATEGORICAL) + "\n")
        for _ in range(rows):
            f.write(",".join([f"{rng.gauss(0, 1):.6f}" for _ in NUMERIC] + [rng.choice(LEVELS) for _ in CATEGORICAL]) + "\n")


def scratch(prefix):
    """A fresh temporary directory with the benchmark's reference.csv; both paths."""
    tmp = tempfile.mkdtemp(prefix=prefix)
    ref = os.path.join(tmp, "reference.csv")
    write_reference(ref)
    return tmp, ref


def batch_template(rng):
    ts = datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    events = []
    for i in range(BATCH):
        features = {n: round(rng.gauss(0.1, 1), 6) for n in NUMERIC}
        features.update({c: rng.choice(LEVELS) for c in CATEGORICAL})
        events.append({"model": "bench", "request_id": f"@@-{i}", "timestamp": ts, "features": features,
                       "champion": {"version": "v1", "label": "1", "score": 0.7, "latency_ms": 4.2}})
    return json.dumps({"events": events})


def batch_body(template, prefix, b):
    """Batch `b` of the template, with request ids unique to `prefix` and `b`."""
    if IDS == "sequential":
        return template.replace("@@", f"{prefix}{b}")
    rng = random.Random(f"{prefix}{b}")
    parts = template.split("@@")
    if IDS == "agent":
        ms = int(time.time() * 1000) & 0xFFFF_FFFF_FFFF
        return parts[0] + "".join(f"{ms:012x}{rng.getrandbits(80):020x}{p}" for p in parts[1:])
    return parts[0] + "".join(f"{rng.getrandbits(128):032x}{p}" for p in parts[1:])


def post_batches(addr, template, events, threads, prefix, latencies=None):
    """Posts `events` events (batches of the template, request ids made
    unique by `prefix` and the batch number) from `threads` connections;
    returns the seconds it took and the events the collector rejected."""
    host, port = addr.rsplit(":", 1)
    counter = iter(range(10**9))
    lock = threading.Lock()
    rejected = [0]

    def worker(batches):
        conn = http.client.HTTPConnection(host, int(port))
        for _ in range(batches):
            with lock:
                b = next(counter)
            body = batch_body(template, prefix, b).encode()
            t0 = time.perf_counter()
            conn.request("POST", "/v1/events", body, {"Content-Type": "application/json"})
            reply = json.loads(conn.getresponse().read())
            if latencies is not None:
                latencies.append(time.perf_counter() - t0)
            rejected[0] += reply.get("rejected", 0)

    batches = events // BATCH
    per = [batches // threads + (1 if i < batches % threads else 0) for i in range(threads)]
    ts = [threading.Thread(target=worker, args=(n,)) for n in per]
    t0 = time.perf_counter()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return time.perf_counter() - t0, rejected[0]


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def main():
    binary = sys.argv[1]
    total = int(sys.argv[2]) if len(sys.argv) > 2 else 1_000_000
    threads = int(sys.argv[3]) if len(sys.argv) > 3 else 2
    tmp, ref = scratch("dw-ingest-")
    proc, addr = dwserve.start(binary, ["--model", "bench", "--reference", ref, "--listen", "127.0.0.1:0",
                                        "--db", os.path.join(tmp, "bench.db"), "--window", "1h",
                                        "--eval-interval", "15s"])
    template = batch_template(random.Random(2))
    latencies = []
    rejected = 0

    def phase(events, prefix):
        nonlocal rejected
        seconds, r = post_batches(addr, template, events, threads, prefix, latencies)
        rejected += r
        return seconds

    phase(BATCH * 20, "w")  # warm up
    latencies.clear()
    first = total // 10
    w1 = phase(first, "a")
    rss1 = rss_kb(proc.pid)
    w2 = phase(total - first, "b")
    rss2 = rss_kb(proc.pid)
    proc.terminate()
    proc.wait()
    lat = sorted(latencies)
    p = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] * 1000
    rate = total / (w1 + w2)
    print(f"{total} events in batches of {BATCH} x 20 features, {threads} client threads, {os.cpu_count()} cores")
    print(f"  sustained {rate:,.0f} events/s; request latency p50 {p(0.5):.1f} ms, p99 {p(0.99):.1f} ms; rejected {rejected}")
    print(f"  collector RSS after {first:,} events: {rss1 / 1024:.0f} MB; after {total:,}: {rss2 / 1024:.0f} MB")


if __name__ == "__main__":
    main()
