#!/usr/bin/env python3
"""Python onnxruntime's own scoring throughput, the yardstick for the
agent's shadow scorer (`loadgen onnx`): the rows of
examples/credit/expected.json tiled to the batch size, one float32 [N, F]
input, `InferenceSession.run` with the same intra-op thread count, the same
warm-up and iteration count; prints one JSON line with the median rows/s."""
import argparse
import json
import time

import numpy as np
import onnxruntime as ort

p = argparse.ArgumentParser()
p.add_argument("--model", required=True)
p.add_argument("--rows", required=True)
p.add_argument("--batch", type=int, default=64)
p.add_argument("--threads", type=int, default=1)
p.add_argument("--rounds", type=int, default=7)
a = p.parse_args()

base = [[np.nan if x is None else x for x in r] for r in json.load(open(a.rows))["rows"]]
data = np.array([base[i % len(base)] for i in range(a.batch)], dtype=np.float32)
opts = ort.SessionOptions()
opts.intra_op_num_threads = a.threads
sess = ort.InferenceSession(a.model, opts, providers=["CPUExecutionProvider"])
name = sess.get_inputs()[0].name
iterations = max(200_000 // a.batch, 20)
for _ in range(iterations):  # warm-up: one round, not measured
    sess.run(None, {name: data})
rounds = []
for _ in range(a.rounds):
    t = time.perf_counter()
    for _ in range(iterations):
        sess.run(None, {name: data})
    rounds.append(iterations * a.batch / (time.perf_counter() - t))
print(json.dumps({"mode": "python-onnxruntime", "batch": a.batch, "threads": a.threads,
                  "rows_per_s_median": sorted(rounds)[len(rounds) // 2], "rounds": rounds}))
