"""Evaluation cost at scale: runs `driftwatch serve` with M models x F
numeric features (a 5,000-row reference each), two window lengths per model
(1h and 1d, both live), fills every window to FILL events (10,000: the
default sample limit), then sends TRAFFIC events/s spread over the models
while it evaluates every INTERVAL. Prints, over the measured cycles, the
collector's CPU-seconds per cycle (the whole process: evaluation and
ingest), feature-windows evaluated per CPU-second, and the oldest result's
age (staleness) at its worst.

usage: eval_scale.py DRIFTWATCH_BINARY MODELS FEATURES [--interval 15]
                     [--cycles 6] [--fill 10000] [--traffic 1000]
Standard library only; data seeded, nothing committed.
"""

import argparse
import http.client
import json
import os
import random
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone

import dwserve

REFERENCE_ROWS = 5000
BATCH = 500
TEMPLATES = 24


def write_reference(path, features):
    rng = random.Random(1)
    with open(path, "w") as f:
        f.write(",".join(f"f{i:02d}" for i in range(features)) + "\n")
        for _ in range(REFERENCE_ROWS):
            f.write(",".join(f"{rng.gauss(0, 1):.6f}" for _ in range(features)) + "\n")


def templates(features, seed):
    """Event bodies (without model, id or time) with distinct seeded values."""
    rng = random.Random(seed)
    out = []
    for _ in range(TEMPLATES):
        rows = []
        for _ in range(BATCH):
            values = ",".join(f'"f{i:02d}": {rng.gauss(0.05, 1):.6f}' for i in range(features))
            rows.append('"features": {' + values + '}, "champion": {"label": "1", "score": 0.7}')
        out.append(rows)
    return out


class Client:
    def __init__(self, addr):
        host, port = addr.rsplit(":", 1)
        self.conn = http.client.HTTPConnection(host, int(port), timeout=120)

    def post(self, body):
        self.conn.request("POST", "/v1/events", body=body, headers={"Content-Type": "application/json"})
        r = self.conn.getresponse()
        reply = r.read()
        if r.status != 200:
            sys.exit(f"ingest answered {r.status}: {reply[:300]!r}")
        return json.loads(reply)

    def get(self, path):
        self.conn.request("GET", path)
        r = self.conn.getresponse()
        return r.read().decode()


def body(events):
    return '{"events": [' + ",".join(events) + "]}"


def event(model, rid, ts, row):
    return '{"model": "%s", "request_id": "%s", "timestamp": "%s", %s}' % (model, rid, ts, row)


def now_ts():
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def metrics(client):
    out = {}
    for line in client.get("/metrics").splitlines():
        if line.startswith("#") or " " not in line:
            continue
        name, value = line.rsplit(" ", 1)
        out[name] = float(value)
    return out


def total(m, prefix):
    return sum(v for k, v in m.items() if k.startswith(prefix))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("binary")
    p.add_argument("models", type=int)
    p.add_argument("features", type=int)
    p.add_argument("--interval", type=int, default=15)
    p.add_argument("--cycles", type=int, default=6)
    p.add_argument("--fill", type=int, default=10000)
    p.add_argument("--traffic", type=int, default=1000)
    a = p.parse_args()

    tmp = tempfile.mkdtemp(prefix="dw-eval-scale-")
    reference = os.path.join(tmp, "reference.csv")
    write_reference(reference, a.features)
    names = [f"m{i:03d}" for i in range(a.models)]
    with open(os.path.join(tmp, "collector.yaml"), "w") as f:
        f.write(f"listen: 127.0.0.1:0\ndb: {tmp}/dw.db\neval_interval: {a.interval}s\nmax_body_bytes: 67108864\nmodels:\n")
        for n in names:
            f.write(f"  - name: {n}\n    reference: {reference}\n    windows: [1h, 1d]\n")
    proc, addr = dwserve.start(a.binary, ["--config", os.path.join(tmp, "collector.yaml")])
    try:
        run(a, names, addr, proc.pid)
    finally:
        proc.terminate()
        proc.wait()


