"""Starts `driftwatch serve` for the benchmark scripts: returns the process
and the address it printed, and keeps draining its stderr."""

import subprocess
import sys
import threading


def start(binary, args):
    proc = subprocess.Popen([binary, "serve", *args], stderr=subprocess.PIPE, text=True)
    addr = None
    for line in proc.stderr:
        if line.startswith("driftwatch listening on "):
            addr = line.split()[-1]
            break
    if addr is None:
        sys.exit("driftwatch serve did not start")
    threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()
    return proc, addr
