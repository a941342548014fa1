"""Starts `driftwatch serve` for the benchmark scripts: returns the process
and the address it printed (on stdout; 0.6.0 and earlier printed it on
stderr, so both are read), and keeps draining its output."""

import subprocess
import sys
import threading


def start(binary, args):
    proc = subprocess.Popen(
        [binary, "serve", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    addr = None
    for line in proc.stdout:
        if line.startswith("driftwatch listening on "):
            addr = line.split()[-1]
            break
    if addr is None:
        sys.exit("driftwatch serve did not start")
    threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()
    return proc, addr