def run(a, names, addr, pid):
    fill_rows = templates(a.features, 2)
    traffic_rows = templates(a.features, 3)
    # Fill: FILL events per model, in batches of 500, from two threads.
    started = time.time()
    jobs = [(m, b) for m in names for b in range(a.fill // BATCH)]

    def fill(part):
        c = Client(addr)
        for m, b in part:
            ts = now_ts()
            rows = fill_rows[b % TEMPLATES]
            c.post(body(event(m, f"fill-{b}-{i}", ts, r) for i, r in enumerate(rows)))

    threads = [threading.Thread(target=fill, args=(jobs[i::2],)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    filled = len(jobs) * BATCH
    print(f"filled {len(names)} models x 2 windows with {a.fill} events each "
          f"({filled} events of {a.features} features) in {time.time() - started:.1f} s", flush=True)

    # Traffic: TRAFFIC events/s spread over the models, one request a second.
    stop = threading.Event()

    def traffic():
        c = Client(addr)
        k = 0
        next_at = time.time()
        while not stop.is_set():
            ts = now_ts()
            events = []
            for i in range(a.traffic):
                rows = traffic_rows[(k // BATCH) % TEMPLATES]
                events.append(event(names[k % len(names)], f"live-{k}", ts, rows[k % BATCH]))
                k += 1
            c.post(body(events))
            next_at += 1.0
            time.sleep(max(0.0, next_at - time.time()))

    t = threading.Thread(target=traffic, daemon=True)
    t.start()
    c = Client(addr)

    def cycles(m):
        return m.get("driftwatch_evaluation_cycle_seconds_count", 0.0)

    m = metrics(c)
    if "driftwatch_evaluation_cycle_seconds_count" not in m:
        # 0.6.0 and earlier count no cycles: CPU per interval.
        time.sleep(2 * a.interval)
        cpu0, t0 = cpu_seconds(pid), time.time()
        time.sleep(a.cycles * a.interval)
        cpu = cpu_seconds(pid) - cpu0
        stop.set()
        print(json.dumps({
            "models": len(names), "features": a.features, "windows_per_model": 2,
            "interval_s": a.interval, "traffic_events_per_s": a.traffic,
            "cpu_s_per_interval": round(cpu / (time.time() - t0) * a.interval, 2),
        }), flush=True)
        return
    # Warm-up: the first cycles evaluate every window from scratch.
    warm_until = cycles(m) + 2
    while cycles(m) < warm_until:
        time.sleep(0.5)
        m = metrics(c)
    cpu0, m0, t0 = cpu_seconds(pid), m, time.time()
    worst_age = 0.0
    # (Every 3 s: rendering /metrics with every feature's series is work
    # for the collector too; Prometheus would scrape every 15 s or so.)
    while cycles(m) < cycles(m0) + a.cycles:
        time.sleep(3)
        m = metrics(c)
        stamps = [v for k, v in m.items() if k.startswith("driftwatch_window_evaluated_timestamp_seconds{")]
        if stamps:
            worst_age = max(worst_age, time.time() - min(stamps))
    stop.set()
    cpu1, t1 = cpu_seconds(pid), time.time()
    n = cycles(m) - cycles(m0)
    skipped_unchanged = total(m, 'driftwatch_evaluation_skipped_total{reason="unchanged"}') - total(
        m0, 'driftwatch_evaluation_skipped_total{reason="unchanged"}')
    skipped_budget = total(m, 'driftwatch_evaluation_skipped_total{reason="over_budget"}') - total(
        m0, 'driftwatch_evaluation_skipped_total{reason="over_budget"}')
    windows = 2 * len(names)
    evaluated = n * windows - skipped_unchanged - skipped_budget
    feature_windows = evaluated * a.features
    cpu = cpu1 - cpu0
    eval_seconds = m.get("driftwatch_evaluation_cycle_seconds_sum", 0.0) - m0.get(
        "driftwatch_evaluation_cycle_seconds_sum", 0.0)
    print(json.dumps({
        "models": len(names), "features": a.features, "windows_per_model": 2,
        "interval_s": a.interval, "traffic_events_per_s": a.traffic, "cycles": int(n),
        "cpu_s_per_cycle": round(cpu / n, 2),
        "evaluation_wall_s_per_cycle": round(eval_seconds / n, 2),
        "feature_windows_per_cycle": round(feature_windows / n),
        "feature_windows_per_cpu_s": round(feature_windows / cpu, 1),
        "skipped_over_budget_per_cycle": round(skipped_budget / n, 1),
        "skipped_unchanged_per_cycle": round(skipped_unchanged / n, 1),
        "oldest_result_age_s": round(worst_age, 1),
        "measured_s": round(t1 - t0, 1),
    }), flush=True)


if __name__ == "__main__":
    main()
