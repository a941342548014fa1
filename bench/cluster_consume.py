"""Cluster benchmark: how fast one collector takes events from NATS
JetStream, next to HTTP ingest on the same machine.

1. A NATS server with JetStream (nats-server from .cache/testenv, as
   ./scripts/test installs it) and one collector in cluster mode; EVENTS
   events (20 features, batches of 500, as ingest_load.py sends them) are
   posted to it over HTTP: each batch is acknowledged once the stream has
   stored it (the HTTP ingest rate of cluster mode). It owns the model and
   takes the events back as they come.
2. That collector is stopped and a fresh one (an empty database) started:
   it takes the model over and reads every event back from the stream,
   committing each to its database and windows as HTTP ingest does; the
   time it logs for that is the consumption rate of one collector.
3. The same events posted to a collector without a cluster (HTTP ingest
   into SQLite), for the ratio.

usage: cluster_consume.py DRIFTWATCH_BINARY [EVENTS] [THREADS]
BENCH_WRAP="perf record -g -o /tmp/consume.data --" runs the consuming
collector under that command (to profile it). Standard library only.
"""

import http.client
import json
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import threading
import time

import dwserve
from ingest_load import BATCH, batch_template, post_batches, scratch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# Every process started, stopped at the end whatever happened.
RUNNING = []


def start_nats(tmp):
    """A nats-server with JetStream storing under `tmp` (the one
    ./scripts/test installs in .cache/testenv); its URL."""
    port = free_port()
    nats_bin = os.path.join(ROOT, ".cache/testenv/bin/nats-server")
    RUNNING.append(subprocess.Popen([nats_bin, "-a", "127.0.0.1", "-p", str(port), "-js", "-sd",
                                     os.path.join(tmp, "nats")],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    time.sleep(1)
    return f"nats://127.0.0.1:{port}"


def stop_all(tmp):
    """Stops every process started and removes `tmp`."""
    for p in RUNNING:
        if p.poll() is None:
            p.terminate()
            p.wait()
    shutil.rmtree(tmp, ignore_errors=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post_all(addr, template, total, threads, prefix):
    seconds, rejected = post_batches(addr, template, total, threads, prefix)
    return total / seconds, rejected


def caught_up(proc_lines, limit=600):
    """Seconds the collector logged for reading its model's records."""
    deadline = time.time() + limit
    pattern = re.compile(r"read its records up to now in ([0-9.]+) s")
    while time.time() < deadline:
        for line in list(proc_lines):
            m = pattern.search(line)
            if m:
                return float(m.group(1))
        time.sleep(0.2)
    raise RuntimeError("the collector did not catch up:\n" + "".join(proc_lines[-20:]))


def cpu_seconds(pid):
    """CPU time (user + system) a process has used so far, from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_logged(binary, args, wrap=()):
    proc = subprocess.Popen([*wrap, binary, "serve", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    RUNNING.append(proc)
    lines = []
    addr = None
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("driftwatch listening on "):
            addr = line.split()[-1]
            break
    if addr is None:
        sys.exit("driftwatch serve did not start:\n" + "".join(lines))
    threading.Thread(target=lambda: [lines.append(l) for l in proc.stdout], daemon=True).start()
    return proc, addr, lines


def main():
    binary = sys.argv[1]
    total = int(sys.argv[2]) if len(sys.argv) > 2 else 500_000
    threads = int(sys.argv[3]) if len(sys.argv) > 3 else 2
    tmp, ref = scratch("dw-cluster-")
    nats_url = start_nats(tmp)
    common = ["--model", "bench", "--reference", ref, "--listen", "127.0.0.1:0", "--window", "1h",
              "--eval-interval", "15s"]
    cluster = ["--cluster", nats_url]
    template = batch_template(random.Random(2))
    try:
        first, addr, _ = start_logged(binary, common + cluster + ["--db", os.path.join(tmp, "a.db"), "--node", "a"])
        while True:
            conn = http.client.HTTPConnection(*addr.rsplit(":", 1))
            conn.request("GET", "/v1/cluster")
            if json.loads(conn.getresponse().read()).get("owners", {}).get("bench") == "a":
                break
            time.sleep(0.2)
        published, rejected = post_all(addr, template, total, threads, "c")
        first.terminate()
        first.wait()
        # The lease of the stopped collector expires (10 s) before the next takes it.
        wrap = os.environ.get("BENCH_WRAP", "").split()
        nats_cpu = cpu_seconds(RUNNING[0].pid)
        second, _, lines = start_logged(binary, common + cluster + ["--db", os.path.join(tmp, "b.db"), "--node", "b"],
                                        wrap)
        seconds = caught_up(lines)
        consumed = total / seconds
        # CPU time varies less than wall time on a machine whose cores are
        # shared: the collector's from its start (the reference load is a
        # small part), nats-server's over the same time.
        collector_cpu = None if wrap else cpu_seconds(second.pid)
        nats_cpu = cpu_seconds(RUNNING[0].pid) - nats_cpu
        second.terminate()
        second.wait()
        plain, plain_addr = dwserve.start(binary, common + ["--db", os.path.join(tmp, "plain.db")])
        RUNNING.append(plain)
        http_rate, _ = post_all(plain_addr, template, total, threads, "p")
        plain.terminate()
        plain.wait()
    finally:
        stop_all(tmp)
    print(f"{total} events of 20 features in batches of {BATCH}, {threads} client threads, {os.cpu_count()} cores")
    print(f"  HTTP ingest into the stream (cluster mode, acknowledged once stored): {published:,.0f} events/s (rejected {rejected})")
    print(f"  one collector taking them back from JetStream (store and windows):   {consumed:,.0f} events/s ({seconds:.1f} s)")
    if collector_cpu is not None:
        print(f"    CPU time: the collector {collector_cpu:.2f} s ({collector_cpu / total * 1e6:.1f} us/event), "
              f"nats-server {nats_cpu:.2f} s ({nats_cpu / total * 1e6:.1f} us/event)")
    print(f"  HTTP ingest into SQLite (one collector, no cluster):                  {http_rate:,.0f} events/s")
    print(f"  consumption / HTTP ingest: {consumed / http_rate:.2f}")


if __name__ == "__main__":
    main()
