"""What live performance estimation costs a window's evaluation: runs
`driftwatch serve` with the example credit model twice over, without and
with its `estimation:` block (CBPE, the six binary metrics, both roles),
fills its live window to FILL events (the default sample limit: every
later event goes through the reservoir), then for CYCLES cycles sends a
batch of BATCH events and waits for the evaluation that follows. Reads
the collector's own `driftwatch_evaluation_seconds` (time spent
evaluating the model's windows per cycle) over the measured cycles and
prints the mean evaluation time of each run, the medians of RUNS runs of
each (alternated, on the same machine) and their ratio.

usage: estimation_overhead.py DRIFTWATCH_BINARY [--runs 3] [--cycles 40]
                              [--fill 10000] [--batch 200]
Standard library only; events seeded from examples/credit/current.csv.
"""

import argparse
import http.client
import json
import os
import random
import statistics
import tempfile
import time
from datetime import datetime, timezone

import dwserve

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
INTERVAL_S = 0.25


def rows():
    with open(os.path.join(ROOT, "examples/credit/current.csv")) as f:
        header = f.readline().strip().split(",")
        out = []
        for line in f:
            values = line.strip().split(",")
            features = {}
            for name, v in zip(header, values):
                if v == "":
                    features[name] = None
                elif name in ("country", "employment"):
                    features[name] = v
                elif name == "has_card":
                    features[name] = v == "true"
                else:
                    features[name] = float(v)
            out.append(features)
    return out


def events(features, n, start, rng, ts):
    out = []
    for i in range(start, start + n):
        score = rng.random()
        shadow = min(1.0, max(0.0, score + rng.gauss(0, 0.1)))
        out.append({
            "model": "credit", "request_id": f"r{i}", "timestamp": ts,
            "features": features[i % len(features)],
            "champion": {"label": str(int(score >= 0.5)), "score": score},
            "shadow": {"label": str(int(shadow >= 0.5)), "score": shadow},
        })
    return out


def config(path, estimation):
    text = f"""eval_interval: {int(INTERVAL_S * 1000)}ms
db: {path}.db
models:
  - name: credit
    positive_class: "1"
    reference: {ROOT}/examples/credit/reference.csv
    windows: [1d]
"""
    if estimation:
        text += f"""    estimation:
      reference: {ROOT}/examples/credit/estimation.csv
      target: default
      prediction: label
      score: score
"""
    with open(path, "w") as f:
        f.write(text)


def evaluation_seconds(addr):
    conn = http.client.HTTPConnection(*addr.rsplit(":", 1), timeout=30)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    total = count = 0.0
    for line in text.splitlines():
        if line.startswith('driftwatch_evaluation_seconds_sum{model="credit"}'):
            total = float(line.split()[-1])
        if line.startswith('driftwatch_evaluation_seconds_count{model="credit"}'):
            count = float(line.split()[-1])
    return total, count


def post(addr, batch):
    conn = http.client.HTTPConnection(*addr.rsplit(":", 1), timeout=60)
    conn.request("POST", "/v1/events", body=json.dumps({"events": batch}),
                 headers={"Content-Type": "application/json"})
    reply = json.loads(conn.getresponse().read())
    assert reply["accepted"] == len(batch), reply


def run(binary, estimation, args, tmp, k):
    path = os.path.join(tmp, f"collector-{k}.yaml")
    config(path, estimation)
    proc, addr = dwserve.start(binary, ["--config", path, "--listen", "127.0.0.1:0"])
    try:
        rng = random.Random(7)
        features = rows()
        ts = datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        sent = 0
        while sent < args.fill:
            n = min(1000, args.fill - sent)
            post(addr, events(features, n, sent, rng, ts))
            sent += n
        time.sleep(3 * INTERVAL_S)
        before = evaluation_seconds(addr)
        for _ in range(args.cycles):
            post(addr, events(features, args.batch, sent, rng, ts))
            sent += args.batch
            time.sleep(2 * INTERVAL_S)
        after = evaluation_seconds(addr)
        cycles = after[1] - before[1]
        return (after[0] - before[0]) / cycles * 1000.0, int(cycles)
    finally:
        proc.terminate()
        proc.wait()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("binary")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--cycles", type=int, default=40)
    ap.add_argument("--fill", type=int, default=10000)
    ap.add_argument("--batch", type=int, default=200)
    args = ap.parse_args()
    times = {False: [], True: []}
    with tempfile.TemporaryDirectory() as tmp:
        k = 0
        for _ in range(args.runs):
            for estimation in (False, True):
                ms, cycles = run(args.binary, estimation, args, tmp, k)
                k += 1
                times[estimation].append(ms)
                label = "with estimation   " if estimation else "without estimation"
                print(f"{label}: {ms:.3f} ms per evaluation ({cycles} evaluations)", flush=True)
    without, with_ = statistics.median(times[False]), statistics.median(times[True])
    print(f"median without {without:.3f} ms, with {with_:.3f} ms: "
          f"estimation adds {100 * (with_ / without - 1):.1f}%")


if __name__ == "__main__":
    main()
