"""What live performance estimation costs a window's evaluation: runs
`driftwatch serve` with the example credit model, alternately without
and with an `estimation:` block (CBPE, the six binary metrics, both
roles), each time in a fresh collector fed the same events (the same
rows, outputs and timestamp: the same window and the same reservoir
samples, since estimation draws from a generator of its own, so the
features cost the same). Fills the live window to FILL events (the
default sample limit: every later event goes through the reservoir),
then for CYCLES cycles sends a batch of BATCH events and waits for the
evaluation that follows. Reads the collector's own
`driftwatch_evaluation_seconds` (wall time spent evaluating the model's
windows per cycle) and the process's CPU time (user + system, ingest
included) over the measured cycles; prints each pair of runs' mean
evaluation time and CPU time per cycle and their ratios, and the median
ratios of RUNS pairs. (Two models in one collector would share the KS exact p-values it
remembers, so the second would pay for nothing.)

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
    """(seconds spent evaluating the model, evaluations)."""
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


def cpu_seconds(pid):
    """The process's user + system CPU time so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def post(addr, batch):
    conn = http.client.HTTPConnection(*addr.rsplit(":", 1), timeout=60)
    conn.request("POST", "/v1/events", body=json.dumps({"events": batch}),
                 headers={"Content-Type": "application/json"})
    reply = json.loads(conn.getresponse().read())
    assert reply["accepted"] == len(batch), reply


def run(binary, estimation, args, tmp, k, ts):
    """The mean evaluation time (ms), the evaluations counted, and the
    process's CPU time per cycle (ms)."""
    path = os.path.join(tmp, f"collector-{k}.yaml")
    config(path, estimation)
    proc, addr = dwserve.start(binary, ["--config", path, "--listen", "127.0.0.1:0"])
    try:
        rng = random.Random(7)
        features = rows()
        sent = 0
        while sent < args.fill:
            n = min(1000, args.fill - sent)
            post(addr, events(features, n, sent, rng, ts))
            sent += n
        time.sleep(3 * INTERVAL_S)
        before, cpu_before = evaluation_seconds(addr), cpu_seconds(proc.pid)
        for _ in range(args.cycles):
            post(addr, events(features, args.batch, sent, rng, ts))
            sent += args.batch
            time.sleep(2 * INTERVAL_S)
        after, cpu_after = evaluation_seconds(addr), cpu_seconds(proc.pid)
        cycles = after[1] - before[1]
        return ((after[0] - before[0]) / cycles * 1000.0, int(cycles),
                (cpu_after - cpu_before) / args.cycles * 1000.0)
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
    ratios, cpu_ratios = [], []
    # One timestamp for every run: the same window, the same samples.
    ts = datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(args.runs):
            plain, n, plain_cpu = run(args.binary, False, args, tmp, 2 * k, ts)
            estimated, m, estimated_cpu = run(args.binary, True, args, tmp, 2 * k + 1, ts)
            ratios.append(estimated / plain)
            cpu_ratios.append(estimated_cpu / plain_cpu)
            print(f"pair {k + 1}: evaluation without estimation {plain:.3f} ms ({n} evaluations), "
                  f"with {estimated:.3f} ms ({m}): {100 * (estimated / plain - 1):+.1f}%; "
                  f"CPU per cycle {plain_cpu:.1f} ms, {estimated_cpu:.1f} ms: "
                  f"{100 * (estimated_cpu / plain_cpu - 1):+.1f}%", flush=True)
    for name, r in (("evaluation time", ratios), ("CPU time", cpu_ratios)):
        print(f"median {name}: estimation adds {100 * (statistics.median(r) - 1):.1f}% "
              f"(pairs {', '.join(f'{100 * (x - 1):+.1f}%' for x in sorted(r))})")


if __name__ == "__main__":
    main()
