#!/usr/bin/env python3
"""Where a process's threads spent a measured interval, from the kernel's
per-thread scheduler statistics (Linux, /proc/PID/task/TID/schedstat:
time on a CPU, time runnable but waiting for a CPU, times scheduled in;
/proc/PID/task/TID/status: context switches, voluntary and not).

    schedstat.py snap OUT ROLE=PID... every thread of the PIDs (and of
                                      their children, for nginx's workers),
                                      grouped under their ROLE
    schedstat.py diff BEFORE AFTER LABEL REQUESTS
                                      one JSON line per thread group
                                      (threads named alike, digits removed):
                                      CPU ms, run-queue wait ms, the wait
                                      per request in microseconds, and the
                                      involuntary switches per 1000 requests

The wait for a CPU is the off-CPU time that a busy core adds to a request:
a thread woken by a request's bytes that finds its core taken waits here.
"""
import json
import os
import re
import sys


def threads(pid):
    pids = [pid]
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            pids += [int(c) for c in f.read().split()]
    except OSError:
        pass
    for p in pids:
        try:
            tids = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for tid in tids:
            yield p, int(tid)


def sample(pid, tid):
    base = f"/proc/{pid}/task/{tid}"
    try:
        with open(f"{base}/comm") as f:
            comm = f.read().strip()
        with open(f"{base}/schedstat") as f:
            run, wait, slices = (int(x) for x in f.read().split())
        switches = {}
        with open(f"{base}/status") as f:
            for line in f:
                if line.endswith("ctxt_switches\n") or "ctxt_switches:" in line:
                    k, v = line.split(":")
                    switches[k.strip()] = int(v)
    except (OSError, ValueError):
        return None
    return {"comm": comm, "run_ns": run, "wait_ns": wait, "slices": slices,
            "voluntary": switches.get("voluntary_ctxt_switches", 0),
            "involuntary": switches.get("nonvoluntary_ctxt_switches", 0)}


def snap(out, roles):
    rows = {}
    for role in roles:
        name, pid = role.split("=")
        for p, tid in threads(int(pid)):
            s = sample(p, tid)
            if s:
                s["process"] = name
                rows[str(tid)] = s
    with open(out, "w") as f:
        json.dump(rows, f)


def diff(before, after, label, requests):
    a, b = json.load(open(before)), json.load(open(after))
    groups = {}
    for tid, s in b.items():
        s0 = a.get(tid, {"run_ns": 0, "wait_ns": 0, "slices": 0, "voluntary": 0, "involuntary": 0})
        name = s["process"] + "/" + (re.sub(r"[-_ ]?\d+$", "", s["comm"]) or s["comm"])
        g = groups.setdefault(name, {"threads": 0, "run_ns": 0, "wait_ns": 0, "involuntary": 0, "voluntary": 0})
        g["threads"] += 1
        for k in ("run_ns", "wait_ns", "involuntary", "voluntary"):
            g[k] += s[k] - s0[k]
    n = max(int(requests), 1)
    for name, g in sorted(groups.items(), key=lambda kv: -kv[1]["run_ns"]):
        if g["run_ns"] == 0 and g["wait_ns"] == 0:
            continue
        print(json.dumps({"target": label, "mode": "sched", "threads": name, "count": g["threads"],
                          "cpu_ms": g["run_ns"] / 1e6, "wait_ms": g["wait_ns"] / 1e6,
                          "wait_us_per_request": g["wait_ns"] / 1e3 / n,
                          "involuntary_per_1k": g["involuntary"] * 1000 / n,
                          "wakeups_per_request": g["voluntary"] / n}))


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "snap":
        snap(sys.argv[2], sys.argv[3:])
    elif len(sys.argv) == 6 and sys.argv[1] == "diff":
        diff(*sys.argv[2:6])
    else:
        sys.exit(__doc__)
