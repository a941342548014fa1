"""Runs a command, prints its wall time (s) and peak RSS (MB) as JSON."""

import json
import os
import subprocess
import sys
import time

t0 = time.perf_counter()
p = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL)
_, status, usage = os.wait4(p.pid, 0)
wall = time.perf_counter() - t0
print(json.dumps({"wall_s": round(wall, 3), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1), "status": os.waitstatus_to_exitcode(status)}))
