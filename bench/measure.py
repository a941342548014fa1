"""Runs a command RUNS times; prints the median wall time (s), the largest peak RSS (MB) and the exit status as JSON.

usage: measure.py RUNS COMMAND...
"""

import json
import os
import statistics
import subprocess
import sys
import time

runs = int(sys.argv[1])
walls, peaks, status = [], [], 0
for _ in range(runs):
    t0 = time.perf_counter()
    p = subprocess.Popen(sys.argv[2:], stdout=subprocess.DEVNULL)
    _, st, usage = os.wait4(p.pid, 0)
    walls.append(time.perf_counter() - t0)
    peaks.append(usage.ru_maxrss / 1024)
    status = status or os.waitstatus_to_exitcode(st)
print(json.dumps({"runs": runs, "median_wall_s": round(statistics.median(walls), 3), "walls_s": [round(w, 2) for w in walls], "peak_rss_mb": round(max(peaks), 1), "status": status}))
