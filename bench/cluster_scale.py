"""Cluster benchmark: 1, 2 and 3 collectors taking the same records from
NATS JetStream.

A nats-server with JetStream (.cache/testenv, as ./scripts/test installs
it) is loaded once with EVENTS events (20 features, batches of 500) for
each of four models, through a collector's HTTP ingest (acknowledged once
the stream stored them); that collector is stopped cleanly. Then, for N in
1, 2, 3: N fresh collectors (empty databases) start together, split the
four models between them (leases, rendezvous hashing, hand-overs) and read
every record into their databases and windows. The figure is the wall
time from their start until each model is shown by exactly one collector
with all its events in its window, and events per second over that time
(process start, leases and any hand-over's replay included).

On a machine with fewer cores than collectors + NATS, the collectors share
the cores and the figure cannot grow with N: the README says what N
machines would do.

usage: cluster_scale.py DRIFTWATCH_BINARY [EVENTS_PER_MODEL]
Standard library only.
"""

import http.client
import os
import random
import sys
import time

from cluster_consume import start_logged, start_nats, stop_all
from ingest_load import batch_template, post_batches, scratch

MODELS = ["m0", "m1", "m2", "m3"]


def config(path, ref, nats_url):
    models = "".join(f"  - name: {m}\n    reference: {ref}\n    windows: [1h]\n" for m in MODELS)
    with open(path, "w") as f:
        f.write(f"eval_interval: 500ms\ncluster:\n  urls: [{nats_url}]\nmodels:\n{models}")


def samples(addr, model):
    """The model's live window count at `addr`, or None."""
    host, port = addr.rsplit(":", 1)
    try:
        conn = http.client.HTTPConnection(host, int(port), timeout=5)
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("driftwatch_window_samples{") and f'model="{model}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return None


def stop(procs):
    for p in procs:
        p.terminate()
    for p in procs:
        p.wait()


def main():
    binary = sys.argv[1]
    per_model = int(sys.argv[2]) if len(sys.argv) > 2 else 100_000
    tmp, ref = scratch("dw-scale-")
    conf = os.path.join(tmp, "collector.yaml")
    config(conf, ref, start_nats(tmp))
    results = []
    try:
        loader, addr, _ = start_logged(binary, ["--config", conf, "--listen", "127.0.0.1:0",
                                                "--db", os.path.join(tmp, "loader.db"), "--node", "loader"])
        time.sleep(2)
        template = batch_template(random.Random(2))
        t0 = time.perf_counter()
        for m in MODELS:
            post_batches(addr, template.replace('"model": "bench"', f'"model": "{m}"'), per_model, 2, m)
        loaded = time.perf_counter() - t0
        stop([loader])
        total = per_model * len(MODELS)
        for n in (1, 2, 3):
            t0 = time.perf_counter()
            started = [start_logged(binary, ["--config", conf, "--listen", "127.0.0.1:0",
                                             "--db", os.path.join(tmp, f"n{n}-{i}.db"), "--node", f"n{n}-{i}"])
                       for i in range(n)]
            addrs = [a for _, a, _ in started]
            deadline = time.time() + 600
            while True:
                shown = {m: [s for s in (samples(a, m) for a in addrs) if s is not None] for m in MODELS}
                if all(v == [float(per_model)] for v in shown.values()):
                    break
                if time.time() > deadline:
                    raise RuntimeError(f"{n} collectors did not take every record: {shown}")
                time.sleep(0.1)
            seconds = time.perf_counter() - t0
            results.append((n, seconds, total / seconds))
            stop([p for p, _, _ in started])
            # The leases of stopped collectors are handed back at stop.
            time.sleep(1)
    finally:
        stop_all(tmp)
    print(f"{len(MODELS)} models x {per_model} events of 20 features ({total} in all), {os.cpu_count()} cores;"
          f" loaded through HTTP ingest in {loaded:.1f} s ({total / loaded:,.0f} events/s)")
    for n, seconds, rate in results:
        print(f"  {n} collector(s): every model read and shown in {seconds:.1f} s: {rate:,.0f} events/s")


if __name__ == "__main__":
    main()
